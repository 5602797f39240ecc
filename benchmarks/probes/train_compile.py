"""Does torch.compile pay for the CPU training step? (issue 17, item 4)

    python benchmarks/train_compile.py                      # tiny_kl_causal_444, 17x64x64, batch 2, 2 threads

The generator step (forward, L1 + NLL loss, backward, clipping, Adam; GAN off, as in a study trial) from the same
initial weights, eager and with the encoder and decoder compiled in place (`module.compile()`, inductor's C++
backend), alternating over --repeats. Reports the median step time of each after --warmup steps, the first compiled
step (which holds the compile: cold on a fresh machine, from inductor's cache after that) and how far the two runs'
parameters are apart after the last step (KL posterior samples use eager's RNG in both: inductor's fallback_random).
One JSON line, also appended to benchmarks/results/train_compile.jsonl.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tokenizer_speed import emit  # noqa: E402

from vidtok import VidTok  # noqa: E402
from vidtok.train.losses import LossConfig, VidTokLoss  # noqa: E402
from vidtok.train.module import last_layer  # noqa: E402


def step_times(model: VidTok, x: torch.Tensor, steps: int) -> tuple[list[float], list[torch.Tensor]]:
    loss = VidTokLoss(LossConfig(perceptual_weight=0, disc_type="none"))
    params = [*model.parameters(), loss.logvar]
    opt = torch.optim.Adam(params, lr=1e-3)
    times = []
    for i in range(steps):
        torch.manual_seed(i)
        t0 = time.perf_counter()
        recon, encoded = model(x)
        total, _ = loss.generator_loss(x, recon, encoded.aux, i, last_layer(model))
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 20.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times, [p.detach() for p in params]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny_kl_causal_444")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="steps per repeat, warm-up included")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/train_compile.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inductor_config.fallback_random = True  # the same posterior samples as eager, so the weights can be compared
    torch.manual_seed(0)
    base = VidTok.from_preset(args.preset).train()
    x = torch.rand(args.batch_size, 3, args.frames, args.resolution, args.resolution) * 2 - 1
    eager, compiled, first, diffs = [], [], [], []
    for _ in range(args.repeats):
        times, ref = step_times(copy.deepcopy(base), x, args.steps)
        eager.append(statistics.median(times[args.warmup :]))
        model = copy.deepcopy(base)
        model.encoder.compile()
        model.decoder.compile()
        times, got = step_times(model, x, args.steps)
        compiled.append(statistics.median(times[args.warmup :]))
        first.append(times[0])
        diffs.append(max(float((a - b).abs().max()) for a, b in zip(ref, got)))
    row = {
        "benchmark": "train_compile",
        "preset": args.preset,
        "clip": f"{args.frames}x{args.resolution}x{args.resolution}",
        "batch_size": args.batch_size,
        "threads": args.threads,
        "eager_step_s": round(statistics.median(eager), 4),
        "compiled_step_s": round(statistics.median(compiled), 4),
        "speedup": round(statistics.median(eager) / statistics.median(compiled), 3),
        "first_compiled_step_s": [round(v, 1) for v in first],
        "max_param_diff_after_steps": max(diffs),
        "eager_repeats": [round(v, 4) for v in eager],
        "compiled_repeats": [round(v, 4) for v in compiled],
        "steps": args.steps,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    emit(row, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
