"""How the network's arithmetic runs on the hardware: the one place that chooses kernels and memory layouts.

    python -c "import torch; from vidtok.model import kernels; print(kernels.silu(torch.randn(3)))"

vidtok/model/vidtok.py says *what* the network computes and calls these functions for it; which kernel computes it
(oneDNN on CPU, a low-precision fallback, in place or not, channels-last) is decided here and nowhere else. Every
function returns what its plain PyTorch counterpart returns, bit for bit; only speed and memory differ.

- Activations are channels-last (B, C, T, H, W) tensors (`channels_last`, `empty_frames`): the channel LayerNorm
  then reads a contiguous last axis and every convolution runs as a 3D convolution without permute copies.
- `conv3d` routes CPU convolutions through oneDNN (and rounds bf16 / fp16 operands for CPUs without native kernels).
- `silu`, `add` and `blend` write into their (fresh) input when no autograd graph is recorded: inference keeps two
  frame-sized buffers where the out-of-place arithmetic would allocate five.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """`x` in the channels-last 3D layout every layer hands on (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last_3d)


def empty_frames(like: torch.Tensor, frames: int) -> torch.Tensor:
    """An uninitialised channels-last (B, C, frames, H, W) tensor shaped like `like` in the other dimensions."""
    b, c, _, h, w = like.shape
    return torch.empty(b, c, frames, h, w, dtype=like.dtype, device=like.device, memory_format=torch.channels_last_3d)


def has_native(dtype: torch.dtype) -> bool:
    """Whether oneDNN has native CPU kernels for a low-precision dtype (AVX512-BF16 / AMX / AVX-NE-CONVERT)."""
    if dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return dtype == torch.float16 and torch.ops.mkldnn._is_mkldnn_fp16_supported()


def conv3d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1, 1), padding=(0, 0, 0)
) -> torch.Tensor:
    """F.conv3d, but on CPU always through oneDNN (mkldnn).

    fp32: PyTorch sends a batch-1 input whose N*C*T*H is at most 20,480 to its slow reference kernel (im2col +
    GEMM); for the tiny presets and the deep levels of the big ones that is 3-15x slower than oneDNN on the same
    shapes (benchmarks/README.md). The oneDNN op has its own autograd formula, so training is unaffected.

    bf16 / fp16 (autocast or low-precision tensors) on a CPU without native kernels for them: PyTorch's fallback
    is a reference kernel ~600x slower than fp32 (35 s for one 128-channel 3x3x3 conv on 10x32x32 on an AVX2
    machine). Instead the operands are rounded to the low precision and multiplied in fp32 by oneDNN: the same
    numbers a bf16 convolution with fp32 accumulation (GPUs, AMX) produces, at fp32 speed, returned in bf16/fp16.

    Under torch.compile it is plain F.conv3d: inductor picks the convolution kernels itself (the oneDNN op has no
    fake-tensor rule to trace through).
    """
    if torch.compiler.is_compiling():
        return F.conv3d(x, weight, bias, stride, padding)
    if x.device.type != "cpu" or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return F.conv3d(x, weight, bias, stride, padding)
    args = (list(padding), list(stride), [1, 1, 1], 1)
    low = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    if low is None and x.dtype in (torch.bfloat16, torch.float16):
        low = x.dtype
    if low is None:
        if x.dtype == weight.dtype == torch.float32:
            return torch.ops.aten.mkldnn_convolution(x, weight, bias, *args)
    elif not has_native(low):

        def rounded(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(low).float()

        return torch.ops.aten.mkldnn_convolution(rounded(x), rounded(weight), rounded(bias), *args).to(low)
    return F.conv3d(x, weight, bias, stride, padding)


def layer_norm_channels(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """`norm` (a LayerNorm over C) at every (t, h, w) position of a (B, C, T, H, W) tensor."""
    # On a channels-last tensor movedim is a free view and layer_norm reads a contiguous last axis.
    y = F.layer_norm(x.movedim(1, -1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return y.movedim(-1, 1)


def silu(x: torch.Tensor) -> torch.Tensor:
    """F.silu; in place when no autograd graph is recorded (callers pass a fresh norm output nothing else reads)."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + y; written into `x` (a fresh tensor nothing else reads) when no autograd graph is recorded."""
    return x.add_(y) if not torch.is_grad_enabled() else x + y


def blend(smooth: torch.Tensor, learned: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """alpha * smooth + (1 - alpha) * learned; without autograd (and equal dtypes) written into the two inputs,
    fresh tensors nothing else reads: two frame-sized buffers instead of five, the same arithmetic."""
    if not torch.is_grad_enabled() and smooth.dtype == learned.dtype:
        return learned.mul_(1 - alpha).add_(smooth.mul_(alpha))
    return alpha * smooth + (1 - alpha) * learned


def avg_pool_time(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Average over `kernel` frames every `stride` frames, computed in fp32 (avg_pool3d has no CPU bfloat16
    kernel), returned channels-last in the input's dtype."""
    return channels_last(F.avg_pool3d(x.float(), (kernel, 1, 1), (stride, 1, 1)).to(x.dtype))
