"""The tables the pages draw: the per-setting statistics of vidtok.studies.results (the numbers summary.md holds),
shaped for tables and charts, and flat parameter/metric diffs of two runs.

    python -m dashboard.analysis experiments/sweep-fps      # print the per-setting table of a study

Nothing here computes a statistic: the mean, sample std, n and best setting come from
vidtok.studies.results.summarize (flattened by results.level_table), so a study page and its summary.md cannot
disagree; which metrics are better when lower is vidtok.formats.LOWER_IS_BETTER.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard import data
from vidtok.formats import LOWER_IS_BETTER
from vidtok.studies import results

QUALITY = ("psnr", "ssim", "vmaf", "lpips", "fvd")
LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "vmaf": "VMAF",
    "lpips": "LPIPS",
    "fvd": "FVD",
    "trivial_psnr": "trivial codec PSNR (dB)",
    "codebook_utilisation": "codebook utilisation",
    "perplexity": "codebook perplexity",
    "train_wall_s": "train wall time (s)",
    "gpu_hours": "GPU hours",
    "fps": "training frame rate (fps)",
    "log2_codes": "codebook size (log2 codes)",
    "schedule": "staging schedule",
    "variant": "variant",
}


def label(name: str) -> str:
    return LABELS.get(name, name)


def better(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def available(df: pd.DataFrame, names: tuple[str, ...] | list[str]) -> list[str]:
    """The metrics that hold at least one value (LPIPS without real trunk weights, VMAF not requested: none)."""
    return [n for n in names if n in df.columns and df[n].notna().any()]


def setting_stats(trials: pd.DataFrame, metric: str, metrics: list[str]) -> pd.DataFrame:
    """One row per setting (level) of the COMPLETE trials, as vidtok.studies.results.summarize computes them with
    `metric` choosing the best: n, seeds, <m>_mean, <m>_std, <m>_n, <m>_lo / <m>_hi for each of `metrics`, `best`
    (results.level_table)."""
    return results.level_table(results.summarize(trials, metric), metrics)


def display_table(stats: pd.DataFrame, metrics: list[str], factor: str) -> pd.DataFrame:
    """The per-setting table as shown and downloaded: mean, std and n per metric (4 decimals: a std of identical
    values is float noise such as 4e-15, shown as 0), the best setting marked."""
    cols: dict[str, Any] = {label(factor): stats["level"]}
    if stats["regularizer"].notna().any():
        cols["regularizer"] = stats["regularizer"]
    if stats["level_value"].notna().any():
        cols["value"] = stats["level_value"]
    cols["seeds (n)"] = stats["n"]
    for m in metrics:
        cols[f"{m} mean"] = stats[f"{m}_mean"].round(4)
        cols[f"{m} std"] = stats[f"{m}_std"].round(4)
    if "best" in stats.columns:
        cols["best"] = stats["best"].map({True: "best", False: ""})
    return pd.DataFrame(cols)


def study_metric(study_json: dict[str, Any] | None) -> str:
    metric = (study_json or {}).get("metric") or "psnr"
    return metric if metric in QUALITY else "psnr"


# ------------------------------------------------------------------------------------------------ diffs


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; lists stay values (shown as JSON)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: obj}


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def diff_table(a: dict[str, Any], b: dict[str, Any], only_changed: bool = True) -> pd.DataFrame:
    """key, A, B, and B - A for numbers; only the keys whose values differ unless `only_changed` is False."""
    rows = []
    for key in sorted(set(a) | set(b)):
        va, vb = _cell(a.get(key)), _cell(b.get(key))
        changed = va != vb
        if only_changed and not changed:
            continue
        delta = None
        if isinstance(va, int | float) and isinstance(vb, int | float) and not isinstance(va, bool):
            delta = float(vb) - float(va)
        rows.append({"key": key, "A": _text(va), "B": _text(vb), "B - A": delta, "changed": changed})
    return pd.DataFrame(rows, columns=["key", "A", "B", "B - A", "changed"])


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@dataclass
class Candidate:
    """Something with parameters and metrics to compare: a pipeline run folder or a study trial."""

    label: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def _eval_for_run(base: Path, run_dir: Path) -> dict[str, Any] | None:
    """The evaluation of a run: RUN/eval/metrics.json, or an eval folder whose checkpoint lies in the run folder."""
    for folder in [run_dir / "eval", *data.eval_folders(base)]:
        try:
            record = data.read_eval(folder)
        except data.DataError:
            continue
        if record is None:
            continue
        if folder == run_dir / "eval":
            return record
        ckpt = Path(str((record.get("checkpoint") or {}).get("path") or ""))
        ckpt = ckpt if ckpt.is_absolute() else base / ckpt
        if run_dir.resolve() in ckpt.resolve().parents:
            return record
    return None


def candidates(base: Path) -> tuple[list[Candidate], list[str]]:
    """Pipeline run folders and the trials of every study, with their flat params and metrics; the problems met
    (one line each) for files that could not be read."""
    found: list[Candidate] = []
    problems: list[str] = []
    for run_dir in data.pipeline_runs(base):
        try:
            run_record = data.read_run_record(run_dir)
            curve = data.read_val_curve(run_dir, run_record)
        except data.DataError as err:
            problems.append(str(err))
            continue
        if run_record is None:
            continue
        params = flatten({"config": run_record["config"], "params": run_record["params"]})
        params |= {
            "seed": run_record["seed"],
            "stage": run_record["stage"],
            "data_sha256": (run_record.get("identity") or {}).get("data_sha256"),
        }
        params |= {"git.commit": run_record["git"]["commit"], "git.dirty": run_record["git"]["dirty"]}
        metrics: dict[str, Any] = {
            "steps_completed": run_record["steps_completed"],
            "wall_time_s": run_record["wall_time_s"],
        }
        if curve is not None and len(curve):
            last = curve.iloc[-1]
            metrics |= {f"val.{c}": float(last[c]) for c in curve.columns if c != "step" and pd.notna(last[c])}
        evaluation = _eval_for_run(base, run_dir)
        if evaluation is not None:
            metrics |= {f"eval.{k}": v for k, v in evaluation["summary"].items()}
        found.append(Candidate(f"run {data.display(run_dir)} ({run_record['status']})", params, metrics))
    for name, folder in data.study_dirs(base).items():
        try:
            trials = data.read_trials(folder)
        except data.DataError as err:
            problems.append(str(err))
            continue
        if trials is None:
            continue
        for row in trials.to_dict("records"):
            try:
                params = flatten(json.loads(row["params_json"]))
            except (TypeError, json.JSONDecodeError):
                params = {"params_json": row["params_json"]}
            params |= {"seed": row["seed"], f"study.{row['factor']}": row["level"]}
            if row.get("regularizer") is not None and not pd.isna(row.get("regularizer")):
                params["study.regularizer"] = row["regularizer"]
            metrics = {
                m: row[m]
                for m in (*QUALITY, "trivial_psnr", "codebook_utilisation", "perplexity", "train_wall_s", "gpu_hours")
                if m in row and pd.notna(row[m])
            }
            metrics["state"] = row["state"]
            tag = f"{name} trial {row['trial']} ({row['factor']}={row['level']}, seed {row['seed']}, {row['state']})"
            found.append(Candidate(tag, params, metrics))
    return found, problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m dashboard.analysis STUDY_DIR", file=sys.stderr)
        return 2
    try:
        trials = data.read_trials(Path(argv[0]))
    except data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if trials is None:
        print(f"error: {argv[0]}: no trials.parquet", file=sys.stderr)
        return 1
    metrics = available(trials, QUALITY)
    factor = str(trials["factor"].iloc[0]) if len(trials) else "level"
    table = display_table(setting_stats(trials, metrics[0] if metrics else "psnr", metrics), metrics, factor)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
