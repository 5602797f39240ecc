"""Training arithmetic (vidtok.train.flops): what the staging study reports as compute.

.venv/bin/pytest tests/train/test_flops.py -q
"""

from __future__ import annotations

import pytest

from vidtok.train.flops import iteration_flops


def test_flops_of_the_cpu_profile_step_and_how_they_scale() -> None:
    # An independent count on real tensors (issue 17: FlopCounterMode, oneDNN off) put tiny_kl_causal_444's
    # forward + backward at 17x64x64, batch 2, at 74 GFLOP.
    full = iteration_flops("tiny_kl_causal_444", 2, 17, 64)
    assert full == pytest.approx(74e9, rel=0.05)
    assert iteration_flops("tiny_kl_causal_444", 4, 17, 64) == pytest.approx(2 * full, rel=1e-6)  # linear in batch
    assert iteration_flops("tiny_kl_causal_444", 2, 17, 128) == pytest.approx(4 * full, rel=0.05)  # and in pixels
    frozen = iteration_flops("tiny_kl_causal_444", 2, 17, 64, frozen_encoder=True)
    assert 0.3 * full < frozen < 0.9 * full  # stage 2: no encoder backward


def test_quantized_presets_are_counted_too() -> None:
    assert iteration_flops("tiny_fsq_causal_444", 2, 17, 64) > 0
