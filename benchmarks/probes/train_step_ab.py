"""The training step of two versions of vidtok side by side in one run (issue 17, item 4: "against the current
code in the same run").

    git worktree add --detach /tmp/before main        # the version to compare against
    python -m benchmarks.probes.train_step_ab --against /tmp/before --cases tiny_kl_causal_444 \
        tiny_fsq_causal_444:8,8,8,8,8,8

Each case is a preset, optionally with other FSQ levels (`preset:8,8,8,8,8,8` = 262,144 codes, the paper's size).
For every repeat, each version runs in its own fresh process (this module, importing vidtok from that root),
alternating: the generator step (TrainingModule.iteration, GAN off, as in a study trial) on one random 17x64x64
batch of 2 from the same initial weights, median over --steps after 2 warm-up steps. Also reported: the two
versions' loss and aux values after the last step (they must agree within fp32 rounding). One JSON line per case,
also appended to benchmarks/results/train_step_ab.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.harness import (
    ROOT,
    add_out_argument,
    argument_parser,
    cpu_name,
    emit,
    random_clip,
    run_fresh,
    timestamp,
    training_module,
)


def measure(root: str, case: str, steps: int, threads: int) -> dict:
    """One process: step times with the vidtok found at `root`."""
    # The one sys.path edit of the benchmarks, and the point of this probe: vidtok comes from the checkout under
    # test. benchmarks.harness imports no vidtok, so nothing of it is loaded from this checkout before this line.
    sys.path.insert(0, root)
    from vidtok.model.config import get_preset

    torch.set_num_threads(threads)
    preset, _, levels = case.partition(":")
    config = get_preset(preset)
    if levels:
        config = replace(config, fsq_levels=tuple(int(v) for v in levels.split(",")))
    module = training_module(config, "custom", "none")
    opts = module.configure_optimizers()
    x = random_clip(2, 17, 64)
    times, logs = [], {}
    for _ in range(2 + steps):
        t0 = time.perf_counter()
        logs = module.iteration(x, opts[0], None, lambda t: t.backward())
        times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times[2:]), "logs": logs}


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--against", help="root of the other vidtok checkout (a git worktree)")
    parser.add_argument("--cases", nargs="+", default=["tiny_kl_causal_444", "tiny_fsq_causal_444"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("ROOT", "CASE"), help=argparse.SUPPRESS)
    add_out_argument(parser, "train_step_ab")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], args.steps, args.threads)))
        return 0
    if not args.against:
        parser.error("--against ROOT is required: the other vidtok checkout to compare with")
    roots = {"this": str(ROOT), "against": str(Path(args.against).resolve())}
    for case in args.cases:
        runs: dict[str, list[dict]] = {name: [] for name in roots}
        for _ in range(args.repeats):
            for name, root in roots.items():
                worker = ["--worker", root, case, "--steps", str(args.steps), "--threads", str(args.threads)]
                runs[name].append(run_fresh(__spec__.name, worker))
        step = {name: statistics.median(r["step_s"] for r in rs) for name, rs in runs.items()}
        row = {
            "benchmark": "train_step_ab",
            "case": case,
            "this_root": roots["this"],
            "against_root": roots["against"],
            "this_step_s": round(step["this"], 4),
            "against_step_s": round(step["against"], 4),
            "speedup": round(step["against"] / step["this"], 3),
            "this_repeats": [round(r["step_s"], 4) for r in runs["this"]],
            "against_repeats": [round(r["step_s"], 4) for r in runs["against"]],
            "this_last_logs": runs["this"][0]["logs"],
            "against_last_logs": runs["against"][0]["logs"],
            "threads": args.threads,
            "cpu": cpu_name(),
            "time": timestamp(),
        }
        emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
