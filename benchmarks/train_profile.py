"""Where a training step's time goes on CPU (issue 17, item 4): torch.profiler on the generator step and on the
discriminator step, apart.

    python benchmarks/train_profile.py                                  # tiny_kl_causal_444, 17x64x64, batch 2
    python benchmarks/train_profile.py --preset tiny_fsq_causal_444 --disc 3d

The generator step is `TrainingModule.iteration` with the GAN off (forward, loss, backward, clipping, Adam), exactly
what a study trial runs; the discriminator step is `VidTokLoss.discriminator_loss` on a detached reconstruction,
its backward and its Adam step. Each is profiled over `--steps` calls after `--warmup`, on one random batch held in
memory (no data loading). Reported per step: wall seconds, the ATen operators with the most self CPU time (share
of the profiled total), and three groups that say what kind of time it is: convolutions (forward and backward),
layout and copy operators (copy_, contiguous, clone, cat, permute-made copies, padding), and everything else. One
JSON line, also appended to benchmarks/results/train_profile.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tokenizer_speed import emit  # noqa: E402

from vidtok import VidTok  # noqa: E402
from vidtok.train.flops import iteration_flops  # noqa: E402
from vidtok.train.losses import LossConfig, VidTokLoss  # noqa: E402
from vidtok.train.module import TrainingModule  # noqa: E402

CONVOLUTION = ("conv", "mkldnn_convolution")
LAYOUT = ("copy_", "contiguous", "clone", "cat", "pad", "replication_pad", "constant_pad", "to_copy", "_to_copy")


def kind(op: str) -> str:
    name = op.removeprefix("aten::").lower()
    if any(c in name for c in CONVOLUTION):
        return "convolution"
    if any(name == k or name.startswith(k) for k in LAYOUT):
        return "layout/copy"
    return "other"


def summarise(prof: profile, steps: int, count: int) -> dict:
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1
    groups: dict[str, float] = {}
    for e in events:
        groups[kind(e.key)] = groups.get(kind(e.key), 0.0) + e.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return {
        "groups": {k: round(v / total, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_operators": [
            {
                "op": e.key,
                "calls_per_step": round(e.count / steps, 1),
                "self_s_per_step": round(e.self_cpu_time_total / 1e6 / steps, 4),
                "share": round(e.self_cpu_time_total / total, 3),
            }
            for e in top
        ],
    }


def build(preset: str, disc: str) -> tuple[TrainingModule, list]:
    torch.manual_seed(0)
    loss = VidTokLoss(LossConfig(perceptual_weight=0, disc_type=disc, disc_start=0))
    module = TrainingModule(
        VidTok.from_preset(preset), loss, lr=1e-3, lr_disc=1e-3, betas=(0.9, 0.999), grad_clip=20.0, seed=0,
        freeze_encoder=False, ema_decay=None,
    )  # fmt: skip
    return module, module.configure_optimizers()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny_kl_causal_444")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--disc", choices=("2d", "3d"), default="2d", help="the discriminator profiled apart")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch_size, 3, args.frames, args.resolution, args.resolution) * 2 - 1

    generator, (opt_g, *_) = build(args.preset, "none")

    def generator_step() -> None:
        generator.iteration(x, opt_g, None, lambda t: t.backward())

    gan, (_, opt_d) = build(args.preset, args.disc)
    with torch.no_grad():
        recon, _ = gan.model(x)

    def discriminator_step() -> None:
        loss_d, _ = gan.loss.discriminator_loss(x, recon, step=0)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

    flops = iteration_flops(args.preset, args.batch_size, args.frames, args.resolution)
    row: dict = {
        "benchmark": "train_profile",
        "preset": args.preset,
        "clip": f"{args.frames}x{args.resolution}x{args.resolution}",
        "batch_size": args.batch_size,
        "threads": args.threads,
        "generator_gflop_per_step": round(flops / 1e9, 1),
    }
    for name, step in (("generator", generator_step), (f"discriminator_{args.disc}", discriminator_step)):
        for _ in range(args.warmup):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - start) / args.steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        row[name] = {"seconds_per_step": round(seconds, 3), **summarise(prof, args.steps, args.top)}
    row["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    emit(row, ROOT / "benchmarks" / "results" / "train_profile.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
