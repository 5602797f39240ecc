"""Tests for the data layer (vidtok.data, vidtok.data.clips, vidtok.data.loader): the real sample videos, every
bad-data case (generated with tests/videofactory.py), the schema, the split, the clip index, datasets and the
Lightning data module.

.venv/bin/pytest tests/test_data.py -q
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from fractions import Fraction
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import torch

from vidtok._files import sha256_file
from vidtok.cli import main
from vidtok.data.clips import (
    ClipIndexError,
    FrameCache,
    build_clip_cache,
    build_clip_index,
    ensure_clip_index,
    load_clip_index,
    read_clip_summary,
)
from vidtok.data.config import DataConfig, load_data_config
from vidtok.data.loader import ClipDataset, RandomClipSampler, VideoDataModule, val_subset
from vidtok.data.manifest import (
    ManifestError,
    build_manifest,
    manifest_summary,
    read_manifest,
    split_of,
    validate_manifest,
    write_table,
)
from vidtok.data.sources import SAMPLE_FILES, _dvc_dir_md5, copy_samples, sync_dvc_cache
from vidtok.data.video import read_frames, write_video

try:  # tests/ is a package (tests/__init__.py): the repository root is on sys.path
    from tests import videofactory as vf
except ImportError:  # tests/ is a plain folder: pytest puts the folder itself on sys.path
    import videofactory as vf  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
RATES = (1, 2, 3, 4, 8, 25, 30)
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


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def nearest(t: Fraction, frame_rate: Fraction, n: int) -> int:
    """Index of the constant-rate frame nearest to time t, ties to the earlier one (exact arithmetic)."""
    x = t * frame_rate
    return min(int(-((-(x - Fraction(1, 2))) // 1)), n - 1)  # ceil(x - 1/2)


def config_in(root: Path, **kw) -> DataConfig:
    return DataConfig(
        data_dir=str(root / "data"),
        manifest=str(root / "out" / "manifest.parquet"),
        clips_dir=str(root / "out" / "clips"),
        cache_dir=str(root / "out" / "cache"),
        **kw,
    )


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> DataConfig:
    """The four sample videos copied into a temporary data/, with the manifest and clip indexes built."""
    root = tmp_path_factory.mktemp("samples")
    config = config_in(root, fps=RATES, cache_resolutions=())  # the decoding path, unless a test asks for a cache
    copy_samples(config.data_dir, dvc=False, log=lambda _: None)
    build_manifest(config, progress=False)
    for rate in RATES:
        build_clip_index(config, rate, progress=False)
    return config


# ----------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"val_fraction": 1.0}, "data.val_fraction must be in [0, 1)"),
        ({"clip_frames": 0}, "data.clip_frames must be an integer >= 1"),
        ({"fps": [3, -1]}, "data.fps must hold positive frame rates"),
        ({"manifest": "m.json"}, "must end in .parquet or .csv"),
        ({"train_crop": "left"}, "'center' or 'random'"),
        ({"allowed_codecs": []}, "data.allowed_codecs must list"),
        ({"cache_resolutions": [4]}, "data.cache_resolutions must hold square sizes >= 8"),
        ({"num_workers": -1}, "data.num_workers must be an integer >= 0"),
    ],
)
def test_config_rejects_bad_values_with_the_field_name(change, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        DataConfig(**change)


def test_config_from_params_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  fps: [3, 8]\n  clip_frames: 16\n  cache_resolutions: [64, 128]\ntrain:\n  lr: 1\n")
    config = load_data_config(params, seed=7, batch_size=None)
    assert (config.fps, config.clip_frames, config.cache_resolutions, config.seed) == ((3, 8), 16, (64, 128), 7)
    assert config.batch_size == DataConfig().batch_size  # None overrides change nothing
    assert load_data_config(tmp_path / "absent.yaml") == DataConfig()
    params.write_text("data:\n  fsp: [3]\n")
    with pytest.raises(ValueError, match="unknown data parameter.*fsp; known: .*fps"):
        load_data_config(params)


# ----------------------------------------------------------------------------------------------------- samples


def test_copy_samples_is_byte_identical_and_idempotent(tmp_path, sample_video_dir):
    logs: list[str] = []
    dest = tmp_path / "data"
    paths = copy_samples(dest, dvc=False, log=logs.append)
    assert sorted(p.name for p in paths) == sorted(SAMPLE_FILES) == sorted(p.name for p in dest.iterdir())
    for p in paths:
        assert p.read_bytes() == (sample_video_dir / p.name).read_bytes()
        assert sha256_file(p) == SAMPLE_FILES[p.name]
    stamp = (dest / "bikes.mp4").stat().st_mtime_ns
    copy_samples(dest, dvc=False, log=logs.append)
    assert "(0 copied, 4 already there)" in logs[-1]
    assert (dest / "bikes.mp4").stat().st_mtime_ns == stamp  # identical files are not rewritten

    (dest / "bikes.mp4").write_bytes(b"someone else's video")
    with pytest.raises(FileExistsError, match="bikes.mp4: exists with other contents.*--force"):
        copy_samples(dest, dvc=False, log=logs.append)
    copy_samples(dest, force=True, dvc=False, log=logs.append)
    assert sha256_file(dest / "bikes.mp4") == SAMPLE_FILES["bikes.mp4"]
    assert not list(dest.glob(".*"))  # no temporary files left


def test_samples_match_the_committed_data_dvc_and_fill_a_fresh_cache(tmp_path):
    """What a fresh clone does: data.dvc present, cache empty; after copying, `dvc status data.dvc` is clean."""
    import yaml

    recorded = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    shutil.copy(REPO / "data.dvc", tmp_path / "data.dvc")
    logs: list[str] = []
    copy_samples(tmp_path / "data", log=logs.append)
    assert _dvc_dir_md5(tmp_path / "data") == recorded["md5"]
    assert "cache filled" in logs[-1], logs
    status = subprocess.run([*dvc, "status", "--json", "data.dvc"], cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}
    assert (tmp_path / "data.dvc").read_text() == (REPO / "data.dvc").read_text()  # the record is untouched
    (tmp_path / "data" / "mine.mp4").write_bytes(b"x")  # a user's own file: never committed behind their back
    assert "differs from data.dvc" in sync_dvc_cache(tmp_path / "data")


# ----------------------------------------------------------------------------------------------------- manifest


def test_manifest_of_the_samples(samples):
    df = read_manifest(samples.manifest, samples.allowed_codecs)
    assert list(df["path"]) == sorted(SAMPLE_FILES)
    assert (df["status"] == "ok").all() and (df["reason"] == "").all()
    rows = df.set_index("path")
    expect = {
        "bikes.mp4": (640, 272, "25", 250, 10.0),
        "bigbuckbunny.mp4": (1280, 720, "25", 132, 5.28),
        "carphone_pristine.mp4": (176, 144, "30000/1001", 120, 4.004),
        "carphone_distorted.mp4": (176, 144, "30000/1001", 120, 4.004),
    }
    for name, (w, h, rate, n, seconds) in expect.items():
        row = rows.loc[name]
        assert (row.width, row.height, row.fps_fraction, row.num_frames) == (w, h, rate, n)
        assert row.fps == pytest.approx(float(Fraction(rate))) and row.duration == pytest.approx(seconds, abs=1e-6)
        assert (row.container, row.codec, row.rotation, row.bit_depth, row.variable_frame_rate) == (
            "mp4",
            "h264",
            0,
            8,
            False,
        )
        assert row.sha256 == SAMPLE_FILES[name]
    assert sorted(df["split"]) == ["train", "train", "train", "val"]  # ceil(0.25 * 4) = 1 in val
    # carphone_distorted is a compressed copy of carphone_pristine: one content group, so never split apart.
    assert rows["content_group"].to_dict() == {
        "bigbuckbunny.mp4": "bigbuckbunny.mp4",
        "bikes.mp4": "bikes.mp4",
        "carphone_distorted.mp4": "carphone_distorted.mp4",
        "carphone_pristine.mp4": "carphone_distorted.mp4",
    }


def test_manifest_csv_round_trip(samples, tmp_path):
    df = read_manifest(samples.manifest)
    path = write_table(df, tmp_path / "manifest.csv")
    back = read_manifest(path, samples.allowed_codecs)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["reason"].tolist() == [""] * 4


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> tuple[DataConfig, pd.DataFrame]:
    """One of every bad-data case next to good videos; the manifest built over all of them."""
    root = tmp_path_factory.mktemp("bad")
    d = root / "data"
    (d / "sub").mkdir(parents=True)
    vf.make_video(d / "good.mp4", frames=20)
    shutil.copy(d / "good.mp4", d / "sub" / "copy_of_good.mp4")
    vf.make_zero_byte(d / "zero.mp4")
    vf.make_video(root / "long.mp4", frames=60)
    vf.make_truncated(root / "long.mp4", d / "truncated.mp4", 0.5)
    vf.make_text_as_mp4(d / "readme.mp4")
    (d / "notes.txt").write_text("not a video either\n")
    (d / ".DS_Store").write_bytes(b"\0\1")  # hidden: not part of the dataset
    vf.make_audio_only(d / "audio.m4a")
    vf.make_unknown_codec(d / "unknown.avi")
    vf.make_video(d / "mpeg4.avi", frames=20)  # decodes fine; this config does not allow the codec
    vf.make_video(d / "short.mp4", frames=10)
    vf.make_video(d / "tiny.mp4", frames=20, size=(24, 16))
    vf.make_video(d / "odd.mp4", frames=20, size=(67, 49), pix_fmt="yuv444p")  # yuv444p allows odd sizes
    vf.make_vfr(d / "vfr.mp4", times=VFR_TIMES)
    vf.make_rotated(d / "rotated.mp4", rotation=90, frames=20)
    vf.make_grayscale(d / "gray.mkv", frames=20)
    vf.make_10bit(d / "tenbit.mp4", frames=20)
    config = config_in(root, min_side=32, allowed_codecs=("h264", "vp9", "ffv1"))
    return config, build_manifest(config, progress=False)


VFR_TIMES = (0, 0.04, 0.1, 0.12, 0.3, 0.34, 0.5, 0.52, 0.56, 0.6, 0.9, 0.95, 1.0, 1.02, 1.1, 1.2, 1.24, 1.3, 1.5, 1.6)


def test_every_bad_file_is_rejected_with_its_reason(bad_data):
    _, df = bad_data
    reasons = df.set_index("path")["reason"].to_dict()
    assert ".DS_Store" not in reasons
    expected = {
        "zero.mp4": "empty file (0 bytes)",
        "truncated.mp4": "truncated or corrupt file",
        "readme.mp4": "not a video file",
        "notes.txt": "not a video file",
        "audio.m4a": "no video stream (streams found: audio)",
        "unknown.avi": "unsupported video codec",
        "mpeg4.avi": "unsupported codec mpeg4 (allowed_codecs: h264, vp9, ffv1)",
        "short.mp4": "too short: 10 frames, one clip needs 17 (clip_frames)",
        "tiny.mp4": "too small: 24x16, short side 16 < min_side 32",
        "sub/copy_of_good.mp4": "duplicate of good.mp4",
    }
    for path, words in expected.items():
        assert words in reasons[path], (path, reasons[path])
        assert df.set_index("path").loc[path, "status"] == "rejected"
    ok = set(df.loc[df["status"] == "ok", "path"])
    assert ok == {"good.mp4", "odd.mp4", "vfr.mp4", "rotated.mp4", "gray.mkv", "tenbit.mp4"}
    assert df.loc[df["status"] == "rejected", "split"].isna().all()


def test_converted_cases_are_described_correctly(bad_data):
    _, df = bad_data
    rows = df.set_index("path")
    assert (rows.loc["rotated.mp4", "width"], rows.loc["rotated.mp4", "height"]) == (48, 64)  # upright size
    assert rows.loc["rotated.mp4", "rotation"] == 90
    assert (rows.loc["odd.mp4", "width"], rows.loc["odd.mp4", "height"]) == (67, 49)
    assert (rows.loc["gray.mkv", "pix_fmt"], rows.loc["tenbit.mp4", "bit_depth"]) == ("gray", 10)
    assert bool(rows.loc["vfr.mp4", "variable_frame_rate"]) and rows.loc["vfr.mp4", "num_frames"] == 20


def test_converted_cases_give_correct_clips(bad_data):
    """Rotated, grayscale, 10-bit, odd-sized and VFR videos give upright 8-bit RGB clips of the right frames."""
    config, _ = bad_data
    build_clip_index(config, 25, progress=False)
    index = load_clip_index(config, 25)
    first = {p: g.iloc[0] for p, g in index.groupby("path")}
    ds = ClipDataset(index, config.data_dir, 32)
    coded = {"rotated.mp4": (64, 48), "gray.mkv": (64, 48), "tenbit.mp4": (64, 48), "odd.mp4": (67, 49)}
    for path, (w, h) in coded.items():
        row = int(first[path]["clip_id"])
        frames = ds.raw(row)
        assert frames.shape == (17, *((64, 48) if path == "rotated.mp4" else (h, w)), 3) and frames.dtype == np.uint8
        for i in (0, 16):
            want = vf.pattern(i, w, h)
            if path == "rotated.mp4":
                want = np.rot90(want, 1)  # 90 degrees counter-clockwise: the displayed picture
            if path == "gray.mkv":
                want = np.repeat(vf.luma(want)[..., None], 3, axis=2)
            assert psnr(frames[i], want) > 30, (path, i, psnr(frames[i], want))
        item = ds[row]
        assert item.shape == (3, 17, 32, 32) and item.dtype == torch.float32
        assert item.min() >= -1 and item.max() <= 1
    # VFR: 25 fps targets k / 25 take the frame nearest in time, from the real timestamps.
    vfr = first["vfr.mp4"]
    times = np.asarray(VFR_TIMES)
    want = [int(np.argmin(np.abs(times - k / 25 + 1e-12))) for k in range(17)]  # ties go to the earlier frame
    assert list(vfr["frame_indices"]) == want
    assert want[:6] == [0, 1, 2, 3, 3, 3]  # 0.16 s and 0.2 s still show the frame from 0.12 s (next is at 0.3 s)


# ----------------------------------------------------------------------------------------------------- schema


def test_schema_rejects_a_tampered_manifest(samples):
    good = read_manifest(samples.manifest)

    def fails(df: pd.DataFrame, *words: str, codecs=None) -> None:
        with pytest.raises(ManifestError) as err:
            validate_manifest(df, codecs, name="m.parquet")
        message = str(err.value)
        assert "\n" not in message and message.startswith("m.parquet: invalid manifest:")
        for w in words:
            assert w in message, message

    dup = pd.concat([good, good.iloc[[0]]], ignore_index=True)
    fails(dup, "path", "field_uniqueness")
    bad = good.copy()
    bad.loc[1, "fps"] = -25.0
    fails(bad, "fps", "greater_than(0)", "-25.0")
    bad = good.copy()
    bad.loc[0, "sha256"] = bad.loc[1, "sha256"]
    fails(bad, "sha256 must be unique among ok rows")
    bad = good.copy()
    bad.loc[0, "status"] = "rejected"
    fails(bad, "reason must be empty for ok rows and non-empty for rejected rows")
    bad = good.copy()
    bad.loc[2, "width"] = None
    fails(bad, "ok rows need every video field")
    bad = good.copy()
    bad.loc[0, "split"] = "test"
    fails(bad, "split", "isin")
    fails(good.drop(columns=["sha256"]), "sha256")
    fails(
        good.drop(columns=["fingerprint", "content_group"]), "missing column(s) fingerprint, content_group", "rebuild"
    )
    fails(good, "codec 'h264', not in allowed_codecs (vp9)", codecs=["vp9"])
    validate_manifest(good, samples.allowed_codecs)  # the untouched one passes


def test_tampered_manifest_file_is_refused_by_the_next_step(samples, tmp_path):
    df = read_manifest(samples.manifest)
    df.loc[0, "num_frames"] = 0
    path = tmp_path / "manifest.parquet"
    df.to_parquet(path)
    config = DataConfig(data_dir=samples.data_dir, manifest=str(path), clips_dir=str(tmp_path / "clips"))
    with pytest.raises(ManifestError, match="num_frames"):
        build_clip_index(config, 8, progress=False)


# ----------------------------------------------------------------------------------------------------- split


def test_split_is_deterministic_exact_and_salted():
    paths = [f"cam{i:02d}/clip.mp4" for i in range(20)]
    a = split_of(paths, 0.25, "vidtok")
    assert a == split_of(reversed(paths), 0.25, "vidtok")  # order of discovery does not matter
    assert sum(s == "val" for s in a.values()) == 5  # ceil(0.25 * 20), exactly
    b = split_of(paths, 0.25, "another salt")
    assert a != b and sum(s == "val" for s in b.values()) == 5
    assert sorted(split_of(["a.mp4", "b.mp4"], 0.01, "").values()) == ["train", "val"]  # both splits non-empty
    assert sorted(split_of(["a.mp4", "b.mp4"], 0.99, "").values()) == ["train", "val"]
    assert split_of(["only.mp4"], 0.5, "") == {"only.mp4": "train"}
    assert set(split_of(paths, 0.0, "").values()) == {"train"}
    assert sum(s == "val" for s in split_of(paths[:10], 0.3, "").values()) == 3  # 0.3 * 10 is 3.0000000000000004


def test_split_keeps_each_group_together():
    paths = [f"scene{i:02d}_{quality}.mp4" for i in range(10) for quality in ("hq", "lq")]
    groups = {p: p.split("_")[0] for p in paths}
    for salt in ("a", "b", "c"):
        split = split_of(paths, 0.25, salt, groups)
        for scene in set(groups.values()):
            assert len({split[p] for p in paths if groups[p] == scene}) == 1, scene
        assert sum(s == "val" for s in split.values()) == 6  # groups of 2 until >= ceil(0.25 * 20) = 5 videos
    one_group = {p: "all" for p in paths}
    assert set(split_of(paths, 0.5, "", one_group).values()) == {"train"}  # nothing to hold out
    two = split_of(["a.mp4", "b.mp4", "c.mp4"], 0.01, "", {"a.mp4": "x", "b.mp4": "x", "c.mp4": "c.mp4"})
    assert two["a.mp4"] == two["b.mp4"] != two["c.mp4"]  # both splits non-empty


def test_content_groups_find_re_encodes_not_other_footage(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    source = vf.make_video(tmp_path / "source.mkv", frames=50, size=(96, 64), codec="ffv1", pix_fmt="yuv444p")
    frames = read_frames(source)
    write_video(d / "ladder_high.mp4", frames, 25, crf=18)
    write_video(d / "ladder_low.mp4", frames, 25, crf=45)  # heavily compressed
    write_video(d / "ladder_small.mp4", np.ascontiguousarray(frames[:, ::2, ::2]), 25, crf=30)  # another size
    write_video(d / "flipped.mp4", np.ascontiguousarray(frames[:, ::-1]), 25)  # the same length, other pictures
    blocks = np.random.default_rng(0).integers(0, 256, (1, 8, 12, 3), dtype=np.uint8)
    write_video(d / "blocks.mp4", np.repeat(np.kron(blocks, np.ones((1, 8, 8, 1), np.uint8)), 50, axis=0), 25)
    config = DataConfig(data_dir=str(d), manifest=str(tmp_path / "m.parquet"), min_side=32, val_fraction=0.5)
    df = build_manifest(config, progress=False).set_index("path")
    assert df["content_group"].to_dict() == {
        "blocks.mp4": "blocks.mp4",
        "flipped.mp4": "flipped.mp4",
        "ladder_high.mp4": "ladder_high.mp4",
        "ladder_low.mp4": "ladder_high.mp4",
        "ladder_small.mp4": "ladder_high.mp4",
    }
    assert df.loc[["ladder_high.mp4", "ladder_low.mp4", "ladder_small.mp4"], "split"].nunique() == 1
    assert "same footage as ladder_high.mp4" in "\n".join(manifest_summary(df.reset_index()))
    tampered = df.reset_index()
    tampered.loc[tampered["path"] == "ladder_low.mp4", "split"] = (
        "val" if df.loc["ladder_high.mp4", "split"] == "train" else "train"
    )
    with pytest.raises(ManifestError, match="share one split"):
        validate_manifest(tampered)


def test_manifest_split_follows_the_salt(samples, tmp_path):
    base = read_manifest(samples.manifest).set_index("path")["split"]
    seen = set()
    for salt in ("a", "b", "c", "d", "e", "f", "g", "h"):
        config = DataConfig(data_dir=samples.data_dir, manifest=str(tmp_path / "m.parquet"), split_salt=salt)
        split = build_manifest(config, write=False, progress=False).set_index("path")["split"]
        val = tuple(split[split == "val"].index)
        assert len(val) == 1 or val == ("carphone_distorted.mp4", "carphone_pristine.mp4"), val
        assert split["carphone_distorted.mp4"] == split["carphone_pristine.mp4"]  # the same footage
        seen.add(val)
    assert len(seen) > 1  # another salt, another val video
    again = build_manifest(
        DataConfig(data_dir=samples.data_dir, manifest=samples.manifest), write=False, progress=False
    )
    assert again.set_index("path")["split"].equals(base)


# ----------------------------------------------------------------------------------------------------- clip index


@pytest.mark.parametrize("rate", RATES)
def test_clip_counts_per_fps_on_the_samples(samples, rate):
    index = load_clip_index(samples, rate)
    assert index.groupby("path").size().to_dict() == EXPECTED_CLIPS[rate]
    summary = read_clip_summary(samples, rate)
    assert summary["clips"] == len(index) and summary["clip_frames"] == 17
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
    assert list(bikes.iloc[0]["frame_indices"]) == [0, 8, 17, 25, 33, 42, 50, 58, 67, 75, 83, 92, 100, 108, 117, 125,
                                                     133]  # fmt: skip
    # Clip k starts at k / 3 s (stride 1 on the target grid); the last, k = 13, ends at 29 / 3 = 9.67 s < 10 s.
    for row in bikes.itertuples():
        assert row.start_time == pytest.approx(row.clip / 3)
        assert np.allclose(row.target_times, (row.clip + np.arange(17)) / 3)
        assert list(row.frame_indices) == [nearest(Fraction(row.clip + j, 3), Fraction(25), 250) for j in range(17)]


@pytest.mark.parametrize(("rate", "name", "n", "native"), [(8, "bikes.mp4", 250, Fraction(25)),
                                                           (4, "carphone_pristine.mp4", 120, Fraction(30000, 1001)),
                                                           (30, "bigbuckbunny.mp4", 132, Fraction(25))])  # fmt: skip
def test_clip_frames_match_exact_nearest_frames(samples, rate, name, n, native):
    """Ties (bikes at 8 fps: 12.5 frames) go to the earlier frame; carphone's only 4-fps clip ends at 4.0 s,
    4 ms before the video does, on its last frame; 30 fps from 25 repeats one frame in six."""
    index = load_clip_index(samples, rate)
    for row in index[index["path"] == name].itertuples():
        want = [nearest(Fraction(row.clip + j, rate), native, n) for j in range(17)]
        assert list(row.frame_indices) == want
    if name.startswith("carphone"):
        assert list(index[index["path"] == name].iloc[0]["frame_indices"])[-1] == 119


def test_clip_index_notices_a_stale_manifest(samples, tmp_path):
    config = DataConfig(data_dir=samples.data_dir, manifest=str(tmp_path / "m.parquet"),
                        clips_dir=str(tmp_path / "clips"))  # fmt: skip
    build_manifest(config, progress=False)
    build_clip_index(config, 8, progress=False)
    load_clip_index(config, 8)
    build_manifest(config.replace(split_salt="reshuffled"), progress=False)
    with pytest.raises(ClipIndexError, match="manifest_sha256.*vidtok data resample --fps 8"):
        load_clip_index(config, 8)
    ensure_clip_index(config, 8, progress=False)
    load_clip_index(config, 8)
    with pytest.raises(ClipIndexError, match="clip_frames"):
        load_clip_index(config.replace(clip_frames=16), 8)


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


def test_cache_gives_the_same_clips_as_decoding(samples):
    shard = build_clip_cache(samples, 8, 32, progress=False)
    cache = FrameCache.open(shard)
    meta = json.loads(shard.with_suffix(".json").read_text())
    used = {
        p: np.unique(np.concatenate(list(g["frame_indices"]))) for p, g in load_clip_index(samples, 8).groupby("path")
    }
    assert cache.array.shape == (sum(len(v) for v in used.values()), 32, 32, 3) == (meta["frames"], 32, 32, 3)
    index = load_clip_index(samples, 8)
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


# ----------------------------------------------------------------------------------------------------- data module


def batches(loader, n: int) -> list[torch.Tensor]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_data_module_yields_batches_from_real_video(samples, workers):
    dm = VideoDataModule(samples, fps=8, resolution=32, batch_size=2, num_workers=workers, samples_per_epoch=4)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_dataset) == 98 and len(dm.val_dataset) == 2  # bigbuckbunny at 8 fps: clips 0 and 17
    train = batches(dm.train_dataloader(), 2)
    assert [b.shape for b in train] == [(2, 3, 17, 32, 32)] * 2
    assert all(b.dtype == torch.float32 and b.min() >= -1 and b.max() <= 1 for b in train)
    val = batches(dm.val_dataloader(), 1)
    assert val[0].shape == (2, 3, 17, 32, 32)
    # Randomness lives in the sampler, in the main process: workers change nothing.
    reference = VideoDataModule(samples, fps=8, resolution=32, batch_size=2, num_workers=0, samples_per_epoch=4)
    reference.setup("fit")
    assert all(torch.equal(a, b) for a, b in zip(train, batches(reference.train_dataloader(), 2)))


def test_data_module_stage_settings_and_cache(samples):
    """The paper's rates: train at 3 fps, validate at 8; the caches the config asks for come from prepare_data."""
    config = samples.replace(cache_resolutions=(32,))
    dm = VideoDataModule(config, fps=3, resolution=32, batch_size=3)
    dm.prepare_data()  # builds the 3 and 8 fps shards at 32 px (when missing)
    dm.setup()
    assert dm.train_dataset.cache is not None and dm.val_dataset.cache is not None
    assert len(dm.train_dataset) == 14 and len(dm.val_dataset) == 2  # bikes at 3 fps; bigbuckbunny at 8 fps
    loader = dm.train_dataloader()
    # one non-overlapping clip in bikes at 3 fps, raised to one batch of 3: an epoch is one iteration
    assert loader.dataset.samples_per_epoch == 3 and len(loader) == 1
    assert next(iter(loader)).shape == (3, 3, 17, 32, 32)
    assert len(val_subset(load_clip_index(samples, 30), 17, 1, 0)) == 9  # 143 bigbuckbunny clips, every 17th
    low = VideoDataModule(samples, fps=2, resolution=16)
    low.setup()
    assert next(iter(low.train_dataloader())).shape == (2, 3, 17, 16, 16)
    with pytest.raises(ValueError, match="no train clips at 1 fps.*spans 16.00 s"):
        VideoDataModule(samples, fps=1, resolution=16).setup()


def test_val_subset_takes_non_overlapping_clips():
    index = pd.DataFrame({"split": ["val"] * 40 + ["train"] * 5, "clip": list(range(40)) + list(range(5))})
    assert val_subset(index, 17, 1, 0)["clip"].tolist() == [0, 17, 34]
    assert val_subset(index, 17, 4, 0)["clip"].tolist() == [0, 5, 10, 15, 20, 25, 30, 35]  # ceil(17 / 4) = 5
    assert val_subset(index, 17, 1, 10)["clip"].tolist() == [0, 10, 20, 30]


# ----------------------------------------------------------------------------------------------------- CLI


def test_cli_manifest_and_resample(samples, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"data:\n  data_dir: {samples.data_dir}\n  fps: [3, 30]\n")
    assert main(["data", "manifest"]) == 0
    out = capsys.readouterr().out
    assert "4 files: 4 ok (3 train, 1 val), 0 rejected" in out and "wrote outputs/data/manifest.parquet" in out
    assert "bikes.mp4: h264 640x272 25 fps (25.000), 250 frames, 10.00 s" in out
    assert main(["data", "resample", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "fps 3: 14 clips of 17 frames (14 train, 0 val) from 1 video(s)" in out
    assert "no clip  bigbuckbunny.mp4: too short at 3 fps" in out
    assert "fps 30: 637 clips" in out and "bikes.mp4: 284 clips, train (50 repeated frames" in out
    assert (tmp_path / "outputs/data/clips/fps_30.parquet").is_file()
    assert main(["data", "resample", "--fps", "0"]) == 1
    assert capsys.readouterr().err.strip() == "vidtok data: error: fps must be a positive frame rate, got 0.0"
    (tmp_path / "params.yaml").write_text("data:\n  clip_frames: 0\n")
    assert main(["data", "manifest"]) == 1
    assert "data.clip_frames must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_workers_start_safely_after_decoding_in_the_main_process(samples, monkeypatch):
    """Frames decoded in the main process linger in reference cycles holding FFmpeg thread pools; a forked worker
    whose garbage collector frees them waits for threads it does not have (the hang the benchmark met). The
    loader collects and freezes first. Here a worker collects at once, and the garbage is kept until the fork."""
    import gc

    import vidtok.data.loader as module

    dm = VideoDataModule(samples, fps=8, resolution=32, num_workers=2, samples_per_epoch=6)
    dm.setup("fit")
    original = module.worker_init

    def collecting_worker_init(worker_id: int) -> None:
        gc.collect()
        original(worker_id)

    monkeypatch.setattr(module, "worker_init", collecting_worker_init)
    gc.disable()  # until the workers start (explicit gc.collect() calls still run)
    try:
        for row in range(2):
            dm.train_dataset.raw(row)
        batches = list(dm.train_dataloader())
    finally:
        gc.enable()
    assert [b.shape for b in batches] == [(2, 3, 17, 32, 32)] * 3
