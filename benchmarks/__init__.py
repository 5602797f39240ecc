"""Speed and memory benchmarks of vidtok, each answering one question (benchmarks/README.md has the table).

    python -m benchmarks                      # the benchmark set at small sizes (what `make bench` runs)
    python -m benchmarks.tokenizer_speed      # one benchmark at its full size

Run from the repository root: `python -m` puts the root on the path, so the modules import benchmarks.harness
and vidtok as packages. One-off diagnostics live in benchmarks/probes/.
"""
