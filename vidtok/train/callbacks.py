"""What training writes while it runs (rank 0): metrics.csv, val.csv, the progress bar and the checkpoints.

python -c "from vidtok.train.callbacks import Recorder; help(Recorder)"
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from tqdm import tqdm

from vidtok._files import atomic_path
from vidtok.runs import CHECKPOINTS_DIR, METRICS_NAME, VAL_NAME
from vidtok.train.config import TrainConfig
from vidtok.train.module import TrainingError, TrainingModule


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
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        self._file = open(path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self._writer = csv.DictWriter(self._file, columns, restval="", extrasaction="raise")

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()

    def sync(self) -> None:
        """Put the rows written so far on disk (flush only hands them to the kernel: a power cut loses them)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
        self._file.close()


def weights_digest(module: TrainingModule) -> str:
    """sha256 over the model's state (parameters and buffers) and, with EMA, the averaged weights: what a rank would
    save as its result."""
    digest = hashlib.sha256()
    states = [module.model.state_dict()]
    if module.ema is not None:
        states.append(module.ema.model_state(module.model))
    for state in states:
        for name in sorted(state):
            digest.update(name.encode())
            digest.update(state[name].detach().to("cpu", torch.float64 if state[name].is_floating_point() else None)
                          .contiguous().numpy().tobytes())  # fmt: skip
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainHooks:
    """What the caller of training sees while it runs (rank 0): a progress bar, and hooks after every validation
    pass, `on_validation(step, val_psnr)` (a sweep's step-keyed pruner), and after every training step with its
    checkpoint written, `on_step(step)` (a sweep's heartbeat check). What a hook raises ends the run (status failed,
    checkpoints kept): a flag read in the loop rather than a signal, which Lightning would turn into sys.exit."""

    progress: bool = True
    on_validation: Callable[[int, float], None] | None = None
    on_step: Callable[[int], None] | None = None


@dataclass(frozen=True)
class RecorderHooks:
    """How the Recorder reaches the run it records: `save(module, step, final)` writes a checkpoint and returns its
    folder, `validate(module)` scores the val clips (val_psnr, val_ssim, trivial_psnr, trivial_ssim), and
    `on_checkpoint(path, step, final)` notes a checkpoint in the run record; `caller` are the TrainHooks of whoever
    started training."""

    save: Callable[[TrainingModule, int, bool], Path]
    validate: Callable[[TrainingModule], dict[str, float]] | None
    on_checkpoint: Callable[[Path, int, bool], None]
    caller: TrainHooks = TrainHooks()


class Recorder(L.Callback):
    """Rank 0's bookkeeping: metrics.csv, the progress bar, validation (val.csv) and checkpoints, on the schedule of
    `train` (steps, log_every, val_every, checkpoint_every, keep_checkpoints; see RecorderHooks for the calls out).

    `start_step` is where a resumed run goes on from, `columns` every column metrics.csv can hold, `world` the
    processes training together (clips/s counts the global batch)."""

    def __init__(
        self,
        run_dir: Path,
        train: TrainConfig,
        hooks: RecorderHooks,
        *,
        start_step: int = 0,
        columns: list[str],
        world: int = 1,
    ):
        self.run_dir, self.config, self.hooks = run_dir, train, hooks
        self.total, self.start, self.columns = train.steps, start_step, columns
        self.global_batch = train.batch_size * world
        self._csv: _Csv | None = None
        self._val: _Csv | None = None
        self._bar: Any = None
        self._t0 = 0.0
        self._last_val = -1
        self._last_ckpt = -1

    def on_train_start(self, trainer: L.Trainer, module: TrainingModule) -> None:
        if trainer.global_rank != 0:
            return
        keep = self.start
        self._csv = _Csv(self.run_dir / METRICS_NAME, self.columns, keep)
        val_columns = ["step", "val_psnr", "val_ssim", "trivial_psnr", "trivial_ssim"]
        self._val = _Csv(self.run_dir / VAL_NAME, val_columns, keep)
        self._bar = tqdm(
            total=self.total,
            initial=self.start,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            disable=not self.hooks.caller.progress,
            mininterval=1.0,
        )
        if self.start == 0:
            self._run_validation(module, 0)
        self._t0 = time.perf_counter()

    def _run_validation(self, module: TrainingModule, step: int) -> None:
        if self.hooks.validate is None or self._val is None or self._last_val == step:
            return
        self._last_val = step
        result = self.hooks.validate(module)
        self._val.write({"step": step, **result})
        module.last_logs = {**module.last_logs, "val_psnr": result["val_psnr"]}
        on_validation = self.hooks.caller.on_validation
        if on_validation is not None:  # e.g. a sweep's pruner: raising here stops the run (status failed)
            on_validation(step, result["val_psnr"])

    def on_train_batch_end(self, trainer: L.Trainer, module: TrainingModule, *args: Any) -> None:
        if trainer.global_rank != 0:
            return
        # Step time = from the end of the previous callback's step work to here: data loading, Lightning's loop,
        # the iteration and the previous row's logging. Validation and checkpoints are not counted.
        now = time.perf_counter()
        elapsed, self._t0 = now - self._t0, now
        step = module.completed_steps
        logs = dict(module.last_logs)
        logs["lr"] = self.config.lr * self.config.lr_scale(step - 1)  # the rate of the iteration that made `step`
        logs["step_time_s"] = elapsed
        logs["clips_per_s"] = self.global_batch / elapsed if elapsed > 0 else float("nan")
        if self._csv is not None and (step % self.config.log_every == 0 or step == self.total):
            self._csv.write({"step": step, **{k: v for k, v in logs.items() if k in self.columns}})
        if self._bar is not None:
            shown = {"loss": logs.get("loss_g"), "psnr": logs.get("psnr"), "clips/s": logs["clips_per_s"]}
            if "val_psnr" in module.last_logs:
                shown["val_psnr"] = module.last_logs["val_psnr"]
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if v is not None}, refresh=False)
            self._bar.update(1)
        paused = time.perf_counter()
        val_every, checkpoint_every = self.config.val_every, self.config.checkpoint_every
        if val_every and step % val_every == 0:
            self._run_validation(module, step)
        if checkpoint_every and step % checkpoint_every == 0 and step < self.total:
            self._checkpoint(module, step, final=False)
        self._t0 += time.perf_counter() - paused
        if self.hooks.caller.on_step is not None:
            self.hooks.caller.on_step(step)

    def _checkpoint(self, module: TrainingModule, step: int, final: bool) -> None:
        if self._last_ckpt == step and not final:
            return
        self._last_ckpt = step
        for handle in (self._csv, self._val):  # a checkpoint never refers to rows that are not on disk
            if handle is not None:
                handle.sync()
        path = self.hooks.save(module, step, final)
        module.last_checkpoint = str(path)
        self.hooks.on_checkpoint(path, step, final)
        self._prune()

    def _prune(self) -> None:
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        steps = sorted(p for p in (self.run_dir / CHECKPOINTS_DIR).glob("step_*") if p.is_dir())
        for old in steps[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def on_train_end(self, trainer: L.Trainer, module: TrainingModule) -> None:
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # DDP keeps the ranks' weights equal by construction; check it, so a divergence (a rank that skipped a
            # step, a buffer updated on one rank only) stops the run instead of saving rank 0's copy as the result.
            digests: list[str | None] = [None] * trainer.world_size
            dist.all_gather_object(digests, weights_digest(module))
            if len(set(digests)) != 1:
                raise TrainingError(f"DDP ranks ended with different weights: sha256 {[d[:12] for d in digests]}")
            module.rank_weights_sha256 = digests
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
