"""Training steps per second on CPU: the real training loop on real clips against the bare step on in-memory tensors.

    python -m benchmarks.train_speed                                   # tiny presets, 17x64x64, batch 2, 2 threads
    python -m benchmarks.train_speed --presets tiny_kl_causal_444 --repeats 1 --steps 4

For each preset three things are timed, alternating so all see the same machine load:
- `bare`: `TrainingModule.iteration` (the generator step: forward, loss, backward, clipping, Adam; with `--disc` also
  its adversarial term and the discriminator step) on one random (B, 3, T, R, R) tensor already in memory: the
  compute alone. Its GAN-off iteration is the `generator` step of the arithmetic columns.
- `discriminator`: the discriminator step beside it (`--disc`, or the 2D PatchGAN of the reference when the GAN is
  off): its hinge + LeCAM loss on the clip and a detached reconstruction, backward, clipping and Adam, same tensor.
- `train`: `vidtok.train.run.train` on the videos in data/ (via the data layer, frame cache on unless
  --no-cache) with the same settings: per-step wall time from its metrics.csv (`step_time_s`: data loading,
  Lightning's loop, the iteration, logging and the progress bar; not the validation and checkpoint passes,
  which are reported apart as `fixed_s`, the run's time outside the timed steps).
steps/s is 1 / median step time over the measured steps of a repeat (after `--warmup` steps), then the median
over `--repeats`. overhead = 1 - train / bare steps per second; the target is <= 10%.

Arithmetic: FLOPs (a multiply-add is 2) counted with torch's FlopCounterMode on the meta device, so the convolutions
oneDNN runs on CPU are counted by shape like every other one (vidtok.train.flops for the generator, the same count
for the discriminator here). GFLOP/s = FLOPs per step x steps/s; fraction_of_ceiling divides that by the fp32 matmul
ceiling (benchmarks.harness.matmul_gflops, 2048^3: the faster of MKL and oneDNN) timed before every repeat in the same
process (issue 17 item 4: target >= 0.65 for the generator step).

Prints one JSON line per preset and appends them to benchmarks/results/train_speed.jsonl.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import (
    ROOT,
    add_out_argument,
    argument_parser,
    cpu_name,
    emit,
    loss_config,
    matmul_gflops,
    random_clip,
    timestamp,
    training_module,
)
from vidtok.data.config import DataConfig
from vidtok.model.config import ModelSpec, get_preset
from vidtok.train.config import Params, TrainConfig
from vidtok.train.flops import iteration_flops
from vidtok.train.losses import VidTokLoss
from vidtok.train.module import TrainingModule
from vidtok.train.run import TrainHooks, train

PRESETS = ("tiny_kl_causal_444", "tiny_fsq_causal_444", "tiny_kl_causal_488")


def _module(preset: str, disc: str) -> TrainingModule:
    return training_module(get_preset(preset), preset, disc)


def _clip(args: argparse.Namespace, frames: int) -> torch.Tensor:
    torch.manual_seed(1)
    return random_clip(args.batch_size, frames, args.resolution)


def _timed(step: Callable[[], object], args: argparse.Namespace) -> list[float]:
    times = []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times[args.warmup :]


def bare_step_times(preset: str, disc: str, args: argparse.Namespace, frames: int) -> list[float]:
    """Whole training iterations (the generator step, and with a GAN its adversarial term and the discriminator
    step) on one clip held in memory."""
    module = _module(preset, disc)
    opts = module.configure_optimizers()
    x = _clip(args, frames)
    return _timed(
        lambda: module.iteration(x, opts[0], opts[1] if len(opts) > 1 else None, lambda t: t.backward()), args
    )


def discriminator_step_times(preset: str, disc: str, args: argparse.Namespace, frames: int) -> list[float]:
    """Discriminator steps (loss on the clip and a detached reconstruction, backward, clipping, Adam) as in training."""
    module = _module(preset, disc)
    optimizer = module.configure_optimizers()[1]
    x = _clip(args, frames)
    with torch.no_grad():
        recon = module.model(x)[0]

    def step() -> None:
        loss, _ = module.loss.discriminator_loss(x, recon, step=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.loss.discriminator.parameters(), module.config.grad_clip)
        optimizer.step()

    return _timed(step, args)


def discriminator_flops(disc: str, batch: int, frames: int, resolution: int) -> int:
    """FLOPs of one discriminator forward + backward on a real and a reconstructed batch, counted by shape."""
    with torch.device("meta"):
        loss = VidTokLoss(loss_config(disc))
        x = torch.empty(batch, 3, frames, resolution, resolution)
        with FlopCounterMode(display=False) as counter:
            loss.discriminator_loss(x, x, step=0)[0].backward()
    return int(counter.get_total_flops())


def train_step_times(preset: str, args: argparse.Namespace, data: DataConfig) -> tuple[list[float], float]:
    cfg = TrainConfig(
        steps=args.warmup + args.steps,
        batch_size=args.batch_size,
        resolution=args.resolution,
        fps=args.fps,
        num_threads=args.threads,
        checkpoint_every=0,
        val_every=0,
        val_clips=1,
        accelerator="cpu",
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        params = Params(data, ModelSpec(preset), cfg, loss_config(args.disc))
        train(params, Path(tmp) / "run", hooks=TrainHooks(progress=False))
        total = time.perf_counter() - t0
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as f:
            times = [float(row["step_time_s"]) for row in csv.DictReader(f)]
    return times[args.warmup :], total - sum(times)


def arithmetic(step_flops: int, seconds: list[float], ceiling_gflop_per_s: float) -> dict:
    """Steps/s, GFLOP/s and the fraction of the matmul ceiling of a step, from its per-repeat median seconds."""
    per_s = step_flops / 1e9 / statistics.median(seconds)
    return {
        "steps_per_s": round(1 / statistics.median(seconds), 4),
        "gflop_per_step": round(step_flops / 1e9, 2),
        "gflop_per_s": round(per_s, 1),
        "fraction_of_ceiling": round(per_s / ceiling_gflop_per_s, 3),
        "repeats_s": [round(v, 4) for v in seconds],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate of the training clips")
    parser.add_argument(
        "--disc", choices=("none", "2d", "3d"), default="none",
        help="GAN on from step 0 in the real-data run, or none; the discriminator timed beside the generator is this "
        "one, or the 2D PatchGAN when none",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=5, help="measured steps per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cache", action="store_true", help="decode clips instead of reading the frame cache")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the real-data run")
    add_out_argument(parser, "train_speed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = DataConfig(
        data_dir=str(ROOT / "data"),
        manifest=str(ROOT / "outputs/bench/data/manifest.parquet"),
        clips_dir=str(ROOT / "outputs/bench/data/clips"),
        cache_dir=str(ROOT / "outputs/bench/data/cache"),
        cache_resolutions=() if args.no_cache else (args.resolution,),
        use_cache=not args.no_cache,
        num_workers=args.workers,
    )
    if not (ROOT / "data").is_dir():
        print("no data/: run `vidtok data fetch` first (or put videos there)", file=sys.stderr)
        return 1
    ceilings = []
    for preset in args.presets:
        frames = data.clip_frames if get_preset(preset).causal else data.clip_frames - 1
        flops = iteration_flops(preset, args.batch_size, frames, args.resolution)
        disc = args.disc if args.disc != "none" else "2d"
        disc_flops = discriminator_flops(disc, args.batch_size, frames, args.resolution)
        generator_s, discriminator_s, with_gan_s, real, fixed = [], [], [], [], []
        for _ in range(args.repeats):
            ceilings.append(matmul_gflops(args.threads, n=2048, repeats=7))  # the fp32 ceiling, same run
            generator_s.append(statistics.median(bare_step_times(preset, "none", args, frames)))
            if args.disc != "none":
                with_gan_s.append(statistics.median(bare_step_times(preset, args.disc, args, frames)))
            discriminator_s.append(statistics.median(discriminator_step_times(preset, disc, args, frames)))
            times, outside = train_step_times(preset, args, data)
            real.append(1 / statistics.median(times))
            fixed.append(outside)
        ceiling = statistics.median(ceilings)
        bare_rate = 1 / statistics.median(with_gan_s or generator_s)
        row = {
            "benchmark": "train_speed",
            "preset": preset,
            "clip": f"{frames}x{args.resolution}x{args.resolution}",
            "batch_size": args.batch_size,
            "disc": args.disc,
            "threads": args.threads,
            "data": "frame cache" if not args.no_cache else "decode",
            "workers": args.workers,
            "bare_steps_per_s": bare_rate,
            "train_steps_per_s": statistics.median(real),
            "overhead": 1 - statistics.median(real) / bare_rate,
            "matmul_ceiling_gflop_per_s": round(ceiling, 1),
            # the generator step (forward + backward arithmetic, vidtok.train.flops) and the discriminator step
            "generator": arithmetic(flops, generator_s, ceiling),
            f"discriminator_{disc}": arithmetic(disc_flops, discriminator_s, ceiling),
            "train_repeats": [round(v, 4) for v in real],
            "fixed_s": round(statistics.median(fixed), 2),
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
