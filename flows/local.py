"""Start and stop the local Prefect server and the serve process (what `make prefect-up` / `prefect-down` run).

    python -m flows.local up [--port 4200] [--home .prefect]      # server on 127.0.0.1, then flows.serve
    python -m flows.local down [--home .prefect]
    python -m flows.local status

`up` starts `prefect server start --host 127.0.0.1` with PREFECT_HOME=<home> (SQLite database there) and
analytics off, waits until http://127.0.0.1:<port>/api/health answers, then starts `python -m flows.serve` with
PREFECT_API_URL pointing at it. Each process runs in its own session (process group), its pid goes to
<home>/server.pid and <home>/serve.pid and its output to <home>/server.log and <home>/serve.log. `down` stops
exactly those process groups (SIGTERM, then SIGKILL after a grace period) and removes the pid files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from vidtok._files import atomic_write

HOST = "127.0.0.1"
# What flows.serve registers (flow/deployment; tests/flows/test_flows.py keeps the two in step).
DEPLOYMENTS = ("pipeline/pipeline", "sweep-fps/sweep-fps", "sweep-codebook/sweep-codebook",
               "sweep-staging/sweep-staging", "ablations/ablations")  # fmt: skip


def api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def healthy(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url(port)}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def deployed(port: int, name: str = "sweep-fps/sweep-fps", since: datetime | None = None) -> bool:
    """Whether the server knows deployment `flow/deployment` (the serve process registers them on start), and with
    `since`, whether it was (re)registered at or after that time: the server's database keeps the deployments of
    an earlier serve process, with that process's parameters."""
    try:
        with urllib.request.urlopen(f"{api_url(port)}/deployments/name/{name}", timeout=2.0) as r:
            if r.status != 200:
                return False
            return since is None or datetime.fromisoformat(json.load(r)["updated"]) >= since
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return False


def process_start_time(pid: int) -> str | None:
    """When the process started (Linux: clock ticks since boot, /proc/PID/stat field 22), or None when there is no
    such process or no /proc. A pid file names a process by pid *and* start time: after a reboot or a crash the pid
    can belong to another program, which must never get our signal."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name; starttime is the 22nd overall


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid(home: Path, name: str) -> int | None:
    """The pid in <home>/<name>.pid when that process still runs and is the one `up` started (same start time)."""
    try:
        fields = (home / f"{name}.pid").read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _alive(pid):
        return None
    recorded = fields[1] if len(fields) > 1 else None
    current = process_start_time(pid)
    if current is not None and recorded != current:
        return None  # the pid was reused by another process (or the file predates start times): not ours
    return pid


def _environment(home: Path, port: int | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": HOST,
    }
    if port is not None:
        env["PREFECT_API_URL"] = api_url(port)
        env["PREFECT_SERVER_API_PORT"] = str(port)
    return env


def _start(home: Path, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    log = open(home / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child, closed here after the fork
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    finally:
        log.close()
    atomic_write(home / f"{name}.pid", f"{proc.pid} {process_start_time(proc.pid) or ''}".strip() + "\n")
    return proc.pid


def _prefect() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "prefect"]


def up(port: int = 4200, home: str | os.PathLike[str] = ".prefect", cwd: str | os.PathLike[str] = ".",
       timeout: float = 120.0, log=print) -> dict[str, int]:  # fmt: skip
    """Start the server (unless one of ours runs) and the serve process; returns their pids."""
    home, cwd = Path(home).resolve(), Path(cwd).resolve()
    home.mkdir(parents=True, exist_ok=True)
    server = _pid(home, "server")
    if server is None:
        if healthy(port):
            raise RuntimeError(f"port {port} already serves a Prefect API that is not ours; pass another --port")
        cmd = [*_prefect(), "server", "start", "--host", HOST, "--port", str(port)]
        server = _start(home, "server", cmd, _environment(home), cwd)
        log(f"prefect server starting (pid {server}, log {home / 'server.log'})")
    deadline = time.monotonic() + timeout
    while not healthy(port):
        if not _alive(server):
            raise RuntimeError(f"prefect server exited; see {home / 'server.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"prefect server did not answer on {api_url(port)} within {timeout:.0f} s")
        time.sleep(1)
    log(f"prefect server ready: {api_url(port)} (UI http://{HOST}:{port})")
    serving, since = _pid(home, "serve"), None
    if serving is None:
        since = datetime.now(UTC)
        serving = _start(home, "serve", [sys.executable, "-m", "flows.serve"], _environment(home, port), cwd)
        log(f"serving the deployments from {cwd} (pid {serving}, log {home / 'serve.log'})")
    # Wait until this serve process has registered every deployment: a `prefect deployment run` right after `up`
    # must find them with the parameters of the code being served (not those an earlier process left behind).
    deadline = time.monotonic() + timeout
    while not all(deployed(port, name, since) for name in DEPLOYMENTS):
        if not _alive(serving):
            raise RuntimeError(f"the serve process exited; see {home / 'serve.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the deployments were not registered within {timeout:.0f} s; see {home / 'serve.log'}")
        time.sleep(1)
    log(f"next: export PREFECT_API_URL={api_url(port)}")
    log("      prefect deployment run sweep-fps/sweep-fps --param n_trials=2 --param profile=cpu")
    return {"server": server, "serve": serving}


def _stop_group(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)  # the process group its session leader made: children included
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def down(home: str | os.PathLike[str] = ".prefect", grace: float = 15.0, log=print) -> list[str]:
    """Stop the serve process, then the server (by the pids `up` wrote); returns what was stopped."""
    home = Path(home).resolve()
    stopped = []
    for name in ("serve", "server"):
        pid = _pid(home, name)
        if pid is not None:
            _stop_group(pid, grace)
            stopped.append(f"{name} (pid {pid})")
        (home / f"{name}.pid").unlink(missing_ok=True)
    log(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop")
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.local", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PREFECT_PORT", "4200")))
    parser.add_argument("--home", default=".prefect", help="PREFECT_HOME of the server (default .prefect)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.port, args.home)
        elif args.command == "down":
            down(args.home)
        else:
            home = Path(args.home).resolve()
            for name in ("server", "serve"):
                pid = _pid(home, name)
                print(f"{name}: {'running, pid ' + str(pid) if pid else 'not running'}")
            print(f"api {api_url(args.port)}: {'healthy' if healthy(args.port) else 'not answering'}")
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
