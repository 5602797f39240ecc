"""Regularizers: FSQ, LFQ, VQ, KL and none.  Run: pytest tests/model/test_quantizers.py -q

One contract every discrete quantizer keeps (test_discrete_quantizer_contract), then what is particular to each."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from vidtok.model.quantizers import FSQ, LFQ, DiagonalGaussian, Identity, VectorQuantizer


def test_fsq_codebook_sizes() -> None:
    assert FSQ((8,) * 6).codebook_size == 262_144
    assert FSQ((8,) * 5).codebook_size == 32_768
    assert FSQ((8,) * 4).codebook_size == 4_096
    assert FSQ((8, 5, 5, 5)).codebook_size == 1_000


@pytest.mark.parametrize("levels", [(8, 8, 8), (7, 5, 3), (8, 5, 5, 5), (2, 2)])
def test_fsq_indices_codes_round_trip(levels: tuple[int, ...]) -> None:
    fsq = FSQ(levels)
    every_index = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(every_index)
    assert torch.equal(fsq.codes_to_indices(codes), every_index)
    # every code is distinct and lies in [-1, 1]
    assert torch.unique(codes, dim=0).shape[0] == fsq.codebook_size
    assert codes.abs().max() <= 1.0


def test_fsq_latents_lie_on_the_level_grid() -> None:
    fsq = FSQ((8, 8, 8, 8)).eval()
    h = torch.randn(2, 4, 3, 5, 5) * 3
    out = fsq(h)
    # codes of level 8 are the multiples of 1/4 in [-1, 0.75]
    assert torch.equal(out.latents * 4, (out.latents * 4).round())
    assert out.latents.min() >= -1 and out.latents.max() <= 0.75


def test_fsq_straight_through_gradient() -> None:
    fsq = FSQ((8, 8, 8)).train()
    h = torch.randn(1, 3, 2, 4, 4, requires_grad=True)
    fsq(h).latents.sum().backward()
    # Straight-through rounding: the gradient is that of the tanh bound divided by the half width L // 2.
    levels = torch.tensor([8.0, 8.0, 8.0])
    half_l = (levels - 1) * (1 + 1e-3) / 2
    shift = torch.atanh(0.5 / half_l)
    hh = h.detach().permute(0, 2, 3, 4, 1)
    expected = (1 - torch.tanh(hh + shift) ** 2) * half_l / 4
    assert torch.allclose(h.grad.permute(0, 2, 3, 4, 1), expected, atol=1e-6)


def _brute_force_entropy(tokens: torch.Tensor, codebook: torch.Tensor, tau: float) -> torch.Tensor:
    """The reference formula with the full (tokens x codebook) matrix: mean_n H(p_n) - H(mean_n p_n)."""
    prob = (2 * tau * tokens @ codebook.t()).softmax(-1)
    per_sample = -(prob * prob.clamp_min(1e-10).log()).sum(-1).mean()
    avg = prob.mean(0)
    return per_sample - (-(avg * avg.clamp_min(1e-10).log()).sum())


def test_fsq_factorised_entropy_equals_full_matrix() -> None:
    fsq = FSQ((8, 5, 4), inv_temperature=3.0).train()
    tokens = torch.randn(50, 3) * 0.5
    per_sample, codebook = fsq.entropy_terms(tokens)
    codebook_codes = fsq.indices_to_codes(torch.arange(fsq.codebook_size))
    expected = _brute_force_entropy(tokens, codebook_codes, 3.0)
    assert torch.allclose(per_sample - codebook, expected, atol=1e-5)


def test_lfq_factorised_entropy_equals_full_matrix() -> None:
    lfq = LFQ(5, inv_temperature=2.0).train()
    h = torch.randn(1, 5, 2, 3, 3) * 0.3
    aux = lfq(h).aux["entropy"]
    codes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=5)))
    tokens = h.permute(0, 2, 3, 4, 1).reshape(-1, 5)
    assert torch.allclose(aux, _brute_force_entropy(tokens, codes, 2.0), atol=1e-5)


def test_entropy_gradient_matches_full_matrix() -> None:
    """The matrix-product codebook entropy has the gradient of the naive formula."""
    fsq = FSQ((4, 4, 4), inv_temperature=2.0).train()
    tokens = (torch.randn(40, 3) * 0.4).requires_grad_()
    per_sample, codebook = fsq.entropy_terms(tokens)
    (per_sample - codebook).backward()
    ours = tokens.grad.clone()
    tokens.grad = None
    _brute_force_entropy(tokens, fsq.indices_to_codes(torch.arange(64)), 2.0).backward()
    assert torch.allclose(ours, tokens.grad, atol=1e-5)


def test_fsq_training_entropy_at_262144_codes_runs_in_bounded_memory() -> None:
    """1,280 tokens x 262,144 codes: the full matrix alone would be 1.3 GB; stay well below it (own process)."""
    script = textwrap.dedent(
        """
        import resource, torch
        from vidtok.model.quantizers import FSQ
        torch.set_num_threads(2)
        fsq = FSQ((8,) * 6).train()
        h = torch.randn(1, 6, 5, 16, 16, requires_grad=True)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = fsq(h)
        (out.aux["entropy"] + out.aux["commitment"]).backward()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    extra_mb = float(result.stdout.strip().splitlines()[-1])
    assert extra_mb < 600, f"training entropy used {extra_mb:.0f} MB extra"


DISCRETE = {
    "fsq": lambda: FSQ((8, 8, 8, 8)),
    "lfq": lambda: LFQ(6),
    "vq": lambda: VectorQuantizer(300, 4),
}


@pytest.mark.parametrize("name", list(DISCRETE))
def test_discrete_quantizer_contract(name: str) -> None:
    """What the model, the token files and the codebook metrics rely on: at inference no aux loss; indices of
    shape (B, T, H, W) within the codebook; indices -> latents reproduces the quantized latents exactly; usage
    counts every token and every distinct code (and reset clears it)."""
    q = DISCRETE[name]().eval()
    if isinstance(q, VectorQuantizer):
        with torch.no_grad():
            q.embedding.weight.normal_()
    h = torch.randn(2, q.channels, 3, 5, 5) * 3
    out = q(h)
    assert out.aux == {}
    assert out.indices.shape == (2, 3, 5, 5) and out.indices.dtype in (torch.int32, torch.int64)
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < q.codebook_size
    assert torch.equal(q.indices_to_latent(out.indices), out.latents)
    usage = q.usage()
    assert usage.tokens == out.indices.numel() == 150
    assert usage.used_codes == len(torch.unique(out.indices))
    q.reset_usage()
    assert q.usage().tokens == 0


def test_usage_counters_uniform_and_collapsed() -> None:
    fsq = FSQ((4, 4)).eval()
    # Pre-images of every code: invert the tanh bound, bounded = code * (L // 2) = tanh(h + shift) * half_l - 0.5.
    codes = fsq.indices_to_latent(torch.arange(16).reshape(1, 4, 4, 1)).permute(0, 1, 4, 2, 3)  # (1, 2, 1, 4, 4)
    half_l = 3 * (1 + 1e-3) / 2
    shift = torch.atanh(torch.tensor(0.5 / half_l))
    fsq(torch.atanh((codes * 2 + 0.5) / half_l) - shift)
    usage = fsq.usage()
    assert usage.used_codes == 16 and usage.utilisation == 1.0
    assert usage.perplexity == pytest.approx(16.0)
    fsq.reset_usage()
    fsq(torch.zeros(1, 2, 2, 4, 4))  # one code only
    usage = fsq.usage()
    assert usage.used_codes == 1 and usage.utilisation == pytest.approx(1 / 16)
    assert usage.perplexity == pytest.approx(1.0)


def test_vq_nearest_code_chunked_equals_full_search() -> None:
    vq = VectorQuantizer(300, 4).eval()
    with torch.no_grad():
        vq.embedding.weight.normal_()
    h = torch.randn(2, 4, 3, 8, 8)
    out = vq(h)
    tokens = h.permute(0, 2, 3, 4, 1).reshape(-1, 4)
    expected = torch.cdist(tokens, vq.embedding.weight).argmin(-1)
    assert torch.equal(out.indices.reshape(-1), expected)


def test_vq_losses_train_the_codebook_only_when_weighted() -> None:
    vq = VectorQuantizer(16, 3).train()
    h = torch.randn(1, 3, 2, 4, 4, requires_grad=True)
    out = vq(h)
    assert set(out.aux) == {"codebook", "commitment"}
    out.aux["codebook"].backward(retain_graph=True)
    assert vq.embedding.weight.grad.abs().sum() > 0 and h.grad is None
    vq.embedding.weight.grad = None
    out.aux["commitment"].backward()
    assert vq.embedding.weight.grad is None and h.grad.abs().sum() > 0


def test_lfq_bits_and_indices() -> None:
    lfq = LFQ(3).eval()
    h = torch.tensor([1.0, -2.0, 0.5]).reshape(1, 3, 1, 1, 1)
    out = lfq(h)
    assert out.indices.item() == 1 + 4  # bits 0 and 2 set
    assert torch.equal(out.latents.flatten(), torch.tensor([1.0, -1.0, 1.0]))
    assert lfq.codebook_size == 8


def test_kl_mean_at_inference_kl_loss_in_training() -> None:
    kl = DiagonalGaussian(2)
    h = torch.cat([torch.ones(1, 2, 1, 2, 2), torch.zeros(1, 2, 1, 2, 2)], dim=1)  # mean 1, logvar 0
    out = kl.eval()(h)
    assert torch.equal(out.latents, torch.ones(1, 2, 1, 2, 2)) and out.aux == {}
    out = kl.train()(h)
    # KL(N(1, 1) || N(0, 1)) = 0.5 per element, 8 elements, batch 1.
    assert out.aux["kl"].item() == pytest.approx(4.0)
    assert not torch.equal(out.latents, torch.ones_like(out.latents))


def test_identity_passes_features_through() -> None:
    h = torch.randn(1, 4, 2, 3, 3)
    assert torch.equal(Identity(4)(h).latents, h)


def test_perplexity_definition() -> None:
    fsq = FSQ((2, 2)).eval()
    # codes 0, 0, 1, 2: p = (1/2, 1/4, 1/4) -> entropy 1.5 bits -> perplexity 2**1.5
    fsq.update(torch.tensor([0, 0, 1, 2]))
    assert fsq.usage().perplexity == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25))))
