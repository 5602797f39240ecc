"""Train one stage into a run folder: `train`, the entry point the CLI, the DVC stages, the Prefect flows and the
study trials call (through the stage chain, vidtok.pipeline).

    vidtok stage stage1 --run-dir runs/stage1
    vidtok stage stage2 --run-dir runs/stage2 --init-from runs/stage1

A call checks every setting first (vidtok.train.config.check_setup), builds the model and the loss, finds out
whether the run folder holds this run already (resume from its newest checkpoint, or return the finished run),
another run (refuse, or start over with on_change="restart") or nothing (start), then fits with Lightning and
records everything in the folder (vidtok.runs describes the layout).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor
from torch.utils.data import Dataset

from vidtok import metrics as M
from vidtok._files import one_line, resolve_device, sha256_file
from vidtok.data.clips import clip_index_path
from vidtok.data.config import DataConfig
from vidtok.data.loader import StepLoader, VideoDataModule, clips_sha256, epoch_samples, stack_clips
from vidtok.model.config import ModelConfig
from vidtok.model.trivial import trivial_codec
from vidtok.model.vidtok import CheckpointError, VidTok, load_pretrained, read_config
from vidtok.runs import (
    CHECKPOINTS_DIR,
    FINAL_NAME,
    METRICS_NAME,
    VAL_NAME,
    RunRecord,
    RunRecordError,
    code_sha256,
    device_info,
    identity_differences,
    now_iso,
    package_versions,
    read_run_record,
    sha256_json,
    workspace_git_info,
    write_run_record,
)
from vidtok.train.callbacks import Recorder, RecorderHooks, TrainHooks
from vidtok.train.config import (
    InitSource,
    Params,
    TrainConfig,
    check_setup,
    computing_config,
    config_differences,
    config_snapshot,
    resolve_init,
)
from vidtok.train.losses import VidTokLoss
from vidtok.train.module import TrainingModule, log_columns
from vidtok.train.state import find_resume, read_training_state, split_state, training_tensors, write_checkpoint

__all__ = ["Params", "TrainHooks", "TrainResult", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    final_checkpoint: Path
    steps: int
    wall_time_s: float
    run_record: RunRecord
    last_metrics: dict[str, float]  # the last row of metrics.csv
    val_curve: list[dict[str, float]]  # val.csv: step, val_psnr, val_ssim, trivial_psnr, trivial_ssim


def train(
    params: Params,
    run_dir: str | os.PathLike[str],
    *,
    origin: Mapping[str, Any] | None = None,
    datasets: tuple[Dataset, Dataset | None] | None = None,
    on_change: Literal["error", "restart"] = "error",
    hooks: TrainHooks | None = None,
) -> TrainResult | None:
    """Train one stage (`params.train`, starting from `params.train.init_from` when set) into `run_dir` (created, or
    resumed from its newest checkpoint) and return the result.

    `origin` records where the configs came from (see `params_info`). `datasets=(train, val)` replaces the data
    layer with in-memory datasets (tests, benchmarks): items are indexed by (row, seed) like ClipDataset. Bad
    configuration raises ValueError / CheckpointError / MissingWeightsError before any computation; a non-finite
    loss raises TrainingError naming the step. DDP worker processes (rank > 0) return None.

    A `run_dir` that holds a run with other settings (see `config_differences`) is an error by default;
    `on_change="restart"` deletes it and starts over (what `dvc repro` wants after a param change). `hooks` are the
    progress bar and the caller's per-validation and per-step hooks (TrainHooks: a sweep's pruner and heartbeat
    check; None: a progress bar, no hooks); an exception a hook raises ends the run: status failed with that error,
    the checkpoints kept for a resume."""
    if on_change not in ("error", "restart"):
        raise ValueError(f"on_change must be 'error' or 'restart', got {on_change!r}")
    threads = torch.get_num_threads()
    try:
        run = Run.prepare(params, Path(run_dir), origin=origin, datasets=datasets, on_change=on_change, hooks=hooks)
        return run.execute()
    finally:
        torch.set_num_threads(threads)  # train.num_threads applies to this call only


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class Run:
    """Everything one `train` call needs after setup; `execute` fits and returns the result.

    Picklable on purpose: under `ddp_spawn` Lightning pickles the trainer, and with it the Recorder callbacks
    that call back into the run (checkpoints, validation, run_record updates) from the rank-0 worker."""

    params: Params
    run_dir: Path
    rank: int
    accelerator: str  # "cpu" or "gpu" (Lightning's names)
    world: int  # processes training together
    model: VidTok
    loss: VidTokLoss
    init: InitSource | None  # the checkpoint this run started from (stage 2: stage 1's final)
    snapshot: dict[str, Any]  # the four configs as dicts, as recorded in run.json and checkpoints
    identity: dict[str, str | None]  # what made the run (vidtok.runs)
    train_ds: Dataset
    val_ds: Dataset | None
    hooks: TrainHooks = TrainHooks()
    loader: StepLoader | None = None  # iterations start_step .. config.steps
    start_step: int = 0
    resume: tuple[dict[str, Any], dict[str, Tensor]] | None = None  # training state of the checkpoint resumed
    run_id: str | None = None
    wall_base: float = 0.0  # training seconds of earlier segments of a resumed run
    segment_start: float = field(default_factory=time.time)
    val_cache: tuple[Tensor, dict[str, float]] | None = None  # val clips and the trivial codec's scores on them

    @property
    def config(self) -> TrainConfig:
        return self.params.train

    @property
    def data(self) -> DataConfig:
        return self.params.data

    # ---------------------------------------------------------------------------------------- setup

    @classmethod
    def prepare(
        cls,
        params: Params,
        run_dir: Path,
        *,
        origin: Mapping[str, Any] | None,
        datasets: tuple[Dataset, Dataset | None] | None,
        on_change: str = "error",
        hooks: TrainHooks | None = None,
    ) -> Run:
        """Check every setting, build the model and the loss, open the data and find out what `run_dir` holds
        (`_resume_point`); rank 0 writes the run record."""
        config = params.train
        rank = int(getattr(rank_zero_only, "rank", 0) or 0)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        init = resolve_init(config.init_from) if config.init_from else None
        model_cfg = check_setup(*params, init)
        accelerator = _accelerator(config)
        model, loss_module = _build(params, model_cfg)
        snapshot = config_snapshot(*params)
        dm, (train_ds, val_ds), data_files = _open_data(params, rank, datasets)
        identity = {
            "params_sha256": sha256_json(computing_config(snapshot)),
            "code_sha256": code_sha256("train"),
            "data_sha256": clips_sha256(train_ds, val_ds),
            "parent_sha256": None if init is None else init.record.get("weights_sha256"),
        }
        world = config.devices if (config.devices > 1 or config.strategy != "auto") else 1
        run = cls(
            params, run_dir, rank, accelerator, world, model, loss_module, init, snapshot, identity, train_ds, val_ds,
            hooks or TrainHooks(),
        )  # fmt: skip
        run.start_step, run.resume = run._resume_point(on_change)
        run.loader = run._step_loader(dm)
        if len(train_ds) == 0:  # type: ignore[arg-type]
            raise ValueError("no training clips (check the data layer's clip index for the training fps)")
        if rank == 0:
            run.start_record(origin, data_files)
        return run

    def _resume_point(self, on_change: str) -> tuple[int, tuple[dict[str, Any], dict[str, Tensor]] | None]:
        """(start step, training state) from what run_dir holds: this run (resume from its newest checkpoint),
        another (refuse, or delete it with on_change="restart") or nothing (start, from the init checkpoint when
        there is one). Loads the weights to go on from into the model."""
        run_dir, config = self.run_dir, self.config
        found = find_resume(run_dir)
        diffs = [] if found is None else _changes(found[1], self.snapshot, self.identity)
        if diffs and on_change == "restart":
            log.warning("%s: %s; starting the run over", run_dir, "; ".join(diffs[:4]))
            if self.rank == 0:
                shutil.rmtree(run_dir)
            found, diffs = None, []
        if found is not None:
            folder, record, tensors = found
            if diffs:
                raise ValueError(
                    f"{run_dir} holds a run made by something else ({'; '.join(diffs[:4])}); use another --run-dir, "
                    "--on-change restart, or delete that folder to start over"
                )
            if record["step"] > config.steps:
                raise ValueError(
                    f"{run_dir} already holds {record['step']} steps, more than train.steps={config.steps}"
                )
            self.model.load_state_dict(load_pretrained(folder).state_dict())
            return int(record["step"]), (record, tensors)
        if self.init is not None:
            self.model.load_state_dict(load_pretrained(self.init.checkpoint).state_dict())
            _continue_loss_state(self.loss, self.init)
        return 0, None

    def _step_loader(self, dm: VideoDataModule | None) -> StepLoader:
        """Iterations start_step .. train.steps, from the data module or the in-memory datasets."""
        data, config = self.data, self.config
        if dm is not None:
            return dm.step_loader(self.start_step, config.steps)
        samples = epoch_samples(self.train_ds, config.batch_size, data.clip_frames, data.clip_stride,
                                data.samples_per_epoch)  # fmt: skip
        return StepLoader(self.train_ds, config.batch_size, data.seed, self.start_step, config.steps, samples)

    def start_record(self, origin: Mapping[str, Any] | None, files: dict[str, str]) -> None:
        cfg = self.config
        gpu = torch.cuda.get_device_name(0) if self.accelerator == "gpu" else None
        device = device_info(
            self.accelerator,
            cfg.devices,
            cfg.strategy,
            cfg.precision,
            self.world,
            torch_threads=torch.get_num_threads(),
            gpu=gpu,
        )
        existing = None
        if self.resume is not None:
            try:
                existing = read_run_record(self.run_dir)
            except RunRecordError:
                existing = None
        if existing is not None and existing.status == "completed" and self.start_step >= cfg.steps:
            self.run_id, self.wall_base = existing.run_id, existing.wall_time_s or 0.0
            return  # nothing left to do: the record of the finished run stays as it is
        if existing is not None:
            run_record = existing.replace(
                status="running",
                ended_at=None,
                error=None,
                # An extended run has no final checkpoint until it ends: the old one is not its result any more.
                final_checkpoint=None,
                final_checkpoint_sha256=None,
                total_steps=cfg.steps,
                config=self.snapshot,
                resumed_at_steps=(*existing.resumed_at_steps, self.start_step),
                steps_completed=self.start_step,
                device=device,
            )
        else:
            init = self.init
            run_record = RunRecord(
                run_id=_new_run_id(self.run_dir),
                stage=cfg.stage,
                status="running",
                started_at=now_iso(),
                config=self.snapshot,
                params=dict(origin or {"file": None, "sha256": None, "profile": None, "overrides": []}),
                seed=cfg.seed,
                device=device,
                git=workspace_git_info(),
                packages=package_versions(),
                total_steps=cfg.steps,
                identity=self.identity,
                data_files=files,
                parent_run=None if init is None or init.run_dir is None else str(init.run_dir),
                parent_checkpoint=None if init is None else str(init.checkpoint),
                parent_checkpoint_sha256=None if init is None else init.record.get("weights_sha256"),
                metrics_path=METRICS_NAME,
                val_path=VAL_NAME,
                wall_time_s=0.0,
            )
        self.run_id, self.wall_base = run_record.run_id, run_record.wall_time_s or 0.0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_run_record(self.run_dir, run_record)

    # ---------------------------------------------------------------------------------------- callbacks

    def wall(self) -> float:
        return self.wall_base + (time.time() - self.segment_start)

    def save(self, module: TrainingModule, step: int, final: bool) -> Path:
        cfg = self.config
        folder = self.run_dir / CHECKPOINTS_DIR
        tensors, opt_meta = training_tensors(module.loss, module.named_optimizers(), module.ema)
        state = {"step": step, "stage": cfg.stage, "run_id": self.run_id, "config": self.snapshot}
        state["identity"] = self.identity
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
        final_meta = {**meta, "weights": kind}
        if module.rank_weights_sha256:  # DDP: every rank's weights, checked equal at the end
            final_meta["ddp_rank_weights_sha256"] = list(module.rank_weights_sha256)
        write_checkpoint(target, module.model, weights, final_meta, tensors, state)
        return target

    def on_checkpoint(self, path: Path, step: int, final: bool) -> None:
        run_record = read_run_record(self.run_dir)
        changes: dict[str, Any] = {"steps_completed": step, "wall_time_s": round(self.wall(), 3)}
        if final:
            changes["final_checkpoint"] = os.path.relpath(path, self.run_dir)
            changes["final_checkpoint_sha256"] = read_config(path)["weights_sha256"]
        write_run_record(self.run_dir, run_record.replace(**changes))

    def validate(self, module: TrainingModule) -> dict[str, float]:
        """PSNR / SSIM of the weights the final checkpoint will hold on the first val clips, and of the trivial
        codec (downsample by the model's factors, upsample back) on the same clips."""
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
                for lo in range(0, x.shape[0], self.config.batch_size):
                    chunk = x[lo : lo + self.config.batch_size].to(module.device)
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
        module = TrainingModule(
            self.model, self.loss, cfg, start_step=self.start_step, resume=self.resume, make_loader=self.loader
        )
        recorder = Recorder(
            self.run_dir,
            cfg,
            RecorderHooks(self.save, self.validate, self.on_checkpoint, self.hooks),
            start_step=self.start_step,
            columns=log_columns(self.model, self.params.loss),
            world=self.world,
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
            run_record = read_run_record(self.run_dir)
            write_run_record(
                self.run_dir,
                run_record.replace(
                    status="failed",
                    error=one_line(err, with_type=True),
                    ended_at=now_iso(),
                    wall_time_s=round(self.wall(), 3),
                ),
            )
        except (OSError, RunRecordError):
            pass  # the original error matters more than a run_record we cannot update

    def _complete(self) -> TrainResult:
        run_record = read_run_record(self.run_dir)
        final = self.run_dir / CHECKPOINTS_DIR / FINAL_NAME
        record = read_config(final)
        if run_record.status != "completed":
            run_record = run_record.replace(
                status="completed",
                ended_at=now_iso(),
                wall_time_s=round(self.wall(), 3),
                steps_completed=self.config.steps,
                final_checkpoint=os.path.relpath(final, self.run_dir),
                final_checkpoint_sha256=record["weights_sha256"],
            )
            write_run_record(self.run_dir, run_record)
        rows = read_csv_rows(self.run_dir / METRICS_NAME)
        return TrainResult(
            run_dir=self.run_dir,
            final_checkpoint=final,
            steps=self.config.steps,
            wall_time_s=run_record.wall_time_s or 0.0,
            run_record=run_record,
            last_metrics=rows[-1] if rows else {},
            val_curve=read_csv_rows(self.run_dir / VAL_NAME),
        )


# ------------------------------------------------------------------------------------------------ helpers


def _build(params: Params, model_cfg: ModelConfig) -> tuple[VidTok, VidTokLoss]:
    """The model (seeded with train.seed) and the loss, checked against the clip size: a missing LPIPS trunk
    (MissingWeightsError) or a too-small input fails here, before any data or compute."""
    config = params.train
    torch.manual_seed(config.seed)
    model = VidTok(model_cfg, name=params.model.name)
    model.encoder.gradient_checkpointing = config.gradient_checkpointing
    model.decoder.gradient_checkpointing = config.gradient_checkpointing
    loss_module = VidTokLoss(params.loss)
    loss_module.check_input(params.data.clip_frames, config.resolution, config.resolution)
    return model, loss_module


def _open_data(
    params: Params, rank: int, datasets: tuple[Dataset, Dataset | None] | None
) -> tuple[VideoDataModule | None, tuple[Dataset, Dataset | None], dict[str, str]]:
    """(data module, (train, val) datasets, sha256 of each data file read): the data layer at train.fps and
    train.resolution (rank 0 builds what is missing; DDP workers start later, inside fit, and find it done), or
    the given in-memory datasets."""
    if datasets is not None:
        return None, datasets, {}
    data, config = params.data, params.train
    dm = VideoDataModule(data, fps=config.fps, resolution=config.resolution, batch_size=config.batch_size)
    if rank == 0:
        dm.prepare_data()
    dm.setup("fit")
    files = {}
    for path in dict.fromkeys((data.manifest, clip_index_path(data, config.fps), clip_index_path(data, dm.val_fps))):
        if "://" not in path and os.path.isfile(path):
            files[path] = sha256_file(path)
    return dm, (dm.train_dataset, dm.val_dataset), files


def read_csv_rows(path: Path) -> list[dict[str, float]]:
    """The rows of metrics.csv / val.csv as floats (empty cells left out); [] when the file does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _changes(saved: Mapping[str, Any], snapshot: Mapping[str, Any], identity: Mapping[str, Any]) -> list[str]:
    """What makes a checkpoint's run another run than this one: settings first (named key by key), then code, data
    and parent checkpoint (vidtok.runs.identity_differences)."""
    settings = config_differences(saved.get("config", {}), snapshot)
    other = [d for d in identity_differences(saved.get("identity"), dict(identity)) if not d.startswith("params ")]
    if settings:
        other.insert(0, "settings changed: " + ", ".join(settings[:3]) + (" ..." if len(settings) > 3 else ""))
    elif saved.get("identity") and saved["identity"].get("params_sha256") != identity["params_sha256"]:
        other.insert(0, "settings changed (their sha256 differs)")
    return other


def _continue_loss_state(loss_module: VidTokLoss, init: InitSource) -> None:
    """Continue logvar, discriminator and LeCAM EMAs from the init checkpoint when it has a matching state."""
    try:
        _, tensors = read_training_state(init.checkpoint)
    except CheckpointError:
        return  # a plain model checkpoint (e.g. released weights): the loss starts fresh
    try:
        loss_module.load_training_state_dict(split_state(tensors, "loss"))
    except ValueError as err:
        warnings.warn(f"{init.checkpoint}: loss state not reused ({err})", stacklevel=3)


def _new_run_id(run_dir: Path) -> str:
    return f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def _accelerator(config: TrainConfig) -> str:
    """Lightning's accelerator name for train.accelerator: "gpu" when CUDA is asked for (or auto and present)."""
    device = resolve_device("auto" if config.accelerator == "auto" else config.accelerator)
    return "gpu" if device.startswith("cuda") else "cpu"


def _strategy(config: TrainConfig, accelerator: str) -> Any:
    if config.strategy == "auto" and config.devices == 1:
        return "auto"
    # Generator and discriminator steps each leave the other's parameters without gradients: DDP must look
    # for unused parameters. gloo is the CPU backend (nccl is Lightning's default on GPUs).
    return DDPStrategy(
        find_unused_parameters=True,
        process_group_backend="gloo" if accelerator == "cpu" else None,
        start_method="spawn" if config.strategy == "ddp_spawn" else "popen",
    )


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's banner lines (GPU available, ...) and its few-workers hint add nothing to our progress bar."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
