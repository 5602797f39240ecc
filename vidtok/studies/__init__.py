"""Metrics -> answers: the paper's open questions as studies.

    vidtok study --list

specs.py (each question: its factor, levels and seeds), trial.py (one trial: the stage chain of vidtok.pipeline
for one level and seed, its val and test evaluations and its compute), sweeps.py (Optuna studies over the levels),
results.py (trials tables, summaries and statistics).
"""
