"""Serve the five deployments from this process: pipeline, sweep-fps, sweep-codebook, sweep-staging, ablations.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve     # what `make prefect-up` starts
    prefect deployment run sweep-fps/sweep-fps --param n_trials=2 --param profile=cpu

Each deployment is named after its flow, so it is triggered as `<flow>/<flow>`. Runs execute in subprocesses of
this process with its working directory, so `root="."` means the folder it was started in (the repository root).
`--limit` caps concurrent runs (default 1: one training at a time is what 2 CPU cores or one GPU can take; more
parallel sweep workers share a study safely through Optuna's storage). prefect.yaml declares the same
deployments for `prefect deploy` to a work pool.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prefect import serve

from flows.pipeline import pipeline
from flows.sweeps import SWEEPS

FLOWS = (pipeline, *SWEEPS)


def deployments() -> list:
    """One RunnerDeployment per flow, named like the flow (`sweep-fps/sweep-fps`)."""
    return [f.to_deployment(name=f.name, description=(f.description or "").split("\n")[0]) for f in FLOWS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1, help="concurrent flow runs (default 1)")
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    serve(*deployments(), limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
