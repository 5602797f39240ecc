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
JSON line, also appended to benchmarks/results/train_profile.jsonl, with the minor page faults per step and the
allocator / OpenMP environment variables set (MALLOC_*, OMP_*, GOMP_*, KMP_*), so that their effect can be measured:

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 python benchmarks/train_profile.py --steps 8
    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_profile.py --steps 8

`--floor` replays every convolution of the generator step on its own, at the step's exact shapes, strides, padding
and memory formats (forward and backward, the input's gradient only where the step needs it), in the same process
as the step and the matmul ceiling: the time the step would take if everything but its convolutions were free, and
so the highest fraction of the ceiling the step could reach at this model on this machine.

`--sources aten::copy_ aten::add_` adds, per named operator, where its calls come from (the outermost profiled
event around each call, e.g. an autograd node or the optimizer step, and its direct parent), with calls and self
seconds per step.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tokenizer_speed import emit, matmul_gflops, median_seconds  # noqa: E402

from vidtok import VidTok  # noqa: E402
from vidtok.train.config import TrainConfig  # noqa: E402
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


def call_sites(prof: profile, ops: list[str], steps: int, count: int) -> dict[str, list[dict]]:
    """Per operator, where its calls come from: the outermost event around it and its direct parent.

    The outermost event is an autograd node (`...Backward0`: the call is part of backward), `Optimizer.step#Adam.step`
    or a forward operator; Python stacks would not do, backward runs in the autograd engine without them.
    """
    sites: dict[str, dict[str, list[float]]] = {op: {} for op in ops}
    for event in prof.events():
        if event.name not in sites:
            continue
        chain, parent = [], event.cpu_parent
        while parent is not None:
            chain.append(parent.name)
            parent = parent.cpu_parent
        where = " > ".join(dict.fromkeys([chain[-1], chain[0]])) if chain else "(top level)"
        calls_and_time = sites[event.name].setdefault(where, [0, 0.0])
        calls_and_time[0] += 1
        calls_and_time[1] += event.self_cpu_time_total
    return {
        op: [
            {"site": site, "calls_per_step": round(n / steps, 1), "self_s_per_step": round(t / 1e6 / steps, 4)}
            for site, (n, t) in sorted(found.items(), key=lambda kv: -kv[1][1])[:count]
        ]
        for op, found in sites.items()
    }


class ConvolutionCalls(TorchDispatchMode):
    """Records the oneDNN convolutions a forward pass makes: shapes, arguments, memory format, input gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 (torch's signature)
        if func is torch.ops.aten.mkldnn_convolution.default:
            x, weight, bias, *rest = args
            channels_last = x.is_contiguous(memory_format=torch.channels_last_3d) and x.shape[1] > 1
            signature = (tuple(x.shape), tuple(weight.shape), bias is not None, channels_last, x.requires_grad)
            self.calls[signature + tuple(tuple(r) if isinstance(r, list) else r for r in rest)] += 1
        return func(*args, **(kwargs or {}))


def convolution_floor(calls: Counter[tuple], repeats: int) -> dict:
    """Forward + backward of every recorded convolution on its own; seconds and FLOPs per step."""
    seconds = flops = 0.0
    for (x_shape, w_shape, has_bias, channels_last, input_grad, *rest), count in calls.items():
        fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        x = torch.randn(x_shape).contiguous(memory_format=fmt).requires_grad_(input_grad)
        weight = torch.randn(w_shape, requires_grad=True)
        bias = torch.randn(w_shape[0], requires_grad=True) if has_bias else None
        padding, stride, dilation, groups = (list(r) if isinstance(r, tuple) else r for r in rest)
        convolve = partial(torch.ops.aten.mkldnn_convolution, x, weight, bias, padding, stride, dilation, groups)
        y = convolve()
        grad = torch.randn(y.shape).contiguous(memory_format=fmt)
        seconds += count * median_seconds(lambda: convolve().backward(grad), repeats)  # noqa: B023 (called here)
        forward = 2 * y.numel() * w_shape[1] * torch.Size(w_shape[2:]).numel()
        flops += count * forward * (3 if input_grad else 2)  # backward: weight gradient, and input gradient if needed
    return {"calls": sum(calls.values()), "seconds": seconds, "gflop": flops / 1e9}


def build(preset: str, disc: str) -> tuple[TrainingModule, list]:
    torch.manual_seed(0)
    loss = VidTokLoss(LossConfig(perceptual_weight=0, disc_type=disc, disc_start=0))
    config = TrainConfig(lr=1e-3, lr_disc=1e-3, betas=(0.9, 0.999), grad_clip=20.0, seed=0, freeze_encoder=False)
    module = TrainingModule(VidTok.from_preset(preset), loss, config)
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
    parser.add_argument("--floor", action="store_true", help="time the generator step's convolutions on their own")
    parser.add_argument("--sources", nargs="*", default=[], help="ATen operators to trace to their call sites")
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
        # allocator and OpenMP settings change the speed, not the results: recorded so rows stay comparable
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "OMP_", "GOMP_", "KMP_"))},
    }
    for name, step in (("generator", generator_step), (f"discriminator_{args.disc}", discriminator_step)):
        for _ in range(args.warmup):
            step()
        faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - start) / args.steps
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // args.steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        row[name] = {
            "seconds_per_step": round(seconds, 3),
            "page_faults_per_step": faults,  # minor faults: freed memory handed back and re-zeroed by the kernel
            **summarise(prof, args.steps, args.top),
        }
        if args.sources:
            row[name]["call_sites"] = call_sites(prof, args.sources, args.steps, args.top)
    if args.floor:
        with ConvolutionCalls() as recorder:
            generator_step()
        ceiling = matmul_gflops(args.threads, n=2048, repeats=7)
        step_s = median_seconds(generator_step, args.steps)
        floor = convolution_floor(recorder.calls, args.steps)
        row["generator"]["convolution_floor"] = {
            "step_s": round(step_s, 3),
            "convolutions_alone_s": round(floor["seconds"], 3),
            "convolution_calls": floor["calls"],
            "convolution_gflop": round(floor["gflop"], 2),
            "convolution_gflop_per_s": round(floor["gflop"] / floor["seconds"], 1),
            "matmul_ceiling_gflop_per_s": round(ceiling, 1),
            "step_fraction_of_ceiling": round(flops / 1e9 / step_s / ceiling, 3),
            # everything but the convolutions free: the step would take the convolutions' time
            "best_possible_fraction": round(flops / 1e9 / floor["seconds"] / ceiling, 3),
            "best_possible_speedup": round(step_s / floor["seconds"], 2),
        }
    row["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    emit(row, ROOT / "benchmarks" / "results" / "train_profile.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
