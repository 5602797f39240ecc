"""The pipeline end to end: the README's main job, the report stage, and one pipeline run for a sweep trial.

    vidtok run-pipeline          # sample videos -> `dvc repro` -> the metrics table (what `make run` does)
    vidtok report --eval outputs/eval/metrics.json -o outputs/report.md

The DVC stages (dvc.yaml) and the Prefect tasks (flows/) call the same functions: `vidtok data ...`,
`vidtok.train.run.train`, `vidtok.evaluation.evaluate.evaluate`, and `report` here. `run_trial` chains them for one set of
parameters into a folder of its own (a sweep trial), reusing the shared data stages' outputs.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtok._files import tool_env

SCHEDULES = ("two-stage", "one-stage")


# ================================================================================================= main job


def run_main_job(repo: str | os.PathLike[str] = ".", *, log: Callable[[str], None] = print) -> int:
    """Sample videos into data/, `dvc repro`, then print the report and where to look. Returns an exit status."""
    from vidtok.data.sources import copy_samples

    root = Path(repo).resolve()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root}: no dvc.yaml (run this from the repository root)")
    os.chdir(root)
    start = time.perf_counter()
    copy_samples(root / "data", log=log)
    env = tool_env()
    log("dvc repro: manifest -> resample@fps -> train-stage1 -> train-stage2 -> evaluate -> report")
    dvc = [sys.executable, "-m", "dvc"] if shutil.which("dvc") is None else ["dvc"]
    status = subprocess.call([*dvc, "repro"], cwd=root, env=env)
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
    schedule: str = "two-stage",
    stage1_fraction: float | None = None,
    stage2_trains: str = "decoder",
    eval_clips: int = 0,
    progress: bool = False,
    on_validation: Callable[..., None] | None = None,
) -> TrialResult:
    """Train (two-stage or one-stage) and evaluate one parameter set into `folder`.

    `overrides` are `section.key=value` strings (e.g. `train.fps=8`, `model.fsq_levels=[8,8,8]`). With
    `stage1_fraction`, the two-stage step budget (stage1.steps + stage2.steps of the profile) is split at that
    share: the staging study's switch point. `stage2_trains="all"` trains the whole model in stage 2 (encoder not
    frozen), the paper's Table 4 "fix enc. no" row. `on_validation(step, val_psnr, stage=...)` runs after every
    validation pass of every stage (a sweep's step-keyed pruning hook). A finished stage in `folder` is reused
    (same params), an interrupted one resumes from its last checkpoint.
    """
    from vidtok.evaluation.evaluate import evaluate
    from vidtok.train.config import load_params, params_info
    from vidtok.train.run import train

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if stage2_trains not in ("decoder", "all"):
        raise ValueError(f"stage2_trains must be 'decoder' or 'all', got {stage2_trains!r}")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides)
    stages = ["onestage"] if schedule == "one-stage" else ["stage1", "stage2"]
    if schedule == "two-stage" and stage1_fraction is not None:
        if not 0 < stage1_fraction < 1:
            raise ValueError(f"stage1_fraction must be in (0, 1), got {stage1_fraction}")
        base1 = load_params(params_path, profile, overrides, stage="stage1").train.steps
        base2 = load_params(params_path, profile, overrides, stage="stage2").train.steps
        total = base1 + base2
        steps1 = max(1, round(total * stage1_fraction))
        overrides += [f"train.stage1.steps={steps1}", f"train.stage2.steps={max(1, total - steps1)}"]
    if stage2_trains == "all":
        overrides.append("train.stage2.freeze_encoder=false")
    runs: dict[str, Path] = {}
    wall = 0.0
    steps = 0
    gpu_hours = 0.0
    on_gpu = False
    previous: Path | None = None
    for stage in stages:
        stage_overrides = list(overrides)
        if previous is not None:
            stage_overrides.append(f"train.init_from={previous}")
        params = load_params(params_path, profile, stage_overrides, stage=stage)
        result = train(
            *params,
            root / stage,
            params=params_info(params_path, profile, stage_overrides),
            progress=progress,
            on_validation=None if on_validation is None else functools.partial(on_validation, stage=stage),
        )
        runs[stage] = result.run_dir
        wall += result.wall_time_s
        steps += result.steps
        device = result.manifest.device or {}
        if device.get("accelerator") == "gpu":
            on_gpu = True
            gpu_hours += result.wall_time_s * int(device.get("world_size") or 1) / 3600
        previous = result.run_dir
    data = load_params(params_path, profile, overrides, stage=stages[-1]).data
    record = evaluate(
        previous,
        data,
        split="val",
        out_dir=root / "eval",
        max_clips=eval_clips,
        lpips_net="vgg",
        num_videos=1,
        progress=progress,
    )
    return TrialResult(root, runs, record, wall, gpu_hours if on_gpu else None, steps)
