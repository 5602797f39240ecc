"""The benchmark set, each at a size that finishes in minutes on 2 cores: what `make bench` runs.

    python -m benchmarks                                  # all of them, one after the other (~12 min on 2 cores)
    python -m benchmarks --only streaming_memory tiling   # some
    python -m benchmarks --list                           # what runs, with which arguments

Each benchmark runs as `python -m benchmarks.NAME ARGS --out OUT_DIR/NAME.jsonl` in its own process. The rows go
to outputs/bench/results/ by default, not to benchmarks/results/: the committed rows there are the full-size runs
the tables of benchmarks/README.md are copied from, and these small runs must not mix with them. Run a benchmark
without arguments for its full size (benchmarks/README.md says how long each takes).

Needs the main job's outputs: the footage corpus in data/ and the trained checkpoint (`make run`); a benchmark
whose input is missing says so in one line, and the set goes on with the next one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import ROOT, argument_parser


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of the set: the arguments `make bench` gives it and about how long that takes on 2 cores."""

    quick: tuple[str, ...]
    minutes: float


BENCHMARKS = {
    # fp32 encode + decode against diffusers at 17x128x128, one preset, one round (the table: both presets, 3 rounds,
    # 256 too, bf16): four processes, each a warm-up call and one timed call
    "tokenizer_speed": Benchmark(
        ("--sizes", "128", "--presets", "vidtok_kl_causal_488_4chn", "--repeats", "1", "--no-bf16"), 4
    ),
    # streaming against whole-clip for the tiny preset at 17 and 129 frames (the table: to 1,025 frames, and 4x8x8)
    "streaming_memory": Benchmark(("--cases", "tiny:17", "tiny:129"), 1),
    # the quality part with the main job's checkpoint (the 720p memory part alone takes ~40 min)
    "tiling": Benchmark(("--skip-memory",), 1),
    # `vidtok encode` on the first 50 frames of the SD file, tiny preset
    "file_encode": Benchmark(("--cases", "tiny:sd:50"), 1),
    # the train loader on the sample videos at 3 and 8 fps (its full size already)
    "data_loader": Benchmark((), 1),
    # one preset, one repeat of 4 steps (the first run also builds a manifest and frame cache of data/ in
    # outputs/bench/data: a few minutes more)
    "train_speed": Benchmark(("--presets", "tiny_kl_causal_444", "--repeats", "1", "--steps", "4"), 3),
    # the GPU script's CPU smoke size (on a GPU machine run it without arguments: benchmarks/README.md)
    "gpu_speed": Benchmark(
        ("--presets", "tiny_kl_causal_444", "--sizes", "32x32", "--frames", "9", "--repeats", "1"), 0.5
    ),
    # `vidtok --help` and a flag error in fresh interpreters, this checkout alone
    "cli_startup": Benchmark(("--repeats", "3"), 0.5),
}


def command(name: str, out_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        f"benchmarks.{name}",
        *BENCHMARKS[name].quick,
        "--out",
        str(out_dir / f"{name}.jsonl"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME", help="run only these")
    parser.add_argument(
        "--out-dir", type=Path, default=ROOT / "outputs" / "bench" / "results", help="where the rows go"
    )
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    if args.list:
        for name in names:
            print(f"~{BENCHMARKS[name].minutes:g} min  python {' '.join(command(name, args.out_dir)[1:])}")
        return 0
    failed = []
    for name in names:
        print(f"== benchmarks.{name} (about {BENCHMARKS[name].minutes:g} min)", flush=True)
        start = time.perf_counter()
        # Output passes straight through: each benchmark prints its JSON rows as they come.
        if subprocess.run(command(name, args.out_dir), cwd=ROOT, check=False).returncode:
            failed.append(name)
        print(f"== benchmarks.{name}: {time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)} (their errors are above)", file=sys.stderr)
        return 1
    print(f"rows in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
