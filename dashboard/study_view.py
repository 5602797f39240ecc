"""One "open question" page per study: quality against the studied factor, mean and spread over seeds, the best
setting highlighted, each plot also as a table with a CSV download.

    streamlit run dashboard/app.py      # pages: Frame rate, Codebook size, Staging schedule

Reads experiments/<study>/trials.parquet (vidtok.studies.results.TrialsSchema) and study.json; every number drawn is
vidtok.studies.results.summarize's (the statistics summary.md holds), none is computed here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import analysis as A
from dashboard import data, ui
from vidtok.studies import paper
from vidtok.studies.findings import answer, code_currency, coverage
from vidtok.studies.results import state_counts, summarize

EXTRA = ("trivial_psnr", "codebook_utilisation", "perplexity", "train_wall_s", "gpu_hours")


def load_study(name: str) -> tuple[pd.DataFrame, dict[str, Any] | None] | None:
    """The trials table and study.json of a study, or None after drawing its empty state or its error."""
    info = data.STUDIES[name]
    folder = data.root() / "experiments" / name
    try:
        trials = data.read_trials(folder)
        meta = data.read_study_json(folder)
    except data.DataError as err:
        ui.show_error(err)
        return None
    if trials is None:
        ui.empty_state(
            f"No study yet: {data.display(folder / 'trials.parquet')} does not exist",
            info.deployment_command(),
            before=f"Start the local Prefect server and its worker first with `{data.CMD_PREFECT}`.",
        )
        return None
    return trials, meta


def trial_counts(trials: pd.DataFrame) -> dict[str, int]:
    counts = state_counts(trials)
    cols = st.columns(5)
    cols[0].metric("trials", len(trials))
    cols[1].metric("complete", counts["COMPLETE"])
    cols[2].metric("failed", counts["FAIL"])
    cols[3].metric("pruned", counts["PRUNED"])
    cols[4].metric("running / waiting", counts["RUNNING"] + counts["WAITING"])
    return counts


def failed_trials(trials: pd.DataFrame) -> None:
    failed = trials[trials["state"] == "FAIL"]
    if len(failed):
        with st.expander(f"{len(failed)} failed trial(s): their errors"):
            st.dataframe(failed[["trial", "level", "seed", "error"]], hide_index=True)


def all_trials(trials: pd.DataFrame, name: str) -> None:
    with st.expander("All trials (the trials table)"):
        shown = trials.drop(columns=["params_json"])
        ui.table(shown, f"{name}-trials", f"{name}-trials")


def choose_metric(trials: pd.DataFrame, meta: dict[str, Any] | None, key: str) -> tuple[str, list[str]] | None:
    metrics = A.available(trials[trials["state"] == "COMPLETE"], A.QUALITY)
    if not metrics:
        st.warning("The complete trials hold no quality metric values.")
        return None
    default = A.study_metric(meta)
    metric = st.selectbox(
        "Quality metric",
        metrics,
        index=metrics.index(default) if default in metrics else 0,
        format_func=lambda m: f"{A.label(m)} ({A.better(m)})",
        key=key,
    )
    missing = [A.label(m) for m in A.QUALITY if m not in metrics]
    if missing:
        st.caption(
            f"Not measured in this study: {', '.join(missing)} (no values in the trials table: LPIPS only with real "
            "trunk weights, VMAF only when requested, FVD only with I3D weights)."
        )
    return metric, metrics


def answer_banner(name: str, trials: pd.DataFrame) -> dict[str, Any]:
    """The study's answer as experiments/FINDINGS.md words it, with its "Partial study" warning while levels or
    seeds are still to run and its "Stale study" warning while its trials ran other code than this checkout;
    returns the summary it was computed from (vidtok.studies.results.summarize)."""
    info = data.STUDIES[name]
    summary = summarize(trials, info.metric, info.baseline)
    st.markdown(f"**Answer at this scale** (as in experiments/FINDINGS.md). {answer(summary)}")
    partial = coverage(info, summary)
    if partial:
        st.warning(partial, icon=":material/hourglass_empty:")
    stale = code_currency(trials)
    if stale:
        st.warning(stale, icon=":material/history:")
    return summary


def best_banner(stats: pd.DataFrame, metric: str, factor: str) -> None:
    best = stats[stats["best"]]
    if not len(best):
        return
    row = best.iloc[0]
    varies = stats["regularizer"].nunique() > 1  # name the regularizer only where the study varies it
    named = varies and row["regularizer"] and str(row["regularizer"]).lower() not in str(row["level"]).lower()
    setting = str(row["level"]) + (f" ({row['regularizer']})" if named else "")
    st.success(
        f"Best {A.label(factor)}: **{setting}**, {A.label(metric)} "
        f"{ui.mean_pm(row[f'{metric}_mean'], row[f'{metric}_std'], 4)} over {int(row[f'{metric}_n'])} seed(s) "
        f"({A.better(metric)}).",
        icon=":material/star:",
    )


def study_page(name: str) -> None:
    info = data.STUDIES[name]
    st.title(f"Open question: {info.title.lower()}")
    st.caption(f"{info.question} Study `{name}` (experiments/{name}/), factor `{info.factor}`.")
    loaded = load_study(name)
    if loaded is None:
        _paper_reference(info.factor)
        return
    trials, meta = loaded
    counts = trial_counts(trials)
    if meta:
        with st.expander("Study definition (study.json)"):
            st.json(meta)
    if counts["COMPLETE"] == 0:
        st.warning("No complete trial yet: the plots appear once a trial finishes.")
        failed_trials(trials)
        all_trials(trials, name)
        return
    chosen = choose_metric(trials, meta, key=f"{name}-metric")
    if chosen is None:
        all_trials(trials, name)
        return
    metric, metrics = chosen
    extra = [m for m in EXTRA if m in A.available(trials, EXTRA)]
    stats = A.setting_stats(trials, metric, metrics + extra)
    factor = info.factor
    best_banner(stats, metric, factor)
    summary = answer_banner(name, trials)

    st.subheader(f"{A.label(metric)} against {A.label(factor)}")
    numeric = bool(factor in ("fps", "log2_codes") and stats["level_value"].notna().all())
    trivial = metric == "psnr" and numeric and "trivial_psnr" in extra
    chart = ui.quality_chart(
        stats,
        trials,
        metric,
        factor,
        numeric=numeric,
        log=factor == "fps",
        colour=stats["regularizer"].nunique() > 1,
        trivial=trivial,
    )
    reported = paper.points(factor) if numeric else pd.DataFrame()
    if len(reported):
        ours, theirs = st.columns([3, 1])
        ours.altair_chart(chart, width="stretch")
        theirs.altair_chart(ui.paper_chart(reported, factor, log=factor == "fps"), width="stretch")
        theirs.caption(
            f"The paper's PSNR at these {A.label(factor).split(' (')[0]} levels ({paper.CITATION}; {paper.PROTOCOL}): "
            "its own scale, so compare the ordering, not the values."
        )
    else:
        st.altair_chart(chart, width="stretch")
    note = "; dashed grey: the trivial codec (downsample + linear upsample at the same compression)" if trivial else ""
    st.caption(
        "Points: mean over seeds; bars: mean ± one sample standard deviation; faint dots: single seeds; "
        f"red diamond: the best setting{note}."
    )
    ui.table(
        A.display_table(
            stats, [metric, *(["trivial_psnr"] if metric == "psnr" and "trivial_psnr" in extra else [])], factor
        ),
        f"{name}-{metric}",
        f"{name}-{metric}",
    )

    if factor == "log2_codes":
        _codebook(stats, trials, name, extra)
    elif factor == "schedule":
        _compute(stats, metric, name, extra)
    reported_on_test(summary, name)
    with st.expander("Every metric per setting"):
        ui.table(A.display_table(stats, metrics + extra, factor), f"{name}-all-metrics", f"{name}-all")
    failed_trials(trials)
    all_trials(trials, name)
    _paper_reference(factor)


def _ci(d: dict[str, Any], digits: int = 2) -> str:
    ci = d.get("ci95")
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "—"


def reported_on_test(summary: dict[str, Any], name: str) -> None:
    """The reported numbers: test-split PSNR per level (mean, std, n, 95% CI) beside the trivial codec and the cost,
    then each level against the paper's choice paired by seed. The val numbers above only select."""
    metric = summary["metric"]
    st.subheader("Reported on the test split")
    rows = []
    for r in summary["levels"]:
        test, trivial = r.get(f"test_{metric}") or {}, r.get(f"test_trivial_{metric}") or {}
        if test.get("mean") is None:
            continue
        rows.append(
            {
                "level": r["level"],
                f"test {A.label(metric)}": ui.mean_pm(test["mean"], test["std"], 2),
                "n": test["n"],
                "95% CI": _ci(test),
                f"trivial codec {A.label(metric)}": None if trivial.get("mean") is None else round(trivial["mean"], 2),
                "train wall (min)": None
                if r["train_wall_s"]["mean"] is None
                else round(r["train_wall_s"]["mean"] / 60, 1),
                "train TFLOP": None if r["train_tflops"]["mean"] is None else round(r["train_tflops"]["mean"], 1),
            }
        )
    if not rows:
        st.info("No test-split numbers in the trials table (trials evaluated before test scoring existed).")
        return
    ui.table(pd.DataFrame(rows), f"{name}-test", f"{name}-test")
    pairs = (summary.get("comparisons") or {}).get("test") or []
    if pairs:
        st.caption(
            f"Each level against the paper's choice ({summary['baseline']}) on test, paired by seed: difference in "
            f"{A.label(metric)} (level minus baseline), its 95% CI and the two-sided paired t-test's p-value."
        )
        st.dataframe(
            pd.DataFrame(
                {
                    "level": c["level"],
                    "pairs": c["pairs"],
                    "difference": None if c["mean_diff"] is None else round(c["mean_diff"], 3),
                    "95% CI": _ci(c, 3),
                    "p": None if c["p_value"] is None else round(c["p_value"], 3),
                }
                for c in pairs
            ),
            hide_index=True,
        )


def _codebook(stats: pd.DataFrame, trials: pd.DataFrame, name: str, extra: list[str]) -> None:
    st.subheader("Codebook utilisation against codebook size")
    if "codebook_utilisation" not in extra:
        st.info(
            "No codebook utilisation in the trials table (continuous models, or the evaluation did not count codes)."
        )
        return
    chart = ui.quality_chart(
        stats.assign(best=False),  # the red diamond marks the best quality, not the most codes used
        trials,
        "codebook_utilisation",
        "log2_codes",
        numeric=bool(stats["level_value"].notna().all()),
        colour=stats["regularizer"].nunique() > 1,
    )
    st.altair_chart(chart, width="stretch")
    st.caption("Share of the codebook's codes used at least once on the evaluation clips (1.0 = every code used).")
    cols = ["codebook_utilisation", *(["perplexity"] if "perplexity" in extra else [])]
    ui.table(A.display_table(stats.drop(columns=["best"]), cols, "log2_codes"), f"{name}-utilisation", f"{name}-util")


def _compute(stats: pd.DataFrame, metric: str, name: str, extra: list[str]) -> None:
    st.subheader("Quality against compute")
    compute = [m for m in ("train_wall_s", "gpu_hours") if m in extra]
    if not compute:
        st.info("No compute recorded in the trials table (train_wall_s, gpu_hours).")
        return
    measure = st.selectbox("Compute measure", compute, format_func=A.label, key=f"{name}-compute")
    st.altair_chart(ui.scatter_chart(stats, measure, metric), width="stretch")
    st.caption(
        "Each point is a schedule (mean over seeds, bars ± one std); up and to the left is better. GPU hours are "
        "recorded only for trials trained on a GPU."
    )
    ui.table(A.display_table(stats, [metric, *compute], "schedule"), f"{name}-compute", f"{name}-compute")


def _paper_reference(factor: str) -> None:
    """The paper's related numbers, clearly marked as the paper's (not measured here)."""
    if factor == "fps":
        rows = paper.TABLE4[paper.TABLE4["stage 2"] != "-"]
        title = "The paper's numbers: 3 vs 8 fps (Table 4, two-stage, encoder fixed rows)"
        rows = rows[rows["encoder fixed"] == "yes"]
    elif factor == "log2_codes":
        rows, title = paper.TABLE3, "The paper's numbers: quantizers and codebook sizes (Table 3)"
    elif factor == "schedule":
        rows, title = paper.TABLE4, "The paper's numbers: training strategy and its GPU hours (Table 4)"
    else:
        return
    with st.expander(title):
        st.caption(f"Reported by {paper.CITATION}, not measured here. Protocol: {paper.PROTOCOL}.")
        st.dataframe(rows, hide_index=True)
