"""Diagnostics and one-off experiments behind the benchmarks' findings: learning probes, profiles, A/B probes.

    python -m benchmarks.probes.train_profile --help

Not part of `make bench`: each answered a question once (benchmarks/README.md says which and what it gave) and stays
runnable so the answer can be checked again. candidates/ holds the code patches the A/B probes measured.
"""
