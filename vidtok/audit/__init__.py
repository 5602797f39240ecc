"""Reproducibility audit of a checkout (or of a run folder): is every committed number traceable to its source, and
every result to data, params and code?

    vidtok audit                       # committed results; the workspace too where this checkout has one
    vidtok audit --require-workspace   # the workspace checks required (a fresh clone fails them: no data, no runs)
    vidtok audit --rerun               # ... and re-evaluate the final checkpoint, comparing with the recorded metrics
    vidtok audit experiments/sweep-fps/runs/trial_3/stage2 --rerun      # one run folder

The checks, by what they need:
- committed files only (vidtok/audit/committed.py, studies.py): git; dvc-lock (dvc.lock's dependency chain);
  metrics and report (outputs/eval/metrics.json and outputs/report.md against dvc.lock and each other);
  trials:<study> (trials.parquet against optuna.journal, the trials' metrics files and run records), code:<study>
  (stale studies: made by other library code), summary:<study>, plot:<study> and findings (regenerated in memory
  by the functions that write them, compared byte for byte);
- the workspace (vidtok/audit/workspace.py: data/, the pipeline's run folders, the DVC cache): dvc-status, data,
  run / packages / checkpoint / identity per stage, metrics:run (the evaluation against the run that produced it)
  and rerun. A checkout with no workspace at all (a fresh clone) lists them as "not run here" with the command
  that makes one (`make run`, `dvc pull`); `--require-workspace` runs them anyway.

Every failure is one line naming the file, the trial or key, and what differs. A check that cannot verify what it
should fails; nothing is skipped silently. Writes outputs/audit/audit.json and audit.md (atomically; a run folder
keeps its own under RUN/audit). `vidtok audit` exits 0 when every check passes, 1 when one fails and 2 when the
audit cannot run (no such workspace or run folder).
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path

from vidtok.audit.committed import (
    PIPELINE_RUNS,
    check_dvc_lock,
    check_git,
    check_metrics,
    check_report,
    run_tool,
)
from vidtok.audit.record import AuditResult, Check, write_outputs
from vidtok.audit.studies import check_studies, check_summary, check_trials
from vidtok.audit.workspace import (
    DEFAULT_TOLERANCE,
    MAKE_WORKSPACE,
    check_checkpoint,
    check_data,
    check_dvc_status,
    check_identity,
    check_metrics_run,
    check_run,
    check_run_folder_metrics,
    rerun_evaluation,
    workspace_of,
    workspace_present,
)
from vidtok.runs import Outputs

__all__ = [
    "DEFAULT_TOLERANCE",
    "check_tolerance",
    "parse_tolerance",
    "AuditResult",
    "Check",
    "audit",
    "check_studies",
    "check_summary",
    "check_trials",
    "write_outputs",
]


def parse_tolerance(items: list[str]) -> dict[str, float]:
    """`--tolerance METRIC=NUMBER` items (repeatable) as a checked mapping; ValueError naming the bad item."""
    out: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--tolerance {item!r}: expected METRIC=NUMBER, e.g. psnr=0.01") from None
    return check_tolerance(out)


def check_tolerance(tolerance: dict[str, float]) -> dict[str, float]:
    """Re-run tolerances must name a recorded metric and be a finite number >= 0: a nan or inf tolerance would make
    every comparison pass (nan compares false, inf holds everything), and a misspelt name would be ignored."""
    for name, value in tolerance.items():
        if name not in DEFAULT_TOLERANCE:
            raise ValueError(f"--tolerance {name}: unknown metric; known: {', '.join(DEFAULT_TOLERANCE)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"--tolerance {name}={value}: must be a finite number >= 0")
    return dict(tolerance)


def audit(
    target: str | os.PathLike[str] = ".",
    *,
    rerun: bool = False,
    tolerance: dict[str, float] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    require_workspace: bool = False,
) -> AuditResult:
    """Audit the checkout `target` (the repository root, with dvc.yaml) or a single run folder (with a run.json).

    `require_workspace`: run the checks that need the workspace even where this checkout has none (they fail)."""
    path = Path(target).resolve()
    tol = {**DEFAULT_TOLERANCE, **check_tolerance(tolerance or {})}
    result = AuditResult(str(path), datetime.now(UTC).isoformat(timespec="seconds"), tolerance=tol if rerun else {})
    if (path / "run.json").is_file():  # one run folder, e.g. a sweep trial
        audit_run_folder(result, path, rerun=rerun, tolerance=tol, require_workspace=require_workspace)
    else:
        if not (path / "dvc.yaml").is_file():
            raise FileNotFoundError(f"{path}: neither a DVC workspace (dvc.yaml) nor a run folder (run.json)")
        audit_checkout(result, path, rerun=rerun, tolerance=tol, require_workspace=require_workspace)
    if out_dir is None:  # a run folder keeps its own audit; the workspace's goes to outputs/audit
        out_dir = path / "audit" if (path / "run.json").is_file() else Outputs(path).audit
    write_outputs(result, out_dir)
    return result


def audit_checkout(
    result: AuditResult, repo: Path, *, rerun: bool, tolerance: dict[str, float], require_workspace: bool
) -> None:
    """The committed results of `repo`, then its workspace (or, without one, the list of what was not run)."""
    present = workspace_present(repo)
    result.workspace = "present" if present else "required" if require_workspace else "absent"
    head = check_git(result, repo).get("commit")
    stages = check_dvc_lock(result, repo)
    record = check_metrics(result, repo, stages)
    check_report(result, repo, stages, record)
    check_studies(result, Outputs(repo).experiments)
    if not (present or require_workspace):
        result.not_run("dvc-status", "data/, the pipeline's outputs and the DVC cache", MAKE_WORKSPACE)
        result.not_run("data", "data/ and data.dvc's file listing in the DVC cache", MAKE_WORKSPACE)
        for run in PIPELINE_RUNS:
            result.not_run(f"run:{Path(run).name}", f"{run} (run.json, packages, checkpoint, identity)", MAKE_WORKSPACE)
        result.not_run("metrics:run", f"{PIPELINE_RUNS[-1]} and the evaluation's per-video and per-frame tables",
                       MAKE_WORKSPACE)  # fmt: skip
        if rerun:
            result.not_run("rerun", "the final checkpoint and the evaluation clips", MAKE_WORKSPACE)
        return
    check_dvc_status(result, repo)
    check_data(result, repo)
    run_record = None
    for run in PIPELINE_RUNS:
        if (repo / run / "run.json").is_file():
            run_record = check_run(result, repo / run, head)
            check_checkpoint(result, repo / run, run_record)
            check_identity(result, repo / run, run_record, repo)
        else:
            run_record = None
            result.add(f"run:{Path(run).name}", False, f"{run}: no run.json (`make run` or `dvc repro`)")
    check_metrics_run(result, repo, stages, record, run_record)
    if rerun:
        rerun_evaluation(result, record, repo / PIPELINE_RUNS[-1], run_record, tolerance)


def audit_run_folder(
    result: AuditResult, run_dir: Path, *, rerun: bool, tolerance: dict[str, float], require_workspace: bool
) -> None:
    """One run folder: its record and packages, its evaluation (which must exist), and where the workspace is
    here its checkpoint and identity."""
    repo = Path(run_tool(["git", "rev-parse", "--show-toplevel"], run_dir).stdout.strip() or run_dir)
    workspace = workspace_of(run_dir)
    present = workspace_present(workspace)
    result.workspace = "present" if present else "required" if require_workspace else "absent"
    head = check_git(result, repo).get("commit")
    run_record = check_run(result, run_dir, head)
    if present or require_workspace:
        check_checkpoint(result, run_dir, run_record)
        check_identity(result, run_dir, run_record, workspace)
    elif run_record is not None:
        enable = _study_command(run_dir) or MAKE_WORKSPACE
        needs = f"{run_dir.name}'s checkpoint (never committed)"
        result.not_run(f"checkpoint:{run_dir.name}", needs, enable)
        result.not_run(f"identity:{run_dir.name}", "the data it read and its parent checkpoint", enable)
    record = check_run_folder_metrics(result, repo, run_dir, run_record, workspace)
    if rerun and (present or require_workspace):
        rerun_evaluation(result, record, run_dir, run_record, tolerance)
    elif rerun:
        result.not_run(
            "rerun", "the final checkpoint and the evaluation clips", _study_command(run_dir) or MAKE_WORKSPACE
        )


def _study_command(run_dir: Path) -> str | None:
    """For a study trial's run folder (experiments/<study>/runs/trial_<n>/<stage>): the command that reruns the
    study (its study.json), which remakes the trial's checkpoint and data."""
    for folder in run_dir.parents[:3]:
        meta = folder / "study.json"
        if meta.is_file():
            try:
                command = json.loads(meta.read_text()).get("command")
            except (OSError, ValueError):
                return None
            return f"`{command}` (the study's run)" if command else None
    return None
