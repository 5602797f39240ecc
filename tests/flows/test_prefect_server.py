"""End to end, as a user runs it: a real `prefect server start` on a free loopback port (temporary PREFECT_HOME),
the serve process of flows.serve against it (both started by flows.local, what `make prefect-up` runs), then
`prefect deployment run sweep-fps/sweep-fps ... --watch` from the command line; the trial must land in
experiments/sweep-fps/trials.parquet of the data root the serve process works in. Both processes are always
stopped.

    pytest tests/flows/test_prefect_server.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, accepts_connections, copy_root, free_port, non_loopback_ipv4
from vidtok.studies.results import read_trials

pytestmark = pytest.mark.prefect


# About 100 s on 2 cores (server start ~20 s, serve process, one real smoke trial in a flow-run subprocess): the
# one test of the documented path, so it runs in CI.
def test_deployment_run_against_a_local_server(smoke_root_template: Path, tmp_path: Path) -> None:
    from flows import local

    root = copy_root(smoke_root_template, tmp_path / "root")
    home, port = tmp_path / "prefect-home", free_port()
    logs: list[str] = []
    try:
        pids = local.up(port=port, home=home, cwd=root, timeout=120, log=logs.append)
        assert local.healthy(port) and set(pids) == {"server", "serve"}
        outside = non_loopback_ipv4()
        assert outside is not None, "no non-loopback address to check the bind against"
        assert accepts_connections("127.0.0.1", port) and not accepts_connections(outside, port)  # loopback only
        env = {**os.environ, "PREFECT_API_URL": local.api_url(port), "PREFECT_HOME": str(home)}
        prefect = Path(sys.executable).with_name("prefect")
        run = subprocess.run(
            [str(prefect), "deployment", "run", "sweep-fps/sweep-fps", "--param", "n_trials=1", "--param",
             "profile=smoke", "--param", "seeds=[0]", "--param", "eval_clips=2", "--watch",
             "--watch-timeout", "300"],
            env=env, cwd=root, capture_output=True, text=True, timeout=360,
        )  # fmt: skip
        serve_log = (home / "serve.log").read_text(errors="replace")
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:] + serve_log[-3000:]
        assert "Completed" in run.stdout + run.stderr
        df = read_trials(root / "experiments" / "sweep-fps")  # root="." is the serve process's folder
        done = df[df["state"] == "COMPLETE"]
        assert list(zip(done["level"], done["seed"])) == [("1 fps", 0)]
        assert (root / "experiments/sweep-fps" / done.iloc[0]["run_dir"] / "eval/metrics.json").is_file()
    finally:
        local.down(home=home, grace=10, log=logs.append)
    assert not local.healthy(port)
    assert not (home / "server.pid").exists() and not (home / "serve.pid").exists()


def test_prefect_up_and_down_are_make_targets() -> None:
    text = (REPO / "Makefile").read_text()
    assert "prefect-up:" in text and "-m flows.local up" in text and "-m flows.local down" in text
    phony = next(line for line in text.splitlines() if line.startswith(".PHONY"))
    assert "prefect-up" in phony and "prefect-down" in phony
