"""Shared pieces of the pages: empty states, one-line errors, tables with a CSV download, and the charts.

streamlit run dashboard/app.py      # the pages import this; it draws nothing on its own
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.analysis import better, label

BEST_COLOUR = "#d62728"
BLUE = "#1f77b4"
SCHEME = "tableau10"  # distinct hues (the default theme palette gives near-identical blues)


def empty_state(what: str, command: str, *, alternative: str | None = None, before: str | None = None) -> None:
    """An info box naming what is missing and the command that makes it."""
    text = f"**{what}.** To produce it, run `{command}`"
    if alternative:
        text += f" (or `{alternative}`)"
    text += "."
    if before:
        text += f" {before}"
    st.info(text, icon=":material/info:")


def show_error(err: Exception | str) -> None:
    """One line naming the file and the problem; never a traceback."""
    st.error(" ".join(str(err).split()), icon=":material/error:")


def table(df: pd.DataFrame, name: str, key: str, caption: str | None = None, styled: Any = None) -> None:
    """A dataframe (or its pandas Styler `styled`) and a button that downloads exactly that table as CSV."""
    st.dataframe(df if styled is None else styled, hide_index=True)
    if caption:
        st.caption(caption)
    st.download_button(
        f"Download {name}.csv",
        df.to_csv(index=False).encode("utf-8"),
        file_name=f"{name}.csv",
        mime="text/csv",
        key=f"download-{key}",
        icon=":material/download:",
    )


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mean_pm(mean: Any, std: Any, digits: int = 3) -> str:
    text = fmt(mean, digits)
    return text if std is None or pd.isna(std) else f"{text} ± {fmt(std, digits)}"


# ------------------------------------------------------------------------------------------------ charts


def _x(factor: str, stats: pd.DataFrame, numeric: bool, log: bool) -> alt.X:
    if numeric:
        scale = alt.Scale(type="log", base=2) if log else alt.Scale(zero=False, nice=False, padding=12)
        values = sorted(stats["level_value"].dropna().unique().tolist())
        return alt.X("level_value:Q", title=label(factor), scale=scale, axis=alt.Axis(values=values))
    order = stats["level"].tolist()
    return alt.X("level:N", title=label(factor), sort=list(dict.fromkeys(order)), axis=alt.Axis(labelAngle=-20))


def _errorbars(base: alt.Chart, x: alt.X, metric: str, colour: Any, title: str) -> list[alt.Chart]:
    """Mean -+ std as a vertical rule with short caps (mark_errorbar's caps span a whole band on a nominal axis)."""
    rule = base.mark_rule(strokeWidth=1.5).encode(
        x=x, y=alt.Y(f"{metric}_lo:Q", title=title), y2=f"{metric}_hi:Q", color=colour
    )
    caps = [
        base.mark_tick(orient="horizontal", size=12, thickness=1.5).encode(
            x=x, y=alt.Y(f"{metric}_{end}:Q", title=title), color=colour
        )
        for end in ("lo", "hi")
    ]
    return [rule, *caps]


def quality_chart(
    stats: pd.DataFrame,
    trials: pd.DataFrame,
    metric: str,
    factor: str,
    *,
    numeric: bool,
    log: bool = False,
    colour: bool = False,
    trivial: bool = False,
) -> alt.LayerChart:
    """Mean over seeds (line and points), mean -+ one sample std (error bars), each seed (faint dots), the best
    setting as a red diamond; optionally the trivial codec's mean as a dashed grey line (PSNR only)."""
    x = _x(factor, stats, numeric, log)
    title = f"{label(metric)} ({better(metric)})"
    y = alt.Y(f"{metric}_mean:Q", title=title, scale=alt.Scale(zero=False))
    col = alt.Color("regularizer:N", title="regularizer", scale=alt.Scale(scheme=SCHEME)) if colour else alt.value(BLUE)
    base = alt.Chart(stats)
    tooltip = ["level:N", "regularizer:N", "n:Q", "seeds:N", alt.Tooltip(f"{metric}_mean:Q", format=".4f")]
    tooltip += [alt.Tooltip(f"{metric}_std:Q", format=".4f")]
    means = (base.mark_line(point=True) if numeric else base.mark_point(filled=True, size=70)).encode(
        x=x, y=y, color=col, tooltip=tooltip
    )
    done = trials[(trials["state"] == "COMPLETE") & trials[metric].notna()].copy()
    done["level"] = done["level"].astype(str)
    seeds = (
        alt.Chart(done)
        .mark_circle(size=28, opacity=0.35)
        .encode(
            x=x,
            y=alt.Y(f"{metric}:Q", title=title),
            color=col,
            tooltip=["trial:Q", "seed:Q", "level:N", alt.Tooltip(f"{metric}:Q", format=".4f")],
        )
    )
    best = base.transform_filter(alt.datum.best)
    marker = best.mark_point(shape="diamond", size=260, filled=True, color=BEST_COLOUR).encode(
        x=x, y=y, tooltip=tooltip
    )
    text = best.mark_text(dy=-16, color=BEST_COLOUR, fontWeight="bold").encode(x=x, y=y, text=alt.value("best"))
    layers = [*_errorbars(base, x, metric, col, title), seeds, means, marker, text]
    if trivial and "trivial_psnr_mean" in stats.columns and stats["trivial_psnr_mean"].notna().any():
        line = base.mark_line(strokeDash=[5, 4], color="grey") if numeric else base.mark_tick(color="grey", size=24)
        tip = [alt.Tooltip("trivial_psnr_mean:Q", format=".3f", title="trivial codec PSNR")]
        layers.insert(0, line.encode(x=x, y=alt.Y("trivial_psnr_mean:Q", title=title), tooltip=tip))
    return alt.layer(*layers).properties(height=360)


def paper_chart(points: pd.DataFrame, factor: str, *, log: bool = False) -> alt.LayerChart:
    """The paper's reported PSNR at the same levels (vidtok.studies.paper.points), drawn apart from ours: its scale
    (256 px, 157M parameters, MCL-JCV) puts it ~15 dB above, so orderings compare, values do not."""
    values = sorted(points["level_value"].unique().tolist())
    scale = alt.Scale(type="log", base=2) if log else alt.Scale(zero=False, nice=False, padding=12)
    x = alt.X("level_value:Q", title=label(factor), scale=scale, axis=alt.Axis(values=values))
    y = alt.Y("psnr:Q", title="the paper's PSNR (dB)", scale=alt.Scale(zero=False))
    legend = alt.Legend(orient="bottom") if points["quantizer"].nunique() > 1 else None
    colour = alt.Color("quantizer:N", scale=alt.Scale(scheme=SCHEME), legend=legend)
    tooltip = ["label:N", alt.Tooltip("psnr:Q", format=".2f")]
    base = alt.Chart(points)
    marks = base.mark_point(shape="square", size=70, filled=True).encode(x=x, y=y, color=colour, tooltip=tooltip)
    lines = base.mark_line(strokeDash=[2, 2]).encode(x=x, y=y, color=colour)
    return alt.layer(lines, marks).properties(height=360, title="The paper (reported)")


def scatter_chart(stats: pd.DataFrame, x_metric: str, y_metric: str, name_field: str = "level") -> alt.LayerChart:
    """Setting means of two metrics against each other, with -+ std bars both ways and labels; best in red."""
    base = alt.Chart(stats)
    x = alt.X(f"{x_metric}_mean:Q", title=label(x_metric), scale=alt.Scale(zero=False, padding=70))
    y = alt.Y(f"{y_metric}_mean:Q", title=label(y_metric), scale=alt.Scale(zero=False, padding=20))
    points = base.mark_point(filled=True, size=80).encode(
        x=x,
        y=y,
        color=alt.condition(alt.datum.best, alt.value(BEST_COLOUR), alt.value(BLUE)),
        tooltip=[f"{name_field}:N", "n:Q", f"{x_metric}_mean:Q", f"{y_metric}_mean:Q"],
    )
    xbars = base.mark_rule().encode(x=alt.X(f"{x_metric}_lo:Q", title=label(x_metric)), x2=f"{x_metric}_hi:Q", y=y)
    ybars = base.mark_rule().encode(x=x, y=alt.Y(f"{y_metric}_lo:Q", title=label(y_metric)), y2=f"{y_metric}_hi:Q")
    text = base.mark_text(align="left", dx=8, dy=-8).encode(x=x, y=y, text=f"{name_field}:N")
    return alt.layer(xbars, ybars, points, text).properties(height=340)


def line_chart(
    df: pd.DataFrame, x: str, ys: list[str], x_title: str, y_title: str, integer_x: bool = False
) -> alt.Chart:
    """Several columns of one table as lines against `x` (long format, one colour per column)."""
    long = df[[x, *ys]].melt(id_vars=[x], var_name="series", value_name="value").dropna()
    return (
        alt.Chart(long)
        .mark_line(point=len(df) <= 60)
        .encode(
            x=alt.X(f"{x}:Q", title=x_title, axis=alt.Axis(format="d", tickMinStep=1) if integer_x else alt.Axis()),
            y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
            color=alt.Color("series:N", title=None, scale=alt.Scale(scheme=SCHEME)),
            tooltip=[f"{x}:Q", "series:N", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=300)
    )
