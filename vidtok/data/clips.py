"""Frame-rate resampled clip indexes and the optional decoded-frame cache (part of the data layer, vidtok.data).

    vidtok data resample --fps 3 --cache-resolution 64

A clip index lists, for one target frame rate, every clip of ``clip_frames`` frames the accepted videos hold:
its start time, its target times and the source frame each target time shows. Nothing is decoded to build it
(timestamps come from demuxing), so it is one small parquet file per fps instead of a folder of loose frames.

The time grid. Target frame g of a video shows at g / fps seconds (0 = the first frame). Each target takes the
source frame nearest in time (vidtok.data.video.resample_indices, so variable frame rate works). A target is valid while
g / fps < duration, since the last source frame stays on screen until ``duration``. Clip k starts at grid position
k * clip_stride and covers positions k * clip_stride ... k * clip_stride + clip_frames - 1. At the native rate
this gives exactly num_frames - clip_frames + 1 clips with stride 1 (bikes: 250 - 17 + 1 = 234 at 25 fps); a
17-frame clip at fps f spans 16 / f seconds, so a video shorter than that has no clip (bikes, 10 s: none at 1 fps).

The index lists every start position (default stride 1): the train sampler draws clips at random from all of
them, the val dataset takes a deterministic non-overlapping subset (vidtok.data.loader).

The cache: for each (fps, square resolution), the source frames the index uses, decoded, centre-cropped and
resized exactly as the datasets do it, stored as one uint8 (N, R, R, 3) .npy shard plus a JSON map from
(video, frame index) to row. The datasets memory-map it, so a clip costs a gather instead of a decode.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from tqdm import tqdm

from vidtok._files import atomic_path, sha256_and_size, write_json, write_table
from vidtok.data import video as vio
from vidtok.data.config import DataConfig, join
from vidtok.data.manifest import frame_indexes, manifest_stale_reason, read_manifest
from vidtok.runs import code_sha256

__all__ = [
    "ClipIndexError",
    "FrameCache",
    "build_clip_cache",
    "build_clip_index",
    "cache_path",
    "clip_index_path",
    "clip_summary_path",
    "ensure_clip_cache",
    "ensure_clip_index",
    "fit_frames",
    "load_clip_index",
]

INDEX_COLUMNS = ["clip_id", "path", "sha256", "split", "clip", "fps", "start_time", "frame_indices", "target_times"]
# Float slack when comparing k / fps with a duration: 1 ns, far below any frame interval.
_EPS = 1e-9
INDEX_VERSION = 1


class ClipIndexError(ValueError):
    """A missing or stale clip index / cache; the message says which command rebuilds it."""


def _fps_name(fps: float) -> str:
    return f"fps_{float(fps):g}"  # 3 -> fps_3, 29.97 -> fps_29.97


def clip_index_path(config: DataConfig, fps: float) -> str:
    return join(config.clips_dir, _fps_name(fps) + ".parquet")


def clip_summary_path(config: DataConfig, fps: float) -> str:
    return join(config.clips_dir, _fps_name(fps) + ".json")


def cache_path(config: DataConfig, fps: float, resolution: int) -> Path:
    """The .npy shard, in one folder per frame rate (a DVC stage per rate owns it); its JSON map sits beside it."""
    if "://" in config.cache_dir:
        raise ValueError(f"data.cache_dir must be a local folder (the cache is memory-mapped), got {config.cache_dir}")
    return Path(config.cache_dir) / _fps_name(fps) / f"{int(resolution)}px.npy"


def _valid_positions(duration: float, fps: float) -> int:
    """How many grid times g / fps (g = 0, 1, ...) are < duration, i.e. still show a frame."""
    count = int(np.floor(duration * fps)) + 2
    grid = np.arange(count, dtype=np.float64) / fps  # g / fps, one rounding, as resample_indices computes it
    return int(np.count_nonzero(grid < duration - _EPS))


@dataclass(frozen=True)
class _VideoClips:
    picks: np.ndarray  # source frame shown at each valid grid position g (g / fps < duration)
    starts: np.ndarray  # (K,) grid position of each clip's first frame
    frames: np.ndarray  # (K, clip_frames) source frame indices
    targets: np.ndarray  # (K, clip_frames) target times in seconds

    @property
    def repeated_frames(self) -> int:
        """Grid positions that show the same source frame as the previous one (only above the native rate)."""
        return int(np.count_nonzero(np.diff(self.picks) == 0))


def _clips_of(
    times: np.ndarray, duration: float, fps: float, clip_frames: int, stride: int, tick: float = 0.0
) -> _VideoClips:
    positions = _valid_positions(duration, fps)
    n_clips = (positions - clip_frames) // stride + 1 if positions >= clip_frames else 0
    # A picture stamped up to one tick late (Matroska's 1 ms, GIF's 10 ms) is on screen at its target already.
    picks = vio.resample_indices(times, fps, num_frames=positions, tolerance=min(tick, 0.5 / fps))
    grid = np.arange(n_clips, dtype=np.int64)[:, None] * stride + np.arange(clip_frames, dtype=np.int64)[None]
    return _VideoClips(picks, grid[:, 0] if n_clips else np.zeros(0, np.int64), picks[grid], grid / fps)


def _too_short(duration: float, fps: float, clip_frames: int) -> str:
    span = (clip_frames - 1) / fps
    return (
        f"too short at {fps:g} fps: a {clip_frames}-frame clip spans {span:.2f} s "
        f"({clip_frames - 1} intervals of 1/{fps:g} s) and the video lasts {duration:.2f} s"
    )


def build_clip_index(config: DataConfig, fps: float, *, progress: bool = True) -> str:
    """Write the clip index of every accepted video at ``fps`` (parquet) and its summary (JSON, with every video
    that has no clip and why); returns the parquet path. Reads the manifest; decodes nothing."""
    fps = float(fps)
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive frame rate, got {fps}")
    why = manifest_stale_reason(config)
    if why is not None:
        raise ClipIndexError(f"{config.manifest}: stale ({why}); rebuild it first with `vidtok data manifest`")
    manifest = read_manifest(config.manifest)
    manifest_sha, _ = sha256_and_size(config.manifest)
    ok = manifest[manifest["status"] == "ok"]
    indexes = frame_indexes(manifest)
    rows: list[dict[str, Any]] = []
    videos: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for video in tqdm(list(ok.itertuples()), desc=f"clips @ {fps:g} fps", unit="video", disable=not progress):
        # The times of the frames that decode, from the manifest's scan: nothing is read here.
        index = indexes[video.sha256]
        times = np.asarray(index.times, dtype=np.float64)
        clips = _clips_of(times, float(video.duration), fps, config.clip_frames, config.clip_stride, index.tick())
        if not len(clips.starts):
            skipped.append(
                {
                    "path": video.path,
                    "split": video.split,
                    "reason": _too_short(float(video.duration), fps, config.clip_frames),
                }
            )
            continue
        videos.append(
            {
                "path": video.path,
                "split": video.split,
                "clips": len(clips.starts),
                "native_fps": float(video.fps),
                "duration": float(video.duration),
                # Above the native rate nearest-frame resampling shows some source frames twice: how often.
                "repeated_frames": clips.repeated_frames,
            }
        )
        for k, start in enumerate(clips.starts):
            rows.append(
                {
                    "path": video.path,
                    "sha256": video.sha256,
                    "split": video.split,
                    "clip": k,
                    "fps": fps,
                    "start_time": float(start) / fps,
                    "frame_indices": clips.frames[k].tolist(),
                    "target_times": clips.targets[k].tolist(),
                }
            )
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    index["clip_id"] = np.arange(len(index), dtype=np.int64)
    index = index.astype({"clip": "int64", "fps": "float64", "start_time": "float64"})
    path = clip_index_path(config, fps)
    write_table(index, path)
    counts = index["split"].value_counts()
    summary = {
        "version": INDEX_VERSION,
        "code_sha256": code_sha256("clips"),
        "fps": fps,
        "clip_frames": config.clip_frames,
        "clip_stride": config.clip_stride,
        "manifest": config.manifest,
        "manifest_sha256": manifest_sha,
        "index_sha256": sha256_and_size(path)[0],
        "clips": len(index),
        "clips_train": int(counts.get("train", 0)),
        "clips_val": int(counts.get("val", 0)),
        "clips_test": int(counts.get("test", 0)),
        "videos": videos,
        "skipped": skipped,
    }
    write_json(clip_summary_path(config, fps), summary, sort_keys=False)
    return path


def read_clip_summary(config: DataConfig, fps: float) -> dict[str, Any]:
    path = clip_summary_path(config, fps)
    try:
        with fsspec.open(path, "r") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ClipIndexError(
            f"{path}: no clip index at {fps:g} fps (run `vidtok data resample --fps {fps:g}`)"
        ) from None


def _stale_reason(config: DataConfig, fps: float) -> str | None:
    """Why the index at ``fps`` must be rebuilt, or None when it matches the manifest and the config."""
    try:
        summary = read_clip_summary(config, fps)
    except ClipIndexError as err:
        return str(err)
    try:
        manifest_sha, _ = sha256_and_size(config.manifest)
        index_sha, _ = sha256_and_size(clip_index_path(config, fps))
    except FileNotFoundError as err:
        return f"missing file: {err}"
    why = manifest_stale_reason(config)
    if why is not None:
        return f"the manifest is stale ({why}; `vidtok data manifest` rebuilds it)"
    expected = {
        "version": INDEX_VERSION,
        "code_sha256": code_sha256("clips"),
        "clip_frames": config.clip_frames,
        "clip_stride": config.clip_stride,
        "manifest_sha256": manifest_sha,
        "index_sha256": index_sha,
    }
    for key, value in expected.items():
        if summary.get(key) != value:
            if key == "code_sha256":
                return "the clip code (or the torch / torchvision / av version) changed since it was built"
            return f"{key} is {summary.get(key)!r}, the config and files say {value!r}"
    return None


def ensure_clip_index(config: DataConfig, fps: float, *, progress: bool = True) -> str:
    """The index at ``fps``, rebuilt only when missing or stale (other manifest, clip length or stride)."""
    if _stale_reason(config, fps) is not None:
        return build_clip_index(config, fps, progress=progress)
    return clip_index_path(config, fps)


def load_clip_index(config: DataConfig, fps: float) -> pd.DataFrame:
    """The clip index at ``fps``; ClipIndexError when it is missing or does not match the config / manifest."""
    why = _stale_reason(config, fps)
    if why is not None:
        raise ClipIndexError(
            f"{clip_index_path(config, fps)}: clip index unusable ({why}); "
            f"rebuild it with `vidtok data resample --fps {fps:g}`"
        )
    with fsspec.open(clip_index_path(config, fps), "rb") as f:
        return pd.read_parquet(f)


# ----------------------------------------------------------------------------------------------------- frames


def crop_window(height: int, width: int, out_h: int, out_w: int, offset: float | None = 0.5) -> tuple[int, ...]:
    """(top, left, h, w) of the largest window with the output's aspect ratio: the region that "resize the short
    side, then crop" keeps. ``offset`` in [0, 1] slides it along the axis with slack (0.5: centre)."""
    if width * out_h > height * out_w:  # wider than the target: full height, crop the width
        h, w = height, max(1, min(width, round(height * out_w / out_h)))
    else:
        h, w = max(1, min(height, round(width * out_h / out_w))), width
    frac = 0.5 if offset is None else float(offset)
    top = int(round((height - h) * frac))
    left = int(round((width - w) * frac))
    return top, left, h, w


def fit_frames(frames: np.ndarray, size: tuple[int, int], offset: float | None = 0.5) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, size[0], size[1], 3): crop the window :func:`crop_window` picks, then resize
    it with an antialiased bilinear filter (torch), rounding back to uint8.

    Cropping first is the same picture as resizing the short side and then cropping, at a fraction of the work
    (bikes 640x272 -> 64x64 resizes a 272x272 window, not the whole frame). Rounding to uint8 makes frames from the
    decoded-frame cache bit-identical to frames decoded on the fly."""
    import torch
    import torch.nn.functional as F

    out_h, out_w = size
    top, left, h, w = crop_window(frames.shape[1], frames.shape[2], out_h, out_w, offset)
    window = frames[:, top : top + h, left : left + w]
    if (h, w) == (out_h, out_w):
        return np.ascontiguousarray(window)
    x = torch.from_numpy(np.ascontiguousarray(window)).permute(0, 3, 1, 2).float()
    # antialias only matters when shrinking; for the (rare) upscaling of a small video it is plain bilinear.
    y = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# ----------------------------------------------------------------------------------------------------- cache


@dataclass
class FrameCache:
    """A decoded-frame shard: ``rows(sha256, frame_indices)`` maps a clip to rows of a memory-mapped uint8
    (N, R, R, 3) array. The array opens lazily, so the object pickles cheaply into DataLoader workers."""

    path: Path
    resolution: int
    # sha256 -> (first row, sorted source frame indices cached)
    videos: dict[str, tuple[int, np.ndarray]] = field(repr=False)
    _array: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> FrameCache:
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        videos = {v["sha256"]: (int(v["offset"]), np.asarray(v["frames"], dtype=np.int64)) for v in meta["videos"]}
        cache = cls(path, int(meta["resolution"]), videos)
        shape = cache.array.shape
        if shape != (meta["frames"], cache.resolution, cache.resolution, 3):
            raise ClipIndexError(
                f"{path}: cache shard has shape {shape}, its map says {meta['frames']} frames; "
                "rebuild it with `vidtok data resample --cache-resolution ...`"
            )
        return cache

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def rows(self, sha256: str, frame_indices: np.ndarray) -> np.ndarray:
        offset, frames = self.videos[sha256]
        pos = np.searchsorted(frames, frame_indices)
        if np.any(pos >= len(frames)) or np.any(frames[np.minimum(pos, len(frames) - 1)] != frame_indices):
            raise ClipIndexError(f"{self.path}: frames of video {sha256[:12]} missing from the cache; rebuild it")
        return offset + pos

    def clip(self, sha256: str, frame_indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[self.rows(sha256, frame_indices)])  # fancy indexing copies out of the mmap

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}  # each worker maps the file itself


def build_clip_caches(
    config: DataConfig, fps: float, resolutions: Sequence[int], *, progress: bool = True, chunk: int = 32
) -> list[Path]:
    """Decode the frames the index at ``fps`` uses once, centre-crop and resize them to each of ``resolutions``
    squared as the datasets do, and store one .npy shard + JSON map per resolution (atomically, each). Returns the
    .npy paths. Size: frames x R x R x 3 bytes, e.g. the samples at 30 fps and 64 px: 622 x 12 KiB = 7.3 MiB."""
    sizes = sorted({int(r) for r in resolutions})
    if not sizes:
        return []
    targets = [cache_path(config, fps, r) for r in sizes]
    index = load_clip_index(config, fps)
    index_sha = read_clip_summary(config, fps)["index_sha256"]
    indexes = frame_indexes(read_manifest(config.manifest))
    plan: list[tuple[str, str, np.ndarray]] = []
    for (path, digest), group in index.groupby(["path", "sha256"], sort=True):
        plan.append((path, digest, np.unique(np.concatenate(group["frame_indices"].map(np.asarray).tolist()))))
    total = sum(len(frames) for _, _, frames in plan)
    videos = []
    label = "/".join(f"{r}px" for r in sizes)
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(t)) for t in targets]
        outs = [
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, r, r, 3))
            for tmp, r in zip(tmps, sizes)
        ]
        row = 0
        with tqdm(total=total, desc=f"cache @ {fps:g} fps {label}", unit="frame", disable=not progress) as bar:
            for path, digest, frames in plan:
                videos.append({"path": path, "sha256": digest, "offset": row, "frames": frames.tolist()})
                url = join(config.data_dir, path)
                # One pass over the video holding one decoded frame at a time (a 720p frame is 2.7 MB), seeking
                # only to the seek points the manifest's scan verified; every resolution from the same decode.
                batch: list[np.ndarray] = []
                for k, (_, frame) in enumerate(vio.iter_frames_at(url, frames, index=indexes.get(digest))):
                    batch.append(frame)
                    if len(batch) == chunk or k == len(frames) - 1:  # resize in batches: one torch call each
                        stacked = np.stack(batch)
                        for out, r in zip(outs, sizes):
                            out[row : row + len(batch)] = fit_frames(stacked, (r, r))
                        row += len(batch)
                        bar.update(len(batch))
                        batch = []
        for out in outs:
            out.flush()
        del outs
    for target, r in zip(targets, sizes):
        meta = {
            "version": INDEX_VERSION,
            "code_sha256": code_sha256("clips"),
            "fps": float(fps),
            "resolution": r,
            "frames": total,
            "index": clip_index_path(config, fps),
            "index_sha256": index_sha,
            "videos": videos,
        }
        write_json(target.with_suffix(".json"), meta, sort_keys=False)
    return targets


def build_clip_cache(config: DataConfig, fps: float, resolution: int, *, progress: bool = True) -> Path:
    """The cache shard of one resolution (see `build_clip_caches`)."""
    return build_clip_caches(config, fps, [resolution], progress=progress)[0]


def _cache_current(config: DataConfig, fps: float, resolution: int) -> bool:
    path = cache_path(config, fps, resolution)
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        return (
            path.is_file()
            and meta.get("index_sha256") == read_clip_summary(config, fps)["index_sha256"]
            and meta.get("code_sha256") == code_sha256("clips")
        )
    except (OSError, ValueError, ClipIndexError):
        return False


def ensure_clip_cache(config: DataConfig, fps: float, resolution: int, *, progress: bool = True) -> Path:
    """The cache shard at (fps, resolution), rebuilt only when missing or made from another clip index."""
    return ensure_clip_caches(config, fps, [resolution], progress=progress)[0]


def ensure_clip_caches(
    config: DataConfig, fps: float, resolutions: Sequence[int], *, progress: bool = True
) -> list[Path]:
    """The cache shards at `fps` for each of `resolutions`; the missing or stale ones are built in one decode."""
    sizes = sorted({int(r) for r in resolutions})
    stale = [r for r in sizes if not _cache_current(config, fps, r)]
    build_clip_caches(config, fps, stale, progress=progress)
    return [cache_path(config, fps, r) for r in sizes]


def open_cache(config: DataConfig, fps: float, resolution: int) -> FrameCache | None:
    """The cache shard for (fps, resolution) when one exists and matches the current index, else None."""
    if not _cache_current(config, fps, resolution):
        return None
    return FrameCache.open(cache_path(config, fps, resolution))
