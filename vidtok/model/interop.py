"""Safe checkpoints: safetensors + JSON, importers for upstream VidTok and diffusers weights, a diffusers exporter.

    vidtok convert --from upstream vidtok_kl_causal_488_4chn.ckpt --preset vidtok_kl_causal_488_4chn -o ckpt/kl488
    vidtok convert --from diffusers path/to/AutoencoderVidTok -o ckpt/kl488
    vidtok convert --to diffusers ckpt/kl488 -o path/to/diffusers_dir

A `save_pretrained` folder holds `model.safetensors` (tensors only, plus the config in the header) and
`config.json` (format version, preset name, ModelConfig, free metadata, and the sha256 of the weights file, so a
changed byte is caught at load time). Nothing here unpickles untrusted bytes: upstream `.ckpt` files are read
with `torch.load(weights_only=True)`, which only rebuilds tensors and plain containers.

Parameter names are those of the reference code and of diffusers' AutoencoderVidTok (encoder./decoder. trees
are identical in all three), so importing is: keep encoder./decoder./regularization. keys, drop the training
loss (LPIPS trunk, discriminator, log-variance), check every name and shape against the target architecture.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from vidtok.model import ModelConfig, VidTok

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
_MODEL_PREFIXES = ("encoder.", "decoder.", "regularization.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: one line naming the file and the problem."""


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file`, with the same bytes for the same tensors and metadata in every process.

    The library serialises the header's metadata from a Rust HashMap, whose iteration order is seeded per
    process: the same checkpoint written by two runs differed in its header, so a re-run stage looked like a new
    output to DVC and to anyone comparing sha256s. Here the library writes the tensors without metadata (their
    header entries and data layout are deterministic) and the header is rewritten as sorted, compact JSON with the
    metadata added, padded with spaces to 8 bytes as the library does. Offsets in the header are relative to the
    end of the header, so its length may change freely."""
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"safetensors metadata must map str to str, got {dict(metadata)!r}")
    raw = memoryview(safetensors_bytes(dict(tensors)))
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(bytes(raw[8 : 8 + length]))
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(len(text).to_bytes(8, "little"))
        out.write(text)
        out.write(raw[8 + length :])


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ validation


def check_state_dict(model: VidTok, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first mismatching keys (missing, unexpected, wrong shape)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (first: {'; '.join(wrong[:3])})")
    if problems:
        raise CheckpointError(
            f"{source}: does not match {model.name} ({model.config.compression}, "
            f"{model.config.regularizer}): " + "; ".join(problems)
        )


def _load_into(model: VidTok, state: Mapping[str, torch.Tensor], source: str) -> VidTok:
    check_state_dict(model, state, source)
    model.load_state_dict(dict(state), strict=True)
    return model


# ------------------------------------------------------------------------------------------------ own format


def _atomic_dir_write(target: Path, write) -> None:
    """Write a folder under a temporary name next to `target`, then swap it in: no half-written checkpoint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_pretrained(model: VidTok, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save weights (safetensors) and config (JSON) to the folder `path`, atomically."""
    target = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config_json = model.config.to_json()

    def write(folder: Path) -> None:
        weights = folder / WEIGHTS_NAME
        save_safetensors(state, weights, metadata={"format": "vidtok", "name": model.name, "config": config_json})
        record = {
            "format": "vidtok",
            "format_version": FORMAT_VERSION,
            "name": model.name,
            "model": json.loads(config_json),
            "weights_sha256": sha256_file(weights),
            "metadata": metadata or {},
        }
        (folder / CONFIG_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    _atomic_dir_write(target, write)
    return target


def read_config(path: str | os.PathLike) -> dict:
    """The config.json record of a checkpoint folder (CheckpointError when absent or unreadable)."""
    folder = Path(path)
    config_file = folder / CONFIG_NAME
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    if not config_file.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_NAME} (not a vidtok checkpoint folder)")
    try:
        record = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_file}: not valid JSON ({err})") from None
    if record.get("format") != "vidtok" or "model" not in record:
        raise CheckpointError(f"{config_file}: not a vidtok checkpoint config (missing format/model)")
    return record


def load_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu", verify: bool = True) -> VidTok:
    """Build the model described by `path`/config.json and load `path`/model.safetensors into it."""
    folder = Path(path)
    record = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME}")
    if verify and record.get("weights_sha256") and sha256_file(weights) != record["weights_sha256"]:
        raise CheckpointError(f"{weights}: sha256 does not match config.json (file changed or corrupt)")
    try:
        config = ModelConfig.from_dict(record["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG_NAME}: invalid model config: {err}") from None
    model = VidTok(config, name=record.get("name", "custom"))
    try:
        state = {}
        with safe_open(str(weights), framework="pt", device=str(map_location)) as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                state[key] = f.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({err})") from None
    return _load_into(model.to(map_location), state, str(weights))


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
    kept = {k: v for k, v in state.items() if k.startswith(_MODEL_PREFIXES) and torch.is_tensor(v)}
    if not kept:
        raise CheckpointError(f"{source}: no encoder./decoder. tensors found")
    return kept


def from_upstream(path: str | os.PathLike, preset: str) -> VidTok:
    """Load an upstream `.ckpt` into the named preset (the file does not say which architecture it is)."""
    model = VidTok.from_preset(preset)
    return _load_into(model, read_upstream_state_dict(path), str(path))


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
    return _load_into(model, state, str(weights))


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

    def write(folder: Path) -> None:
        save_safetensors(state, folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    target = Path(path)
    _atomic_dir_write(target, write)
    return target
