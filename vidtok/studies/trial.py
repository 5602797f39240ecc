"""One study trial: the stage chain (vidtok.pipeline) for one level and seed, and what a study adds to it.

    vidtok study sweep-fps --n-trials 2 --profile smoke     # vidtok.studies.sweeps runs each trial through run_trial

A trial trains the chain into its folder (experiments/<study>/runs/trial_<n>/: ChainLayout.trial), evaluates the
last stage on the val clips (eval/: what the study selects on) and on the test clips (eval_test/: what it
reports), and counts the compute it took (FLOPs, wall time, GPU hours). What is the study's own: `TrialPlan` (the
level's overrides, its schedule, the staging study's split of the step budget, a whole-model stage 2, the
evaluation cap) and that accounting.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidtok.evaluation.evaluate import EvalOptions
from vidtok.pipeline import ChainLayout, ParamSource, evaluate_stage, train_chain
from vidtok.runs import SCHEDULES
from vidtok.train.flops import iteration_flops
from vidtok.train.run import TrainHooks, TrainResult

__all__ = ["TrialPlan", "TrialResult", "run_trial"]


@dataclass(frozen=True)
class TrialPlan:
    """What one trial runs. `source`: the params file, profile and `section.key=value` overrides (e.g.
    `train.fps=8`, `model.fsq_levels=[8,8,8]`). With `stage1_fraction`, the two-stage step budget (stage1.steps +
    stage2.steps of the profile) is split at that share: the staging study's switch point. `stage2_trains="all"`
    trains the whole model in stage 2 (encoder not frozen), the paper's Table 4 "fix enc. no" row. `eval_clips`
    caps both evaluations (0: all clips)."""

    source: ParamSource = ParamSource()
    schedule: str = "twostage"
    stage1_fraction: float | None = None
    stage2_trains: str = "decoder"
    eval_clips: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.stage2_trains not in ("decoder", "all"):
            raise ValueError(f"stage2_trains must be 'decoder' or 'all', got {self.stage2_trains!r}")
        if self.schedule == "twostage" and self.stage1_fraction is not None and not 0 < self.stage1_fraction < 1:
            raise ValueError(f"stage1_fraction must be in (0, 1), got {self.stage1_fraction}")

    def params(self) -> ParamSource:
        """The source with the plan's own overrides: the split step budget and a trained stage-2 encoder."""
        source = self.source
        if self.schedule == "twostage" and self.stage1_fraction is not None:
            total = source.load("stage1").train.steps + source.load("stage2").train.steps
            steps1 = max(1, round(total * self.stage1_fraction))
            steps2 = max(1, total - steps1)
            source = source.with_overrides(f"train.stage1.steps={steps1}", f"train.stage2.steps={steps2}")
        if self.stage2_trains == "all":
            source = source.with_overrides("train.stage2.freeze_encoder=false")
        return source


@dataclass
class TrialResult:
    """What a sweep trial produced: its run folders, the evaluation record and the compute it took."""

    folder: Path
    runs: dict[str, Path]
    metrics: dict[str, Any]
    train_wall_s: float
    gpu_hours: float | None
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)


def run_trial(
    folder: str | os.PathLike[str],
    plan: TrialPlan = TrialPlan(),
    *,
    progress: bool = False,
    on_validation: Callable[..., None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrialResult:
    """Train (two-stage or one-stage) and evaluate one parameter set into `folder`, as `plan` says.

    `on_validation(step, val_psnr, stage=...)` runs after every validation pass of every stage (a sweep's
    step-keyed pruning hook), `on_step(step)` after every training step (a sweep's heartbeat check; what it raises
    stops the trial). A finished stage in `folder` is reused (same params), an interrupted one resumes from its
    last checkpoint."""
    layout = ChainLayout.trial(folder, plan.schedule)
    Path(folder).mkdir(parents=True, exist_ok=True)
    source = plan.params()

    def hooks(stage: str) -> TrainHooks:
        hook = None if on_validation is None else functools.partial(on_validation, stage=stage)
        return TrainHooks(progress=progress, on_validation=hook, on_step=on_step)

    results = train_chain(layout, source, hooks=hooks)
    compute = _compute(results, source)
    # Val selects (the objective, the best level); test is what a study reports. Both score the same checkpoint.
    options = EvalOptions(split="val", max_clips=plan.eval_clips, lpips_net="vgg", num_videos=1)
    record = evaluate_stage(layout, source, options, progress=progress)
    test_layout = replace(layout, eval_dir=Path(folder) / "eval_test")
    test_options = EvalOptions(split="test", max_clips=plan.eval_clips, lpips_net="vgg", num_videos=0)
    try:
        compute.extra["test_metrics"] = evaluate_stage(test_layout, source, test_options, progress=progress)
    except ValueError as err:  # no test clips at the evaluation rate (a data folder without a test split)
        if "no test clips" not in str(err):
            raise
        compute.extra["test_metrics"] = None
    runs = {stage: result.run_dir for stage, result in results.items()}
    return TrialResult(Path(folder), runs, record, compute.wall_s, compute.gpu_hours, compute.steps, compute.extra)


@dataclass
class _Compute:
    wall_s: float
    gpu_hours: float | None
    steps: int
    extra: dict[str, Any]


def _compute(results: dict[str, TrainResult], source: ParamSource) -> _Compute:
    """The training compute of the chain's stages: wall time, steps, FLOPs (train_tflops in `extra`, or why they are
    unknown) and GPU hours (None when no stage ran on a GPU)."""
    wall, steps, gpu_hours, on_gpu, flops = 0.0, 0, 0.0, False, 0
    flops_unknown: str | None = None
    for stage, result in results.items():
        wall += result.wall_time_s
        steps += result.steps
        params = source.load(stage)
        try:
            per_step = iteration_flops(
                params.model.config(), params.train.batch_size, params.data.clip_frames, params.train.resolution,
                params.train.encoder_frozen,
            )  # fmt: skip
            flops += per_step * result.steps * params.train.devices
        except RuntimeError as err:
            # Known: FSQ, LFQ and VQ cannot be counted on the meta device (their fp32 autocast guard asks torch for
            # the meta device's autocast dtype, which raises; tests/train/test_flops.py). The trained model is
            # fine; its compute is unknown, not zero. The fix is in vidtok/model, which every committed trial's
            # code hash covers: it lands with the next rerun of the studies.
            flops_unknown = f"FLOPs not counted: {err}"
        device = result.run_record.device or {}
        if device.get("accelerator") == "gpu":
            on_gpu = True
            gpu_hours += result.wall_time_s * int(device.get("world_size") or 1) / 3600
    extra: dict[str, Any] = {"train_tflops": None if flops_unknown else flops / 1e12}
    if flops_unknown:
        extra["train_tflops_unknown"] = flops_unknown
    return _Compute(wall, gpu_hours if on_gpu else None, steps, extra)
