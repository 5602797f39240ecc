"""Study results on disk: the trials table every sweep writes and the dashboard reads, and its summary.

    python -m vidtok.studies.results experiments/sweep-fps      # validate trials.parquet and print the summary table

A study answers one open question of the paper by varying one factor over levels, with several seeds per level:

    experiments/<study>/
      study.json         what was asked: factor, levels, seeds, profile, metric, Optuna storage URL
      optuna.journal     Optuna JournalStorage (default storage; a PostgreSQL URL works instead)
      trials.parquet     one row per trial (TrialsSchema below), rewritten atomically after every trial
      summary.json       per level: mean, std and n over seeds of every metric; the best level
      summary.md         the same as a markdown table (also published as a Prefect artifact)
      runs/trial_<n>/    the trial's pipeline run folders (run.json manifests, checkpoints, eval/metrics.json)

`factor` names what the study varies: "fps" (training frame rate), "log2_codes" (codebook size as bits per
token, with `regularizer` fsq / lfq / vq), "schedule" (staging schedule) or "variant" (architecture / quantizer
ablation). `level` is the level's label; `level_value` its number where one exists (fps, bits, the stage-1
share of the step budget) so plots can use a numeric axis.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from vidtok._files import atomic_write, write_table

TRIALS_NAME = "trials.parquet"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
STUDY_JSON = "study.json"
FACTORS = ("fps", "log2_codes", "schedule", "variant")
STATES = ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")
# Quality metrics, higher is better except lpips and fvd.
METRICS = ("psnr", "ssim", "vmaf", "lpips", "fvd", "trivial_psnr", "codebook_utilisation", "perplexity")
LOWER_IS_BETTER = ("lpips", "fvd")


class StudyFileError(ValueError):
    """A trials table that is missing, unreadable or does not match TrialsSchema: one line naming the file."""


class TrialsSchema(pa.DataFrameModel):
    """One row per Optuna trial of a study."""

    study: Series[str]
    trial: Series[int] = pa.Field(ge=0)
    state: Series[str] = pa.Field(isin=list(STATES))
    factor: Series[str] = pa.Field(isin=list(FACTORS))
    level: Series[str]
    level_value: Series[float] = pa.Field(nullable=True)
    seed: Series[int] = pa.Field(ge=0)
    regularizer: Series[str] = pa.Field(nullable=True)  # kl / fsq / lfq / vq / none for codebook and variant studies
    psnr: Series[float] = pa.Field(nullable=True, ge=0, le=100)
    ssim: Series[float] = pa.Field(nullable=True, ge=-1, le=1)
    vmaf: Series[float] = pa.Field(nullable=True)
    lpips: Series[float] = pa.Field(nullable=True, ge=0)
    fvd: Series[float] = pa.Field(nullable=True, ge=0)
    trivial_psnr: Series[float] = pa.Field(nullable=True)
    codebook_utilisation: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    perplexity: Series[float] = pa.Field(nullable=True, ge=0)
    train_wall_s: Series[float] = pa.Field(nullable=True, ge=0)
    gpu_hours: Series[float] = pa.Field(nullable=True, ge=0)  # wall time x GPUs where trained on GPU, else null
    steps: Series[int] = pa.Field(nullable=True, ge=0)
    run_dir: Series[str] = pa.Field(nullable=True)  # relative to the study folder
    metrics_path: Series[str] = pa.Field(nullable=True)
    metrics_sha256: Series[str] = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{64}$")  # when the trial finished
    code_sha256: Series[str] = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{64}$")  # the library it trained with
    params_json: Series[str]  # the trial's full parameters (JSON)
    error: Series[str] = pa.Field(nullable=True)  # one line, for failed trials
    started_at: Series[str] = pa.Field(nullable=True)
    ended_at: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check
    def unique_trials(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(subset=["study", "trial"])

    @pa.dataframe_check
    def complete_trials_have_quality(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["state"] != "COMPLETE") | df["psnr"].notna()


COLUMNS = list(TrialsSchema.to_schema().columns)


def empty_trials() -> pd.DataFrame:
    return TrialsSchema.validate(pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in COLUMNS}))


def _dtype(column: str) -> str:
    kind = TrialsSchema.to_schema().columns[column].dtype
    return str(kind)


def validate_trials(df: pd.DataFrame, name: str = "trials") -> pd.DataFrame:
    """Validate (and coerce) a trials table; StudyFileError with the first problems otherwise."""
    try:
        return TrialsSchema.validate(df, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as err:
        cases = getattr(err, "failure_cases", None)
        if cases is not None and len(cases):
            first = "; ".join(
                f"{r.get('column')}: {r.get('check')} (got {r.get('failure_case')!r})"
                for r in cases.head(3).to_dict("records")
            )
        else:
            first = str(err).splitlines()[0]
        raise StudyFileError(f"{name}: does not match the trials schema: {first}") from None


def write_trials(df: pd.DataFrame, study_dir: str | os.PathLike[str]) -> Path:
    """Validate and write `study_dir`/trials.parquet atomically (a reader never sees half a file)."""
    folder = Path(study_dir)
    folder.mkdir(parents=True, exist_ok=True)
    table = validate_trials(df[COLUMNS] if set(COLUMNS) <= set(df.columns) else df, str(folder / TRIALS_NAME))
    write_table(table, folder / TRIALS_NAME)
    return folder / TRIALS_NAME


def read_trials(study_dir: str | os.PathLike[str]) -> pd.DataFrame:
    path = Path(study_dir) / TRIALS_NAME
    if not path.is_file():
        raise StudyFileError(f"{path}: not found (run the study first)")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise StudyFileError(f"{path}: unreadable parquet file ({type(err).__name__})") from None
    return validate_trials(df, str(path))


def summarize(df: pd.DataFrame, metric: str = "psnr") -> dict[str, Any]:
    """Mean, std and n over seeds per level for every metric, from COMPLETE trials; the best level by `metric`."""
    done = df[df["state"] == "COMPLETE"]
    levels: list[dict[str, Any]] = []
    for level, group in done.groupby("level", sort=False):
        row: dict[str, Any] = {
            "level": level,
            "level_value": _num(group["level_value"].iloc[0]),
            "regularizer": group["regularizer"].iloc[0] if group["regularizer"].notna().any() else None,
            "n": int(len(group)),
            "seeds": sorted(int(s) for s in group["seed"]),
        }
        for name in (*METRICS, "train_wall_s", "gpu_hours"):
            values = group[name].dropna()
            row[name] = {
                "mean": _num(values.mean()) if len(values) else None,
                "std": _num(values.std(ddof=1)) if len(values) > 1 else None,
                "n": int(len(values)),
            }
        levels.append(row)
    levels.sort(key=lambda r: (r["level_value"] is None, r["level_value"] or 0, str(r["level"])))
    scored = [r for r in levels if r[metric]["mean"] is not None]
    best = None
    if scored:
        pick = min if metric in LOWER_IS_BETTER else max
        best = pick(scored, key=lambda r: r[metric]["mean"])["level"]
    states = df["state"].value_counts().to_dict()
    return {
        "metric": metric,
        "best_level": best,
        "levels": levels,
        "trials": {s: int(states.get(s, 0)) for s in STATES},
    }


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def summary_markdown(summary: dict[str, Any], study: str, factor: str) -> str:
    """Metric-vs-level table, mean +- std over seeds, the best level in bold."""
    metric = summary["metric"]
    lines = [
        f"### {study}: {metric} vs {factor}",
        "",
        f"| {factor} | n | PSNR (dB) | SSIM | trivial codec PSNR | codebook use | train wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(entry: dict[str, Any], fmt: str) -> str:
        if entry["mean"] is None:
            return "-"
        text = format(entry["mean"], fmt)
        return f"{text} +- {format(entry['std'], fmt)}" if entry["std"] is not None else text

    for r in summary["levels"]:
        label = f"**{r['level']}**" if r["level"] == summary["best_level"] else str(r["level"])
        lines.append(
            f"| {label} | {r['n']} | {cell(r['psnr'], '.2f')} | {cell(r['ssim'], '.4f')} | "
            f"{cell(r['trivial_psnr'], '.2f')} | {cell(r['codebook_utilisation'], '.3f')} | "
            f"{cell(r['train_wall_s'], '.0f')} |"
        )
    t = summary["trials"]
    lines += [
        "",
        f"Best {metric}: **{summary['best_level']}**. Trials: {t['COMPLETE']} complete, {t['FAIL']} failed, "
        f"{t['PRUNED']} pruned, {t['RUNNING']} running. Mean +- sample std over seeds.",
    ]
    return "\n".join(lines) + "\n"


def write_summary(
    study_dir: str | os.PathLike[str], df: pd.DataFrame, study: str, factor: str, metric: str = "psnr"
) -> dict[str, Any]:
    folder = Path(study_dir)
    summary = summarize(df, metric)
    for name, text in (
        (SUMMARY_JSON, json.dumps(summary, indent=2) + "\n"),
        (SUMMARY_MD, summary_markdown(summary, study, factor)),
    ):
        atomic_write(folder / name, text)
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m vidtok.studies.results STUDY_DIR", file=sys.stderr)
        return 2
    try:
        df = read_trials(argv[0])
    except StudyFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    factor = df["factor"].iloc[0] if len(df) else "level"
    print(summary_markdown(summarize(df), Path(argv[0]).name, factor))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
