"""Named model configurations: every released VidTok v1.0 / v1.1 model and tiny CPU presets.

    vidtok presets            # the table: name, regularizer, compression, latent shape, parameters

Names follow the reference release: vidtok_<reg>_<causal|noncausal>_<T><H><W>_<channels or codes>[_v1_1], e.g.
`vidtok_fsq_causal_488_262144` is 4x8x8 compression with an FSQ codebook of 8**6 = 262,144 codes. Released
models use ch=128, two res-block pairs per encoder level (three in the decoder), ch_mult (1, 2, 4, 4) or
(1, 2, 4, 4, 4) for 16x spatial compression. v1.0 causal models pad time with zeros and repeat frames when
upsampling time; v1.1 models pad with copies of the first frame and interpolate linearly.

Tiny presets (`tiny_*`, ch=16) keep the full architecture (2D + 1D blocks, 3D mid block with attention,
AlphaBlender) at a few hundred thousand parameters, for CPU training, sweeps and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from vidtok.model import ModelConfig

# Reference metrics on MCL-JCV (VidTok README / paper Table 5): PSNR, SSIM, LPIPS, FVD. v1.0 rows are 17-frame
# (causal) or 16-frame (non-causal) clips at 256x256; v1.1 rows are whole videos decoded chunk by chunk.
_PAPER = {
    "vidtok_kl_causal_488_4chn": (29.64, 0.852, 0.114, 194.2),
    "vidtok_kl_causal_488_8chn": (31.83, 0.897, 0.083, 109.3),
    "vidtok_kl_causal_488_16chn": (35.04, 0.942, 0.047, 78.9),
    "vidtok_kl_causal_288_8chn": (33.86, 0.928, 0.057, 80.7),
    "vidtok_kl_causal_444_4chn": (34.78, 0.941, 0.051, 87.2),
    "vidtok_kl_causal_41616_4chn": (25.05, 0.711, 0.228, 549.1),
    "vidtok_kl_noncausal_488_4chn": (30.60, 0.876, 0.098, 157.9),
    "vidtok_kl_noncausal_488_16chn": (36.13, 0.950, 0.044, 60.5),
    "vidtok_kl_noncausal_41616_4chn": (26.06, 0.751, 0.190, 423.2),
    "vidtok_kl_noncausal_41616_16chn": (30.69, 0.878, 0.095, 147.1),
    "vidtok_fsq_causal_488_262144": (29.82, 0.867, 0.106, 160.1),
    "vidtok_fsq_causal_488_32768": (29.16, 0.854, 0.117, 196.9),
    "vidtok_fsq_causal_488_4096": (28.36, 0.832, 0.133, 218.1),
    "vidtok_fsq_causal_41616_262144": (25.38, 0.738, 0.206, 430.1),
    "vidtok_fsq_noncausal_488_262144": (30.78, 0.889, 0.091, 132.1),
    "vidtok_fsq_noncausal_41616_262144": (26.37, 0.772, 0.171, 357.0),
    "vidtok_kl_causal_488_16chn_v1_1": (35.13, 0.941, 0.049, 87.4),
    "vidtok_kl_causal_41616_16chn_v1_1": (29.61, 0.854, 0.113, 162.7),
    "vidtok_kl_causal_288_8chn_v1_1": (34.59, 0.935, 0.051, 78.2),
    "vidtok_fsq_causal_488_32768_v1_1": (29.39, 0.856, 0.114, 168.5),
    "vidtok_fsq_causal_888_32768_v1_1": (27.95, 0.817, 0.142, 293.2),
}


@dataclass(frozen=True)
class Preset:
    name: str
    config: ModelConfig
    family: str  # "v1.0", "v1.1" or "tiny"
    clip_frames: int  # training clip length: 17 causal, 16 non-causal, 33 for v1.1 fine-tuning
    paper_metrics: tuple[float, float, float, float] | None = None  # PSNR, SSIM, LPIPS, FVD (MCL-JCV)


def _released(name: str) -> Preset:
    """Decode a release name into its exact configuration."""
    parts = name.split("_")
    reg, causality, compression, size = parts[1], parts[2], parts[3], parts[4]
    v1_1 = name.endswith("_v1_1")
    causal = causality == "causal"
    # Compression codes: 488 = 4x8x8, 41616 = 4x16x16, 288 = 2x8x8, 444 = 4x4x4, 888 = 8x8x8.
    levels: dict[str, dict] = {
        "488": {"ch_mult": (1, 2, 4, 4)},
        "41616": {"ch_mult": (1, 2, 4, 4, 4)},
        "288": {"ch_mult": (1, 2, 4, 4), "tempo_ds": (1,), "tempo_us": (2,)},
        "444": {"ch_mult": (1, 2, 4, 4), "spatial_ds": (1, 2), "spatial_us": (1, 2)},
        "888": {"ch_mult": (1, 2, 4, 4), "tempo_ds": (0, 1, 2), "tempo_us": (1, 2, 3)},
    }[compression]
    if reg == "kl":
        reg_kwargs = {"regularizer": "kl", "z_channels": int(size.removesuffix("chn"))}
    else:
        codes = int(size)
        n_levels = {4096: 4, 32768: 5, 262144: 6}[codes]  # 8 ** n_levels codes
        reg_kwargs = {"regularizer": "fsq", "fsq_levels": (8,) * n_levels}
    semantics = (
        {"causal_padding": "replicate", "temporal_upsample": "trilinear"}
        if v1_1
        else {"causal_padding": "zeros", "temporal_upsample": "nearest"}
    )
    config = ModelConfig(causal=causal, ch=128, num_res_blocks=2, **levels, **reg_kwargs, **semantics)
    clip_frames = 33 if v1_1 else (17 if causal else 16)
    return Preset(name, config, "v1.1" if v1_1 else "v1.0", clip_frames, _PAPER.get(name))


RELEASED_NAMES: tuple[str, ...] = (
    # v1.0 (paper Table 5 and README)
    "vidtok_kl_causal_488_4chn",
    "vidtok_kl_causal_488_8chn",
    "vidtok_kl_causal_488_16chn",
    "vidtok_kl_causal_288_8chn",
    "vidtok_kl_causal_444_4chn",
    "vidtok_kl_causal_41616_4chn",
    "vidtok_kl_noncausal_488_4chn",
    "vidtok_kl_noncausal_488_16chn",
    "vidtok_kl_noncausal_41616_4chn",
    "vidtok_kl_noncausal_41616_16chn",
    "vidtok_fsq_causal_488_262144",
    "vidtok_fsq_causal_488_32768",
    "vidtok_fsq_causal_488_4096",
    "vidtok_fsq_causal_41616_262144",
    "vidtok_fsq_noncausal_488_262144",
    "vidtok_fsq_noncausal_41616_262144",
    # v1.1 (causal, fine-tuned on long clips for chunked inference)
    "vidtok_kl_causal_488_4chn_v1_1",
    "vidtok_kl_causal_488_16chn_v1_1",
    "vidtok_kl_causal_41616_16chn_v1_1",
    "vidtok_kl_causal_288_8chn_v1_1",
    "vidtok_fsq_causal_488_32768_v1_1",
    "vidtok_fsq_causal_888_32768_v1_1",
    "vidtok_fsq_causal_41616_262144_v1_1",
)


def _tiny(name: str, **overrides) -> Preset:
    # ch 16 and three levels (1, 2, 2): 16 -> 32 -> 32 channels, a 32-channel 3D mid block with attention.
    # Default resampling for three levels: spatial down at levels 0 and 1 (4x), temporal down at 1 and 0 (4x).
    base = {
        "ch": 16,
        "ch_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "causal_padding": "replicate",
        "temporal_upsample": "trilinear",
    }
    base.update(overrides)
    config = ModelConfig(**base)
    return Preset(name, config, "tiny", 17 if config.causal else 16)


_TINY = (
    _tiny("tiny_kl_causal_444", regularizer="kl", z_channels=4),
    _tiny("tiny_fsq_causal_444", regularizer="fsq", fsq_levels=(8, 8, 8, 8)),
    _tiny("tiny_ae_causal_444", regularizer="none", z_channels=4),
    _tiny("tiny_kl_noncausal_444", regularizer="kl", z_channels=4, causal=False),
    # Four levels: 8x spatial like the released 4x8x8 models.
    _tiny("tiny_kl_causal_488", regularizer="kl", z_channels=4, ch_mult=(1, 2, 2, 2)),
    _tiny("tiny_fsq_causal_488", regularizer="fsq", fsq_levels=(8, 8, 8, 8), ch_mult=(1, 2, 2, 2)),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (*(_released(n) for n in RELEASED_NAMES), *_TINY)}


def get_preset(name: str) -> ModelConfig:
    """The ModelConfig of a preset; ValueError listing the known names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name].config


def derive(name: str, **changes) -> ModelConfig:
    """A preset with some fields changed (ablations, codebook sweeps), validated like any config."""
    return replace(get_preset(name), **changes)


def count_parameters(config: ModelConfig) -> dict[str, int]:
    """Encoder / decoder / regularizer parameter counts, built on the meta device (no memory, no init cost)."""
    from vidtok.model import VidTok

    with torch.device("meta"):
        model = VidTok(config)
    return model.num_parameters()


def preset_table() -> list[dict[str, object]]:
    """One row per preset for `vidtok presets`: latent shape of a 17x256x256 clip (16 frames non-causal)."""
    rows = []
    for preset in PRESETS.values():
        cfg = preset.config
        frames = 17 if cfg.causal else 16
        c, t, h, w = cfg.latent_shape(frames, 256, 256)
        params = count_parameters(cfg)
        reg = cfg.regularizer if cfg.num_codes is None else f"{cfg.regularizer} {cfg.num_codes:,}"
        rows.append(
            {
                "name": preset.name,
                "family": preset.family,
                "causal": cfg.causal,
                "regularizer": reg,
                "compression": cfg.compression,
                "latent": f"{c}x{t}x{h}x{w} ({frames}x256x256)",
                "params_m": (params["encoder"] + params["decoder"] + params["regularizer"]) / 1e6,
            }
        )
    return rows
