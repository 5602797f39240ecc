"""YUV -> RGB follows the stream's matrix and range: FFmpeg-made files with their colour tags set, against a conversion
computed here from the decoded Y, U, V planes.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/data/test_colour.py -q

The files are lossless H.264 4:4:4 (x264 -qp 0), so the planes are exactly what FFmpeg's scale filter made from
testsrc2 and no chroma upsampling stands between them and RGB. The reference is ITU-R BT.601 / BT.709 (their
Kr, Kb) in limited range (Y 16..235, chroma 16..240) or full range, rounded to 8 bits. swscale rounds through
fixed point, so one level of difference is allowed; the other matrix differs by 20 levels or more on testsrc2's
saturated bars, and the other range by more, so the test tells them apart.
"""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import av
import numpy as np
import pytest

from vidtok.data.video import read_frames

try:  # tests/ is a package (tests/__init__.py): the repository root is on sys.path
    from tests.helpers import REPO
except ImportError:  # pragma: no cover - tests/ as a plain folder
    REPO = Path(__file__).resolve().parents[2]

MATRICES = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}  # (Kr, Kb)
# FFmpeg's names: the scale filter's out_color_matrix, and the tag (-colorspace) that says which one was used.
TAGS = {"bt709": "bt709", "bt601": "smpte170m"}


def make_tagged(path: Path, matrix: str, full_range: bool) -> Path:
    """3 frames of testsrc2 at 64x48, converted to YUV by FFmpeg with `matrix` and range, tagged as such."""
    rng = "pc" if full_range else "tv"
    cmd = [
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.3",
        "-vf", f"scale=out_color_matrix={matrix}:out_range={rng},format=yuv444p",
        "-c:v", "libx264", "-qp", "0", "-colorspace", TAGS[matrix], "-color_range", rng, str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


def reference_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str, full_range: bool) -> np.ndarray:
    kr, kb = MATRICES[matrix]
    y, cb, cr = y.astype(np.float64), u.astype(np.float64) - 128, v.astype(np.float64) - 128
    if not full_range:  # limited: Y 16..235 (219 steps), chroma 16..240 (224 steps)
        y, cb, cr = (y - 16) * 255 / 219, cb * 255 / 224, cr * 255 / 224
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.round(np.stack([r, g, b], axis=-1)), 0, 255)


def planes(path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each decoded picture's Y, U, V planes (visible bytes only)."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert frame.format.name in ("yuv444p", "yuvj444p")
            out.append(
                tuple(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes)
            )
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("full_range", [False, True], ids=["limited", "full"])
@pytest.mark.parametrize("matrix", ["bt709", "bt601"])
def test_conversion_follows_the_stream_matrix_and_range(tmp_path: Path, matrix: str, full_range: bool) -> None:
    path = make_tagged(tmp_path / f"{matrix}.mp4", matrix, full_range)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert int(frame.colorspace) == {"bt709": 1, "bt601": 6}[matrix]  # AVCOL_SPC_BT709 / SMPTE170M
        assert int(frame.color_range) == (2 if full_range else 1)  # AVCOL_RANGE_JPEG / MPEG
    rgb = read_frames(path).astype(np.float64)
    yuv = planes(path)
    assert len(rgb) == len(yuv) == 3
    for got, (y, u, v) in zip(rgb, yuv):
        assert np.abs(got - reference_rgb(y, u, v, matrix, full_range)).max() <= 1
        other = "bt601" if matrix == "bt709" else "bt709"
        assert np.abs(got - reference_rgb(y, u, v, other, full_range)).max() >= 10  # the test can tell
        assert np.abs(got - reference_rgb(y, u, v, matrix, not full_range)).max() >= 10


def test_pyproject_requires_the_av_version_tested_here() -> None:
    """The minimum `av` in pyproject.toml is one whose conversion this file verifies: the installed one passes the
    tests above, and may not be older than the floor (older PyAV converted BT.709 with BT.601 coefficients)."""
    floor = re.search(r'"av>=([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    assert floor is not None, "pyproject.toml must pin a minimum av version"
    installed = tuple(int(p) for p in re.findall(r"\d+", version("av"))[:2])
    assert installed >= tuple(int(p) for p in floor[1].split("."))[:2]
