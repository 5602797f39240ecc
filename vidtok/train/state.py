"""Training state on disk: a checkpoint folder that lets a run resume exactly where it stopped.

    python -c "from vidtok.train.state import read_training_state; help(read_training_state)"

Exact resume rests on three rules:
1. The batch of iteration s is a pure function of (data seed, s, rank): vidtok.data.loader.StepBatches maps s to
   its epoch e = s // batches_per_epoch and takes its slice of the epoch draw (RandomClipSampler seeded with
   (seed, e)), so it never depends on how far a DataLoader iterator got before a crash.
2. The torch RNG (KL sampling noise, dropout) is reseeded at the start of every iteration from (seed, s, rank), so
   no generator state has to be carried across a restart (vidtok.train.module.step_seed).
3. Everything else that changes during training is saved at each checkpoint: model weights (a `save_pretrained`
   folder), both Adam states, logvar, the discriminator with its BatchNorm statistics, the LeCAM EMAs and the
   weight EMA (training_state.safetensors), and the step counter and param groups (training_state.json).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from vidtok._files import atomic_folder, sha256_file
from vidtok.model.vidtok import CheckpointError, VidTok, read_config, save_safetensors, write_weights
from vidtok.runs import CHECKPOINTS_DIR
from vidtok.train.losses import VidTokLoss

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
STATE_FORMAT = "vidtok-training-state"
STATE_VERSION = 1


def flatten_optimizer(prefix: str, state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    head = prefix + ".state."
    for name, value in tensors.items():
        if name.startswith(head):
            pid, key = name[len(head) :].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def training_tensors(
    loss: VidTokLoss, optimizers: Mapping[str, torch.optim.Optimizer], ema: torch.nn.Module | None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors for training_state.safetensors, JSON-able optimizer metadata)."""
    tensors = {f"loss.{k}": v.detach().cpu().contiguous() for k, v in loss.training_state_dict().items()}
    meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        t, m = flatten_optimizer(name, opt.state_dict())
        tensors.update(t)
        meta[name] = m
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    return tensors, meta


def write_checkpoint(
    folder: Path,
    model: VidTok,
    weights: Mapping[str, Tensor],
    metadata: dict[str, Any],
    tensors: Mapping[str, Tensor],
    state: dict[str, Any],
) -> Path:
    """A `save_pretrained` folder holding `weights` (the raw or the EMA weights of `model`) plus the training
    state, published in one atomic step (vidtok._files.atomic_folder)."""
    cpu_weights = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    with atomic_folder(folder) as tmp:
        write_weights(tmp, model.name, model.config.to_json(), cpu_weights, metadata)
        save_safetensors(tensors, tmp / STATE_TENSORS, metadata={"format": STATE_FORMAT})
        record = {
            **state,
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "weights_sha256": read_config(tmp)["weights_sha256"],
            "state_sha256": sha256_file(tmp / STATE_TENSORS),
        }
        (tmp / STATE_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return folder


def read_training_state(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(training_state.json record, tensors) of a checkpoint folder, sha256-checked; CheckpointError otherwise."""
    folder = Path(folder)
    record_file, tensor_file = folder / STATE_JSON, folder / STATE_TENSORS
    if not record_file.is_file() or not tensor_file.is_file():
        raise CheckpointError(f"{folder}: no training state ({STATE_JSON} + {STATE_TENSORS})")
    try:
        record = json.loads(record_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{record_file}: not valid JSON ({err})") from None
    if record.get("format") != STATE_FORMAT or record.get("version") != STATE_VERSION:
        raise CheckpointError(f"{record_file}: not a {STATE_FORMAT} v{STATE_VERSION} record")
    if sha256_file(tensor_file) != record.get("state_sha256"):
        raise CheckpointError(f"{tensor_file}: sha256 does not match {STATE_JSON} (file changed or corrupt)")
    try:
        with safe_open(str(tensor_file), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{tensor_file}: unreadable safetensors file ({err})") from None
    return record, tensors


def split_state(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    head = prefix + "."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def find_resume(run_dir: Path) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]] | None:
    """The newest readable step checkpoint of a run folder, or None."""
    folders = sorted((run_dir / CHECKPOINTS_DIR).glob("step_*"), reverse=True)
    for folder in folders:
        try:
            record, tensors = read_training_state(folder)
            return folder, record, tensors
        except CheckpointError as err:
            warnings.warn(f"skipping unreadable checkpoint {folder}: {err}", stacklevel=3)
    return None
