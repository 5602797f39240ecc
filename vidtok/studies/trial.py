"""The pipeline end to end: the README's main job, the report stage, and one pipeline run for a sweep trial.

    vidtok run-pipeline          # sample videos -> `dvc repro` -> the metrics table (what `make run` does)
    vidtok report --eval outputs/eval/metrics.json -o outputs/report.md

The DVC stages (dvc.yaml) and the Prefect tasks (flows/) call the same functions: `vidtok data ...`,
`vidtok.training.train`, `vidtok.evaluate.evaluate`, and `report` here. `run_trial` chains them for one set of
parameters into a folder of its own (a sweep trial), reusing the shared data stages' outputs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtok.subprocess_env import tool_env

SCHEDULES = ("two-stage", "one-stage")


# ================================================================================================= report


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def _protocol_text(record: dict[str, Any]) -> str:
    protocol = record.get("protocol") or {}
    keys = ("pooling", "data_range", "window", "backbone", "clip_length", "resolution", "num_clips", "fps")
    return "; ".join(f"{k} {protocol[k]}" for k in keys if protocol.get(k) not in (None, ""))


def report_markdown(eval_record: dict[str, Any], runs: Sequence[dict[str, Any]] = ()) -> str:
    """The metrics table (each metric with its protocol), the trivial-codec comparison and the training runs."""
    s = eval_record["summary"]
    ck, data = eval_record["checkpoint"], eval_record["data"]
    lines = [
        "# VidTok pipeline report",
        "",
        f"Model `{ck.get('name')}` ({ck.get('compression')}, {ck.get('regularizer')}), checkpoint "
        f"`{ck.get('path')}` (sha256 {str(ck.get('weights_sha256'))[:12]}).",
        f"Evaluated on {data['num_clips']} {data['split']} clips of {data['clip_length']} frames at "
        f"{_fmt(data['fps'], 0)} fps, {data['resolution']} ({data['num_videos']} "
        f"video{'' if data['num_videos'] == 1 else 's'}).",
        "",
        "| metric | value | protocol |",
        "|---|---|---|",
    ]
    for name, record in eval_record["metrics"].items():
        if record.get("available") is False:
            lines.append(f"| {name} | unavailable | {record.get('reason', '')} |")
        else:
            lines.append(f"| {name} | {_fmt(record.get('value'), 4)} | {_protocol_text(record)} |")
    gain = s.get("psnr_gain_over_trivial_db")
    verdict = "beats it" if s.get("beats_trivial_codec") else "does **not** beat it"
    lines += [
        "",
        f"Trivial codec at the same compression: PSNR {_fmt(s.get('trivial_psnr'))} dB, SSIM "
        f"{_fmt(s.get('trivial_ssim'), 4)}. The tokenizer {verdict} (PSNR difference {_fmt(gain)} dB).",
    ]
    if runs:
        lines += ["", "| run | stage | status | steps | wall time (s) | seed | device | commit |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for run in runs:
            device = run.get("device") or {}
            git = run.get("git") or {}
            commit = str(git.get("commit") or "-")[:10] + (" (dirty)" if git.get("dirty") else "")
            lines.append(
                f"| {run.get('run_id')} | {run.get('stage')} | {run.get('status')} | {run.get('steps_completed')} | "
                f"{_fmt(run.get('wall_time_s'), 0)} | {run.get('seed')} | {device.get('accelerator', '-')} | {commit} |"
            )
    return "\n".join(lines) + "\n"


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, target)
    return target


def report(eval_path: str | os.PathLike[str], out: str | os.PathLike[str], run_dirs: Sequence[str] = ()) -> str:
    """Write the markdown report of an evaluation (and its training runs) to `out`; returns the text."""
    from vidtok.runs import read_manifest

    path = Path(eval_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no evaluation yet (run `dvc repro evaluate` or `vidtok evaluate`)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    runs = []
    for run_dir in run_dirs:
        if (Path(run_dir) / "run.json").is_file():
            runs.append(read_manifest(run_dir).to_dict())
    text = report_markdown(record, runs)
    write_text_atomic(out, text)
    return text


# ================================================================================================= main job


def run_main_job(repo: str | os.PathLike[str] = ".", *, log: Callable[[str], None] = print) -> int:
    """Sample videos into data/, `dvc repro`, then print the report and where to look. Returns an exit status."""
    from vidtok.data_samples import copy_samples

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
    from vidtok.evaluate import evaluate
    from vidtok.training import load_params, params_info, train

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
