"""The training step of two versions of vidtok side by side in one run (issue 17, item 4: "against the current
code in the same run").

    git worktree add --detach /tmp/before main        # the version to compare against
    python benchmarks/train_step_ab.py --against /tmp/before --cases tiny_kl_causal_444 tiny_fsq_causal_444:8,8,8,8,8,8

Each case is a preset, optionally with other FSQ levels (`preset:8,8,8,8,8,8` = 262,144 codes, the paper's size).
For every repeat, each version runs in its own fresh process (the same script, importing vidtok from its root),
alternating: the generator step (TrainingModule.iteration, GAN off, as in a study trial) on one random 17x64x64
batch of 2 from the same initial weights, median over --steps after 2 warm-up steps. Also reported: the two
versions' loss and aux values after the last step (they must agree within fp32 rounding). One JSON line per case,
also appended to benchmarks/results/train_step_ab.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(root: str, case: str, steps: int, threads: int) -> dict:
    """One process: step times with the vidtok found at `root`."""
    import torch

    sys.path.insert(0, root)
    from dataclasses import replace

    from vidtok import VidTok
    from vidtok.model.config import get_preset
    from vidtok.train.config import TrainConfig
    from vidtok.train.losses import LossConfig, VidTokLoss
    from vidtok.train.module import TrainingModule

    torch.set_num_threads(threads)
    preset, _, levels = case.partition(":")
    config = get_preset(preset)
    if levels:
        config = replace(config, fsq_levels=tuple(int(v) for v in levels.split(",")))
    torch.manual_seed(0)
    module = TrainingModule(
        VidTok(config),
        VidTokLoss(LossConfig(perceptual_weight=0, disc_type="none")),
        TrainConfig(lr=1e-3, lr_disc=1e-3, betas=(0.9, 0.999), grad_clip=20.0, seed=0, freeze_encoder=False),
    )
    opts = module.configure_optimizers()
    x = torch.rand(2, 3, 17, 64, 64) * 2 - 1
    times, logs = [], {}
    for _ in range(2 + steps):
        t0 = time.perf_counter()
        logs = module.iteration(x, opts[0], None, lambda t: t.backward())
        times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times[2:]), "logs": logs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="root of the other vidtok checkout (a git worktree)")
    parser.add_argument("--cases", nargs="+", default=["tiny_kl_causal_444", "tiny_fsq_causal_444"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("ROOT", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/train_step_ab.jsonl"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], args.steps, args.threads)))
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tokenizer_speed import emit  # its imports are vidtok's from ROOT: only in the parent process

    if not args.against:
        parser.error("--against ROOT is required: the other vidtok checkout to compare with")
    roots = {"this": str(ROOT), "against": str(Path(args.against).resolve())}
    for case in args.cases:
        runs: dict[str, list[dict]] = {name: [] for name in roots}
        for _ in range(args.repeats):
            for name, root in roots.items():
                cmd = [sys.executable, __file__, "--worker", root, case, "--steps", str(args.steps)]
                cmd += ["--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[name].append(json.loads(out.strip().splitlines()[-1]))
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
            "cpu": platform.processor() or platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        emit(row, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
