"""Optuna studies of the paper's open questions: each trial is one pipeline run (vidtok.studies.trial.run_trial).

    vidtok study sweep-fps --n-trials 2 --profile smoke     # two trials of the frame-rate study
    vidtok study sweep-codebook --n-trials 4 --storage postgresql://user@db/optuna
    vidtok study --list                                      # the studies and their levels

Four studies (STUDIES, defined in vidtok/studies/specs.py), one factor each, every level repeated with several
seeds so a difference comes with its spread: `sweep-fps` (training frame rate 1 ... 30 fps), `sweep-codebook`
(FSQ / LFQ / VQ with 2^8 ... 2^18 codes), `sweep-staging` (one stage at high resolution vs two stages split at
several points, decoder-only or whole-model stage 2, with the compute each took) and `ablations` (the paper's
Table 2 / Table 3 variants).

How a study runs (`run_study(study, StudyOptions(...))`, one StudyWorker), and why:
- The grid is small and categorical, so it is enumerated, not sampled: every (level, seed) point not yet done
  is enqueued as a WAITING trial, in seed-major order (all levels at seed 0 first, so a short sweep still covers
  the factor). Workers pop WAITING trials atomically (Optuna's storage does that), so parallel workers never run
  the same point; enqueueing happens under a file lock in the study folder, and a duplicate that slipped through
  anyway (workers on other machines) is noticed when popped and skipped.
- The default storage is JournalStorage on `experiments/<study>/optuna.journal` (safe for parallel writers on
  one file system; Optuna advises against SQLite for parallel runs). `sqlite:///`, `postgresql://` and
  `mysql://` URLs use RDBStorage, so many machines can share a study. The study is loaded if it exists: a rerun
  with a larger `n_trials` continues the queue and never reruns a completed point.
- A trial that raises is told FAIL with its error as one line and the study goes on. Other failed points are
  retried only with `retry_failed=True` (a config error would just fail again). A trial stopped from outside
  (Ctrl-C, SIGTERM at the end of a session, a cancelled flow run: error "interrupted") is retried on the next run,
  in its own run folder, so training resumes from its last checkpoint.
- Dead workers are noticed, live ones are never taken over. While a trial runs, a heartbeat thread counts the
  trial's `heartbeat_seq` user attr up every `heartbeat_s` (30 s); it is a counter, not a time, because the rule
  compares no two clocks: a worker calls another's RUNNING trial stale only when (a) it ran on this host and its
  pid is gone, or (b) this worker has itself seen the counter stand still for `stale_after_s` (600 s) on its own
  monotonic clock. The writer's wall clock and the database server's are never read, so hosts whose clocks
  disagree do not matter. Workers read the others' heartbeats when they start and before each trial they pop;
  one whose queue is empty waits until each running trial of its points has beaten once (alive) or turned stale.
  A stale trial is told FAIL and its point enqueued again; the retry takes over the dead trial's run folder and
  resumes from its checkpoints.
- A trial whose heartbeat cannot be written stops itself first: training checks the heartbeat after every step
  (an `on_step` hook, a Lightning callback; no signal, which Lightning would turn into sys.exit), and raises
  HeartbeatLost after 3 failed writes in a row, after stale_after_s / 2 without a successful one, or as soon as the
  storage says another worker ended the trial. It is recorded with that reason ("heartbeat lost: ..." in the trial's
  error when the storage still takes it, and in the stage's run.json), its point is retried like an interrupted
  one, and the worker stops (HeartbeatLost out of run_study). It gives up after stale_after_s / 2, the others wait
  at least stale_after_s: the run folder has one writer at a time while a training step takes less than the half.
- After every trial the whole trials table is rebuilt from the storage (so parallel workers agree) and written
  atomically with the summary (vidtok.studies.results layout: study.json, trials.parquet, summary.json, summary.md,
  runs/trial_<n>/).
- A study's data (manifest, clip indexes and frame caches at the rates its levels train at) lives in
  STUDY_DATA_DIR, apart from the DVC pipeline's outputs/data, so running a study never makes the pipeline stale.
- `StepPruningHook` is the step-keyed pruner hook: training calls it with (step, validation value) and it
  reports to Optuna and raises optuna.TrialPruned when the pruner says so. Validation runs at step intervals,
  not epochs, so the epoch-keyed Lightning callback of optuna-integration does not fit.

"""

from __future__ import annotations

import contextlib
import csv
import inspect
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from vidtok._files import one_line, sha256_file, write_json
from vidtok.data.clips import ensure_clip_caches, ensure_clip_index, read_clip_summary
from vidtok.data.config import DataConfig, load_data_config
from vidtok.data.manifest import ensure_manifest
from vidtok.data.sources import fetch_corpus
from vidtok.formats import read_metrics_record
from vidtok.params import check_int, resolve_sections
from vidtok.pipeline import ParamSource
from vidtok.runs import OUTPUTS, Outputs, code_sha256
from vidtok.studies.results import (
    COLUMNS,
    COUNT_SOURCES,
    METRICS,
    STUDY_JSON,
    summary_markdown,
    write_summary,
    write_trials,
)
from vidtok.studies.specs import DEFAULT_SEEDS, FSQ_LEVELS, STUDIES, Level, StudySpec, get_study
from vidtok.studies.trial import TrialPlan, run_trial

__all__ = [
    "DEFAULT_SEEDS",
    "FSQ_LEVELS",
    "STUDIES",
    "Level",
    "StepPruningHook",
    "StudyOptions",
    "StudyResult",
    "StudyWorker",
    "StudySpec",
    "STUDY_DATA_DIR",
    "get_study",
    "needed_fps",
    "open_storage",
    "prepare_data",
    "run_study",
    "trials_frame",
]

JOURNAL_NAME = "optuna.journal"
# The studies' own manifest, clip indexes and frame caches (relative to the root). Not the DVC pipeline's
# outputs/data: a study builds clip sets at rates the pipeline does not (1, 2, 4, 30 fps), and writing them into a
# pipeline output makes `dvc status` (and so `vidtok audit`) report the pipeline as changed when nothing it made did.
STUDY_DATA_DIR = str(OUTPUTS.study_data)
LOCK_NAME = ".sweep.lock"
SCHEMA_RACE_RETRIES = 5
INTERRUPTED = "interrupted"  # the error of a trial stopped from outside (not its own failure): retried on rerun
HEARTBEAT_LOST = "heartbeat lost"  # the error's start when a trial stopped because it could not beat: retried too
HEARTBEAT_KEY = "heartbeat_seq"  # the user attr a running trial's heartbeat counts up
HEARTBEAT_FAILURES = 3  # failed heartbeat writes in a row after which the trial stops
SEED_HIGH = 2**31 - 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

# ================================================================================================= storage


def _is_url(storage: str) -> bool:
    return bool(re.match(r"^(sqlite|postgresql|postgres|mysql)(\+[a-z0-9_]+)?://", storage))


def open_storage(storage: str | None, study_dir: str | os.PathLike[str]) -> tuple[optuna.storages.BaseStorage, str]:
    """The Optuna storage and its printable URL (password hidden).

    None: JournalStorage on `study_dir`/optuna.journal. A `sqlite:///`, `postgresql://` or `mysql://` URL:
    RDBStorage (SQLite with a 60 s lock timeout against "database is locked"). A path ending in .journal: a
    journal file there. Anything else is a ValueError naming the accepted forms."""

    if storage is None or storage == "":
        path = Path(study_dir) / JOURNAL_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path))), str(path)
    if not isinstance(storage, str):
        raise ValueError(f"storage must be a URL string or None, got {type(storage).__name__}")
    if storage.endswith(".journal") and "://" not in storage:
        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path))), str(path)
    if not _is_url(storage):
        raise ValueError(
            f"storage {storage!r}: expected sqlite:///FILE, postgresql://USER@HOST/DB, mysql://..., a .journal "
            "path, or nothing (experiments/<study>/optuna.journal)"
        )

    try:
        shown = sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError as err:
        raise ValueError(f"storage {storage!r}: not a valid database URL ({err})") from None
    kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(SCHEMA_RACE_RETRIES):
        try:
            return RDBStorage(storage, **kwargs), shown
        except Exception as err:
            if not _lost_schema_race(err):  # driver missing, host unreachable: one line naming the storage
                line = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ValueError(f"storage {shown}: cannot open it ({type(err).__name__}: {line})") from None
            time.sleep(0.2 * (attempt + 1))
    raise ValueError(f"storage {shown}: cannot create Optuna's tables ({SCHEMA_RACE_RETRIES} tries; another process?)")


def _lost_schema_race(err: BaseException) -> bool:
    """Whether opening an RDB storage failed only because another worker, starting together on an empty database,
    created Optuna's tables between this one's check and its CREATE: a duplicate-key or already-exists error
    (PostgreSQL: IntegrityError / ProgrammingError; SQLite: OperationalError "table ... already exists"). Opening
    again finds the tables made. Other OperationalErrors (a file that cannot be opened) are real failures."""
    if isinstance(err, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError):
        return True
    return isinstance(err, sqlalchemy.exc.OperationalError) and "already exists" in str(err)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the study folder: parallel workers on this machine enqueue and pop one at a time."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the duplicate check after popping still holds
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ================================================================================================= pruning


class StepPruningHook:
    """Step-keyed pruning for one trial: call it with (step, value) after each validation.

    It reports the value at the global step (stage 2's steps continue after stage 1's: pass `stage` and the
    offset moves on when the stage changes) and raises optuna.TrialPruned when the study's pruner says so; the
    sweep then tells the trial PRUNED. Non-finite values are not reported (a pruner compares numbers)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self._stage: str | None = None
        self._offset = 0
        self._last = -1

    def __call__(self, step: int, value: float, stage: str | None = None) -> None:
        if stage is not None and stage != self._stage:
            if self._stage is not None:
                self._offset = self._last + 1
            self._stage = stage
        global_step = self._offset + int(step)
        if value is None or not math.isfinite(float(value)) or global_step <= self._last:
            return
        self._last = global_step
        self.trial.report(float(value), global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {global_step} ({float(value):.4g})")

    def report_curves(self, runs: Mapping[str, Path], column: str = "val_psnr") -> None:
        """Report the validation curves of finished stages (their val.csv) as intermediate values, without
        pruning: the record Optuna's pruners compare later trials against, and what optuna-dashboard plots."""

        for stage, run_dir in runs.items():
            path = Path(run_dir) / "val.csv"
            if not path.is_file():
                continue
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            if stage != self._stage and self._stage is not None:
                self._offset = self._last + 1
            self._stage = stage
            for row in rows:
                try:
                    step, value = int(float(row["step"])), float(row[column])
                except (KeyError, TypeError, ValueError):
                    continue
                if math.isfinite(value) and self._offset + step > self._last:
                    self._last = self._offset + step
                    self.trial.report(value, self._last)


def make_pruner(pruner: str | optuna.pruners.BasePruner | None) -> optuna.pruners.BasePruner:
    """None / "none": never prune (a grid of seeds wants every point finished); "median": MedianPruner after
    two complete trials and the first validation."""
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner in (None, "", "none"):
        return optuna.pruners.NopPruner()
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    raise ValueError(f"pruner must be 'none' or 'median', got {pruner!r}")


# ================================================================================================= data


def _rooted(root: Path, path: str) -> str:
    return path if "://" in path or os.path.isabs(path) else str(root / path)


def data_overrides(root: Path, params_path: Path, profile: str | None, *, workspace: str | None = None) -> list[str]:
    """`data.*` overrides that make the params file's relative data paths point into `root`, so trials do not
    depend on the working directory of the process (a Prefect worker, a test).

    `workspace` (a folder, relative to `root` or absolute) holds the derived data instead of the params file's
    paths: the manifest, the clip indexes and the frame caches. The videos stay where `data.data_dir` says."""

    data = resolve_sections(params_path if params_path.is_file() else None, profile)["data"]
    derived = {"manifest": "manifest.parquet", "clips_dir": "clips", "cache_dir": "cache"}
    paths = {"data_dir": str(data.get("data_dir", DataConfig.data_dir))}
    for key, name in derived.items():
        paths[key] = f"{workspace}/{name}" if workspace else str(data.get(key, getattr(DataConfig, key)))
    return [f"data.{k}={json.dumps(_rooted(root, v))}" for k, v in paths.items()]


def _train_fps(params_path: Path, profile: str | None, overrides: Sequence[str]) -> float:

    train = resolve_sections(params_path if params_path.is_file() else None, profile, overrides)["train"]
    return float(train.get("fps", 3.0))


def needed_fps(
    study: str | StudySpec,
    root: str | os.PathLike[str] = ".",
    *,
    params_path: str = "params.yaml",
    profile: str | None = None,
    levels: Sequence[str] | None = None,
) -> list[float]:
    """The training frame rates the study's (chosen) levels need clips at (data.val_fps comes on top)."""
    spec = get_study(study) if isinstance(study, str) else study
    chosen = list(spec.levels) if not levels else [spec.level(label) for label in levels]
    params = Path(root).resolve() / params_path
    return sorted({lv.fps or _train_fps(params, profile, lv.overrides) for lv in chosen})


def prepare_data(
    root: str | os.PathLike[str] = ".",
    *,
    params_path: str | os.PathLike[str] = "params.yaml",
    profile: str | None = None,
    fps: Sequence[float] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make the data a trial needs, reusing what is current: the corpus when the data folder is empty
    (`vidtok data fetch`), the manifest when missing or older than a video (`vidtok data manifest`), the clip
    index and frame caches at each rate in `fps` plus data.val_fps (`vidtok data resample`). The derived data
    goes to `root`/STUDY_DATA_DIR, never into the DVC pipeline's outputs. Returns what it used, for logs and
    artifacts."""

    root = Path(root).resolve()
    params = root / params_path
    overrides = data_overrides(root, params, profile, workspace=STUDY_DATA_DIR)
    config = load_data_config(params if params.is_file() else None, profile, overrides)
    local = "://" not in config.data_dir
    if local and (not Path(config.data_dir).is_dir() or not any(Path(config.data_dir).iterdir())):
        log("\n".join(fetch_corpus(config.data_dir, progress=False).lines()))
    ensure_manifest(config, progress=False, log=log)  # rebuilt when its data, code or split settings changed
    rates = sorted({float(f) for f in fps} | {float(config.val_fps)})
    clips: dict[str, int] = {}
    for rate in rates:
        ensure_clip_index(config, rate, progress=False)
        ensure_clip_caches(config, rate, config.cache_resolutions, progress=False)
        clips[f"{rate:g}"] = int(read_clip_summary(config, rate)["clips"])
    log(f"data ready: clips per fps {clips} (caches at {list(config.cache_resolutions)} px)")
    return {"data_dir": config.data_dir, "manifest": config.manifest, "clips": clips}


# ================================================================================================= trials table


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _attr_float(attrs: Mapping[str, Any], key: str) -> float | None:
    value = attrs.get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _evaluation_counts(attrs: Mapping[str, Any], study_dir: Path | None) -> dict[str, int | None]:
    """The clip and video counts of a trial's evaluations (COUNT_SOURCES): its attributes, or, for a trial recorded
    before they were attributes, its metrics files (`data.num_clips` / `num_videos`, written by every evaluation)."""
    out: dict[str, int | None] = {}
    for column, (path_attr, key) in COUNT_SOURCES.items():
        value = attrs.get(column)
        if value is None and study_dir is not None and isinstance(attrs.get(path_attr), str):
            with contextlib.suppress(OSError, ValueError):
                value = (read_metrics_record(study_dir / attrs[path_attr]).get("data") or {}).get(key)
        out[column] = None if value is None else int(value)
    return out


def trials_frame(study: optuna.Study, spec: StudySpec, study_name: str, study_dir: Path | None = None) -> pd.DataFrame:
    """The trials table (vidtok.studies.results.TrialsSchema) from the Optuna storage: one row per trial of the grid.
    Popped duplicates (`skipped`) are left out; they ran nothing. With `study_dir`, clip counts older trials did not
    record come from their metrics files."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    # A stale trial's folder moved to the trial that resumed it.
    moved = {
        t.user_attrs["resumed_from_trial"]: t.user_attrs.get("run_dir")
        for t in trials
        if "resumed_from_trial" in t.user_attrs
    }
    # A stale trial cannot be updated once failed: its retry carries why it was failed.
    stale = {t.user_attrs["retry_of"]: t.user_attrs.get("retry_reason") for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        a = t.user_attrs
        if a.get("skipped") or "level" not in a:
            continue
        state = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED", TrialState.RUNNING: "RUNNING"}
        state |= {TrialState.WAITING: "WAITING"}
        row: dict[str, Any] = {
            "study": study_name,
            "trial": t.number,
            "state": state.get(t.state, "FAIL"),
            "factor": spec.factor,
            "level": a["level"],
            "level_value": a.get("level_value"),
            "seed": int(a["seed"]),
            "regularizer": a.get("regularizer"),
            "steps": a.get("steps"),
            "run_dir": moved.get(t.number, a.get("run_dir")),
            "metrics_path": a.get("metrics_path"),
            "metrics_sha256": a.get("metrics_sha256"),
            "test_metrics_path": a.get("test_metrics_path"),
            "test_metrics_sha256": a.get("test_metrics_sha256"),
            "code_sha256": a.get("code_sha256"),
            "params_json": json.dumps(a.get("params", {}), sort_keys=True),
            "error": _error(t, stale),
            "started_at": a.get("started_at") or _iso(t.datetime_start),
            "ended_at": _iso(t.datetime_complete),
        }
        for name in METRICS:
            row[name] = _attr_float(a, name)
        row["train_tflops"] = _attr_float(a, "train_tflops")
        row["train_wall_s"] = _attr_float(a, "train_wall_s")
        row["gpu_hours"] = _attr_float(a, "gpu_hours")
        row |= _evaluation_counts(a, study_dir)
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.astype({name: "Int64" for name in ("steps", *COUNT_SOURCES)})
    return df.sort_values("trial").reset_index(drop=True)


def _error(t: FrozenTrial, stale: Mapping[int, str | None]) -> str | None:
    if t.state != TrialState.FAIL:
        return None
    if t.number in stale:
        reason = str(stale[t.number])
        if reason.startswith((INTERRUPTED, HEARTBEAT_LOST)):
            return f"{reason}; its point is retried"
        return f"stale: {reason} (killed?); its point is retried"
    return t.user_attrs.get("error")


def write_study_files(study: optuna.Study, spec: StudySpec, study_name: str, study_dir: Path) -> dict[str, Any]:
    """Rewrite trials.parquet (validated, atomic) and summary.json / summary.md under the study lock (workers
    finishing at once never interleave a table with another's summary); returns the summary."""
    with _locked(study_dir):
        df = trials_frame(study, spec, study_name, study_dir)
        write_trials(df, study_dir)
        return write_summary(study_dir, df, study_name, spec.factor, spec.metric, spec.baseline)


# ================================================================================================= running


@dataclass
class StudyResult:
    """What a `run_study` call did: the trials it ran, the table and the summary as written."""

    study_name: str
    folder: Path
    storage: str
    ran: list[int]
    summary: dict[str, Any]
    trials: pd.DataFrame
    markdown: str
    data: dict[str, Any] = field(default_factory=dict)


def _point(t: FrozenTrial) -> tuple[str, int] | None:
    a = t.user_attrs
    return (str(a["level"]), int(a["seed"])) if "level" in a and "seed" in a else None


class StaleWatch:
    """Which RUNNING trials of other workers are dead, judged by this worker alone, without comparing two clocks.

    A running trial's heartbeat thread counts `heartbeat_seq` up (0, 1, 2 ...) every heartbeat_s. The watch keeps,
    per trial, the last value it read and when it first read that value on this process's monotonic clock. A trial
    is stale when its process is gone (it ran on this host and its pid no longer exists), or when this watch has
    seen its counter stand still for `stale_after_s`. Neither the writer's wall clock nor the database server's is
    read, so machines whose clocks disagree cannot take over each other's live trials. The price: a watch that has
    just started must itself wait stale_after_s before it calls a trial on another host stale."""

    def __init__(self, stale_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._seen: dict[int, tuple[Any, float]] = {}  # trial number -> (heartbeat as last read, first read at)

    def observe(self, running: Iterable[FrozenTrial]) -> dict[int, str]:
        """Read the heartbeats of the RUNNING trials `running`; returns {trial number: why it is dead}."""
        now, dead = self._clock(), {}
        for t in running:
            beat = _heartbeat_value(t)
            seen = self._seen.get(t.number)
            if seen is None or seen[0] != beat:
                self._seen[t.number] = seen = (beat, now)
            why = _process_gone(t)
            if why is None and now - seen[1] >= self.stale_after_s:
                why = f"its heartbeat stood at {beat} for {now - seen[1]:.0f} s"
            if why is not None:
                dead[t.number] = why
        return dead


def _heartbeat_value(t: FrozenTrial) -> Any:
    # heartbeat_at: the wall-clock beat of trials started by earlier versions; only whether it changes counts.
    return t.user_attrs.get(HEARTBEAT_KEY, t.user_attrs.get("heartbeat_at"))


def _process_gone(t: FrozenTrial) -> str | None:
    a = t.user_attrs
    if a.get("host") == socket.gethostname() and isinstance(a.get("pid"), int):
        try:
            os.kill(a["pid"], 0)
        except ProcessLookupError:
            return f"its process {a['pid']} on {a['host']} is gone"
        except PermissionError:
            pass  # alive, another user's
    return None


def fail_stale_trials(
    study: optuna.Study, watch: StaleWatch, points: Container[tuple[str, int]] | None = None
) -> dict[int, str]:
    """Tell the RUNNING trials that `watch` finds dead FAIL (only those of `points`, (level, seed) pairs, when given:
    the ones the caller enqueues again); returns {trial number: why}. Their points are enqueued again with
    `retry_of` / `retry_reason` user attrs (a finished trial's attrs cannot change), and the retry takes over the
    dead trial's run folder."""
    running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    failed = {}
    for number, why in watch.observe(running.values()).items():
        if points is not None and _point(running[number]) not in points:
            continue  # left to a worker that asks for that point (it enqueues the retry)
        try:
            study.tell(number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # it finished after all ("Cannot tell a COMPLETE trial"), or another worker failed it first
        failed[number] = why
    return failed


def _retried_without_asking(t: FrozenTrial) -> bool:
    """A failed trial that was stopped, not failed by its own error: Ctrl-C / SIGTERM / a cancelled flow run
    ("interrupted") or a heartbeat it could not write ("heartbeat lost: ..."). Its point is retried in its folder."""
    error = t.user_attrs.get("error")
    return t.state == TrialState.FAIL and isinstance(error, str) and error.startswith((INTERRUPTED, HEARTBEAT_LOST))


def _enqueue_open_points(
    study: optuna.Study,
    points: list[tuple[Level, int]],
    base: dict[str, Any],
    retry_failed: bool,
    stale: Mapping[int, str],
) -> int:
    """Enqueue every requested (level, seed) point that no live, finished or (unless retry_failed) failed trial
    holds. Points of `stale` trials (just failed by `fail_stale_trials`) and of interrupted ones or ones whose
    heartbeat was lost are always retried, in the dead trial's folder."""
    held: dict[tuple[str, int], set[str]] = {}
    stale_point: dict[tuple[str, int], tuple[int, str]] = {}
    for t in study.get_trials(deepcopy=False):
        p = _point(t)
        if p is None or t.user_attrs.get("skipped"):
            continue
        kind = t.state.name
        stopped = _retried_without_asking(t)
        if t.state == TrialState.FAIL and (t.number in stale or stopped or retry_failed):
            kind = "RETRY"
            if t.number in stale or stopped:
                stale_point[p] = (t.number, stale.get(t.number) or str(t.user_attrs.get("error")))
        held.setdefault(p, set()).add(kind)
    count = 0
    for level, seed in points:
        if held.get((level.label, seed), set()) - {"RETRY"}:
            continue
        params = {**base, "level": level.label, "seed": seed, **_level_params(level)}
        attrs = {"level": level.label, "seed": seed, "level_value": level.value, "regularizer": level.regularizer}
        dead = stale_point.get((level.label, seed))
        if dead is not None:
            attrs |= {"retry_of": dead[0], "retry_reason": dead[1]}
        study.enqueue_trial({"level": level.label, "seed": seed}, user_attrs={**attrs, "params": params})
        count += 1
    return count


def _level_params(level: Level) -> dict[str, Any]:
    return {k: v for k, v in asdict(level).items() if k not in ("label", "value", "fps")}


class HeartbeatLost(RuntimeError):
    """The running trial's heartbeat is lost (see _Heartbeat): it stops, so that no other worker takes over its run
    folder (it looks stale to them) while it still writes there."""


class _Heartbeat:
    """Keeps the running trial visibly alive: a thread writes `heartbeat_seq` = 1, 2, 3 ... on it every `interval` s
    (a counter, not a time: observers compare it with what they read before, on their own clocks; see StaleWatch).

    The training loop calls `check` after every step (run_trial's on_step hook, a Lightning callback: a signal would
    not do, Lightning turns KeyboardInterrupt into sys.exit(1) and ignores SIGINT from then on). It raises
    HeartbeatLost once the heartbeat is lost: `max_failures` writes in a row failed, no write succeeded for
    `lose_after_s` on this process's monotonic clock (a write hanging on a dead database), or the storage says the
    trial has ended (another worker failed it as stale). run_study sets lose_after_s to half of stale_after_s, so a
    worker that cannot beat stops well before any other may call it stale and take over its folder."""

    def __init__(
        self,
        trial: optuna.Trial,
        interval: float,
        lose_after_s: float,
        log: Callable[[str], None],
        max_failures: int = HEARTBEAT_FAILURES,
    ) -> None:
        self._trial, self._interval, self._lose_after, self._log = trial, interval, lose_after_s, log
        self._max = max_failures
        self.lost: str | None = None
        self._last_ok = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial.number}", daemon=True)

    def _run(self) -> None:
        beat, failures = 0, 0
        while not self._stop.wait(self._interval):
            try:
                self._trial.set_user_attr(HEARTBEAT_KEY, beat + 1)
            except optuna.exceptions.UpdateFinishedTrialError:
                self.lost = f"trial {self._trial.number} was ended by another worker (it saw no heartbeat)"
                return
            except Exception as err:  # noqa: BLE001 - storage down, disk full, database locked ...
                failures += 1
                self._log(f"trial {self._trial.number}: heartbeat {failures}/{self._max} failed: {one_line(err)}")
                if failures >= self._max:
                    self.lost = f"{failures} heartbeat writes in a row failed ({one_line(err, with_type=True)})"
                    return
            else:
                beat, failures, self._last_ok = beat + 1, 0, time.monotonic()

    def check(self, step: int | None = None) -> None:
        """Raise HeartbeatLost if the heartbeat is lost (`step`: the training step, for on_step)."""
        silent = time.monotonic() - self._last_ok
        if self.lost is None and silent > self._lose_after:
            self.lost = f"no heartbeat written for {silent:.0f} s"
        if self.lost is not None:
            raise HeartbeatLost(f"{HEARTBEAT_LOST}: {self.lost}")

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class HeartbeatTimes:
    """How often a running trial beats (`interval_s`) and how long another worker must see its heartbeat stand still
    before it calls the trial stale (`stale_after_s`). The trial itself gives up at half that (`lose_after_s`), so
    stale_after_s is at least 2 x HEARTBEAT_FAILURES beats, and should be well above one training step: a worker
    notices a lost heartbeat only between steps."""

    interval_s: float = 30.0
    stale_after_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"heartbeat_s must be > 0, got {self.interval_s!r}")
        if not self.stale_after_s >= 2 * HEARTBEAT_FAILURES * self.interval_s:
            raise ValueError(
                f"stale_after_s must be at least {2 * HEARTBEAT_FAILURES} x heartbeat_s "
                f"({2 * HEARTBEAT_FAILURES * self.interval_s:g} s), got {self.stale_after_s!r}"
            )

    @property
    def lose_after_s(self) -> float:
        return self.stale_after_s / 2

    @property
    def poll_s(self) -> float:
        """How often a worker with an empty queue reads the others' heartbeats while it waits on them."""
        return min(self.interval_s, 2.0)


def _hooks(run: Callable[..., Any], **hooks: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """The hooks `run` takes, by name or through **kwargs (the Prefect flows' task wrapper passes them on)."""
    parameters = inspect.signature(run).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return {name: hook for name, hook in hooks.items() if takes_any or name in parameters}


def validate_args(n_trials: int, seeds: Sequence[int], study_name: str) -> None:
    check_int("n_trials", n_trials, 1)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= SEED_HIGH for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers in 0..{SEED_HIGH}, got {list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat, got {list(seeds)!r}")
    if not isinstance(study_name, str) or not _NAME.match(study_name):
        raise ValueError(
            f"study_name {study_name!r}: use letters, digits, '.', '_' and '-' (it names experiments/<study_name>/)"
        )


@dataclass(frozen=True)
class StudyOptions:
    """How one worker runs a study (`run_study`); the Prefect sweep flows and `vidtok study` fill it from their
    parameters and flags.

    `root` holds params.yaml (`params_path`), data/ and experiments/; `n_trials` is how many open points this run
    takes; `seeds` (default DEFAULT_SEEDS) and `levels` (level labels; default all) are the grid; `study_name` names
    the Optuna study and its folder (default: the study); `storage` is the Optuna storage (default the journal in
    the study folder); `eval_clips` caps the evaluation; `retry_failed` queues failed points again; `pruner` is
    "none" / "median" / an Optuna pruner; `prepare` makes the data first; `heartbeat_s` and `stale_after_s` are
    the heartbeat times (HeartbeatTimes); `progress` shows training's progress bars."""

    root: str | os.PathLike[str] = "."
    n_trials: int = 2
    profile: str | None = None
    seeds: Sequence[int] | None = None
    study_name: str | None = None
    storage: str | None = None
    params_path: str = "params.yaml"
    levels: Sequence[str] | None = None
    eval_clips: int = 0
    retry_failed: bool = False
    pruner: str | optuna.pruners.BasePruner | None = None
    prepare: bool = True
    stale_after_s: float = 600.0
    heartbeat_s: float = 30.0
    progress: bool = False


def run_study(
    study: str | StudySpec,
    options: StudyOptions = StudyOptions(),
    *,
    run_fn: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> StudyResult:
    """Run up to `options.n_trials` open points of a study into `root`/experiments/<study_name>/ (see the module doc).

    `run_fn` replaces vidtok.studies.trial.run_trial (same signature: `run_fn(folder, plan=TrialPlan, progress=...,
    on_validation=..., on_step=...)`; the Prefect flows wrap it in a task). Bad arguments (unknown study or level,
    n_trials < 1, a bad storage URL or profile) raise ValueError with one line before anything is written."""
    worker = StudyWorker(get_study(study) if isinstance(study, str) else study, options, run_fn or run_trial, log)
    return worker.run()


class StudyWorker:
    """One worker's run of a study: its checks and storage (on creation), the queue of open points (`open`), the
    loop that pops and runs them (`run`) and one trial (`run_trial`)."""

    def __init__(
        self, spec: StudySpec, options: StudyOptions, run: Callable[..., Any], log: Callable[[str], None]
    ) -> None:
        self.spec, self.options, self.run_fn, self.log = spec, options, run, log
        self.seeds = list(DEFAULT_SEEDS if options.seeds is None else options.seeds)
        self.name = options.study_name or spec.name
        validate_args(options.n_trials, self.seeds, self.name)
        self.chosen = list(spec.levels) if not options.levels else [spec.level(label) for label in options.levels]
        make_pruner(options.pruner)  # validate before touching anything
        self.beats = HeartbeatTimes(options.heartbeat_s, options.stale_after_s)
        root = self.root = Path(options.root).resolve()
        if not root.is_dir():
            raise ValueError(f"root {root}: not a folder (the repository root or a data root with params.yaml)")
        self.params = root / options.params_path
        params_file = self.params if self.params.is_file() else None
        resolve_sections(params_file, options.profile)  # an unknown profile fails here, in one line
        self.folder = Outputs(root).study(self.name)
        self.backend, self.shown = open_storage(options.storage, self.folder)
        self.base_overrides = data_overrides(root, self.params, options.profile, workspace=STUDY_DATA_DIR)
        self.data_info: dict[str, Any] = {}
        if options.prepare:
            rates = needed_fps(spec, root, params_path=options.params_path, profile=options.profile,
                               levels=options.levels)  # fmt: skip
            self.data_info = prepare_data(root, params_path=options.params_path, profile=options.profile, fps=rates,
                                          log=log)  # fmt: skip
        # Seed-major: a short sweep covers every level once before it repeats one.
        self.points = [(lv, s) for s in self.seeds for lv in self.chosen]
        self.requested = {(lv.label, s) for lv, s in self.points}
        self.base = {"study": spec.name, "profile": options.profile, "eval_clips": options.eval_clips}
        self.watch = StaleWatch(self.beats.stale_after_s)  # the others' heartbeats, before and between trials

    def open(self) -> optuna.Study:
        """The Optuna study (created or loaded), study.json written, and every open point of the grid queued."""
        spec, options = self.spec, self.options
        study = optuna.create_study(
            storage=self.backend,
            study_name=self.name,
            direction=spec.direction,
            pruner=make_pruner(options.pruner),
            # Every trial comes from the queue with fixed params: the sampler never samples.
            sampler=optuna.samplers.RandomSampler(seed=0),
            load_if_exists=True,
        )
        if study.direction.name.lower() != spec.direction:
            raise ValueError(
                f"study {self.name} in {self.shown} was created to {study.direction.name.lower()}, not {spec.direction}"
            )
        self.storage = self.shown if options.storage else f"journal:{JOURNAL_NAME}"
        meta = {
            "study": self.name,
            "spec": spec.name,
            "factor": spec.factor,
            "question": spec.question,
            "metric": spec.metric,
            "direction": spec.direction,
            "levels": [{"label": lv.label, "value": lv.value, **_level_params(lv)} for lv in spec.levels],
            "requested_levels": [lv.label for lv in self.chosen],
            "seeds": self.seeds,
            "profile": options.profile,
            "params": options.params_path,
            "storage": self.storage,
            "optuna_study": self.name,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            # The whole grid, as this study runs it.
            "command": spec.deployment_command(options.profile, self.seeds, options.eval_clips),
        }
        with _locked(self.folder):
            write_json(self.folder / STUDY_JSON, meta, sort_keys=False)
        with _locked(self.folder):
            stale = fail_stale_trials(study, self.watch, self.requested)  # first sight: trials whose pid is gone here
            queued = _enqueue_open_points(study, self.points, self.base, options.retry_failed, stale)
        if stale:
            self.log(f"{self.name}: failed stale trial(s) {stale}; their points are queued again")
        self.log(f"{self.name}: {queued} point(s) newly queued; storage {self.storage}")
        self.write_files(study)
        return study

    def write_files(self, study: optuna.Study) -> dict[str, Any]:
        return write_study_files(study, self.spec, self.name, self.folder)

    def run(self) -> StudyResult:
        """Pop and run open points until n_trials ran or every requested point is done or running elsewhere."""
        study = self.open()
        ran: list[int] = []
        idle_since: dict[int, Any] | None = None  # the others' heartbeats when this worker found the queue empty
        while len(ran) < self.options.n_trials:
            trial = self._pop(study)
            if trial is None:
                idle_since, wait = self._wait_for_others(study, idle_since)
                if not wait:
                    break
                continue
            idle_since = None
            if _skip_duplicate(study, trial):
                continue
            ran.append(trial.number)
            self.run_trial(study, trial)
            self.write_files(study)
        summary = self.write_files(study)
        df = trials_frame(study, self.spec, self.name)
        markdown = summary_markdown(summary, self.name, self.spec.factor)
        return StudyResult(self.name, self.folder, self.storage, ran, summary, df, markdown, self.data_info)

    def _pop(self, study: optuna.Study) -> optuna.Trial | None:
        """The next queued trial (None: none queued), after failing the stale trials of requested points and
        queueing their points again."""
        with _locked(self.folder):
            stale = fail_stale_trials(study, self.watch, self.requested)
            if stale:
                _enqueue_open_points(study, self.points, self.base, False, stale)
            trial = study.ask() if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) else None
        if stale:
            self.log(f"{self.name}: failed stale trial(s) {stale}; their points are queued again")
            self.write_files(study)
        return trial

    def _wait_for_others(self, study: optuna.Study, idle_since: dict[int, Any] | None) -> tuple[dict[int, Any], bool]:
        """Nothing queued, but other workers' trials of requested points may be running: wait (True, after a
        poll) until each has beaten once (alive: its point is in good hands) or is stale (then its retry is queued
        and run here). False: every requested point is done or running."""
        running = {
            t.number: _heartbeat_value(t)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if _point(t) in self.requested
        }
        if idle_since is None:
            idle_since = running
            if running:
                self.log(
                    f"{self.name}: queue empty; waiting for a heartbeat of trial(s) {sorted(running)} (one that "
                    f"shows none for {self.beats.stale_after_s:g} s is retried here)"
                )
        if not [n for n, beat in running.items() if n in idle_since and idle_since[n] == beat]:
            self.log(f"{self.name}: every requested point is done or running")
            return idle_since, False
        time.sleep(self.beats.poll_s)
        return idle_since, True

    def run_trial(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Run one popped trial and tell Optuna how it ended; exceptions become FAIL with one line (the study goes
        on). KeyboardInterrupt / SystemExit (Lightning's answer to Ctrl-C) fail the trial as interrupted and are
        re-raised; a lost heartbeat fails it as "heartbeat lost: ..." (if the storage still takes it) and raises
        HeartbeatLost."""
        spec, name = self.spec, self.name
        try:
            level = spec.level(trial.user_attrs["level"])
            trial.suggest_categorical("level", [lv.label for lv in spec.levels])
            seed = trial.suggest_int("seed", 0, SEED_HIGH)
        except ValueError as err:  # the study was made with other levels: another study_name is needed
            trial.set_user_attr("error", one_line(err, with_type=True))
            study.tell(trial, state=TrialState.FAIL)
            self.log(f"{name}: trial {trial.number} FAILED: {one_line(err, with_type=True)}")
            return
        folder = self._start(study, trial)
        self.log(f"{name}: trial {trial.number} {level.label} seed {seed} -> {folder}")
        hook = StepPruningHook(trial)
        heartbeat = _Heartbeat(trial, self.beats.interval_s, self.beats.lose_after_s, self.log)
        started = time.perf_counter()
        try:
            with heartbeat:
                result = self.run_fn(
                    folder,
                    plan=self._plan(level, seed),
                    progress=self.options.progress,
                    **_hooks(self.run_fn, on_validation=hook, on_step=heartbeat.check),
                )
                heartbeat.check()  # lost after training (while evaluating): another worker may own the point by now
            value = _record_result(trial, result, self.folder, spec.metric)
            hook.report_curves(getattr(result, "runs", {}) or {})
        except optuna.TrialPruned as err:
            trial.set_user_attr("error", str(err))
            study.tell(trial, state=TrialState.PRUNED)
            self.log(f"{name}: trial {trial.number} pruned ({err})")
            return
        except Exception as err:
            self._failed(study, trial, err, heartbeat, time.perf_counter() - started)
            return
        except BaseException:
            trial.set_user_attr("error", INTERRUPTED)
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
        self.log(f"{name}: trial {trial.number} {spec.metric} {value:.3f} in {time.perf_counter() - started:.0f} s")

    def _plan(self, level: Level, seed: int) -> TrialPlan:
        """What the trial of (level, seed) runs: the data paths, the level's overrides and the seed."""
        overrides = (*self.base_overrides, *level.overrides, f"train.seed={seed}")
        source = ParamSource(self.params if self.params.is_file() else None, self.options.profile, overrides)
        return TrialPlan(source, level.schedule, level.stage1_fraction, level.stage2_trains, self.options.eval_clips)

    def _start(self, study: optuna.Study, trial: optuna.Trial) -> Path:
        """The trial's run folder (a retry takes over its dead trial's) and the user attrs of a running trial."""
        folder = self.folder / "runs" / f"trial_{trial.number}"
        _adopt_stale_folder(trial, self.folder, folder)
        # The heartbeat first: whoever finds the trial by its host and pid finds a heartbeat too.
        trial.set_user_attr(HEARTBEAT_KEY, 0)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("started_at", datetime.now(UTC).isoformat(timespec="seconds"))
        trial.set_user_attr("run_dir", os.path.relpath(folder, self.folder))
        # The code the trial runs, taken before it starts (training, evaluation and this study code, and the
        # torch / torchvision / av versions); `_record_result` refuses a result if it changed meanwhile.
        trial.set_user_attr("code_sha256", code_sha256("study"))
        self.write_files(study)  # the RUNNING row
        return folder

    def _failed(
        self, study: optuna.Study, trial: optuna.Trial, err: Exception, heartbeat: _Heartbeat, seconds: float
    ) -> None:
        """Tell a trial that raised FAIL with its error as one line; a lost heartbeat raises HeartbeatLost."""
        if isinstance(err, HeartbeatLost) or heartbeat.lost:  # (an error of the dying storage, e.g. in the pruner)
            why = f"{HEARTBEAT_LOST}: {heartbeat.lost}"
            with contextlib.suppress(Exception):  # the storage may be what is failing, or the trial ended by another
                trial.set_user_attr("error", why)
                study.tell(trial, state=TrialState.FAIL)
            self.log(f"{self.name}: trial {trial.number} stopped after {seconds:.0f} s: {why}")
            raise HeartbeatLost(f"{self.name}: trial {trial.number} stopped: {why}") from None
        why = one_line(err, with_type=True)
        trial.set_user_attr("error", why)
        study.tell(trial, state=TrialState.FAIL)
        self.log(f"{self.name}: trial {trial.number} FAILED after {seconds:.0f} s: {why}")


def _skip_duplicate(study: optuna.Study, trial: optuna.Trial) -> bool:
    """A popped trial whose point another live or finished trial holds (a race between machines), or one that is
    not from the queue: told FAIL with `skipped` (left out of the trials table) so it runs nothing."""
    attrs = trial.user_attrs
    reason = None
    if "level" not in attrs:
        reason = "not from the study's queue (another worker took the last point)"
    else:
        mine = (attrs["level"], int(attrs["seed"]))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)):
            if (
                t.number != trial.number
                and _point(t) == mine
                and (t.state != TrialState.RUNNING or t.number < trial.number)
            ):
                reason = f"duplicate of trial {t.number}"
                break
    if reason is None:
        return False
    trial.set_user_attr("skipped", reason)
    study.tell(trial, state=TrialState.FAIL)
    return True


def _adopt_stale_folder(trial: optuna.Trial, study_dir: Path, folder: Path) -> None:
    """A retry of a stale (killed) trial takes over its run folder: run_trial resumes the stages from their last
    checkpoints instead of starting over."""
    dead = trial.user_attrs.get("retry_of")
    old = study_dir / "runs" / f"trial_{dead}"
    if dead is not None and not folder.exists() and old.is_dir():
        os.replace(old, folder)
        trial.set_user_attr("resumed_from_trial", int(dead))


def _record_result(trial: optuna.Trial, result: Any, study_dir: Path, metric: str) -> float:
    """Store the trial's metrics, compute and paths as user attrs (the trials table is rebuilt from them) and
    return the objective value; a missing or non-finite metric is an error."""
    summary = (result.metrics or {}).get("summary") or {}
    names = {"psnr": "psnr", "ssim": "ssim", "vmaf": "vmaf", "lpips": "lpips", "fvd": "fvd"}
    names |= {"trivial_psnr": "trivial_psnr", "codebook_utilisation": "codebook_utilisation"}
    names |= {"perplexity": "codebook_perplexity"}
    test = ((result.extra or {}).get("test_metrics") or {}).get("summary") or {}
    values = {column: summary.get(key) for column, key in names.items()}
    values |= {f"test_{name}": test.get(name) for name in ("psnr", "ssim", "trivial_psnr")}
    values["train_tflops"] = (result.extra or {}).get("train_tflops")
    if why := (result.extra or {}).get("train_tflops_unknown"):
        trial.set_user_attr("train_tflops_unknown", str(why))
    for column, value in values.items():
        if isinstance(value, int | float) and math.isfinite(value):
            trial.set_user_attr(column, float(value))
    trial.set_user_attr("train_wall_s", float(result.train_wall_s))
    trial.set_user_attr("gpu_hours", None if result.gpu_hours is None else float(result.gpu_hours))
    trial.set_user_attr("steps", int(result.steps))
    for prefix, folder in (("", "eval"), ("test_", "eval_test")):
        metrics_file = Path(result.folder) / folder / "metrics.json"
        if metrics_file.is_file():  # what `vidtok audit` checks each file against
            trial.set_user_attr(f"{prefix}metrics_path", os.path.relpath(metrics_file, study_dir))
            trial.set_user_attr(f"{prefix}metrics_sha256", sha256_file(metrics_file))
            scored = read_metrics_record(metrics_file).get("data") or {}  # what it really scored
            trial.set_user_attr(f"{prefix or 'val_'}clips", scored.get("num_clips"))
            trial.set_user_attr(f"{prefix or 'val_'}videos", scored.get("num_videos"))
    if trial.user_attrs.get("code_sha256") != code_sha256("study"):
        raise ValueError("the library code (or the torch / torchvision / av version) changed while the trial ran")
    value = summary.get(metric)
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"the evaluation gave no finite {metric} ({value!r})")
    return float(value)
