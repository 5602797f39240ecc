"""Audit: the latest `vidtok audit` (outputs/audit/audit.json) as a pass/fail table, and a diff of the params and
metrics of two chosen runs (pipeline run folders or study trials)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import analysis as A
from dashboard import data, ui
from vidtok.formats import AUDIT_FAIL, AUDIT_PASS, AUDIT_SKIP, AUDIT_STATUSES
from vidtok.runs import Outputs

STATUS_MARK = {AUDIT_PASS: "PASS", AUDIT_FAIL: "FAIL", AUDIT_SKIP: "skip"}
STATUS_STYLE = {"PASS": "background-color: #d4edda", "FAIL": "background-color: #f8d7da; font-weight: bold", "skip": ""}


def _audit(base: Path) -> None:
    st.header("Latest reproducibility audit")
    try:
        audit = data.read_audit(base)
    except data.DataError as err:
        ui.show_error(err)
        return
    if audit is None:
        ui.empty_state(
            "No audit yet (no outputs/audit/audit.json)",
            data.CMD_AUDIT,
            alternative=f"{data.CMD_AUDIT} --rerun",
            before="`--rerun` also re-evaluates the final checkpoint and compares the metrics.",
        )
        return
    checks = audit["checks"]
    failed = [c for c in checks if c["status"] == AUDIT_FAIL]
    counts = {s: sum(c["status"] == s for c in checks) for s in AUDIT_STATUSES}
    summary = (
        f"{counts[AUDIT_PASS]} passed, {counts[AUDIT_FAIL]} failed, {counts[AUDIT_SKIP]} skipped · target "
        f"`{audit.get('target', '—')}` · checked {audit.get('checked_at', '—')}"
    )
    if audit["passed"]:
        st.success(f"**Audit passed.** {summary}", icon=":material/verified:")
    else:
        names = ", ".join(c["name"] for c in failed) or "see the table"
        st.error(f"**Audit failed** ({names}). {summary}", icon=":material/gpp_bad:")
    table = pd.DataFrame(
        {
            "check": [c["name"] for c in checks],
            "status": [STATUS_MARK[c["status"]] for c in checks],
            "detail": [str(c.get("detail", "")) for c in checks],
        }
    )
    ui.table(table, "audit", "audit", styled=table.style.map(lambda v: STATUS_STYLE.get(v, ""), subset=["status"]))
    if audit.get("tolerance"):
        st.markdown("**Tolerance** of the metric re-check")
        st.json(audit["tolerance"])
    md = data.read_text(Outputs(base).audit / "audit.md")
    if md:
        with st.expander("audit.md"):
            st.markdown(md)


def _diff(base: Path) -> None:
    st.header("Compare two runs")
    found, problems = A.candidates(base)
    if problems:
        files = ", ".join(f"`{p.split(':')[0]}`" for p in problems)
        st.warning(
            f"Left out of the comparison, unreadable (the Overview says why): {files}", icon=":material/warning:"
        )
    if len(found) < 2:
        ui.empty_state(
            f"Two runs are needed to compare; found {len(found)}",
            data.CMD_PIPELINE,
            alternative=data.STUDIES["sweep-fps"].deployment_command(),
            before="Pipeline run folders and every study trial can be compared.",
        )
        return
    labels = [c.label for c in found]
    left, right = st.columns(2)
    a = left.selectbox("Run A", range(len(found)), format_func=lambda i: labels[i], index=0, key="diff-a")
    b = right.selectbox("Run B", range(len(found)), format_func=lambda i: labels[i], index=1, key="diff-b")
    show_all = st.toggle("Show unchanged keys too", value=False, key="diff-all")
    for title, pick in (("Params", "params"), ("Metrics", "metrics")):
        diff = A.diff_table(getattr(found[a], pick), getattr(found[b], pick), only_changed=not show_all)
        changed = int(diff["changed"].sum()) if len(diff) else 0
        st.subheader(f"{title}: {changed} differ")
        if not len(diff):
            st.caption(f"No {pick} differ." if not show_all else f"No {pick} recorded.")
            continue
        ui.table(diff.drop(columns=["changed"]), f"diff-{pick}", f"diff-{pick}")
    with st.expander("Raw records of A and B"):
        c1, c2 = st.columns(2)
        c1.code(json.dumps({"params": found[a].params, "metrics": found[a].metrics}, indent=1, default=str))
        c2.code(json.dumps({"params": found[b].params, "metrics": found[b].metrics}, indent=1, default=str))


st.title("Audit")
BASE = data.root()
_audit(BASE)
_diff(BASE)
