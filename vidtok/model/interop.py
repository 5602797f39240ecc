"""Published weights in and out: microsoft/VidTok `.ckpt` files and diffusers' AutoencoderVidTok.

    vidtok convert --from upstream vidtok_kl_causal_488_4chn.ckpt --preset vidtok_kl_causal_488_4chn -o ckpt/kl488
    vidtok convert --from diffusers path/to/AutoencoderVidTok -o ckpt/kl488
    vidtok convert --to diffusers ckpt/kl488 -o path/to/diffusers_dir

Nothing here unpickles untrusted bytes: upstream `.ckpt` files are read with `torch.load(weights_only=True)`,
which only rebuilds tensors and plain containers. The project's own format (a `save_pretrained` folder:
safetensors + JSON) is in vidtok/model/vidtok.py; this module imports the model, nothing imports it back.

Parameter names are those of the reference code and of diffusers' AutoencoderVidTok (encoder./decoder. trees
are identical in all three), so importing is: keep encoder./decoder./regularization. keys, drop the training
loss (LPIPS trunk, discriminator, log-variance), check every name and shape against the target architecture.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from vidtok._files import atomic_folder
from vidtok.model.config import ModelConfig
from vidtok.model.vidtok import CheckpointError, VidTok, load_checked_state, save_safetensors

# Keys of a reference checkpoint that belong to the model (the rest is the training loss).
MODEL_PREFIXES = ("encoder.", "decoder.", "regularization.")

# ------------------------------------------------------------------------------------------------ upstream


def read_upstream_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model tensors of a microsoft/VidTok `.ckpt` (Lightning checkpoint, v1.0 or v1.1 layout).

    Checkpoints hold {"state_dict": {...}} with encoder./decoder. keys plus the training loss (loss.logvar,
    loss.perceptual_loss.*, loss.discriminator.*), which inference does not need and which is dropped here.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"{source}: file not found")
    try:
        blob = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise CheckpointError(
            f"{source}: not a loadable tensor checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a dict with a 'state_dict', got {type(blob).__name__}")
    kept = {k: v for k, v in state.items() if k.startswith(MODEL_PREFIXES) and torch.is_tensor(v)}
    if not kept:
        raise CheckpointError(f"{source}: no encoder./decoder. tensors found")
    return kept


def from_upstream(path: str | os.PathLike, preset: str) -> VidTok:
    """Load an upstream `.ckpt` into the named preset (the file does not say which architecture it is)."""
    model = VidTok.from_preset(preset)
    return load_checked_state(model, read_upstream_state_dict(path), str(path))


# ------------------------------------------------------------------------------------------------ diffusers


def config_from_diffusers(cfg: Mapping) -> ModelConfig:
    """Map a diffusers AutoencoderVidTok config.json to a ModelConfig.

    diffusers pads causal convolutions with copies of the first frame and upsamples time linearly (v1.1
    semantics) whatever weights it holds; FSQ there is always 8 levels per channel.
    """
    regularizer = cfg.get("regularizer", "kl")
    z = int(cfg.get("z_channels", 4))
    kwargs: dict = {}
    if regularizer == "fsq":
        n_levels = round(math.log(int(cfg.get("codebook_size", 262144)), 8))
        kwargs["fsq_levels"] = (8,) * n_levels
    elif regularizer != "kl":
        raise CheckpointError(f"diffusers regularizer {regularizer!r} is not supported (kl or fsq)")
    for key in ("spatial_ds", "spatial_us", "tempo_ds", "tempo_us"):
        if cfg.get(key) is not None:
            kwargs[key] = tuple(cfg[key])
    return ModelConfig(
        causal=bool(cfg.get("is_causal", True)),
        regularizer=regularizer,
        z_channels=z,
        ch=int(cfg.get("ch", 128)),
        ch_mult=tuple(cfg.get("ch_mult", (1, 2, 4, 4))),
        num_res_blocks=int(cfg.get("num_res_blocks", 2)),
        dropout=float(cfg.get("dropout", 0.0)),
        in_channels=int(cfg.get("in_channels", 3)),
        causal_padding="replicate",
        temporal_upsample="trilinear",
        **kwargs,
    )


def from_diffusers(path: str | os.PathLike, name: str = "diffusers") -> VidTok:
    """Load a diffusers `AutoencoderVidTok` folder (config.json + diffusion_pytorch_model.safetensors)."""
    folder = Path(path)
    config_file = folder / "config.json"
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not config_file.is_file() or not weights.is_file():
        raise CheckpointError(f"{folder}: expected config.json and diffusion_pytorch_model.safetensors")
    cfg = json.loads(config_file.read_text())
    if cfg.get("_class_name", "AutoencoderVidTok") != "AutoencoderVidTok":
        raise CheckpointError(f"{config_file}: class {cfg.get('_class_name')!r} is not AutoencoderVidTok")
    model = VidTok(config_from_diffusers(cfg), name=name)
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return load_checked_state(model, state, str(weights))


def diffusers_config(config: ModelConfig) -> dict:
    """The AutoencoderVidTok config of a model diffusers can represent; CheckpointError otherwise."""
    problems = []
    if config.regularizer not in ("kl", "fsq"):
        problems.append(f"regularizer {config.regularizer}")
    if config.regularizer == "fsq" and set(config.fsq_levels) != {8}:
        problems.append(f"FSQ levels {config.fsq_levels} (diffusers uses 8 per channel)")
    if config.causal and (config.causal_padding, config.temporal_upsample) != ("replicate", "trilinear"):
        problems.append("v1.0 causal semantics (zero padding, frame repeat): diffusers implements v1.1 only")
    if config.temporal_resampler != "alphablender" or config.alpha != "learnable" or config.fully_3d:
        problems.append("architecture ablations")
    if config.shortcut != "none":
        problems.append(f"the {config.shortcut} shortcut (not part of VidTok or diffusers)")
    if problems:
        raise CheckpointError("cannot export to diffusers AutoencoderVidTok: " + ", ".join(problems))
    return {
        "_class_name": "AutoencoderVidTok",
        "_diffusers_version": "0.42.1",
        "in_channels": config.in_channels,
        "out_channels": 3,
        "ch": config.ch,
        "ch_mult": list(config.ch_mult),
        "z_channels": config.z_channels,
        "double_z": config.regularizer == "kl",
        "num_res_blocks": config.num_res_blocks,
        "spatial_ds": list(config.spatial_ds),
        "spatial_us": list(config.spatial_us),
        "tempo_ds": list(config.tempo_ds),
        "tempo_us": list(config.tempo_us),
        "dropout": config.dropout,
        "regularizer": config.regularizer,
        "codebook_size": config.num_codes or 262144,
        "is_causal": config.causal,
    }


def to_diffusers(model: VidTok, path: str | os.PathLike) -> Path:
    """Export to a folder `AutoencoderVidTok.from_pretrained(path)` loads (same tensor names)."""
    cfg = diffusers_config(model.config)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    target = Path(path)
    with atomic_folder(target) as folder:
        save_safetensors(state, folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return target
