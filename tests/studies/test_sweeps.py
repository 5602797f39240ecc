"""vidtok.studies.sweeps without Prefect: real trials on the sample videos, resume, failures, killed trials, pruning and
parallel workers against the same Optuna journal.

    pytest tests/studies/test_sweeps.py -q
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tests.helpers import REPO, copy_root, postgres_bin, postgres_server
from vidtok.audit import AuditResult, check_trials
from vidtok.studies import sweeps
from vidtok.studies.results import read_trials
from vidtok.studies.trial import TrialResult

SMOKE = {"profile": "smoke", "eval_clips": 2, "log": lambda _: None}
FAKE = {**SMOKE, "prepare": False}  # fake trials need no clips


class Fake:
    """A stand-in for vidtok.studies.trial.run_trial that records its calls; `fail` maps a train.fps override to an
    error."""

    def __init__(self, fail: dict[str, BaseException] | None = None, psnr: float = 20.0):
        self.calls: list[tuple[str, list[str]]] = []
        self.fail = fail or {}
        self.psnr = psnr

    def __call__(self, folder, **kw):
        Path(folder).mkdir(parents=True, exist_ok=True)
        overrides = list(kw["plan"].source.overrides)
        self.calls.append((Path(folder).name, overrides))
        for key, err in self.fail.items():
            if key in overrides:
                raise err
        summary = {"psnr": self.psnr + len(self.calls), "ssim": 0.5, "trivial_psnr": 21.0}
        return TrialResult(folder=Path(folder), runs={}, metrics={"summary": summary}, train_wall_s=1.5,
                           gpu_hours=None, steps=6)  # fmt: skip


def run_study(study, **kwargs):
    """sweeps.run_study with these keyword arguments: run_fn and log, the rest StudyOptions fields."""
    run_fn, log = kwargs.pop("run_fn", None), kwargs.pop("log", print)
    return sweeps.run_study(study, sweeps.StudyOptions(**kwargs), run_fn=run_fn, log=log)


def points(df: pd.DataFrame, state: str | None = None) -> list[tuple[str, int]]:
    rows = df if state is None else df[df["state"] == state]
    return list(zip(rows["level"], rows["seed"]))


@pytest.fixture
def root(smoke_root_template: Path, tmp_path: Path) -> Path:
    return copy_root(smoke_root_template, tmp_path / "root")


# ------------------------------------------------------------------------------------------------ definitions


def test_study_levels_are_valid_models_and_match_the_dashboard() -> None:
    from vidtok.model.config import derive
    from vidtok.params import parse_override
    from vidtok.studies.paper import paper_row

    assert [lv.value for lv in sweeps.STUDIES["sweep-fps"].levels] == [1, 2, 3, 4, 8, 30]
    codebook = sweeps.STUDIES["sweep-codebook"].levels
    assert {lv.regularizer for lv in codebook} == {"fsq", "lfq", "vq"} and len(codebook) == 12  # FSQ 6, LFQ 3, VQ 3
    for spec in sweeps.STUDIES.values():
        for level in spec.levels:
            model = {k[1]: v for k, v in (parse_override(o) for o in level.overrides) if k[0] == "model"}
            config = derive("tiny_kl_causal_444", **model)
            if spec.factor == "log2_codes":
                assert config.num_codes == 2 ** int(level.value), level  # codebook size = 2^bits exactly
    ablation = {lv.label: paper_row(lv.label) for lv in sweeps.STUDIES["ablations"].levels}
    assert ablation["VidTok"][0] == "Table 2: Ours (VidTok)"
    assert ablation["w/o AlphaBlender"][0] == "Table 2: Variant 2: w/o AlphaBlender"
    assert ablation["fully 3D"][0] == "Table 2: Variant 1: fully 3D"
    assert ablation["LFQ 262,144"][0].startswith("Table 3: LFQ")
    staging = {lv.label: lv for lv in sweeps.STUDIES["sweep-staging"].levels}
    assert staging["onestage"].schedule == "onestage"
    assert staging["twostage 75% whole model"].stage2_trains == "all"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"study": "sweep-nope"}, "unknown study 'sweep-nope'; studies: sweep-fps"),
        ({"n_trials": 0}, "n_trials must be an integer >= 1, got 0"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"storage": "redis://x"}, "storage 'redis://x': expected sqlite:///FILE, postgresql://"),
        ({"profile": "gpu-cluster"}, "no profile 'gpu-cluster'"),
        ({"study_name": "../x"}, "study_name '../x': use letters"),
        ({"levels": ["5 fps"]}, "no level '5 fps'"),
        ({"pruner": "hyperband"}, "pruner must be 'none' or 'median'"),
        ({"heartbeat_s": 0}, "heartbeat_s must be > 0, got 0"),
        ({"heartbeat_s": 5, "stale_after_s": 20}, "stale_after_s must be at least 6 x heartbeat_s (30 s), got 20"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_writing(root: Path, kwargs: dict, message: str) -> None:
    args = {"study": "sweep-fps", "root": root, "n_trials": 1, **FAKE, "run_fn": Fake(), **kwargs}
    with pytest.raises(ValueError) as err:
        run_study(args.pop("study"), **args)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (root / "experiments").exists()


def test_cli_lists_studies_and_reports_errors_in_one_line(capsys, tmp_path: Path) -> None:
    from vidtok.cli import main as cli_main

    assert cli_main(["study", "--list"]) == 0
    assert "sweep-codebook (log2_codes)" in capsys.readouterr().out
    assert cli_main(["study", "sweep-fps", "--n-trials", "0", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "vidtok study: error: n_trials must be an integer >= 1, got 0\n"


# ------------------------------------------------------------------------------------------------ real trials


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_two_real_trials_then_a_rerun_continues_the_study(root: Path) -> None:
    pipeline_data = _listing(root / "outputs" / "data")
    result = run_study("sweep-fps", root=root, n_trials=2, seeds=[0, 1], levels=["3 fps", "8 fps"], **SMOKE)
    # The study built and read its clip sets in its own folder: the DVC pipeline's outputs are untouched.
    assert _listing(root / "outputs" / "data") == pipeline_data
    assert (root / sweeps.STUDY_DATA_DIR / "clips" / "fps_8.parquet").is_file()
    folder = root / "experiments" / "sweep-fps"
    df = read_trials(folder)  # pandera-validated, as the dashboard reads it
    assert result.ran == [0, 1]
    assert points(df, "COMPLETE") == [("3 fps", 0), ("8 fps", 0)]
    assert points(df, "WAITING") == [("3 fps", 1), ("8 fps", 1)]  # the rest of the grid, queued
    done = df[df["state"] == "COMPLETE"]
    assert done["psnr"].between(5, 60).all() and done["trivial_psnr"].notna().all()
    assert (done["train_wall_s"] > 0).all() and done["gpu_hours"].isna().all() and (done["steps"] == 6).all()
    for row in done.itertuples():
        run = folder / row.run_dir
        assert (run / "stage1" / "run.json").is_file() and (run / "stage2" / "run.json").is_file()
        record = json.loads((folder / row.metrics_path).read_text())
        assert math.isclose(record["summary"]["psnr"], row.psnr)
        params = json.loads(row.params_json)
        assert params["level"] == row.level and params["seed"] == row.seed and params["profile"] == "smoke"
    stage1 = json.loads((folder / "runs/trial_1/stage1/run.json").read_text())
    assert stage1["config"]["train"]["fps"] == 8 and stage1["config"]["train"]["seed"] == 0
    assert stage1["data_files"] and all(sweeps.STUDY_DATA_DIR in path for path in stage1["data_files"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best_level"] in ("3 fps", "8 fps") and summary["trials"]["COMPLETE"] == 2
    assert "| fps | n | val PSNR (dB)" in (folder / "summary.md").read_text()
    meta = json.loads((folder / "study.json").read_text())
    assert meta["factor"] == "fps" and meta["metric"] == "psnr" and meta["seeds"] == [0, 1]
    assert (folder / "optuna.journal").is_file()

    from dashboard import data as dash

    assert len(dash.read_trials(folder)) == 4 and dash.read_study_json(folder)["study"] == "sweep-fps"

    # The audit checks every finished trial's metrics file against the sha256 recorded when it finished.
    audited = AuditResult("study", "now")
    check_trials(audited, folder)
    assert audited.passed and "2 finished trials" in audited.checks[0].detail
    metrics = folder / done.iloc[0]["metrics_path"]
    original = metrics.read_bytes()
    record = json.loads(original)
    record["summary"]["psnr"] += 0.5
    metrics.write_text(json.dumps(record))
    audited = AuditResult("study", "now")
    check_trials(audited, folder)
    assert not audited.passed and "trial 0 (3 fps, seed 0)" in audited.checks[0].detail
    metrics.write_bytes(original)

    # A rerun asking for more trials continues the queue: completed points are not run again.
    fake = Fake()
    again = run_study("sweep-fps", root=root, n_trials=5, seeds=[0, 1], levels=["3 fps", "8 fps"], run_fn=fake, **FAKE)
    assert again.ran == [2, 3] and [c[0] for c in fake.calls] == ["trial_2", "trial_3"]
    assert all("train.seed=1" in c[1] for c in fake.calls)
    df2 = read_trials(folder)
    assert len(df2) == 4 and sorted(points(df2)) == sorted(set(points(df2)))  # no duplicate (level, seed)
    pd.testing.assert_frame_equal(df2[df2["trial"] < 2].reset_index(drop=True), done.reset_index(drop=True))


# ------------------------------------------------------------------------------------------------ failures


def test_a_failing_trial_is_fail_with_one_line_and_the_study_goes_on(root: Path) -> None:
    fake = Fake(fail={"train.fps=2": RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")})
    result = run_study("sweep-fps", root=root, n_trials=3, seeds=[0], run_fn=fake, **FAKE)
    df = read_trials(result.folder)
    assert result.ran == [0, 1, 2]
    assert list(df["state"][:3]) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert df.loc[1, "error"] == "RuntimeError: CUDA out of memory" and pd.isna(df.loc[1, "psnr"])
    assert json.loads((result.folder / "summary.json").read_text())["trials"]["FAIL"] == 1

    # A rerun does not retry a failed point (it would fail the same way) unless asked to.
    fake.fail = {}
    run_study("sweep-fps", root=root, n_trials=3, seeds=[0], run_fn=fake, **FAKE)
    assert ("2 fps", 0) not in points(read_trials(result.folder), "COMPLETE")
    run_study("sweep-fps", root=root, n_trials=1, seeds=[0], run_fn=fake, retry_failed=True, **FAKE)
    df = read_trials(result.folder)
    assert points(df[df["trial"] == 6]) == [("2 fps", 0)] and df.loc[6, "state"] == "COMPLETE"


def test_evaluation_without_psnr_is_a_failed_trial(root: Path) -> None:
    fake = Fake(psnr=float("nan"))
    result = run_study("sweep-fps", root=root, n_trials=1, seeds=[0], run_fn=fake, **FAKE)
    df = read_trials(result.folder)
    assert df.loc[0, "state"] == "FAIL" and "no finite psnr" in df.loc[0, "error"]


def test_an_interrupted_trial_is_retried_in_its_folder_on_the_next_run(root: Path) -> None:
    """Ctrl-C (or SIGTERM at the end of a session) fails the running trial as "interrupted"; the next run retries
    that point without retry_failed, resuming in the interrupted trial's folder."""

    def interrupted(folder, **kw):
        (Path(folder) / "stage1").mkdir(parents=True)
        (Path(folder) / "stage1" / "checkpoint-marker").write_text("resume me")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study("sweep-fps", root=root, n_trials=1, seeds=[0], run_fn=interrupted, **FAKE)
    failing = Fake(fail={"train.fps=2": ValueError("bad config")})
    result = run_study("sweep-fps", root=root, n_trials=6, seeds=[0], run_fn=failing, **FAKE)
    df = read_trials(result.folder)
    first = (df.loc[0, "level"], df.loc[0, "state"], df.loc[0, "error"])
    assert first == ("1 fps", "FAIL", "interrupted; its point is retried")
    assert result.ran == [1, 2, 3, 4, 5, 6]  # the retried point joins the end of the queue
    retry = df[df["trial"] == 6].iloc[0]
    assert (retry["level"], retry["seed"], retry["state"]) == ("1 fps", 0, "COMPLETE")
    assert (result.folder / retry["run_dir"] / "stage1/checkpoint-marker").read_text() == "resume me"
    # A trial that failed on its own (2 fps) is not retried without retry_failed: nothing is left to run.
    assert df.loc[df["level"] == "2 fps", "state"].tolist() == ["FAIL"]
    again = run_study("sweep-fps", root=root, n_trials=2, seeds=[0], run_fn=Fake(), **FAKE)
    assert again.ran == []


KILLED = """
import sys, time
from pathlib import Path
from vidtok.studies import sweeps

def hang(folder, **kw):
    (Path(folder) / "stage1").mkdir(parents=True)
    (Path(folder) / "stage1" / "checkpoint-marker").write_text("resume me")
    time.sleep(600)

options = sweeps.StudyOptions(root=sys.argv[1], n_trials=1, seeds=[0], profile="smoke", prepare=False)
sweeps.run_study("sweep-fps", options, run_fn=hang)
"""


def test_a_killed_trial_is_failed_as_stale_and_its_point_retried_in_its_folder(root: Path) -> None:
    script = root / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    proc = subprocess.Popen([sys.executable, str(script), str(root)], cwd=REPO)
    marker = root / "experiments/sweep-fps/runs/trial_0/stage1/checkpoint-marker"
    try:
        deadline = time.monotonic() + 60
        while not marker.is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep did not start its trial"
            time.sleep(0.2)
        assert read_trials(root / "experiments/sweep-fps").loc[0, "state"] == "RUNNING"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    fake = Fake()
    result = run_study("sweep-fps", root=root, n_trials=6, seeds=[0], run_fn=fake, **FAKE)
    df = read_trials(result.folder)
    assert df.loc[0, "state"] == "FAIL" and df.loc[0, "error"].startswith("stale: its process")
    assert result.ran == [1, 2, 3, 4, 5, 6]  # the retried point joins the end of the queue
    new = df[df["trial"] == 6].iloc[0]
    assert (new["level"], new["seed"], new["state"]) == ("1 fps", 0, "COMPLETE")
    # The new trial took over the killed trial's folder, so training would resume from its checkpoints.
    assert (result.folder / new["run_dir"] / "stage1/checkpoint-marker").read_text() == "resume me"
    assert df.loc[0, "run_dir"] == new["run_dir"]


# ------------------------------------------------------------------------------------------------ heartbeats


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stale_means_a_counter_this_worker_saw_stand_still_on_its_own_clock() -> None:
    """No two clocks are compared: a trial from another host is stale only once this watch has itself seen its
    heartbeat counter unchanged for stale_after_s; whatever time the writer put in (a legacy wall-clock
    heartbeat_at from 1970 here) does not count, and every new beat starts the window again."""
    study = optuna.create_study()
    far = study.ask()
    far.set_user_attr("host", "another-host.example")
    far.set_user_attr("pid", 1)
    far.set_user_attr(sweeps.HEARTBEAT_KEY, 0)
    legacy = study.ask()
    legacy.set_user_attr("host", "another-host.example")
    legacy.set_user_attr("heartbeat_at", 0.0)  # 1970 on the writer's clock: no reason to call it stale

    def running():
        return study.get_trials(states=(optuna.trial.TrialState.RUNNING,))

    clock = Clock()
    watch = sweeps.StaleWatch(10.0, clock=clock)
    assert watch.observe(running()) == {}  # first sight: nothing is known about how long it stood still
    clock.now += 8
    far.set_user_attr(sweeps.HEARTBEAT_KEY, 1)  # a beat
    assert watch.observe(running()) == {}
    clock.now += 9.9  # the legacy trial: 17.9 s unchanged; the beating one: 9.9 s since its last beat
    assert watch.observe(running()) == {legacy.number: "its heartbeat stood at 0.0 for 18 s"}
    clock.now += 0.1
    assert watch.observe(running())[far.number] == "its heartbeat stood at 1 for 10 s"
    # A new watch (a worker that has just started) knows nothing yet, however long the trial has been silent.
    assert sweeps.StaleWatch(10.0, clock=clock).observe(running()) == {}


def test_a_trial_on_this_host_whose_process_is_gone_is_stale_at_first_sight() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: its pid no longer exists
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", proc.pid)
    alive = study.ask()
    alive.set_user_attr("host", socket.gethostname())
    alive.set_user_attr("pid", os.getpid())
    watch = sweeps.StaleWatch(600.0, clock=Clock())
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert watch.observe(running) == {trial.number: f"its process {proc.pid} on {trial.user_attrs['host']} is gone"}


KILLABLE = """
import socket, sys, time
from pathlib import Path
from vidtok.studies import sweeps
from vidtok.studies.trial import TrialResult

root, host, seconds, gate = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
if host:  # a worker on another machine: the others cannot look up its pid there, only watch its heartbeat
    socket.gethostname = lambda: host
started = []

def training(folder, *, on_step, **kw):
    # Steps of 0.05 s; the first trial of a worker with a gate trains until the gate file exists (at most 120 s).
    started.append(folder)
    Path(folder).mkdir(parents=True, exist_ok=True)
    step, end = 0, time.monotonic() + (120 if gate and len(started) == 1 else seconds)
    while time.monotonic() < end and not (gate and len(started) == 1 and Path(gate).exists()):
        time.sleep(0.05)
        step += 1
        with open(Path(folder) / "steps.log", "a") as log:  # the run folder as training leaves it, step by step
            log.write(f"{socket.gethostname()} {step}\\n")
        on_step(step)
    s = {"psnr": 20.0, "ssim": 0.5}
    return TrialResult(folder=Path(folder), runs={}, metrics={"summary": s}, train_wall_s=seconds,
                       gpu_hours=None, steps=step)

options = sweeps.StudyOptions(root=root, n_trials=12, seeds=[0, 1], profile="smoke", prepare=False, heartbeat_s=0.25,
                              stale_after_s=3.0)
sweeps.run_study("sweep-fps", options, run_fn=training)
"""


def _storage_trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    if not (folder / sweeps.JOURNAL_NAME).is_file():
        return []
    try:
        return optuna.load_study(study_name="sweep-fps", storage=sweeps.open_storage(None, folder)[0]).get_trials()
    except KeyError:  # the journal is there, the study not yet
        return []


def _wait_for(condition, procs: dict[str, subprocess.Popen], root: Path, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        for name, proc in procs.items():
            assert proc.poll() is None, f"worker {name} ended: {(root / f'worker-{name}.log').read_text()}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return found


def test_a_worker_killed_mid_trial_is_noticed_by_the_live_one_without_comparing_clocks(root: Path) -> None:
    """Two worker processes on one study (the default journal file), stale_after_s 3 s. Worker A runs "on another
    host" (its hostname is not this machine's, so B cannot look up its pid): B can only watch its heartbeat counter.
    A's first trial trains until B has run six more 0.5 s trials (B reads the heartbeats before each: over 3 s of
    watching a live trial) and B must leave it alone. A is then SIGKILLed in its second trial, once its heartbeat
    shows it training; B notices the counter stand still, fails the trial as stale and retries its point once, in
    A's folder. Every (level, seed) of the 12-point grid completes exactly once."""
    script = root / "killable.py"
    script.write_text(textwrap.dedent(KILLABLE))
    folder, gate = root / "experiments/sweep-fps", root / "release-a"
    logs = {name: open(root / f"worker-{name}.log", "w") for name in ("a", "b")}  # noqa: SIM115 - closed below
    args = {"a": ["worker-a.example", "60", str(gate)], "b": ["", "0.5", ""]}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(script), str(root), *args[name]], cwd=REPO, stdout=logs[name], stderr=subprocess.STDOUT
        )  # fmt: skip
        for name in ("a", "b")
    }
    a, b = procs["a"], procs["b"]

    def of(proc: subprocess.Popen, state: str | None = None) -> list[optuna.trial.FrozenTrial]:
        trials = [t for t in _storage_trials(folder) if t.user_attrs.get("pid") == proc.pid]
        return [t for t in trials if state in (None, t.state.name)]

    try:
        first = _wait_for(lambda: of(a, "RUNNING"), procs, root, "worker A starts a trial")[0]
        done_by_b = len(of(b, "COMPLETE"))
        _wait_for(lambda: len(of(b, "COMPLETE")) >= done_by_b + 6, procs, root, "worker B runs six trials")
        assert of(a)[0].number == first.number and of(a)[0].state.name == "RUNNING"  # B left the live trial alone
        assert of(a)[0].user_attrs[sweeps.HEARTBEAT_KEY] >= 3 / 0.25  # it beat all along, > stale_after_s
        gate.touch()

        def training_again() -> list[optuna.trial.FrozenTrial]:  # A's second trial, its heartbeat counted to 2
            return [t for t in of(a, "RUNNING") if t.number != first.number and t.user_attrs[sweeps.HEARTBEAT_KEY] > 1]

        second = _wait_for(training_again, procs, root, "worker A trains its second trial")[0]
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        assert b.wait(timeout=120) == 0, (root / "worker-b.log").read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in logs.values():
            f.close()
    df = read_trials(folder)
    grid = {(lv.label, s) for lv in sweeps.STUDIES["sweep-fps"].levels for s in (0, 1)}
    assert sorted(points(df, "COMPLETE")) == sorted(grid)  # every (level, seed) exactly once
    failed = df[df["state"] != "COMPLETE"]
    assert list(failed["trial"]) == [second.number]  # nothing else failed: no live trial was taken over
    assert failed.iloc[0]["error"].startswith("stale: its heartbeat stood at ")
    trials = {t.number: t for t in _storage_trials(folder)}
    retries = [t for t in trials.values() if t.user_attrs.get("retry_of") == second.number]
    assert len(retries) == 1 and retries[0].user_attrs["pid"] == b.pid  # retried once, by B
    assert retries[0].user_attrs["resumed_from_trial"] == second.number
    retry = df[df["trial"] == retries[0].number].iloc[0]
    assert retry["run_dir"] == failed.iloc[0]["run_dir"] == f"runs/trial_{retry['trial']}"  # A's folder, adopted
    # The retry went on in the killed trial's folder: A's steps (cut off by the kill), then B's 0.5 s of steps.
    steps = (folder / retry["run_dir"] / "steps.log").read_text().splitlines()
    by_a = [line for line in steps if line.startswith("worker-a.example ")]
    assert len(by_a) >= 2 and steps[: len(by_a)] == [f"worker-a.example {n}" for n in range(1, len(by_a) + 1)]
    assert steps[len(by_a) :] and all(line.startswith(f"{socket.gethostname()} ") for line in steps[len(by_a) :])
    assert len(by_a) < 60 / 0.05  # killed mid-trial


REAL_WORKER = """
import sys
from vidtok.studies import sweeps

sweeps.run_study("sweep-fps", sweeps.StudyOptions(root=sys.argv[1], n_trials=3, seeds=[0], levels=["3 fps", "8 fps"],
                                                  profile="smoke", eval_clips=2, heartbeat_s=0.5, stale_after_s=5.0))
"""


@pytest.mark.slow  # two real smoke trials side by side, one killed and resumed: 190 s on 2 busy cores
def test_a_worker_killed_while_lightning_trains_is_retried_from_its_checkpoint(root: Path) -> None:
    """Two real worker processes on one study, real trials (Lightning, the smoke profile with stage 1 made 12 steps
    long). Worker A is SIGKILLed while training, once its heartbeat (written while Lightning trains) has counted to
    2 and stage 1 has a checkpoint; B finishes its own trial untouched, finds A's trial stale (its pid is gone on
    this host), retries the point once in A's folder, and training resumes from A's last checkpoint."""
    params = root / "params.yaml"
    text = params.read_text()
    params.write_text(
        text.replace(
            "stage1: {resolution: 32, steps: 4, batch_size: 1}", "stage1: {resolution: 32, steps: 12, batch_size: 1}"
        )
    )
    assert params.read_text() != text
    script = root / "real_worker.py"
    script.write_text(textwrap.dedent(REAL_WORKER))
    folder = root / "experiments/sweep-fps"
    logs = {name: open(root / f"worker-{name}.log", "w") for name in ("a", "b")}  # noqa: SIM115 - closed below
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(script), str(root)], cwd=REPO, stdout=logs[name], stderr=subprocess.STDOUT
        )  # fmt: skip
        for name in ("a", "b")
    }
    a, b = procs["a"], procs["b"]

    def a_training() -> list[optuna.trial.FrozenTrial]:
        running = [t for t in _storage_trials(folder) if t.user_attrs.get("pid") == a.pid and t.state.name == "RUNNING"]
        return [
            t for t in running
            if t.user_attrs.get(sweeps.HEARTBEAT_KEY, 0) >= 2
            and any((folder / t.user_attrs["run_dir"] / "stage1/checkpoints").glob("step_*"))
        ]  # fmt: skip

    try:
        killed = _wait_for(a_training, procs, root, "worker A trains with a checkpoint", timeout=240)[0]
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        assert b.wait(timeout=900) == 0, (root / "worker-b.log").read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in logs.values():
            f.close()
    df = read_trials(folder)
    assert sorted(points(df, "COMPLETE")) == [("3 fps", 0), ("8 fps", 0)]  # each exactly once
    failed = df[df["state"] != "COMPLETE"]
    assert list(failed["trial"]) == [killed.number]
    assert (
        failed.iloc[0]["error"]
        == f"stale: its process {a.pid} on {socket.gethostname()} is gone (killed?); its point is retried"
    )
    trials = {t.number: t for t in _storage_trials(folder)}
    retry = next(t for t in trials.values() if t.user_attrs.get("retry_of") == killed.number)
    assert retry.user_attrs["pid"] == b.pid and retry.user_attrs["resumed_from_trial"] == killed.number
    untouched = next(t for t in trials.values() if t.user_attrs.get("pid") == b.pid and t.number != retry.number)
    assert untouched.state.name == "COMPLETE" and "retry_of" not in untouched.user_attrs
    stage1 = json.loads((folder / retry.user_attrs["run_dir"] / "stage1/run.json").read_text())
    assert stage1["status"] == "completed" and stage1["steps_completed"] == 12
    (resumed_at,) = stage1["resumed_at_steps"]
    assert 2 <= resumed_at < 12 and resumed_at % 2 == 0  # A's last checkpoint (every 2 steps), not a fresh start
    assert json.loads((folder / retry.user_attrs["run_dir"] / "stage2/run.json").read_text())["status"] == "completed"


def test_a_lost_heartbeat_stops_lightning_training_and_is_recorded_as_such(root: Path) -> None:
    """The storage goes away while Lightning trains a real trial (the journal's folder moves away, as a network
    share that drops): the heartbeat thread's writes fail, the on_step check raises inside Lightning's loop, and
    the trial ends "heartbeat lost", in the stage's run.json and (the storage back) in the study, not "interrupted".
    The next run retries the point without retry_failed and resumes training from the checkpoint of step 2."""
    from vidtok.studies.trial import run_trial

    db, gone = root / "db", root / "db-moved-away"
    storage = str(db / "optuna.journal")
    seen: list[str] = []

    def storage_drops_at_step_2(folder, *, on_step, **kw):
        def step(n: int) -> None:
            if n == 2 and db.is_dir():
                db.rename(gone)
                try:  # the training loop keeps checking, as it would after each further step
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        on_step(n)
                        time.sleep(0.05)
                except sweeps.HeartbeatLost as err:
                    seen.append(str(err))
                    raise
                finally:
                    gone.rename(db)  # back, so the trial's end can be told
            on_step(n)

        return run_trial(folder, on_step=step, **kw)

    args = {"root": root, "seeds": [0], "levels": ["3 fps"], "storage": storage, **SMOKE}
    with pytest.raises(sweeps.HeartbeatLost) as err:
        run_study("sweep-fps", n_trials=1, run_fn=storage_drops_at_step_2, heartbeat_s=0.1, stale_after_s=10, **args)
    lost = "heartbeat lost: 3 heartbeat writes in a row failed (FileNotFoundError: "
    assert seen and seen[0].startswith(lost) and "optuna.journal" in seen[0]
    assert str(err.value) == f"sweep-fps: trial 0 stopped: {seen[0]}"
    folder = root / "experiments/sweep-fps"
    stage1 = json.loads((folder / "runs/trial_0/stage1/run.json").read_text())
    assert stage1["status"] == "failed" and stage1["error"] == f"HeartbeatLost: {seen[0]}"
    assert stage1["steps_completed"] == 2 and not (folder / "runs/trial_0/stage2").exists()
    (trial,) = optuna.load_study(study_name="sweep-fps", storage=sweeps.open_storage(storage, folder)[0]).trials
    assert trial.state.name == "FAIL" and trial.user_attrs["error"] == seen[0]

    fake = Fake()  # (resuming a real run from its checkpoint: tests/train/test_run.py)
    result = run_study("sweep-fps", n_trials=1, run_fn=fake, **{**args, "prepare": False})
    df = read_trials(result.folder)
    assert list(df["state"]) == ["FAIL", "COMPLETE"] and df.loc[0, "error"] == f"{seen[0]}; its point is retried"
    assert df.loc[1, "run_dir"] == df.loc[0, "run_dir"] == "runs/trial_1"  # the retry took over trial 0's folder
    assert json.loads((folder / "runs/trial_1/stage1/run.json").read_text())["steps_completed"] == 2


def test_step_pruning_hook_prunes_a_trial(root: Path) -> None:
    def training(folder, *, on_validation, **kw):
        for step, value in enumerate([12.0, 9.0, 8.0]):
            on_validation(step, value, stage="stage1")
        raise AssertionError("the pruner should have stopped training")

    pruner = optuna.pruners.ThresholdPruner(lower=10.0)
    result = run_study("sweep-fps", root=root, n_trials=1, seeds=[0], run_fn=training, pruner=pruner, **FAKE)
    df = read_trials(result.folder)
    assert df.loc[0, "state"] == "PRUNED"
    study = optuna.load_study(study_name="sweep-fps", storage=sweeps.open_storage(None, result.folder)[0])
    assert study.trials[0].intermediate_values == {0: 12.0, 1: 9.0}


def test_hook_offsets_stage_two_steps_after_stage_one() -> None:
    study = optuna.create_study()
    trial = study.ask()
    hook = sweeps.StepPruningHook(trial)
    for stage, steps in (("stage1", (0, 2, 4)), ("stage2", (0, 2))):
        for s in steps:
            hook(s, 10.0 + s, stage=stage)
    hook(1, math.nan, stage="stage2")  # not reported
    assert sorted(study.get_trials()[trial.number].intermediate_values) == [0, 2, 4, 5, 7]


WORKER = """
import sys, time
from pathlib import Path
from vidtok.studies import sweeps
from vidtok.studies.trial import TrialResult

def quick(folder, **kw):
    Path(folder).mkdir(parents=True, exist_ok=True)
    time.sleep(0.3)
    s = {"psnr": 20.0, "ssim": 0.5}
    return TrialResult(folder=Path(folder), runs={}, metrics={"summary": s}, train_wall_s=0.3,
                       gpu_hours=None, steps=1)

storage = sys.argv[2] or None
options = sweeps.StudyOptions(root=sys.argv[1], n_trials=12, seeds=[0, 1], profile="smoke", prepare=False,
                              storage=storage)
sweeps.run_study("sweep-fps", options, run_fn=quick, log=lambda _: None)
"""


def test_a_lost_table_creation_race_is_retried_and_other_database_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers opening an empty SQLite database together: the loser's CREATE TABLE fails with "table ...
    already exists" (sqlite3 reports it as an OperationalError); opening again finds the tables made."""
    import sqlite3

    import sqlalchemy

    real = sweeps.RDBStorage
    calls: list[str] = []

    def loses_once(url: str, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            real(url, **kwargs)  # the other worker's tables
            cause = sqlite3.OperationalError("table studies already exists")
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies (...)", {}, cause)
        return real(url, **kwargs)

    monkeypatch.setattr(sweeps, "RDBStorage", loses_once)
    url = f"sqlite:///{tmp_path / 'optuna.sqlite3'}"
    storage, shown = sweeps.open_storage(url, tmp_path)
    assert len(calls) == 2 and shown == url
    assert isinstance(storage, real) and storage.get_all_studies() == []

    monkeypatch.setattr(sweeps, "RDBStorage", real)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError) as err:  # a real OperationalError: not retried, named in one line
        sweeps.open_storage(f"sqlite:///{tmp_path / 'folder'}", tmp_path)
    assert "cannot open it (OperationalError" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_parallel_workers_share_the_study_without_duplicates(root: Path, storage: str) -> None:
    """Two worker processes pop from one study, through the default journal file and through an RDB storage
    (SQLite here; PostgreSQL below): every (level, seed) runs exactly once."""
    url = f"sqlite:///{root / 'optuna.sqlite3'}" if storage == "sqlite" else ""
    _two_workers(root, url)
    if storage == "sqlite":
        assert (root / "optuna.sqlite3").stat().st_size > 0 and not (
            root / "experiments/sweep-fps/optuna.journal"
        ).exists()


@pytest.mark.postgres
def test_parallel_workers_share_a_postgresql_study_without_duplicates(root: Path) -> None:
    """The same promise on a real PostgreSQL server (the OS package, a throw-away cluster on loopback): the storage
    Optuna recommends for parallel workers on several machines."""
    if postgres_bin() is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl): `make system-deps` installs them")
    with postgres_server() as url:
        _two_workers(root, url)
        storage = optuna.storages.RDBStorage(url)
        trials = storage.get_all_trials(storage.get_study_id_from_name("sweep-fps"))
        assert len(trials) == 12 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert not (root / "experiments/sweep-fps/optuna.journal").exists()


def _two_workers(root: Path, url: str) -> None:
    script = root / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    cmd = [sys.executable, str(script), str(root), url]
    workers = [subprocess.Popen(cmd, cwd=REPO) for _ in range(2)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    df = read_trials(root / "experiments/sweep-fps")
    done = points(df, "COMPLETE")
    assert len(done) == 12 and len(set(done)) == 12  # every (level, seed) exactly once
    assert (df["state"] == "COMPLETE").all()
