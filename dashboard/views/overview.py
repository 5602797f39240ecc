"""Overview: the latest pipeline run (metrics with their protocol, params, data hash, commit) and every study's
status. Reads outputs/train/*/run.json + val.csv, outputs/eval/metrics.json, params.yaml, data.dvc, experiments/."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import analysis as A
from dashboard import data, ui
from vidtok.runs import Outputs
from vidtok.studies.results import state_counts

PROTOCOL_FIELDS = ("pooling", "data_range", "window", "backbone", "version", "resolution", "clip_length", "num_clips")


def _short(sha: str | None, n: int = 12) -> str:
    return sha[:n] if sha else "—"


def _runs(base: Any) -> tuple[Any, dict[str, Any]] | None:
    """Draw the pipeline's run folders; return the latest (final stage) folder and its record."""
    runs = data.pipeline_runs(base)
    if not runs:
        ui.empty_state("No pipeline run yet (no outputs/train/*/run.json)", data.CMD_PIPELINE, alternative="dvc repro")
        return None
    records: dict[Any, dict[str, Any]] = {}
    for run in runs:
        try:
            records[run] = data.read_run_record(run)
        except data.DataError as err:
            ui.show_error(err)
    if not records:
        return None
    rows = []
    for run, m in records.items():
        rows.append(
            {
                "stage": m["stage"],
                "status": m["status"],
                "run id": m["run_id"],
                "steps": f"{m['steps_completed']}/{m['total_steps']}",
                "wall time (s)": m["wall_time_s"],
                "seed": m["seed"],
                "started": m["started_at"],
                "ended": m["ended_at"] or "—",
                "folder": data.display(run),
                "error": m["error"] or "",
            }
        )
    latest_dir, latest = list(records.items())[-1]
    status_icon = {
        "completed": ":material/check_circle:",
        "running": ":material/pending:",
        "failed": ":material/cancel:",
    }
    cols = st.columns(5)
    cols[0].metric("stage", latest["stage"])
    cols[1].metric("status", latest["status"])
    cols[2].metric("steps", f"{latest['steps_completed']}/{latest['total_steps']}")
    cols[3].metric("wall time", f"{latest['wall_time_s']:.0f} s" if latest["wall_time_s"] is not None else "—")
    cols[4].metric("seed", latest["seed"])
    if latest["status"] == "failed":
        ui.show_error(f"{data.display(latest_dir)}: run failed: {latest['error']}")
    git = latest["git"]
    params = latest["params"] or {}
    st.markdown(
        f"{status_icon.get(latest['status'], '')} Run `{latest['run_id']}` · commit "
        f"`{_short(git.get('commit'))}`{' (dirty tree)' if git.get('dirty') else ''} · data hash "
        f"`{_short((latest.get('identity') or {}).get('data_sha256'))}` · params `{params.get('file', '—')}` profile "
        f"**{params.get('profile', '—')}** (sha256 `{_short(params.get('sha256'))}`)"
        + (f" · overrides `{params.get('overrides')}`" if params.get("overrides") else "")
    )
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    return latest_dir, latest


def _curve(run_dir: Any, record: dict[str, Any]) -> None:
    try:
        curve = data.read_val_curve(run_dir, record)
    except data.DataError as err:
        ui.show_error(err)
        return
    if curve is None or not len(curve):
        st.caption("No validation curve (val.csv) in the latest run yet.")
        return
    ys = [c for c in ("val_psnr", "trivial_psnr") if c in curve.columns]
    if ys:
        st.markdown(f"**Learning curve** of `{data.display(run_dir)}` (validation PSNR vs the trivial codec)")
        st.altair_chart(ui.line_chart(curve, "step", ys, "step", "PSNR (dB)"), width="stretch")


def _evaluation(base: Any) -> None:
    st.header("Evaluation")
    folder = Outputs(base).eval
    try:
        record = data.read_eval(folder)
    except data.DataError as err:
        ui.show_error(err)
        return
    if record is None:
        ui.empty_state(
            "No evaluation yet (no outputs/eval/metrics.json)", data.CMD_PIPELINE, alternative=data.CMD_EVALUATE
        )
        return
    s = record["summary"]
    cols = st.columns(5)
    gain = s.get("psnr_gain_over_trivial_db")
    cols[0].metric("PSNR (dB)", ui.fmt(s.get("psnr"), 2), delta=None if gain is None else f"{gain:+.2f} dB vs trivial")
    cols[1].metric("SSIM", ui.fmt(s.get("ssim"), 4))
    cols[2].metric("trivial codec PSNR (dB)", ui.fmt(s.get("trivial_psnr"), 2))
    cols[3].metric("LPIPS", ui.fmt(s.get("lpips"), 4) if "lpips" in s else "n/a")
    cols[4].metric("codebook use", ui.fmt(s.get("codebook_utilisation"), 3) if "codebook_utilisation" in s else "n/a")
    ckpt, d = record.get("checkpoint") or {}, record.get("data") or {}
    st.caption(
        f"Checkpoint `{ckpt.get('name') or ckpt.get('path', '—')}` ({ckpt.get('regularizer', '?')}, "
        f"{ckpt.get('compression', '?')}, weights `{_short(ckpt.get('weights_sha256'))}`) on {d.get('num_clips', '?')} "
        f"{d.get('split', '?')} clips of {d.get('num_videos', '?')} videos, {d.get('clip_length', '?')} frames at "
        f"{d.get('fps', '?')} fps, {d.get('resolution', '?')}; evaluated {record.get('created_at', '?')}."
    )
    rows = []
    for name, r in record["metrics"].items():
        if r.get("available") is False:
            continue
        p = r.get("protocol") or {}
        row = {"metric": name, "value": r["value"]}
        row |= {k: ui.fmt(p.get(k)) if p.get(k) is not None else "—" for k in PROTOCOL_FIELDS}
        row["fps"] = p.get("fps")
        rows.append(row)
    st.markdown("**Metrics with their protocol** (numbers are comparable only under the same protocol)")
    ui.table(pd.DataFrame(rows), "eval-metrics", "eval-metrics")
    unavailable = {k: v for k, v in (record.get("unavailable") or {}).items()}
    if unavailable:
        st.markdown("**Not measured**")
        st.dataframe(pd.DataFrame({"metric": list(unavailable), "why": list(unavailable.values())}), hide_index=True)
    base_line = (record.get("baseline_trivial_codec") or {}).get("description")
    if base_line:
        st.caption(f"Trivial codec: {base_line}.")


def _params(base: Any, record: dict[str, Any] | None) -> None:
    st.header("Params and data")
    left, right = st.columns(2)
    with left:
        try:
            params = data.read_yaml(base / "params.yaml")
        except data.DataError as err:
            ui.show_error(err)
            params = None
        if params is None:
            st.caption("No params.yaml at the data root.")
        else:
            names = list(params) if isinstance(params, dict) else []
            st.markdown(f"**params.yaml**: {len(names)} top-level key(s): {', '.join(f'`{n}`' for n in names[:12])}")
            with st.expander("params.yaml"):
                st.code(data.read_text(base / "params.yaml") or "", language="yaml")
        if record is not None:
            with st.expander("Configuration of the latest run (run.json config)"):
                st.json(record["config"], expanded=1)
    with right:
        try:
            dvc = data.read_yaml(base / "data.dvc")
        except data.DataError as err:
            ui.show_error(err)
            dvc = None
        outs = (dvc or {}).get("outs") if isinstance(dvc, dict) else None
        if outs:
            for out in outs:
                st.markdown(
                    f"**data.dvc**: `{out.get('path', '?')}` md5 `{out.get('md5', '—')}`, "
                    f"{out.get('nfiles', '?')} files, {out.get('size', '?')} bytes"
                )
        else:
            st.caption("No data.dvc at the data root.")
        if record is not None and record.get("data_files"):
            with st.expander("Data files the latest run read (sha256)"):
                files = record["data_files"]
                st.dataframe(pd.DataFrame({"file": list(files), "sha256": list(files.values())}), hide_index=True)


def _findings(base: Any) -> None:
    """experiments/FINDINGS.md (generated by `vidtok findings` from the committed trials), one expander."""
    path = Outputs(base).experiments / "FINDINGS.md"
    text = data.read_text(path)
    if not text:
        st.caption("No experiments/FINDINGS.md yet: `vidtok findings` writes it from the studies' trials.")
        return
    answers = [line for line in text.splitlines() if line.startswith("**Answer at this scale.**")]
    st.markdown(f"**Findings** ({data.display(path)}): {len(answers)} open question(s) answered at this scale.")
    with st.expander("experiments/FINDINGS.md"):
        st.markdown(text.split("\n## ", 1)[0])
        for section in text.split("\n## ")[1:]:
            st.markdown("#### " + section.split("\n", 1)[0])
            st.markdown("\n".join(line for line in section.splitlines()[1:] if not line.startswith("![")))


def _studies(base: Any) -> None:
    st.header("Studies")
    rows = []
    for name, folder in data.study_dirs(base).items():
        info = data.STUDIES.get(name)
        row: dict[str, Any] = {"study": name, "question": info.title if info else "—"}
        try:
            trials = data.read_trials(folder)
            meta = data.read_study_json(folder)
        except data.DataError as err:
            ui.show_error(err)
            rows.append(row | {"status": "unreadable"})
            continue
        if trials is None:
            rows.append(row | {"status": "not run", "next step": info.deployment_command() if info else "—"})
            continue
        counts = state_counts(trials)
        metric = A.study_metric(meta)
        best = "—"
        if counts["COMPLETE"] and trials[metric].notna().any():
            stats = A.setting_stats(trials, metric, [metric])
            top = stats[stats["best"]].iloc[0]
            best = f"{top['level']}: {A.label(metric)} {ui.mean_pm(top[f'{metric}_mean'], top[f'{metric}_std'], 3)}"
        running = counts["RUNNING"] + counts["WAITING"]
        status = "running" if running else ("complete" if counts["COMPLETE"] else "no complete trial")
        updated = data.mtime(folder / "trials.parquet")
        row |= {
            "status": status,
            "complete": counts["COMPLETE"],
            "failed": counts["FAIL"],
            "pruned": counts["PRUNED"],
            "running": running,
            "best setting": best,
            "updated": pd.Timestamp(updated, unit="s").strftime("%Y-%m-%d %H:%M") if updated else "—",
        }
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    _findings(base)
    if any(r.get("status") == "not run" for r in rows):
        st.caption(
            f"A study that has not run yet starts with the command in its row, after `{data.CMD_PREFECT}` "
            "(local Prefect server on 127.0.0.1 and its worker)."
        )


st.title("vidtok overview")
BASE = data.root()
st.header("Latest pipeline run")
latest = _runs(BASE)
if latest is not None:
    _curve(*latest)
_evaluation(BASE)
_params(BASE, latest[1] if latest else None)
_studies(BASE)
