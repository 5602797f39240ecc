"""Run manifests: a validated, atomically written record that round-trips, and clear errors on bad ones.

pytest tests/test_runs.py -q
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vidtok.runs import (
    RunRecord,
    RunRecordError,
    git_info,
    modified_tracked_files,
    package_versions,
    read_run_record,
    write_run_record,
)

SHA = "ab" * 32


def _manifest(**changes) -> RunRecord:
    base = dict(
        run_id="stage1-test",
        stage="stage1",
        status="running",
        started_at="2026-01-01T00:00:00+00:00",
        config={"data": {}, "model": {"preset": "tiny_kl_causal_444"}, "train": {"steps": 3}, "loss": {}},
        params={"file": "params.yaml", "sha256": SHA, "profile": "cpu", "overrides": ["train.lr=1e-3"]},
        seed=0,
        device={"accelerator": "cpu", "devices": 1},
        git={"commit": "0" * 40, "dirty": False},
        packages={"torch": "2.14.1"},
        total_steps=3,
    )
    base.update(changes)
    return RunRecord(**base)


def test_round_trip_through_a_run_folder(tmp_path: Path) -> None:
    m = _manifest(
        status="completed",
        steps_completed=3,
        ended_at="2026-01-01T00:01:00+00:00",
        wall_time_s=60.0,
        final_checkpoint="checkpoints/final",
        final_checkpoint_sha256=SHA,
        identity={"params_sha256": SHA, "code_sha256": SHA, "data_sha256": SHA, "parent_sha256": None},
        data_files={"outputs/data/clips/fps_3.parquet": SHA},
        resumed_at_steps=(2,),
    )
    path = write_run_record(tmp_path, m)
    assert path == tmp_path / "run.json"
    assert read_run_record(tmp_path) == m == read_run_record(path)
    assert json.loads(path.read_text())["resumed_at_steps"] == [2]
    assert not list(tmp_path.glob(".run.json.*"))  # the temporary file was renamed, not left behind


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stage": "stage3"}, "stage"),
        ({"status": "done"}, "status"),
        ({"seed": "0"}, "seed"),
        ({"steps_completed": 5}, "exceeds total_steps"),
        ({"started_at": "yesterday"}, "ISO-8601"),
        (
            {"identity": {"params_sha256": "xyz", "code_sha256": None, "data_sha256": None, "parent_sha256": None}},
            "sha256",
        ),
        ({"identity": {"params_sha256": SHA}}, "identity"),
        ({"git": {"commit": None}}, "git"),
        ({"config": {"data": {}}}, "lacks section"),
        ({"status": "completed"}, "final_checkpoint"),
        ({"status": "failed"}, "error"),
        ({"stage": "stage2"}, "parent_checkpoint"),
        ({"schema_version": 1}, "schema_version"),
    ],
)
def test_invalid_records_are_rejected_with_the_field(change: dict, message: str) -> None:
    with pytest.raises(RunRecordError, match=message):
        _manifest(**change)


def test_corrupt_or_incomplete_files_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(RunRecordError, match="no run manifest"):
        read_run_record(tmp_path)
    path = tmp_path / "run.json"
    path.write_text("{not json")
    with pytest.raises(RunRecordError, match="not valid JSON"):
        read_run_record(tmp_path)
    good = _manifest().to_dict()
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "seed"}))
    with pytest.raises(RunRecordError, match=r"missing field\(s\) \['seed'\]"):
        read_run_record(tmp_path)
    path.write_text(json.dumps({**good, "extra": 1}))
    with pytest.raises(RunRecordError, match="unknown field"):
        read_run_record(tmp_path)
    path.write_text(json.dumps({**good, "total_steps": -1}))
    with pytest.raises(RunRecordError, match=r"run\.json: field 'total_steps' must be >= 0"):
        read_run_record(tmp_path)
    for err in (RunRecordError("x"),):
        assert "\n" not in str(err)


def test_a_rewritten_dvc_lock_does_not_make_a_run_dirty(tmp_path: Path) -> None:
    """dvc repro rewrites dvc.lock between stages; stage 2 must not record its commit as dirty because of it."""

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "dvc.lock").write_text("stages: {}\n")
    (tmp_path / "train.py").write_text("lr = 1e-3\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_info(tmp_path)["dirty"] is False
    (tmp_path / "dvc.lock").write_text("stages: {stage1: {}}\n")
    assert git_info(tmp_path)["dirty"] is False
    (tmp_path / "train.py").write_text("lr = 2e-3\n")
    assert git_info(tmp_path)["dirty"] is True
    assert modified_tracked_files(" M dvc.lock\n M train.py\n") == ["train.py"]
    committed_outputs = " M outputs/eval/metrics.json\n M outputs/report.md\n M params.yaml\n"
    assert modified_tracked_files(committed_outputs) == ["params.yaml"]


def test_environment_records() -> None:
    info = git_info()
    assert set(info) == {"commit", "dirty"}
    assert info["commit"] is None or len(info["commit"]) == 40
    assert git_info("/") == {"commit": None, "dirty": None}
    versions = package_versions()
    assert {"python", "torch", "lightning"} <= set(versions)
