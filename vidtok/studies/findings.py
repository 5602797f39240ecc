"""experiments/FINDINGS.md, generated from the committed study results: never hand-edited numbers.

    vidtok findings                      # reads experiments/<study>/trials.parquet, writes FINDINGS.md and plots
    python -m vidtok.studies.findings experiments

For each open question of the paper: the answer at this scale in one sentence (the best level on val, and on test
how it and every other level compare with the paper's choice, paired by seed), the summary table, a plot (mean and
95% CI per level, the trivial codec beside), the paper's numbers beside ours (clearly the paper's), what differs
between the two setups and how far the conclusion should travel. An effect whose CI includes zero is said to be
within the seed spread. Studies that have not run yet are listed as such.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from vidtok._files import atomic_write
from vidtok.runs import code_sha256
from vidtok.studies import paper
from vidtok.studies.results import (
    StudyFileError,
    evaluation_counts,
    read_trials,
    render_summary,
    summarize,
    summary_markdown,
)
from vidtok.studies.specs import DEFAULT_SEEDS, STUDIES, StudySpec

__all__ = ["answer", "code_currency", "coverage", "findings_markdown", "plot_svg", "render_findings", "write_findings"]

FINDINGS_NAME = "FINDINGS.md"
PLOT_NAME = "plot.svg"


# ------------------------------------------------------------------------------------------------ the plot


def plot_svg(summary: dict[str, Any], title: str, metric: str = "test_psnr") -> str:
    """A small SVG: one point per level (mean of `metric`), its 95% CI as a bar, the trivial codec's mean on the
    same split as a grey cross; levels in the summary's order (numeric levels already sorted by value)."""
    levels = [r for r in summary["levels"] if r[metric]["mean"] is not None]
    trivial_key = "test_trivial_psnr" if metric.startswith("test_") else "trivial_psnr"
    width, height, left, right, top, bottom = 640, 300, 60, 20, 30, 70
    if not levels:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60"><text x="10" y="30">{title}: no results yet</text></svg>\n'  # noqa: E501
    values = []
    for r in levels:
        ci = r[metric]["ci95"] or [r[metric]["mean"]] * 2
        values += ci
        if r[trivial_key]["mean"] is not None:
            values.append(r[trivial_key]["mean"])
    lo, hi = min(values), max(values)
    pad = max(0.2, (hi - lo) * 0.1)
    lo, hi = lo - pad, hi + pad
    step = (width - left - right) / max(1, len(levels))

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (height - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<text x="{left}" y="18" font-size="13">{title}</text>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
    ]
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" stroke="#eee"/>')
    for i, r in enumerate(levels):
        x = left + step * (i + 0.5)
        entry = r[metric]
        if entry["ci95"]:
            a, b = entry["ci95"]
            out.append(f'<line x1="{x:.1f}" y1="{y(a):.1f}" x2="{x:.1f}" y2="{y(b):.1f}" stroke="#1f77b4" '
                       'stroke-width="2"/>')  # fmt: skip
        colour = "#d62728" if r["level"] == summary.get("baseline") else "#1f77b4"
        out.append(f'<circle cx="{x:.1f}" cy="{y(entry["mean"]):.1f}" r="4" fill="{colour}"/>')
        trivial = r[trivial_key]["mean"]
        if trivial is not None:
            out.append(f'<text x="{x:.1f}" y="{y(trivial) + 4:.1f}" text-anchor="middle" fill="#888">x</text>')
        out.append(
            f'<text x="{x:.1f}" y="{height - bottom + 14}" text-anchor="end" transform="rotate(-35 {x:.1f} '
            f'{height - bottom + 14})">{r["level"]}</text>'
        )
    split = "test" if metric.startswith("test_") else "val"
    out.append(
        f'<text x="{left}" y="{height - 6}" fill="#555">{split} PSNR (dB): mean and 95% CI over seeds; red: the '
        "baseline (the paper's choice); grey x: the trivial codec</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ the text


def answer(summary: dict[str, Any]) -> str:
    """One sentence: the best level on val, then what test says about it against the baseline."""
    best, baseline = summary["best_level"], summary.get("baseline")
    if best is None:
        return "No completed trials yet."
    test = {c["level"]: c for c in (summary.get("comparisons") or {}).get("test", [])}
    levels = {r["level"]: r for r in summary["levels"]}
    below = [r["level"] for r in summary["levels"] if _below_trivial(r)]
    text = f"Best on val: **{best}**"
    if best == baseline:
        text += " (the paper's choice)"
    elif best in test and test[best]["mean_diff"] is not None:
        c = test[best]
        within = c["ci95"] is None or c["ci95"][0] <= 0 <= c["ci95"][1]
        text += (
            f"; on test it is {c['mean_diff']:+.2f} dB against {baseline} over {c['pairs']} seed pairs"
            + (f" (95% CI [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}], p = {c['p_value']:.2g})" if c["ci95"] else "")
            + (", within the seed spread: no level is shown better than the paper's choice" if within else "")
        )
    elif levels.get(best, {}).get("test_psnr", {}).get("mean") is None:
        text += "; no test numbers yet"
    text += "."
    if below:
        text += f" Below the trivial codec on test: {', '.join(below)}."
    return text


def coverage(spec: StudySpec, summary: dict[str, Any], seeds: int = len(DEFAULT_SEEDS)) -> str:
    """Which of the study's levels have no finished trial yet, and which fewer than `seeds`: a partial study says
    so next to its answer ("" when every level has them all)."""
    done = {r["level"]: int(r["n"]) for r in summary["levels"]}
    missing = [lv.label for lv in spec.levels if done.get(lv.label, 0) == 0]
    short = [f"{lv.label} ({done[lv.label]})" for lv in spec.levels if 0 < done.get(lv.label, 0) < seeds]
    parts = []
    if missing:
        parts.append(f"not run yet: {', '.join(missing)}")
    if short:
        parts.append(f"fewer than {seeds} seeds: {', '.join(short)}")
    return ("**Partial study**: " + "; ".join(parts) + ".") if parts else ""


def code_currency(trials: pd.DataFrame, current: str | None = None) -> str:
    """Whether the finished trials ran the library code of this checkout (vidtok.runs.code_sha256("study"), what
    `vidtok audit` compares): a study made by other code says so next to its answer ("" when all of them did).
    Its numbers are still what that code measured; they are not what this checkout would make until rerun.

    `current` is the code to compare with (default this checkout's); a prefix of a sha256 works too (the 12 hex
    digits FINDINGS.md shows, with which `vidtok audit` regenerates a FINDINGS.md that another checkout wrote)."""
    current = current or code_sha256("study")
    done = trials[trials["state"] == "COMPLETE"]
    recorded = done["code_sha256"].dropna()
    changed = recorded[[not str(sha).startswith(current) for sha in recorded]]
    parts = []
    if len(changed):
        ran = ", ".join(sorted({sha[:12] for sha in changed}))
        parts.append(
            f"{len(changed)} of {len(done)} finished trials ran library code (sha256 {ran}) that differs from this"
            f" checkout's ({current[:12]}): `vidtok audit` fails this study until it is rerun"
        )
    if missing := len(done) - len(recorded):
        parts.append(f"{missing} of {len(done)} finished trials record no code sha256")
    return ("**Stale study**: " + "; ".join(parts) + ".") if parts else ""


def _below_trivial(r: dict[str, Any]) -> bool:
    mine, trivial = r["test_psnr"]["mean"], r["test_trivial_psnr"]["mean"]
    return mine is not None and trivial is not None and mine < trivial


def _setup(df: pd.DataFrame, folder: Path) -> str:
    """What this study's trials trained on: steps, resolution, batch, clip length and rate of each stage, from the
    run records of its first complete trial, and the mean training time."""
    done = df[df["state"] == "COMPLETE"]
    if not len(done):
        return ""
    parts = []
    for stage in ("stage1", "stage2", "onestage"):
        record = folder / str(done.iloc[0]["run_dir"]) / stage / "run.json"
        try:
            config = json.loads(record.read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        train, data = config.get("train", {}), config.get("data", {})
        parts.append(
            f"{stage} {train.get('steps')} steps at {train.get('resolution')} px, batch {train.get('batch_size')}, "
            f"lr {train.get('lr')}, {data.get('clip_frames')}-frame clips"
        )
    wall = done["train_wall_s"].dropna()
    cost = f"; {wall.mean() / 60:.1f} min of training per trial on average" if len(wall) else ""
    scored = f"; each scored {evaluation_counts(summarize(df)['levels'])}"
    return ("This study's trials: " + "; ".join(parts) + cost + scored + ".") if parts else ""


def _paper_block(spec: StudySpec) -> str:
    """The paper's related numbers, labelled as the paper's."""
    if spec.factor == "fps":
        rows = paper.TABLE4[paper.TABLE4["stage 2"] != "-"]
        title = "Table 4, two-stage rows: 3 fps vs 8 fps (the only frame rates the paper compares)"
    elif spec.factor == "log2_codes":
        rows, title = paper.TABLE3, "Table 3: quantizers and codebook sizes"
    elif spec.factor == "schedule":
        rows, title = paper.TABLE4, "Table 4: training strategies and their GPU hours"
    else:
        rows, title = paper.TABLE2, "Table 2: architecture variants (and Table 3 for the quantizer rows)"
    return (
        f"The paper's numbers ({paper.CITATION}, {title}; {paper.PROTOCOL}; not measured here):\n\n"
        + _markdown_table(rows)
    )


def _markdown_table(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and v != v) else str(v)

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def findings_markdown(experiments: Path, code: str | None = None) -> tuple[str, dict[str, str]]:
    """FINDINGS.md's text and the SVG plot of each study (keyed by study name). `code`: the library code the
    "Stale study" lines compare the trials with (code_currency; default this checkout's)."""
    lines = [
        "# Findings: the paper's open questions at CPU scale",
        "",
        "Generated by `vidtok findings` from `experiments/<study>/trials.parquet` (do not edit by hand). Every trial"
        " trains a tiny VidTok on the footage corpus (`vidtok data fetch`) and is evaluated on the val split (which"
        " selects the best level) and the test split (the numbers reported here). Levels are compared with the"
        " paper's choice seed by seed (a seed fixes the initialisation and the clip order).",
        "",
        "How far this travels: the models here are ~0.5M-parameter tiny presets trained for minutes at 32-128 px on"
        " ~1,500 s of footage; the paper trains 157M-parameter models for days at 128-256 px. Orderings and gaps"
        " here are evidence about the question at this scale, not a replication of the paper's numbers.",
        "",
    ]
    plots: dict[str, str] = {}
    for spec in STUDIES.values():
        folder = experiments / spec.name
        lines += [f"## {spec.title}: {spec.question}", ""]
        try:
            df = read_trials(folder)
        except StudyFileError:
            lines += [f"Not run yet. Run it with `{spec.deployment_command()}`.", ""]
            continue
        summary = summarize(df, spec.metric, spec.baseline)
        plots[spec.name] = plot_svg(summary, f"{spec.name}: test PSNR vs {spec.factor}")
        lines += [f"**Answer at this scale.** {answer(summary)}", ""]
        if partial := coverage(spec, summary):
            lines += [partial, ""]
        if stale := code_currency(df, code):
            lines += [stale, ""]
        lines += [
            summary_markdown(summary, spec.name, spec.factor),
            f"![{spec.name}]({spec.name}/{PLOT_NAME})",
            "",
            _setup(df, folder),
            "",
            _paper_block(spec),
        ]
    return "\n".join(lines).rstrip() + "\n", plots


def render_findings(experiments: str | Path = "experiments", code: str | None = None) -> dict[str, str]:
    """Every file `vidtok findings` writes, keyed by its path relative to `experiments`, in the order it writes
    them: each study's summary.json / summary.md (rewritten from its trials with the study's own metric and
    baseline, so they hold the same tables as FINDINGS.md even when the summary code changed after the study ran),
    each study's plot.svg, then FINDINGS.md. `vidtok audit` compares the committed files with this."""
    root = Path(experiments)
    files: dict[str, str] = {}
    for spec in STUDIES.values():
        try:
            df = read_trials(root / spec.name)
        except StudyFileError:
            continue
        _, texts = render_summary(df, spec.name, spec.factor, spec.metric, spec.baseline)
        files |= {f"{spec.name}/{name}": text for name, text in texts.items()}
    text, plots = findings_markdown(root, code)
    files |= {f"{name}/{PLOT_NAME}": svg for name, svg in plots.items()}
    files[FINDINGS_NAME] = text
    return files


def write_findings(experiments: str | Path = "experiments") -> Path:
    """Write experiments/FINDINGS.md, experiments/<study>/plot.svg and the studies' summaries (render_findings),
    each atomically; returns the FINDINGS path."""
    root = Path(experiments)
    for relative, text in render_findings(root).items():
        atomic_write(root / relative, text)
    return root / FINDINGS_NAME


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("experiments")
    print(f"wrote {write_findings(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
