"""Reproducibility audit of the workspace (or of a run folder): is every result traceable to data, params and code?

    vidtok audit                 # the DVC workspace: pipeline status, data hashes, runs, checkpoints, metrics
    vidtok audit --rerun         # ... and re-evaluate the final checkpoint, comparing with the recorded metrics
    vidtok audit experiments/sweep-fps/runs/trial_3/stage2 --rerun      # one run folder

Checks (each pass / fail / skip with a one-line detail):
- dvc-status: `dvc status` is clean: data, params and code are what dvc.lock recorded (names changed stages,
  deps, params and outputs);
- data: every file under data/ has the md5 that data.dvc's directory listing records (names the changed file);
- git: the commit, and tracked files modified since it (dvc.lock excepted: it records outputs, which carry
  timestamps);
- run:<stage>: each run folder's run.json validates and records seed, device, git commit and package versions;
  packages:<stage> compares those versions with this environment; checkpoint:<stage> compares the final
  checkpoint's sha256 with run.json and its config.json;
- identity:<stage>: the run is still what the workspace would make: the library code (vidtok.runs.code_sha256),
  the data files it read (manifest, clip indexes), its parent checkpoint and its params (re-resolved from the
  params file, profile and overrides it recorded) hash as recorded; a stale run fails naming the changed input;
- trials:<study>: every finished trial of a committed study: its metrics files (val and test) hash to the sha256
  recorded when the trial finished, and the library code it recorded is this checkout's (its checkpoints and
  clip sets are not committed, so its data and parent checkpoint are not re-hashed here);
- metrics: the evaluation file is the one dvc.lock recorded, and it evaluated the checkpoint the run produced;
- rerun (with --rerun): the final checkpoint evaluated again on the same clips, every recorded metric compared
  within the stated tolerance.

A check that cannot verify what it should (a missing DVC cache listing, no git) fails; nothing is skipped silently.
Writes outputs/audit/audit.json and audit.md (atomically). `vidtok audit` exits 0 when every check passes, 1 when
one fails and 2 when the audit cannot run (no such workspace or run folder).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vidtok._files import atomic_write, dvc_command, md5_file, one_line, sha256_file, tool_env
from vidtok.data.config import DataConfig
from vidtok.evaluation.evaluate import EvalOptions, evaluate
from vidtok.runs import (
    RunRecord,
    RunRecordError,
    code_sha256,
    modified_tracked_files,
    package_versions,
    read_run_record,
    sha256_json,
)
from vidtok.studies.results import StudyFileError, read_trials
from vidtok.train.config import computing_config, config_snapshot, load_params

# Re-evaluating the same checkpoint on the same clips on the same machine repeats the computation; the tolerance
# absorbs thread-count and library-version float noise, not real differences (0.01 dB is far below any effect).
DEFAULT_TOLERANCE = {
    "psnr": 0.01,
    "ssim": 1e-4,
    "vmaf": 0.05,
    "lpips": 1e-4,
    "fvd": 0.5,
    "codebook_utilisation": 1e-6,
    "codebook_perplexity": 1e-3,
}
PIPELINE_RUNS = ("outputs/train/stage1", "outputs/train/stage2")
PIPELINE_EVAL = "outputs/eval/metrics.json"


@dataclass
class Check:
    name: str
    status: str  # pass | fail | skip
    detail: str


@dataclass
class AuditResult:
    target: str
    checked_at: str
    checks: list[Check] = field(default_factory=list)
    tolerance: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        self.checks.append(Check(name, "skip" if ok is None else "pass" if ok else "fail", detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "target": self.target,
            "checked_at": self.checked_at,
            "tolerance": self.tolerance,
            "checks": [asdict(c) for c in self.checks],
        }

    def table(self) -> str:
        width = max((len(c.name) for c in self.checks), default=4)
        lines = [f"{'check':{width}s}  result  detail", f"{'-' * width}  ------  ------"]
        lines += [f"{c.name:{width}s}  {c.status.upper():6s}  {c.detail}" for c in self.checks]
        verdict = "PASSED" if self.passed else f"FAILED ({sum(c.status == 'fail' for c in self.checks)} checks)"
        return "\n".join(lines) + f"\n\naudit {verdict}: {self.target}\n"

    def markdown(self) -> str:
        lines = [
            f"# Reproducibility audit: {'passed' if self.passed else 'FAILED'}",
            "",
            f"Target `{self.target}`, checked {self.checked_at}.",
            "",
            "| check | result | detail |",
            "|---|---|---|",
        ]
        lines += [f"| {c.name} | {c.status} | {c.detail.replace('|', '/')} |" for c in self.checks]
        if self.tolerance:
            lines += ["", "Re-run tolerance (absolute): " + ", ".join(f"{k} {v:g}" for k, v in self.tolerance.items())]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ helpers


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = tool_env()
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _describe_dvc_status(status: dict[str, Any]) -> str:
    """`dvc status --json` -> 'train-stage1: params changed (train.lr); evaluate: outs modified (...)'."""
    parts = []
    for stage, entries in status.items():
        changes = []
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, str):
                changes.append(entry)
                continue
            for kind, items in entry.items():
                if isinstance(items, dict):
                    names = []
                    for key, value in items.items():
                        if isinstance(value, dict):  # changed params: {params.yaml: {train.lr: modified}}
                            names += [f"{k} {v}" for k, v in value.items()]
                        else:
                            names.append(f"{key} {value}")
                    changes.append(f"{kind}: {', '.join(names)}")
                else:
                    changes.append(f"{kind}: {items}")
        parts.append(f"{stage}: {'; '.join(changes)}")
    return " | ".join(parts)


# ------------------------------------------------------------------------------------------------ checks


def check_dvc_status(result: AuditResult, repo: Path) -> None:
    proc = _run([*dvc_command(), "status", "--json"], repo)
    if proc.returncode:
        result.add("dvc-status", False, f"dvc status failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        return
    status = json.loads(proc.stdout or "{}")
    if not status:
        result.add("dvc-status", True, "data, params and code match dvc.lock; nothing to reproduce")
    else:
        result.add("dvc-status", False, _describe_dvc_status(status))


def check_data(result: AuditResult, repo: Path, name: str = "data") -> None:
    """Compare every file with the md5 listing of data.dvc's .dir object in the DVC cache."""

    dvc_file = repo / f"{name}.dvc"
    if not dvc_file.is_file():
        result.add("data", False, f"no {dvc_file.name}: the raw videos are not versioned (dvc add {name})")
        return
    out = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [{}])[0]
    md5 = str(out.get("md5", ""))
    listing_file = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    folder = repo / out.get("path", name)
    if not listing_file.is_file():
        result.add("data", False, f"{dvc_file.name}: its file listing {md5} is not in the DVC cache (dvc pull)")
        return
    listing = {e["relpath"]: e["md5"] for e in json.loads(listing_file.read_text())}
    present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}
    changed = [rel for rel, digest in listing.items() if rel in present and md5_file(present[rel]) != digest]
    missing = sorted(set(listing) - set(present))
    extra = sorted(set(present) - set(listing))
    problems = [f"modified {folder.name}/{r}" for r in changed] + [f"missing {folder.name}/{r}" for r in missing]
    problems += [f"not in {dvc_file.name}: {folder.name}/{r}" for r in extra]
    if problems:
        result.add("data", False, "; ".join(problems))
    else:
        result.add("data", True, f"{len(listing)} files match {dvc_file.name} ({md5})")


def check_git(result: AuditResult, repo: Path) -> dict[str, Any]:
    head = _run(["git", "rev-parse", "HEAD"], repo)
    if head.returncode:
        result.add("git", False, "not a git repository: the code behind the results cannot be named")
        return {}
    commit = head.stdout.strip()

    modified = modified_tracked_files(_run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout)
    if modified:
        result.add("git", False, f"commit {commit[:10]} with modified tracked files: {', '.join(modified[:6])}")
    else:
        result.add("git", True, f"commit {commit[:10]}, no modified tracked files")
    return {"commit": commit, "modified": modified}


def check_run(result: AuditResult, run_dir: Path, head: str | None) -> Any:
    """The run record, the package versions it recorded and the integrity of its final checkpoint."""

    label = run_dir.name
    try:
        run_record = read_run_record(run_dir)
    except RunRecordError as err:
        result.add(f"run:{label}", False, str(err))
        return None
    git = run_record.git or {}
    device = run_record.device or {}
    recorded = (
        f"seed {run_record.seed}, {device.get('accelerator', '?')} x{device.get('world_size', 1)}, "
        f"commit {str(git.get('commit'))[:10]}{' (dirty)' if git.get('dirty') else ''}, status {run_record.status}"
    )
    ok = run_record.status == "completed" and git.get("commit") is not None and not git.get("dirty")
    if head and git.get("commit") and git["commit"] != head:
        recorded += f"; made at an older commit than HEAD {head[:10]} (dvc-status says whether code changed)"
    result.add(f"run:{label}", ok, recorded)
    now = package_versions()
    diffs = [f"{k} {v} -> {now.get(k)}" for k, v in (run_record.packages or {}).items() if now.get(k) != v]
    result.add(f"packages:{label}", not diffs, "; ".join(diffs) if diffs else f"{len(now)} packages as recorded")
    if run_record.final_checkpoint is None:
        result.add(f"checkpoint:{label}", False, "no final checkpoint recorded")
        return run_record
    weights = run_dir / run_record.final_checkpoint / "model.safetensors"
    config = run_dir / run_record.final_checkpoint / "config.json"
    if not weights.is_file():
        result.add(f"checkpoint:{label}", False, f"{weights}: missing")
        return run_record
    actual = sha256_file(weights)
    recorded_cfg = json.loads(config.read_text()).get("weights_sha256") if config.is_file() else None
    if actual != run_record.final_checkpoint_sha256 or actual != recorded_cfg:
        result.add(
            f"checkpoint:{label}",
            False,
            f"{weights}: sha256 {actual[:12]} differs from run.json {str(run_record.final_checkpoint_sha256)[:12]}"
            f" / config.json {str(recorded_cfg)[:12]}",
        )
    else:
        result.add(f"checkpoint:{label}", True, f"{weights.relative_to(run_dir)} sha256 {actual[:12]} as recorded")
    return run_record


def identity_problems(run_dir: Path, run_record: RunRecord, workspace: Path) -> list[str]:
    """What no longer matches a run's recorded identity in `workspace`, one phrase each (empty: still valid)."""
    recorded = run_record.identity or {}
    problems = []
    code = code_sha256("train")
    if recorded.get("code_sha256") != code:
        problems.append(f"code changed: sha256 {str(recorded.get('code_sha256'))[:12]} -> {code[:12]}")
    for rel, digest in sorted(run_record.data_files.items()):
        path = Path(rel) if os.path.isabs(rel) else workspace / rel
        now = sha256_file(path) if path.is_file() else "missing"
        if now != digest:
            problems.append(f"data changed: {rel} sha256 {digest[:12]} -> {now[:12]}")
    parent = run_record.parent_checkpoint
    if parent is not None:
        path = Path(parent) if os.path.isabs(parent) else workspace / parent
        weights = path / "model.safetensors"
        now = sha256_file(weights) if weights.is_file() else "missing"
        if now != recorded.get("parent_sha256"):
            problems.append(
                f"parent checkpoint changed: {parent} sha256 {str(recorded.get('parent_sha256'))[:12]} -> {now[:12]}"
            )
    params = run_record.params or {}
    file = params.get("file")
    if file is not None:
        path = Path(file) if os.path.isabs(file) else workspace / file
        if not path.is_file():
            problems.append(f"params file {file} is gone")
        else:
            try:
                loaded = load_params(path, params.get("profile"), params.get("overrides") or [], stage=run_record.stage)
            except (ValueError, FileNotFoundError) as err:
                problems.append(f"params no longer load: {one_line(err)}")
            else:
                now = sha256_json(computing_config(config_snapshot(*loaded)))
                if now != recorded.get("params_sha256"):
                    problems.append(
                        f"params changed: {file} (profile {params.get('profile')}) now gives sha256 {now[:12]}, "
                        f"the run recorded {str(recorded.get('params_sha256'))[:12]}"
                    )
    return problems


def check_identity(result: AuditResult, run_dir: Path, run_record: RunRecord | None, workspace: Path) -> None:
    label = f"identity:{run_dir.name}"
    if run_record is None:
        return
    cwd = Path.cwd()
    try:
        os.chdir(workspace)  # run records hold paths relative to the workspace the run started in
        problems = identity_problems(run_dir, run_record, workspace)
    finally:
        os.chdir(cwd)
    if problems:
        result.add(label, False, f"{run_dir} is stale: " + "; ".join(problems))
    else:
        result.add(label, True, "code, data, parent checkpoint and params hash as the run recorded")


def check_trials(result: AuditResult, study_dir: Path) -> None:
    """A committed study: each finished trial's metrics file is the one it recorded, made by the current code."""
    label = f"trials:{study_dir.name}"
    try:
        df = read_trials(study_dir)
    except StudyFileError as err:
        result.add(label, False, str(err))
        return
    done = df[df["state"] == "COMPLETE"]
    code = code_sha256("study")
    problems = []
    for row in done.itertuples():
        where = f"trial {row.trial} ({row.level}, seed {row.seed})"
        if not isinstance(row.metrics_path, str) or not isinstance(row.metrics_sha256, str):
            problems.append(f"{where}: no metrics file sha256 recorded")
            continue
        files = [(row.metrics_path, row.metrics_sha256)]
        if isinstance(row.test_metrics_path, str) and isinstance(row.test_metrics_sha256, str):
            files.append((row.test_metrics_path, row.test_metrics_sha256))
        elif pd.notna(row.test_psnr):
            problems.append(f"{where}: a test PSNR without its metrics file's sha256")
        for relative, recorded in files:
            path = study_dir / relative
            now = sha256_file(path) if path.is_file() else "missing"
            if now != recorded:
                problems.append(f"{where}: {relative} sha256 {recorded[:12]} -> {now[:12]} (edited?)")
        if row.code_sha256 != code:
            problems.append(f"{where}: code changed since (sha256 {str(row.code_sha256)[:12]} -> {code[:12]})")
    if problems:
        more = f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
        result.add(label, False, "; ".join(problems[:4]) + more)
    else:
        result.add(label, True, f"{len(done)} finished trials: metrics files and code as recorded")


def check_metrics_file(result: AuditResult, repo: Path, metrics_path: Path, final_sha: str | None) -> dict | None:
    """The evaluation file is what dvc.lock recorded and names the checkpoint the run produced."""

    if not metrics_path.is_file():
        result.add("metrics", False, f"{metrics_path}: missing (run `dvc repro evaluate`)")
        return None
    try:
        record = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as err:
        result.add("metrics", False, f"{metrics_path}: not valid JSON ({err})")
        return None
    problems = []
    lock = repo / "dvc.lock"
    rel = (
        metrics_path.resolve().relative_to(repo.resolve()).as_posix()
        if metrics_path.is_absolute()
        else metrics_path.as_posix()
    )
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        recorded = [o.get("md5") for s in stages.values() for o in s.get("outs", []) if o.get("path") == rel]
        if recorded and recorded[0] != md5_file(metrics_path):
            problems.append(f"{rel}: md5 {md5_file(metrics_path)[:12]} differs from dvc.lock {recorded[0][:12]}")
    ck_sha = (record.get("checkpoint") or {}).get("weights_sha256")
    if final_sha and ck_sha != final_sha:
        problems.append(f"{rel} evaluated weights {str(ck_sha)[:12]}, the run's final checkpoint is {final_sha[:12]}")
    if problems:
        result.add("metrics", False, "; ".join(problems))
    else:
        result.add("metrics", True, f"{rel} as recorded, evaluating checkpoint {str(ck_sha)[:12]}")
    return record


def check_rerun(
    result: AuditResult, record: dict[str, Any], checkpoint: Path, data: Any, tolerance: dict[str, float]
) -> None:
    """Evaluate the checkpoint again on the same clips and compare every recorded metric."""

    protocol = record.get("data") or {}
    with tempfile.TemporaryDirectory() as tmp:
        options = EvalOptions(
            split=protocol.get("split", "val"),
            resolution=int(str(protocol.get("resolution", "0x0")).split("x")[0]) or None,
            fps=protocol.get("fps"),
            max_clips=int(protocol.get("num_clips") or 0),
            vmaf="value" in (record.get("metrics", {}).get("vmaf") or {}),
            num_videos=0,
        )
        fresh = evaluate(checkpoint, data, options, out_dir=tmp, progress=False)
    if fresh.get("data", {}).get("clip_index_sha256") != protocol.get("clip_index_sha256"):
        result.add("rerun", False, "the clip index changed since the evaluation (the rerun saw other clips)")
        return
    diffs, compared = [], []
    for name, entry in (record.get("metrics") or {}).items():
        if "value" not in entry:
            continue
        new = (fresh["metrics"].get(name) or {}).get("value")
        tol = tolerance.get(name, 1e-6)
        compared.append(name)
        if new is None or not math.isfinite(new) or abs(new - entry["value"]) > tol:
            diffs.append(
                f"{name} recorded {entry['value']:.6g}, rerun {new if new is None else format(new, '.6g')}"
                f" (tolerance {tol:g})"
            )
    if diffs:
        result.add("rerun", False, "; ".join(diffs))
    else:
        result.add("rerun", True, f"{', '.join(compared)} reproduced within tolerance")


# ------------------------------------------------------------------------------------------------ entry point


def write_outputs(result: AuditResult, out_dir: str | os.PathLike[str]) -> Path:
    folder = Path(out_dir)
    atomic_write(folder / "audit.md", result.markdown())
    atomic_write(folder / "audit.json", json.dumps(result.as_dict(), indent=2) + "\n")
    return folder


def audit(
    target: str | os.PathLike[str] = ".",
    *,
    rerun: bool = False,
    tolerance: dict[str, float] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> AuditResult:
    """Audit the DVC workspace `target` (the repository root) or a single run folder (with a run.json)."""
    path = Path(target).resolve()
    tol = {**DEFAULT_TOLERANCE, **(tolerance or {})}
    result = AuditResult(str(path), datetime.now(UTC).isoformat(timespec="seconds"), tolerance=tol if rerun else {})
    if (path / "run.json").is_file():  # one run folder, e.g. a sweep trial
        repo = Path(_run(["git", "rev-parse", "--show-toplevel"], path).stdout.strip() or path)
        head = check_git(result, repo).get("commit")
        run_record = check_run(result, path, head)
        check_identity(result, path, run_record, _workspace_of(path))
        metrics_path = path / "eval" / "metrics.json"
        if not metrics_path.is_file():
            metrics_path = path.parent / "eval" / "metrics.json"
        record = None
        if metrics_path.is_file() and run_record is not None:
            record = check_metrics_file(result, repo, metrics_path, run_record.final_checkpoint_sha256)
        if rerun:
            _rerun(result, record, path, run_record, tol)
    else:
        repo = path
        if not (repo / "dvc.yaml").is_file():
            raise FileNotFoundError(f"{repo}: neither a DVC workspace (dvc.yaml) nor a run folder (run.json)")
        check_dvc_status(result, repo)
        check_data(result, repo)
        head = check_git(result, repo).get("commit")
        run_record = None
        for run in PIPELINE_RUNS:
            if (repo / run / "run.json").is_file():
                run_record = check_run(result, repo / run, head)
                check_identity(result, repo / run, run_record, repo)
            else:
                result.add(f"run:{Path(run).name}", False, f"{run}: no run.json (run `dvc repro`)")
        for study in sorted((repo / "experiments").glob("*/trials.parquet")):
            check_trials(result, study.parent)
        final_sha = None if run_record is None else run_record.final_checkpoint_sha256
        record = check_metrics_file(result, repo, repo / PIPELINE_EVAL, final_sha)
        if rerun:
            _rerun(result, record, repo / PIPELINE_RUNS[-1], run_record, tol)
    if out_dir is None:  # a run folder keeps its own audit; the workspace's goes to outputs/audit
        out_dir = path / "audit" if (path / "run.json").is_file() else path / "outputs" / "audit"
    write_outputs(result, out_dir)
    return result


def _rerun(result: AuditResult, record: dict | None, run_dir: Path, run_record: Any, tol: dict[str, float]) -> None:
    if record is None or run_record is None or run_record.final_checkpoint is None:
        result.add("rerun", None, "nothing to re-evaluate (no metrics or no final checkpoint)")
        return

    data = DataConfig.from_dict(run_record.config.get("data", {}))
    cwd = Path.cwd()
    try:
        # Run paths in the run_record's data config (clip index, cache) are relative to the workspace root.
        os.chdir(_workspace_of(run_dir))
        check_rerun(result, record, run_dir / run_record.final_checkpoint, data, tol)
    finally:
        os.chdir(cwd)


def _workspace_of(run_dir: Path) -> Path:
    for parent in [run_dir, *run_dir.parents]:
        if (parent / "dvc.yaml").is_file() or (parent / "params.yaml").is_file():
            return parent
    return Path.cwd()
