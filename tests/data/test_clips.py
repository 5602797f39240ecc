"""Clip indexes and frame caches (vidtok.data.clips) on the real samples: counts per frame rate, the frames each
target time shows, staleness, atomic writes, the cache, an fsspec memory filesystem.

.venv/bin/pytest tests/data/test_clips.py -q
"""

from __future__ import annotations

import json
import uuid
from fractions import Fraction

import fsspec
import numpy as np
import pandas as pd
import pytest
import torch

from tests import videofactory as vf
from tests.data.conftest import RATES
from vidtok._files import write_table
from vidtok.data.clips import (
    ClipIndexError,
    FrameCache,
    build_clip_cache,
    build_clip_index,
    ensure_clip_index,
    load_clip_index,
    read_clip_summary,
)
from vidtok.data.config import DataConfig
from vidtok.data.loader import ClipDataset
from vidtok.data.manifest import build_manifest, read_manifest
from vidtok.data.sources import SAMPLE_FILES

# Clips of 17 frames on the samples (bikes 10 s at 25 fps, bigbuckbunny 5.28 s at 25, carphone x2 4.004 s at
# 29.97): a clip at f fps spans 16 / f s, and clip starts sit on the 1/f grid while the last target < duration.
EXPECTED_CLIPS = {
    1: {},  # 16 s: longer than every sample
    2: {"bikes.mp4": 4},  # 8 s: positions 0..19 (g / 2 < 10) -> 20 - 17 + 1
    3: {"bikes.mp4": 14},  # 5.33 s: bigbuckbunny (5.28 s) misses by 53 ms
    4: {"bikes.mp4": 24, "bigbuckbunny.mp4": 6, "carphone_distorted.mp4": 1, "carphone_pristine.mp4": 1},
    8: {"bikes.mp4": 64, "bigbuckbunny.mp4": 27, "carphone_distorted.mp4": 17, "carphone_pristine.mp4": 17},
    25: {"bikes.mp4": 234, "bigbuckbunny.mp4": 116, "carphone_distorted.mp4": 85, "carphone_pristine.mp4": 85},
    30: {"bikes.mp4": 284, "bigbuckbunny.mp4": 143, "carphone_distorted.mp4": 105, "carphone_pristine.mp4": 105},
}


def shown(t: Fraction, frame_rate: Fraction, n: int) -> int:
    """The constant-rate frame on screen at time t: the last one whose timestamp k / rate is not after t."""
    return min(int(t * frame_rate), n - 1)


@pytest.mark.parametrize("rate", RATES)
def test_clip_counts_per_fps_on_the_samples(samples, rate):
    index = load_clip_index(samples, rate)
    assert index.groupby("path").size().to_dict() == EXPECTED_CLIPS[rate]
    summary = read_clip_summary(samples, rate)
    assert summary["clips"] == len(index) and summary["clip_frames"] == 17
    assert summary["clips_train"] + summary["clips_val"] + summary["clips_test"] == len(index)
    assert summary["clips_val"] == EXPECTED_CLIPS[rate].get("bigbuckbunny.mp4", 0)  # Big Buck Bunny is val
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == set(SAMPLE_FILES) - set(EXPECTED_CLIPS[rate])
    for reason in skipped.values():
        assert reason.startswith(f"too short at {rate} fps: a 17-frame clip spans {16 / rate:.2f} s")
    if len(index):
        assert index["clip_id"].tolist() == list(range(len(index)))
        durations = read_manifest(samples.manifest).set_index("path")["duration"]
        last = np.array([t[-1] for t in index["target_times"]])
        assert np.all(last < durations.loc[index["path"]].to_numpy())  # every target still shows a frame
        assert all(len(f) == 17 for f in index["frame_indices"])


def test_clip_frames_bikes_25_to_3_fps(samples):
    index = load_clip_index(samples, 3)
    bikes = index[index["path"] == "bikes.mp4"]
    # k / 3 s shows frame floor(25 k / 3): 8.33 -> 8, 16.67 -> 16 (the frame on screen, not the nearest one)
    assert list(bikes.iloc[0]["frame_indices"]) == [0, 8, 16, 25, 33, 41, 50, 58, 66, 75, 83, 91, 100, 108, 116, 125,
                                                     133]  # fmt: skip
    # Clip k starts at k / 3 s (stride 1 on the target grid); the last, k = 13, ends at 29 / 3 = 9.67 s < 10 s.
    for row in bikes.itertuples():
        assert row.start_time == pytest.approx(row.clip / 3)
        assert np.allclose(row.target_times, (row.clip + np.arange(17)) / 3)
        assert list(row.frame_indices) == [shown(Fraction(row.clip + j, 3), Fraction(25), 250) for j in range(17)]


@pytest.mark.parametrize(("rate", "name", "n", "native"), [(8, "bikes.mp4", 250, Fraction(25)),
                                                           (4, "carphone_pristine.mp4", 120, Fraction(30000, 1001)),
                                                           (30, "bigbuckbunny.mp4", 132, Fraction(25))])  # fmt: skip
def test_clip_frames_are_the_frames_on_screen(samples, rate, name, n, native):
    """bikes at 8 fps: 3.125 frames per target; carphone's only 4-fps clip ends at 4.0 s, 4 ms before the video
    does, on its last frame; 30 fps from 25 repeats one frame in six."""
    index = load_clip_index(samples, rate)
    for row in index[index["path"] == name].itertuples():
        want = [shown(Fraction(row.clip + j, rate), native, n) for j in range(17)]
        assert list(row.frame_indices) == want
    if name.startswith("carphone"):
        assert list(index[index["path"] == name].iloc[0]["frame_indices"])[-1] == 119


def test_clip_index_notices_a_stale_manifest(samples, tmp_path):
    config = DataConfig(data_dir=samples.data_dir, manifest=str(tmp_path / "m.parquet"),
                        clips_dir=str(tmp_path / "clips"))  # fmt: skip
    build_manifest(config, progress=False)
    build_clip_index(config, 8, progress=False)
    load_clip_index(config, 8)
    stricter = config.replace(min_side=150)
    build_manifest(stricter, progress=False)  # carphone (144 px high) is now rejected
    with pytest.raises(ClipIndexError, match="manifest_sha256.*vidtok data resample --fps 8"):
        load_clip_index(stricter, 8)
    with pytest.raises(ClipIndexError, match=r"manifest is stale \(settings changed: data.min_side 150 -> 128"):
        load_clip_index(config, 8)  # the manifest was made with other settings than these
    ensure_clip_index(stricter, 8, progress=False)
    load_clip_index(stricter, 8)
    with pytest.raises(ClipIndexError, match="clip_frames"):
        load_clip_index(stricter.replace(clip_frames=16), 8)


def test_index_and_manifest_files_are_written_atomically(samples, tmp_path, monkeypatch):
    target = tmp_path / "t.parquet"
    df = read_manifest(samples.manifest)
    write_table(df, target)
    before = target.read_bytes()

    def broken(*a, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(RuntimeError):
        write_table(df, target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_cache_gives_the_same_clips_as_decoding(samples):
    shard = build_clip_cache(samples, 8, 32, progress=False)
    cache = FrameCache.open(shard)
    meta = json.loads(shard.with_suffix(".json").read_text())
    index = load_clip_index(samples, 8)
    used = {p: np.unique(np.concatenate(list(g["frame_indices"]))) for p, g in index.groupby("path")}
    assert cache.array.shape == (sum(len(v) for v in used.values()), 32, 32, 3) == (meta["frames"], 32, 32, 3)
    decoded = ClipDataset(index, samples.data_dir, 32)
    cached = ClipDataset(index, samples.data_dir, 32, cache=cache)
    smaller = ClipDataset(index, samples.data_dir, 16, cache=cache)  # a larger shard serves smaller outputs
    assert cached.cache is cache and smaller.cache is cache
    for row in (0, 70, len(index) - 1):
        assert torch.equal(decoded[row], cached[row])  # bit-identical: both round to uint8 after resizing
        assert smaller[row].shape == (3, 17, 16, 16)
    assert ClipDataset(index, samples.data_dir, 64, cache=cache).cache is None  # too small to serve 64 px


def test_memory_filesystem_end_to_end(tmp_path):
    root = f"memory://vidtok-test-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    try:
        vf.make_video(tmp_path / "a.mp4", frames=40, size=(64, 48))
        vf.make_rotated(tmp_path / "b.mp4", rotation=270, frames=20)
        for name in ("a.mp4", "b.mp4"):
            fs.put_file(str(tmp_path / name), f"{root}/data/{name}")
        config = DataConfig(data_dir=f"{root}/data", manifest=f"{root}/out/manifest.parquet",
                            clips_dir=f"{root}/out/clips", min_side=32)  # fmt: skip
        df = build_manifest(config, progress=False)
        assert df["status"].tolist() == ["ok", "ok"] and fs.exists(f"{root}/out/manifest.parquet")
        build_clip_index(config, 12.5, progress=False)
        index = load_clip_index(config, 12.5)
        assert index.groupby("path").size().to_dict() == {"a.mp4": 4}  # 1.6 s: 20 positions; b (0.8 s) has none
        assert "too short at 12.5 fps" in read_clip_summary(config, 12.5)["skipped"][0]["reason"]
        build_clip_index(config, 25, progress=False)
        index = load_clip_index(config, 25)
        ds = ClipDataset(index, config.data_dir, 32)
        local = ClipDataset(index, str(tmp_path), 32)
        for row in (0, len(index) - 1):  # a's first clip, b's last
            assert ds[row].shape == (3, 17, 32, 32)
            assert torch.equal(ds[row], local[row])
    finally:
        fs.rm(root.removeprefix("memory://"), recursive=True)
