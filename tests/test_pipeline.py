"""The DVC pipeline end to end, in a throw-away clone of the repository with the `smoke` profile.

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

from vidtok.audit import audit

ROOT = Path(__file__).resolve().parents[1]
VIDTOK = str(Path(sys.executable).parent / "vidtok")
DVC = [sys.executable, "-m", "dvc"]
COPY = ("dvc.yaml", "params.yaml", "data.dvc", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore")

pytestmark = pytest.mark.timeout(900)


def _env() -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `vidtok` for the stages
    return env


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
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
    # The stages declare the library's source files as deps: the clone carries them (the code that runs is the
    # installed package, the same files).
    shutil.copytree(ROOT / "vidtok", root / "vidtok", ignore=shutil.ignore_patterns("__pycache__"))
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("\nprofile: cpu\n", "\nprofile: smoke\n"))
    assert "\nprofile: smoke\n" in params.read_text()
    _run([VIDTOK, "data", "samples"], root)
    _run(["git", "init", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "pipeline clone"], root)
    _run([*DVC, "repro"], root)
    _run(["git", "add", "dvc.lock"], root)
    _run(["git", "commit", "-qm", "dvc.lock"], root)
    yield root


def test_repro_builds_every_stage_and_a_second_repro_does_nothing(repo: Path) -> None:
    record = json.loads((repo / "outputs/eval/metrics.json").read_text())
    assert record["summary"]["num_clips"] > 0 and record["summary"]["psnr"] > 0
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
