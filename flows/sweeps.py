"""The sweep flows: one Optuna study each (vidtok.studies.sweeps), served as deployments of the same name.

    prefect deployment run sweep-fps/sweep-fps --param n_trials=2 --param profile=cpu
    prefect deployment run sweep-codebook/sweep-codebook --param n_trials=4 --param 'quantizers=["fsq"]'
    prefect deployment run sweep-staging/sweep-staging --param n_trials=2 --param 'seeds=[0, 1, 2]'
    prefect deployment run ablations/ablations --param n_trials=2 --param storage=postgresql://optuna@db/optuna

Every flow takes `n_trials` (trials this run adds), `profile` (params.yaml profile; default its `profile:`),
`seeds`, `study_name` (Optuna study and folder under experiments/), `storage` (Optuna storage URL; default the
journal file in the study folder), `root` (the folder with params.yaml, data/ and experiments/; default the
serving process's working directory) and `levels` (level labels, e.g. `'levels=["LFQ 2^8", "VQ 2^8"]'`: run only
those; default every level). A flow prepares missing data first (sample videos, manifest, clip index at
the frame rates the study needs), then runs the trials one Prefect task each, so the UI shows every trial with
its logs; a failed trial is a failed task and a FAIL row, and the study goes on. The study summary (metric vs
level, mean +- std over seeds) is published as a markdown and a table artifact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.pipeline import RETRY
from vidtok.studies import sweeps
from vidtok.studies.trial import run_trial


@task(name="prepare-data", **RETRY)
def prepare_task(root: str, profile: str | None, fps: list[float]) -> dict[str, Any]:
    """Sample videos, manifest and clip indexes / frame caches at `fps` (+ val fps), each only when missing."""
    return sweeps.prepare_data(root, profile=profile, fps=fps, log=get_run_logger().info)


@task(name="trial", cache_policy=NO_CACHE, persist_result=False)
def trial_task(folder: str, **kwargs: Any) -> Any:
    """One trial: vidtok.studies.trial.run_trial (train + evaluate into the trial's run folder, as its TrialPlan
    says)."""

    return run_trial(folder, **kwargs)


def _run_trial_as_task(folder: Any, **kwargs: Any) -> Any:
    """run_study's run_fn: each trial becomes a task run named after its folder (trial_<n>)."""
    return trial_task.with_options(task_run_name=f"trial-{Path(folder).name.removeprefix('trial_')}")(
        str(folder), **kwargs
    )


def artifact_key(text: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-") or "study"


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary's per-level table for a table artifact: mean and std over seeds of the main numbers."""
    rows = []
    for level in summary["levels"]:
        row: dict[str, Any] = {"level": level["level"], "value": level["level_value"], "n": level["n"]}
        if level.get("regularizer"):
            row["regularizer"] = level["regularizer"]
        for name in ("psnr", "ssim", "trivial_psnr", "codebook_utilisation", "train_wall_s", "gpu_hours"):
            if level[name]["mean"] is not None:
                row[f"{name}_mean"] = level[name]["mean"]
                row[f"{name}_std"] = level[name]["std"]
        row["best"] = level["level"] == summary["best_level"]
        rows.append(row)
    return rows


def run_sweep(
    study: str,
    *,
    n_trials: int,
    profile: str | None,
    seeds: Sequence[int] | None,
    study_name: str | None,
    storage: str | None,
    root: str,
    levels: Sequence[str] | None = None,
    eval_clips: int = 0,
    retry_failed: bool = False,
    pruner: str = "none",
) -> dict[str, Any]:
    """The body every sweep flow shares: prepare data, run the study's trials as tasks, publish the summary."""
    logger = get_run_logger()
    spec = sweeps.get_study(study)
    # Argument errors surface before any data work, as one line.
    sweeps.validate_args(n_trials, list(sweeps.DEFAULT_SEEDS if seeds is None else seeds), study_name or spec.name)
    fps = sweeps.needed_fps(spec, root, profile=profile, levels=levels)
    data = prepare_task(str(Path(root).resolve()), profile, fps)
    options = sweeps.StudyOptions(
        root=root,
        n_trials=n_trials,
        profile=profile,
        seeds=seeds,
        study_name=study_name,
        storage=storage,
        levels=levels,
        eval_clips=eval_clips,
        retry_failed=retry_failed,
        pruner=pruner,
        prepare=False,
    )
    result = sweeps.run_study(spec, options, run_fn=_run_trial_as_task, log=logger.info)
    key = artifact_key(result.study_name)
    counts = result.summary["trials"]
    note = (
        f"\n\nThis run: trials {result.ran or 'none (every requested point was done)'}; study folder "
        f"`{result.folder}`, Optuna storage `{result.storage}`. Rerun to continue the study."
    )
    create_markdown_artifact(result.markdown + note, key=f"{key}-summary", description=f"{result.study_name} summary")
    rows = summary_rows(result.summary)
    if rows:
        create_table_artifact(rows, key=f"{key}-levels", description=f"{result.study_name}: metrics per level")
    logger.info(f"{result.study_name}: best {result.summary['metric']} at {result.summary['best_level']}; {counts}")
    if result.ran:
        states = result.trials.set_index("trial")["state"]
        finished = [n for n in result.ran if states.get(n) == "COMPLETE"]
        if not finished:  # every trial this run started failed: the flow run must say so, not end Completed
            raise RuntimeError(
                f"{result.study_name}: all {len(result.ran)} trial(s) of this run failed ({result.ran}); see the "
                f"trials table in {result.folder} and each trial's run folder"
            )
    return {
        "study": result.study_name,
        "folder": str(result.folder),
        "ran": result.ran,
        "best_level": result.summary["best_level"],
        "trials": counts,
        "data": data,
    }


@flow(name="sweep-fps", log_prints=True)
def sweep_fps(
    n_trials: int = 2,
    profile: str | None = None,
    seeds: list[int] | None = None,
    study_name: str = "sweep-fps",
    storage: str | None = None,
    root: str = ".",
    levels: list[str] | None = None,
    eval_clips: int = 0,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Training frame rate 1, 2, 3, 4, 8, 30 fps (val clips always at data.val_fps): which rate is best?"""
    return run_sweep("sweep-fps", n_trials=n_trials, profile=profile, seeds=seeds, study_name=study_name,
                     storage=storage, root=root, levels=levels, eval_clips=eval_clips,
                     retry_failed=retry_failed)  # fmt: skip


@flow(name="sweep-codebook", log_prints=True)
def sweep_codebook(
    n_trials: int = 2,
    profile: str | None = None,
    seeds: list[int] | None = None,
    study_name: str = "sweep-codebook",
    storage: str | None = None,
    root: str = ".",
    levels: list[str] | None = None,
    quantizers: list[str] | None = None,
    eval_clips: int = 0,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Codebook size 2^8 ... 2^18 for FSQ, LFQ and VQ (`quantizers` picks some): quality and code use vs size."""
    spec = sweeps.get_study("sweep-codebook")
    chosen = levels or None
    if quantizers:
        unknown = sorted(set(quantizers) - {"fsq", "lfq", "vq"})
        if unknown:
            raise ValueError(f"quantizers must be among fsq, lfq, vq; got {', '.join(unknown)}")
        among = [spec.level(label) for label in levels] if levels else spec.levels
        chosen = [lv.label for lv in among if lv.regularizer in quantizers]
        if not chosen:
            raise ValueError(f"none of the levels {levels} uses the quantizers {quantizers}")
    return run_sweep("sweep-codebook", n_trials=n_trials, profile=profile, seeds=seeds, study_name=study_name,
                     storage=storage, root=root, levels=chosen, eval_clips=eval_clips,
                     retry_failed=retry_failed)  # fmt: skip


@flow(name="sweep-staging", log_prints=True)
def sweep_staging(
    n_trials: int = 2,
    profile: str | None = None,
    seeds: list[int] | None = None,
    study_name: str = "sweep-staging",
    storage: str | None = None,
    root: str = ".",
    levels: list[str] | None = None,
    eval_clips: int = 0,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """One stage at high resolution vs two stages split at 25/50/75 % of the step budget, decoder-only or whole
    model in stage 2; wall time and GPU hours next to quality."""
    return run_sweep("sweep-staging", n_trials=n_trials, profile=profile, seeds=seeds, study_name=study_name,
                     storage=storage, root=root, levels=levels, eval_clips=eval_clips,
                     retry_failed=retry_failed)  # fmt: skip


@flow(name="ablations", log_prints=True)
def ablations(
    n_trials: int = 2,
    profile: str | None = None,
    seeds: list[int] | None = None,
    study_name: str = "ablations",
    storage: str | None = None,
    root: str = ".",
    levels: list[str] | None = None,
    eval_clips: int = 0,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """The paper's ablations: AlphaBlender vs plain temporal conv, fixed vs learnable alpha, fully 3D, and VQ vs
    LFQ vs FSQ at 262,144 codes."""
    return run_sweep("ablations", n_trials=n_trials, profile=profile, seeds=seeds, study_name=study_name,
                     storage=storage, root=root, levels=levels, eval_clips=eval_clips,
                     retry_failed=retry_failed)  # fmt: skip


SWEEPS = (sweep_fps, sweep_codebook, sweep_staging, ablations)
