"""Training configuration: TrainConfig, the params.yaml loader (`load_params`) and the checks run before training.

    vidtok stage stage1 --config params.yaml --run-dir runs/stage1
    vidtok stage stage2 --config params.yaml --run-dir runs/stage2 --init-from runs/stage1

Stages (paper section 3.3, Table 4): `stage1` trains the whole model at the low resolution; `stage2` loads a
stage-1 checkpoint, freezes the encoder and regularizer and trains the decoder (with logvar and discriminator) at
the high resolution; `onestage` trains everything at the high resolution (the staging study's baseline). Each
stage reads its own `train.<stage>` overrides (resolution, steps, batch size) from params.yaml.

params.yaml (`load_params`): sections `data:` (DataConfig), `model:` (`preset:` plus ModelConfig fields to change),
`train:` (TrainConfig, with optional `stage1:` / `stage2:` / `onestage:` sub-mappings) and `loss:` (LossConfig).
Named profiles live under `profiles: {NAME: {data: ..., model: ..., train: ..., loss: ...}}`; `profile: NAME`
(or the `profile` argument) picks one. Precedence, lowest first: dataclass defaults, the profile, the top-level
sections, then `--set section.key=value` overrides (values parsed as YAML). So `dvc exp run -S train.lr=1e-3`
edits the top-level `train:` section and wins over the profile.

Defaults are for from-scratch training of the tiny presets on a CPU: Adam lr 5e-4 (the best of 2e-4 ... 5e-3 in
the first few hundred steps of the tiny presets on the sample videos; 2e-3 and up stall near the mean image; the
reference ships 1e-5, its fine-tuning rate, and the paper's from-scratch rate is not published), betas (0.9, 0.999),
gradient-norm clipping at 20 for both optimizers (the reference's value), fp32 (bf16 autocast is much slower than
fp32 on CPUs without AVX512-BF16, such as this project's 2-core machine; use bf16-mixed on GPUs). The paper's
recipe is stage 1 at 128x128 for 50k iterations with batch 16, stage 2 at 256x256 for 30k with batch 8,
bf16-mixed, 17-frame clips at 3 fps.
vidtok/train/run.py runs a stage (`train`); vidtok/train/state.py holds the exact-resume design and
vidtok/runs.py the run folder layout.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from vidtok._files import sha256_file
from vidtok.data.config import DataConfig
from vidtok.model.config import ModelConfig, ModelSpec
from vidtok.model.vidtok import CheckpointError, read_config
from vidtok.params import (
    SECTIONS,
    check_bool,
    check_choice,
    check_int,
    check_number,
    from_mapping,
    resolve_sections,
)
from vidtok.runs import STAGES, RunRecordError, read_run_record
from vidtok.train.losses import LossConfig

__all__ = ["Params", "TrainConfig", "check_setup", "load_params", "params_info", "resolve_init"]

Stage = Literal["stage1", "stage2", "onestage"]
# Settings a resumed run may change: they do not change what the finished run computes.
RESUMABLE_CHANGES = frozenset(
    {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "val_every", "num_threads", "init_from"}
)


# ------------------------------------------------------------------------------------------------ configs


@dataclass(frozen=True)
class TrainConfig:
    """One training stage. Field names are the keys under ``train:`` (or ``train.<stage>:``) in params.yaml."""

    stage: Stage = "stage1"
    steps: int = 300  # optimisation iterations (one generator + one discriminator step each)
    batch_size: int = 2  # clips per device and iteration
    resolution: int = 64  # square training size; stage 1 low, stage 2 / onestage high
    fps: float = 3.0  # frame rate of the training clips (the paper: 3); val clips use data.val_fps
    lr: float = 5e-4
    lr_disc: float | None = None  # None: the same as lr (the reference)
    lr_warmup: int = 0  # iterations of linear warm-up of both rates (the reference: none, constant rates)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 20.0  # max gradient norm for both optimizers; 0 turns clipping off
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"  # auto: a GPU when there is one
    devices: int = 1
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"  # more than one device: DDP (gloo on CPU)
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default
    seed: int = 0  # model init and per-step noise; the clip order follows data.seed
    ema: bool = False
    ema_decay: float = 0.999
    gradient_checkpointing: bool = False
    init_from: str | None = None  # checkpoint folder or run folder; required by stage2
    # None: the stage's rule (stage 2 freezes encoder and regularizer, the paper's recipe; the others train all).
    # false in stage 2 is the paper's Table 4 "fix enc. no" row; true elsewhere needs init_from.
    freeze_encoder: bool | None = None
    checkpoint_every: int = 100  # iterations between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # step checkpoints kept (0: all); `final` always stays
    log_every: int = 1
    val_every: int = 50  # iterations between validation passes (0: only at the start and the end)
    val_clips: int = 8  # val clips per validation pass (0: all)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"train.stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        for name, low in (
            ("steps", 1),
            ("batch_size", 1),
            ("resolution", 8),
            ("devices", 1),
            ("num_threads", 0),
            ("lr_warmup", 0),
            ("seed", 0),
            ("checkpoint_every", 0),
            ("keep_checkpoints", 0),
            ("log_every", 1),
            ("val_every", 0),
            ("val_clips", 0),
        ):
            check_int(f"train.{name}", getattr(self, name), low)
        for name in ("fps", "lr", "lr_disc", "grad_clip"):
            if not (name == "lr_disc" and self.lr_disc is None):
                check_number(f"train.{name}", getattr(self, name))
        if not self.fps > 0 or not self.lr > 0:
            raise ValueError(f"train.fps and train.lr must be positive, got {self.fps!r} and {self.lr!r}")
        betas = tuple(self.betas) if isinstance(self.betas, list | tuple) else ()
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
            raise ValueError(f"train.betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        check_choice("train.precision", self.precision, ("32-true", "bf16-mixed"))
        check_choice("train.accelerator", self.accelerator, ("auto", "cpu", "gpu"))
        check_choice("train.strategy", self.strategy, ("auto", "ddp", "ddp_spawn"))
        for name in ("ema", "gradient_checkpointing"):
            check_bool(f"train.{name}", getattr(self, name))
        if self.freeze_encoder is not None and not isinstance(self.freeze_encoder, bool):
            raise ValueError(f"train.freeze_encoder must be true, false or null, got {self.freeze_encoder!r}")
        if not (isinstance(self.ema_decay, int | float) and 0 < self.ema_decay < 1):
            raise ValueError(f"train.ema_decay must be in (0, 1), e.g. 0.999, got {self.ema_decay!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"train.init_from must be a checkpoint or run folder path, got {self.init_from!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        return from_mapping(cls, values, "train parameter(s)")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @property
    def encoder_frozen(self) -> bool:
        """Whether this stage trains the decoder only (encoder and regularizer fixed)."""
        return self.stage == "stage2" if self.freeze_encoder is None else self.freeze_encoder

    @property
    def lr_d(self) -> float:
        return self.lr if self.lr_disc is None else self.lr_disc

    def lr_scale(self, step: int) -> float:
        """The factor on both learning rates in iteration `step` (0-based): a linear warm-up over the first
        lr_warmup iterations, (step + 1) / lr_warmup, then 1. A function of the step only, so a resumed run sets the
        same rates."""
        return min(1.0, (step + 1) / self.lr_warmup) if self.lr_warmup else 1.0


class Params(NamedTuple):
    data: DataConfig
    model: ModelSpec
    train: TrainConfig
    loss: LossConfig


# ------------------------------------------------------------------------------------------------ params.yaml


def load_params(
    path: str | os.PathLike[str] | None,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    *,
    stage: str | None = None,
) -> Params:
    """(DataConfig, ModelSpec, TrainConfig, LossConfig) from a params file, a profile and `--set` overrides.

    `stage` picks the `train.<stage>` sub-mapping (default: `train.stage`, else stage1). A missing file (None)
    gives the defaults; an unknown section, key or profile is a ValueError naming it. The merging itself is
    vidtok.params (torch-free, shared with the data commands and the dashboard)."""
    if path is not None and not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: params file not found")
    source = "params" if path is None else str(path)
    merged = resolve_sections(path, profile, overrides)
    train_values = merged["train"]
    chosen = stage or train_values.get("stage") or "stage1"
    if chosen not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {chosen!r}")
    for key in STAGES:
        if key in train_values and not isinstance(train_values[key], Mapping):
            raise ValueError(f"{source}: train.{key} must be a mapping of train fields for that stage")
    common = {k: v for k, v in train_values.items() if k not in STAGES}
    train_cfg = TrainConfig.from_dict({**common, **train_values.get(chosen, {}), "stage": chosen})
    return Params(
        data=DataConfig.from_dict(merged["data"]),
        model=ModelSpec.from_dict(merged["model"]),
        train=train_cfg,
        loss=LossConfig.from_dict(merged["loss"]),
    )


def params_info(path: str | os.PathLike[str] | None, profile: str | None, overrides: Sequence[str]) -> dict[str, Any]:
    """Where a run's configs came from, for the run record."""
    return {
        "file": None if path is None else str(path),
        "sha256": sha256_file(path) if path is not None and os.path.isfile(path) else None,
        "profile": profile,
        "overrides": list(overrides),
    }


# ------------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class InitSource:
    """A checkpoint to start from: its folder and, when it lies in a run folder, that run."""

    checkpoint: Path
    run_dir: Path | None
    record: dict[str, Any]


def resolve_init(path: str | os.PathLike[str]) -> InitSource:
    """A checkpoint folder, or a run folder (its final checkpoint), as an InitSource; CheckpointError otherwise."""
    folder = Path(path)
    if (folder / "run.json").is_file():
        try:
            run_record = read_run_record(folder)
        except RunRecordError as err:
            raise CheckpointError(f"{folder}: {err}") from None
        if run_record.status != "completed" or run_record.final_checkpoint is None:
            raise CheckpointError(f"{folder}: run is {run_record.status}, it has no final checkpoint to start from")
        return InitSource(
            folder / run_record.final_checkpoint, folder, read_config(folder / run_record.final_checkpoint)
        )
    record = read_config(folder)
    run_dir = folder.parent.parent if (folder.parent.parent / "run.json").is_file() else None
    return InitSource(folder, run_dir, record)


def _nearest(value: int, factor: int) -> str:
    low = value // factor * factor
    return f"{low} or {low + factor}" if low else str(factor)


def check_setup(
    data: DataConfig, model: ModelSpec, config: TrainConfig, loss: LossConfig, init: InitSource | None
) -> ModelConfig:
    """Every cross-config rule, checked before anything is computed; ValueError / CheckpointError naming the fix."""
    cfg = model.config()
    s, tf, t = cfg.spatial_factor, cfg.temporal_factor, data.clip_frames
    if config.resolution % s:
        raise ValueError(
            f"train.resolution {config.resolution} is not divisible by {model.preset}'s spatial factor {s} "
            f"(try {_nearest(config.resolution, s)})"
        )
    if not cfg.causal and t % tf:
        raise ValueError(
            f"data.clip_frames {t}: the non-causal {model.preset} needs clips of a multiple of its temporal factor "
            f"{tf} frames (try {_nearest(t, tf)})"
        )
    if cfg.causal and (t - 1) % tf:
        warnings.warn(
            f"data.clip_frames {t} is not 1 + k*{tf}: the causal model pads {(-t) % tf} copies of frame 0 in front",
            stacklevel=2,
        )
    if config.stage == "stage2" and init is None:
        raise ValueError(
            "stage2 trains the decoder of a stage-1 model: set train.init_from (or --init-from) to the stage-1 "
            "checkpoint or run folder"
        )
    if config.encoder_frozen and init is None:
        raise ValueError(
            "train.freeze_encoder: a frozen encoder must come from a trained model; set train.init_from "
            "(or --init-from), or leave freeze_encoder unset"
        )
    if init is not None:
        try:
            have = ModelConfig.from_dict(init.record["model"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{init.checkpoint}: invalid model config ({err})") from None
        if have != cfg:
            diff = sorted(k for k, v in cfg.to_dict().items() if have.to_dict().get(k) != v)
            raise CheckpointError(
                f"{init.checkpoint}: checkpoint of another model ({init.record.get('name')}, {have.compression}, "
                f"{have.regularizer}) than model {model.name} ({cfg.compression}, {cfg.regularizer}); "
                f"differing fields: {', '.join(diff)}"
            )
    if loss.disc_type == "2d" and config.resolution < 3 * 2**loss.disc_layers:
        raise ValueError(
            f"train.resolution {config.resolution} is too small for a {loss.disc_layers}-layer 2D PatchGAN "
            f"(needs >= {3 * 2**loss.disc_layers}); lower loss.disc_layers or set loss.disc_type=none"
        )
    return cfg


def config_snapshot(data: DataConfig, model: ModelSpec, config: TrainConfig, loss: LossConfig) -> dict[str, Any]:
    """The four configs as plain dicts: what a run folder records and compares on resume."""
    data_dict = dataclasses.asdict(data)
    for key, value in data_dict.items():
        if isinstance(value, tuple):
            data_dict[key] = list(value)
    return {"data": data_dict, "model": model.to_dict(), "train": config.to_dict(), "loss": loss.to_dict()}


# How clips are read, not which clips (the cache is bit-identical to decoding; data.fps lists the clip sets built);
# the clips themselves are the data identity (vidtok.data.loader.clips_sha256), not their paths on this machine.
DATA_READ_SETTINGS = frozenset(
    {"num_workers", "use_cache", "cache_resolutions", "fps", "data_dir", "manifest", "clips_dir", "cache_dir"}
)


def computing_config(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a config snapshot that change what a run computes: all but the resumable train settings
    (RESUMABLE_CHANGES) and how the data is read (DATA_READ_SETTINGS). Its sha256 is the run's params identity."""
    out: dict[str, Any] = {}
    for section in SECTIONS:
        values = dict(snapshot.get(section, {}))
        skip = RESUMABLE_CHANGES if section == "train" else DATA_READ_SETTINGS if section == "data" else ()
        out[section] = {k: v for k, v in values.items() if k not in skip}
    return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'section.key: old -> new' for every setting that changes what a run computes (`computing_config`)."""
    a_all, b_all = computing_config(saved), computing_config(current)
    out = []
    for section in SECTIONS:
        a, b = a_all[section], b_all[section]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out
