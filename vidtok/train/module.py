"""The training loop behind `vidtok.training.train`: the LightningModule, step-indexed data, weight EMA, the
resumable training state and the callback that logs, validates and checkpoints.

    python -c "from vidtok.training_loop import StepBatches; help(StepBatches)"

Exact resume rests on three rules:
1. The batch of iteration s is a pure function of (data seed, s, rank): `StepBatches` maps s to its epoch
   e = s // batches_per_epoch and takes its slice of the data module's epoch draw (RandomClipSampler seeded with
   (seed, e)), so it never depends on how far a DataLoader iterator got before a crash.
2. The torch RNG (KL sampling noise, dropout) is reseeded at the start of every iteration from (seed, s, rank), so
   no generator state has to be carried across a restart.
3. Everything else that changes during training is saved at each checkpoint: model weights (safetensors via
   `save_pretrained`), both Adam states, logvar, the discriminator with its BatchNorm statistics, the LeCAM EMAs
   and the weight EMA (training_state.safetensors), and the step counter and param groups (training_state.json).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vidtok.checkpoints import CheckpointError, read_config, save_pretrained, save_safetensors, sha256_file
from vidtok.losses import LossConfig, VidTokLoss
from vidtok.model import VidTok

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
STATE_FORMAT = "vidtok-training-state"
STATE_VERSION = 1


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss or gradients): one line with the step and the last good checkpoint."""


# ------------------------------------------------------------------------------------------------ data


class TensorClips(Dataset):
    """In-memory clips (N, 3, T, H, W) in [-1, 1]; indexed like ClipDataset by a row or a (row, seed) pair."""

    def __init__(self, clips: Tensor):
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise ValueError(f"expected clips (N, 3, T, H, W), got {tuple(clips.shape)}")
        self.clips = clips

    def __len__(self) -> int:
        return self.clips.shape[0]

    def __getitem__(self, item: int | tuple[int, int]) -> Tensor:
        row = item if isinstance(item, int | np.integer) else item[0]
        return self.clips[int(row)]


class StepBatches(Dataset):
    """Item i is this rank's batch for iteration `start + i`, built from (row, seed) pairs of the data module's
    epoch draw: epoch e is `RandomClipSampler(len(dataset), samples_per_epoch, seed)` at `set_epoch(e)`, cut into
    batches of batch_size x world_size (an incomplete tail is dropped, as the data module's loader does), and rank
    r takes the r-th slice of each. Use with `DataLoader(batch_size=None)`: items are already batches."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        samples_per_epoch: int = 0,
    ):
        from vidtok.data_module import RandomClipSampler

        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.global_batch = batch_size * world_size
        self.samples_per_epoch = max(samples_per_epoch or len(dataset), self.global_batch)  # type: ignore[arg-type]
        self.batches_per_epoch = self.samples_per_epoch // self.global_batch
        self._sampler = RandomClipSampler(len(dataset), self.samples_per_epoch, seed=seed)  # type: ignore[arg-type]
        self._epoch: tuple[int, list[tuple[int, int]]] | None = None

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def items(self, step: int) -> list[tuple[int, int]]:
        """The (row, seed) pairs of this rank's batch at iteration `step`."""
        epoch, j = divmod(step, self.batches_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._sampler.set_epoch(epoch)
            self._epoch = (epoch, list(self._sampler))
        lo = j * self.global_batch + self.rank * self.batch_size
        return self._epoch[1][lo : lo + self.batch_size]

    def __getitem__(self, i: int) -> Tensor:
        from vidtok.data_module import collate_clips  # numpy stacking: no torch thread-pool stall in the loader

        return collate_clips([self.dataset[item] for item in self.items(self.start + i)])


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of iteration `step` on `rank`: independent streams per (seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------------ EMA


class ModelEMA(nn.Module):
    """Exponential moving average of the trained parameters, as buffers (so they move with the module).

    decay_t = min(decay, (1 + n) / (10 + n)) after n updates (LitEma's warm-up, used by the reference code)."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self._params = [p for p in model.parameters() if p.requires_grad]
        for name, p in zip(self.names, self._params):
            self.register_buffer(name.replace(".", "__"), p.detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    def shadows(self) -> list[Tensor]:
        return [getattr(self, n.replace(".", "__")) for n in self.names]

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        n = float(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(self.shadows(), [p.detach() for p in self._params], 1.0 - decay)

    def model_state(self, model: nn.Module) -> dict[str, Tensor]:
        """The model's state dict with every averaged parameter replaced by its EMA."""
        state = dict(model.state_dict())
        for name, shadow in zip(self.names, self.shadows()):
            state[name] = shadow
        return state


# ------------------------------------------------------------------------------------------------ state files


def _flatten_optimizer(prefix: str, state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(prefix: str, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
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
    loss: VidTokLoss, optimizers: Mapping[str, torch.optim.Optimizer], ema: ModelEMA | None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors for training_state.safetensors, JSON-able optimizer metadata)."""
    tensors = {f"loss.{k}": v.detach().cpu().contiguous() for k, v in loss.training_state_dict().items()}
    meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(name, opt.state_dict())
        tensors.update(t)
        meta[name] = m
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    return tensors, meta


class _Weights:
    """What `save_pretrained` reads from a model (config, name, state dict), holding other weights (the EMA)."""

    def __init__(self, model: VidTok, state: Mapping[str, Tensor]):
        self.config, self.name, self._state = model.config, model.name, state

    def state_dict(self) -> Mapping[str, Tensor]:
        return self._state


def write_checkpoint(
    folder: Path,
    model: VidTok,
    weights: Mapping[str, Tensor],
    metadata: dict[str, Any],
    tensors: Mapping[str, Tensor],
    state: dict[str, Any],
) -> Path:
    """A `save_pretrained` folder holding `weights` plus the training state, published by one rename."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_pretrained(_Weights(model, weights), tmp, metadata=metadata)  # type: ignore[arg-type]
        save_safetensors(tensors, tmp / STATE_TENSORS, metadata={"format": STATE_FORMAT})
        record = {
            **state,
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "weights_sha256": read_config(tmp)["weights_sha256"],
            "state_sha256": sha256_file(tmp / STATE_TENSORS),
        }
        (tmp / STATE_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


# ------------------------------------------------------------------------------------------------ the module


def log_columns(model: VidTok, loss: LossConfig) -> list[str]:
    """Every column metrics.csv can hold for this model and loss (fixed up front, so rows line up)."""
    cols = ["step", "loss_g", "nll", "l1", "logvar", "psnr", "grad_norm_g", "lr", "clips_per_s", "step_time_s"]
    if loss.perceptual:
        cols.append(loss.perceptual_name)
    cols += {
        "kl": ["kl"],
        "fsq": ["entropy", "commitment", "entropy_weight"],
        "lfq": ["entropy", "commitment", "entropy_weight"],
        "vq": ["codebook", "commitment"],
        "none": [],
    }[model.config.regularizer]
    if loss.disc_type != "none":
        cols += ["g_loss", "d_weight", "loss_d", "d_hinge", "logits_real", "logits_fake", "grad_norm_d"]
        if loss.lecam_weight > 0:
            cols.append("lecam")
    return cols


def last_layer(model: VidTok) -> Tensor:
    """The decoder's last conv weight, where the adaptive GAN weight is measured (causal convs wrap a `.conv`)."""
    conv = model.decoder.conv_out
    return getattr(conv, "conv", conv).weight


class TrainingModule(L.LightningModule):
    """Manual optimisation: per batch one generator step (encoder, decoder, logvar), then one discriminator step.

    `freeze_encoder` (stage 2) runs the encoder and regularizer without gradients and leaves them out of the
    optimizer. `resume` holds a training state to restore in `configure_optimizers`. `make_loader(rank, world)`
    builds the step-indexed DataLoader once the strategy knows the rank."""

    def __init__(
        self,
        model: VidTok,
        loss: VidTokLoss,
        *,
        lr: float,
        lr_disc: float,
        betas: tuple[float, float],
        grad_clip: float,
        seed: int,
        freeze_encoder: bool,
        ema_decay: float | None,
        lr_warmup: int = 0,
        start_step: int = 0,
        resume: tuple[dict[str, Any], dict[str, Tensor]] | None = None,
        make_loader: Callable[[int, int], DataLoader] | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model, self.loss = model, loss
        self.lr, self.lr_disc, self.betas, self.grad_clip = lr, lr_disc, tuple(betas), grad_clip
        self.lr_warmup = lr_warmup
        self.seed, self.freeze_encoder = seed, freeze_encoder
        if freeze_encoder:
            model.encoder.requires_grad_(False)
            model.regularization.requires_grad_(False)
        self.ema = ModelEMA(model, ema_decay) if ema_decay is not None else None
        self.completed_steps = start_step
        self._resume = resume
        self._make_loader = make_loader
        self.last_logs: dict[str, float] = {}
        self.last_checkpoint: str | None = None
        if resume is not None:
            self.loss.load_training_state_dict(split_state(resume[1], "loss"))
            if self.ema is not None:
                self.ema.load_state_dict(split_state(resume[1], "ema"))

    def train(self, mode: bool = True) -> TrainingModule:
        super().train(mode)
        if self.freeze_encoder:
            self.model.encoder.eval()  # frozen: no dropout noise in features the decoder learns from
        return self

    def generator_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.loss.logvar.requires_grad:
            params.append(self.loss.logvar)
        return params

    def configure_optimizers(self) -> Any:
        opt_g = torch.optim.Adam(self.generator_parameters(), lr=self.lr, betas=self.betas)
        opts = [opt_g]
        if self.loss.discriminator is not None:
            opts.append(torch.optim.Adam(self.loss.discriminator.parameters(), lr=self.lr_disc, betas=self.betas))
        if self._resume is not None:
            record, tensors = self._resume
            for name, opt in zip(("opt_g", "opt_d"), opts):
                if name in record["optimizers"]:
                    opt.load_state_dict(_unflatten_optimizer(name, tensors, record["optimizers"][name]))
        return opts

    def train_dataloader(self) -> DataLoader:
        assert self._make_loader is not None, "TrainingModule needs make_loader to train under a Trainer"
        return self._make_loader(self.global_rank, self.trainer.world_size)

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        return {name: getattr(o, "optimizer", o) for name, o in zip(("opt_g", "opt_d"), opts)}

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        self.last_logs = self.iteration(batch, opts[0], opts[1] if len(opts) > 1 else None, self.manual_backward)

    def _finite(self, value: Tensor, what: str, step: int) -> None:
        if not bool(torch.isfinite(value).all()):
            where = self.last_checkpoint or "none yet (the run dies before its first checkpoint)"
            raise TrainingError(
                f"non-finite {what} ({float(value.detach())}) at step {step}; last good checkpoint: {where}"
            )

    def _clip(self, params: Sequence[Tensor], what: str, step: int) -> Tensor:
        grads = [p for p in params if p.grad is not None]
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(grads, max_norm) if grads else torch.zeros(())
        self._finite(norm, f"{what} gradient norm", step)
        return norm

    def iteration(
        self, x: Tensor, opt_g: Any, opt_d: Any | None, backward: Callable[[Tensor], None]
    ) -> dict[str, float]:
        """One optimisation iteration on batch x (B, 3, T, H, W); also used without a Trainer by the benchmark."""
        step = self.completed_steps
        torch.manual_seed(step_seed(self.seed, step, self.global_rank))
        model, loss = self.model, self.loss
        disc = loss.discriminator
        # Generator step. The discriminator judges the reconstruction but is not updated by this loss.
        if disc is not None:
            disc.requires_grad_(False)
        if self.freeze_encoder:
            with torch.no_grad():
                encoded = model.encode(x)
            recon = model.decode(encoded.latents, encoded.num_frames)
        else:
            recon, encoded = model(x)
        loss_g, logs = loss.generator_loss(
            x, recon, encoded.aux, step, last_layer(model), include_aux=not self.freeze_encoder
        )
        self._finite(loss_g, "generator loss", step)
        # Linear warm-up of both learning rates over the first lr_warmup iterations: a function of the step only,
        # so a resumed run sets the same rates.
        scale = min(1.0, (step + 1) / self.lr_warmup) if self.lr_warmup else 1.0
        for opt, base in ((opt_g, self.lr), (opt_d, self.lr_disc)):
            for group in getattr(opt, "param_groups", ()):
                group["lr"] = base * scale
        opt_g.zero_grad(set_to_none=True)
        backward(loss_g)
        logs["grad_norm_g"] = self._clip(self.generator_parameters(), "generator", step)
        opt_g.step()
        if self.ema is not None:
            self.ema.update()
        if disc is not None:
            disc.requires_grad_(True)
        # Discriminator step on the same (detached) reconstruction, from disc_start on.
        if opt_d is not None and disc is not None and loss.config.gan_active(step):
            loss_d, logs_d = loss.discriminator_loss(x, recon, step)
            self._finite(loss_d, "discriminator loss", step)
            opt_d.zero_grad(set_to_none=True)
            backward(loss_d)
            logs_d["grad_norm_d"] = self._clip(list(disc.parameters()), "discriminator", step)
            opt_d.step()
            logs.update(logs_d)
        with torch.no_grad():
            mse = (x.float().clamp(-1, 1) - recon.detach().float().clamp(-1, 1)).div(2).pow(2).mean()
            logs["psnr"] = -10 * torch.log10(mse.clamp_min(1e-10))
        self.completed_steps = step + 1
        return {k: float(v) for k, v in logs.items()}


# ------------------------------------------------------------------------------------------------ the recorder


class _Csv:
    """Append-only CSV with a fixed header; rows past `keep_until` are dropped when (re)opened for a resume."""

    def __init__(self, path: Path, columns: list[str], keep_until: int | None):
        self.path, self.columns = path, columns
        rows: list[dict[str, str]] = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames == columns:
                    for row in reader:
                        try:
                            if int(row["step"]) <= keep_until:
                                rows.append(row)
                        except (TypeError, ValueError):
                            continue  # a row cut off by a kill
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self._file = open(path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self._writer = csv.DictWriter(self._file, columns, restval="", extrasaction="raise")

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Recorder(L.Callback):
    """Rank 0's bookkeeping: metrics.csv, the progress bar, validation (val.csv) and checkpoints.

    `save(module, step, final)` writes a checkpoint; `validate(module)` returns (psnr, ssim) on the val clips;
    `on_checkpoint(path, step)` lets the caller update the run manifest; `on_validation(step, val_psnr)` is called
    after every validation pass (a sweep's step-keyed pruning hook; an exception it raises ends the run)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        total_steps: int,
        start_step: int,
        columns: list[str],
        log_every: int,
        val_every: int,
        checkpoint_every: int,
        keep_checkpoints: int,
        global_batch: int,
        save: Callable[[TrainingModule, int, bool], Path],
        validate: Callable[[TrainingModule], dict[str, float]] | None,
        on_checkpoint: Callable[[Path, int, bool], None],
        progress: bool,
        on_validation: Callable[[int, float], None] | None = None,
    ):
        self.run_dir, self.total, self.start = run_dir, total_steps, start_step
        self.columns, self.log_every, self.val_every = columns, log_every, val_every
        self.checkpoint_every, self.keep = checkpoint_every, keep_checkpoints
        self.global_batch, self.progress = global_batch, progress
        self._save, self._validate, self._on_checkpoint = save, validate, on_checkpoint
        self._on_validation = on_validation
        self._csv: _Csv | None = None
        self._val: _Csv | None = None
        self._bar: Any = None
        self._t0 = 0.0
        self._last_val = -1
        self._last_ckpt = -1

    def on_train_start(self, trainer: L.Trainer, module: TrainingModule) -> None:
        if trainer.global_rank != 0:
            return
        from tqdm import tqdm

        keep = self.start
        self._csv = _Csv(self.run_dir / "metrics.csv", self.columns, keep)
        val_columns = ["step", "val_psnr", "val_ssim", "trivial_psnr", "trivial_ssim"]
        self._val = _Csv(self.run_dir / "val.csv", val_columns, keep)
        self._bar = tqdm(
            total=self.total,
            initial=self.start,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            disable=not self.progress,
            mininterval=1.0,
        )
        if self.start == 0:
            self._run_validation(module, 0)
        self._t0 = time.perf_counter()

    def _run_validation(self, module: TrainingModule, step: int) -> None:
        if self._validate is None or self._val is None or self._last_val == step:
            return
        self._last_val = step
        result = self._validate(module)
        self._val.write({"step": step, **result})
        module.last_logs = {**module.last_logs, "val_psnr": result["val_psnr"]}
        if self._on_validation is not None:  # e.g. a sweep's pruner: raising here stops the run (status failed)
            self._on_validation(step, result["val_psnr"])

    def on_train_batch_end(self, trainer: L.Trainer, module: TrainingModule, *args: Any) -> None:
        if trainer.global_rank != 0:
            return
        # Step time = from the end of the previous callback's step work to here: data loading, Lightning's loop,
        # the iteration and the previous row's logging. Validation and checkpoints are not counted.
        now = time.perf_counter()
        elapsed, self._t0 = now - self._t0, now
        step = module.completed_steps
        logs = dict(module.last_logs)
        logs["lr"] = module.lr * (min(1.0, step / module.lr_warmup) if module.lr_warmup else 1.0)
        logs["step_time_s"] = elapsed
        logs["clips_per_s"] = self.global_batch / elapsed if elapsed > 0 else float("nan")
        if self._csv is not None and (step % self.log_every == 0 or step == self.total):
            self._csv.write({"step": step, **{k: v for k, v in logs.items() if k in self.columns}})
        if self._bar is not None:
            shown = {"loss": logs.get("loss_g"), "psnr": logs.get("psnr"), "clips/s": logs["clips_per_s"]}
            if "val_psnr" in module.last_logs:
                shown["val_psnr"] = module.last_logs["val_psnr"]
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if v is not None}, refresh=False)
            self._bar.update(1)
        paused = time.perf_counter()
        if self.val_every and step % self.val_every == 0:
            self._run_validation(module, step)
        if self.checkpoint_every and step % self.checkpoint_every == 0 and step < self.total:
            self._checkpoint(module, step, final=False)
        self._t0 += time.perf_counter() - paused

    def _checkpoint(self, module: TrainingModule, step: int, final: bool) -> None:
        if self._last_ckpt == step and not final:
            return
        self._last_ckpt = step
        path = self._save(module, step, final)
        module.last_checkpoint = str(path)
        self._on_checkpoint(path, step, final)
        self._prune()

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        steps = sorted(p for p in (self.run_dir / "checkpoints").glob("step_*") if p.is_dir())
        for old in steps[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def on_train_end(self, trainer: L.Trainer, module: TrainingModule) -> None:
        if trainer.global_rank != 0:
            return
        step = module.completed_steps
        self._run_validation(module, step)
        self._checkpoint(module, step, final=True)
        self.close()

    def close(self) -> None:
        for handle in (self._csv, self._val):
            if handle is not None:
                handle.close()
        self._csv = self._val = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.close()


def stack_clips(dataset: Dataset, count: int) -> Tensor:
    """The first `count` clips of a dataset (all when count is 0) as one (N, 3, T, H, W) tensor."""
    n = len(dataset) if count <= 0 else min(count, len(dataset))  # type: ignore[arg-type]
    return torch.stack([dataset[i] for i in range(n)]) if n else torch.zeros(0)


def batched(x: Tensor, size: int) -> Iterable[Tensor]:
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]
