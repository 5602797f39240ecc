"""The project's model against tensors made by the upstream microsoft/VidTok code itself (issue 16 item 4).

    pytest tests/model/test_upstream_golden.py

tests/golden/upstream/*.safetensors were written by tests/golden/make_upstream_golden.py, which builds upstream's
autoencoder from its own configs (the commit is in each file's metadata), gives it
tests.helpers.deterministic_weights of its state_dict shapes and runs a fixed 32x32 clip through it in fp32. Here the
project's preset of the same name gets the same weights (parameter names are identical, no mapping) and must give
the same encoder output, latents and reconstruction within 1e-4, and for FSQ the same token ids exactly. Nothing of
the upstream code is needed to run this test.

One golden is a known divergence, kept as a strict xfail: v1.0 causal models given a clip of 18 frames (not 1 + 4k).
Upstream's v1.0 encoder pads 3 copies of frame 0 whenever T % 4 != 0 and its decoder always drops the first 3 frames
(18 in, 17 out; 16 in, 13 out); the project applies the v1.1 rule to every preset ((-T) mod 4 copies, T frames out).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.helpers import deterministic_weights
from vidtok.model.config import get_preset
from vidtok.model.vidtok import VidTok, load_checked_state

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "upstream"
ATOL = 1e-4
MATCHING = (
    "vidtok_kl_causal_488_4chn",
    "vidtok_fsq_causal_488_262144",
    "vidtok_kl_causal_488_4chn_v1_1",
    "vidtok_fsq_causal_488_32768_v1_1",
    "vidtok_kl_noncausal_488_4chn",
)


def golden(stem: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(GOLDEN / f"{stem}.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - safe_open has no __iter__


def model_like_upstream(preset: str) -> VidTok:
    """The preset with the weights the golden run gave upstream's model (same seed, same names)."""
    model = VidTok(get_preset(preset), name=preset)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return load_checked_state(model, deterministic_weights(shapes, seed=0), "deterministic_weights").eval()


def run(model: VidTok, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(encoder output before the regularizer, latents, reconstruction, token ids) of the project's model."""
    captured: list[torch.Tensor] = []
    hook = model.encoder.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            recon, encoded = model(video)
    finally:
        hook.remove()
    return captured[0], encoded.latents, recon, encoded.indices


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} vs upstream {tuple(b.shape)}"
    return float((a.float() - b.float()).abs().max())


@pytest.mark.parametrize("stem", MATCHING)
def test_project_model_matches_upstream(stem: str) -> None:
    tensors, meta = golden(stem)
    model = model_like_upstream(meta["preset"])
    features, latents, recon, indices = run(model, tensors["input"])
    errors = {
        "encoder_output": max_error(features, tensors["encoder_output"]),
        "latents": max_error(latents, tensors["latents"]),
        "recon": max_error(recon, tensors["recon"]),
    }
    assert all(e <= ATOL for e in errors.values()), f"{stem} vs upstream {meta['upstream_commit'][:12]}: {errors}"
    if "indices" in tensors:
        assert indices is not None and torch.equal(indices.long(), tensors["indices"]), f"{stem}: token ids differ"
        with torch.no_grad():
            from_ids = model.decode_indices(tensors["indices"], tensors["input"].shape[2])
        assert max_error(from_ids, tensors["recon"]) <= ATOL
    # The golden run is not degenerate: the outputs carry signal, so a match means something.
    assert tensors["recon"].std() > 0.05 and tensors["latents"].std() > 0.05


@pytest.mark.filterwarnings("ignore:.*v1.0 causal model on:UserWarning")  # the project warns about this clip length
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known divergence: for v1.0 causal presets and T not 1 + 4k, upstream pads 3 copies of frame 0 and drops "
    "the first 3 decoded frames (18 frames in, 17 out); the project applies the v1.1 rule (pad (-T) mod 4, T out)",
)
def test_v1_0_clip_of_18_frames_matches_upstream() -> None:
    tensors, meta = golden("vidtok_kl_causal_488_4chn_T18")
    assert tensors["input"].shape[2] == 18 and tensors["recon"].shape[2] == 17  # what upstream does
    model = model_like_upstream(meta["preset"])
    _, latents, recon, _ = run(model, tensors["input"])
    assert recon.shape == tensors["recon"].shape, f"{recon.shape[2]} frames vs upstream's {tensors['recon'].shape[2]}"
    assert max_error(latents, tensors["latents"]) <= ATOL
    assert max_error(recon, tensors["recon"]) <= ATOL
