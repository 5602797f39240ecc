"""Where the encoder's time and memory go on a standard-definition file (issue 16, item 6).

    python -m benchmarks.probes.encode_profile           # tiny_kl_causal_444 at 640x480, ~3 min on 2 cores
    python -m benchmarks.probes.encode_profile --preset vidtok_kl_causal_488_4chn --frames 17

One chunk of `vidtok encode`'s stream: the first `--frames` frames of freecol's opening film (640x480, the SD file
of benchmarks/file_encode.py), through the encoder in fp32 without gradients, the way `vidtok.model.streaming` runs
its first causal chunk. After one warm-up call: the encoder's time (median of three plain calls), then one pass per
view:

- per part: wall seconds of each block the encoder calls (forward hooks, `perf_counter`; share of that hooked
  call), its FLOPs (torch.utils.flop_counter on the meta device, 2 per multiply-add; attention included), GFLOP/s
  and the size of its output activation;
- per operator: torch.profiler's self CPU time of the ten most expensive ATen operators;
- memory: resident-memory high-water mark (VmHWM) before and after the call, and the largest activations.

The matmul ceiling is measured in the same run (benchmarks.harness.matmul_gflops). One JSON line, also appended to
benchmarks/results/encode_profile.jsonl. Needs the corpus in data/ (`vidtok data fetch`).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import (
    ROOT,
    add_out_argument,
    argument_parser,
    emit,
    matmul_gflops,
    peak_rss_mb,
    reset_peak_rss,
)
from vidtok import VidTok
from vidtok.data.video import read_frames
from vidtok.model.config import get_preset

SD_FILE = ROOT / "data" / "freecol" / "freecol-opening.video.ogg"


def sd_frames(frames: int) -> torch.Tensor:
    """(1, 3, T, H, W) in [-1, 1]: the first `frames` frames of the SD file at their own size."""
    video = torch.from_numpy(read_frames(str(SD_FILE), list(range(frames))))  # (T, H, W, 3) uint8
    return video.permute(3, 0, 1, 2).unsqueeze(0).float().div(127.5).sub(1.0)


def time_parts(model: VidTok, video: torch.Tensor) -> tuple[dict[str, float], dict[str, float], float]:
    """(seconds per part, output MB per part, total seconds) of one encoder call. The parts are the outermost
    modules the encoder calls (its levels are containers whose blocks it calls one by one), in the order they run."""
    seconds: dict[str, float] = defaultdict(float)
    out_mb: dict[str, float] = {}
    starts: dict[str, float] = {}
    handles = []
    for name, module in model.encoder.named_modules():
        if not name:
            continue

        def before(_module, _args, name=name):
            starts[name] = time.perf_counter()

        def after(_module, _args, output, name=name):
            seconds[name] += time.perf_counter() - starts[name]
            if isinstance(output, torch.Tensor):
                out_mb[name] = max(out_mb.get(name, 0.0), output.numel() * output.element_size() / 2**20)

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        start = time.perf_counter()
        with torch.no_grad():
            model.encoder(video)
        total = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    outermost = [n for n in seconds if not any(n.startswith(other + ".") for other in seconds if other != n)]
    return {n: seconds[n] for n in outermost}, out_mb, total


def plain_call_seconds(model: VidTok, video: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model.encoder(video)
    return time.perf_counter() - start


def flops_per_part(preset: str, shape: tuple[int, ...], parts: list[str]) -> dict[str, float]:
    """GFLOP of each encoder part for an input of `shape`, counted on the meta device."""
    with torch.device("meta"):
        model = VidTok(get_preset(preset), preset).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.encoder(torch.empty(shape))
    totals = counter.get_flop_counts()  # keyed by module path under the root's class name
    result = {name: sum(totals.get(f"Encoder.{name}", {}).values()) / 1e9 for name in parts}
    result["(total)"] = sum(totals.get("Global", {}).values()) / 1e9
    return result


def top_operators(model: VidTok, video: torch.Tensor, count: int = 10) -> list[dict]:
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model.encoder(video)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_s": round(e.self_cpu_time_total / 1e6, 3),
            "share": round(e.self_cpu_time_total / total, 3),
        }
        for e in events[:count]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--preset", default="tiny_kl_causal_444")
    parser.add_argument("--frames", type=int, default=17, help="frames in the chunk (1 + 16: the first causal chunk)")
    parser.add_argument("--threads", type=int, default=2)
    add_out_argument(parser, "encode_profile")
    args = parser.parse_args(argv)
    if not SD_FILE.is_file():
        raise SystemExit(f"no {SD_FILE}: the footage corpus is not in data/ (run `vidtok data fetch`)")
    torch.set_num_threads(args.threads)

    ceiling = matmul_gflops(args.threads)
    model = VidTok(get_preset(args.preset), args.preset).eval()
    video = sd_frames(args.frames)
    video = video[..., : video.shape[-2] // 8 * 8, : video.shape[-1] // 8 * 8]  # a multiple of every spatial factor
    input_mb = video.numel() * 4 / 2**20
    reset_peak_rss()
    rss_before = peak_rss_mb()
    time_parts(model, video)  # warm-up: oneDNN primitive creation, allocator growth
    rss_after_warmup = peak_rss_mb()
    seconds, out_mb, hooked_total = time_parts(model, video)
    total = statistics.median(plain_call_seconds(model, video) for _ in range(3))  # without hooks
    flops = flops_per_part(args.preset, tuple(video.shape), list(seconds))
    parts = [
        {
            "part": name,
            "seconds": round(s, 3),
            "share": round(s / hooked_total, 3),
            "gflop": round(flops.get(name, 0.0), 2),
            "gflop_per_s": round(flops.get(name, 0.0) / s, 1) if s > 0 else None,
            "output_mb": round(out_mb.get(name, 0.0), 1),
        }
        for name, s in seconds.items()
    ]
    row = {
        "preset": args.preset,
        "input": f"{SD_FILE.relative_to(ROOT)}: {args.frames}x{video.shape[-2]}x{video.shape[-1]}",
        "input_mb": round(input_mb, 1),
        "encoder_s": round(total, 3),
        "encoder_gflop": round(flops["(total)"], 2),
        "gflop_per_s": round(flops["(total)"] / total, 1),
        "matmul_ceiling_gflop_per_s": round(ceiling, 1),
        "fraction_of_ceiling": round(flops["(total)"] / total / ceiling, 3),
        "rss_before_mb": round(rss_before),
        "peak_rss_mb": round(rss_after_warmup),
        "parts": parts,
        "top_operators": top_operators(model, video),
        "threads": args.threads,
    }
    emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
