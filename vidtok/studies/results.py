"""Study results on disk: the trials table every sweep writes and the dashboard reads, and its summary.

    python -m vidtok.studies.results experiments/sweep-fps      # validate trials.parquet and print the summary table

A study answers one open question of the paper by varying one factor over levels, with several seeds per level:

    experiments/<study>/
      study.json         what was asked: factor, levels, seeds, profile, metric, Optuna storage URL
      optuna.journal     Optuna JournalStorage (default storage; a PostgreSQL URL works instead)
      trials.parquet     one row per trial (TrialsSchema below), rewritten atomically after every trial
      summary.json       per level: mean, sample std, n and 95% CI over seeds of every metric; the best level; each
                         level against the baseline (the paper's choice), paired by seed
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

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from scipy import stats

from vidtok._files import atomic_write, write_table
from vidtok.formats import LOWER_IS_BETTER

TRIALS_NAME = "trials.parquet"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
STUDY_JSON = "study.json"
FACTORS = ("fps", "log2_codes", "schedule", "variant")
STATES = ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")
# Quality metrics, higher is better except LOWER_IS_BETTER (vidtok.formats). psnr / ssim / trivial_psnr are on the
# val split (what a study selects by); test_* the same on the test split (what a study reports).
METRICS = (
    "psnr",
    "ssim",
    "vmaf",
    "lpips",
    "fvd",
    "trivial_psnr",
    "codebook_utilisation",
    "perplexity",
    "test_psnr",
    "test_ssim",
    "test_trivial_psnr",
)
# The metrics summarize describes per level: the quality metrics above and the cost of training.
SUMMARY_METRICS = (*METRICS, "train_wall_s", "train_tflops", "gpu_hours")
# Where each metric column comes from: (the trials-table column naming the evaluation file, the key of that file's
# `summary`). vidtok.studies.sweeps records a trial's metrics from its val evaluation (metrics_path) and, for test_*,
# its test evaluation (test_metrics_path); `vidtok audit` reads every column back from those files.
METRIC_SOURCES: dict[str, tuple[str, str]] = {
    "psnr": ("metrics_path", "psnr"),
    "ssim": ("metrics_path", "ssim"),
    "vmaf": ("metrics_path", "vmaf"),
    "lpips": ("metrics_path", "lpips"),
    "fvd": ("metrics_path", "fvd"),
    "trivial_psnr": ("metrics_path", "trivial_psnr"),
    "codebook_utilisation": ("metrics_path", "codebook_utilisation"),
    "perplexity": ("metrics_path", "codebook_perplexity"),
    "test_psnr": ("test_metrics_path", "psnr"),
    "test_ssim": ("test_metrics_path", "ssim"),
    "test_trivial_psnr": ("test_metrics_path", "trivial_psnr"),
}
# The evaluation counts of each trial: column -> (its metrics file column, key in that file's `data` section).
COUNT_SOURCES: dict[str, tuple[str, str]] = {
    "val_clips": ("metrics_path", "num_clips"),
    "val_videos": ("metrics_path", "num_videos"),
    "test_clips": ("test_metrics_path", "num_clips"),
    "test_videos": ("test_metrics_path", "num_videos"),
}


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
    test_psnr: Series[float] = pa.Field(nullable=True, ge=0, le=100)
    test_ssim: Series[float] = pa.Field(nullable=True, ge=-1, le=1)
    test_trivial_psnr: Series[float] = pa.Field(nullable=True)
    # What each evaluation scored (its metrics file's data.num_clips / num_videos): a mean over 21 clips of 4 videos
    # is not one over 96, whatever a cap asked for.
    val_clips: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    val_videos: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    test_clips: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    test_videos: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    train_tflops: Series[float] = pa.Field(nullable=True, ge=0)  # training arithmetic, all stages (see trial.py)
    train_wall_s: Series[float] = pa.Field(nullable=True, ge=0)
    gpu_hours: Series[float] = pa.Field(nullable=True, ge=0)  # wall time x GPUs where trained on GPU, else null
    steps: Series[int] = pa.Field(nullable=True, ge=0)
    run_dir: Series[str] = pa.Field(nullable=True)  # relative to the study folder
    metrics_path: Series[str] = pa.Field(nullable=True)
    metrics_sha256: Series[str] = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{64}$")  # when the trial finished
    test_metrics_path: Series[str] = pa.Field(nullable=True)  # the test-split evaluation, beside the val one
    test_metrics_sha256: Series[str] = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{64}$")
    code_sha256: Series[str] = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{64}$")  # the library it trained with
    params_json: Series[str]  # what the trial was asked (study, level, seed, profile, overrides...) as JSON
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


def validate_trials(df: pd.DataFrame, name: str = "trials") -> pd.DataFrame:
    """Validate (and coerce) a trials table; StudyFileError with the first problems otherwise. A table written
    before the clip counts were columns (COUNT_SOURCES) gets them as missing values."""
    missing = [c for c in COUNT_SOURCES if c not in df.columns]
    if missing:
        df = df.assign(**{c: pd.Series(pd.NA, index=df.index, dtype="Int64") for c in missing})[
            [c for c in COLUMNS if c in df.columns or c in missing] + [c for c in df.columns if c not in COLUMNS]
        ]
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


def read_study_meta(study_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """study.json (what the study asked: its spec, factor, metric, seeds, storage and the command that runs it)."""
    path = Path(study_dir) / STUDY_JSON
    if not path.is_file():
        raise StudyFileError(f"{path}: not found (written when the study starts)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StudyFileError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("spec", meta.get("study")), str):
        raise StudyFileError(f"{path}: no study or spec name in it")
    return meta


def read_trials(study_dir: str | os.PathLike[str]) -> pd.DataFrame:
    path = Path(study_dir) / TRIALS_NAME
    if not path.is_file():
        raise StudyFileError(f"{path}: not found (run the study first)")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise StudyFileError(f"{path}: unreadable parquet file ({type(err).__name__})") from None
    return validate_trials(df, str(path))


def summarize(df: pd.DataFrame, metric: str = "psnr", baseline: str | None = None) -> dict[str, Any]:
    """Mean, sample std, n and 95% CI over seeds per level for every metric, from COMPLETE trials; the best level by
    `metric` (on val: what selects); with a `baseline` level (the paper's choice), every level against it paired
    by seed, on val (`metric`) and on test (`test_<metric>`, the reported numbers)."""
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
        for name in SUMMARY_METRICS:
            row[name] = describe(group[name].dropna().to_numpy(dtype=float))
        for name in COUNT_SOURCES:  # the distinct counts its trials were scored on (one value when all agree)
            row[name] = sorted(int(v) for v in group[name].dropna().unique()) if name in group else []
        levels.append(row)
    levels.sort(key=lambda r: (r["level_value"] is None, r["level_value"] or 0, str(r["level"])))
    scored = [r for r in levels if r[metric]["mean"] is not None]
    best = None
    if scored:
        pick = min if metric in LOWER_IS_BETTER else max
        best = pick(scored, key=lambda r: r[metric]["mean"])["level"]
    comparisons: dict[str, list[dict[str, Any]]] = {}
    if baseline is not None:
        comparisons["val"] = paired_comparison(df, baseline, metric)
        if f"test_{metric}" in df.columns:
            comparisons["test"] = paired_comparison(df, baseline, f"test_{metric}")
    return {
        "metric": metric,
        "best_level": best,
        "levels": levels,
        "baseline": baseline,
        "comparisons": comparisons,
        "trials": state_counts(df),
    }


def state_counts(df: pd.DataFrame) -> dict[str, int]:
    """How many trials are in each of STATES (every state named, zeros included)."""
    counts = df["state"].value_counts().to_dict()
    return {s: int(counts.get(s, 0)) for s in STATES}


def level_table(summary: dict[str, Any], metrics: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """summarize's levels as a flat table in its order, one row per level, for the dashboard's tables and charts:
    level, regularizer, level_value (NaN without a number), n, seeds ("0, 1, 2"); for each of `metrics` (names of
    SUMMARY_METRICS) <m>_mean, <m>_std (NaN below two values), <m>_n and <m>_lo / <m>_hi, mean -+ one sample std
    (the error bar; the mean itself for a single value); and `best`, the summary's best level by its metric."""
    rows = []
    for level in summary["levels"]:
        row: dict[str, Any] = {
            "level": str(level["level"]),
            "regularizer": level["regularizer"],
            "level_value": math.nan if level["level_value"] is None else level["level_value"],
            "n": level["n"],
            "seeds": ", ".join(str(s) for s in level["seeds"]),
        }
        for name in metrics:
            entry = level[name]
            mean = math.nan if entry["mean"] is None else entry["mean"]
            std = math.nan if entry["std"] is None else entry["std"]
            spread = 0.0 if entry["std"] is None else std
            row |= {f"{name}_mean": mean, f"{name}_std": std, f"{name}_n": entry["n"]}
            row |= {f"{name}_lo": mean - spread, f"{name}_hi": mean + spread}
        row["best"] = level["level"] == summary["best_level"]
        rows.append(row)
    stats = [f"{name}_{part}" for name in metrics for part in ("mean", "std", "n", "lo", "hi")]
    return pd.DataFrame(rows, columns=["level", "regularizer", "level_value", "n", "seeds", *stats, "best"])


def describe(values: np.ndarray) -> dict[str, Any]:
    """mean, sample std (ddof 1), n and the 95% confidence interval of the mean (Student's t, n - 1 degrees of
    freedom; None below two values)."""
    n = len(values)
    mean = _num(values.mean()) if n else None
    std = _num(values.std(ddof=1)) if n > 1 else None
    ci = None
    if n > 1 and std is not None:
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"mean": mean, "std": std, "n": int(n), "ci95": ci}


def paired_comparison(df: pd.DataFrame, baseline: str, metric: str = "psnr") -> list[dict[str, Any]]:
    """Every level against `baseline` on `metric`, paired by seed (a seed fixes the initialisation and the clip
    order, so the pair differs only in the level): n pairs, mean difference (level - baseline), its sample std,
    95% CI and the two-sided paired t-test's p-value (None below two pairs). COMPLETE trials only."""
    done = df[(df["state"] == "COMPLETE") & df[metric].notna()]
    base = done[done["level"] == baseline].set_index("seed")[metric]
    rows = []
    for level, group in done.groupby("level", sort=False):
        if level == baseline:
            continue
        mine = group.set_index("seed")[metric]
        seeds = sorted(set(mine.index) & set(base.index))
        diff = np.array([float(mine[s]) - float(base[s]) for s in seeds])
        summary = describe(diff)
        p = None
        if len(diff) > 1 and summary["std"]:
            p = float(stats.ttest_rel([float(mine[s]) for s in seeds], [float(base[s]) for s in seeds]).pvalue)
        elif len(diff) > 1:
            p = 0.0 if summary["mean"] else 1.0  # identical differences: no spread to test against
        rows.append(
            {
                "level": level,
                "baseline": baseline,
                "metric": metric,
                "pairs": len(diff),
                "seeds": seeds,
                "mean_diff": summary["mean"],
                "std_diff": summary["std"],
                "ci95": summary["ci95"],
                "p_value": p,
                "test": "paired t-test over seeds (two-sided)",
            }
        )
    return rows


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def summary_markdown(summary: dict[str, Any], study: str, factor: str) -> str:
    """Metric-vs-level table (mean +- sample std over seeds, the 95% CI of the mean, the best level on val in bold),
    then each level against the baseline, paired by seed, on val and on test."""
    metric = summary["metric"]
    lines = [
        f"### {study}: {metric} vs {factor}",
        "",
        f"| {factor} | n | val PSNR (dB) | val 95% CI | val SSIM | test PSNR (dB) | test 95% CI | trivial codec "
        "val / test | codebook use | perplexity | train wall (s) | train TFLOP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(entry: dict[str, Any], fmt: str) -> str:
        if entry["mean"] is None:
            return "-"
        text = format(entry["mean"], fmt)
        return f"{text} +- {format(entry['std'], fmt)}" if entry["std"] is not None else text

    def ci(entry: dict[str, Any]) -> str:
        return "-" if not entry.get("ci95") else f"[{entry['ci95'][0]:.2f}, {entry['ci95'][1]:.2f}]"

    for r in summary["levels"]:
        label = f"**{r['level']}**" if r["level"] == summary["best_level"] else str(r["level"])
        if r["level"] == summary.get("baseline"):
            label += " (baseline)"
        lines.append(
            f"| {label} | {r['n']} | {cell(r['psnr'], '.2f')} | {ci(r['psnr'])} | {cell(r['ssim'], '.4f')} | "
            f"{cell(r['test_psnr'], '.2f')} | {ci(r['test_psnr'])} | {cell(r['trivial_psnr'], '.2f')} / "
            f"{cell(r['test_trivial_psnr'], '.2f')} | {cell(r['codebook_utilisation'], '.3f')} | "
            f"{cell(r['perplexity'], '.1f')} | {cell(r['train_wall_s'], '.0f')} | {cell(r['train_tflops'], '.1f')} |"
        )
    t = summary["trials"]
    lines += [
        "",
        f"Best {metric} on val: **{summary['best_level']}**. Trials: {t['COMPLETE']} complete, {t['FAIL']} failed, "
        f"{t['PRUNED']} pruned, {t['RUNNING']} running. Mean +- sample std over seeds; 95% CI of the mean (t).",
        "",
        f"Each trial scored {evaluation_counts(summary['levels'])}.",
    ]
    for split, rows in (summary.get("comparisons") or {}).items():
        if not rows:
            continue
        lines += [
            "",
            f"Against the baseline **{summary['baseline']}** on {split} ({rows[0]['test']}, pairs = seeds both ran):",
            "",
            f"| {factor} | pairs | difference (dB) | 95% CI | p |",
            "|---|---|---|---|---|",
        ]
        for c in rows:
            diff = "-" if c["mean_diff"] is None else f"{c['mean_diff']:+.2f}"
            interval = "-" if not c["ci95"] else f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"
            p = "-" if c["p_value"] is None else f"{c['p_value']:.3g}"
            lines.append(f"| {c['level']} | {c['pairs']} | {diff} | {interval} | {p} |")
    return "\n".join(lines) + "\n"


def _span(values: list[int]) -> str:
    return "?" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def evaluation_counts(levels: list[dict[str, Any]]) -> str:
    """'21 val clips from 4 videos and 30 test clips from 6 videos' over every level of a summary (ranges where the
    trials differ; '?' where no trial recorded it)."""
    merged = {name: sorted({v for r in levels for v in r.get(name) or []}) for name in COUNT_SOURCES}
    return (
        f"{_span(merged['val_clips'])} val clips from {_span(merged['val_videos'])} videos and "
        f"{_span(merged['test_clips'])} test clips from {_span(merged['test_videos'])} videos"
    )


def render_summary(
    df: pd.DataFrame, study: str, factor: str, metric: str = "psnr", baseline: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The summary and the text of summary.json and summary.md (by file name), exactly as write_summary writes them:
    `vidtok audit` compares the committed files with this."""
    summary = summarize(df, metric, baseline)
    texts = {
        SUMMARY_JSON: json.dumps(summary, indent=2) + "\n",
        SUMMARY_MD: summary_markdown(summary, study, factor),
    }
    return summary, texts


def write_summary(
    study_dir: str | os.PathLike[str],
    df: pd.DataFrame,
    study: str,
    factor: str,
    metric: str = "psnr",
    baseline: str | None = None,
) -> dict[str, Any]:
    folder = Path(study_dir)
    summary, texts = render_summary(df, study, factor, metric, baseline)
    for name, text in texts.items():
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
