"""Small, deterministic test videos written with PyAV, good and bad, for the I/O, data and CLI tests.

    python -c "from tests.videofactory import make_video; print(make_video('/tmp/demo.mp4', frames=50))"

Every frame is ``pattern(i, width, height)``: a colour gradient (red grows to the right, green downwards, so any flip
or wrong rotation shows) with a blue level that changes per frame and a white square that moves 3 px right and
2 px down each frame, so every frame differs and a decoder that repeats, drops or reorders frames is caught.

What this PyAV build (18.1, FFmpeg 8.1) can write, checked with ``av.codecs_available``: libx264 (8- and 10-bit),
libx265, libvpx-vp9, libsvtav1, mpeg4, ffv1, mjpeg, prores, rawvideo; aac/opus/mp3 for audio.
Findings behind the helpers:
- rotation: ``VideoStream.set_display_rotation(deg, hflip=...)`` (PyAV 18) writes the display matrix as coded
  side data; it reads back as ``VideoFrame.rotation == deg`` (counter-clockwise), but a pure left-right mirror reads
  back as rotation -180 (the matrix must be inspected to tell them apart). Setting ``stream.metadata["rotate"]``
  writes nothing (FFmpeg 8's mp4 muxer ignores the tag; checked: no matrix, rotation 0 on read).
- grayscale: libx264 silently encodes ``gray`` as yuv420p, so gray videos are lossless FFV1 in Matroska.
- variable frame rate: frames get explicit pts in a 1/1000 s time base; mp4, mkv and webm keep them.
- truncation: mp4 files are written with ``movflags=+faststart`` (index first), so cutting the tail leaves a file
  that opens and decodes up to the cut; without faststart a cut mp4 has no index and does not open at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Codec by container when the caller does not name one: what each container normally carries.
DEFAULT_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}
_FORMATS = {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mp4": "mp4", ".mov": "mov"}
_VFR_TIME_BASE = Fraction(1, 1000)


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index`` of every factory video: uint8 RGB (height, width, 3)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = x * 255 // max(width - 1, 1)
    rgb[..., 1] = y * 255 // max(height - 1, 1)
    rgb[..., 2] = (index * 23) % 200 + 28
    side = max(4, min(width, height) // 6)
    x0 = (index * 3) % max(width - side, 1)
    y0 = (index * 2) % max(height - side, 1)
    rgb[y0 : y0 + side, x0 : x0 + side] = 255
    return rgb


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB frame as uint8 (what a grayscale video of the pattern holds)."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def make_video(
    path: str | os.PathLike[str],
    *,
    frames: int = 20,
    size: tuple[int, int] = (64, 48),
    fps: float | Fraction = 25,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    vfr_times: Sequence[float] | None = None,
    rotation: int = 0,
    mirror: bool = False,
    full_range: bool = False,
    gop: int = 12,
    faststart: bool = True,
    options: dict[str, str] | None = None,
) -> Path:
    """Write ``frames`` pattern frames of ``size`` = (width, height); the container follows the extension.

    ``vfr_times``: presentation time in seconds of each frame (variable frame rate; ``frames`` is ignored).
    ``rotation``: counter-clockwise display rotation stored in the display matrix (0/90/180/270); ``mirror``: the
    matrix also mirrors left-right after the turn (front cameras). Displayed frame i is then
    ``np.rot90(pattern(i, w, h), rotation // 90)``, mirrored with ``[:, ::-1]`` when ``mirror``.
    ``full_range``: YUV in 0..255 (JPEG/"pc" range, as phones record) instead of 16..235, tagged as such.
    ``gop``: keyframe interval, kept short so seeking has several keyframes to choose from.
    ``faststart``: mp4/mov index (moov box) before the data; False puts it last, as cameras and bikes.mp4 do.
    """
    path = Path(path)
    ext = path.suffix.lower()
    codec = codec or DEFAULT_CODECS[ext]
    width, height = size
    rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    count = len(vfr_times) if vfr_times is not None else frames
    opts = dict(options or {})
    if codec == "libx264":
        # veryfast keeps B-frames (so decode order != display order, as in real files) and stays quick.
        opts.setdefault("preset", "veryfast")
        opts.setdefault("x264-params", "scenecut=0")  # keyframes exactly every `gop` frames, not at "scene cuts"
    if codec == "libvpx-vp9":
        opts.setdefault("deadline", "realtime")
        opts.setdefault("cpu-used", "8")
    container_opts = {"movflags": "+faststart"} if faststart and ext in (".mp4", ".mov") else {}
    with av.open(str(path), "w", format=_FORMATS[ext], options=container_opts) as container:
        stream = container.add_stream(codec, rate=rate, options=opts)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop
        if codec == "mpeg4":
            stream.bit_rate = 2_000_000  # the 200 kb/s default blurs even 64x48 frames (27 dB)
        if full_range:
            stream.codec_context.color_range = 2  # AVCOL_RANGE_JPEG
        if vfr_times is not None:
            stream.time_base = _VFR_TIME_BASE
            stream.codec_context.time_base = _VFR_TIME_BASE
        if rotation or mirror:
            stream.set_display_rotation(rotation, hflip=mirror)
        for i in range(count):
            rgb = pattern(i, width, height)
            if pix_fmt.startswith("gray"):
                frame = av.VideoFrame.from_ndarray(luma(rgb), format="gray")
            else:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if full_range:  # PyAV's own conversion in encode() would produce limited range
                frame = frame.reformat(format=pix_fmt, dst_color_range="JPEG")
                frame.color_range = 2
            if vfr_times is not None:
                frame.pts = round(vfr_times[i] / _VFR_TIME_BASE)
                frame.time_base = _VFR_TIME_BASE
            else:
                frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_truncated(src: str | os.PathLike[str], dst: str | os.PathLike[str], fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes, as a download or copy cut off midway leaves it."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def make_zero_byte(path: str | os.PathLike[str]) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def make_text_as_mp4(path: str | os.PathLike[str]) -> Path:
    Path(path).write_text("this is a README, not a video\n" * 20)
    return Path(path)


def make_audio_only(path: str | os.PathLike[str], seconds: float = 0.5, sample_rate: int = 16000) -> Path:
    """An AAC file (mp4/m4a container) with a 440 Hz tone and no video stream."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = "mono"
        chunk = 1024
        total = int(seconds * sample_rate)
        for start in range(0, total, chunk):
            t = (np.arange(start, start + chunk) / sample_rate).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(
                (0.2 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = sample_rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return Path(path)


def make_grayscale(path: str | os.PathLike[str], **kw: object) -> Path:
    """Lossless 8-bit gray (FFV1 in Matroska): frame i is ``luma(pattern(i, w, h))`` exactly."""
    return make_video(path, codec="ffv1", pix_fmt="gray", **kw)  # type: ignore[arg-type]


def make_10bit(path: str | os.PathLike[str], **kw: object) -> Path:
    """H.264 High 10 (yuv420p10le), as cameras and HDR pipelines write."""
    return make_video(path, codec="libx264", pix_fmt="yuv420p10le", **kw)  # type: ignore[arg-type]


VFR_TIMES = (0.0, 0.04, 0.1, 0.12, 0.3, 0.34, 0.5, 0.9, 0.95, 1.0)


def make_vfr(path: str | os.PathLike[str], times: Sequence[float] = VFR_TIMES, **kw: object) -> Path:
    """Variable frame rate: frame i shows at ``times[i]`` seconds (default: bursts and gaps between 20 and 400 ms)."""
    return make_video(path, vfr_times=times, **kw)  # type: ignore[arg-type]


def make_rotated(path: str | os.PathLike[str], rotation: int = 90, mirror: bool = False, **kw: object) -> Path:
    """Coded as a landscape pattern, with a display matrix that turns it ``rotation`` degrees counter-clockwise
    (and then mirrors it left-right when ``mirror``)."""
    return make_video(path, rotation=rotation, mirror=mirror, **kw)  # type: ignore[arg-type]


def make_unknown_codec(path: str | os.PathLike[str]) -> Path:
    """An AVI whose video FourCC names no codec FFmpeg knows: the container opens, nothing can decode it.
    Made by writing MPEG-4 Part 2 (FourCC FMP4, in the stream header and the bitmap header) and renaming the
    FourCC, since no encoder exists for a codec the build cannot decode."""
    path = Path(path)
    make_video(path.with_suffix(".tmp.avi"), codec="mpeg4", frames=5)
    data = path.with_suffix(".tmp.avi").read_bytes()
    assert data.count(b"FMP4") == 2, "expected the FourCC in strh and strf"
    path.write_bytes(data.replace(b"FMP4", b"QZQZ"))
    path.with_suffix(".tmp.avi").unlink()
    return path


def make_trimmed_mp4(src: str | os.PathLike[str], path: str | os.PathLike[str], start: float = 0.02) -> Path:
    """An MP4 whose header counts one frame more than it shows: FFmpeg's stream copy from `start` keeps the
    keyframe before it and hides it with an edit list (the container says N frames, N - 1 decode for display).
    Needs the `ffmpeg` program (make system-deps)."""
    import subprocess

    cmd = ["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-i", str(src), "-c", "copy", str(path)]
    subprocess.run(cmd, check=True)
    return Path(path)


def make_avi_with_repeat_chunks(
    path: str | os.PathLike[str], pts: Sequence[int], size: tuple[int, int] = (64, 48)
) -> Path:
    """An MJPEG AVI at 25 fps whose frame i is pattern(i) at time pts[i] / 25: a gap in `pts` is what the AVI muxer
    writes as zero-length "repeat" chunks (the previous picture stays on screen)."""
    width, height = size
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            frame.pts = p
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return Path(path)


def make_corrupt_middle(path: str | os.PathLike[str], frames: int = 20, bad: int = 10) -> Path:
    """An MJPEG AVI whose packet `bad` is overwritten with zeros: the container is intact, decoding fails part-way."""
    make_avi_with_repeat_chunks(path, range(frames))
    with av.open(str(path)) as container:
        where = [(p.pos, p.size) for p in container.demux(video=0) if p.size][bad]
    data = bytearray(Path(path).read_bytes())
    data[where[0] : where[0] + where[1]] = bytes(where[1])
    Path(path).write_bytes(bytes(data))
    return Path(path)


# ------------------------------------------------------------------------------------------- FFmpeg-made files
# Files as FFmpeg's command-line tool writes them (needs the `ffmpeg` program: make system-deps), for the cases
# PyAV's muxing does not reproduce: WebM with an alpha channel, GIF's centisecond delays, FFV1 gray and odd sizes,
# cinepak AVIs whose dropped frames become zero-length chunks.

TESTSRC_SECONDS, TESTSRC_FPS = 2, 30  # as issue 29 generated them


def _ffmpeg(*args: str) -> None:
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_testsrc(path: str | os.PathLike[str], kind: str, size: tuple[int, int] = (96, 64)) -> Path:
    """FFmpeg's testsrc2 for TESTSRC_SECONDS at TESTSRC_FPS, written as `kind`: "alpha.webm" (VP9 + alpha),
    "anim.gif", "gray.mkv" (FFV1 gray), "odd.mkv" (FFV1 at 161x119), "vp9.webm" or "h264.mp4"."""
    path = Path(path)
    width, height = (161, 119) if kind == "odd.mkv" else size
    source = f"testsrc2=size={width}x{height}:rate={TESTSRC_FPS}:duration={TESTSRC_SECONDS}"
    codec = {
        "alpha.webm": ["-vf", "format=yuva420p", "-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-deadline", "realtime"],
        "anim.gif": [],
        "gray.mkv": ["-c:v", "ffv1", "-pix_fmt", "gray"],
        "odd.mkv": ["-c:v", "ffv1"],
        "vp9.webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime"],
        "h264.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    }[kind]
    _ffmpeg("-f", "lavfi", "-i", source, *codec, str(path))
    return path


def make_cinepak_with_dropped_frames(
    path: str | os.PathLike[str], keep: Sequence[int], slots: int, fps: int = 15, size: tuple[int, int] = (64, 48)
) -> Path:
    """A cinepak AVI from testsrc2 of `slots` frames at `fps`, of which only the frames `keep` are coded: FFmpeg's
    select filter drops the others with their timestamps kept (-fps_mode passthrough), and its AVI muxer writes
    each dropped frame as a zero-length "00dc" chunk (repeat the previous picture), as the header's frame count."""
    width, height = size
    expr = "+".join(f"eq(n\\,{k})" for k in keep)
    source = f"testsrc2=size={width}x{height}:rate={fps}:duration={slots / fps}"
    _ffmpeg("-f", "lavfi", "-i", source, "-vf", f"select='{expr}'", "-fps_mode", "passthrough", "-c:v", "cinepak",
            str(path))  # fmt: skip
    return Path(path)


def with_matroska_duration(src: str | os.PathLike[str], dst: str | os.PathLike[str], share: float) -> Path:
    """A copy of a Matroska/WebM file whose Segment Info Duration (EBML id 0x4489, the 8-byte float FFmpeg writes)
    says `share` of what it said: a header that undercounts the frames the clusters hold, as some muxers leave."""
    import struct

    data = bytearray(Path(src).read_bytes())
    at = data.find(b"\x44\x89\x88")
    assert at > 0 and data.count(b"\x44\x89\x88") == 1, "expected one 8-byte Duration element"
    (duration,) = struct.unpack(">d", data[at + 3 : at + 11])
    data[at + 3 : at + 11] = struct.pack(">d", duration * share)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


# ------------------------------------------------------------------------------------------- AVI written by hand


def _riff_chunk(fourcc: bytes, data: bytes) -> bytes:
    import struct

    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def write_avi(
    path: str | os.PathLike[str], chunks: Sequence[bytes], fps: int, size: tuple[int, int], fourcc: bytes = b"MJPG"
) -> Path:
    """An AVI 1.0 file written byte by byte: one video stream at `fps` whose frame slot k is `chunks[k]`, b"" being a
    zero-length "00dc" chunk (the previous picture stays on screen). The header counts every slot (avih
    dwTotalFrames, strh dwLength) and the idx1 index lists every chunk, zero-length ones included, as AVI writers
    that drop frames do."""
    import struct

    width, height = size
    n = len(chunks)
    avih = struct.pack("<14I", round(1e6 / fps), 0, 0, 0x10, n, 0, 1, 0, width, height, 0, 0, 0, 0)  # 0x10: index
    strh = struct.pack("<4s4sIHHIIIIIIiI4h", b"vids", fourcc, 0, 0, 0, 0, 1, fps, 0, n, 0, -1, 0, 0, 0, width, height)
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, fourcc, width * height * 3, 0, 0, 0, 0)
    strl = _riff_chunk(b"LIST", b"strl" + _riff_chunk(b"strh", strh) + _riff_chunk(b"strf", strf))
    hdrl = _riff_chunk(b"LIST", b"hdrl" + _riff_chunk(b"avih", avih) + strl)
    movi, index = b"", b""
    for data in chunks:
        offset = 4 + len(movi)  # idx1 offsets count from the "movi" fourcc
        index += struct.pack("<4sIII", b"00dc", 0x10 if data else 0, offset, len(data))  # 0x10: keyframe
        movi += _riff_chunk(b"00dc", data)
    body = b"AVI " + hdrl + _riff_chunk(b"LIST", b"movi" + movi) + _riff_chunk(b"idx1", index)
    Path(path).write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    return Path(path)


def avi_chunk_sizes(path: str | os.PathLike[str]) -> list[int]:
    """The sizes of the video chunks ("00dc") in an AVI's movi list, in file order, read from the RIFF bytes."""
    data = Path(path).read_bytes()
    at = data.find(b"movi") + 4
    end = at - 4 + int.from_bytes(data[at - 8 : at - 4], "little")  # the LIST's size counts from its "movi"
    sizes = []
    while at + 8 <= end:
        fourcc, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if fourcc == b"00dc":
            sizes.append(size)
        at += 8 + size + (size & 1)
    return sizes


def make_avi_with_held_frames(
    path: str | os.PathLike[str], slots: Sequence[int | None], fps: int = 25, size: tuple[int, int] = (64, 48)
) -> Path:
    """A hand-written MJPEG AVI (write_avi) whose slot k holds a picture of pattern(slots[k]), or, for None, a
    zero-length chunk that repeats the previous picture. Trailing Nones hold the last picture to the end."""
    width, height = size
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = Fraction(1, fps)
    chunks = []
    for k, picture in enumerate(slots):
        if picture is None:
            chunks.append(b"")
            continue
        frame = av.VideoFrame.from_ndarray(pattern(picture, width, height), format="rgb24").reformat(format="yuvj420p")
        frame.pts = k
        (packet,) = encoder.encode(frame)
        chunks.append(bytes(packet))
    return write_avi(path, chunks, fps, size)
