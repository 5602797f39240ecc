"""Released 4x8x8 models on a GPU in bf16: frames/s of encode and decode, and the fraction of the card's bf16 peak.

    python -m benchmarks.gpu_speed                                    # on a GPU: KL-4 and FSQ-262k, 17x256² and 17x720p
    python -m benchmarks.gpu_speed --presets tiny_kl_causal_444 --sizes 32x32 --repeats 1   # CPU smoke run (CI)

Needs only torch and the repository on PYTHONPATH (no PyAV, safetensors, network or weights): a GPU machine may have
nothing else. Weights are random (speed does not depend on them) and the input is uniform noise in [-1, 1]. Each case
makes one untimed call, then `--repeats` timed calls (CUDA synchronised; median reported). The model's FLOPs per
call are counted by shape on the meta device (torch.utils.flop_counter, 2 per multiply-add); GFLOP/s is set against
a large bf16 matmul measured in the same run (the practical ceiling) and, for cards this script knows, the
datasheet's dense bf16 peak. diffusers' AutoencoderVidTok runs beside ours when diffusers is installed.

Prints one JSON line per case and appends them to gpu_speed.jsonl in benchmarks/results/ (`--out` elsewhere; no GPU
has run it yet, so that file is still to come).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import add_out_argument, argument_parser, cpu_name, emit, timestamp
from vidtok.model.config import ModelConfig, derive
from vidtok.model.vidtok import VidTok

PRESETS = ("vidtok_kl_causal_488_4chn", "vidtok_fsq_causal_488_262144")
SIZES = ("256x256", "720x1280")
# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, no sparsity), matched on the device name.
DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_call_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of `repeats` synchronised calls of fn after one untimed call, and every call's time."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """The practical ceiling: TFLOP/s of an n^3 matmul in `dtype` on `device`."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds, _ = median_call_seconds(lambda: a @ b, device, repeats=5)
    return 2 * n**3 / seconds / 1e12


def datasheet_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in DATASHEET_BF16_TFLOPS.items() if key in name), None)


def call_gflop(model: VidTok, phase: str, frames: int, height: int, width: int) -> float:
    """GFLOP of one encode or decode call of `model`'s architecture, counted by shape on the meta device."""
    with torch.device("meta"):
        twin = VidTok(model.config, model.name).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            if phase == "encode":
                twin.encode(torch.empty(1, 3, frames, height, width))
            else:
                twin.decode(torch.empty(1, *model.config.latent_shape(frames, height, width)))
    return counter.get_total_flops() / 1e9


def diffusers_model(model: VidTok, device: torch.device) -> torch.nn.Module | None:
    """diffusers' AutoencoderVidTok with `model`'s weights (the same tensor names), or None without diffusers."""
    try:
        from diffusers import AutoencoderVidTok
    except ImportError:
        return None
    from vidtok.model.interop import diffusers_config

    peer = AutoencoderVidTok(**{k: v for k, v in diffusers_config(model.config).items() if not k.startswith("_")})
    peer.load_state_dict(model.state_dict(), strict=True)
    return peer.to(device).eval()


def calls(model: torch.nn.Module, config: ModelConfig, implementation: str, video: torch.Tensor) -> dict:
    """The encode and decode calls of one implementation on `video` (decode reads that implementation's latents)."""
    if implementation == "vidtok":
        latents = model.encode(video).latents
        return {"encode": lambda: model.encode(video).latents, "decode": lambda: model.decode(latents, video.shape[2])}
    # diffusers takes the clip front-padded with copies of frame 0 (ours pads inside encode) and returns its types.
    pad = (-video.shape[2]) % config.temporal_factor if config.causal else 0
    padded = torch.cat([video[:, :, :1]] * pad + [video], dim=2)

    def encode() -> torch.Tensor:
        out = model.encode(padded)
        return out.latent_dist.mode() if config.regularizer == "kl" else out[0]

    latents = encode()
    return {"encode": encode, "decode": lambda: model.decode(latents)}


def measure(model: torch.nn.Module, config: ModelConfig, implementation: str, case: dict, repeats: int) -> list[dict]:
    """Encode and decode rows of one implementation under autocast in the case's dtype: s, frames/s, GFLOP/s."""
    device, dtype = torch.device(case["device_type"]), {"bf16": torch.bfloat16, "fp32": torch.float32}[case["dtype"]]
    video = torch.rand(1, 3, case["frames"], case["height"], case["width"], device=device) * 2 - 1
    rows = []
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        for phase, fn in calls(model, config, implementation, video).items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, times = median_call_seconds(fn, device, repeats)
            gflops = case[f"{phase}_gflop"] / seconds
            row = {**case, "implementation": implementation, "phase": phase, "s": seconds, "times_s": times}
            row |= {"frames_per_s": case["frames"] / seconds, "gflops": gflops}
            row["fraction_of_matmul"] = gflops / (case["matmul_tflops"] * 1e3)
            if case["datasheet_tflops"]:
                row["fraction_of_datasheet"] = gflops / (case["datasheet_tflops"] * 1e3)
            if device.type == "cuda":
                row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, "benchmarks.gpu_speed")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs only)")
    parser.add_argument("--no-diffusers", action="store_true", help="ours only")
    add_out_argument(parser, "gpu_speed")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    ceiling = matmul_tflops(device, dtype, 8192 if device.type == "cuda" else 1024)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for preset in args.presets:
        # v1.1 semantics (replicate padding, trilinear upsampling): the only ones diffusers implements; same FLOPs.
        config = derive(preset, causal_padding="replicate", temporal_upsample="trilinear")
        model = VidTok(config, preset).to(device).eval()
        peer = None if args.no_diffusers else diffusers_model(model, device)
        for size in args.sizes:
            height, width = (int(v) for v in size.lower().split("x"))
            case = {"time": timestamp(), "device": name, "cpu": cpu_name(), "device_type": device.type,
                    "preset": preset, "frames": args.frames, "height": height, "width": width, "dtype": args.dtype,
                    "matmul_tflops": ceiling, "datasheet_tflops": datasheet_tflops(device)}  # fmt: skip
            case["encode_gflop"] = call_gflop(model, "encode", args.frames, height, width)
            case["decode_gflop"] = call_gflop(model, "decode", args.frames, height, width)
            for implementation, module in (("vidtok", model), ("diffusers", peer)):
                if module is not None:
                    for row in measure(module, config, implementation, case, args.repeats):
                        emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
