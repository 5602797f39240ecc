"""Metrics -> answers: the paper's open questions as studies.

    python -m vidtok.studies.sweeps --list

specs.py (each question: its factor, levels and seeds), trial.py (the stage chain one parameter set runs: the main
job's DVC stages, the Prefect pipeline flow and every study trial), sweeps.py (Optuna studies over the levels),
results.py (trials tables, summaries and statistics).
"""
