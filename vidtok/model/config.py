"""What a VidTok model is: ModelConfig, the named presets (every released v1.0 / v1.1 model and tiny CPU presets) and
the `model:` section of params.yaml (ModelSpec: a preset plus fields to change). Torch-free.

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

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from vidtok.params import check_keys, from_mapping

# ================================================================================================= config

RegularizerKind = Literal["kl", "fsq", "vq", "lfq", "none"]

# ================================================================================================= config


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a VidTok architecture. The presets below fill it for released models."""

    causal: bool = True
    regularizer: RegularizerKind = "kl"
    # Latent channels. KL / none / VQ: free; FSQ: len(fsq_levels); LFQ: bits per token.
    z_channels: int = 4
    fsq_levels: tuple[int, ...] = ()
    codebook_size: int = 0  # VQ only; FSQ has prod(levels) codes, LFQ 2**z_channels
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    # Levels that resample. Defaults (reference code): spatial down at every level but the last, temporal
    # down at levels n-2 and n-3; the decoder mirrors with up at levels 1..n-1 and temporal up at 1 and 2.
    spatial_ds: tuple[int, ...] | None = None
    tempo_ds: tuple[int, ...] | None = None
    spatial_us: tuple[int, ...] | None = None
    tempo_us: tuple[int, ...] | None = None
    # Causal temporal padding: v1.1 repeats the first frame, v1.0 pads with zeros.
    causal_padding: Literal["replicate", "zeros"] = "replicate"
    # Causal temporal upsampling: v1.1 interpolates linearly (the first latent's frames on their own),
    # v1.0 repeats frames. Non-causal models always repeat.
    temporal_upsample: Literal["trilinear", "nearest"] = "trilinear"
    # Ablations of the paper (Table 2): plain strided/interpolating conv instead of AlphaBlender,
    # a fixed instead of a learnable blend, and 3D convolutions in every block.
    temporal_resampler: Literal["alphablender", "conv"] = "alphablender"
    alpha: Literal["learnable", "fixed"] = "learnable"
    alpha_init: float = 2.0  # sigmoid(2.0) = 0.881
    fully_3d: bool = False
    dropout: float = 0.0
    in_channels: int = 3
    # Not in the paper: "trivial" adds a residual around the trivial codec at the same compression (DC-AE's residual
    # autoencoding; vidtok.model.trivial.TrivialShortcut): the untrained model is that codec, training learns the rest.
    # The CPU profile uses it (benchmarks/README.md, "learning probes"); every released model is "none".
    shortcut: Literal["none", "trivial"] = "none"

    def __post_init__(self) -> None:
        n = len(self.ch_mult)
        if n < 1 or self.ch < 1 or min(self.ch_mult) < 1:
            raise ValueError(f"ch={self.ch} and ch_mult={self.ch_mult} must be positive")
        defaults = {
            "spatial_ds": tuple(range(0, n - 1)),
            "tempo_ds": tuple(i for i in (n - 2, n - 3) if i >= 0),
            "spatial_us": tuple(range(1, n)),
            "tempo_us": tuple(i for i in (1, 2) if i < n),
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, default if value is None else tuple(sorted(int(v) for v in value)))
        for name in ("ch_mult", "fsq_levels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in defaults:
            bad = [i for i in getattr(self, name) if not 0 <= i < n]
            if bad:
                raise ValueError(f"{name}={getattr(self, name)} names levels outside 0..{n - 1}")
        # Temporal resampling runs inside the spatial resampling step of a level (reference code).
        if not set(self.tempo_ds) <= set(self.spatial_ds):
            raise ValueError(f"tempo_ds={self.tempo_ds} must be a subset of spatial_ds={self.spatial_ds}")
        if not set(self.tempo_us) <= set(self.spatial_us):
            raise ValueError(f"tempo_us={self.tempo_us} must be a subset of spatial_us={self.spatial_us}")
        if len(self.tempo_ds) != len(self.tempo_us) or len(self.spatial_ds) != len(self.spatial_us):
            raise ValueError(
                "encoder and decoder must resample by the same factors: "
                f"spatial {self.spatial_ds} vs {self.spatial_us}, temporal {self.tempo_ds} vs {self.tempo_us}"
            )
        if self.regularizer not in ("kl", "fsq", "vq", "lfq", "none"):
            raise ValueError(f"regularizer must be one of kl, fsq, vq, lfq, none; got {self.regularizer!r}")
        if self.regularizer == "fsq":
            if not self.fsq_levels:
                raise ValueError("regularizer='fsq' needs fsq_levels, e.g. (8, 8, 8, 8, 8, 8) for 262,144 codes")
            object.__setattr__(self, "z_channels", len(self.fsq_levels))
        if self.regularizer == "vq" and self.codebook_size < 2:
            raise ValueError("regularizer='vq' needs codebook_size >= 2")
        if self.z_channels < 1:
            raise ValueError(f"z_channels must be >= 1, got {self.z_channels}")
        for name, allowed in (
            ("causal_padding", ("replicate", "zeros")),
            ("temporal_upsample", ("trilinear", "nearest")),
            ("temporal_resampler", ("alphablender", "conv")),
            ("alpha", ("learnable", "fixed")),
            ("shortcut", ("none", "trivial")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

        if self.shortcut == "trivial" and (self.regularizer not in ("kl", "none") or self.in_channels != 3):
            raise ValueError(
                f"shortcut='trivial' needs a continuous latent (kl or none) of RGB video, got regularizer="
                f"{self.regularizer!r}, in_channels={self.in_channels} (quantizing the samples breaks the shortcut)"
            )
        if self.shortcut == "trivial" and self.z_channels < 3:
            raise ValueError(
                f"shortcut='trivial' carries RGB samples in 3 latent channels; z_channels is {self.z_channels}"
            )

    @property
    def temporal_factor(self) -> int:
        return 2 ** len(self.tempo_ds)

    @property
    def spatial_factor(self) -> int:
        return 2 ** len(self.spatial_ds)

    @property
    def num_codes(self) -> int | None:
        """Codebook size of discrete regularizers (None for KL and none)."""
        if self.regularizer == "fsq":
            return math.prod(self.fsq_levels)
        if self.regularizer == "lfq":
            return 2**self.z_channels
        if self.regularizer == "vq":
            return self.codebook_size
        return None

    @property
    def compression(self) -> str:
        """'4x8x8' style temporal x height x width factors."""
        return f"{self.temporal_factor}x{self.spatial_factor}x{self.spatial_factor}"

    def latent_frames(self, num_frames: int) -> int:
        """Causal: ceil(T / t_factor) (17 -> 5 at factor 4). Non-causal: T / t_factor (16 -> 4)."""
        return -(-num_frames // self.temporal_factor)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, t, h, w) of the latent of a (T, H, W) clip."""
        s = self.spatial_factor
        return (self.z_channels, self.latent_frames(num_frames), height // s, width // s)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return from_mapping(cls, data, "model config keys", lambda v: tuple(v) if isinstance(v, list) else v)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ================================================================================================= presets

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


@dataclass(frozen=True)
class ModelSpec:
    """The ``model:`` section of params.yaml: a preset name plus ModelConfig fields to change (ablations, codebook
    sweeps)."""

    preset: str = "tiny_kl_causal_444"
    overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        items = self.overrides.items() if isinstance(self.overrides, Mapping) else self.overrides
        items = tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in items))
        object.__setattr__(self, "overrides", items)
        self.config()  # validates the preset name and every override

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelSpec:
        values = dict(values)
        preset = values.pop("preset", cls.preset)
        # model: takes the preset's name and the ModelConfig fields to change.
        check_keys(values, (f.name for f in fields(ModelConfig)), "model parameter(s)")
        return cls(preset=preset, overrides=tuple(values.items()))

    def config(self) -> ModelConfig:
        return derive(self.preset, **dict(self.overrides))

    @property
    def name(self) -> str:
        changes = ",".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.preset}[{changes}]" if changes else self.preset

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides}}
