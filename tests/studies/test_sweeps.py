"""vidtok.studies.sweeps without Prefect: real trials on the sample videos, resume, failures, killed trials, pruning and
parallel workers against the same Optuna journal."""

from __future__ import annotations

import json
import math
import os
import signal
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
        self.calls.append((Path(folder).name, list(kw["overrides"])))
        for key, err in self.fail.items():
            if key in kw["overrides"]:
                raise err
        summary = {"psnr": self.psnr + len(self.calls), "ssim": 0.5, "trivial_psnr": 21.0}
        return TrialResult(folder=Path(folder), runs={}, metrics={"summary": summary}, train_wall_s=1.5,
                           gpu_hours=None, steps=6)  # fmt: skip


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
    ],
)
def test_bad_arguments_fail_in_one_line_before_writing(root: Path, kwargs: dict, message: str) -> None:
    args = {"study": "sweep-fps", "root": root, "n_trials": 1, **FAKE, "run_fn": Fake(), **kwargs}
    with pytest.raises(ValueError) as err:
        sweeps.run_study(args.pop("study"), **args)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (root / "experiments").exists()


def test_cli_lists_studies_and_reports_errors_in_one_line(capsys, tmp_path: Path) -> None:
    assert sweeps.main(["--list"]) == 0
    assert "sweep-codebook (log2_codes)" in capsys.readouterr().out
    assert sweeps.main(["sweep-fps", "--n-trials", "0", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "error: n_trials must be an integer >= 1, got 0\n"


# ------------------------------------------------------------------------------------------------ real trials


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_two_real_trials_then_a_rerun_continues_the_study(root: Path) -> None:
    pipeline_data = _listing(root / "outputs" / "data")
    result = sweeps.run_study("sweep-fps", root=root, n_trials=2, seeds=[0, 1], levels=["3 fps", "8 fps"], **SMOKE)
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
    again = sweeps.run_study(
        "sweep-fps", root=root, n_trials=5, seeds=[0, 1], levels=["3 fps", "8 fps"], run_fn=fake, **FAKE
    )
    assert again.ran == [2, 3] and [c[0] for c in fake.calls] == ["trial_2", "trial_3"]
    assert all("train.seed=1" in c[1] for c in fake.calls)
    df2 = read_trials(folder)
    assert len(df2) == 4 and sorted(points(df2)) == sorted(set(points(df2)))  # no duplicate (level, seed)
    pd.testing.assert_frame_equal(df2[df2["trial"] < 2].reset_index(drop=True), done.reset_index(drop=True))


# ------------------------------------------------------------------------------------------------ failures


def test_a_failing_trial_is_fail_with_one_line_and_the_study_goes_on(root: Path) -> None:
    fake = Fake(fail={"train.fps=2": RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")})
    result = sweeps.run_study("sweep-fps", root=root, n_trials=3, seeds=[0], run_fn=fake, **FAKE)
    df = read_trials(result.folder)
    assert result.ran == [0, 1, 2]
    assert list(df["state"][:3]) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert df.loc[1, "error"] == "RuntimeError: CUDA out of memory" and pd.isna(df.loc[1, "psnr"])
    assert json.loads((result.folder / "summary.json").read_text())["trials"]["FAIL"] == 1

    # A rerun does not retry a failed point (it would fail the same way) unless asked to.
    fake.fail = {}
    sweeps.run_study("sweep-fps", root=root, n_trials=3, seeds=[0], run_fn=fake, **FAKE)
    assert ("2 fps", 0) not in points(read_trials(result.folder), "COMPLETE")
    sweeps.run_study("sweep-fps", root=root, n_trials=1, seeds=[0], run_fn=fake, retry_failed=True, **FAKE)
    df = read_trials(result.folder)
    assert points(df[df["trial"] == 6]) == [("2 fps", 0)] and df.loc[6, "state"] == "COMPLETE"


def test_evaluation_without_psnr_is_a_failed_trial(root: Path) -> None:
    fake = Fake(psnr=float("nan"))
    result = sweeps.run_study("sweep-fps", root=root, n_trials=1, seeds=[0], run_fn=fake, **FAKE)
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
        sweeps.run_study("sweep-fps", root=root, n_trials=1, seeds=[0], run_fn=interrupted, **FAKE)
    failing = Fake(fail={"train.fps=2": ValueError("bad config")})
    result = sweeps.run_study("sweep-fps", root=root, n_trials=6, seeds=[0], run_fn=failing, **FAKE)
    df = read_trials(result.folder)
    first = (df.loc[0, "level"], df.loc[0, "state"], df.loc[0, "error"])
    assert first == ("1 fps", "FAIL", "interrupted; its point is retried")
    assert result.ran == [1, 2, 3, 4, 5, 6]  # the retried point joins the end of the queue
    retry = df[df["trial"] == 6].iloc[0]
    assert (retry["level"], retry["seed"], retry["state"]) == ("1 fps", 0, "COMPLETE")
    assert (result.folder / retry["run_dir"] / "stage1/checkpoint-marker").read_text() == "resume me"
    # A trial that failed on its own (2 fps) is not retried without retry_failed: nothing is left to run.
    assert df.loc[df["level"] == "2 fps", "state"].tolist() == ["FAIL"]
    again = sweeps.run_study("sweep-fps", root=root, n_trials=2, seeds=[0], run_fn=Fake(), **FAKE)
    assert again.ran == []


KILLED = """
import sys, time
from pathlib import Path
from vidtok.studies import sweeps

def hang(folder, **kw):
    (Path(folder) / "stage1").mkdir(parents=True)
    (Path(folder) / "stage1" / "checkpoint-marker").write_text("resume me")
    time.sleep(600)

sweeps.run_study("sweep-fps", root=sys.argv[1], n_trials=1, seeds=[0], profile="smoke", run_fn=hang, prepare=False)
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
    result = sweeps.run_study("sweep-fps", root=root, n_trials=6, seeds=[0], run_fn=fake, **FAKE)
    df = read_trials(result.folder)
    assert df.loc[0, "state"] == "FAIL" and df.loc[0, "error"].startswith("stale: its process")
    assert result.ran == [1, 2, 3, 4, 5, 6]  # the retried point joins the end of the queue
    new = df[df["trial"] == 6].iloc[0]
    assert (new["level"], new["seed"], new["state"]) == ("1 fps", 0, "COMPLETE")
    # The new trial took over the killed trial's folder, so training would resume from its checkpoints.
    assert (result.folder / new["run_dir"] / "stage1/checkpoint-marker").read_text() == "resume me"
    assert df.loc[0, "run_dir"] == new["run_dir"]


def test_step_pruning_hook_prunes_a_trial(root: Path) -> None:
    def training(folder, *, on_validation, **kw):
        for step, value in enumerate([12.0, 9.0, 8.0]):
            on_validation(step, value, stage="stage1")
        raise AssertionError("the pruner should have stopped training")

    pruner = optuna.pruners.ThresholdPruner(lower=10.0)
    result = sweeps.run_study("sweep-fps", root=root, n_trials=1, seeds=[0], run_fn=training, pruner=pruner, **FAKE)
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
sweeps.run_study("sweep-fps", root=sys.argv[1], n_trials=12, seeds=[0, 1], profile="smoke", run_fn=quick,
                 prepare=False, log=lambda _: None, storage=storage)
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
