"""The pipeline's committed records, checked against each other: what a fresh clone can verify without data, run
folders or a DVC cache.

    vidtok audit            # git, dvc-lock, metrics and report (beside the workspace and study checks)

- git: the commit, and tracked files modified since it (dvc.lock and outputs/ excepted: the pipeline rewrites
  them; the checks below verify them instead);
- dvc-lock: dvc.lock's entries for the stages dvc.yaml defines exist, and every dependency that another stage
  produces carries the md5 that stage recorded for it (an md5 edited in one place breaks the chain);
- metrics: outputs/eval/metrics.json has the md5 dvc.lock records (evaluate's output, report's dependency) and
  agrees with itself: each summary number is its metric's value, each value the mean of its per-clip values;
- report: outputs/report.md has the md5 dvc.lock records and is what `vidtok report` writes from that metrics file
  (regenerated with vidtok.evaluation.report.report_markdown; its runs table needs the run folders).

So an edited metrics.json with its md5 edited to match in dvc.lock still fails: its per-clip values and the report
say otherwise; editing all of them consistently leaves the workspace checks (the run folder's checkpoint, the
evaluation's per-video and per-frame tables) to catch it.
"""

from __future__ import annotations

import csv
import itertools
import math
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vidtok._files import md5_file, one_line, tool_env
from vidtok.audit.record import AuditResult
from vidtok.evaluation.report import report_markdown
from vidtok.formats import read_metrics_record
from vidtok.runs import OUTPUTS, SCHEDULES, modified_tracked_files, read_run_record

# The main job's outputs (vidtok.runs.OUTPUTS), relative to the repository root as dvc.yaml and messages name them.
PIPELINE_RUNS = tuple(str(OUTPUTS.run(stage)) for stage in SCHEDULES["twostage"])
PIPELINE_EVAL = str(OUTPUTS.metrics)
PIPELINE_REPORT = str(OUTPUTS.report)
# A value and the mean of its per-clip values: the evaluation pools the frames of equal-length clips, so the two
# are one number computed in two summation orders (float64: ~1e-15 apart); an edit is far larger.
POOLING_REL_TOL = 1e-9
# per_video.csv stores each video's mean with 6 significant digits ("%.6g"): its clip-weighted mean is within
# 5e-6 (relative) of the pooled value; 1e-5 leaves room for that rounding and nothing else.
TABLE_REL_TOL = 1e-5


def run_tool(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=cwd, env=tool_env(), capture_output=True, text=True, check=False)


def short(value: Any) -> str:
    """A recorded value as a check's detail shows it: floats exactly (repr), None as null, long text cut."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy scalar (a pandas cell)
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):  # bool included
        return str(value)
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


# ------------------------------------------------------------------------------------------------ git


def check_git(result: AuditResult, repo: Path) -> dict[str, Any]:
    head = run_tool(["git", "rev-parse", "HEAD"], repo)
    if head.returncode:
        result.add("git", False, "not a git repository: the code behind the results cannot be named")
        return {}
    commit = head.stdout.strip()

    modified = modified_tracked_files(run_tool(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout)
    if modified:
        result.add("git", False, f"commit {commit[:10]} with modified tracked files: {', '.join(modified[:6])}")
    else:
        result.add("git", True, f"commit {commit[:10]}, no modified tracked files")
    return {"commit": commit, "modified": modified}


# ------------------------------------------------------------------------------------------------ dvc.lock


def read_lock(repo: Path) -> dict[str, Any]:
    """dvc.lock's stages ({} without a dvc.lock); ValueError naming the file when it is not YAML."""
    path = repo / "dvc.lock"
    if not path.is_file():
        return {}
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({one_line(err)})") from None


def recorded_md5s(stages: dict[str, Any], relative: str) -> list[tuple[str, str]]:
    """(stage, md5) of every dvc.lock entry (dependency or output) naming `relative`."""
    found = []
    for stage, entry in stages.items():
        for item in [*(entry.get("deps") or []), *(entry.get("outs") or [])]:
            if item.get("path") == relative:
                found.append((stage, str(item.get("md5"))))
    return found


def lock_md5_problems(stages: dict[str, Any], path: Path, relative: str) -> list[str]:
    """`path` against every md5 dvc.lock records for it (empty when dvc.lock names it nowhere)."""
    if not path.is_file():
        return []
    actual = md5_file(path)
    return [
        f"{relative}: md5 {actual[:12]} differs from dvc.lock ({stage}) {md5[:12]}"
        for stage, md5 in recorded_md5s(stages, relative)
        if md5 != actual
    ]


def defined_stages(repo: Path) -> dict[str, set[str] | None]:
    """dvc.yaml's stages: name -> the names DVC gives its matrix / foreach copies (`resample@3`), an empty set for
    a plain stage, None where the copies' names are not simple values (any `name@...` entry then counts)."""
    path = repo / "dvc.yaml"
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {} if path.is_file() else {}
    names: dict[str, set[str] | None] = {}
    for name, entry in stages.items():
        entry = entry or {}
        if "matrix" in entry:
            values = list((entry["matrix"] or {}).values())
            scalars = all(isinstance(v, list) and all(not isinstance(x, dict | list) for x in v) for v in values)
            names[name] = {f"{name}@{'-'.join(map(str, c))}" for c in itertools.product(*values)} if scalars else None
        elif "foreach" in entry:
            items = entry["foreach"]
            keys = list(items) if isinstance(items, dict) else items
            plain = isinstance(keys, list) and all(not isinstance(x, dict | list) for x in keys)
            names[name] = {f"{name}@{k}" for k in keys} if plain else None
        else:
            names[name] = set()
    return names


def check_dvc_lock(result: AuditResult, repo: Path) -> dict[str, Any]:
    """dvc.lock's entries for the stages dvc.yaml defines, and their dependency chain; returns those entries."""
    try:
        stages = read_lock(repo)
    except ValueError as err:
        result.add("dvc-lock", False, str(err))
        return {}
    if not stages:
        result.add(
            "dvc-lock", False, "dvc.lock: missing or empty: the pipeline's results are not recorded (`make run`)"
        )
        return {}
    defined = defined_stages(repo)

    def current(stage: str) -> bool:
        base = stage.split("@", 1)[0]
        if base not in defined:
            return False
        copies = defined[base]
        if copies is None:
            return "@" in stage
        return stage in copies if copies else stage == base

    kept = {name: entry for name, entry in stages.items() if current(name)}
    ignored = sorted(set(stages) - set(kept))
    problems = []
    for base, copies in defined.items():
        for name in [base] if copies == set() else sorted(copies or ()):
            if name not in kept:
                problems.append(f"dvc.lock: no entry for stage {name} of dvc.yaml (never run: `dvc repro`)")
    producers = {
        out.get("path"): (name, str(out.get("md5"))) for name, entry in kept.items() for out in entry.get("outs") or []
    }
    for name, entry in kept.items():
        for dep in entry.get("deps") or []:
            made = producers.get(dep.get("path"))
            if made is not None and str(dep.get("md5")) != made[1]:
                problems.append(
                    f"dvc.lock: {name} depends on {dep.get('path')} md5 {str(dep.get('md5'))[:12]}, but {made[0]} "
                    f"recorded it as {made[1][:12]}"
                )
    note = (
        f"; {len(ignored)} entries of stages no longer in dvc.yaml left out ({', '.join(ignored)})" if ignored else ""
    )
    result.add_problems(
        "dvc-lock", problems, f"{len(kept)} stages recorded; every dependency carries its producer's md5{note}"
    )
    return kept


# ------------------------------------------------------------------------------------------------ evaluation files


def metrics_problems(record: dict[str, Any], where: str) -> list[str]:
    """What disagrees inside one evaluation file, which states most numbers twice (vidtok.evaluation.evaluate
    .summarise): each summary number against its metric's value, each value against the mean of its per-clip
    values, the trivial codec's the same, the PSNR gain against psnr - trivial_psnr, num_clips against data."""
    summary = record.get("summary") or {}
    metrics = record.get("metrics") or {}
    trivial = record.get("baseline_trivial_codec") or {}
    entries = [(f"metrics.{name}", name, entry) for name, entry in metrics.items()]
    entries += [(f"baseline_trivial_codec.{name}", f"trivial_{name}", trivial.get(name)) for name in ("psnr", "ssim")]
    problems = []
    for label, key, entry in entries:
        if not isinstance(entry, dict) or "value" not in entry:
            continue
        value = entry["value"]
        if key in summary and summary[key] != value:
            problems.append(f"{where}: summary.{key} {short(summary[key])} but {label}.value {short(value)}")
        per_clip = [v for v in entry.get("per_clip") or [] if isinstance(v, int | float)]
        if per_clip and isinstance(value, int | float):
            mean = math.fsum(per_clip) / len(per_clip)
            if not math.isclose(mean, value, rel_tol=POOLING_REL_TOL, abs_tol=1e-12):
                problems.append(
                    f"{where}: {label}.value {short(value)} but its {len(per_clip)} per-clip values average "
                    f"{short(mean)}"
                )
    psnr, base = summary.get("psnr"), summary.get("trivial_psnr")
    if isinstance(psnr, int | float) and isinstance(base, int | float):
        gain = summary.get("psnr_gain_over_trivial_db")
        if not isinstance(gain, int | float) or not math.isclose(gain, psnr - base, rel_tol=1e-12, abs_tol=1e-12):
            problems.append(f"{where}: summary.psnr_gain_over_trivial_db {short(gain)} but psnr - trivial_psnr is "
                            f"{short(psnr - base)}")  # fmt: skip
        if summary.get("beats_trivial_codec") is not (psnr - base > 0):
            problems.append(f"{where}: summary.beats_trivial_codec {summary.get('beats_trivial_codec')} contradicts "
                            f"psnr {short(psnr)} vs trivial_psnr {short(base)}")  # fmt: skip
    clips = (record.get("data") or {}).get("num_clips")
    if "num_clips" in summary and summary["num_clips"] != clips:
        problems.append(f"{where}: summary.num_clips {summary['num_clips']} but data.num_clips {clips}")
    return problems


def per_video_problems(record: dict[str, Any], table: Path, where: str) -> list[str]:
    """The evaluation's per_video.csv (written with it) against its summary: the clip-weighted mean of each video's
    psnr, ssim and trivial_psnr is the pooled value (clips have equal length), within the table's rounding."""
    if not table.is_file():
        return []
    try:
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
        clips = [int(r["clips"]) for r in rows]
    except (OSError, KeyError, ValueError) as err:
        return [f"{where}: unreadable ({one_line(err, with_type=True)})"]
    summary = record.get("summary") or {}
    problems = []
    if sum(clips) != summary.get("num_clips"):
        problems.append(f"{where}: {sum(clips)} clips, the metrics file says {summary.get('num_clips')}")
    for name in ("psnr", "ssim", "trivial_psnr"):
        value = summary.get(name)
        cells = [r.get(name) for r in rows]
        if not isinstance(value, int | float) or not cells or any(c in (None, "") for c in cells) or not sum(clips):
            continue
        mean = math.fsum(n * float(c) for n, c in zip(clips, cells, strict=True)) / sum(clips)
        if not math.isclose(mean, value, rel_tol=TABLE_REL_TOL):
            problems.append(f"{where}: clip-weighted {name} {mean:.6g} but the metrics file says {short(value)}")
    return problems


# ------------------------------------------------------------------------------------------------ metrics, report


def check_metrics(result: AuditResult, repo: Path, stages: dict[str, Any]) -> dict[str, Any] | None:
    """outputs/eval/metrics.json: dvc.lock's md5 of it, and its own numbers against each other."""
    path = repo / PIPELINE_EVAL
    if not path.is_file():
        recorded = "dvc.lock records it" if recorded_md5s(stages, PIPELINE_EVAL) else "nothing evaluated yet"
        result.add("metrics", False, f"{PIPELINE_EVAL}: missing ({recorded}; `make run` or `dvc repro evaluate`)")
        return None
    try:
        record = read_metrics_record(path)
    except ValueError as err:
        result.add("metrics", False, str(err).replace(str(path), PIPELINE_EVAL))
        return None
    problems = lock_md5_problems(stages, path, PIPELINE_EVAL) + metrics_problems(record, PIPELINE_EVAL)
    if not recorded_md5s(stages, PIPELINE_EVAL):
        problems.append(f"{PIPELINE_EVAL}: dvc.lock records no md5 for it (not made by `dvc repro`?)")
    ck = str((record.get("checkpoint") or {}).get("weights_sha256"))
    result.add_problems(
        "metrics",
        problems,
        f"{PIPELINE_EVAL} has dvc.lock's md5 {md5_file(path)[:12]}; its summary, values and per-clip means agree "
        f"(checkpoint {ck[:12]})",
    )
    return record


def check_report(result: AuditResult, repo: Path, stages: dict[str, Any], record: dict[str, Any] | None) -> None:
    """outputs/report.md: dvc.lock's md5 of it, and the text `vidtok report` writes from the metrics file."""
    path = repo / PIPELINE_REPORT
    if not path.is_file():
        if recorded_md5s(stages, PIPELINE_REPORT):
            result.add("report", False, f"{PIPELINE_REPORT}: missing (dvc.lock records it; `dvc repro report`)")
        return
    committed = path.read_text()
    problems = lock_md5_problems(stages, path, PIPELINE_REPORT)
    runs = [read_run_record(repo / d).to_dict() for d in PIPELINE_RUNS if (repo / d / "run.json").is_file()]
    checked = "regenerated from its metrics file and run records: the same text"
    if record is None:
        problems.append(f"{PIPELINE_REPORT}: its metrics file {PIPELINE_EVAL} cannot be read")
    elif runs:
        if (why := text_difference(committed, report_markdown(record, runs))) is not None:
            problems.append(f"{PIPELINE_REPORT}: {why}")
    else:
        # Without the run folders only the part before the runs table can be regenerated (report_markdown without
        # runs writes exactly that part); the table's run ids are checked against the evaluated checkpoint's.
        head = report_markdown(record, ())
        if not committed.startswith(head):
            why = text_difference(committed[: len(head)], head) or "the metrics table ends early"
            problems.append(f"{PIPELINE_REPORT}: {why}")
        else:
            run_id = ((record.get("checkpoint") or {}).get("metadata") or {}).get("run_id")
            rows = [line.split("|")[1].strip() for line in committed[len(head) :].splitlines() if line.count("|") > 8]
            ids = [cell for cell in rows if cell != "run" and not cell.startswith("---")]
            if run_id and run_id not in ids:
                problems.append(f"{PIPELINE_REPORT}: its runs table lists {ids}, not the evaluated run {run_id}")
        checked = (
            "metrics table and verdict regenerated from its metrics file: the same text; its runs table (steps, "
            "wall time) needs the run folders"
        )
    result.add_problems("report", problems, f"{PIPELINE_REPORT} has dvc.lock's md5; {checked}")


# ------------------------------------------------------------------------------------------------ text differences


def text_difference(committed: str, regenerated: str) -> str | None:
    """None when equal; else one phrase: the first differing line of each, around the first differing character,
    and how many lines differ."""
    if committed == regenerated:
        return None
    old, new = committed.splitlines(), regenerated.splitlines()
    index = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    a = old[index] if index < len(old) else None
    b = new[index] if index < len(new) else None
    if a == b:  # the same lines: only the line endings or the final newline differ
        return "differs in line endings only"
    col = next((i for i, (x, y) in enumerate(zip(a or "", b or "")) if x != y), min(len(a or ""), len(b or "")))
    start = max(0, col - 30)

    def cut(text: str | None) -> str:
        if text is None:
            return "<no such line>"
        return repr(("..." if start else "") + text[start : col + 50] + ("..." if col + 50 < len(text) else ""))

    count = sum(x != y for x, y in zip(old, new)) + abs(len(old) - len(new))
    lines = "1 line differs" if count == 1 else f"{count} lines differ"
    return f"line {index + 1} reads {cut(a)}, regenerated {cut(b)} ({lines})"
