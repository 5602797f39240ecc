"""Tests for vidtok.data.video: real sample videos, generated ones (tests/videofactory.py) and every bad-input case.

.venv/bin/pytest tests/test_io.py -q
"""

from __future__ import annotations

import math
import pickle
import re
import tempfile
import tracemalloc
import uuid
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import fsspec
import numpy as np
import pytest

from vidtok.data import video as vio
from vidtok.data.video import (
    VideoError,
    VideoInfo,
    VideoWriter,
    frame_times,
    iter_frames,
    iter_resampled,
    probe,
    read_frames,
    resample_indices,
    scan,
    write_video,
)

try:  # tests/ is a package (tests/__init__.py): the repository root is on sys.path
    from tests import videofactory as vf
except ImportError:  # tests/ is a plain folder: pytest puts the folder itself on sys.path
    import videofactory as vf  # type: ignore[no-redef]

# Lossy H.264/VP9/MPEG-4 on the small factory patterns measures 34 to 40 dB against the source; the neighbouring
# frame scores 8 to 21 dB. Above this bound a decoded frame is the right frame, in the right orientation.
SAME_FRAME_DB = 32


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def patterns(n: int, width: int, height: int, start: int = 0) -> np.ndarray:
    return np.stack([vf.pattern(i, width, height) for i in range(start, start + n)])


@pytest.fixture
def memory_dir(tmp_path: Path, monkeypatch) -> Iterator[str]:
    """A fresh folder on fsspec's in-process memory filesystem. Local temporary files (remote writes stage the video
    locally before uploading) go to tmp_path, so tests can check none is left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    url = f"memory://vidtok-tests/{uuid.uuid4().hex}"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def memory_ls(url: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(url)
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)) if fs.exists(root) else []


# ------------------------------------------------------------------------------------------- real sample videos


def test_probe_bikes_exactly(sample_video_dir: Path) -> None:
    assert probe(sample_video_dir / "bikes.mp4") == VideoInfo(
        path=str(sample_video_dir / "bikes.mp4"),
        container="mp4",
        codec="h264",
        width=640,
        height=272,
        fps=Fraction(25),
        num_frames=250,
        duration=10.0,
        rotation=0,
        pix_fmt="yuv420p",
        bit_depth=8,
        variable_frame_rate=False,
    )


# name: (width, height, fps, frames, duration); all H.264 yuv420p 8-bit mp4, constant rate, unrotated
SAMPLES = {
    "bikes.mp4": (640, 272, Fraction(25), 250, 10.0),
    "carphone_pristine.mp4": (176, 144, Fraction(30000, 1001), 120, 120 * 1001 / 30000),  # 4.004 s
    "carphone_distorted.mp4": (176, 144, Fraction(30000, 1001), 120, 120 * 1001 / 30000),
    "bigbuckbunny.mp4": (1280, 720, Fraction(25), 132, 5.28),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_probe_sample_videos(sample_video_dir: Path, name: str) -> None:
    info = probe(str(sample_video_dir / name))
    assert (info.width, info.height, info.fps, info.num_frames) == SAMPLES[name][:4]
    assert info.duration == pytest.approx(SAMPLES[name][4], abs=1e-9)
    assert (info.container, info.codec, info.pix_fmt, info.bit_depth) == ("mp4", "h264", "yuv420p", 8)
    assert (info.rotation, info.variable_frame_rate) == (0, False)


def test_frame_times_sample_videos(sample_video_dir: Path) -> None:
    # pts * time_base is computed with one rounding, so the times equal k / fps exactly.
    np.testing.assert_array_equal(frame_times(sample_video_dir / "bikes.mp4"), np.arange(250) / 25)
    carphone = frame_times(sample_video_dir / "carphone_pristine.mp4")
    np.testing.assert_array_equal(carphone, np.arange(120) * 1001 / 30000)


def test_read_frames_with_indices_equals_full_decode(sample_video_dir: Path) -> None:
    path = sample_video_dir / "bikes.mp4"  # keyframes at 0, 30, 76, 137, 187, 242; B-frames
    full = read_frames(path)
    assert full.shape == (250, 272, 640, 3) and full.dtype == np.uint8
    indices = [200, 3, 3, 120, 249, 0, 31, 30, 29, 76, 75, 242]
    np.testing.assert_array_equal(read_frames(path, indices), full[indices])  # decoded from the start
    index = scan(path).index
    assert index.num_frames == 250 and index.seek_points == (0, 30, 76, 137, 187, 242)
    np.testing.assert_array_equal(read_frames(path, indices, index=index), full[indices])  # seeking
    assert read_frames(path, []).shape == (0, 272, 640, 3)
    with pytest.raises(IndexError, match="250 frames"):
        read_frames(path, [250], index=index)
    with pytest.raises(IndexError, match="out of range"):
        read_frames(path, [250])


def test_seeking_equals_the_sequential_decode_of_a_444_open_gop_h264(tmp_path: Path) -> None:
    """H.264 High 4:4:4 with open GOPs and B-frames (imageio's cockatoo.mp4 is such a file; seeking into it once
    gave green frames): whatever scan keeps as seek points reproduces the front-to-back decode exactly."""
    path = vf.make_video(
        tmp_path / "yuv444.mp4",
        frames=90,
        size=(96, 64),
        pix_fmt="yuv444p",
        gop=16,
        options={"x264-params": "scenecut=0:open-gop=1:bframes=3:ref=8", "preset": "medium"},
    )
    sequential = read_frames(path)
    result = scan(path)
    assert result.info.pix_fmt == "yuv444p" and result.index.num_frames == 90
    assert result.index.seek_points[0] == 0 and len(result.index.seek_points) > 1
    wanted = list(range(0, 90, 7)) + [s - 1 for s in result.index.seek_points[1:]] + list(result.index.seek_points)
    np.testing.assert_array_equal(read_frames(path, wanted, index=result.index), sequential[wanted])


def test_frames_without_timestamps_are_counted_from_the_start(tmp_path: Path) -> None:
    # Files whose frames carry no usable timestamps cannot be seeked: frame i is the i-th decoded frame.
    path = vf.make_video(tmp_path / "clip.avi", frames=20)
    full = read_frames(path)
    index = scan(path).index
    untimed = vio.FrameIndex(index.times, None, None, (0,))
    np.testing.assert_array_equal(read_frames(path, [2, 11, 19], index=untimed), full[[2, 11, 19]])


def test_iter_frames_start_stop_matches_full_decode(sample_video_dir: Path) -> None:
    path = sample_video_dir / "carphone_pristine.mp4"
    full = read_frames(path)
    assert full.shape == (120, 144, 176, 3)
    np.testing.assert_array_equal(np.stack(list(iter_frames(path, start=50, stop=64))), full[50:64])
    np.testing.assert_array_equal(np.stack(list(iter_frames(path, stop=5))), full[:5])
    np.testing.assert_array_equal(np.stack(list(iter_frames(path, start=115))), full[115:])
    assert list(iter_frames(path, start=3, stop=3)) == []


def test_iter_resampled_sample_video(sample_video_dir: Path) -> None:
    path = sample_video_dir / "carphone_pristine.mp4"  # 29.97 fps, 120 frames, last frame at 3.97 s
    pairs = list(iter_resampled(path, 10))
    times = [t for t, _ in pairs]
    assert len(pairs) == 40  # t = 0, 0.1, ..., 3.9 <= 3.97
    np.testing.assert_allclose(times, np.arange(40) / 10)
    expected = resample_indices(frame_times(path), 10)
    assert expected[:5].tolist() == [0, 2, 5, 8, 11]  # at 0.1 s frame 2 is on screen (frame 3 comes at 0.1001 s)
    np.testing.assert_array_equal(np.stack([f for _, f in pairs]), read_frames(path, expected))


# ------------------------------------------------------------------------------------------- resampling (pure)


def test_resample_constant_rate_down() -> None:
    times = np.arange(90) / 30
    np.testing.assert_array_equal(resample_indices(times, 3), np.arange(0, 90, 10))  # every 10th frame


def test_resample_25_to_8_fps_shows_the_frame_on_screen() -> None:
    times = np.arange(250) / 25
    got = resample_indices(times, 8)
    # Target k at k/8 s is source position k * 25/8 = 3.125 k; the frame on screen is the one before: floor.
    # 80 targets: the last, 79/8 = 9.875 s, is <= the last frame at 9.96 s.
    expected = [int(Fraction(k * 25, 8)) for k in range(80)]
    assert got.tolist() == expected
    assert got[:9].tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 25]


def test_resample_ntsc_to_30_repeats_one_frame_in_1001() -> None:
    times = np.arange(1001) * 1001 / 30000  # 29.97 fps, last frame at exactly 1001/30 s
    got = resample_indices(times, 30)
    assert len(got) == 1002  # k / 30 <= 1001 / 30 for k = 0..1001, the last one equal up to float rounding
    # Target k is source position k * 1000/1001 = k - k/1001: frame k - 1 is on screen for k = 1 ... 1001.
    assert got[:3].tolist() == [0, 0, 1] and got[-1] == 1000
    assert np.count_nonzero(np.diff(got) == 0) == 1  # only frame 0 repeats: 1002 targets over 1001 frames
    assert np.array_equal(np.unique(got), np.arange(1001))  # nothing skipped


def test_resample_variable_frame_rate() -> None:
    times = np.array([0.0, 0.1, 0.15, 0.4, 0.5, 1.0])
    assert resample_indices(times, 10).tolist() == [0, 1, 2, 2, 3, 4, 4, 4, 4, 4, 5]
    assert resample_indices(times, 4).tolist() == [0, 2, 4, 4, 5]
    # A gap in the timestamps is a frame held on screen (AVI "repeat" chunks): it repeats.
    held = np.array([0, 6, 7, 8]) / 10
    assert resample_indices(held, 10).tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 3]


def test_resample_above_source_rate_repeats_frames() -> None:
    times = np.arange(5) / 10
    assert resample_indices(times, 25).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4]


def test_resample_start_time_and_num_frames() -> None:
    times = np.arange(10) / 10
    assert resample_indices(times, 5, start_time=0.3).tolist() == [3, 5, 7, 9]
    assert resample_indices(times, 5, num_frames=7).tolist() == [0, 2, 4, 6, 8, 9, 9]  # past the end: last repeats
    assert resample_indices(times, 5, start_time=2.0).tolist() == []
    with pytest.raises(ValueError, match="target_fps"):
        resample_indices(times, 0)
    with pytest.raises(ValueError, match="sorted"):
        resample_indices(times[::-1], 5)


# ------------------------------------------------------------------------------------------- writing and round trips


def test_round_trip_write_read(tmp_path: Path) -> None:
    frames = patterns(30, 96, 64)
    out = tmp_path / "round.mp4"
    write_video(out, frames, Fraction(30000, 1001), crf=18)
    info = probe(out)
    assert (info.width, info.height, info.num_frames, info.fps) == (96, 64, 30, Fraction(30000, 1001))
    assert (info.codec, info.pix_fmt, info.container) == ("h264", "yuv420p", "mp4")
    back = read_frames(out)
    assert back.shape == frames.shape
    assert psnr(back, frames) > 38  # crf 18 on this 96x64 pattern measures 39.6 dB
    assert [p.name for p in tmp_path.iterdir()] == ["round.mp4"]  # the temporary file was renamed


def test_video_writer_streams_frames_and_batches(tmp_path: Path) -> None:
    frames = patterns(12, 64, 48)
    out = tmp_path / "sub" / "stream.mkv"  # missing parent folders are created
    with VideoWriter(out, 12.5, 64, 48) as writer:
        writer.write(frames[0])
        writer.write(frames[1:8])
        for frame in frames[8:]:
            writer.write(frame)
    info = probe(out)
    assert (info.container, info.num_frames, info.fps) == ("mkv", 12, Fraction(25, 2))
    assert psnr(read_frames(out), frames) > SAME_FRAME_DB


def test_write_odd_size_pads_with_warning(tmp_path: Path) -> None:
    frames = patterns(4, 65, 49)
    with pytest.warns(UserWarning, match="65x49 padded to 66x50"):
        write_video(tmp_path / "odd.mp4", frames, 25)
    back = read_frames(tmp_path / "odd.mp4")
    assert back.shape == (4, 50, 66, 3)
    assert psnr(back[:, :49, :65], frames) > SAME_FRAME_DB


@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi", "webm"])
def test_read_every_container(tmp_path: Path, ext: str) -> None:
    path = vf.make_video(tmp_path / f"clip.{ext}", frames=30, size=(64, 48), fps=25, gop=8)
    info = probe(path)
    assert (info.container, info.num_frames, info.width, info.height) == (ext, 30, 64, 48)
    assert info.fps == 25 and info.duration == pytest.approx(1.2)
    full = read_frames(path)
    assert psnr(full, patterns(30, 64, 48)) > SAME_FRAME_DB
    np.testing.assert_allclose(frame_times(path), np.arange(30) / 25, atol=1e-9)
    np.testing.assert_array_equal(read_frames(path, [17, 2, 29, 17]), full[[17, 2, 29, 17]])
    np.testing.assert_array_equal(np.stack(list(iter_frames(path, start=9, stop=20))), full[9:20])


def test_memory_filesystem_round_trip(memory_dir: str, tmp_path: Path) -> None:
    frames = patterns(10, 64, 48)
    url = f"{memory_dir}/clip.mp4"
    write_video(url, frames, 25)
    assert memory_ls(memory_dir) == ["clip.mp4"]
    info = probe(url)
    assert (info.path, info.container, info.num_frames, info.fps) == (url, "mp4", 10, Fraction(25))
    np.testing.assert_array_equal(frame_times(url), np.arange(10) / 25)
    back = read_frames(url)
    assert psnr(back, frames) > SAME_FRAME_DB
    np.testing.assert_array_equal(read_frames(url, [7, 1]), back[[7, 1]])
    assert list(tmp_path.iterdir()) == []  # the local staging file is gone


def test_memory_filesystem_reads_factory_webm(tmp_path: Path, memory_dir: str) -> None:
    local = vf.make_video(tmp_path / "clip.webm", frames=8)
    url = f"{memory_dir}/clip.webm"
    with fsspec.open(url, "wb") as f:
        f.write(local.read_bytes())
    np.testing.assert_array_equal(read_frames(url), read_frames(local))


def test_file_url(tmp_path: Path) -> None:
    url = (tmp_path / "clip.mp4").as_uri()
    write_video(url, patterns(5, 64, 48), 10)
    assert (tmp_path / "clip.mp4").exists()
    assert probe(url).num_frames == 5


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def frames_then_crash():
        yield from patterns(5, 64, 48)
        raise RuntimeError("upstream model crashed")

    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="crashed"):
        write_video(target, frames_then_crash(), 25)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file

    shape_error = r"out\.mp4: expected frames of shape \(48, 64, 3\)"
    with pytest.raises(VideoError, match=shape_error), VideoWriter(target, 25, 64, 48) as writer:
        writer.write(patterns(3, 64, 48))
        writer.write(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(VideoError, match="uint8"):
        write_video(target, patterns(3, 64, 48).astype(np.float32), 25)
    with pytest.raises(VideoError, match="no frames"):
        write_video(target, [], 25)
    with pytest.raises(VideoError, match="no frames were written"):
        VideoWriter(target, 25, 64, 48).close()
    with pytest.raises(ValueError, match="crf must be in 0..51"):
        VideoWriter(target, 25, 64, 48, crf=60)
    writer = VideoWriter(target, 25, 64, 48)
    writer.write(patterns(2, 64, 48))
    writer.abort()
    with pytest.raises(VideoError, match="H.264 output needs"):
        write_video(tmp_path / "out.avi", patterns(2, 64, 48), 25)
    assert list(tmp_path.iterdir()) == []


def test_failed_remote_write_leaves_nothing(memory_dir: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), VideoWriter(f"{memory_dir}/out.mp4", 25, 64, 48) as writer:
        writer.write(patterns(3, 64, 48))
        raise RuntimeError("stop")
    assert memory_ls(memory_dir) == []
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- formats and metadata


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied(tmp_path: Path, rotation: int) -> None:
    path = vf.make_rotated(tmp_path / f"rot{rotation}.mp4", rotation=rotation, frames=6, size=(64, 48))
    info = probe(path)
    assert info.rotation == rotation
    assert (info.width, info.height) == ((48, 64) if rotation % 180 else (64, 48))
    frames = read_frames(path)
    assert frames.shape == (6, info.height, info.width, 3)
    upright = np.rot90(patterns(6, 64, 48), rotation // 90, axes=(1, 2))  # counter-clockwise, as displayed
    assert psnr(frames, upright) > SAME_FRAME_DB
    # The wrong direction (clockwise) would be a 180-degree error for 90/270: clearly worse.
    wrong = np.rot90(patterns(6, 64, 48), -rotation // 90, axes=(1, 2))
    if rotation != 180:
        assert psnr(frames, wrong) < 20
    np.testing.assert_array_equal(read_frames(path, [4, 1]), frames[[4, 1]])


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_mirrored_display_matrix_is_applied(tmp_path: Path, rotation: int) -> None:
    # PyAV's frame.rotation reads a plain left-right mirror as -180: orientation must come from the matrix itself.
    path = vf.make_rotated(tmp_path / "mirror.mp4", rotation=rotation, mirror=True, frames=4, size=(64, 48))
    info = probe(path)
    assert info.rotation == rotation  # the turn before the mirror, as set_display_rotation(rotation, hflip=True)
    expected = np.rot90(patterns(4, 64, 48), rotation // 90, axes=(1, 2))[:, :, ::-1]  # turn, then mirror
    frames = read_frames(path)
    assert frames.shape == expected.shape == (4, info.height, info.width, 3)
    assert psnr(frames, expected) > SAME_FRAME_DB


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    path = vf.make_grayscale(tmp_path / "gray.mkv", frames=5)
    info = probe(path)
    assert (info.pix_fmt, info.bit_depth, info.codec) == ("gray", 8, "ffv1")
    frames = read_frames(path)
    assert frames.shape == (5, 48, 64, 3)
    assert np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(frames[..., 1], frames[..., 2])
    expected = np.stack([vf.luma(vf.pattern(i, 64, 48)) for i in range(5)])
    assert np.abs(frames[..., 0].astype(int) - expected).max() <= 1  # lossless codec; rounding in gray -> rgb


@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_full_range_yuv_keeps_its_contrast(tmp_path: Path, ext: str) -> None:
    # H.264 decodes full range as yuvj420p, VP9 as yuv420p + a range tag: both must map 0..255 back to 0..255.
    frames = read_frames(vf.make_video(tmp_path / f"full.{ext}", frames=5, full_range=True))
    assert psnr(frames, patterns(5, 64, 48)) > SAME_FRAME_DB


def test_10bit_becomes_8bit_rgb(tmp_path: Path) -> None:
    path = vf.make_10bit(tmp_path / "deep.mp4", frames=8)
    info = probe(path)
    assert (info.pix_fmt, info.bit_depth) == ("yuv420p10le", 10)
    frames = read_frames(path)
    assert frames.dtype == np.uint8 and frames.shape == (8, 48, 64, 3)
    assert psnr(frames, patterns(8, 64, 48)) > SAME_FRAME_DB


@pytest.mark.parametrize("ext", ["mp4", "mkv", "webm"])
def test_variable_frame_rate(tmp_path: Path, ext: str) -> None:
    path = vf.make_vfr(tmp_path / f"vfr.{ext}")
    info = probe(path)
    assert info.variable_frame_rate
    assert info.num_frames == len(vf.VFR_TIMES) == scan(path).info.num_frames
    assert info.fps == Fraction(10) / Fraction(104, 100)  # 10 frames over 1.04 s (last frame lasts 40 ms)
    np.testing.assert_allclose(frame_times(path), vf.VFR_TIMES, atol=1e-9)
    pairs = list(iter_resampled(path, 10))
    picks = resample_indices(np.array(vf.VFR_TIMES), 10)
    # The frame on screen at each tenth of a second: frame 6 (0.5 s) until frame 7 comes at 0.9 s.
    assert picks.tolist() == [0, 2, 3, 4, 5, 6, 6, 6, 6, 7, 9]
    assert len(pairs) == 11
    original = patterns(10, 64, 48)
    for (t, frame), k, pick in zip(pairs, range(11), picks):
        assert t == pytest.approx(k / 10)
        assert psnr(frame, original[pick]) > SAME_FRAME_DB


def test_constant_rate_not_flagged_as_vfr_with_millisecond_time_base(tmp_path: Path) -> None:
    # Matroska stores 29.97 fps in milliseconds as alternating 33/34 ms steps: that is still constant.
    info = probe(vf.make_video(tmp_path / "ntsc.mkv", frames=30, fps=Fraction(30000, 1001)))
    assert not info.variable_frame_rate
    assert info.fps == Fraction(30000, 1001)


# ------------------------------------------------------------------------------------------- streaming memory


def test_iter_frames_streams_without_holding_the_video(tmp_path: Path) -> None:
    width, height, count = 320, 240, 150
    path = vf.make_video(tmp_path / "long.mp4", frames=count, size=(width, height), gop=30)
    full_bytes = count * width * height * 3  # 34.6 MB if every frame were kept
    tracemalloc.start()
    try:
        seen = 0
        for frame in iter_frames(path):
            assert frame.shape == (height, width, 3)
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < full_bytes / 20  # a few frames at most (one frame is 230 kB)


def test_iter_frames_yields_before_the_end(tmp_path: Path) -> None:
    path = vf.make_video(tmp_path / "clip.mp4", frames=40)
    frames = iter_frames(path)
    first = next(frames)  # available after decoding the first GOP, not the whole file
    assert psnr(first, vf.pattern(0, 64, 48)) > SAME_FRAME_DB
    frames.close()  # closing early releases the container


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = vf.make_video(tmp_path / "good.mp4", frames=60)
    files = {
        "missing": tmp_path / "missing.mp4",
        "zero_byte": vf.make_zero_byte(tmp_path / "zero.mp4"),
        "text": vf.make_text_as_mp4(tmp_path / "readme.mp4"),
        "truncated": vf.make_truncated(good, tmp_path / "cut.mp4", 0.5),
        "audio_only": vf.make_audio_only(tmp_path / "speech.m4a"),
        "unknown_codec": vf.make_unknown_codec(tmp_path / "alien.avi"),
        "directory": tmp_path,
    }
    return files


BAD_CASES = {
    "missing": "file not found",
    "zero_byte": r"empty file \(0 bytes\)",
    "text": "not a video file: it contains text",
    "truncated": r"truncated or corrupt file: (found|decoded) \d+ of 60 frames",
    "audio_only": r"no video stream \(streams found: audio\)",
    "unknown_codec": "unsupported video codec",
    "directory": "is a directory",
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
@pytest.mark.parametrize("reader", ["probe", "frame_times", "read_frames", "read_indices", "iter_frames"])
def test_bad_input_gives_one_line_video_error(bad_files: dict[str, Path], case: str, reader: str) -> None:
    path = bad_files[case]
    calls = {
        "probe": lambda: probe(path),
        "frame_times": lambda: frame_times(path),
        "read_frames": lambda: read_frames(path),
        "read_indices": lambda: read_frames(path, [0]),
        "iter_frames": lambda: list(iter_frames(path)),
    }
    with pytest.raises(VideoError) as info:
        calls[reader]()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert re.search(BAD_CASES[case], message), message
    err = info.value  # no FFmpeg traceback chained to it
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_truncated_mp4_allow_partial_keeps_decodable_frames(tmp_path: Path) -> None:
    good = vf.make_video(tmp_path / "good.mp4", frames=60)
    cut = vf.make_truncated(good, tmp_path / "cut.mp4", 0.5)
    with pytest.raises(VideoError, match=r"cut\.mp4: truncated or corrupt file: (found|decoded) \d+ of 60 frames"):
        list(iter_frames(cut))
    with pytest.warns(UserWarning, match=r"cut\.mp4: truncated or corrupt file: kept \d+ of 60 frames") as record:
        frames = read_frames(cut, allow_partial=True)
    kept = int(str(record[0].message).split("kept ")[1].split(" ")[0])
    assert 5 < len(frames) == kept < 60
    assert psnr(frames, patterns(kept, 64, 48)) > SAME_FRAME_DB  # the frames that survive are the right ones, in order
    # The cut-off last packet is dropped, not decoded: with frame threads its error used to surface in a worker
    # thread, so the frames kept (a garbled one among them, or two fewer) depended on timing.
    assert "the demuxer flagged the last packet corrupt" in str(record[0].message)
    for _ in range(5):
        with pytest.warns(UserWarning, match="kept"):
            assert np.array_equal(read_frames(cut, allow_partial=True), frames)
    with pytest.warns(UserWarning, match="kept"):
        info = probe(cut, allow_partial=True)
    assert kept <= info.num_frames < 60


def test_truncated_file_resampled_with_allow_partial(tmp_path: Path) -> None:
    cut = vf.make_truncated(vf.make_video(tmp_path / "good.mp4", frames=60), tmp_path / "cut.mp4", 0.5)
    with pytest.raises(VideoError, match=r"cut\.mp4: truncated"):
        list(iter_resampled(cut, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = list(iter_resampled(cut, 5, allow_partial=True))
    assert 2 <= len(pairs) < 12  # 60 frames at 25 fps would give 12 at 5 fps
    for k, (t, frame) in enumerate(pairs):
        assert t == pytest.approx(k / 5)
        assert psnr(frame, vf.pattern(5 * k, 64, 48)) > SAME_FRAME_DB


def test_truncated_mp4_without_index_is_named_as_such(tmp_path: Path) -> None:
    # Written without faststart (moov box last, as most cameras and bikes.mp4 do), then cut: no index survives.
    path = vf.make_video(tmp_path / "moovlast.mp4", frames=10, faststart=False)
    cut = vf.make_truncated(path, tmp_path / "cut.mp4", 0.5)
    with pytest.raises(VideoError, match=r"cut\.mp4: truncated or damaged MP4/MOV file: its index \(moov box\)"):
        probe(cut, allow_partial=True)


def test_truncated_matroska_is_detected_from_its_duration(tmp_path: Path) -> None:
    good = vf.make_video(tmp_path / "good.mkv", frames=100)
    cut = vf.make_truncated(good, tmp_path / "cut.mkv", 0.5)
    with pytest.raises(VideoError, match=r"cut\.mkv: truncated or corrupt file: found \d+ of about 100 frames"):
        probe(cut)
    with pytest.raises(VideoError, match="of about 100 frames"):
        list(iter_frames(cut))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        frames = read_frames(cut, allow_partial=True)
    assert 10 < len(frames) < 100 and "kept" in str(record[0].message)


def test_video_error_is_one_line_and_picklable() -> None:
    err = VideoError("clips/a.mp4", "bad\ndata")
    assert str(err) == "clips/a.mp4: bad data"
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.problem, str(again)) == (err.path, err.problem, str(err))


def test_command_line_probe(sample_video_dir: Path, tmp_path: Path, capsys) -> None:
    assert vio.main(["probe", str(sample_video_dir / "bikes.mp4")]) == 0
    assert '"num_frames": 250' in capsys.readouterr().out
    assert vio.main(["probe", str(tmp_path / "nope.mp4")]) == 1
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'nope.mp4'}: file not found"


# ------------------------------------------------------------------------------------------- files that play
# Each file is read as a player shows it: pictures at their timestamps, a gap holding the previous picture, as many
# frames as the duration holds at the frame rate; never by the container's frame count.

FFMPEG_KINDS = ["alpha.webm", "anim.gif", "gray.mkv", "odd.mkv", "vp9.webm"]


@pytest.mark.parametrize("kind", FFMPEG_KINDS)
def test_ffmpeg_made_files_read_every_picture_once_at_their_rate(tmp_path: Path, kind: str) -> None:
    """testsrc2, 1 s at 30 fps: Matroska/WebM store times in milliseconds (33, 67, 100, ...) and GIF in centiseconds
    (3, 7, 10, ...), so the steps are uneven; the grid at the stream's rate still has 30 slots, one per picture."""
    path = vf.make_testsrc(tmp_path / kind, kind)
    info = probe(path)
    expected = vf.TESTSRC_SECONDS * vf.TESTSRC_FPS
    assert info.num_frames == expected and not info.variable_frame_rate
    # GIF delays are whole centiseconds: FFmpeg's encoder gives the last frame 4 of them, so that GIF lasts 1.01 s.
    assert info.duration == pytest.approx(vf.TESTSRC_SECONDS, abs=0.011)
    grid = vio.frame_grid(path)
    assert (grid.num_frames, grid.fps, grid.native) == (expected, info.fps, True)
    frames = np.stack(list(grid.frames()))
    np.testing.assert_array_equal(frames, read_frames(path))  # each decoded picture once, in order
    assert scan(path).info.num_frames == expected
    at3 = vio.frame_grid(path, 3)  # targets 0, 1/3, 2/3 s (and 1 s inside the GIF's 1.01 s): pictures 0, 10, 20, 29
    assert at3.num_frames == math.ceil(info.duration * 3 - 1e-9)
    picks = [min(10 * k, expected - 1) for k in range(at3.num_frames)]
    np.testing.assert_array_equal(np.stack(list(at3.frames())), frames[picks])


def _picture_on_screen(slots: list[int | None]) -> list[int]:
    """For each slot the index (among the coded pictures) of the picture a player shows: the last one coded."""
    shown, picture = [], -1
    for s in slots:
        picture += s is not None
        shown.append(picture)
    return shown


def test_hand_written_avi_with_zero_length_chunks_holds_pictures(tmp_path: Path) -> None:
    """A RIFF AVI written byte by byte: 31 slots at 25 fps, of which only 8 carry a picture (gaps 0, 11, 17, 24, ...
    as a real cinepak file has them) and the last 6 are zero-length chunks after the last picture. FFmpeg's
    demuxer yields 8 packets; the header counts 31 slots. It reads as 31 frames (1.24 s at 25 fps), each gap
    holding the picture before it, the tail holding the last one."""
    coded = [0, 11, 17, 18, 19, 22, 23, 24]
    slots: list[int | None] = [k if k in coded else None for k in range(25)] + [None] * 6
    path = vf.make_avi_with_held_frames(tmp_path / "held.avi", slots)
    sizes = vf.avi_chunk_sizes(path)
    assert len(sizes) == 31 and sizes.count(0) == 23  # real zero-length "00dc" chunks in the file
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 31 and sum(1 for p in container.demux(stream) if p.size) == 8
    info = probe(path)
    assert (info.num_frames, info.fps, info.duration) == (31, 25, pytest.approx(31 / 25))
    pictures = read_frames(path)  # the 8 coded pictures, in order
    assert len(pictures) == 8
    for k, picture in enumerate(coded):
        assert psnr(pictures[k], vf.pattern(picture, 64, 48)) > SAME_FRAME_DB
    frames = np.stack(list(vio.frame_grid(path).frames()))
    assert len(frames) == 31
    np.testing.assert_array_equal(frames, pictures[_picture_on_screen(slots)])
    result = scan(path)  # the manifest's view: 8 pictures at their times, lasting to the end of the tail
    assert result.info.num_frames == 8 and result.info.duration == pytest.approx(31 / 25)
    np.testing.assert_allclose(result.index.times, np.array(coded) / 25)
    at5 = np.stack(list(vio.frame_grid(path, 5).frames()))  # 0, 0.2, ... 1.2 s: 7 targets inside 1.24 s
    np.testing.assert_array_equal(at5, pictures[[_picture_on_screen(slots)[5 * k] for k in range(7)]])


def test_cut_avi_is_still_truncated(tmp_path: Path) -> None:
    """Trailing repeat chunks count only in a complete file: an AVI cut off in a copy, whose header counts more
    slots than its packets span, is a truncated file, not a held last picture."""
    slots: list[int | None] = [k if k % 2 == 0 else None for k in range(40)]
    path = vf.make_avi_with_held_frames(tmp_path / "full.avi", slots)
    cut = vf.make_truncated(path, tmp_path / "cut.avi", 0.5)
    with pytest.raises(VideoError, match=r"cut\.avi: truncated or corrupt file: found \d+ of 40 frames"):
        probe(cut)
    with pytest.raises(VideoError, match=r"cut\.avi: truncated"):
        list(vio.frame_grid(cut).frames())


def test_cinepak_avi_from_ffmpeg_with_dropped_frames(tmp_path: Path) -> None:
    """FFmpeg's own AVI muxer: testsrc2 at 15 fps, 444 slots, 16 of them coded (cinepak, inter frames), the 428
    dropped ones written as zero-length chunks. The header says 444 frames; it reads as 444 frames, 29.6 s."""
    keep = [0, 11, 17, 24, 40, 41, 42, 60, 99, 130, 131, 200, 300, 301, 402, 443]
    path = vf.make_cinepak_with_dropped_frames(tmp_path / "cine.avi", keep, 444)
    sizes = vf.avi_chunk_sizes(path)
    assert len(sizes) == 444 and sizes.count(0) == 444 - len(keep)
    info = probe(path)
    assert (info.codec, info.num_frames, info.fps) == ("cinepak", 444, 15)
    assert info.duration == pytest.approx(444 / 15) and not info.variable_frame_rate
    pictures = read_frames(path)
    assert len(pictures) == len(keep)
    frames = np.stack(list(vio.frame_grid(path).frames()))
    slots: list[int | None] = [k if k in keep else None for k in range(444)]
    assert len(frames) == 444
    np.testing.assert_array_equal(frames, pictures[_picture_on_screen(slots)])


def test_webm_whose_header_undercounts_reads_to_its_last_frame(tmp_path: Path) -> None:
    """A WebM whose Segment Info Duration says 60 % of what its clusters hold: the timestamps decide."""
    path = vf.with_matroska_duration(vf.make_testsrc(tmp_path / "full.webm", "vp9.webm"), tmp_path / "short.webm", 0.6)
    import av

    with av.open(str(path)) as container:
        assert container.duration / 1e6 == pytest.approx(0.6 * vf.TESTSRC_SECONDS)
    expected = vf.TESTSRC_SECONDS * vf.TESTSRC_FPS
    assert probe(path).num_frames == expected
    frames = list(vio.frame_grid(path).frames())
    assert len(frames) == expected
    np.testing.assert_array_equal(np.stack(frames), read_frames(path))


def test_resample_indices_tolerance_for_rounded_timestamps() -> None:
    # 30 fps stored in milliseconds: frame 2 (due at 66.7 ms) is stamped 67 ms, frame 5 (166.7 ms) 167 ms.
    times = np.array([0, 33, 67, 100, 133, 167]) / 1000
    assert resample_indices(times, 30).tolist() == [0, 1, 1, 3, 4, 4]  # on the exact times, 2 and 5 come late
    assert resample_indices(times, 30, tolerance=0.001).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="tolerance"):
        resample_indices(times, 30, tolerance=-1)
