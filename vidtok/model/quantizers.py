"""Latent regularizers of the VidTok family: KL, FSQ, VQ, LFQ and `none` (a module named for its quantizers, the
regularizers most of the family uses; `build_regularizer` picks one for a ModelConfig).

    python -c "import torch; from vidtok.model.quantizers import FSQ; print(FSQ((8, 8, 8))(torch.randn(1, 3, 2, 4, 4)))"

Every regularizer maps the encoder output (B, C, t, h, w) to the latent the decoder reads and returns a
`QuantizerOutput`. Auxiliary losses (entropy, commitment, codebook, KL) are computed only while the module is
in training mode and are returned *unweighted*: the training config owns the weights and their annealing.

Inference never forms a (tokens x codebook) matrix. The reference FSQ (`FSQRegularizer`, microsoft/VidTok at d6ad92d,
vidtok/modules/regularizers.py) computes its entropy penalty at inference too, which at 262,144 codes costs about
5 GB for a single 17x128x128 clip (measured on that code: it scores each of the 1,280 tokens against every code).
Here FSQ and LFQ per-sample entropies factorise over dimensions, the codebook entropy is one matrix product of two
~sqrt(K)-wide factors over the tokens, and VQ's nearest-code search runs in bounded chunks.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vidtok.model.config import ModelConfig

# Elements of a (tokens x codes) block of VQ's distance search evaluated at once: 2**22 floats = 16 MiB.
_CHUNK_ELEMENTS = 1 << 22


@dataclass
class QuantizerOutput:
    """What a regularizer hands back.

    latents: what the decoder reads, (B, C, t, h, w).
    indices: integer token ids (B, t, h, w) for discrete regularizers, else None.
    aux: unweighted auxiliary losses (empty at inference).
    """

    latents: torch.Tensor
    indices: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    mean: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


@dataclass(frozen=True)
class CodebookUsage:
    """Codebook statistics accumulated since the last reset."""

    codebook_size: int
    used_codes: int
    tokens: int
    utilisation: float  # fraction of codes used at least once
    perplexity: float  # exp(entropy of the empirical code distribution); codebook_size when uniform

    def as_dict(self) -> dict[str, float | int]:
        return {
            "codebook_size": self.codebook_size,
            "used_codes": self.used_codes,
            "tokens": self.tokens,
            "utilisation": self.utilisation,
            "perplexity": self.perplexity,
        }


# ------------------------------------------------------------------------------------------------ helpers


def _to_tokens(z: torch.Tensor) -> torch.Tensor:
    """(B, C, t, h, w) -> (B*t*h*w, C)."""
    return z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1])


def _from_tokens(tokens: torch.Tensor, like_shape: tuple[int, ...]) -> torch.Tensor:
    """(B*t*h*w, C) -> (B, C, t, h, w) for the (B, C, t, h, w) shape `like_shape`."""
    b, c, t, h, w = like_shape
    return tokens.reshape(b, t, h, w, tokens.shape[-1]).permute(0, 4, 1, 2, 3)


def _fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on `device` (nothing to switch off where autocast does not exist, e.g. the meta device that
    vidtok.train.flops counts on)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-10))).sum(dim)


def _row_outer(factors: list[torch.Tensor]) -> torch.Tensor:
    """Row-wise outer product (Khatri-Rao) of (N, L_d) factors: (N, L_0 * ... * L_{D-1}), dimension 0 fastest."""
    out = factors[0]
    for f in factors[1:]:
        # (N, K_sofar) x (N, L_d) -> (N, L_d, K_sofar): the new dimension varies slower.
        out = (f.unsqueeze(2) * out.unsqueeze(1)).reshape(f.shape[0], -1)
    return out


def codebook_entropy_of_product(factors: list[torch.Tensor]) -> torch.Tensor:
    """Entropy of the token-averaged product distribution as one matrix product.

    factors[d] is (N, L_d). The average over N tokens of a product of per-dimension distributions is not itself a
    product, so it needs the full K-vector, K = prod L_d, whose entry for code c = (c_0, ..., c_{D-1}) is
    sum_n prod_d factors[d][n, c_d]. Split the dimensions in two groups of about sqrt(K) codes each: with A and B
    the row-wise outer products of the two groups, that sum is (B^T A)[b, a], a GEMM over the tokens. For 2^18
    codes that is (N x 512)^T (N x 512) instead of N x 262,144 elementwise products, and autograd keeps only A
    and B. Run in fp32 whatever the autocast: the probabilities are small and their sum feeds a logarithm.
    """
    n = factors[0].shape[0]
    sizes = [f.shape[1] for f in factors]
    # the split whose two halves are closest in size (the larger one bounds memory and the GEMM's shape)
    split = min(range(1, len(factors) + 1), key=lambda m: max(math.prod(sizes[:m]), math.prod(sizes[m:])))
    with _fp32(factors[0].device):
        a = _row_outer([f.float() for f in factors[:split]])
        if split == len(factors):
            total = a.sum(0)
        else:
            b = _row_outer([f.float() for f in factors[split:]])
            total = (b.T @ a).reshape(-1)  # code index a + K_A * b: dimension 0 fastest, as the index basis
    return _entropy(total / n)


class _UsageCounter(nn.Module):
    """Counts how often each code is used (utilisation and perplexity), never saved in checkpoints."""

    def __init__(self, codebook_size: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.register_buffer("code_counts", torch.zeros(codebook_size, dtype=torch.int64), persistent=False)

    @torch.no_grad()
    def update(self, indices: torch.Tensor) -> None:
        if indices.is_meta:  # shapes only (vidtok.train.flops): there are no codes to count
            return
        self.code_counts += torch.bincount(indices.reshape(-1).long(), minlength=self.codebook_size)

    def reset_usage(self) -> None:
        self.code_counts.zero_()

    def usage(self) -> CodebookUsage:
        counts = self.code_counts.double()
        tokens = int(counts.sum().item())
        used = int((counts > 0).sum().item())
        if tokens == 0:
            return CodebookUsage(self.codebook_size, 0, 0, 0.0, 0.0)
        p = counts / tokens
        perplexity = math.exp(float(_entropy(p)))
        return CodebookUsage(self.codebook_size, used, tokens, used / self.codebook_size, perplexity)


# ------------------------------------------------------------------------------------------------ KL


class DiagonalGaussian(nn.Module):
    """Diagonal Gaussian posterior (Kingma & Welling, "Auto-Encoding Variational Bayes", arXiv 1312.6114).

    The encoder emits 2*C channels: mean and log-variance (clamped to [-30, 20] as in VidTok). Inference returns
    the mean unless `sample=True`: the reference samples at inference too, which makes encode non-deterministic.
    """

    discrete = False

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    @property
    def encoder_channels(self) -> int:
        return 2 * self.channels

    def forward(self, h: torch.Tensor, sample: bool | None = None) -> QuantizerOutput:
        mean, logvar = h.float().chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        sample = self.training if sample is None else sample
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        aux: dict[str, torch.Tensor] = {}
        if self.training:
            # KL(q || N(0, I)) summed over latent elements, averaged over the batch (VidTok's convention).
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
            aux["kl"] = kl.sum() / h.shape[0]
        return QuantizerOutput(latents=z.to(h.dtype), aux=aux, mean=mean, logvar=logvar)


class Identity(nn.Module):
    """No regularizer: a plain autoencoder, the reconstruction baseline every quantizer is compared with."""

    discrete = False

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    @property
    def encoder_channels(self) -> int:
        return self.channels

    def forward(self, h: torch.Tensor, sample: bool | None = None) -> QuantizerOutput:
        return QuantizerOutput(latents=h)


# ------------------------------------------------------------------------------------------------ FSQ


class FSQ(_UsageCounter):
    """Finite Scalar Quantization: VQ-VAE Made Simple (Mentzer et al., arXiv 2309.15505).

    Each of the C = len(levels) channels is bounded with tanh and rounded to one of L_d values; the codebook is
    implicit and has prod(levels) entries ([8]*6 = 262,144; [8]*5 = 32,768; [8]*4 = 4,096). Code values are
    (q - L//2) / (L//2), e.g. {-1, -0.75, ..., 0.75} for L = 8, and the token id is sum_d (q_d) * basis_d with
    basis = (1, L_0, L_0*L_1, ...).

    Training aux losses follow VidTok's MAGVIT-v2-style entropy penalty: with p(c | z) proportional to
    exp(2 * inv_temperature * <z, c>), entropy = mean_n H(p_n) - H(mean_n p_n); commitment = MSE(z, codes).
    """

    discrete = True

    def __init__(self, levels: tuple[int, ...] | list[int], inv_temperature: float = 100.0, eps: float = 1e-3):
        levels = tuple(int(level) for level in levels)
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be integers >= 2, got {levels}")
        super().__init__(math.prod(levels))
        self.levels = levels
        self.channels = len(levels)
        self.inv_temperature = inv_temperature
        self.eps = eps
        basis = [1]
        for level in levels[:-1]:
            basis.append(basis[-1] * level)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.int64), persistent=False)

    @property
    def encoder_channels(self) -> int:
        return self.channels

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """tanh-bound z so that rounding gives L values; even L are shifted by half a step (FSQ paper A.1)."""
        levels = self._levels.to(z.dtype)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, C) float -> (N, C) codes in [-1, 1] with straight-through gradients."""
        bounded = self._bound(tokens)
        # Straight-through: the value is exactly round(bounded), the gradient that of bounded.
        rounded = bounded.round() + (bounded - bounded.detach())
        return rounded / (self._levels // 2).to(tokens.dtype)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        half = self._levels // 2
        q = (codes * half).round().long() + half
        return (q * self._basis).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) int -> (..., C) codes."""
        half = self._levels // 2
        q = (indices.long().unsqueeze(-1) // self._basis) % self._levels
        return (q - half).float() / half.float()

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, t, h, w) token ids -> (B, C, t, h, w) latent."""
        return self.indices_to_codes(indices).permute(0, 4, 1, 2, 3).contiguous()

    def _level_values(self, d: int, device: torch.device) -> torch.Tensor:
        level = self.levels[d]
        half = level // 2
        return (torch.arange(level, device=device, dtype=torch.float32) - half) / half

    def entropy_terms(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample entropy, codebook entropy) of p(c|z) proportional to exp(2*tau*<z, c>), factorised."""
        factors = []
        for d in range(self.channels):
            logits = 2 * self.inv_temperature * tokens[:, d : d + 1] * self._level_values(d, tokens.device)
            factors.append(logits.softmax(-1))
        per_sample = sum(_entropy(f).mean() for f in factors)
        return per_sample, codebook_entropy_of_product(factors)

    def forward(self, h: torch.Tensor, sample: bool | None = None) -> QuantizerOutput:
        # The quantizer runs in fp32 whatever the autocast state: rounding in bf16 would move codes.
        with _fp32(h.device):
            tokens = _to_tokens(h.float())
            codes = self.quantize_tokens(tokens)
            indices = self.codes_to_indices(codes.detach())
            aux: dict[str, torch.Tensor] = {}
            if self.training:
                per_sample, codebook = self.entropy_terms(tokens)
                aux["entropy"] = per_sample - codebook
                aux["commitment"] = F.mse_loss(tokens, codes.detach())
        self.update(indices)
        b, _, t, hh, w = h.shape
        latents = _from_tokens(codes, (b, self.channels, t, hh, w)).to(h.dtype)
        return QuantizerOutput(latents=latents, indices=indices.reshape(b, t, hh, w), aux=aux)


# ------------------------------------------------------------------------------------------------ LFQ


class LFQ(_UsageCounter):
    """Lookup-Free Quantization (Yu et al., "Language Model Beats Diffusion", MAGVIT-v2, arXiv 2310.05737).

    Each channel is quantized to its sign, {-1, +1}; the token id is the bit pattern sum_d [z_d > 0] * 2**d, so
    C channels give 2**C codes (18 channels = 262,144). The entropy penalty uses p(c|z) proportional to
    exp(2*tau*<z, c>), which factorises into per-bit sigmoids.
    """

    discrete = True

    def __init__(self, bits: int, inv_temperature: float = 100.0):
        if bits < 1 or bits > 30:
            raise ValueError(f"LFQ needs 1..30 bits, got {bits}")
        super().__init__(2**bits)
        self.channels = bits
        self.inv_temperature = inv_temperature
        self.register_buffer("_basis", 2 ** torch.arange(bits, dtype=torch.int64), persistent=False)

    @property
    def encoder_channels(self) -> int:
        return self.channels

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        bits = (indices.long().unsqueeze(-1) // self._basis) % 2
        return (bits.float() * 2 - 1).permute(0, 4, 1, 2, 3).contiguous()

    def forward(self, h: torch.Tensor, sample: bool | None = None) -> QuantizerOutput:
        with _fp32(h.device):
            tokens = _to_tokens(h.float())
            signs = torch.where(tokens > 0, 1.0, -1.0)
            codes = signs + (tokens - tokens.detach())  # exact signs, identity gradient
            indices = ((tokens > 0).long() * self._basis).sum(-1)
            aux: dict[str, torch.Tensor] = {}
            if self.training:
                # p(bit = +1) = sigmoid(4 * tau * z): the two-way softmax of logits +-2*tau*z.
                p_pos = torch.sigmoid(4 * self.inv_temperature * tokens)
                factors = [torch.stack([1 - p_pos[:, d], p_pos[:, d]], dim=-1) for d in range(self.channels)]
                per_sample = sum(_entropy(f).mean() for f in factors)
                aux["entropy"] = per_sample - codebook_entropy_of_product(factors)
                aux["commitment"] = F.mse_loss(tokens, signs)
        self.update(indices)
        b, _, t, hh, w = h.shape
        latents = _from_tokens(codes, (b, self.channels, t, hh, w)).to(h.dtype)
        return QuantizerOutput(latents=latents, indices=indices.reshape(b, t, hh, w), aux=aux)


# ------------------------------------------------------------------------------------------------ VQ


class VectorQuantizer(_UsageCounter):
    """Vector quantization (van den Oord et al., "Neural Discrete Representation Learning", arXiv 1711.00937).

    A learned codebook of K vectors of C dims; each token takes its nearest code (L2), searched in chunks so the
    (tokens x K) distance matrix never exists whole. Aux losses: codebook = ||sg(z) - e||^2 moves codes,
    commitment = ||z - sg(e)||^2 holds the encoder (weight 0.25 in the paper). With both weights at 0 the
    codebook never moves: the paper's "VQ without regularization loss" row, which fails to train.
    """

    discrete = True

    def __init__(self, codebook_size: int, channels: int):
        if codebook_size < 2:
            raise ValueError(f"VQ codebook_size must be >= 2, got {codebook_size}")
        super().__init__(codebook_size)
        self.channels = channels
        self.embedding = nn.Embedding(codebook_size, channels)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    @property
    def encoder_channels(self) -> int:
        return self.channels

    @torch.no_grad()
    def nearest(self, tokens: torch.Tensor) -> torch.Tensor:
        codebook = self.embedding.weight.float()
        code_norms = codebook.pow(2).sum(-1)
        chunk = max(1, _CHUNK_ELEMENTS // self.codebook_size)
        out = []
        for start in range(0, tokens.shape[0], chunk):
            part = tokens[start : start + chunk]
            # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 is constant per row and dropped.
            distance = code_norms - 2 * part @ codebook.t()
            out.append(distance.argmin(-1))
        return torch.cat(out) if out else tokens.new_zeros(0, dtype=torch.int64)

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices.long()).permute(0, 4, 1, 2, 3).contiguous()

    def forward(self, h: torch.Tensor, sample: bool | None = None) -> QuantizerOutput:
        with _fp32(h.device):
            tokens = _to_tokens(h.float())
            indices = self.nearest(tokens.detach())
            quantized = self.embedding(indices).float()
            aux: dict[str, torch.Tensor] = {}
            if self.training:
                aux["codebook"] = F.mse_loss(quantized, tokens.detach())
                aux["commitment"] = F.mse_loss(tokens, quantized.detach())
            codes = quantized + (tokens - tokens.detach())  # exact codes, identity gradient
        self.update(indices)
        b, _, t, hh, w = h.shape
        latents = _from_tokens(codes, (b, self.channels, t, hh, w)).to(h.dtype)
        return QuantizerOutput(latents=latents, indices=indices.reshape(b, t, hh, w), aux=aux)


Regularizer = DiagonalGaussian | Identity | FSQ | LFQ | VectorQuantizer


def build_regularizer(cfg: ModelConfig) -> Regularizer:
    """The regularizer `cfg.regularizer` names, sized by the config."""
    if cfg.regularizer == "kl":
        return DiagonalGaussian(cfg.z_channels)
    if cfg.regularizer == "fsq":
        return FSQ(cfg.fsq_levels)
    if cfg.regularizer == "lfq":
        return LFQ(cfg.z_channels)
    if cfg.regularizer == "vq":
        return VectorQuantizer(cfg.codebook_size, cfg.z_channels)
    return Identity(cfg.z_channels)
