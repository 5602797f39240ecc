"""The trivial-codec shortcut (ModelConfig.shortcut = "trivial"): an untrained model is the trivial codec, and
streaming, tiling, saving and the config rules hold for it as for every other model.

    pytest tests/model/test_shortcut.py -q
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny
from vidtok.model.config import derive
from vidtok.model.interop import to_diffusers
from vidtok.model.streaming import TileSpec, decode_video, encode_video
from vidtok.model.trivial import trivial_codec
from vidtok.model.vidtok import VidTok


@pytest.mark.parametrize(
    "preset,frames",
    [("tiny_kl_causal_444", 17), ("tiny_kl_causal_444", 16), ("tiny_kl_causal_444", 1), ("tiny_kl_causal_488", 9)]
    + [("tiny_kl_noncausal_444", 16), ("tiny_kl_noncausal_444", 8)],
)
def test_untrained_shortcut_model_is_the_trivial_codec(preset: str, frames: int) -> None:
    config = derive(preset, shortcut="trivial")
    model = VidTok(config, name=preset).eval()
    video = torch.rand(2, 3, frames, 32, 48) * 2 - 1
    with torch.no_grad():
        recon, encoded = model(video)
    expected = trivial_codec(video, config)
    assert recon.shape == video.shape
    assert (recon - expected).abs().max() <= 1e-5
    # The posterior starts narrow: sampling must not bury the samples in noise.
    assert float(encoded.logvar.max()) == pytest.approx(-8.0)


def test_a_sampled_latent_stays_near_the_trivial_codec() -> None:
    model = VidTok(derive("tiny_kl_causal_444", shortcut="trivial")).train()
    video = torch.rand(1, 3, 17, 32, 32) * 2 - 1
    with torch.no_grad():
        recon, _ = model(video, sample=True)
    trivial = trivial_codec(video, model.config)
    assert 0 < (recon - trivial).abs().max() <= 0.2  # noise of std e^-4 on the samples, nothing more


def test_without_the_shortcut_nothing_changes() -> None:
    """A plain preset has no shortcut module, and its state dict keys are those of the released models."""
    plain, shortcut = VidTok(derive("tiny_kl_causal_444")), VidTok(derive("tiny_kl_causal_444", shortcut="trivial"))
    assert plain.encoder.shortcut is None and plain.decoder.shortcut is None
    assert list(plain.state_dict()) == list(shortcut.state_dict())


@pytest.mark.parametrize("frames", [1, 5, 16, 17, 30])
def test_shortcut_streaming_equals_whole_clip(frames: int) -> None:
    model = tiny("tiny_kl_causal_444", shortcut="trivial")  # random output convs: decoder and shortcut both count
    video = torch.rand(1, 3, frames, 32, 32) * 2 - 1
    with torch.no_grad():
        whole = model.encode(video)
        decoded = model.decode(whole.latents, frames)
        for chunk_frames in (4, 8):
            streamed = encode_video(model, video, chunk_frames=chunk_frames)
            assert (streamed.latents - whole.latents).abs().max() <= 1e-5
        for chunk_latents in (1, 2, 3):
            out = decode_video(model, whole.latents, frames, chunk_latents=chunk_latents)
            assert out.shape == decoded.shape
            assert (out - decoded).abs().max() <= 1e-5


def test_shortcut_tiles_and_chunks_equal_whole_frames_away_from_seams() -> None:
    """Tiles carry the shortcut's samples and latents as extra channels; with the output convs zero the tiled
    reconstruction is exactly the trivial codec (the bilinear upsampling at tile borders is blended away)."""
    model = VidTok(derive("tiny_kl_causal_444", shortcut="trivial")).eval()
    video = torch.rand(1, 3, 13, 64, 64) * 2 - 1
    tile = TileSpec(size=32, overlap=16)
    with torch.no_grad():
        encoded = encode_video(model, video, chunk_frames=4, tile=tile)
        assert (encoded.latents - model.encode(video).latents).abs().max() <= 1e-5
        frames = decode_video(model, encoded.latents, 13, chunk_latents=1, tile=tile)
    assert (frames - trivial_codec(video, model.config)).abs().max() <= 1e-5


def test_shortcut_survives_save_and_load(tmp_path) -> None:
    model = tiny("tiny_kl_causal_444", shortcut="trivial")
    model.save_pretrained(tmp_path / "m")
    loaded = VidTok.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.shortcut == "trivial"
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(video)[0], model(video)[0])


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"regularizer": "fsq", "fsq_levels": (8, 8, 8, 8)}, "continuous latent"),
        ({"z_channels": 2}, "z_channels is 2"),
        ({"shortcut": "bilinear"}, "shortcut must be one of"),
    ],
)
def test_shortcut_config_rules(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        derive("tiny_kl_causal_444", **({"shortcut": "trivial"} | changes))


def test_shortcut_models_have_no_diffusers_equivalent(tmp_path) -> None:
    with pytest.raises(ValueError, match="shortcut"):
        to_diffusers(tiny("tiny_kl_causal_444", shortcut="trivial"), tmp_path / "d")
    assert not (tmp_path / "d").exists()
