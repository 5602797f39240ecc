"""Parity with diffusers' AutoencoderVidTok (the `interop` extra) and the diffusers import/export.

    pytest tests/model/test_interop.py -q

Same weights, same input: our encode latents and decoded video agree with diffusers to 1e-4 (max abs).
diffusers' `encode` does no front padding, so it gets the clip with the (-T) mod 4 copies of frame 0 that ours
adds itself; its `decode` drops the first t_factor - 1 frames, ours keeps the last T, which for T = 17 is the same.
"""

from __future__ import annotations

import pytest
import torch

from vidtok import VidTok
from vidtok.model.config import derive, get_preset
from vidtok.model.interop import from_diffusers, to_diffusers
from vidtok.model.vidtok import CheckpointError

pytestmark = pytest.mark.interop
# Without diffusers the whole module skips at collection; under CI=true that skip fails the run (tests/conftest.py).
diffusers = pytest.importorskip(
    "diffusers", reason="the interop extra (diffusers) is not installed: pip install -e '.[interop]' (make setup)"
)


def _peer_from(model: VidTok):
    from vidtok.model.interop import diffusers_config

    cfg = {k: v for k, v in diffusers_config(model.config).items() if not k.startswith("_")}
    peer = diffusers.AutoencoderVidTok(**cfg).eval()
    peer.load_state_dict(model.state_dict(), strict=True)
    return peer


def _video(decoded) -> torch.Tensor:
    """diffusers' decode returns a tensor here (DecoderOutput in other autoencoders)."""
    return decoded if torch.is_tensor(decoded) else decoded.sample


def _random_weights(model: VidTok) -> VidTok:
    """Zero-initialised temporal convs would hide temporal bugs: give every parameter a value."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mix_factor" in name:
                p.uniform_(-1.0, 3.0)
            elif p.abs().sum() == 0:
                p.normal_(0.0, 0.02)
    return model.eval()


# Released architectures as v1.1 semantics (what diffusers computes), run at 32x32 so a CPU takes seconds.
@pytest.mark.parametrize(
    "preset,frames",
    [
        ("vidtok_fsq_causal_488_262144", 17),
        ("vidtok_kl_causal_488_4chn", 17),
        ("vidtok_kl_noncausal_488_4chn", 16),
    ],
)
def test_parity_with_diffusers(preset: str, frames: int) -> None:
    config = get_preset(preset)
    if config.causal:
        config = derive(preset, causal_padding="replicate", temporal_upsample="trilinear")
    ours = _random_weights(VidTok(config, preset))
    peer = _peer_from(ours)
    video = torch.rand(1, 3, frames, 32, 32) * 2 - 1
    with torch.no_grad():
        encoded = ours.encode(video)
        padded = torch.cat([video[:, :, :1]] * ours.front_padding(frames) + [video], dim=2)
        if config.regularizer == "kl":
            peer_latents = peer.encode(padded).latent_dist.mode()
        else:
            peer_latents, peer_indices = peer.encode(padded)
            assert torch.equal(encoded.indices, peer_indices.long())
        assert (encoded.latents - peer_latents).abs().max() <= 1e-4
        ours_video = ours.decode(peer_latents, frames)
        peer_video = _video(peer.decode(peer_latents))
    assert ours_video.shape == peer_video.shape == video.shape
    assert (ours_video - peer_video).abs().max() <= 1e-4


def test_export_to_diffusers_and_back(tmp_path) -> None:
    ours = _random_weights(VidTok(get_preset("tiny_fsq_causal_488"), "tiny_fsq_causal_488"))
    to_diffusers(ours, tmp_path / "diffusers")
    peer = diffusers.AutoencoderVidTok.from_pretrained(tmp_path / "diffusers").eval()
    back = from_diffusers(tmp_path / "diffusers").eval()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        padded = torch.cat([video[:, :, :1]] * 3 + [video], dim=2)
        latents, _ = peer.encode(padded)
        assert torch.equal(back.encode(video).latents, ours.encode(video).latents)
        assert (ours.encode(video).latents - latents).abs().max() <= 1e-4
        assert (back.decode(latents, 9) - _video(peer.decode(latents))).abs().max() <= 1e-4


def test_export_refuses_what_diffusers_cannot_represent(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="v1.0 causal semantics"):
        to_diffusers(VidTok(get_preset("vidtok_kl_causal_488_4chn")), tmp_path / "x")
    with pytest.raises(CheckpointError, match="regularizer vq"):
        to_diffusers(VidTok(derive("tiny_kl_causal_444", regularizer="vq", codebook_size=16)), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
