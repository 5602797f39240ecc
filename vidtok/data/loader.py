"""Clip datasets, the step-indexed training loader and the Lightning data module: clips as tensors.

    python -m benchmarks.data_loader   # clips per second, decoding vs the frame cache

Items are (3, T, H, W) float32 clips in [-1, 1], T = clip_frames, (H, W) = the stage's resolution: the source
frames the clip index names are decoded (or gathered from the frame cache), the largest window with the
target's aspect ratio is cropped (centre, or a random slide along the long side for training) and resized with
an antialiased filter. The resolution and the batch size are constructor arguments, so training stage 1 (low
resolution) and stage 2 (high resolution) use the same module.

Training reads clips one way only: `StepLoader` (StepBatches in a fork-safe DataLoader), whose item i is the
batch of iteration start + i. Randomness lives in the epoch draw, in the main process: for epoch e,
RandomClipSampler draws clip rows and per-clip seeds from numpy's generator seeded with (seed, e), and iteration
s takes its slice of epoch s // batches_per_epoch. Workers only compute, so a run gives the same batches with 0
or N workers, and a resumed run the same batches as an uninterrupted one.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from vidtok.data import video as vio
from vidtok.data.clips import FrameCache, ensure_clip_cache, ensure_clip_index, fit_frames, load_clip_index, open_cache
from vidtok.data.config import DataConfig, join
from vidtok.data.manifest import ensure_manifest, frame_indexes, read_manifest

log = logging.getLogger(__name__)

__all__ = [
    "ClipDataset",
    "ForkSafeDataLoader",
    "RandomClipSampler",
    "StepBatches",
    "StepLoader",
    "TensorClips",
    "clip_weights",
    "clips_sha256",
    "VideoDataModule",
    "collate_clips",
    "epoch_samples",
    "non_overlapping_step",
    "stack_clips",
    "val_subset",
]


def _size(resolution: int | tuple[int, int]) -> tuple[int, int]:
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 8 for s in size):
        raise ValueError(f"resolution must be an int or (height, width) of at least 8 pixels, got {resolution!r}")
    return size  # type: ignore[return-value]


class ClipDataset(Dataset):
    """Clips listed in (a slice of) a clip index, as (3, T, H, W) float32 tensors in [-1, 1].

    ``data_dir``: where the index's relative paths live (a local folder or an fsspec URL, e.g. memory://data).
    ``crop``: "center", or "random" (the window slides along the long side; the item must then be a
    (row, seed) pair, as :class:`RandomClipSampler` yields). ``cache``: a :class:`FrameCache` holding the index's
    frames; used when its resolution is at least the output's (equal: the frames are returned as cached).
    ``frame_indexes``: sha256 -> FrameIndex of the videos (vidtok.data.manifest.frame_indexes), so decoding seeks
    only where the manifest's scan verified it; without one, a clip is decoded from the start of its video."""

    def __init__(
        self,
        index: pd.DataFrame,
        data_dir: str,
        resolution: int | tuple[int, int],
        *,
        crop: str = "center",
        cache: FrameCache | None = None,
        frame_indexes: Mapping[str, vio.FrameIndex] | None = None,
    ) -> None:
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        self.data_dir = data_dir
        self.size = _size(resolution)
        self.crop = crop
        self.cache = cache if cache is not None and cache.resolution >= max(self.size) else None
        # How to read each video (by sha256), from the manifest's scan: where seeking is safe.
        self.frame_indexes = dict(frame_indexes or {})
        # Plain arrays instead of pandas rows: cheap to pickle into workers and to index per item.
        self.paths = index["path"].to_numpy(dtype=object)
        self.sha256 = index["sha256"].to_numpy(dtype=object)
        self.clip_ids = index["clip_id"].to_numpy(dtype=np.int64)
        self.clip_numbers = index["clip"].to_numpy(dtype=np.int64)  # position of the clip within its video
        frames = index["frame_indices"].tolist()
        self.frames = np.stack([np.asarray(f, dtype=np.int64) for f in frames]) if frames else np.zeros((0, 0), int)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def clip_frames(self) -> int:
        return int(self.frames.shape[1]) if len(self.frames) else 0

    def content_sha256(self) -> str:
        """What this dataset yields, as one sha256: every clip's video (by content), frame indices, the output size
        and crop. Where the videos live and whether a frame cache serves them do not change it."""
        digest = hashlib.sha256(json.dumps({"size": list(self.size), "crop": self.crop}).encode())
        digest.update(json.dumps([str(v) for v in self.sha256]).encode())
        digest.update(np.ascontiguousarray(self.frames, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def raw(self, row: int) -> np.ndarray:
        """The clip's frames as decoded (or cached): uint8 (T, H, W, 3)."""
        if self.cache is not None:
            return self.cache.clip(self.sha256[row], self.frames[row])
        index = self.frame_indexes.get(self.sha256[row])
        return vio.read_frames(join(self.data_dir, self.paths[row]), self.frames[row], index=index)

    def __getitem__(self, item: int | tuple[int, int]) -> torch.Tensor:
        row, seed = (item, None) if isinstance(item, int | np.integer) else item
        offset = 0.5
        if self.crop == "random":
            # Without a seed (plain integer indexing) a random crop would be irreproducible: use the centre.
            offset = 0.5 if seed is None else float(np.random.default_rng(seed).random())
        frames = fit_frames(self.raw(int(row)), self.size, offset)
        # (T, H, W, 3) uint8 -> (3, T, H, W) float32 in [-1, 1]. In numpy, on one thread: torch's elementwise ops
        # fan out to its thread pool, which costs more than 200k elements take and stalls when the training step
        # (or another process) holds the other cores.
        x = np.ascontiguousarray(frames.transpose(3, 0, 1, 2)).astype(np.float32)
        np.divide(x, 127.5, out=x)
        np.subtract(x, 1.0, out=x)
        return torch.from_numpy(x)


class RandomClipSampler(Sampler):
    """``num_samples`` (row, seed) pairs per epoch, drawn from ``num_clips`` rows with numpy's generator seeded by
    (seed, epoch): without replacement while num_samples <= the rows that can be drawn, then with; ``weights``
    (one per row, see `clip_weights`) make some rows likelier. Call ``set_epoch`` for a new draw each epoch."""

    def __init__(self, num_clips: int, num_samples: int, seed: int = 0, weights: np.ndarray | None = None) -> None:
        if num_clips <= 0:
            raise ValueError("RandomClipSampler needs at least one clip")
        if weights is not None and (len(weights) != num_clips or not np.all(np.asarray(weights) >= 0)):
            raise ValueError(f"weights must be {num_clips} non-negative numbers, one per clip")
        self.num_clips, self.num_samples, self.seed, self.epoch = num_clips, num_samples, seed, 0
        self.p = None if weights is None else np.asarray(weights, dtype=np.float64) / float(np.sum(weights))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        drawable = self.num_clips if self.p is None else int(np.count_nonzero(self.p))
        replace = self.num_samples > drawable
        rows = rng.choice(self.num_clips, size=self.num_samples, replace=replace, p=self.p)
        seeds = rng.integers(0, 2**31 - 1, size=self.num_samples)
        return iter(zip(rows.tolist(), seeds.tolist()))


def non_overlapping_step(clip_frames: int, clip_stride: int) -> int:
    """Every how many indexed clips of a video the next one starts past the previous one's end:
    ceil(clip_frames / clip_stride), e.g. 17 with stride 1. Val and eval sets take every such clip (each frame
    scored about once), and an epoch of training draws as many clips as the train videos hold this way."""
    return -(-clip_frames // clip_stride)


def val_subset(
    index: pd.DataFrame,
    clip_frames: int,
    clip_stride: int,
    val_stride: int,
    *,
    split: str = "val",
    per_video: int = 0,
) -> pd.DataFrame:
    """The clips of `split` that val and test score: every ``val_stride``-th indexed clip of each video (0: the
    non-overlapping ones, `non_overlapping_step`, so each frame is scored about once), then at most `per_video` of
    them per video, evenly spaced over it (0: all), so a long film weighs no more than a short clip."""
    step = val_stride or non_overlapping_step(clip_frames, clip_stride)
    chosen = index[(index["split"] == split) & (index["clip"] % step == 0)]
    if per_video > 0:
        keep = []
        for _, clips in chosen.groupby("path", sort=False):
            pick = np.unique(np.round(np.linspace(0, len(clips) - 1, min(per_video, len(clips)))).astype(int))
            keep.append(clips.iloc[pick])
        chosen = pd.concat(keep) if keep else chosen.iloc[:0]
        chosen = chosen.sort_values("clip_id") if "clip_id" in chosen else chosen
    return chosen.reset_index(drop=True)


class ForkSafeDataLoader(DataLoader):
    """A DataLoader whose forked workers never free what they inherit.

    PyAV frames that had ``side_data`` read (vidtok.data.video does, for the display matrix) sit in reference cycles, so
    they and their swscale contexts are freed only by the garbage collector. Those contexts own slice threads. A
    worker forked while such garbage exists inherits it without the threads, and when its collector frees it,
    ``sws_freeContext`` joins a thread that does not exist there: the worker hangs for ever (seen in the
    benchmark after decoding in the main process, e.g. after building the frame cache). So: collect in the
    parent, where the threads exist, and freeze what is left so the workers' collectors never touch it.
    Any DataLoader with workers over these datasets needs the same; use this class in place of DataLoader."""

    def _get_iterator(self):  # noqa: ANN202 - DataLoader's private hook, called where workers are started
        if self.num_workers == 0:
            return super()._get_iterator()
        gc.collect()
        gc.freeze()
        try:
            return super()._get_iterator()
        finally:
            gc.unfreeze()


def collate_clips(batch: list[torch.Tensor]) -> torch.Tensor:
    """Stack (3, T, H, W) clips into (B, 3, T, H, W) with numpy, on this thread. In the loader on the 2-core
    machine, torch's default collate (torch.stack through its thread pool) took 15 ms for a batch of two
    17x64x64 clips, against 0.6 ms for the whole batch this way (benchmarks/data_loader.py)."""
    return torch.from_numpy(np.stack([clip.numpy() for clip in batch]))


def worker_init(worker_id: int) -> None:
    # Workers decode; each may start FFmpeg threads. One torch thread per worker keeps 2 cores from thrashing.
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------ the step loader


class TensorClips(Dataset):
    """In-memory clips (N, 3, T, H, W) in [-1, 1]; indexed like ClipDataset by a row or a (row, seed) pair."""

    def __init__(self, clips: Tensor):
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise ValueError(f"expected clips (N, 3, T, H, W), got {tuple(clips.shape)}")
        self.clips = clips

    def __len__(self) -> int:
        return self.clips.shape[0]

    def content_sha256(self) -> str:
        """sha256 of the clips' shape, dtype and values."""
        clips = self.clips.detach().cpu().contiguous()
        digest = hashlib.sha256(f"{tuple(clips.shape)} {clips.dtype}".encode())
        digest.update(clips.numpy().tobytes())
        return digest.hexdigest()

    def __getitem__(self, item: int | tuple[int, int]) -> Tensor:
        row = item if isinstance(item, int | np.integer) else item[0]
        return self.clips[int(row)]


class StepBatches(Dataset):
    """Item i is this rank's batch for iteration `loader.start + i`, built from (row, seed) pairs of the data
    module's epoch draw: epoch e is `RandomClipSampler(len(dataset), samples per epoch, seed)` at `set_epoch(e)`,
    cut into batches of batch_size x world_size (an incomplete tail is dropped, as the data module's loader does),
    and rank r takes the r-th slice of each. The dataset, batch size, seed, iterations, samples per epoch (0: the
    dataset's length) and clip weights are the StepLoader's. Use with `DataLoader(batch_size=None)`: items are
    already batches."""

    def __init__(self, loader: StepLoader, rank: int = 0, world_size: int = 1):
        dataset, batch_size, seed = loader.dataset, loader.batch_size, loader.seed
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = loader.start, loader.stop, rank, world_size
        self.global_batch = batch_size * world_size
        self.samples_per_epoch = max(loader.samples or len(dataset), self.global_batch)  # type: ignore[arg-type]
        self.batches_per_epoch = self.samples_per_epoch // self.global_batch
        self._sampler = RandomClipSampler(len(dataset), self.samples_per_epoch, seed, loader.weights)  # type: ignore[arg-type]
        self._epoch: tuple[int, list[tuple[int, int]]] | None = None

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def items(self, step: int) -> list[tuple[int, int]]:
        """The (row, seed) pairs of this rank's batch at iteration `step`."""
        epoch, j = divmod(step, self.batches_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._sampler.set_epoch(epoch)
            self._epoch = (epoch, list(self._sampler))
        lo = j * self.global_batch + self.rank * self.batch_size
        return self._epoch[1][lo : lo + self.batch_size]

    def __getitem__(self, i: int) -> Tensor:
        return collate_clips([self.dataset[item] for item in self.items(self.start + i)])


def clip_weights(dataset: Dataset, clip_frames: int, clip_stride: int, per_video: int) -> np.ndarray | None:
    """Sampling weight of each row of a clip dataset so that no video dominates an epoch: a video holding m
    non-overlapping clips counts as min(m, per_video) clips, spread evenly over all its indexed clips. None (all
    equal) when `per_video` is 0 or the dataset does not say which video a clip comes from."""
    paths = getattr(dataset, "paths", None)
    numbers = getattr(dataset, "clip_numbers", None)
    if per_video <= 0 or paths is None or numbers is None or not len(paths):
        return None
    step = non_overlapping_step(clip_frames, clip_stride)
    codes, inverse = np.unique(np.asarray(paths, dtype=str), return_inverse=True)
    rows = np.bincount(inverse, minlength=len(codes)).astype(np.float64)
    distinct = np.bincount(inverse, weights=(np.asarray(numbers) % step == 0), minlength=len(codes))
    counted = np.minimum(np.maximum(distinct, 1), per_video)
    return (counted / rows)[inverse]


def epoch_samples(
    dataset: Dataset,
    batch_size: int,
    clip_frames: int,
    clip_stride: int,
    samples_per_epoch: int = 0,
    per_video: int = 0,
) -> int:
    """Clips one training epoch draws: `samples_per_epoch` when set, else as many as the train videos hold without
    overlap (each frame seen about once per epoch), each video counting at most `per_video` (0: no cap);
    in-memory datasets without clip positions: all of them. At least one batch."""
    if samples_per_epoch:
        return samples_per_epoch
    numbers = getattr(dataset, "clip_numbers", None)
    if numbers is None:
        return max(len(dataset), batch_size)  # type: ignore[arg-type]
    weights = clip_weights(dataset, clip_frames, clip_stride, per_video)
    if weights is not None:
        return max(int(round(float(weights.sum()))), batch_size)
    step = non_overlapping_step(clip_frames, clip_stride)
    return max(int(np.count_nonzero(np.asarray(numbers) % step == 0)), batch_size)


class StepLoader:
    """The training loader for iterations start..stop, built once the strategy knows the rank: StepBatches in a
    fork-safe DataLoader. The only way clips reach training (`vidtok.train.run` and VideoDataModule use it). A
    class, not a closure, so Lightning's ddp_spawn can pickle it into its workers."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        samples: int,
        workers: int = 0,
        weights: np.ndarray | None = None,
    ):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.start, self.stop, self.samples, self.workers, self.weights = start, stop, samples, workers, weights

    def __call__(self, rank: int = 0, world_size: int = 1) -> DataLoader:
        return ForkSafeDataLoader(
            StepBatches(self, rank, world_size),
            batch_size=None,  # items are whole batches
            shuffle=False,
            num_workers=self.workers,
            worker_init_fn=worker_init if self.workers else None,
            pin_memory=torch.cuda.is_available(),
        )


def clips_sha256(train: Dataset, val: Dataset | None) -> str | None:
    """The data identity of a training run: the content hashes of its train and val datasets (None when a dataset
    cannot say what it holds: such a run is never reused)."""
    parts = []
    for dataset in (train, val):
        if dataset is None:
            parts.append(None)
            continue
        content = getattr(dataset, "content_sha256", None)
        if content is None:
            return None
        parts.append(content())
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def stack_clips(dataset: Dataset, count: int) -> Tensor:
    """`count` clips evenly spaced over a dataset (all when count is 0) as one (N, 3, T, H, W) tensor: a val set
    lists its videos one after another, so the first clips would all come from one video."""
    total = len(dataset)  # type: ignore[arg-type]
    rows = range(total) if count <= 0 or count >= total else np.linspace(0, total - 1, count).round().astype(int)
    return torch.stack([dataset[int(i)] for i in rows]) if total else torch.zeros(0)


class VideoDataModule(L.LightningDataModule):
    """Train clips at ``fps`` and val clips at ``val_fps`` (default: the config's, 8), at ``resolution``.

    ``prepare_data`` builds what is missing or stale: the manifest, the clip indexes at both rates, and frame
    caches at ``resolution`` when it is listed in ``config.cache_resolutions``. ``num_workers``,
    ``samples_per_epoch`` and ``use_cache`` are the config's (``config.replace(num_workers=2)`` changes one). A cache
    shard is read when ``use_cache`` and one for (rate, resolution or larger) matches the current index; otherwise
    clips are decoded."""

    def __init__(
        self,
        config: DataConfig | None = None,
        *,
        fps: float = 3,
        resolution: int | tuple[int, int] = 64,
        val_fps: float | None = None,
        batch_size: int = 2,
    ) -> None:
        super().__init__()
        self.config = config or DataConfig()
        self.fps = float(fps)
        self.val_fps = float(self.config.val_fps if val_fps is None else val_fps)
        self.size = _size(resolution)
        self.batch_size = batch_size
        self.num_workers = self.config.num_workers
        self.samples_per_epoch = self.config.samples_per_epoch
        self.use_cache = self.config.use_cache
        if not (self.fps > 0 and self.val_fps > 0):
            raise ValueError(f"fps and val_fps must be positive, got {fps!r} and {val_fps!r}")
        if self.batch_size < 1 or self.num_workers < 0 or self.samples_per_epoch < 0:
            raise ValueError("batch_size must be >= 1, num_workers and samples_per_epoch >= 0")
        self.train_dataset: ClipDataset | None = None
        self.val_dataset: ClipDataset | None = None

    def prepare_data(self) -> None:
        config = self.config
        ensure_manifest(config, log=log.info)  # rebuilt when its data, code or split settings changed
        for rate in dict.fromkeys((self.fps, self.val_fps)):
            ensure_clip_index(config, rate)
            if self.use_cache and self.size[0] == self.size[1] and self.size[0] in config.cache_resolutions:
                ensure_clip_cache(config, rate, self.size[0])

    def _cache(self, rate: float) -> FrameCache | None:
        if not self.use_cache:
            return None
        # The smallest current shard at least as large as the output; equal size means no resize at all.
        for r in sorted(self.config.cache_resolutions):
            if r >= max(self.size) and (cache := open_cache(self.config, rate, r)) is not None:
                return cache
        if max(self.size) <= max(self.config.cache_resolutions, default=0):
            warnings.warn(
                f"no current frame cache at {rate:g} fps for {max(self.size)} px: every clip is decoded (about 0.3 s "
                f"a batch on 2 cores); build it with `vidtok data resample --fps {rate:g}` or prepare_data()",
                stacklevel=3,
            )
        return None

    def setup(self, stage: str | None = None) -> None:
        config = self.config
        index = load_clip_index(config, self.fps)
        train = index[index["split"] == "train"].reset_index(drop=True)
        if not len(train):
            raise ValueError(
                f"no train clips at {self.fps:g} fps: every train video is shorter than one {config.clip_frames}-frame "
                f"clip at that rate, which spans {(config.clip_frames - 1) / self.fps:.2f} s "
                "(add longer videos, lower data.clip_frames or raise the fps; the summary JSON in data.clips_dir "
                "lists each video)"
            )
        val_index = index if self.val_fps == self.fps else load_clip_index(config, self.val_fps)
        val = val_subset(
            val_index, config.clip_frames, config.clip_stride, config.val_stride, per_video=config.eval_clips_per_video
        )
        if not len(val):
            warnings.warn(
                f"no val clips at {self.val_fps:g} fps (val videos too short, or none): validation is empty",
                stacklevel=2,
            )
        manifest = read_manifest(config.manifest)
        self._warn_upscaling(manifest, pd.concat([train["path"], val["path"]]).unique())
        indexes = frame_indexes(manifest)
        self.train_dataset = ClipDataset(
            train,
            config.data_dir,
            self.size,
            crop=config.train_crop,
            cache=self._cache(self.fps),
            frame_indexes=indexes,
        )
        self.val_dataset = ClipDataset(
            val, config.data_dir, self.size, crop="center", cache=self._cache(self.val_fps), frame_indexes=indexes
        )

    def _warn_upscaling(self, manifest: pd.DataFrame, paths: np.ndarray) -> None:
        sizes = manifest.set_index("path")[["width", "height"]]
        small = [p for p in paths if p in sizes.index and min(sizes.loc[p]) < max(self.size)]
        if small:
            warnings.warn(
                f"{len(small)} video(s) are smaller than {self.size[1]}x{self.size[0]} and get upscaled "
                f"(e.g. {small[0]}); raise data.min_side to reject them",
                stacklevel=3,
            )

    def step_loader(self, start: int, stop: int) -> StepLoader:
        """The training loader of iterations start..stop (what `vidtok.train.run.train` uses)."""
        if self.train_dataset is None:
            self.setup("fit")
        c, ds = self.config, self.train_dataset
        cap = c.train_clips_per_video
        samples = epoch_samples(ds, self.batch_size, c.clip_frames, c.clip_stride, self.samples_per_epoch, cap)
        weights = clip_weights(ds, c.clip_frames, c.clip_stride, cap)
        return StepLoader(ds, self.batch_size, c.seed, start, stop, samples, self.num_workers, weights)

    def train_dataloader(self) -> DataLoader:
        """One epoch of the step-indexed training batches (iterations 0 .. batches per epoch - 1)."""
        loader = self.step_loader(0, 0)
        loader.stop = loader.samples // self.batch_size
        return loader()

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        return ForkSafeDataLoader(
            self.val_dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            worker_init_fn=worker_init if self.num_workers else None,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_clips,
        )
