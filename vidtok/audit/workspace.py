"""The checks that need the workspace: the raw data, the pipeline's run folders and checkpoints, the DVC cache.

    vidtok audit --require-workspace     # run them even where there is no workspace (they fail there)
    vidtok audit --rerun                 # ... and re-evaluate the final checkpoint, comparing with the metrics

- dvc-status: `dvc status` is clean: data, params and code are what dvc.lock recorded (names changed stages,
  deps, params and outputs);
- data: every file under data/ has the md5 that data.dvc's directory listing records (names the changed file);
- run:<stage>: each run folder's run.json validates and records seed, device, git commit and package versions;
  packages:<stage> compares those versions with this environment; checkpoint:<stage> compares the final
  checkpoint's sha256 with run.json and its config.json;
- identity:<stage>: the run is still what the workspace would make: the library code (vidtok.runs.code_sha256),
  the data files it read (manifest, clip indexes), its parent checkpoint and its params (re-resolved from the
  params file, profile and overrides it recorded) hash as recorded; a stale run fails naming the changed input;
- metrics:run: outputs/eval/metrics.json evaluated the checkpoint the run produced, and its numbers are those of
  the evaluation's per-video and per-frame tables (which carry dvc.lock's md5s);
- rerun (with --rerun): the final checkpoint evaluated again on the same clips, every recorded metric compared
  within the stated tolerance.

A checkout has a workspace when any of data/, outputs/data, outputs/train or the DVC cache is there
(`workspace_present`): then every check here runs, and a missing part fails. A checkout with none of them, a fresh
clone, lists these checks as "not run here" with the command that makes the workspace.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from vidtok._files import dvc_command, md5_file, one_line, sha256_file
from vidtok.audit.committed import (
    PIPELINE_EVAL,
    PIPELINE_RUNS,
    TABLE_REL_TOL,
    lock_md5_problems,
    metrics_problems,
    per_video_problems,
    read_lock,
    recorded_md5s,
    run_tool,
    short,
)
from vidtok.audit.record import AuditResult
from vidtok.data.config import DataConfig
from vidtok.evaluation.evaluate import EvalOptions, evaluate
from vidtok.formats import read_metrics_record
from vidtok.runs import (
    OUTPUTS,
    RunRecord,
    RunRecordError,
    code_sha256,
    package_versions,
    read_run_record,
    sha256_json,
)
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
# What makes a checkout a workspace (any one of them), and the commands that make one.
WORKSPACE_PARTS = ("data", str(OUTPUTS.data), str(OUTPUTS.train), ".dvc/cache")
MAKE_WORKSPACE = "`make run` (or `dvc pull` from a DVC remote)"
EVAL_TABLES = (str(OUTPUTS.eval / "per_video.csv"), str(OUTPUTS.eval / "per_frame.csv"))


# ------------------------------------------------------------------------------------------------ the workspace


def workspace_present(repo: Path) -> bool:
    """Whether `repo` holds a workspace: any of data/ (not empty), outputs/data, outputs/train or the DVC cache."""
    for part in WORKSPACE_PARTS:
        path = repo / part
        if path.is_dir() and any(path.iterdir()):
            return True
    return False


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
    proc = run_tool([*dvc_command(), "status", "--json"], repo)
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


def check_run(result: AuditResult, run_dir: Path, head: str | None) -> RunRecord | None:
    """The run record and the package versions it recorded (run:<stage>, packages:<stage>)."""

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
    return run_record


def check_checkpoint(result: AuditResult, run_dir: Path, run_record: RunRecord | None) -> None:
    """checkpoint:<stage>: the final checkpoint's sha256 against run.json and its config.json."""
    label = run_dir.name
    if run_record is None:
        return
    if run_record.final_checkpoint is None:
        result.add(f"checkpoint:{label}", False, "no final checkpoint recorded")
        return
    weights = run_dir / run_record.final_checkpoint / "model.safetensors"
    config = run_dir / run_record.final_checkpoint / "config.json"
    if not weights.is_file():
        result.add(f"checkpoint:{label}", False, f"{weights}: missing")
        return
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


def identity_problems(run_record: RunRecord, workspace: Path) -> list[str]:
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
        problems = identity_problems(run_record, workspace)
    finally:
        os.chdir(cwd)
    if problems:
        result.add(label, False, f"{run_dir} is stale: " + "; ".join(problems))
    else:
        result.add(label, True, "code, data, parent checkpoint and params hash as the run recorded")


# ------------------------------------------------------------------------------------------------ evaluations


def check_metrics_run(
    result: AuditResult,
    repo: Path,
    stages: dict[str, Any],
    record: dict[str, Any] | None,
    run_record: RunRecord | None,
) -> None:
    """metrics:run: outputs/eval/metrics.json against the run that produced it and the evaluation's own tables."""
    label = "metrics:run"
    if record is None:
        result.add(label, False, f"{PIPELINE_EVAL}: missing or unreadable (see metrics): nothing to trace")
        return
    problems = []
    weights = str((record.get("checkpoint") or {}).get("weights_sha256"))
    final = None if run_record is None else run_record.final_checkpoint_sha256
    if final is None:
        problems.append(f"{PIPELINE_RUNS[-1]}: no final checkpoint recorded: {PIPELINE_EVAL} traces to no run")
    elif weights != final:
        problems.append(f"{PIPELINE_EVAL} evaluated weights {weights[:12]}, the run's final checkpoint is {final[:12]}")
    for relative in EVAL_TABLES:
        path = repo / relative
        if not path.is_file():
            problems.append(f"{relative}: missing (`dvc repro evaluate`, or `dvc checkout` from the cache)")
            continue
        problems += lock_md5_problems(stages, path, relative)
        if not recorded_md5s(stages, relative):
            problems.append(f"{relative}: dvc.lock records no md5 for it")
    problems += per_video_problems(record, repo / EVAL_TABLES[0], EVAL_TABLES[0])
    problems += per_frame_problems(record, repo / EVAL_TABLES[1], EVAL_TABLES[1])
    result.add_problems(
        label,
        problems,
        f"{PIPELINE_EVAL} evaluated {PIPELINE_RUNS[-1]}'s final checkpoint {weights[:12]}; its numbers are those of "
        "per_video.csv and per_frame.csv (with dvc.lock's md5s)",
    )


def per_frame_problems(record: dict[str, Any], table: Path, where: str) -> list[str]:
    """The evaluation's per_frame.csv against its pooled values: PSNR and SSIM are means over all frames."""
    if not table.is_file():
        return []
    try:
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
        columns = {name: [float(r[name]) for r in rows] for name in ("psnr", "ssim")}
    except (OSError, KeyError, ValueError) as err:
        return [f"{where}: unreadable ({one_line(err, with_type=True)})"]
    problems = []
    data = record.get("data") or {}
    frames = data.get("num_clips", 0) * data.get("clip_length", 0)
    if len(rows) != frames:
        problems.append(f"{where}: {len(rows)} frames, the metrics file scored {frames}")
    for name, values in columns.items():
        value = ((record.get("metrics") or {}).get(name) or {}).get("value")
        if not values or not isinstance(value, int | float):
            continue
        mean = math.fsum(values) / len(values)
        if not math.isclose(mean, value, rel_tol=TABLE_REL_TOL):
            problems.append(f"{where}: mean {name} {mean:.6g} but the metrics file says {short(value)}")
    return problems


def check_run_folder_metrics(
    result: AuditResult, repo: Path, run_dir: Path, run_record: RunRecord | None, workspace: Path
) -> Any:
    """metrics (one run folder): its evaluation must exist (eval/metrics.json in the run folder or beside it, as a
    study trial keeps it; outputs/eval/metrics.json for the pipeline's runs), agree with itself and its
    per_video.csv, carry dvc.lock's md5 where dvc.lock names it, and have scored the run's final checkpoint, or that
    of the next stage continuing from it (a stage-1 run is evaluated through its stage 2). Returns the evaluation
    record (None when there is none)."""
    candidates = [run_dir / "eval" / "metrics.json", run_dir.parent / "eval" / "metrics.json"]
    if any(run_dir.resolve() == (workspace / run).resolve() for run in PIPELINE_RUNS):
        candidates.append(workspace / PIPELINE_EVAL)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        result.add(
            "metrics",
            False,
            f"{run_dir}: no eval/metrics.json in the run folder or beside it: its results were never evaluated or "
            f"the evaluation is gone (`vidtok evaluate --checkpoint {run_dir}`)",
        )
        return None
    shown = os.path.relpath(path, repo) if path.is_relative_to(repo) else str(path)
    try:
        record = read_metrics_record(path)
    except ValueError as err:
        result.add("metrics", False, str(err))
        return None
    problems = metrics_problems(record, shown) + per_video_problems(
        record, path.with_name("per_video.csv"), os.path.join(os.path.dirname(shown), "per_video.csv")
    )
    try:
        problems += lock_md5_problems(read_lock(repo), path, Path(shown).as_posix())
    except ValueError as err:
        problems.append(one_line(err))
    weights = str((record.get("checkpoint") or {}).get("weights_sha256"))
    scored = "this run's final checkpoint"
    final = None if run_record is None else run_record.final_checkpoint_sha256
    if run_record is not None and weights != final:
        after = _continued_by(run_dir, final, weights)
        if after is None:
            problems.append(
                f"{shown} evaluated weights {weights[:12]}, the run's final checkpoint is {str(final)[:12]}"
            )
        scored = f"the final checkpoint of {after}, which continued from this run's"
    result.add_problems(
        "metrics",
        problems,
        f"{shown} scored {scored} ({weights[:12]}); its numbers agree with each other and with its per_video.csv",
    )
    return record


def _continued_by(run_dir: Path, final: str | None, weights: str) -> str | None:
    """The sibling stage (stage2 beside stage1) that started from `final` and ended at `weights`, if there is one."""
    for sibling in sorted(run_dir.parent.iterdir()):
        if sibling == run_dir or not (sibling / "run.json").is_file():
            continue
        try:
            record = read_run_record(sibling)
        except RunRecordError:
            continue
        if final is not None and record.parent_checkpoint_sha256 == final and record.final_checkpoint_sha256 == weights:
            return sibling.name
    return None


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


def rerun_evaluation(
    result: AuditResult, record: dict | None, run_dir: Path, run_record: RunRecord | None, tol: dict[str, float]
) -> None:
    if record is None or run_record is None or run_record.final_checkpoint is None:
        result.add("rerun", None, "nothing to re-evaluate (no metrics or no final checkpoint)")
        return

    data = DataConfig.from_dict(run_record.config.get("data", {}))
    cwd = Path.cwd()
    try:
        # Run paths in the run_record's data config (clip index, cache) are relative to the workspace root.
        os.chdir(workspace_of(run_dir))
        check_rerun(result, record, run_dir / run_record.final_checkpoint, data, tol)
    finally:
        os.chdir(cwd)


def workspace_of(run_dir: Path) -> Path:
    """The workspace a run folder belongs to: the nearest folder above it with dvc.yaml or params.yaml."""
    for parent in [run_dir, *run_dir.parents]:
        if (parent / "dvc.yaml").is_file() or (parent / "params.yaml").is_file():
            return parent
    return Path.cwd()
