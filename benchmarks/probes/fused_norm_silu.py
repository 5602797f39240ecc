"""Does a hand-fused LayerNorm + SiLU pay on this CPU? (issue 17 item 4: the last lever the profile left)

    python -m benchmarks.probes.fused_norm_silu   # builds the C++ kernel (~20 s, g++ and ninja, offline), checks it
                                                  # against eager, times forward and forward + backward

The generator's ResBlocks run norm -> SiLU twice each: LayerNorm over the channels of a channels-last (B, C, T, H, W)
activation, then SiLU, and in backward both again. Here both are one C++ pass over memory each way (OpenMP over
positions, the C channels of a position contiguous; backward recomputes the normalised value from the saved mean and
1/std). Eager = F.layer_norm on the moved-axis view + F.silu, what vidtok.model does. Shapes are the tiny presets'
(batch 2, 19 padded frames). One JSON line per shape, also appended to benchmarks/results/fused_norm_silu.jsonl.

Inside a training step: `git apply benchmarks/probes/candidates/fused_norm_silu.patch` in a worktree (on top of
benchmarks/probes/candidates/step_speed.patch) makes ResBlock call `layer_norm_silu` under autograd; then
`python -m benchmarks.probes.train_step_ab --against <main> --cases tiny_kl_causal_444 --repeats 5` from that
worktree (benchmarks/README.md records what it gave). This file is a probe, not part of the library: a kernel that
has to be compiled on the user's machine is a dependency the project has not taken on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.cpp_extension import load_inline

from benchmarks.harness import add_out_argument, argument_parser, cpu_name, emit, median_seconds, timestamp

CPP = r"""
#include <torch/extension.h>
#include <omp.h>
#include <cmath>
#include <vector>

std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor w, torch::Tensor b, double eps) {
  const int64_t C = x.size(1);
  const int64_t P = x.numel() / C;
  auto out = torch::empty_like(x);
  auto mean = torch::empty({P}, x.options());
  auto rstd = torch::empty({P}, x.options());
  const float* xp = x.data_ptr<float>(); const float* wp = w.data_ptr<float>(); const float* bp = b.data_ptr<float>();
  float* op = out.data_ptr<float>(); float* mp = mean.data_ptr<float>(); float* rp = rstd.data_ptr<float>();
  #pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < P; ++p) {
    const float* row = xp + p * C; float* o = op + p * C;
    float s = 0.f, ss = 0.f;
    #pragma omp simd reduction(+:s,ss)
    for (int64_t c = 0; c < C; ++c) { s += row[c]; ss += row[c] * row[c]; }
    const float m = s / C;
    const float var = std::max(ss / C - m * m, 0.f);
    const float r = 1.f / std::sqrt(var + (float)eps);
    mp[p] = m; rp[p] = r;
    #pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float y = (row[c] - m) * r * wp[c] + bp[c];
      o[c] = y / (1.f + std::exp(-y));
    }
  }
  return {out, mean, rstd};
}

std::vector<torch::Tensor> backward(torch::Tensor g, torch::Tensor x, torch::Tensor w, torch::Tensor b,
                                    torch::Tensor mean, torch::Tensor rstd) {
  const int64_t C = x.size(1);
  const int64_t P = x.numel() / C;
  auto dx = torch::empty_like(x);
  const int nt = omp_get_max_threads();
  std::vector<float> dwb(2 * C * nt, 0.f);
  const float* gp = g.data_ptr<float>(); const float* xp = x.data_ptr<float>(); const float* wp = w.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  const float* mp = mean.data_ptr<float>(); const float* rp = rstd.data_ptr<float>();
  float* dp = dx.data_ptr<float>();
  #pragma omp parallel
  {
    float* dw = dwb.data() + 2 * C * omp_get_thread_num(); float* db = dw + C;
    std::vector<float> dxh(C), xh(C);
    #pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      const float* row = xp + p * C; const float* gr = gp + p * C; float* d = dp + p * C;
      const float m = mp[p], r = rp[p];
      float a1 = 0.f, a2 = 0.f;
      #pragma omp simd reduction(+:a1,a2)
      for (int64_t c = 0; c < C; ++c) {
        const float xhat = (row[c] - m) * r; const float y = xhat * wp[c] + bp[c];
        const float s = 1.f / (1.f + std::exp(-y));
        const float dy = gr[c] * s * (1.f + y * (1.f - s));
        dw[c] += dy * xhat; db[c] += dy;
        const float v = dy * wp[c]; dxh[c] = v; xh[c] = xhat; a1 += v; a2 += v * xhat;
      }
      a1 /= C; a2 /= C;
      #pragma omp simd
      for (int64_t c = 0; c < C; ++c) d[c] = r * (dxh[c] - a1 - xh[c] * a2);
    }
  }
  auto dw = torch::zeros({C}, x.options()); auto db = torch::zeros({C}, x.options());
  float* dwp = dw.data_ptr<float>(); float* dbp = db.data_ptr<float>();
  for (int t = 0; t < nt; ++t) {
    for (int64_t c = 0; c < C; ++c) { dwp[c] += dwb[2 * C * t + c]; dbp[c] += dwb[2 * C * t + C + c]; }
  }
  return {dx, dw, db};
}
"""

CHANNELS_LAST = torch.channels_last_3d
_kernels = None


def kernels():  # noqa: ANN201 (a compiled extension module)
    """The compiled extension, built once per process (torch caches the build under ~/.cache/torch_extensions)."""
    global _kernels
    if _kernels is None:
        _kernels = load_inline(
            name="vidtok_fused_norm_silu",
            cpp_sources=CPP,
            functions=["forward", "backward"],
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-ffast-math"],
            extra_ldflags=["-fopenmp"],
        )
    return _kernels


class LayerNormSiLU(torch.autograd.Function):
    """silu(layer_norm over channels(x)) for a channels-last fp32 (B, C, T, H, W) tensor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ANN001
        out, mean, rstd = kernels().forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205 (autograd's signature)
        x, weight, bias, mean, rstd = ctx.saved_tensors
        dx, dw, db = kernels().backward(grad.contiguous(memory_format=CHANNELS_LAST), x, weight, bias, mean, rstd)
        return dx, dw, db, None


def layer_norm_silu(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor | None:
    """The fused op, or None where it does not apply (not 5D channels-last fp32, or one channel)."""
    if x.dim() != 5 or x.dtype != torch.float32 or x.shape[1] == 1 or not x.is_contiguous(memory_format=CHANNELS_LAST):
        return None
    return LayerNormSiLU.apply(x, norm.weight, norm.bias, norm.eps)


def eager(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    normed = F.layer_norm(x.movedim(1, -1), norm.normalized_shape, norm.weight, norm.bias, norm.eps).movedim(-1, 1)
    return F.silu(normed)


def timings(x: torch.Tensor, norm: torch.nn.LayerNorm, grad: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median milliseconds of eager and fused, forward alone and forward + backward."""
    inputs = (x, norm.weight, norm.bias)
    ops = {"eager": eager, "fused": layer_norm_silu}
    row = {}
    for name, op in ops.items():
        row[f"{name}_forward_ms"] = median_seconds(lambda op=op: op(x, norm), repeats) * 1e3
        backward = median_seconds(lambda op=op: torch.autograd.grad(op(x, norm), inputs, grad), repeats)
        row[f"{name}_forward_backward_ms"] = backward * 1e3
    return {k: round(v, 3) for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    add_out_argument(parser, "fused_norm_silu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for channels, size in ((16, 64), (32, 32), (64, 16), (128, 16)):
        norm = torch.nn.LayerNorm(channels, eps=1e-6)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        x = torch.randn(2, channels, 19, size, size).contiguous(memory_format=CHANNELS_LAST).requires_grad_(True)
        grad = torch.randn_like(x)
        inputs = (x, norm.weight, norm.bias)
        reference = torch.autograd.grad(eager(x, norm), inputs, grad)
        fused = torch.autograd.grad(layer_norm_silu(x, norm), inputs, grad)
        error = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(fused, reference, strict=True))
        row = {
            "benchmark": "fused_norm_silu",
            "shape": [2, channels, 19, size, size],
            "max_relative_error": error,
            **timings(x, norm, grad, args.repeats),
            "threads": args.threads,
            "torch": torch.__version__,
            "cpu": cpu_name(),
            "time": timestamp(),
        }
        if error > 1e-4:
            raise SystemExit(f"fused kernel disagrees with eager by {error:.2e} at {row['shape']}")
        emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
