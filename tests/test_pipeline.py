"""The DVC pipeline end to end, in a throw-away clone of the repository with the `smoke` profile.

    pytest tests/test_pipeline.py -q

One `dvc repro` (module fixture) builds everything from the real sample videos; the tests then check what a
reviewer relies on: an untouched pipeline reruns nothing, the audit passes (with --rerun) and names each kind of
tampering, and `dvc exp run -S train.lr=...` reruns training and evaluation but not the data stages.
The tests share the clone and run in file order; each tamper test restores what it changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO as ROOT
from vidtok.audit import audit
from vidtok.data.manifest import read_manifest

VIDTOK = str(Path(sys.executable).parent / "vidtok")
DVC = [sys.executable, "-m", "dvc"]
COPY = ("dvc.yaml", "params.yaml", "data.dvc", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore")
# What a `dvc repro` changes in git: the lock file and the small `cache: false` outputs (metrics, report), which are
# committed so that `dvc metrics show` and the dashboard work in a fresh clone.
PIPELINE_RECORDS = ("dvc.lock", "outputs/eval/metrics.json", "outputs/report.md")

pytestmark = pytest.mark.timeout(900)


def _env(code: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    if code is not None:  # the stages run the clone's copy of the library, as they run the repository's own
        env["PYTHONPATH"] = str(code)
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `vidtok` for the stages
    return env


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    clone = cwd if (cwd / "vidtok" / "__init__.py").is_file() and cwd != ROOT else None
    proc = subprocess.run(cmd, cwd=cwd, env=_env(clone), capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A git + DVC clone of this repository's pipeline on the smoke profile, after one `dvc repro`."""
    root = tmp_path_factory.mktemp("pipeline")
    for name in COPY:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    # The stages declare the library's source folders as deps: the clone carries them, and its stages run them.
    shutil.copytree(ROOT / "vidtok", root / "vidtok", ignore=shutil.ignore_patterns("__pycache__"))
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("\nprofile: cpu\n", "\nprofile: smoke\n"))
    # The four samples alone: the small-corpus split rule gives them a test split (vidtok.data.manifest.split_groups)
    assert "vidtok stage evaluate --split test" in (root / "dvc.yaml").read_text()
    assert "\nprofile: smoke\n" in params.read_text()
    _run([VIDTOK, "data", "samples"], root)
    _run(["git", "init", "-q"], root)
    _run([*DVC, "add", "-q", "data"], root)  # the clone's data is the four samples, not the whole corpus
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "pipeline clone"], root)
    _run([*DVC, "repro"], root)
    _run(["git", "add", *PIPELINE_RECORDS], root)
    _run(["git", "commit", "-qm", "dvc.lock and the committed metrics"], root)
    yield root


def test_repro_builds_every_stage_and_a_second_repro_does_nothing(repo: Path) -> None:
    record = json.loads((repo / "outputs/eval/metrics.json").read_text())
    assert record["summary"]["num_clips"] > 0 and record["summary"]["psnr"] > 0
    assert record["data"]["split"] == "test" and record["data"]["num_videos"] >= 1
    assert (repo / "outputs/report.md").read_text().startswith("#")
    for stage in ("stage1", "stage2"):
        assert json.loads((repo / f"outputs/train/{stage}/run.json").read_text())["status"] == "completed"
    lock = (repo / "dvc.lock").read_text()
    for stage in ("manifest", "resample@3", "train-stage1", "train-stage2", "evaluate", "report"):
        assert f"\n  {stage}:\n" in lock
    again = _run([*DVC, "repro"], repo)
    assert "Running stage" not in again.stdout, again.stdout
    assert json.loads(_run([*DVC, "status", "--json"], repo).stdout) == {}


def test_audit_passes_with_rerun(repo: Path) -> None:
    result = audit(repo, rerun=True)
    failed = [c for c in result.checks if c.status == "fail"]
    assert result.passed and not failed, failed
    names = {c.name for c in result.checks if c.status == "pass"}
    assert {"dvc-status", "data", "git", "metrics", "rerun", "checkpoint:stage2"} <= names
    assert json.loads((repo / "outputs/audit/audit.json").read_text())["passed"] is True


def _flip_byte(path: Path, offset: int) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :])
    return data


@pytest.mark.parametrize(
    ("what", "relative", "expect"),
    [
        ("raw video byte", "data/bikes.mp4", {"data": "bikes.mp4", "dvc-status": "data"}),
        ("checkpoint byte", "outputs/train/stage2/checkpoints/final/model.safetensors", {"checkpoint:stage2": ""}),
        ("metrics file", "outputs/eval/metrics.json", {"metrics": "metrics.json"}),
        ("param", "params.yaml", {"dvc-status": "train"}),
    ],
)
def test_audit_names_each_tampering(repo: Path, what: str, relative: str, expect: dict[str, str]) -> None:
    path = repo / relative
    original = path.read_bytes()
    try:
        if what == "param":
            path.write_text(path.read_text().replace("\n  lr: null\n", "\n  lr: 0.002\n"))
            assert path.read_bytes() != original
        elif what == "metrics file":
            record = json.loads(original)
            record["summary"]["psnr"] += 1.0
            path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        else:
            _flip_byte(path, len(original) // 2)
        result = audit(repo, out_dir=repo / "outputs" / "audit-tampered")
        assert not result.passed
        failed = {c.name: c.detail for c in result.checks if c.status == "fail"}
        for name, fragment in expect.items():
            assert name in failed, f"{what}: expected a failing {name!r} check, got {failed}"
            assert fragment in failed[name], f"{what}: {name} detail {failed[name]!r} does not name {fragment!r}"
    finally:
        path.write_bytes(original)
    assert audit(repo, out_dir=repo / "outputs" / "audit-restored").passed  # restoring the bytes restores the pass


def test_exp_run_with_a_train_param_reruns_training_not_data(repo: Path) -> None:
    proc = _run([*DVC, "exp", "run", "-S", "train.lr=0.002"], repo)
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage '")}
    assert {"train-stage1", "train-stage2", "evaluate", "report"} <= ran, proc.stdout
    assert not {s for s in ran if s == "manifest" or s.startswith("resample")}, ran
    assert json.loads((repo / "outputs/train/stage1/run.json").read_text())["config"]["train"]["lr"] == 0.002
    shown = json.loads(_run([*DVC, "exp", "show", "--json"], repo).stdout)
    assert "outputs/eval/metrics.json" in json.dumps(shown)


def test_dvc_yaml_deps_are_the_library_code_a_run_records() -> None:
    """The code identity a run records (vidtok.runs.CODE_PATHS) and the code DVC watches are the same folders."""
    import yaml

    from vidtok.runs import CODE_PATHS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, kind in (("train-stage1", "train"), ("train-stage2", "train"), ("evaluate", "evaluate")):
        code = {d for d in stages[stage]["deps"] if d.startswith("vidtok")}
        assert code == set(CODE_PATHS[kind]), (stage, sorted(code ^ set(CODE_PATHS[kind])))


def _stage_runs(repo: Path) -> dict[str, dict]:
    return {s: json.loads((repo / f"outputs/train/{s}/run.json").read_text()) for s in ("stage1", "stage2")}


def test_an_added_video_retrains_with_other_weights(repo: Path) -> None:
    """A new video changes the clips: `dvc repro` reruns training, and training starts over instead of
    returning the old weights (the hole run identity closes)."""
    from vidtok.data.video import read_frames, write_video

    before = _stage_runs(repo)
    weights = repo / "outputs/train/stage1/checkpoints/final/model.safetensors"
    old_weights = weights.read_bytes()
    frames = read_frames(repo / "data" / "bikes.mp4")[:, :, ::-1]  # other footage: the street mirrored
    write_video(repo / "data" / "bikes_flipped.mp4", frames, 25)
    _run([*DVC, "add", "data"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "data: a flipped copy of bikes (other footage)"], repo)
    proc = _run([*DVC, "repro"], repo)
    manifest = read_manifest(repo / "outputs" / "data" / "manifest.parquet").set_index("path")
    # The small-corpus split (vidtok.data.manifest.split_groups) puts it in val: val clips are part of a run's data
    # identity as much as train clips, so both stages start over.
    assert manifest.loc["bikes_flipped.mp4", "split"] == "val"
    assert "Running stage 'train-stage1'" in proc.stdout, proc.stdout[-2000:]
    after = _stage_runs(repo)
    for stage in ("stage1", "stage2"):
        assert after[stage]["run_id"] != before[stage]["run_id"], stage
        assert after[stage]["identity"]["data_sha256"] != before[stage]["identity"]["data_sha256"], stage
    assert after["stage2"]["identity"]["parent_sha256"] == after["stage1"]["final_checkpoint_sha256"]
    assert weights.read_bytes() != old_weights
    _run(["git", "add", *PIPELINE_RECORDS], repo)
    _run(["git", "commit", "-qm", "dvc.lock and the committed metrics"], repo)
    result = audit(repo, out_dir=repo / "outputs" / "audit-added")
    assert result.passed, [c for c in result.checks if c.status == "fail"]


def test_an_edited_library_source_retrains(repo: Path) -> None:
    before = _stage_runs(repo)
    source = repo / "vidtok" / "model" / "vidtok.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# an edit: another code identity\n")
        proc = _run([*DVC, "repro"], repo)
        assert "Running stage 'train-stage1'" in proc.stdout, proc.stdout[-2000:]
        after = _stage_runs(repo)
        for stage in ("stage1", "stage2"):
            assert after[stage]["run_id"] != before[stage]["run_id"], stage
            assert after[stage]["identity"]["code_sha256"] != before[stage]["identity"]["code_sha256"], stage
    finally:
        source.write_text(original)
        _run([*DVC, "repro"], repo)
        _run(["git", "add", *PIPELINE_RECORDS], repo)  # the rerun's records, as a user commits them
        _run(["git", "commit", "-q", "--allow-empty", "-m", "dvc.lock and metrics after the code edit"], repo)


def test_audit_command_exit_codes_and_a_stale_run(repo: Path) -> None:
    """0 when every check passes, 1 when one fails (here: library code edited after the runs: both runs are stale,
    named with the changed input), 2 when there is nothing to audit."""
    ok = _run([VIDTOK, "audit"], repo, check=False)
    assert ok.returncode == 0, ok.stdout[-3000:]
    source = repo / "vidtok" / "train" / "losses.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# edited after training\n")
        stale = _run([VIDTOK, "audit"], repo, check=False)
        assert stale.returncode == 1, stale.stdout[-3000:]
        lines = [line for line in stale.stdout.splitlines() if line.startswith("identity:")]
        assert len(lines) == 2 and all("FAIL" in line and "is stale: code changed" in line for line in lines), lines
    finally:
        source.write_text(original)
    missing = _run([VIDTOK, "audit", str(repo / "no-such-folder")], repo, check=False)
    assert missing.returncode == 2 and "cannot run" in missing.stderr and missing.stderr.count("\n") == 1
