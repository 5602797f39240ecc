"""How long `vidtok` takes to answer before any work: help and a flag error, and optionally against another checkout.

    python -m benchmarks.cli_startup                              # this checkout alone
    git worktree add --detach /tmp/before c4373a2                 # the version to compare against (cli.py importing
    python -m benchmarks.cli_startup --against /tmp/before        # everything), then both side by side

Each case runs `python -m vidtok.cli ARGS` in a fresh interpreter with the checkout first on PYTHONPATH; with
--against the two checkouts alternate so both see the same machine load. Reported is the median wall time of
--repeats runs. Prints one JSON line per case and appends them to benchmarks/results/cli_startup.jsonl.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import ROOT, add_out_argument, argument_parser, emit, timestamp

CASES = {"help": ["--help"], "data help": ["data"], "flag error": ["encode", "in.mp4"]}


def startup_seconds(root: str, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": root}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidtok.cli", *argv], env=env, cwd=root, capture_output=True, check=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--against", help="root of another vidtok checkout (a git worktree) to time beside this one")
    parser.add_argument("--repeats", type=int, default=5)
    add_out_argument(parser, "cli_startup")
    args = parser.parse_args(argv)
    roots = {"this": str(ROOT)}
    if args.against:
        roots["against"] = str(Path(args.against).resolve())
    for case, words in CASES.items():
        times: dict[str, list[float]] = {name: [] for name in roots}
        for _ in range(args.repeats):
            for name, root in roots.items():
                times[name].append(startup_seconds(root, words))
        median = {name: statistics.median(t) for name, t in times.items()}
        row = {"benchmark": "cli_startup", "case": case, "argv": words, "this_s": round(median["this"], 3)}
        if args.against:
            row |= {
                "against_s": round(median["against"], 3),
                "against_root": roots["against"],
                "speedup": round(median["against"] / median["this"], 1),
            }
        row |= {"repeats": args.repeats, "time": timestamp()}
        emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
