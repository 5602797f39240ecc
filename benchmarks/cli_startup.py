"""How long `vidtok` takes to answer before any work: help and a flag error, this checkout beside another one.

    git worktree add --detach /tmp/before c4373a2       # the version to compare against (cli.py importing everything)
    python benchmarks/cli_startup.py --against /tmp/before

Each case runs `python -m vidtok.cli ARGS` in a fresh interpreter with the checkout first on PYTHONPATH, the two
checkouts alternating so both see the same machine load; reported is the median wall time of --repeats runs.
Prints one JSON line per case and appends them to benchmarks/results/cli_startup.jsonl.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from tokenizer_speed import emit  # noqa: E402

CASES = {"help": ["--help"], "data help": ["data"], "flag error": ["encode", "in.mp4"]}


def startup_seconds(root: str, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": root}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidtok.cli", *argv], env=env, cwd=root, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="root of the other vidtok checkout (a git worktree)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    roots = {"this": str(ROOT), "against": str(Path(args.against).resolve())}
    for case, argv in CASES.items():
        times: dict[str, list[float]] = {name: [] for name in roots}
        for _ in range(args.repeats):
            for name, root in roots.items():
                times[name].append(startup_seconds(root, argv))
        this, against = (statistics.median(times[name]) for name in roots)
        row = {
            "benchmark": "cli_startup",
            "case": case,
            "argv": argv,
            "this_s": round(this, 3),
            "against_s": round(against, 3),
            "against_root": roots["against"],
            "speedup": round(against / this, 1),
            "repeats": args.repeats,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        emit(row, ROOT / "benchmarks" / "results" / "cli_startup.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
