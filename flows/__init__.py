"""Prefect flows of the vidtok platform: thin orchestration around the plain functions of `vidtok`.

    make prefect-up                      # local server on 127.0.0.1:4200 + the process serving these flows
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    prefect deployment run sweep-fps/sweep-fps --param n_trials=2 --param profile=cpu

- flows.pipeline: `pipeline` (manifest -> resample -> stage 1 -> stage 2 -> evaluate -> report), the same
  functions as the DVC stages, with retries on transient errors and caching across runs.
- flows.sweeps: `sweep-fps`, `sweep-codebook`, `sweep-staging`, `ablations` (Optuna studies, vidtok.studies.sweeps).
- flows.serve: serves all five as deployments; flows.local: starts / stops the local server and that process.

See flows/README.md for the commands, a PostgreSQL-backed server and Docker / Kubernetes work pools.
"""
