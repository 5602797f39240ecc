"""Training steps per second on CPU: the real training loop on real clips against the bare step on in-memory tensors.

    python benchmarks/train_speed.py                                   # tiny presets, 17x64x64, batch 2, 2 threads
    python benchmarks/train_speed.py --presets tiny_kl_causal_444 --repeats 1 --steps 4

For each preset two things are timed, alternating so both see the same machine load:
- `bare`: `TrainingModule.iteration` (generator step, plus the discriminator step when the GAN is on) with plain
  Adam optimizers on one random (B, 3, T, R, R) tensor already in memory: the compute alone.
- `train`: `vidtok.train.run.train` on the sample videos (data/, via the data layer, frame cache on unless
  --no-cache) with the same settings: per-step wall time from its metrics.csv (`step_time_s`: data loading,
  Lightning's loop, the iteration, logging and the progress bar; not the validation and checkpoint passes,
  which are reported apart as `fixed_s`, the run's time outside the timed steps).
steps/s is 1 / median step time over the measured steps of a repeat (after `--warmup` steps), then the median
over `--repeats`. overhead = 1 - train / bare steps per second; the target is <= 10%.

Prints one JSON line per preset and appends them to benchmarks/results/train_speed.jsonl.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tokenizer_speed import matmul_gflops  # noqa: E402

from vidtok import VidTok  # noqa: E402
from vidtok.data.config import DataConfig  # noqa: E402
from vidtok.model.config import ModelSpec, get_preset  # noqa: E402
from vidtok.train.config import TrainConfig  # noqa: E402
from vidtok.train.flops import iteration_flops  # noqa: E402
from vidtok.train.losses import LossConfig, VidTokLoss  # noqa: E402
from vidtok.train.module import TrainingModule  # noqa: E402
from vidtok.train.run import train  # noqa: E402

PRESETS = ("tiny_kl_causal_444", "tiny_fsq_causal_444", "tiny_kl_causal_488")


def _loss(disc: str) -> LossConfig:
    return LossConfig(perceptual_weight=0, disc_type=disc, disc_start=0)


def bare_step_times(preset: str, args: argparse.Namespace, frames: int) -> list[float]:
    torch.manual_seed(0)
    model = VidTok.from_preset(preset)
    loss = VidTokLoss(_loss(args.disc))
    module = TrainingModule(
        model,
        loss,
        lr=1e-3,
        lr_disc=1e-3,
        betas=(0.9, 0.999),
        grad_clip=20.0,
        seed=0,
        freeze_encoder=False,
        ema_decay=None,
    )
    opts = module.configure_optimizers()
    x = torch.rand(args.batch_size, 3, frames, args.resolution, args.resolution) * 2 - 1
    times = []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        module.iteration(x, opts[0], opts[1] if len(opts) > 1 else None, lambda t: t.backward())
        times.append(time.perf_counter() - t0)
    return times[args.warmup :]


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
        train(data, ModelSpec(preset), cfg, _loss(args.disc), Path(tmp) / "run", progress=False)
        total = time.perf_counter() - t0
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as f:
            times = [float(row["step_time_s"]) for row in csv.DictReader(f)]
    return times[args.warmup :], total - sum(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--fps", type=float, default=8.0, help="training clip rate (8: all four sample videos)")
    parser.add_argument("--disc", choices=("none", "2d", "3d"), default="none", help="GAN on from step 0, or none")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cache", action="store_true", help="decode clips instead of reading the frame cache")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the real-data run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/train_speed.jsonl"))
    args = parser.parse_args()
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
        print("no data/: run `vidtok data samples` first", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ceilings = []
    for preset in args.presets:
        frames = data.clip_frames if get_preset(preset).causal else data.clip_frames - 1
        flops = iteration_flops(preset, args.batch_size, frames, args.resolution)
        bare, real, fixed = [], [], []
        for _ in range(args.repeats):
            ceilings.append(matmul_gflops(args.threads, n=2048, repeats=7))  # the fp32 ceiling, same run
            bare.append(1 / statistics.median(bare_step_times(preset, args, frames)))
            times, outside = train_step_times(preset, args, data)
            real.append(1 / statistics.median(times))
            fixed.append(outside)
        row = {
            "benchmark": "train_speed",
            "preset": preset,
            "clip": f"{frames}x{args.resolution}x{args.resolution}",
            "batch_size": args.batch_size,
            "disc": args.disc,
            "threads": args.threads,
            "data": "frame cache" if not args.no_cache else "decode",
            "workers": args.workers,
            "bare_steps_per_s": statistics.median(bare),
            "train_steps_per_s": statistics.median(real),
            "overhead": 1 - statistics.median(real) / statistics.median(bare),
            # generator forward + backward arithmetic (vidtok.train.flops; the discriminator, when on, not counted)
            "gflop_per_step": round(flops / 1e9, 2),
            "gflop_per_s": round(flops / 1e9 * statistics.median(bare), 1),
            "matmul_ceiling_gflop_per_s": round(statistics.median(ceilings), 1),
            "fraction_of_ceiling": round(flops / 1e9 * statistics.median(bare) / statistics.median(ceilings), 3),
            "bare_repeats": [round(v, 4) for v in bare],
            "train_repeats": [round(v, 4) for v in real],
            "fixed_s": round(statistics.median(fixed), 2),
            "steps": args.steps,
            "warmup": args.warmup,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        line = json.dumps(row)
        print(line, flush=True)
        with open(out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
