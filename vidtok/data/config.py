"""DataConfig (the `data:` section of params.yaml) and where the data lives: paths under data_dir, local or fsspec.

    python -m vidtok.params --profile cpu     # the merged params, data: section included

Torch-free, like the manifest and the clip index: only the loader (vidtok/data/loader.py) imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec

from vidtok.params import check_bool, check_choice, check_int, from_mapping, resolve_sections
from vidtok.runs import OUTPUTS

# ----------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DataConfig:
    """Everything the data layer needs. Field names are the keys under ``data:`` in params.yaml."""

    data_dir: str = "data"  # raw videos only (data.dvc tracks it); a local folder or an fsspec URL
    manifest: str = str(OUTPUTS.data / "manifest.parquet")  # .parquet or .csv
    clips_dir: str = str(OUTPUTS.data / "clips")  # fps_<N>.parquet clip index + fps_<N>.json summary per frame rate
    cache_dir: str = str(OUTPUTS.data / "cache")  # decoded-frame shards (local folder)
    # The split (vidtok.data.manifest.split_groups), fixed before any result: per stratum (camera / synthetic
    # footage), content groups ranked by sha256(split_salt, group), test takes ceil(test_fraction * n) of them
    # (when n >= 3), val ceil(val_fraction * n) (when n >= 2), train the rest.
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_salt: str = "vidtok"  # change it to draw another split (and say so: results of two splits differ)
    # Policy, not decodability: a video whose short side is smaller is rejected (the paper's stage 1 trains at
    # 128x128); one with fewer decoded frames than clip_frames is rejected too.
    min_side: int = 128
    clip_frames: int = 17  # 1 + 4k for causal presets (17), 16 for non-causal ones
    clip_stride: int = 1  # target-fps frames between consecutive clip starts in the index (1: every position)
    val_stride: int = 0  # val takes every val_stride-th indexed clip of a video; 0: non-overlapping clips
    fps: tuple[float, ...] = (1, 2, 3, 4, 8, 30)  # frame rates `vidtok data resample` builds by default
    # Val clips come from this rate whatever the training rate, so a frame-rate sweep scores every run on the same
    # clips (the paper trains at 3 fps and validates at 8).
    val_fps: float = 8
    seed: int = 0
    num_workers: int = 0
    samples_per_epoch: int = 0  # random train clips per epoch; 0: as many as the train split has non-overlapping
    # No video dominates: in an epoch a video counts at most this many non-overlapping clips (its clips are drawn
    # with weight min(1, cap / its clips)); val and test take at most eval_clips_per_video non-overlapping clips
    # per video, evenly spaced over it. 0: no cap.
    train_clips_per_video: int = 32
    eval_clips_per_video: int = 8
    train_crop: str = "center"  # "center" (the paper: no augmentation) or "random" (along the long side)
    # Square sizes `vidtok data resample` also caches decoded frames at. On 2 CPU cores decoding costs ~0.3 s per
    # batch of two 17-frame clips, a whole training step of the CPU profile; a cached batch ~1 ms. 64: that profile.
    cache_resolutions: tuple[int, ...] = (64,)
    use_cache: bool = True  # the data module reads a cache shard when one exists for its fps and resolution

    def __post_init__(self) -> None:
        # YAML and CLI hand over lists; keep tuples so the config stays hashable and frozen.
        for name in ("fps", "cache_resolutions"):
            value = getattr(self, name)
            if isinstance(value, str | int | float):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        for name in ("data_dir", "manifest", "clips_dir", "cache_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"data.{name} must be a non-empty path string, got {getattr(self, name)!r}")
        if os.path.splitext(self.manifest)[1].lower() not in (".parquet", ".csv"):
            raise ValueError(f"data.manifest must end in .parquet or .csv, got {self.manifest!r}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int | float) and 0 <= value < 1):
                raise ValueError(f"data.{name} must be in [0, 1) (e.g. 0.2), got {value!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("data.val_fraction + data.test_fraction must leave a share for training (< 1)")
        if not isinstance(self.split_salt, str):
            raise ValueError(f"data.split_salt must be a string, got {self.split_salt!r}")
        for name, low in (("min_side", 1), ("clip_frames", 1), ("clip_stride", 1)):
            check_int(f"data.{name}", getattr(self, name), low)
        for name in (
            "val_stride",
            "num_workers",
            "samples_per_epoch",
            "seed",
            "train_clips_per_video",
            "eval_clips_per_video",
        ):
            check_int(f"data.{name}", getattr(self, name), 0)
        if not self.fps:
            raise ValueError("data.fps must list at least one frame rate, e.g. [3, 8]")
        for rate in self.fps:
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"data.fps must hold positive frame rates, got {rate!r}")
        if isinstance(self.val_fps, bool) or not isinstance(self.val_fps, int | float) or not self.val_fps > 0:
            raise ValueError(f"data.val_fps must be a positive frame rate (e.g. 8), got {self.val_fps!r}")
        for size in self.cache_resolutions:
            if isinstance(size, bool) or not isinstance(size, int) or size < 8:
                raise ValueError(f"data.cache_resolutions must hold square sizes >= 8 pixels, got {size!r}")
        check_choice("data.train_crop", self.train_crop, ("center", "random"))
        check_bool("data.use_cache", self.use_cache)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        """From the ``data:`` mapping of params.yaml; an unknown key is an error that lists the known ones."""
        return from_mapping(cls, values, "data parameter(s)")

    def replace(self, **changes: Any) -> DataConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_data_config(
    params: str | os.PathLike[str] | None = "params.yaml",
    profile: str | None = None,
    sets: Sequence[str] = (),
    **overrides: Any,
) -> DataConfig:
    """DataConfig from a params file (its profile, then its top-level ``data:`` section, then ``--set`` overrides;
    see vidtok.params; an absent file gives the defaults), then ``overrides`` (None values are ignored, so CLI
    flags that were not given change nothing)."""
    path = params if params is not None and os.path.exists(params) else None
    values: dict[str, Any] = resolve_sections(path, profile, sets)["data"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DataConfig.from_dict(values)


# ----------------------------------------------------------------------------------------------------- the data folder


def join(root: str, rel: str) -> str:
    """``rel`` (posix, relative) under ``root``, a local folder or an fsspec URL."""
    if "://" in root:
        return root.rstrip("/") + "/" + rel
    return os.path.join(root, *rel.split("/"))


def list_files(root: str) -> list[str]:
    """Every file under ``root`` (recursive) as sorted posix paths relative to it. Hidden files and folders (a
    leading dot: .DS_Store, editors' swap files, half-written .part files) are skipped."""
    fs, base = fsspec.core.url_to_fs(root)
    if not fs.exists(base):
        raise FileNotFoundError(f"{root}: data folder not found (run `vidtok data samples`, or `dvc pull`)")
    if not fs.isdir(base):
        raise NotADirectoryError(f"{root}: data_dir must be a folder of videos, this is a file")
    base = base.rstrip("/")
    out = []
    for p in fs.find(base):
        rel = p[len(base) :].lstrip("/").replace(os.sep, "/")
        if rel and not any(part.startswith(".") for part in rel.split("/")):
            out.append(rel)
    return sorted(out)
