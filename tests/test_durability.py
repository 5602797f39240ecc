"""A writer killed mid-write leaves nothing a reader sees, and the next start cleans up after it.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_durability.py -q

A real subprocess streams a video through `VideoWriter` into an `outputs/` folder and is killed with SIGKILL (no
cleanup code runs); what it leaves is checked against the readers: the target name, the data folder scan, glob
patterns and DVC's .dvcignore (the repository's own, by `dvc check-ignore` in a scratch DVC project).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO
from vidtok._files import atomic_write, remove_stale_parts
from vidtok.data.config import list_files
from vidtok.data.video import VideoWriter, probe
from vidtok.pipeline import remove_killed_writes

WRITER = """
import sys, time
import numpy as np
from vidtok.data.video import VideoWriter

with VideoWriter(sys.argv[1], 25, 64, 48) as writer:
    for i in range(100_000):
        writer.write(np.full((48, 64, 3), i % 256, np.uint8))
        if i == 40:
            print("writing", flush=True)
        time.sleep(0.005)
"""


def _start_writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    return proc


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".part"))


def test_a_killed_video_write_leaves_nothing_visible_and_the_next_start_cleans_it(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs" / "eval" / "videos"
    target = outputs / "rec.mp4"
    proc = _start_writer(target)
    try:
        deadline = time.monotonic() + 30
        while not (_parts(outputs) and _parts(outputs)[0].stat().st_size > 0):  # bytes are going to disk
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.05)
        # While it runs, its temporary file is a live writer's: a sweep keeps it.
        assert remove_stale_parts(outputs) == [] and len(_parts(outputs)) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    (part,) = _parts(outputs)
    assert part.name.startswith(".rec.mp4.") and part.stat().st_size > 0  # the half-written video is there ...
    assert not target.exists()  # ... but not under its name
    assert list_files(str(tmp_path)) == []  # the data folder scan (manifest) skips hidden files
    assert glob.glob(str(tmp_path / "**" / "*"), recursive=True) == [str(tmp_path / "outputs"),
                                                                       str(tmp_path / "outputs" / "eval"),
                                                                       str(outputs)]  # fmt: skip
    assert glob.glob(str(outputs / "*.mp4")) == []

    # The next start of a write into that folder removes what the killed process left, and publishes its own.
    with VideoWriter(target, 25, 64, 48) as writer:
        (live,) = _parts(outputs)  # only the new writer's own file is left, tagged with this process
        assert live != part and f".{os.getpid()}-" in live.name
        writer.write(np.zeros((3, 48, 64, 3), np.uint8))
    assert sorted(p.name for p in outputs.iterdir()) == ["rec.mp4"]
    assert probe(target).num_frames == 3


def test_the_next_atomic_write_in_a_folder_cleans_a_killed_writers_part(tmp_path: Path) -> None:
    proc = _start_writer(tmp_path / "video.mp4")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(_parts(tmp_path)) == 1
    atomic_write(tmp_path / "metrics.json", "{}\n")  # any atomic write into the folder, e.g. a run record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_remove_stale_parts_keeps_other_files_and_other_machines(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    with VideoWriter(tmp_path / "a.mp4", 25, 64, 48) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
        (live,) = _parts(tmp_path)
        host = live.name.rsplit("-", 1)[1].removesuffix(".part")  # this machine's tag
    stale = tmp_path / "sub" / f".b.mp4.x1y2.{pid}-{host}.part"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    foreign = tmp_path / f".c.mp4.x1y2.{pid}-000000.part"  # another machine's (a shared folder): not ours to judge
    foreign.write_bytes(b"half")
    kept = [tmp_path / "notes.part", tmp_path / ".hidden"]
    for path in kept:
        path.write_text("a user's file")
    assert remove_stale_parts(tmp_path) == []  # not recursive: sub/ untouched
    assert remove_stale_parts(tmp_path, recursive=True) == [stale]
    assert foreign.exists() and all(path.exists() for path in kept) and (tmp_path / "a.mp4").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="dvc check-ignore needs git for its scratch project")
def test_dvc_ignores_the_temporary_names(tmp_path: Path) -> None:
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.is_file():
        pytest.skip("dvc is not installed in this environment")
    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(dvc), "init", "-q"], cwd=tmp_path, check=True, env=env)
    names = ["outputs/eval/videos/.rec.mp4.k2j3.1234-ab12cd.part", "data/.clip.mp4.k2j3.99-ab12cd.part",
             "outputs/train/.step_100.k2j3.77-ab12cd.part/model.safetensors"]  # fmt: skip
    for name in names:
        check = subprocess.run([str(dvc), "check-ignore", "-q", name], cwd=tmp_path, env=env)
        assert check.returncode == 0, f"{name} is not ignored by .dvcignore"
    check = subprocess.run([str(dvc), "check-ignore", "-q", "outputs/eval/videos/rec.mp4"], cwd=tmp_path, env=env)
    assert check.returncode == 1  # the published file is not


def test_the_main_job_sweeps_killed_writes_from_the_whole_workspace(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with VideoWriter(tmp_path / "a.mp4", 25, 64, 48) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
        host = _parts(tmp_path)[0].name.rsplit("-", 1)[1].removesuffix(".part")
    tag = f"{int(dead.stdout)}-{host}.part"
    stale = [
        tmp_path / "outputs" / "train" / f".last.ckpt.ab12.{tag}",
        tmp_path / "experiments" / "a" / f".t.cd34.{tag}",
    ]
    for path in stale:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half")
    user_file = tmp_path / "data" / "clip.mp4"
    user_file.parent.mkdir()
    user_file.write_bytes(b"footage")
    assert sorted(remove_killed_writes(tmp_path)) == sorted(stale)
    assert not any(path.exists() for path in stale) and user_file.exists()
