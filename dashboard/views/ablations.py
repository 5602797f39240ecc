"""Ablations: our rerun of the paper's ablations (experiments/ablations, factor `variant`) next to the paper's own
Table 2 (architecture) and Table 3 (quantizers), which are always labelled as the paper's reported numbers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import analysis as A
from dashboard import study_view, ui
from vidtok.studies import paper

SHOWN = ("psnr", "ssim", "lpips", "fvd", "codebook_utilisation")


def _ours() -> None:
    st.header("Our ablation study")
    loaded = study_view.load_study("ablations")
    if loaded is None:
        return
    trials, meta = loaded
    counts = study_view.trial_counts(trials)
    if counts["COMPLETE"] == 0:
        st.warning("No complete trial yet: the comparison appears once a trial finishes.")
        study_view.failed_trials(trials)
        study_view.all_trials(trials, "ablations")
        return
    chosen = study_view.choose_metric(trials, meta, key="ablations-metric")
    if chosen is None:
        return
    metric, metrics = chosen
    shown = [m for m in SHOWN if m in A.available(trials, SHOWN)]
    stats = A.setting_stats(trials, metric, list(dict.fromkeys([metric, *shown])))
    study_view.best_banner(stats, metric, "variant")
    summary = study_view.answer_banner("ablations", trials)
    chart = ui.quality_chart(stats, trials, metric, "variant", numeric=False, colour=stats["regularizer"].nunique() > 1)
    st.altair_chart(chart, width="stretch")
    st.caption("Points: mean over seeds; bars: ± one sample standard deviation; faint dots: single seeds; red: best.")

    table = _next_to_paper(stats, shown)
    st.markdown(
        "**Ours next to the paper's numbers.** Columns starting with *paper's* are the values reported in "
        f"{paper.CITATION}, not measured here; compare the ordering of the variants, not absolute values."
    )
    ui.table(table, "ablations-vs-paper", "ablations-vs-paper")
    study_view.reported_on_test(summary, "ablations")
    study_view.failed_trials(trials)
    study_view.all_trials(trials, "ablations")


def _next_to_paper(stats: pd.DataFrame, shown: list[str]) -> pd.DataFrame:
    """Per variant: our mean and std of each metric, each followed by the paper's value for the matching row."""
    matches = [paper.paper_row(str(v)) for v in stats["level"]]
    cols: dict[str, object] = {"variant": stats["level"], "regularizer": stats["regularizer"], "seeds (n)": stats["n"]}
    cols["paper's row"] = [m[0] if m else "— (not in the paper)" for m in matches]
    for m in shown:
        cols[f"{m} mean"] = stats[f"{m}_mean"]
        cols[f"{m} std"] = stats[f"{m}_std"]
        if m in ("psnr", "ssim", "lpips", "fvd"):
            cols[f"paper's {m}"] = [mm[1][m] if mm else None for mm in matches]
    cols["best"] = stats["best"].map({True: "best", False: ""})
    return pd.DataFrame(cols)


def _papers() -> None:
    st.header("The paper's numbers")
    st.info(
        f"**Reported by {paper.CITATION}, not measured here.** Protocol: {paper.PROTOCOL}; models of 126M-245M "
        "parameters trained on the paper's data, so absolute values differ from our small-profile runs.",
        icon=":material/menu_book:",
    )
    st.subheader("Paper's Table 2: architecture")
    st.dataframe(paper.TABLE2, hide_index=True)
    st.caption("KL, 4 latent channels. FLOPs as multiply-adds, as the paper counts them.")
    st.subheader("Paper's Table 3: quantizers")
    t3 = paper.TABLE3.copy()
    t3["aux loss"] = t3["aux loss"].map({True: "yes", False: "no"})
    st.dataframe(t3, hide_index=True)
    st.caption(f"utilisation = share of the codebook used (the paper's U.R.). {paper.TABLE3_NOTE}")
    with st.expander("Paper's Table 4: training strategy (also on the Staging schedule page)"):
        st.dataframe(pd.DataFrame(paper.TABLE4), hide_index=True)


st.title("Ablations: ours next to the paper's")
_ours()
_papers()
