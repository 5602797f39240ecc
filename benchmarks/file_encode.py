"""`vidtok encode` on real long files: frames/s, peak memory, and whether memory stays flat with length (issue 16,
item 6).

    python -m benchmarks.file_encode                                   # every case below (~10 min on 2 cores)
    python -m benchmarks.file_encode --cases tiny:sd:100 tiny:sd:400 --repeats 1
    python -m benchmarks.file_encode --cases tiny:sd:100:chunk=4 tiny:sd:100:tile=256   # stream options

Files (footage corpus, `vidtok data fetch`): SD = freecol's opening film (640x480, 77 s, Theora), 720p = Big Buck
Bunny from moviepy (1280x720, 596 s, H.264). A case `model:file:frames` encodes the first `frames` frames: the
file is cut with FFmpeg beforehand (stream copy where the codec allows it, else lossless FFV1), so the encode reads
a real file from its start, through `vidtok.tokens.encode_file` (the CLI's code path: decode, resize to a multiple
of the spatial factor, chunked causal encoding, token file written). Every case runs in a fresh process; peak =
resident-memory high-water mark (VmHWM) of that process, weights, torch and all. Throughput = frames / wall
seconds of `encode_file`, including decoding. Optional `:chunk=N` (frames per causal chunk, `--chunk-frames`;
default 16) and `:tile=P` (P x P pixel tiles with P/4 overlap, `--tile`) set the stream options of the CLI.
Arithmetic: the encoder's FLOPs for those frames at that size (FlopCounterMode on the meta device, 2 per
multiply-add) over the wall time, against the fp32 matmul ceiling measured in the same run. One JSON line per
case, also appended to benchmarks/results/file_encode.jsonl. Needs the corpus in data/ (`vidtok data fetch`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import (
    ROOT,
    add_out_argument,
    argument_parser,
    emit,
    matmul_gflops,
    model_gflop,
    peak_rss_mb,
    reset_peak_rss,
    run_fresh,
)
from vidtok.model.config import get_preset
from vidtok.model.streaming import TileSpec
from vidtok.tokens import ModelRef, RunOptions, encode_file

FILES = {
    "sd": ROOT / "data" / "freecol" / "freecol-opening.video.ogg",
    "720p": ROOT / "data" / "moviepy" / "bbb.mp4",
}
MODELS = {"tiny": "tiny_kl_causal_444", "kl488": "vidtok_kl_causal_488_4chn"}
DEFAULT_CASES = ("tiny:sd:50", "tiny:sd:100", "tiny:sd:200", "kl488:sd:17", "tiny:720p:33", "kl488:720p:17")


def cut(source: Path, frames: int, out_dir: Path) -> Path:
    """The first `frames` frames of `source` as a file of their own (FFV1 in Matroska: lossless, exact count)."""
    out = out_dir / f"{source.stem}_{frames}.mkv"
    if not out.exists():
        cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-frames:v", str(frames), "-an", "-c:v", "ffv1"]
        subprocess.run([*cmd, str(out)], check=True)
    return out


def stream_options(extras: list[str]) -> dict[str, int]:
    """`chunk=N` / `tile=P` items of a case -> {"chunk_frames": N, "tile": P}."""
    names = {"chunk": "chunk_frames", "tile": "tile"}
    options = {}
    for item in extras:
        key, _, value = item.partition("=")
        if key not in names or not value.isdigit():
            raise SystemExit(f"case option {item!r}: expected chunk=N or tile=P")
        options[names[key]] = int(value)
    return options


def worker(preset: str, path: str, threads: int, options: dict[str, int]) -> dict:
    torch.set_num_threads(threads)
    tile = TileSpec(options["tile"], options["tile"] // 4) if "tile" in options else None
    run_options = RunOptions(device="cpu", chunk_frames=options.get("chunk_frames", 16), tile=tile)
    reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = encode_file(path, Path(tmp) / "out.tokens", weights=ModelRef(preset=preset), options=run_options)
        wall = time.perf_counter() - start
    geometry = result.tokens.geometry
    return {
        "frames": result.tokens.num_frames,
        "height": geometry.height + geometry.pad_bottom,  # what the encoder runs on
        "width": geometry.width + geometry.pad_right,
        "wall_s": wall,
        "peak_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="model:file:frames")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    add_out_argument(parser, "file_encode")
    parser.add_argument("--worker", nargs=3, metavar=("PRESET", "PATH", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        preset, path, options = args.worker
        print(json.dumps(worker(preset, path, args.threads, json.loads(options))))
        return 0
    missing = sorted({str(FILES[case.split(":")[1]]) for case in args.cases if not FILES[case.split(":")[1]].is_file()})
    if missing:
        raise SystemExit(f"no {', '.join(missing)}: the footage corpus is not in data/ (run `vidtok data fetch`)")
    ceiling = matmul_gflops(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            model_key, file_key, frames, *extras = case.split(":")
            options = stream_options(extras)
            path = cut(FILES[file_key], int(frames), Path(tmp))
            command = ["--threads", str(args.threads), "--worker", MODELS[model_key], str(path), json.dumps(options)]
            runs = [run_fresh(__spec__.name, command) for _ in range(args.repeats)]
            wall = statistics.median(r["wall_s"] for r in runs)
            first, preset = runs[0], MODELS[model_key]
            gflop = model_gflop(get_preset(preset), preset, "encode", first["frames"], first["height"], first["width"])
            row = {
                "case": case,
                "preset": preset,
                "file": str(FILES[file_key].relative_to(ROOT)),
                "frames": first["frames"],
                "chunk_frames": options.get("chunk_frames", 16),
                "tile": options.get("tile"),
                "size": f"{first['width']}x{first['height']}",
                "frames_per_s": round(first["frames"] / wall, 3),
                "wall_s": round(wall, 1),
                "peak_mb": round(statistics.median(r["peak_mb"] for r in runs)),
                "encoder_gflop": round(gflop, 1),
                "gflop_per_s": round(gflop / wall, 1),
                "matmul_ceiling_gflop_per_s": round(ceiling, 1),
                "fraction_of_ceiling": round(gflop / wall / ceiling, 3),
                "threads": args.threads,
                "repeats": args.repeats,
                "runs_wall_s": [round(r["wall_s"], 1) for r in runs],
            }
            emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
