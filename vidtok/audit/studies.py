"""Committed study results checked back to their sources: each trials table against its Optuna journal and each
finished trial's own files, and every summary, plot and FINDINGS.md against what the library writes from the trials.

    vidtok audit            # trials:<study>, code:<study>, summary:<study>, plot:<study> and findings rows

- trials:<study>: trials.parquet is the table vidtok.studies.sweeps.trials_frame builds from optuna.journal (every
  column of every trial; no row missing or added), each COMPLETE trial's objective value and params in the journal
  are its row's; each finished trial's metrics files (val and test) hash to the sha256 its row recorded, every metric
  column and clip count is the number in those files (results.METRIC_SOURCES, COUNT_SOURCES), each file agrees with
  itself and its per_video.csv, it evaluated the final checkpoint of the trial's run records, and steps / training
  time / GPU hours are theirs;
- code:<study>: the finished trials ran this checkout's library code (vidtok.runs.code_sha256("study")). A study made
  by other code is not tampered with, it is stale: its numbers are what that code measured, not what this checkout
  would reproduce; it fails, labelled "stale: rerun the study" with the command that does;
- summary:<study>: summary.json and summary.md are the bytes results.render_summary writes from trials.parquet;
- plot:<study>, findings: each plot.svg and experiments/FINDINGS.md are the bytes findings.render_findings writes.

Trial checkpoints and clip sets are not committed: a trial's data and weights are checked where the study ran
(`vidtok audit experiments/<study>/runs/trial_<n>/stage2` there).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from vidtok._files import one_line, sha256_file
from vidtok.audit.committed import metrics_problems, per_video_problems, short, text_difference
from vidtok.audit.record import AuditResult
from vidtok.formats import read_metrics_record
from vidtok.runs import SCHEDULES, RunRecord, RunRecordError, code_sha256, read_run_record
from vidtok.studies.findings import FINDINGS_NAME, PLOT_NAME, render_findings
from vidtok.studies.results import (
    COLUMNS,
    COUNT_SOURCES,
    METRIC_SOURCES,
    STUDY_JSON,
    TRIALS_NAME,
    StudyFileError,
    read_study_meta,
    read_trials,
    render_summary,
    validate_trials,
)
from vidtok.studies.specs import STUDIES, StudySpec, get_study
from vidtok.studies.sweeps import JOURNAL_NAME, trials_frame

# A "Stale study" line of FINDINGS.md names the code of the checkout that wrote it (see findings_code).
WRITER_CODE = re.compile(r"differs from this checkout's \(([0-9a-f]{12})\)")


def study_folders(experiments: Path) -> list[Path]:
    return sorted(p.parent for p in experiments.glob(f"*/{TRIALS_NAME}"))


def check_studies(result: AuditResult, experiments: Path) -> None:
    """Every committed study (trials, code, summary, plot) and FINDINGS.md."""
    folders = study_folders(experiments)
    findings = experiments / FINDINGS_NAME
    rendered: dict[str, str] | None = None
    failure = None
    if findings.is_file() or any((experiments / name / TRIALS_NAME).is_file() for name in STUDIES):
        try:
            committed = findings.read_text() if findings.is_file() else ""
            rendered = render_findings(experiments, findings_code(committed, experiments))
        except (StudyFileError, ValueError, OSError) as err:
            failure = f"experiments/{FINDINGS_NAME} and the plots cannot be regenerated ({one_line(err)})"
    for folder in folders:
        check_trials(result, folder)
        check_summary(result, folder)
        if rendered is not None and f"{folder.name}/{PLOT_NAME}" in rendered:
            check_file(result, f"plot:{folder.name}", folder / PLOT_NAME, rendered[f"{folder.name}/{PLOT_NAME}"])
    if failure is not None:
        result.add("findings", False, failure)
    elif rendered is not None:
        check_file(result, "findings", findings, rendered[FINDINGS_NAME])


def findings_code(committed: str, experiments: Path) -> str | None:
    """The library code a committed FINDINGS.md was written against, as far as the file shows it.

    Its "Stale study" lines compare the trials with the code of the checkout that ran `vidtok findings` (12 hex
    digits): regenerating with this checkout's code would differ whenever the code changed since, though no number
    did. Without such a line every finished trial ran the writer's code, so the trials' one code is it (None: this
    checkout's, when the trials ran several). The code:<study> checks compare the trials with this checkout."""
    if match := WRITER_CODE.search(committed):
        return match.group(1)
    codes: set[str] = set()
    for spec in STUDIES.values():
        try:
            df = read_trials(experiments / spec.name)
        except StudyFileError:
            continue
        codes |= set(df.loc[df["state"] == "COMPLETE", "code_sha256"].dropna())
    return codes.pop() if len(codes) == 1 else None


# ------------------------------------------------------------------------------------------------ trials


def load_study(study_dir: Path) -> tuple[pd.DataFrame, dict[str, Any], StudySpec]:
    """trials.parquet, study.json and the study's spec; StudyFileError / ValueError with one line otherwise."""
    df = read_trials(study_dir)
    meta = read_study_meta(study_dir)
    return df, meta, get_study(str(meta.get("spec") or meta.get("study")))


def check_trials(result: AuditResult, study_dir: Path) -> None:
    """trials:<study> (the table against the journal and the trials' own files) and code:<study> (staleness)."""
    label = f"trials:{study_dir.name}"
    try:
        df, meta, spec = load_study(study_dir)
    except (StudyFileError, ValueError) as err:
        result.add(label, False, one_line(err))
        return
    problems = journal_problems(df, study_dir, meta, spec)
    done = df[df["state"] == "COMPLETE"]
    for row in done.itertuples():
        problems += trial_problems(row, study_dir)
    result.add_problems(
        label,
        problems,
        f"{len(done)} finished trials (of {len(df)}): trials.parquet is optuna.journal's table (states, params, "
        "values); each finished trial's metrics files and run records give its numbers",
    )
    check_code(result, study_dir, done, meta, spec)


def check_code(result: AuditResult, study_dir: Path, done: pd.DataFrame, meta: dict[str, Any], spec: StudySpec) -> None:
    label = f"code:{study_dir.name}"
    current = code_sha256("study")
    if not len(done):
        result.add(label, None, "no finished trials: no numbers made by any code")
        return
    recorded = [sha if isinstance(sha, str) else "(none recorded)" for sha in done["code_sha256"]]
    stale = [sha for sha in recorded if sha != current]
    if not stale:
        result.add(label, True, f"{len(done)} finished trials ran this checkout's library code ({current[:12]})")
        return
    command = meta.get("command") or spec.deployment_command()
    result.add(
        label,
        False,
        f"stale: rerun the study (`{command}`): {len(stale)} of {len(done)} finished trials ran library code "
        f"{', '.join(sorted({sha[:12] for sha in stale}))}, not this checkout's {current[:12]} (their numbers are "
        "what that code measured; not tampered)",
    )


def journal_path(study_dir: Path, meta: dict[str, Any]) -> Path | None:
    """The study's journal file (study.json's storage), None when the study is stored in a database."""
    storage = str(meta.get("storage") or f"journal:{JOURNAL_NAME}")
    if storage.startswith("journal:"):
        return study_dir / storage.split(":", 1)[1]
    if storage.endswith(".journal") and "://" not in storage:
        return study_dir / Path(storage).name
    return None


def journal_trials(journal: Path, spec: StudySpec, meta: dict[str, Any]) -> tuple[pd.DataFrame, list[FrozenTrial]]:
    """The trials table trials_frame builds from `journal` (validated as write_trials validates it) and its trials."""
    name = str(meta.get("study") or journal.parent.name)
    with tempfile.TemporaryDirectory() as tmp:
        # Read a copy: the audit writes nothing into a study folder (a journal backend may add its lock file there).
        copy = Path(tmp) / journal.name
        shutil.copyfile(journal, copy)
        storage = JournalStorage(JournalFileBackend(str(copy)))
        study = optuna.load_study(study_name=str(meta.get("optuna_study") or name), storage=storage)
        trials = study.get_trials(deepcopy=False)
        frame = trials_frame(study, spec, name, journal.parent)
    return validate_trials(frame, str(journal)), trials


def journal_problems(df: pd.DataFrame, study_dir: Path, meta: dict[str, Any], spec: StudySpec) -> list[str]:
    journal = journal_path(study_dir, meta)
    if journal is None:
        return [f"{STUDY_JSON}: stored in {meta.get('storage')}, not a committed journal: nothing to check it with"]
    if not journal.is_file():
        return [f"{journal.name}: missing: trials.parquet cannot be checked against the study's storage"]
    try:
        expected, trials = journal_trials(journal, spec, meta)
    except Exception as err:  # noqa: BLE001 - a damaged journal raises JSON, key and Optuna errors alike
        return [f"{journal.name}: unreadable as an Optuna journal ({one_line(err, with_type=True)})"]
    name = journal.name
    mine, theirs = df.set_index("trial", drop=False), expected.set_index("trial", drop=False)
    problems = [
        f"{_where(theirs.loc[n])} ({theirs.loc[n, 'state']}) is in {name} but not in trials.parquet (row deleted?)"
        for n in sorted(set(theirs.index) - set(mine.index))
    ]
    problems += [
        f"{_where(mine.loc[n])} is in trials.parquet but not in {name} (row added?)"
        for n in sorted(set(mine.index) - set(theirs.index))
    ]
    for n in sorted(set(mine.index) & set(theirs.index)):
        for column in COLUMNS:
            a, b = mine.at[n, column], theirs.at[n, column]
            if not same(a, b):
                problems.append(f"{_where(mine.loc[n])}: trials.parquet {column} {short(a)}, {name} {short(b)}")
    metric = str(meta.get("metric") or spec.metric)
    by_number = {t.number: t for t in trials}
    for n in sorted(set(mine.index) & set(by_number)):
        t, row = by_number[n], mine.loc[n]
        if t.state == TrialState.COMPLETE and not same(t.value, row[metric]):
            problems.append(
                f"{_where(row)}: {name} records the objective value {short(t.value)}, trials.parquet {metric} "
                f"{short(row[metric])}"
            )
        level, seed = t.params.get("level"), t.params.get("seed")
        if t.params and (level != row["level"] or seed != row["seed"]):
            problems.append(
                f"{_where(row)}: {name} params level {short(level)} seed {seed}, trials.parquet {short(row['level'])}"
                f" seed {row['seed']}"
            )
    return problems


def trial_problems(row: Any, study_dir: Path) -> list[str]:
    """One finished trial's row against its metrics files and run records."""
    where = describe_trial(row.trial, row.level, row.seed)
    problems: list[str] = []
    files: dict[str, tuple[str, dict[str, Any]]] = {}
    for path_column, sha_column in (("metrics_path", "metrics_sha256"), ("test_metrics_path", "test_metrics_sha256")):
        relative, recorded = getattr(row, path_column), getattr(row, sha_column)
        if not isinstance(relative, str):
            if path_column == "metrics_path":
                problems.append(f"{where}: no metrics file recorded")
            continue
        path = study_dir / relative
        if not path.is_file():
            problems.append(f"{where}: {relative} missing")
            continue
        now = sha256_file(path)
        if not isinstance(recorded, str):
            problems.append(f"{where}: {relative}: no sha256 recorded")
        elif now != recorded:
            problems.append(f"{where}: {relative} sha256 {recorded[:12]} -> {now[:12]} (edited?)")
        try:
            record = read_metrics_record(path)
        except ValueError as err:
            problems.append(f"{where}: {one_line(err)}")
            continue
        files[path_column] = (relative, record)
        problems += metrics_problems(record, f"{where}: {relative}")
        table = path.with_name("per_video.csv")
        problems += per_video_problems(record, table, f"{where}: {Path(relative).with_name(table.name).as_posix()}")
    for column, (path_column, key) in METRIC_SOURCES.items():
        recorded = getattr(row, column)
        if path_column not in files:
            if path_column == "test_metrics_path" and not isinstance(row.test_metrics_path, str) and pd.notna(recorded):
                problems.append(f"{where}: {column} {short(recorded)} without a test metrics file")
            continue
        relative, record = files[path_column]
        value = (record.get("summary") or {}).get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        expected = float(value) if number else None
        if not same(recorded, expected):
            problems.append(f"{where}: trials.parquet {column} {short(recorded)}, {relative} summary.{key} "
                            f"{short(expected)}")  # fmt: skip
    for column, (path_column, key) in COUNT_SOURCES.items():
        if path_column in files:
            relative, record = files[path_column]
            expected = (record.get("data") or {}).get(key)
            recorded = getattr(row, column)
            if not same(None if pd.isna(recorded) else float(recorded), None if expected is None else float(expected)):
                problems.append(f"{where}: trials.parquet {column} {short(recorded)}, {relative} data.{key} "
                                f"{short(expected)}")  # fmt: skip
    return problems + run_record_problems(row, study_dir, files, where)


def run_record_problems(
    row: Any, study_dir: Path, files: dict[str, tuple[str, dict[str, Any]]], where: str
) -> list[str]:
    """The trial's run records (committed): every stage completed, the evaluations scored the last stage's final
    checkpoint, and the row's steps, training time and GPU hours are theirs (summed over stages, in schedule order,
    as vidtok.studies.trial.run_trial sums them)."""
    if not isinstance(row.run_dir, str):
        return [f"{where}: no run folder recorded"]
    try:
        schedule = json.loads(row.params_json).get("schedule") or "twostage"
        stages = SCHEDULES[schedule]
    except (ValueError, AttributeError, KeyError):
        return [f"{where}: params_json names no known schedule"]
    records: list[RunRecord] = []
    for stage in stages:
        try:
            records.append(read_run_record(study_dir / row.run_dir / stage))
        except RunRecordError as err:
            return [f"{where}: {one_line(err).replace(str(study_dir) + '/', '')}"]
    problems = [
        f"{where}: {row.run_dir}/{r.stage}/run.json status {r.status}" for r in records if r.status != "completed"
    ]
    final = records[-1].final_checkpoint_sha256
    for relative, record in files.values():
        weights = (record.get("checkpoint") or {}).get("weights_sha256")
        if weights != final:
            problems.append(
                f"{where}: {relative} evaluated weights {str(weights)[:12]}, {row.run_dir}/{stages[-1]}/run.json's "
                f"final checkpoint is {str(final)[:12]}"
            )
    steps = sum(r.steps_completed for r in records)
    wall = sum(r.wall_time_s or 0.0 for r in records)
    gpu = [r for r in records if (r.device or {}).get("accelerator") == "gpu"]
    hours = (
        sum((r.wall_time_s or 0.0) * int((r.device or {}).get("world_size") or 1) / 3600 for r in gpu) if gpu else None
    )
    for column, expected in (("steps", steps), ("train_wall_s", wall), ("gpu_hours", hours)):
        if not same(getattr(row, column), expected, rel_tol=1e-12):
            problems.append(
                f"{where}: trials.parquet {column} {short(getattr(row, column))}, its run records give "
                f"{short(expected)}"
            )
    return problems


def _where(row: pd.Series) -> str:
    return describe_trial(row["trial"], row["level"], row["seed"])


def describe_trial(trial: Any, level: Any, seed: Any) -> str:
    return f"trial {trial} ({level}, seed {seed})"


def same(a: Any, b: Any, rel_tol: float = 0.0) -> bool:
    """Equal as recorded values: both missing (None / NaN / NA), equal numbers (exactly, or within `rel_tol`), or
    equal otherwise."""
    missing_a, missing_b = _missing(a), _missing(b)
    if missing_a or missing_b:
        return missing_a and missing_b
    numbers = (int, float)
    if isinstance(a, numbers) or isinstance(b, numbers) or hasattr(a, "dtype") or hasattr(b, "dtype"):
        try:
            x, y = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return x == y or (rel_tol > 0 and math.isclose(x, y, rel_tol=rel_tol))
    return bool(a == b)


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array is a value, not a missing one
        return False


# ------------------------------------------------------------------------------------------------ summaries, plots


def check_summary(result: AuditResult, study_dir: Path) -> None:
    """summary.json / summary.md against what write_summary writes from the trials (the study's metric, baseline)."""
    label = f"summary:{study_dir.name}"
    try:
        df, meta, spec = load_study(study_dir)
    except (StudyFileError, ValueError) as err:
        result.add(label, False, one_line(err))
        return
    name = str(meta.get("study") or study_dir.name)
    _, texts = render_summary(df, name, spec.factor, spec.metric, spec.baseline)
    problems = []
    for file, text in texts.items():
        path = study_dir / file
        if not path.is_file():
            problems.append(f"{file}: missing (`vidtok findings` writes it from the trials)")
        elif file.endswith(".json"):
            problems += _json_problems(path, text)
        elif (why := text_difference(path.read_text(), text)) is not None:
            problems.append(f"{file}: {why} from trials.parquet")
    result.add_problems(label, problems, f"{' and '.join(texts)} are what the trials give (regenerated: same bytes)")


def _json_problems(path: Path, regenerated: str) -> list[str]:
    committed = path.read_text()
    if committed == regenerated:
        return []
    try:
        old = json.loads(committed)
    except json.JSONDecodeError as err:
        return [f"{path.name}: not valid JSON ({err})"]
    difference = json_difference(old, json.loads(regenerated))
    if difference is None:
        return [f"{path.name}: the same numbers, but not the bytes write_summary writes (edited formatting)"]
    key, a, b = difference
    return [f"{path.name}: {key} {short(a)}, regenerated from trials.parquet {short(b)}"]


def json_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first key path where two JSON values differ ('levels[2].psnr.mean'), with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name in [*a, *(k for k in b if k not in a)]:
            path = f"{key}.{name}" if key else str(name)
            if name not in a or name not in b:
                return path, a.get(name, "<missing>"), b.get(name, "<missing>")
            if (found := json_difference(a[name], b[name], path)) is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            if (found := json_difference(x, y, f"{key}[{i}]")) is not None:
                return found
        return None if len(a) == len(b) else (f"{key} length", len(a), len(b))
    return None if a == b and type(a) is type(b) else (key, a, b)


def check_file(result: AuditResult, label: str, path: Path, regenerated: str) -> None:
    """A committed file `vidtok findings` writes against its text regenerated from the trials."""
    relative = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        result.add(label, False, f"{relative}: missing (`vidtok findings` writes it from the trials)")
    elif (why := text_difference(path.read_text(), regenerated)) is not None:
        result.add(label, False, f"{relative}: {why} from the trials")
    else:
        result.add(label, True, f"{relative} is what the trials give (regenerated: same bytes)")
