"""The Prefect flows under prefect_test_harness (one temporary API for the session): the pipeline flow and its
cache across runs, a sweep flow with its artifacts, and the deployments prefect.yaml and flows.serve declare.

    pytest tests/flows/test_flows.py -q
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.helpers import REPO, copy_root
from vidtok.studies.results import read_trials

pytestmark = pytest.mark.prefect

FLOW_NAMES = ["pipeline", "sweep-fps", "sweep-codebook", "sweep-staging", "ablations"]


def task_states(flow_run_id, timeout: float = 60.0) -> dict[str, str]:
    """Task run name -> state name, once every task run of the flow run is in a final state (or `timeout` is up).

    Prefect 3 records the states of task runs from client events, asynchronously: right after a flow returns, a
    task run can still read Pending under its default name (seen as 'train-208': Pending next to 'train-stage1':
    Cached), so reading once made the cache test flaky."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        if all(r.state is not None and r.state.is_final() for r in runs) or time.monotonic() > deadline:
            return {r.name: (r.state.name if r.state else "no state") for r in runs}
        time.sleep(0.5)


def _latest(client, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created)


def test_deployments_match_the_flows() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from flows import local
    from flows.serve import deployments

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in spec["deployments"]}
    assert list(declared) == FLOW_NAMES
    for name, d in declared.items():
        flow = load_flow_from_entrypoint(str(REPO / d["entrypoint"]))
        assert flow.name == name  # so `prefect deployment run NAME/NAME` resolves
        if name != "pipeline":
            params = set(flow.parameters.properties)
            assert {"n_trials", "profile", "seeds", "study_name", "storage", "root"} <= params
    assert [(d.flow_name, d.name) for d in deployments()] == [(n, n) for n in FLOW_NAMES]
    assert tuple(f"{n}/{n}" for n in FLOW_NAMES) == local.DEPLOYMENTS  # what `make prefect-up` waits for


def test_pipeline_flow_is_cached_on_its_identity_and_reruns_after_a_data_change(
    prefect_harness, smoke_root_template, tmp_path
) -> None:
    from flows.pipeline import pipeline

    root = copy_root(smoke_root_template, tmp_path / "root")
    args = {"profile": "smoke", "root": str(root), "vmaf": False, "eval_clips": 2, "split": "test"}
    state = pipeline(**args, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    out = root / "outputs" / "flow"
    record = json.loads((out / "eval" / "metrics.json").read_text())
    assert result["summary"]["psnr"] == record["summary"]["psnr"] > 0
    assert json.loads((out / "train/stage2/run.json").read_text())["status"] == "completed"
    assert "| metric | value | protocol |" in (out / "report.md").read_text()
    first = task_states(state.state_details.flow_run_id)
    assert first["train-stage1"] == "Completed" and first["resample-3fps"] == "Completed"
    report = _artifact_text("pipeline-report")
    assert "VidTok pipeline report" in report
    table = json.loads(_artifact_text("pipeline-metrics"))
    assert {row["metric"] for row in table} >= {"psnr", "ssim"}

    stamp = (out / "train/stage1/run.json").stat().st_mtime_ns
    again = pipeline(**args, return_state=True)
    assert again.is_completed() and again.result()["summary"] == result["summary"]
    states = task_states(again.state_details.flow_run_id)
    cached = {k: v for k, v in states.items() if not k.startswith("fetch")}
    assert set(cached.values()) == {"Cached"}, states  # manifest, resample, train, evaluate, report
    assert (out / "train/stage1/run.json").stat().st_mtime_ns == stamp  # stage 1 did not run again

    # Another video in the data folder: the data hash is an input of every task downstream, so nothing that
    # depends on the data may come from the cache, and training starts its run folders over.
    from vidtok.data.manifest import read_manifest
    from vidtok.data.video import read_frames, write_video

    first_run = json.loads((out / "train/stage1/run.json").read_text())
    # 10 s of other footage (the street upside down), a user's own video: the split puts it in train
    write_video(root / "data" / "bikes_flipped.mp4", read_frames(root / "data" / "bikes.mp4")[:, ::-1], 25)
    changed = pipeline(**args, return_state=True)
    assert changed.is_completed(), changed.message
    states = task_states(changed.state_details.flow_run_id)
    manifest = read_manifest(root / "outputs" / "data" / "manifest.parquet").set_index("path")
    assert manifest.loc["bikes_flipped.mp4", "split"] == "train"
    for name in ("manifest", "resample-3fps", "train-stage1", "train-stage2", "evaluate"):
        assert states[name] == "Completed", states
    rerun = json.loads((out / "train/stage1/run.json").read_text())
    assert rerun["run_id"] != first_run["run_id"]
    assert rerun["identity"]["data_sha256"] != first_run["identity"]["data_sha256"]


def _artifact_text(key: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        data = _latest(client, key).data
    return data if isinstance(data, str) else json.dumps(data)


def test_sweep_flow_rejects_bad_parameters_in_one_line(prefect_harness, tmp_path) -> None:
    from flows.sweeps import sweep_codebook, sweep_fps

    state = sweep_fps(n_trials=0, root=str(tmp_path), return_state=True)
    assert state.is_failed() and "n_trials must be an integer >= 1, got 0" in state.message
    state = sweep_fps(levels=["3 fps", "5 fps"], root=str(tmp_path), return_state=True)
    assert state.is_failed() and "study sweep-fps: no level '5 fps'; levels: 1 fps, 2 fps" in state.message
    state = sweep_codebook(levels=["FSQ 2^8"], quantizers=["vq"], root=str(tmp_path), return_state=True)
    assert state.is_failed() and "none of the levels ['FSQ 2^8'] uses the quantizers ['vq']" in state.message
    assert not (tmp_path / "experiments").exists()


@pytest.mark.slow  # clip sets at all six frame rates + two real smoke trials: about 170 s on 2 cores
def test_sweep_flow_runs_two_trials_and_publishes_the_summary(prefect_harness, smoke_root_template, tmp_path) -> None:
    from flows.sweeps import sweep_fps

    root = copy_root(smoke_root_template, tmp_path / "root")
    state = sweep_fps(n_trials=2, profile="smoke", seeds=[0, 1], root=str(root), eval_clips=2, return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert out["ran"] == [0, 1] and out["trials"]["COMPLETE"] == 2
    df = read_trials(root / "experiments" / "sweep-fps")
    assert list(df[df["state"] == "COMPLETE"]["level"]) == ["1 fps", "2 fps"]
    assert len(df) == 12  # 6 levels x 2 seeds: the rest queued for the next run
    states = task_states(state.state_details.flow_run_id)
    assert states["trial-0"] == "Completed" and states["trial-1"] == "Completed"
    summary = _artifact_text("sweep-fps-summary")
    assert "sweep-fps: psnr vs fps" in summary and "Rerun to continue" in summary
    rows = json.loads(_artifact_text("sweep-fps-levels"))
    assert [r["level"] for r in rows] == ["1 fps", "2 fps"] and sum(r["best"] for r in rows) == 1


def test_a_sweep_whose_trials_all_fail_ends_failed(prefect_harness, smoke_root_template, tmp_path) -> None:
    """Two trials that cannot train (a negative learning rate in the profile): the trials are FAIL in the study,
    and the flow run ends Failed naming them, instead of Completed with nothing learned."""
    from flows.sweeps import sweep_fps

    root = copy_root(smoke_root_template, tmp_path / "root")
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("\nloss:\n  disc_start: null", "\nloss:\n  disc_start: -5"))
    assert "disc_start: -5" in params.read_text()
    state = sweep_fps(n_trials=2, profile="smoke", seeds=[0], root=str(root), eval_clips=2, return_state=True)
    assert state.is_failed()
    assert "all 2 trial(s) of this run failed ([0, 1])" in state.message
    df = read_trials(root / "experiments" / "sweep-fps")
    assert list(df[df["trial"].isin([0, 1])]["state"]) == ["FAIL", "FAIL"]
