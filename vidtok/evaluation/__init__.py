"""Checkpoint -> metrics with their protocol: evaluate.py (score a checkpoint on the data layer's clips, beside the
trivial codec) and report.py (the pipeline's markdown report). The metrics themselves are vidtok/metrics.py.

    vidtok evaluate --checkpoint outputs/train/stage2 -o outputs/eval/metrics.json
"""
