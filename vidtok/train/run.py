"""One training run: setup (checks, model, loss, resume, data, manifest), the Lightning fit, and its bookkeeping.

    python -c "from vidtok.training import train; help(train)"   # the entry point that uses this module

`Run` is picklable on purpose: under `ddp_spawn` Lightning pickles the trainer, and with it the callbacks that
call back into the run (checkpoints, validation, manifest updates) from the rank-0 worker.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vidtok import metrics as M
from vidtok.checkpoints import CheckpointError, load_pretrained, read_config, sha256_file
from vidtok.data import DataConfig
from vidtok.losses import LossConfig, VidTokLoss
from vidtok.model import VidTok
from vidtok.runs import (
    CHECKPOINTS_DIR,
    FINAL_NAME,
    METRICS_NAME,
    VAL_NAME,
    RunManifestError,
    device_info,
    now_iso,
    read_manifest,
    write_manifest,
)
from vidtok.training import (
    InitSource,
    ModelSpec,
    TrainConfig,
    TrainResult,
    _accelerator,
    _find_resume,
    _quiet_lightning,
    _rank,
    _snapshot,
    _strategy,
    check_setup,
    config_differences,
    make_run_id,
    new_manifest,
    read_csv_rows,
    resolve_init,
)
from vidtok.training_loop import (
    Recorder,
    StepBatches,
    TrainingModule,
    batched,
    log_columns,
    read_training_state,
    split_state,
    stack_clips,
    training_tensors,
    write_checkpoint,
)

log = logging.getLogger(__name__)


class LoaderFactory:
    """Builds the step-indexed DataLoader for a rank (a class, not a closure, so ddp_spawn can pickle it)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, start: int, stop: int, spe: int, workers: int):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.start, self.stop, self.samples_per_epoch, self.workers = start, stop, spe, workers

    def __call__(self, rank: int, world_size: int) -> DataLoader:
        from vidtok.data_module import ForkSafeDataLoader, _worker_init

        steps = StepBatches(
            self.dataset,
            self.batch_size,
            self.seed,
            self.start,
            self.stop,
            rank=rank,
            world_size=world_size,
            samples_per_epoch=self.samples_per_epoch,
        )
        # The data layer's loader: workers forked after decoding in this process must not free its PyAV garbage.
        return ForkSafeDataLoader(
            steps,
            batch_size=None,  # items are whole batches
            shuffle=False,
            num_workers=self.workers,
            worker_init_fn=_worker_init if self.workers else None,
            pin_memory=torch.cuda.is_available(),
        )


def _samples_per_epoch(data: DataConfig, dataset: Dataset, batch_size: int) -> int:
    """The data module's epoch length: data.samples_per_epoch, else the train split's non-overlapping clips."""
    if data.samples_per_epoch:
        return data.samples_per_epoch
    numbers = getattr(dataset, "clip_numbers", None)
    if numbers is None:
        return max(len(dataset), batch_size)  # type: ignore[arg-type]
    step = -(-data.clip_frames // data.clip_stride)
    return max(int(np.count_nonzero(np.asarray(numbers) % step == 0)), batch_size)


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


class Run:
    """Everything one `train` call needs after setup; `execute` fits and returns the result."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    # ---------------------------------------------------------------------------------------- setup

    @classmethod
    def prepare(
        cls,
        data: DataConfig,
        model: ModelSpec,
        config: TrainConfig,
        loss: LossConfig,
        run_dir: Path,
        *,
        params: Mapping[str, Any] | None,
        datasets: tuple[Any, Any] | None,
        progress: bool,
        on_change: str = "error",
        on_validation: Callable[[int, float], None] | None = None,
    ) -> Run:
        rank = _rank()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        init = resolve_init(config.init_from) if config.init_from else None
        model_cfg = check_setup(data, model, config, loss, init)
        accelerator = _accelerator(config)
        torch.manual_seed(config.seed)
        vt = VidTok(model_cfg, name=model.name)
        vt.encoder.gradient_checkpointing = config.gradient_checkpointing
        vt.decoder.gradient_checkpointing = config.gradient_checkpointing
        loss_module = VidTokLoss(loss)  # MissingWeightsError here, before any data or compute
        loss_module.check_input(data.clip_frames, config.resolution, config.resolution)
        snapshot = _snapshot(data, model, config, loss)

        start_step, resume = 0, None
        found = _find_resume(run_dir)
        diffs = [] if found is None else config_differences(found[1].get("config", {}), snapshot)
        if diffs and on_change == "restart":
            log.warning("%s: settings changed (%s); starting the run over", run_dir, "; ".join(diffs[:3]))
            if rank == 0:
                shutil.rmtree(run_dir)
            found, diffs = None, []
        if found is not None:
            folder, record, tensors = found
            if diffs:
                raise ValueError(
                    f"{run_dir} holds a run with other settings ({'; '.join(diffs[:3])}); "
                    "use another --run-dir, or delete that folder to start over"
                )
            if record["step"] > config.steps:
                raise ValueError(
                    f"{run_dir} already holds {record['step']} steps, more than train.steps={config.steps}"
                )
            vt.load_state_dict(load_pretrained(folder).state_dict())
            start_step, resume = int(record["step"]), (record, tensors)
        elif init is not None:
            vt.load_state_dict(load_pretrained(init.checkpoint).state_dict())
            cls._init_loss_state(loss_module, init)

        if datasets is None:
            train_ds, val_ds, data_hash, data_files = cls._real_data(data, config, rank)
        else:
            train_ds, val_ds = datasets
            data_hash, data_files = None, {}
        if len(train_ds) == 0:
            raise ValueError("no training clips (check the data layer's clip index for the training fps)")
        world = config.devices if (config.devices > 1 or config.strategy != "auto") else 1
        run = cls(
            data=data,
            model_spec=model,
            config=config,
            loss_config=loss,
            run_dir=run_dir,
            rank=rank,
            accelerator=accelerator,
            world=world,
            model=vt,
            loss=loss_module,
            start_step=start_step,
            resume=resume,
            init=init,
            snapshot=snapshot,
            train_ds=train_ds,
            val_ds=val_ds,
            spe=_samples_per_epoch(data, train_ds, config.batch_size),
            progress=progress,
            on_validation=on_validation,
            run_id=None,
            wall_base=0.0,
            segment_start=time.time(),
            val_cache=None,
        )
        if rank == 0:
            run._start_manifest(params, data_hash, data_files)
        return run

    @staticmethod
    def _init_loss_state(loss_module: VidTokLoss, init: InitSource) -> None:
        """Continue logvar, discriminator and LeCAM EMAs from the init checkpoint when it has a matching state."""
        try:
            _, tensors = read_training_state(init.checkpoint)
        except CheckpointError:
            return  # a plain model checkpoint (e.g. released weights): the loss starts fresh
        try:
            loss_module.load_training_state_dict(split_state(tensors, "loss"))
        except ValueError as err:
            warnings.warn(f"{init.checkpoint}: loss state not reused ({err})", stacklevel=3)

    @staticmethod
    def _real_data(data: DataConfig, config: TrainConfig, rank: int) -> tuple[Dataset, Dataset, str, dict[str, str]]:
        from vidtok.data_clips import clip_index_path
        from vidtok.data_module import VideoDataModule

        dm = VideoDataModule(data, fps=config.fps, resolution=config.resolution, batch_size=config.batch_size)
        if rank == 0:
            dm.prepare_data()  # DDP workers start later (inside fit) and find it done
        dm.setup("fit")
        files = {}
        for path in dict.fromkeys(
            (data.manifest, clip_index_path(data, config.fps), clip_index_path(data, dm.val_fps))
        ):
            if "://" not in path and os.path.isfile(path):
                files[path] = sha256_file(path)
        data_hash = files.get(clip_index_path(data, config.fps))
        return dm.train_dataset, dm.val_dataset, data_hash, files

    def _start_manifest(self, params: Mapping[str, Any] | None, data_hash: str | None, files: dict[str, str]) -> None:
        cfg = self.config
        device = device_info(self.accelerator, cfg.devices, cfg.strategy, cfg.precision, self.world)
        existing = None
        if self.resume is not None:
            try:
                existing = read_manifest(self.run_dir)
            except RunManifestError:
                existing = None
        if existing is not None and existing.status == "completed" and self.start_step >= cfg.steps:
            self.run_id, self.wall_base = existing.run_id, existing.wall_time_s or 0.0
            return  # nothing left to do: the record of the finished run stays as it is
        if existing is not None:
            manifest = existing.replace(
                status="running",
                ended_at=None,
                error=None,
                total_steps=cfg.steps,
                config=self.snapshot,
                resumed_at_steps=(*existing.resumed_at_steps, self.start_step),
                steps_completed=self.start_step,
                device=device,
            )
        else:
            manifest = new_manifest(
                make_run_id(self.run_dir), cfg, self.snapshot, params, device, data_hash, files, self.init
            )
        self.run_id, self.wall_base = manifest.run_id, manifest.wall_time_s or 0.0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(self.run_dir, manifest)

    # ---------------------------------------------------------------------------------------- callbacks

    def _wall(self) -> float:
        return self.wall_base + (time.time() - self.segment_start)

    def save(self, module: TrainingModule, step: int, final: bool) -> Path:
        cfg = self.config
        folder = self.run_dir / CHECKPOINTS_DIR
        tensors, opt_meta = training_tensors(module.loss, module.named_optimizers(), module.ema)
        state = {"step": step, "stage": cfg.stage, "run_id": self.run_id, "config": self.snapshot}
        state["optimizers"] = opt_meta
        meta = {
            "step": step,
            "stage": cfg.stage,
            "run_id": self.run_id,
            "resolution": cfg.resolution,
            "fps": cfg.fps,
            "clip_frames": self.data.clip_frames,
            "weights": "raw",
        }
        raw = module.model.state_dict()
        step_dir = folder / f"step_{step:07d}"
        write_checkpoint(step_dir, module.model, raw, meta, tensors, state)
        if not final:
            return step_dir
        kind = "ema" if module.ema is not None else "raw"
        weights = module.ema.model_state(module.model) if module.ema is not None else raw
        target = folder / FINAL_NAME
        write_checkpoint(target, module.model, weights, {**meta, "weights": kind}, tensors, state)
        return target

    def on_checkpoint(self, path: Path, step: int, final: bool) -> None:
        manifest = read_manifest(self.run_dir)
        changes: dict[str, Any] = {"steps_completed": step, "wall_time_s": round(self._wall(), 3)}
        if final:
            changes["final_checkpoint"] = os.path.relpath(path, self.run_dir)
            changes["final_checkpoint_sha256"] = read_config(path)["weights_sha256"]
        write_manifest(self.run_dir, manifest.replace(**changes))

    def validate(self, module: TrainingModule) -> dict[str, float]:
        """PSNR / SSIM of the weights the final checkpoint will hold on the first val clips, and of the trivial
        codec (downsample by the model's factors, upsample back) on the same clips."""
        from vidtok.evaluate import trivial_codec

        if self.val_cache is None:
            x = stack_clips(self.val_ds, self.config.val_clips) if self.val_ds is not None else torch.zeros(0)
            trivial: dict[str, float] = {"trivial_psnr": math.nan, "trivial_ssim": math.nan}
            if x.numel():
                ref, triv = M.to_unit(x), M.to_unit(trivial_codec(x, self.model.config))
                trivial = {"trivial_psnr": M.psnr(ref, triv).value, "trivial_ssim": M.ssim(ref, triv).value}
            self.val_cache = (x, trivial)
        x, trivial = self.val_cache
        if not x.numel():
            return {"val_psnr": math.nan, "val_ssim": math.nan, **trivial}
        model = module.model
        state = module.ema.model_state(model) if module.ema is not None else None
        model.eval()
        try:
            outs = []
            with torch.no_grad():
                for chunk in batched(x, self.config.batch_size):
                    chunk = chunk.to(module.device)
                    out = torch.func.functional_call(model, state, (chunk,)) if state is not None else model(chunk)
                    outs.append(out[0].float().cpu())
        finally:
            module.train()
        ref, rec = M.to_unit(x), M.to_unit(torch.cat(outs))
        return {"val_psnr": M.psnr(ref, rec).value, "val_ssim": M.ssim(ref, rec).value, **trivial}

    # ---------------------------------------------------------------------------------------- fit

    def execute(self) -> TrainResult | None:
        cfg = self.config
        self.segment_start = time.time()
        if self.start_step >= cfg.steps:
            if self.rank != 0:
                return None
            if not (self.run_dir / CHECKPOINTS_DIR / FINAL_NAME / "config.json").is_file():
                raise CheckpointError(
                    f"{self.run_dir}: all {cfg.steps} steps are done but checkpoints/final is missing; "
                    "delete the folder to retrain, or raise train.steps to continue"
                )
            return self._complete()
        import lightning as L

        module = TrainingModule(
            self.model,
            self.loss,
            lr=cfg.lr,
            lr_disc=cfg.lr_d,
            betas=cfg.betas,
            grad_clip=cfg.grad_clip,
            seed=cfg.seed,
            freeze_encoder=cfg.encoder_frozen,
            ema_decay=cfg.ema_decay if cfg.ema else None,
            lr_warmup=cfg.lr_warmup,
            start_step=self.start_step,
            resume=self.resume,
            make_loader=LoaderFactory(
                self.train_ds,
                cfg.batch_size,
                self.data.seed,
                self.start_step,
                cfg.steps,
                self.spe,
                self.data.num_workers,
            ),
        )
        recorder = Recorder(
            self.run_dir,
            total_steps=cfg.steps,
            start_step=self.start_step,
            columns=log_columns(self.model, self.loss_config),
            log_every=cfg.log_every,
            val_every=cfg.val_every,
            checkpoint_every=cfg.checkpoint_every,
            keep_checkpoints=cfg.keep_checkpoints,
            global_batch=cfg.batch_size * self.world,
            save=self.save,
            validate=self.validate,
            on_checkpoint=self.on_checkpoint,
            progress=self.progress,
            on_validation=self.on_validation,
        )
        try:
            with _quiet_lightning():
                trainer = L.Trainer(
                    accelerator=self.accelerator,
                    devices=cfg.devices,
                    strategy=_strategy(cfg, self.accelerator),
                    precision=cfg.precision,
                    max_epochs=1,
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                    num_sanity_val_steps=0,
                    limit_val_batches=0,
                    use_distributed_sampler=False,
                    callbacks=[recorder],
                    default_root_dir=str(self.run_dir),
                )
                trainer.fit(module)
        except BaseException as err:
            if self.rank == 0:
                self._fail(err)
            raise
        if self.rank != 0:
            return None
        return self._complete()

    def _fail(self, err: BaseException) -> None:
        try:
            manifest = read_manifest(self.run_dir)
            write_manifest(
                self.run_dir,
                manifest.replace(
                    status="failed", error=_one_line(err), ended_at=now_iso(), wall_time_s=round(self._wall(), 3)
                ),
            )
        except (OSError, RunManifestError):
            pass  # the original error matters more than a manifest we cannot update

    def _complete(self) -> TrainResult:
        manifest = read_manifest(self.run_dir)
        final = self.run_dir / CHECKPOINTS_DIR / FINAL_NAME
        record = read_config(final)
        if manifest.status != "completed":
            manifest = manifest.replace(
                status="completed",
                ended_at=now_iso(),
                wall_time_s=round(self._wall(), 3),
                steps_completed=self.config.steps,
                final_checkpoint=os.path.relpath(final, self.run_dir),
                final_checkpoint_sha256=record["weights_sha256"],
            )
            write_manifest(self.run_dir, manifest)
        rows = read_csv_rows(self.run_dir / METRICS_NAME)
        return TrainResult(
            run_dir=self.run_dir,
            final_checkpoint=final,
            steps=self.config.steps,
            wall_time_s=manifest.wall_time_s or 0.0,
            manifest=manifest,
            last_metrics=rows[-1] if rows else {},
            val_curve=read_csv_rows(self.run_dir / VAL_NAME),
        )
