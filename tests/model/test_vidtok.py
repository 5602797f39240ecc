"""Architecture, shape rules and causality of the VidTok model.

pytest tests/model/test_vidtok.py -q
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.helpers import tiny
from vidtok import ModelConfig, VidTok
from vidtok.model.config import PRESETS, RELEASED_NAMES, derive, get_preset
from vidtok.model.vidtok import count_parameters

# Parameter counts (encoder, decoder) of upstream's classes (microsoft/VidTok at d6ad92d:
# vidtok/modules/model_3dcausal.py, model_3dcausal_v1_1.py for v1.1) built from these released configs at random
# init; their sums are the sizes in the paper's Table 5 (arXiv 2412.13061): 69.26M + 88.19M = 157M for the first.
REFERENCE_PARAMS = {
    "vidtok_kl_causal_488_4chn": (69_258_122, 88_193_541),
    "vidtok_kl_causal_488_16chn": (69_589_922, 88_359_429),
    "vidtok_kl_causal_288_8chn": (62_290_321, 86_479_108),
    "vidtok_kl_causal_444_4chn": (69_110_538, 85_833_733),
    "vidtok_kl_causal_41616_4chn": (89_521_802, 109_446_149),
    "vidtok_fsq_causal_488_262144": (69_230_472, 88_221_189),
    "vidtok_fsq_causal_888_32768_v1_1": (69_659_144, 95_285_766),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_reference(name: str) -> None:
    params = count_parameters(get_preset(name))
    assert (params["encoder"], params["decoder"]) == REFERENCE_PARAMS[name]


def test_every_released_model_has_a_preset() -> None:
    assert len(RELEASED_NAMES) == 23  # 16 v1.0 + 7 v1.1 configs of the reference release
    for name in RELEASED_NAMES:
        assert name in PRESETS
    assert PRESETS["vidtok_fsq_causal_488_262144"].config.num_codes == 262_144
    assert PRESETS["vidtok_fsq_causal_488_32768"].config.num_codes == 32_768
    assert PRESETS["vidtok_fsq_causal_488_4096"].config.num_codes == 4_096
    assert PRESETS["vidtok_kl_causal_488_4chn"].config.causal_padding == "zeros"  # v1.0
    assert PRESETS["vidtok_kl_causal_488_16chn_v1_1"].config.causal_padding == "replicate"


def test_tiny_presets_are_a_few_hundred_thousand_parameters() -> None:
    for name, preset in PRESETS.items():
        if preset.family == "tiny":
            total = sum(count_parameters(preset.config).values())
            assert 100_000 < total < 1_000_000, (name, total)


@pytest.mark.parametrize("name", list(PRESETS))
def test_latent_and_output_shapes_on_meta(name: str) -> None:
    """Every preset at 17x256x256 (16 frames non-causal), shapes only (meta device: no memory, no compute)."""
    config = get_preset(name)
    frames = 17 if config.causal else 16
    with torch.device("meta"), torch.no_grad():
        model = VidTok(config, name)
        video = torch.empty(1, 3, frames, 256, 256)
        features = model.encoder(torch.cat([video[:, :, :1]] * model.front_padding(frames) + [video], dim=2))
        latents = torch.empty(1, config.z_channels, *features.shape[2:])
        decoded = model.decoder(latents)
    c, t, h, w = config.latent_shape(frames, 256, 256)
    assert features.shape[1] == (2 * c if config.regularizer == "kl" else c)
    assert tuple(features.shape[2:]) == (t, h, w)
    assert decoded.shape[-2:] == (256, 256)
    assert decoded.shape[2] - model.front_padding(frames) == frames
    if name == "vidtok_kl_causal_488_4chn":
        assert (c, t, h, w) == (4, 5, 32, 32)


@pytest.mark.parametrize("frames,latents", [(1, 1), (5, 2), (16, 4), (17, 5), (18, 5), (33, 9)])
def test_causal_frame_rules(frames: int, latents: int) -> None:
    model = tiny()
    video = torch.rand(1, 3, frames, 16, 16) * 2 - 1
    with torch.no_grad():
        recon, encoded = model(video)
    assert encoded.latents.shape[2] == latents
    assert recon.shape == video.shape


def test_noncausal_frame_rules_and_errors() -> None:
    model = tiny("tiny_kl_noncausal_444")
    with torch.no_grad():
        recon, encoded = model(torch.rand(2, 3, 8, 16, 16) * 2 - 1)
    assert encoded.latents.shape == (2, 4, 2, 4, 4)
    assert recon.shape == (2, 3, 8, 16, 16)
    with pytest.raises(ValueError, match=r"T divisible by the temporal factor 4, got T=17; nearest valid: 16 or 20"):
        model.encode(torch.zeros(1, 3, 17, 16, 16))


@pytest.mark.parametrize("padding", ["replicate", "zeros"])
def test_encoder_is_bit_exactly_causal(padding: str) -> None:
    """Changing frames >= k leaves every latent that covers only frames < k unchanged, bit for bit."""
    model = tiny(causal_padding=padding)
    video = torch.rand(1, 3, 17, 16, 16) * 2 - 1
    with torch.no_grad():
        base = model.encode(video).latents
        for k in (1, 5, 9, 13):
            changed = video.clone()
            changed[:, :, k:] = torch.rand_like(changed[:, :, k:])
            latents = model.encode(changed).latents
            # With 3 frames of front padding, latent j covers frames 4j-3 .. 4j: latents j < (k+3)//4 see only < k.
            untouched = (k + 3) // 4
            assert torch.equal(latents[:, :, :untouched], base[:, :, :untouched]), k
            assert not torch.equal(latents[:, :, untouched:], base[:, :, untouched:]), k


@pytest.mark.parametrize("upsample,lookahead", [("nearest", 0), ("trilinear", 1)])
def test_decoder_causality(upsample: str, lookahead: int) -> None:
    """Frames of latent j depend on latents <= j (nearest, v1.0) or <= j + 1 (linear upsampling, v1.1)."""
    model = tiny(temporal_upsample=upsample)
    latents = torch.randn(1, 4, 5, 4, 4)
    with torch.no_grad():
        base = model.decode(latents)
        for j in (1, 2, 3):
            changed = latents.clone()
            changed[:, :, j:] += 1.0
            frames = model.decode(changed)
            # Latent 0 -> frame 0; latent i >= 1 -> frames 4i-3 .. 4i.
            safe_latents = j - lookahead
            safe_frames = 0 if safe_latents <= 0 else 4 * (safe_latents - 1) + 1
            assert torch.equal(frames[:, :, :safe_frames], base[:, :, :safe_frames]), j
            assert not torch.equal(frames, base)


def test_kl_inference_is_deterministic_unless_sampling() -> None:
    model = tiny()
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = model.encode(video).latents, model.encode(video).latents
        sampled = model.encode(video, sample=True).latents
    assert torch.equal(a, b)
    assert not torch.equal(a, sampled)


@pytest.mark.parametrize(
    "changes",
    [
        {"temporal_resampler": "conv"},
        {"alpha": "fixed"},
        {"fully_3d": True},
        {"regularizer": "vq", "codebook_size": 64},
        {"regularizer": "lfq", "z_channels": 6},
        {"regularizer": "none"},
    ],
)
def test_ablation_switches_build_train_and_run(changes: dict) -> None:
    model = VidTok(derive("tiny_kl_causal_444", **changes)).train()
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    recon, encoded = model(video)
    loss = (recon - video).abs().mean() + sum(encoded.aux.values(), torch.zeros(()))
    loss.backward()
    assert recon.shape == video.shape
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    state = model.state_dict()
    if changes.get("alpha") == "fixed":
        mix = [k for k in state if k.endswith("mix_factor")]
        assert mix and not any(k.endswith("mix_factor") for k, _ in model.named_parameters())
    if changes.get("temporal_resampler") == "conv":
        assert not any(k.endswith("mix_factor") for k in state)
    if changes.get("fully_3d"):
        assert not any(".down_temporal.0.block" in k for k in state)


def test_fully_3d_has_more_parameters_than_factorised() -> None:
    factorised = sum(count_parameters(get_preset("vidtok_kl_causal_488_4chn")).values())
    full = sum(count_parameters(derive("vidtok_kl_causal_488_4chn", fully_3d=True)).values())
    assert full > 1.3 * factorised


def test_alphablender_initial_alpha() -> None:
    model = VidTok(get_preset("tiny_kl_causal_444"))
    mix = [p for n, p in model.named_parameters() if n.endswith("mix_factor")]
    assert mix and all(float(torch.sigmoid(p.detach())) == pytest.approx(0.8808, abs=1e-4) for p in mix)


def test_temporal_blocks_start_as_identity() -> None:
    """The second conv of every 1D temporal block is zero-initialised, so a fresh block is the identity."""
    model = VidTok(get_preset("tiny_kl_causal_444")).eval()
    block = model.encoder.down_temporal[0].block[0]
    x = torch.randn(1, 16, 5, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"regularizer": "fsq"}, "needs fsq_levels"),
        ({"regularizer": "vq"}, "codebook_size >= 2"),
        (
            {"spatial_ds": (1,), "tempo_ds": (0,), "spatial_us": (1,), "tempo_us": (1,)},
            "must be a subset of spatial_ds",
        ),
        ({"tempo_ds": (3,), "tempo_us": (1,)}, r"tempo_ds=\(3,\) names levels outside 0..2"),
        ({"regularizer": "magic"}, "regularizer must be one of"),
        ({"causal_padding": "reflect"}, "causal_padding must be one of"),
    ],
)
def test_config_validation_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(ch=16, ch_mult=(1, 2, 2), **kwargs)


def test_config_json_round_trip() -> None:
    config = get_preset("vidtok_fsq_causal_888_32768_v1_1")
    assert ModelConfig.from_dict(ModelConfig.from_dict(config.to_dict()).to_dict()) == config
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**config.to_dict(), "colour": "blue"})


@pytest.mark.parametrize("name", ["tiny_kl_causal_444", "tiny_kl_noncausal_444", "tiny_fsq_causal_488"])
def test_activations_stay_channels_last(name: str) -> None:
    """Every block hands the next one a channels-last tensor: a channels-first result (an expanded causal pad fed
    to torch.cat did that) makes every later convolution and norm pay a transposing copy (~25% of encode time)."""
    from vidtok.model.vidtok import CausalConv3d, ResBlock, TemporalDownsample, TemporalUpsample

    model = tiny(name)
    seen: list[str] = []

    def check(module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if output.shape[2] > 1:  # a single frame is trivially both layouts
            seen.append(type(module).__name__)
            assert output.is_contiguous(memory_format=torch.channels_last_3d), type(module).__name__

    for module in model.modules():
        if isinstance(module, ResBlock | CausalConv3d | TemporalDownsample | TemporalUpsample):
            module.register_forward_hook(check)
    frames = 17 if model.config.causal else 16
    with torch.no_grad():
        model(torch.rand(1, 3, frames, 32, 32) * 2 - 1)
    assert "ResBlock" in seen and "TemporalUpsample" in seen


def test_low_precision_conv_on_cpu_rounds_operands() -> None:
    """Under bf16 autocast on a CPU without native bf16 kernels, conv3d multiplies bf16-rounded operands in fp32
    (PyTorch's own fallback is ~600x slower); with native kernels it is PyTorch's bf16 convolution. Either way the
    result is bf16 and matches the fp32 convolution of the rounded operands to bf16 output precision."""
    import torch.nn.functional as F

    from vidtok.model.kernels import conv3d

    torch.manual_seed(0)
    x = torch.randn(1, 8, 5, 12, 12).contiguous(memory_format=torch.channels_last_3d)
    w, b = torch.randn(6, 8, 3, 3, 3) * 0.1, torch.randn(6)
    expected = F.conv3d(*(t.bfloat16().double() for t in (x, w, b)), padding=(0, 1, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv3d(x, w, b, padding=(0, 1, 1))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), expected, rtol=1e-2, atol=1e-2)
    got_tensors = conv3d(x.bfloat16(), w.bfloat16(), b.bfloat16(), padding=(0, 1, 1))  # bf16 tensors, no autocast
    assert got_tensors.dtype == torch.bfloat16
    torch.testing.assert_close(got_tensors.double(), expected, rtol=1e-2, atol=1e-2)


def test_v1_0_clip_lengths_where_upstream_differs_are_warned() -> None:
    """v1.0 causal models (zero temporal padding): upstream pads 3 copies of frame 0 whenever T % 4 != 0 and drops 3
    output frames (also for 4k frames: 16 in, 13 out); this project pads to a multiple of 4 and keeps every frame.
    The two agree only for 1 + 4k frames (tests/model/test_upstream_golden.py); other lengths warn."""
    model = tiny("tiny_kl_causal_444", causal_padding="zeros", temporal_upsample="nearest")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for frames in (17, 9):
            model.encode(torch.rand(1, 3, frames, 16, 16) * 2 - 1)
    for frames in (16, 18, 19):
        with pytest.warns(UserWarning, match=f"v1.0 causal model on {frames} frames.*use 1 \\+ 4k frames"):
            out = model.encode(torch.rand(1, 3, frames, 16, 16) * 2 - 1)
        assert out.num_frames == frames  # every frame is kept
    v1_1 = tiny("tiny_kl_causal_444")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v1_1.encode(torch.rand(1, 3, 18, 16, 16) * 2 - 1)  # v1.1's rule is the project's: nothing to warn
