"""The token file's header is as trustworthy as its tensor: edits are caught, malformed values are one-line errors.

.venv/bin/pytest tests/test_token_file.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests import videofactory
from tests.helpers import randomize_identity_init
from vidtok import VidTok
from vidtok.cli import main
from vidtok.formats import token_content_sha256
from vidtok.model.vidtok import save_pretrained
from vidtok.tokens import TokenFile

pytestmark = pytest.mark.filterwarnings("ignore:preset .* has random weights")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    """A real token file: a 23-frame FFmpeg-style H.264 clip encoded with a tiny FSQ checkpoint."""
    folder = tmp_path_factory.mktemp("tokens")
    torch.manual_seed(1)
    checkpoint = save_pretrained(randomize_identity_init(VidTok.from_preset("tiny_fsq_causal_444")), folder / "fsq")
    clip = videofactory.make_video(folder / "clip.mp4", frames=23, size=(64, 48), fps=25)
    path = folder / "clip.tokens"
    assert main(["encode", str(clip), "-o", str(path), "--checkpoint", str(checkpoint)]) == 0
    return path


def _edited(tmp_path: Path, tokens: Path, field: str, value: str, rehash: bool) -> Path:
    """A copy of `tokens` with one header field changed, as a person with the safetensors library would do it;
    with `rehash` the digest is recomputed too (what only validation can catch)."""
    with safe_open(str(tokens), framework="pt") as f:
        meta = dict(f.metadata())
        tensor = f.get_tensor(meta["kind"])
    meta[field] = value
    if rehash:
        meta["content_sha256"] = token_content_sha256(meta, tensor.numpy())
    path = tmp_path / f"edited-{field}.tokens"
    save_file({meta["kind"]: tensor}, str(path), metadata=meta)
    return path


def _decode_error(path: Path, tmp_path: Path, capsys) -> str:
    out = tmp_path / "rec.mp4"
    assert main(["decode", str(path), "-o", str(out)]) == 1
    assert not out.exists(), "a refused decode must not leave an output"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_round_trip_keeps_the_header(tokens) -> None:
    token = TokenFile.load(tokens)
    assert (token.fps, token.num_frames, token.geometry.height, token.geometry.width) == (25, 23, 48, 64)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fps", "50/1"),
        ("num_frames", "19"),
        ("source", "/elsewhere/other.mp4"),
        ("geometry", json.dumps({"source_height": 96, "source_width": 128, "height": 48, "width": 64,
                                 "pad_bottom": 0, "pad_right": 0})),
    ],
)  # fmt: skip
def test_an_edited_header_field_is_caught(tmp_path, tokens, capsys, field: str, value: str) -> None:
    err = _decode_error(_edited(tmp_path, tokens, field, value, rehash=False), tmp_path, capsys)
    assert "header or tensor bytes do not match their recorded sha256" in err


@pytest.mark.parametrize(
    ("field", "value", "phrase"),
    [
        ("fps", "25/0", "fps '25/0' is not a rational number"),
        ("fps", "-25/1", "fps '-25/1' must be positive"),
        ("fps", "abc", "fps 'abc' is not a rational number"),
        ("num_frames", "-3", "num_frames must be >= 1, got -3"),
        ("num_frames", "many", "num_frames must be an integer"),
        ("clip_frames", "0", "clip_frames must be >= 1"),
        ("geometry", json.dumps({"source_height": 48, "source_width": 64, "height": -48, "width": 64,
                                 "pad_bottom": 0, "pad_right": 0}), "geometry.height must be >= 1"),
        ("geometry", json.dumps({"source_height": 48, "source_width": 64, "height": 1, "width": 64,
                                 "pad_bottom": 47, "pad_right": 0}), "more than the spatial factor 4 needs"),
        ("num_frames", "999999999", "does not match"),  # the tensor bounds what a header can ask for
        ("geometry", "{not json", "bad metadata"),
        ("model", json.dumps({"preset": "x", "nonsense": 1}), "bad metadata"),
    ],
)  # fmt: skip
def test_malformed_header_values_are_one_line_errors(tmp_path, tokens, capsys, field, value, phrase) -> None:
    err = _decode_error(_edited(tmp_path, tokens, field, value, rehash=True), tmp_path, capsys)
    assert phrase in err and str(tmp_path) in err


def test_an_older_format_version_names_the_remedy(tmp_path, tokens, capsys) -> None:
    err = _decode_error(_edited(tmp_path, tokens, "format_version", "1", rehash=True), tmp_path, capsys)
    assert "token format version '1'" in err and "vidtok encode" in err
