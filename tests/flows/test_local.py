"""flows/local.py's process handling without a Prefect server: pid files name a process by pid and start time.

.venv/bin/pytest tests/flows/test_local.py -q
"""

from __future__ import annotations

import subprocess

from flows import local


def test_down_never_signals_a_process_that_reused_the_pid(tmp_path) -> None:
    """A pid file left by a crash can name a pid that now belongs to another program: with another start time it
    is not ours, and `down` leaves it alone (and removes the stale file)."""
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (tmp_path / "server.pid").write_text(f"{bystander.pid} 1\n")  # start time 1: not this process
        (tmp_path / "serve.pid").write_text(f"{bystander.pid}\n")  # an old file without a start time
        stopped = local.down(home=tmp_path, grace=1, log=lambda _: None)
        assert stopped == [] and bystander.poll() is None  # still running, no signal sent
        assert not (tmp_path / "server.pid").exists() and not (tmp_path / "serve.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_down_stops_the_process_its_pid_file_names(tmp_path) -> None:
    ours = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a session leader, as `up` starts them
    try:
        (tmp_path / "server.pid").write_text(f"{ours.pid} {local.process_start_time(ours.pid)}\n")
        stopped = local.down(home=tmp_path, grace=5, log=lambda _: None)
        assert stopped == [f"server (pid {ours.pid})"]
        assert ours.wait(timeout=10) != 0  # ended by the signal
    finally:
        if ours.poll() is None:
            ours.kill()
