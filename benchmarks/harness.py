"""What every benchmark shares: timing, the matmul ceiling, peak memory, fresh processes and JSON rows.

    python -m benchmarks.streaming_memory --cases tiny:17     # a benchmark; each one imports its helpers from here

One helper per job, so that every benchmark measures the same way:
- `median_seconds`: median wall time of repeated calls after an untimed one;
- `matmul_gflops`: the machine's practical fp32 ceiling, the faster of torch's two CPU GEMM libraries;
- `reset_peak_rss` / `peak_rss_mb`: the resident-memory high-water mark (Linux VmHWM) from a point on;
- `run_fresh`: one measurement in a fresh interpreter (`python -m MODULE ARGS`), its result the last JSON line;
- `emit` (with `add_out_argument`): a result row printed as one JSON line and appended to a .jsonl file;
- `model_gflop`, `loss_config`, `training_module`, `random_clip`: the FLOPs, training step and input that several
  benchmarks time.

Benchmarks run as modules from the repository root (`python -m benchmarks.NAME`), which puts the root on the path
once; nothing here edits sys.path. This module imports torch and the standard library at the top, never vidtok:
benchmarks/probes/train_step_ab.py imports vidtok from another checkout after it (the vidtok helpers below import
it when called).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # the committed rows the tables of benchmarks/README.md are copied from


# ------------------------------------------------------------------------------------------------ command line


def argument_parser(doc: str | None, module: str) -> argparse.ArgumentParser:
    """A benchmark's parser: `python -m MODULE` as its program name, its whole docstring as the description."""
    prog = f"python -m {module.removesuffix('.__main__')}"
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """`--out FILE`: where the rows go (default benchmarks/results/NAME.jsonl)."""
    default = RESULTS / f"{name}.jsonl"
    parser.add_argument(
        "--out", type=Path, default=default, help=f"JSON-lines file the rows are appended to (default {default})"
    )


# ------------------------------------------------------------------------------------------------ rows


def emit(row: dict, out: Path) -> None:
    """Print `row` as one JSON line and append it to `out` (its folder is created)."""
    line = json.dumps(row)
    print(line, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write(line + "\n")


def timestamp() -> str:
    """UTC time of a row, to the second: rows of one file are told apart by it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def cpu_name() -> str:
    """Model name, cores and the flags that decide the kernels (vidtok.runs.cpu_description): every row's label."""
    from vidtok.runs import cpu_description

    return cpu_description()


# ------------------------------------------------------------------------------------------------ time


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of fn, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(threads: int, n: int = 4096, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """The matmul ceiling in `dtype`: GFLOP/s of an n^3 product, the faster of the two GEMM libraries torch uses on
    CPU.

    MKL (torch.matmul) and oneDNN (its matmul primitive, which the model's convolutions share their kernels with).
    On AMD CPUs MKL does not take its AVX-512 path and runs ~20-25% below oneDNN (2026-12-02, 2-core EPYC, n 2048:
    158-173 vs 207-215 GFLOP/s), so MKL alone would understate the ceiling. In bf16 torch.matmul itself goes to
    oneDNN (natively where the CPU has AVX512-BF16 or AMX: the bf16 ceiling; elsewhere a slow fallback).
    """
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    products = [lambda: a @ b]
    if dtype == torch.float32 and torch.backends.mkldnn.is_available():
        a_onednn = a.to_mkldnn()
        products.append(lambda: torch.ops.aten.mkldnn_linear(a_onednn, b, None))  # a @ b.T
    return max(2 * n**3 / median_seconds(product, repeats) / 1e9 for product in products)


# ------------------------------------------------------------------------------------------------ memory


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset the resident-memory high-water mark (Linux: write 5 to clear_refs); returns the current RSS in MB."""
    gc.collect()
    with contextlib.suppress(OSError):  # not Linux or not allowed: the process-lifetime peak is reported instead
        Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Resident-memory high-water mark in MB since the last `reset_peak_rss` (else since the process started)."""
    try:
        return _status_mb("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ processes


def run_fresh(module: str, args: list[str]) -> dict:
    """`python -m MODULE ARGS` in a fresh interpreter from the repository root; its last stdout line, parsed.

    A fresh process per measurement: its peak memory is its own, and no warm caches, threads or workers carry over
    from the one before. A failing run raises RuntimeError with the command and the end of its stderr.
    """
    cmd = [sys.executable, "-m", module, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ vidtok


def model_gflop(config: Any, name: str, phase: str, frames: int, height: int, width: int) -> float:
    """GFLOP of one encoder or decoder call (`phase` encode | decode) of the model `config` builds, for a clip of
    `frames` x `height` x `width`: counted by shape on the meta device with FlopCounterMode (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    from vidtok import VidTok

    with torch.device("meta"):
        model = VidTok(config, name).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            if phase == "encode":  # causal models first pad the front with copies of frame 0
                model.encoder(torch.empty(1, 3, frames + model.front_padding(frames), height, width))
            else:
                model.decoder(torch.empty(1, *config.latent_shape(frames, height, width)))
    return counter.get_total_flops() / 1e9


def loss_config(disc: str) -> Any:
    """The study trial's loss: no perceptual term, GAN `disc` (none | 2d | 3d) on from step 0."""
    from vidtok.train.losses import LossConfig

    return LossConfig(perceptual_weight=0, disc_type=disc, disc_start=0)


def training_module(config: Any, name: str, disc: str) -> Any:
    """A TrainingModule as a study trial builds it, from seed 0: the model of `config`, `loss_config(disc)`, Adam
    at lr 1e-3 for both steps, gradient clipping at 20, no EMA."""
    from vidtok import VidTok
    from vidtok.train.config import TrainConfig
    from vidtok.train.losses import VidTokLoss
    from vidtok.train.module import TrainingModule

    torch.manual_seed(0)
    train = TrainConfig(lr=1e-3, lr_disc=1e-3, betas=(0.9, 0.999), grad_clip=20.0, seed=0, freeze_encoder=False)
    return TrainingModule(VidTok(config, name), VidTokLoss(loss_config(disc)), train)


def random_clip(batch: int, frames: int, resolution: int) -> torch.Tensor:
    """(batch, 3, frames, resolution, resolution) uniform in [-1, 1], from torch's current random state."""
    return torch.rand(batch, 3, frames, resolution, resolution) * 2 - 1
