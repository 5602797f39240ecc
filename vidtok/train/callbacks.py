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
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from tqdm import tqdm

from vidtok._files import atomic_path
from vidtok.runs import CHECKPOINTS_DIR, METRICS_NAME, VAL_NAME
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


class Recorder(L.Callback):
    """Rank 0's bookkeeping: metrics.csv, the progress bar, validation (val.csv) and checkpoints.

    `save(module, step, final)` writes a checkpoint; `validate(module)` returns (psnr, ssim) on the val clips;
    `on_checkpoint(path, step)` lets the caller update the run manifest; `on_validation(step, val_psnr)` is called
    after every validation pass (a sweep's step-keyed pruning hook; an exception it raises ends the run);
    `on_step(step)` after every training step, its checkpoint written (a sweep's heartbeat check: raising ends the
    run the same way, a flag read in the loop rather than a signal, which Lightning would turn into sys.exit)."""

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
        on_step: Callable[[int], None] | None = None,
    ):
        self.run_dir, self.total, self.start = run_dir, total_steps, start_step
        self.columns, self.log_every, self.val_every = columns, log_every, val_every
        self.checkpoint_every, self.keep = checkpoint_every, keep_checkpoints
        self.global_batch, self.progress = global_batch, progress
        self._save, self._validate, self._on_checkpoint = save, validate, on_checkpoint
        self._on_validation = on_validation
        self._on_step = on_step
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
        if self._on_step is not None:
            self._on_step(step)

    def _checkpoint(self, module: TrainingModule, step: int, final: bool) -> None:
        if self._last_ckpt == step and not final:
            return
        self._last_ckpt = step
        for handle in (self._csv, self._val):  # a checkpoint never refers to rows that are not on disk
            if handle is not None:
                handle.sync()
        path = self._save(module, step, final)
        module.last_checkpoint = str(path)
        self._on_checkpoint(path, step, final)
        self._prune()

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        steps = sorted(p for p in (self.run_dir / CHECKPOINTS_DIR).glob("step_*") if p.is_dir())
        for old in steps[: -self.keep]:
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
