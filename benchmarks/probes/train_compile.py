"""Does torch.compile pay for the CPU training step? (issue 17, item 4)

    python -m benchmarks.probes.train_compile               # tiny_kl_causal_444, 17x64x64, batch 2, 2 threads

The generator step (forward, L1 + NLL loss, backward, clipping, Adam; GAN off, as in a study trial) from the same
initial weights, eager and with the encoder and decoder compiled in place (`module.compile()`, inductor's C++
backend), alternating over --repeats. Reports the median step time of each after --warmup steps, the first compiled
step (which holds the compile: cold on a fresh machine, from inductor's cache after that) and how far the two runs'
parameters are apart after the last step (KL posterior samples use eager's RNG in both: inductor's fallback_random).
One JSON line, also appended to benchmarks/results/train_compile.jsonl.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch._inductor.config as inductor_config

from benchmarks.harness import (
    add_out_argument,
    argument_parser,
    cpu_name,
    emit,
    loss_config,
    random_clip,
    timestamp,
)
from vidtok import VidTok
from vidtok.train.losses import VidTokLoss
from vidtok.train.module import last_layer


def step_times(model: VidTok, x: torch.Tensor, steps: int) -> tuple[list[float], list[torch.Tensor]]:
    loss = VidTokLoss(loss_config("none"))
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


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--preset", default="tiny_kl_causal_444")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="steps per repeat, warm-up included")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    add_out_argument(parser, "train_compile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    inductor_config.fallback_random = True  # the same posterior samples as eager, so the weights can be compared
    torch.manual_seed(0)
    base = VidTok.from_preset(args.preset).train()
    x = random_clip(args.batch_size, args.frames, args.resolution)
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
        "cpu": cpu_name(),
        "time": timestamp(),
    }
    emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
