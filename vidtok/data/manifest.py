"""The manifest: one validated row per file under data_dir, ok or rejected with its reason, content groups and
the split.

    vidtok data manifest        # writes outputs/data/manifest.parquet and prints every file's verdict

Ok rows carry the video's metadata (vidtok.data.video.probe), a content fingerprint and the content group it
belongs to (re-encodes of the same footage share one), and a split by group, so no footage is in two splits.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from tqdm import tqdm

from vidtok._files import sha256_and_size, write_table
from vidtok.data import video as vio
from vidtok.data.config import DataConfig, join, list_files

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
    "fingerprint",
    "content_group",
    "split",
    "status",
    "reason",
]
# Metadata a video must have to be usable; rejected rows keep what could be read.
_VIDEO_COLUMNS = MANIFEST_COLUMNS[3:15]


class ManifestSchema(pa.DataFrameModel):
    """One row per file under data_dir. Ok rows are complete, unique by path and by content; rejected rows say why."""

    path: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})  # posix, relative to data_dir
    sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    size_bytes: Series[int] = pa.Field(ge=0)
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
    fingerprint: Series[str] = pa.Field(nullable=True, str_matches=rf"^[0-9a-f]{{{2 * FINGERPRINT_BYTES}}}$")
    content_group: Series[str] = pa.Field(nullable=True)  # path of the group's first video (see content_groups)
    split: Series[str] = pa.Field(nullable=True, isin=["train", "val"])
    status: Series[str] = pa.Field(isin=["ok", "rejected"])
    reason: Series[str] = pa.Field()

    class Config:
        strict = True
        coerce = True
        ordered = True

    @pa.dataframe_check(error="reason must be empty for ok rows and non-empty for rejected rows")
    def reason_iff_rejected(cls, df: pd.DataFrame) -> pd.Series:
        return (df["status"] == "rejected") == (df["reason"].fillna("").str.len() > 0)

    @pa.dataframe_check(error="ok rows need every video field (container ... content_group) and a split")
    def ok_rows_complete(cls, df: pd.DataFrame) -> pd.Series:
        return (df["status"] != "ok") | df[[*_VIDEO_COLUMNS, "fingerprint", "content_group", "split"]].notna().all(
            axis=1
        )

    @pa.dataframe_check(error="a content group must name an ok row, and all its videos must share one split")
    def content_groups_share_a_split(cls, df: pd.DataFrame) -> pd.Series:
        ok = df[df["status"] == "ok"]
        split_of_path = dict(zip(ok["path"], ok["split"], strict=True))
        leader_split = df["content_group"].map(split_of_path)
        return (df["status"] != "ok") | (leader_split.notna() & (leader_split == df["split"]))

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


def validate_manifest(
    df: pd.DataFrame, allowed_codecs: Iterable[str] | None = None, *, name: str = "manifest"
) -> pd.DataFrame:
    """The validated (type-coerced) manifest, or ManifestError with a one-line summary of what failed.
    ``allowed_codecs``: ok rows must use one of these codecs."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{name}: invalid manifest: missing column(s) {', '.join(missing)} (written by an older vidtok? "
            "rebuild it with `vidtok data manifest`)"
        )
    try:
        out = ManifestSchema.validate(df, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as err:
        raise ManifestError(_schema_message(err, name)) from None
    if allowed_codecs is not None:
        allowed = sorted(set(allowed_codecs))
        bad = out[(out["status"] == "ok") & ~out["codec"].isin(allowed)]
        if len(bad):
            row = bad.iloc[0]
            raise ManifestError(
                f"{name}: invalid manifest: ok row {row['path']!r} has codec {row['codec']!r}, "
                f"not in allowed_codecs ({', '.join(allowed)})"
            )
    return out


def split_of(
    paths: Iterable[str], val_fraction: float, salt: str, groups: Mapping[str, str] | None = None
) -> dict[str, str]:
    """train/val for each path. Videos of one group (``groups``: path -> group name; by default every path is
    its own group) always share a split, so re-encodes of the same footage cannot leak from train into val.

    Groups are ranked by sha256(salt NUL group) and go to val in that order until val holds at least
    ceil(val_fraction * n) videos; with >= 2 groups each split gets at least one (the last-ranked group always
    trains). With singleton groups the val share is exact. The same files and salt always give the same split; a
    new file can move others across the boundary (the price of the exact share on small datasets: rebuild,
    never reuse, old split lists)."""
    paths = list(paths)
    group_of = {p: (groups or {}).get(p, p) for p in paths}
    members = Counter(group_of.values())
    ranked = sorted(members, key=lambda g: hashlib.sha256(f"{salt}\0{g}".encode()).hexdigest())
    # At least one video in val when asked for any; 0.3 * 10 = 3.0000000000000004, hence the epsilon.
    wanted = max(math.ceil(val_fraction * len(paths) - 1e-9), 1) if val_fraction > 0 else 0
    val: set[str] = set()
    held_out = 0
    for group in ranked[:-1]:  # the last-ranked group always trains (a single group: nothing to hold out)
        if held_out >= wanted:
            break
        val.add(group)
        held_out += members[group]
    return {p: ("val" if group_of[p] in val else "train") for p in paths}


def _thumbnail(frame: np.ndarray, side: int = FINGERPRINT_SIDE) -> np.ndarray:
    grey = frame.astype(np.float64).mean(axis=2)
    rows = np.linspace(0, grey.shape[0], side + 1).astype(int)
    cols = np.linspace(0, grey.shape[1], side + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(grey, rows[:-1], axis=0), cols[:-1], axis=1)
    return sums / np.outer(np.diff(rows), np.diff(cols))


def content_fingerprint(url: str, num_frames: int) -> str:
    """Hex string of the 8x8 grey thumbnails of the frames at 10%, 50% and 90% of the video."""
    indices = [min(num_frames - 1, int(p * num_frames)) for p in FINGERPRINT_POSITIONS]
    frames = vio.read_frames(url, indices)
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


def content_groups(paths: Sequence[str], fingerprints: Sequence[str], durations: Sequence[float]) -> dict[str, str]:
    """path -> its group's name, the first (sorted) path of the group. Videos of about the same duration with
    nearly equal fingerprints are one group, transitively. Trimmed copies (other durations) are not caught."""
    order = sorted(range(len(paths)), key=lambda i: (durations[i], paths[i]))
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    absolute, relative = SAME_CONTENT_DURATION
    for k, i in enumerate(order):  # only neighbours in duration can match: no all-pairs comparison
        for j in order[k + 1 :]:
            if durations[j] - durations[i] > max(absolute, relative * durations[j]):
                break
            if same_content(fingerprints[i], fingerprints[j]):
                parent[root(j)] = root(i)
    name: dict[int, str] = {}
    for i in sorted(range(len(paths)), key=lambda i: paths[i]):
        name.setdefault(root(i), paths[i])
    return {paths[i]: name[root(i)] for i in range(len(paths))}


def _inspect(config: DataConfig, rel: str) -> dict[str, Any]:
    """One manifest row. Never raises: whatever goes wrong becomes the reason of a rejected row."""
    row: dict[str, Any] = dict.fromkeys(MANIFEST_COLUMNS)
    row.update(path=rel, status="rejected", reason="")
    url = join(config.data_dir, rel)
    try:
        row["sha256"], row["size_bytes"] = sha256_and_size(url)
    except OSError as err:
        row.update(sha256="0" * 64, size_bytes=0, reason=f"cannot read the file: {err}")
        return row
    if row["size_bytes"] == 0:
        row["reason"] = "empty file (0 bytes)"
        return row
    try:
        info = vio.probe(url)
    except vio.VideoError as err:
        row["reason"] = err.problem
        return row
    except Exception as err:  # noqa: BLE001 - a broken file must never stop the manifest
        row["reason"] = f"unreadable: {type(err).__name__}: {' '.join(str(err).split())}"
        return row
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
    )
    short = min(info.width, info.height)
    if info.codec not in config.allowed_codecs:
        row["reason"] = f"unsupported codec {info.codec} (allowed_codecs: {', '.join(config.allowed_codecs)})"
    elif info.num_frames < config.clip_frames:
        row["reason"] = f"too short: {info.num_frames} frames, one clip needs {config.clip_frames} (clip_frames)"
    elif short < config.min_side:
        row["reason"] = f"too small: {info.width}x{info.height}, short side {short} < min_side {config.min_side}"
    else:
        try:
            row["fingerprint"] = content_fingerprint(url, info.num_frames)
        except vio.VideoError as err:
            row["reason"] = f"frames cannot be decoded: {err.problem}"
            return row
        row.update(status="ok")
    return row


def build_manifest(config: DataConfig, *, write: bool = True, progress: bool = True) -> pd.DataFrame:
    """Inspect every file under ``config.data_dir`` and return the validated manifest (written atomically to
    ``config.manifest`` when ``write``). A bad file becomes a rejected row with its reason, never an error.

    Rejected: unreadable, empty, truncated, not a video, no video stream, codec not in allowed_codecs, fewer than
    clip_frames frames, short side < min_side, and a byte-identical duplicate of an earlier path ("duplicate of
    X"). Accepted as they are, since vidtok.data.video converts them on reading: rotated (upright frames, displayed size),
    grayscale / 10-bit / any pixel format (8-bit RGB), variable frame rate (timestamps drive resampling), odd
    sizes. Ok rows get a content group (:func:`content_groups`: re-encodes of the same footage, found by their
    thumbnails) and a train/val split by group (:func:`split_of`), so no footage is in both splits."""
    files = list_files(config.data_dir)
    if not files:
        raise FileNotFoundError(f"{config.data_dir}: no files (run `vidtok data samples` or copy videos there)")
    rows = [_inspect(config, rel) for rel in tqdm(files, desc="manifest", unit="file", disable=not progress)]
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
    groups = content_groups(list(df.loc[ok, "path"]), list(df.loc[ok, "fingerprint"]), list(df.loc[ok, "duration"]))
    df["content_group"] = df["path"].map(groups).where(ok, None)
    split = split_of(df.loc[ok, "path"], config.val_fraction, config.split_salt, groups)
    df["split"] = df["path"].map(split).where(ok, None)
    df = validate_manifest(df, config.allowed_codecs, name=config.manifest)
    if write:
        write_table(df, config.manifest)
    return df


def read_manifest(path: str | os.PathLike[str], allowed_codecs: Iterable[str] | None = None) -> pd.DataFrame:
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
    return validate_manifest(df, allowed_codecs, name=path)


def manifest_summary(df: pd.DataFrame) -> list[str]:
    """Lines the CLI prints: counts, then every rejected file with its reason."""
    ok = df[df["status"] == "ok"]
    rejected = df[df["status"] == "rejected"]
    train, val = int((ok["split"] == "train").sum()), int((ok["split"] == "val").sum())
    files = f"{len(df)} file" + ("" if len(df) == 1 else "s")
    lines = [f"{files}: {len(ok)} ok ({train} train, {val} val), {len(rejected)} rejected"]
    for row in ok.itertuples():
        lines.append(
            f"  ok        {row.path}: {row.codec} {row.width}x{row.height} {row.fps_fraction} fps "
            f"({row.fps:.3f}), {row.num_frames} frames, {row.duration:.2f} s, {row.split}"
            + (f" (same footage as {row.content_group})" if row.content_group != row.path else "")
        )
    for row in rejected.itertuples():
        lines.append(f"  rejected  {row.path}: {row.reason}")
    return lines
