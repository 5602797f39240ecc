"""`vidtok encode / decode / reconstruct` on real and broken files.  Run: pytest tests/test_cli_files.py -q"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests import videofactory
from tests.helpers import psnr, randomize_identity_init
from vidtok import VidTok
from vidtok.cli import main
from vidtok.data.video import probe, read_frames
from vidtok.formats import token_content_sha256
from vidtok.model.vidtok import save_pretrained
from vidtok.tokens import TokenFile

pytestmark = pytest.mark.filterwarnings("ignore:preset .* has random weights")


def run(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = randomize_identity_init(VidTok.from_preset("tiny_fsq_causal_444"))
    return save_pretrained(model, tmp_path_factory.mktemp("ckpt") / "fsq")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return videofactory.make_video(tmp_path_factory.mktemp("v") / "clip.mp4", frames=23, size=(64, 48), fps=25)


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_real_mp4_round_trip_through_encode_and_decode(tmp_path, sample_video_dir, checkpoint) -> None:
    source = sample_video_dir / "carphone_pristine.mp4"
    assert run("encode", source, "-o", tmp_path / "c.tokens", "--checkpoint", checkpoint) == 0
    tokens = TokenFile.load(tmp_path / "c.tokens")
    # 120 frames at 176x144, 4x4x4: 3 copies of frame 0 in front -> 30 latent frames of 36x44 token ids
    assert tokens.kind == "indices" and tuple(tokens.tensor.shape) == (1, 30, 36, 44)
    assert tokens.num_frames == 120 and tokens.fps.numerator == 30000 and tokens.fps.denominator == 1001
    assert run("decode", tmp_path / "c.tokens", "-o", tmp_path / "rec.mp4") == 0  # nothing but the token file
    info = probe(tmp_path / "rec.mp4")
    assert (info.num_frames, info.width, info.height, info.fps) == (120, 176, 144, tokens.fps)
    assert _outputs(tmp_path) == ["c.tokens", "rec.mp4"]


def test_decode_equals_reconstruct(tmp_path, clip, checkpoint) -> None:
    """decode(encode(x)) writes the same frames reconstruct does (both stream, with different chunking)."""
    assert run("encode", clip, "-o", tmp_path / "t.tokens", "--checkpoint", checkpoint, "--chunk-frames", "8") == 0
    assert run("decode", tmp_path / "t.tokens", "-o", tmp_path / "a.mp4", "--chunk-frames", "4") == 0
    assert run("reconstruct", clip, "-o", tmp_path / "b.mp4", "--checkpoint", checkpoint) == 0
    a, b = read_frames(tmp_path / "a.mp4"), read_frames(tmp_path / "b.mp4")
    assert a.shape == b.shape == (23, 48, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # same pixels up to H.264 at crf 18


def test_reconstruct_prints_metrics_and_side_by_side(tmp_path, clip, checkpoint, capsys) -> None:
    assert run("reconstruct", clip, "-o", tmp_path / "sbs.mp4", "--checkpoint", checkpoint, "--side-by-side") == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "SSIM" in out and "23 frames" in out
    assert probe(tmp_path / "sbs.mp4").width == 128


def test_fps_and_resolution_flags(tmp_path, sample_video_dir, checkpoint) -> None:
    source = sample_video_dir / "bikes.mp4"  # 640x272, 25 fps, 10 s
    assert (
        run(
            "encode",
            source,
            "-o",
            tmp_path / "b.tokens",
            "--checkpoint",
            checkpoint,
            "--fps",
            "3",
            "--resolution",
            "64",
        )
        == 0
    )
    tokens = TokenFile.load(tmp_path / "b.tokens")
    assert tokens.num_frames == 30 and float(tokens.fps) == 3.0  # targets 0, 1/3, ... < 10 s
    assert (tokens.geometry.height, tokens.geometry.width) == (64, 150)
    assert tuple(tokens.tensor.shape) == (1, 8, 16, 38)  # 150 padded to 152 for the spatial factor 4
    assert run("decode", tmp_path / "b.tokens", "-o", tmp_path / "b.mp4") == 0
    info = probe(tmp_path / "b.mp4")
    assert (info.num_frames, info.width, info.height, float(info.fps)) == (30, 150, 64, 3.0)


@pytest.fixture(scope="module")
def kl_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = randomize_identity_init(VidTok.from_preset("tiny_kl_causal_444"))
    return save_pretrained(model, tmp_path_factory.mktemp("ckpt") / "kl")


def test_tiled_and_bf16_runs_give_the_fp32_result(tmp_path, kl_checkpoint, capsys) -> None:
    """--tile and --dtype bf16 change how the model runs, not what it computes: the decoded videos agree with the
    plain fp32 run (tiles: the same up to the blend; bf16: to bf16 precision), and so do the reported PSNRs. A
    continuous (KL) model, whose random weights are not a reconstruction but a fixed function of the input (a
    discrete one would turn tiny differences into other codes), and tiles large against its receptive field
    (32-pixel tiles on 64x48 frames change the result by 28-31 dB on this model: the border context is cut)."""

    clip = videofactory.make_video(tmp_path / "clip.mp4", frames=9, size=(160, 128), fps=25)

    def reconstruct(name: str, *flags: str) -> tuple[np.ndarray, float]:
        out = tmp_path / f"{name}.mp4"
        assert run("reconstruct", clip, "-o", out, "--checkpoint", kl_checkpoint, *flags) == 0
        line = capsys.readouterr().out
        return read_frames(out), float(line.split("PSNR ")[1].split(" dB")[0])

    plain, plain_db = reconstruct("plain")
    tiled, tiled_db = reconstruct("tiled", "--tile", "96", "--tile-overlap", "48")
    both, both_db = reconstruct("both", "--tile", "96", "--tile-overlap", "48", "--dtype", "bf16")
    assert plain.shape == tiled.shape == both.shape == (9, 128, 160, 3)
    assert psnr(tiled, plain) > 40 and abs(tiled_db - plain_db) < 0.05
    assert psnr(both, plain) > 35 and abs(both_db - plain_db) < 0.1  # measured: 42.7 and 40.7 dB
    assert not np.array_equal(both, plain)  # bf16 did run: not bit-identical to fp32


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    good = videofactory.make_video(folder / "good.mp4", frames=40)
    return {
        "missing": (folder / "nope.mp4", "not found"),
        "zero-byte": (videofactory.make_zero_byte(folder / "empty.mp4"), "empty"),
        "text": (videofactory.make_text_as_mp4(folder / "notes.mp4"), ""),
        "truncated": (videofactory.make_truncated(good, folder / "cut.mp4"), ""),
        "audio-only": (videofactory.make_audio_only(folder / "audio.mp4"), "no video stream"),
        "unknown-codec": (videofactory.make_unknown_codec(folder / "weird.avi"), ""),
    }


@pytest.mark.parametrize("case", ["missing", "zero-byte", "text", "truncated", "audio-only", "unknown-codec"])
@pytest.mark.parametrize("command", ["encode", "reconstruct"])
def test_bad_video_files(tmp_path, capsys, case: str, command: str) -> None:
    path, phrase = _bad_files(tmp_path)[case]
    out = tmp_path / "out" / ("x.tokens" if command == "encode" else "x.mp4")
    out.parent.mkdir()
    assert run(command, path, "-o", out, "--preset", "tiny_kl_causal_444") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vidtok {command}: error: ") and path.name in err[0], err
    assert phrase in err[0]
    assert _outputs(out.parent) == [], "partial output left behind"


def test_truncated_file_with_allow_partial(tmp_path) -> None:
    good = videofactory.make_video(tmp_path / "good.mp4", frames=60, gop=12)
    cut = videofactory.make_truncated(good, tmp_path / "cut.mp4", fraction=0.6)
    with pytest.warns(UserWarning, match=r"cut\.mp4: truncated or corrupt file: kept \d+ of 60 frames"):
        assert (
            run("reconstruct", cut, "-o", tmp_path / "rec.mp4", "--preset", "tiny_kl_causal_444", "--allow-partial")
            == 0
        )
    kept = probe(tmp_path / "rec.mp4").num_frames
    assert 0 < kept < 60


def _tokens(tmp_path: Path, clip: Path, checkpoint: Path) -> Path:
    path = tmp_path / "t.tokens"
    assert run("encode", clip, "-o", path, "--checkpoint", checkpoint) == 0
    return path


def test_token_file_tampered_bytes(tmp_path, clip, checkpoint, capsys) -> None:
    path = _tokens(tmp_path, clip, checkpoint)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    assert run("decode", path, "-o", tmp_path / "r.mp4") == 1
    assert "do not match their recorded sha256" in capsys.readouterr().err
    assert not (tmp_path / "r.mp4").exists()


def _rewrite(path: Path, tensor: torch.Tensor) -> None:
    """Re-save with a consistent hash: tampering that a checksum alone would not catch."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta["content_sha256"] = token_content_sha256(meta, tensor.contiguous().numpy())
    save_file({"indices": tensor.contiguous()}, str(path), metadata=meta)


@pytest.mark.parametrize(
    "change,phrase",
    [
        (lambda t: t[:, :-1], "does not match (1, 6, 12, 16)"),
        (lambda t: t.clone().fill_(4096), "outside the codebook [0, 4096)"),
        (lambda t: t.clone().fill_(-1), "outside the codebook"),
    ],
)
def test_token_file_with_wrong_shape_or_range(tmp_path, clip, checkpoint, capsys, change, phrase) -> None:
    path = _tokens(tmp_path, clip, checkpoint)
    _rewrite(path, change(TokenFile.load(path).tensor))
    assert run("decode", path, "-o", tmp_path / "r.mp4") == 1
    assert phrase in capsys.readouterr().err
    assert not (tmp_path / "r.mp4").exists()


def test_token_file_from_another_model(tmp_path, clip, checkpoint, capsys) -> None:
    path = _tokens(tmp_path, clip, checkpoint)
    assert run("decode", path, "-o", tmp_path / "r.mp4", "--preset", "tiny_fsq_causal_488") == 1
    assert "made by another model" in capsys.readouterr().err
    other = save_pretrained(VidTok.from_preset("tiny_fsq_causal_444"), tmp_path / "other")
    assert run("decode", path, "-o", tmp_path / "r.mp4", "--checkpoint", other) == 1
    assert "made with weights" in capsys.readouterr().err
    assert not (tmp_path / "r.mp4").exists()


def test_not_a_token_file(tmp_path, capsys) -> None:
    (tmp_path / "x.tokens").write_text("hello")
    assert run("decode", tmp_path / "x.tokens", "-o", tmp_path / "r.mp4") == 1
    assert "unreadable token file" in capsys.readouterr().err


def test_presets_lists_every_released_model(capsys) -> None:
    assert run("presets", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert "vidtok_fsq_causal_488_262144" in names and "vidtok_kl_causal_488_16chn_v1_1" in names
    assert next(r for r in rows if r["name"] == "vidtok_kl_causal_488_4chn")["latent"].startswith("4x5x32x32")


@pytest.mark.parametrize("quiet", [False, True])
def test_long_work_shows_progress_on_a_terminal(tmp_path, clip, quiet: bool) -> None:
    """On a terminal `vidtok encode` shows frames done, frames/s and the total; --quiet (or no terminal) shows none."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()  # stderr is a terminal, as for a user at a shell (40 rows, 120 columns)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    cmd = [sys.executable, "-m", "vidtok.cli", "encode", str(clip), "-o", str(tmp_path / "c.tokens"),
           "--preset", "tiny_kl_causal_444", "--chunk-frames", "4", *(["--quiet"] if quiet else [])]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=follower, timeout=120)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.returncode == 0 and b"wrote" in proc.stdout
    text = shown.decode(errors="replace")
    if quiet:
        assert "frame/s" not in text and "/23" not in text, text
    else:
        assert "/23 [" in text and "frame/s" in text, text  # 23 frames in all, counted as they stream, with a rate


# ------------------------------------------------------------------------------------------- files that play
# The files FFmpeg writes and players play (issue 29): through `vidtok encode` and `reconstruct`, not only the
# manifest. Each has as many frames as its duration holds at its frame rate, counted before the first chunk.

HELD_SLOTS = [k if k in (0, 11, 17, 18, 19, 22, 23, 24) else None for k in range(25)] + [None] * 6
CINEPAK_KEEP = (0, 11, 17, 24, 40, 41, 42, 59)


@pytest.fixture(scope="module")
def playable(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """name -> (file, frames at its own rate)."""
    folder = tmp_path_factory.mktemp("playable")
    seconds_30 = videofactory.TESTSRC_SECONDS * videofactory.TESTSRC_FPS
    files = {kind: (videofactory.make_testsrc(folder / kind, kind), seconds_30) for kind in
             ("alpha.webm", "anim.gif", "gray.mkv", "odd.mkv", "vp9.webm")}  # fmt: skip
    # AVIs whose header counts more frames than they hold pictures (zero-length repeat chunks), hand-written and
    # FFmpeg's; a WebM whose header duration says 60 % of what it holds.
    files["held.avi"] = (videofactory.make_avi_with_held_frames(folder / "held.avi", HELD_SLOTS), len(HELD_SLOTS))
    cine = videofactory.make_cinepak_with_dropped_frames(folder / "cine.avi", CINEPAK_KEEP, 60)
    files["cine.avi"] = (cine, 60)
    full = videofactory.make_testsrc(folder / "full.webm", "vp9.webm")
    files["short-header.webm"] = (videofactory.with_matroska_duration(full, folder / "short.webm", 0.6), seconds_30)
    return files


@pytest.mark.parametrize("name", ["alpha.webm", "anim.gif", "gray.mkv", "odd.mkv", "vp9.webm", "held.avi",
                                  "cine.avi", "short-header.webm"])  # fmt: skip
def test_files_that_play_encode_and_reconstruct(tmp_path, playable, name: str) -> None:
    path, frames = playable[name]
    info = probe(path)
    assert info.num_frames == frames
    common = ("--preset", "tiny_kl_causal_444", "--resolution", "32", "--quiet")
    assert run("encode", path, "-o", tmp_path / "own.tokens", *common) == 0
    tokens = TokenFile.load(tmp_path / "own.tokens")
    assert (tokens.num_frames, tokens.fps) == (frames, info.fps)
    assert run("reconstruct", path, "-o", tmp_path / "rec.mp4", *common) == 0
    rec = probe(tmp_path / "rec.mp4")
    assert (rec.num_frames, rec.fps) == (frames, info.fps)
    assert run("encode", path, "-o", tmp_path / "at3.tokens", "--fps", "3", *common) == 0
    at3 = TokenFile.load(tmp_path / "at3.tokens")
    assert at3.num_frames == -(-round(info.duration * 3e6) // 10**6)  # targets k / 3 inside the duration
    assert _outputs(tmp_path) == ["at3.tokens", "own.tokens", "rec.mp4"]


def test_encode_errors_name_the_file(tmp_path, capsys) -> None:
    """A file cut off where its header promises more (here an AVI whose trailing chunks are gone) fails with one line
    that names it, and writes nothing."""
    slots = [k if k % 2 == 0 else None for k in range(40)]
    full = videofactory.make_avi_with_held_frames(tmp_path / "full.avi", slots)
    cut = videofactory.make_truncated(full, tmp_path / "cut.avi", 0.5)
    out = tmp_path / "out"
    out.mkdir()
    for command, target in (("encode", out / "x.tokens"), ("reconstruct", out / "x.mp4")):
        assert run(command, cut, "-o", target, "--preset", "tiny_kl_causal_444") == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(cut) in err[0] and "truncated" in err[0], err
    assert _outputs(out) == []
