"""The VidTok autoencoder (Tang et al., "VidTok: A Versatile and Open-Source Video Tokenizer", arXiv 2412.13061).

    python -c "from vidtok import VidTok; m = VidTok.from_preset('tiny_fsq_causal_444'); print(m)"

The network only, read top to bottom: layers -> blocks -> encoder -> decoder -> the autoencoder -> saving and
loading. The configuration (ModelConfig) and the named presets are in vidtok/model/config.py, the regularizers in
quantizers.py, the trivial-codec shortcut in trivial.py; which kernels run the arithmetic is kernels.py's choice and
chunked streaming and tiling are streaming.py's.

Video tensors are (B, C, T, H, W) with values in [-1, 1]. The network is factorised: 2D res-blocks run on each
frame, 1D temporal res-blocks run on each pixel's time series, 3D convolutions fuse both at the input, output
and in the mid block, and AlphaBlender layers resample time as alpha * (parameter-free pool / repeat) +
(1 - alpha) * (3D conv), alpha = sigmoid(mix_factor). Causal models only look at past frames: every temporal
convolution is padded on the left (v1.1: copies of the first frame; v1.0: zeros).

Implementation notes (why it looks the way it does):
- Every convolution runs as a 3D convolution on the channels-last (B, C, T, H, W) tensor: a 2D conv is a
  (1, k, k) kernel and a temporal conv a (k, 1, 1) kernel. That removes the (B*T, C, H, W) <-> (B*H*W, C, T)
  permute copies of the reference code and lets the channel LayerNorm run on a contiguous last axis.
  Parameters keep the shapes and names of the reference checkpoints (Conv2d / Conv1d weights are viewed as 3D);
  every conv-like layer exposes them as `.weight` and `.bias`.
- The layers that look back in time (causal convolutions, the temporal resamplers, the shortcut) have a `stream`
  attribute: None for whole clips, where they pad and keep nothing; the streaming driver (streaming.py) gives
  them its state objects, which carry what a chunk leaves for the next one.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidtok._files import atomic_folder, sha256_file
from vidtok.model import kernels
from vidtok.model.config import PRESETS, ModelConfig, get_preset
from vidtok.model.quantizers import Regularizer, build_regularizer
from vidtok.model.trivial import TrivialShortcut

# ================================================================================================= layers


class Conv3d(nn.Conv3d):
    """nn.Conv3d through `kernels.conv3d` (same parameters and checkpoint keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.conv3d(x, self.weight, self.bias, self.stride, self.padding)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis at every (t, h, w) position (eps 1e-6, affine)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.layer_norm_channels(x, self.norm)


class FrameConv2d(nn.Conv2d):
    """A 2D convolution applied to every frame of a (B, C, T, H, W) video (a (1, k, k) 3D kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.conv3d(x, self.weight.unsqueeze(2), self.bias, (1, *self.stride), (0, *self.padding))


class TimeConv1d(nn.Conv1d):
    """A non-causal 1D convolution over time at every pixel (a (k, 1, 1) 3D kernel, zero padding k//2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight[..., None, None]
        return kernels.conv3d(x, weight, self.bias, (self.stride[0], 1, 1), (self.padding[0], 0, 0))


def _pad_past(x: torch.Tensor, frames: int, mode: str) -> torch.Tensor:
    """Prepend `frames` frames: copies of frame 0 ('replicate') or zeros."""
    if frames == 0:
        return x
    if mode == "replicate":
        pad = x[:, :, :1].expand(-1, -1, frames, -1, -1)
    else:
        pad = x.new_zeros(x.shape[0], x.shape[1], frames, *x.shape[3:])
    # torch.cat takes its memory format from the inputs: an expanded (stride-0) pad would make it write a
    # channels-first result, a transposing copy that every later layer then pays for again.
    return torch.cat([kernels.channels_last(pad), x], dim=2)


class CausalTime(nn.Module):
    """Base of causal temporal layers: a temporal kernel k with stride s sees k - s frames before its input.

    A whole clip gets them as padding in front (reference code: dilation*(k-1) + (1-s)). A stream gets the input
    frames the previous chunk left unconsumed instead: `stream` is then the streaming driver's state object for
    this layer (streaming.CausalTail), so the next chunk continues exactly where the previous one stopped.
    """

    kernel_t: int = 1
    stride_t: int = 1

    def __init__(self, pad_mode: str):
        super().__init__()
        self.pad_mode = pad_mode
        self.stream: Any = None

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """The whole-clip input: k - s frames of padding in front of `x`."""
        return _pad_past(x, self.kernel_t - self.stride_t, self.pad_mode)

    def with_past(self, x: torch.Tensor) -> torch.Tensor:
        """`x` with the frames the kernel needs before it."""
        return self.pad(x) if self.stream is None else self.stream.extend(self, x)

    def windows(self, length: int) -> int:
        """Output frames of an input of `length` frames (past included)."""
        return max(0, (length - self.kernel_t) // self.stride_t + 1)


class CausalConv(CausalTime):
    """A causal layer wrapping one convolution (`self.conv`): its weight and bias are the layer's, the interface
    every conv-like layer shares (Conv3d, FrameConv2d, TimeConv1d), so no caller needs to look inside."""

    conv: nn.Module

    @property
    def weight(self) -> nn.Parameter:
        return self.conv.weight

    @property
    def bias(self) -> nn.Parameter:
        return self.conv.bias


class CausalConv3d(CausalConv):
    """3D convolution that sees only the current and past frames; spatial padding k//2 with zeros."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, time_stride: int = 1, pad_mode: str = "replicate"):
        super().__init__(pad_mode)
        self.kernel_t, self.stride_t = kernel_size, time_stride
        p = kernel_size // 2
        self.conv = Conv3d(cin, cout, kernel_size, stride=(time_stride, 1, 1), padding=(0, p, p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.with_past(x)
        if self.windows(y.shape[2]) == 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0, *x.shape[3:])
        return self.conv(y)


class CausalConv1d(CausalConv):
    """1D convolution over time at every pixel, causal (left padding k-1)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, pad_mode: str = "replicate"):
        super().__init__(pad_mode)
        self.kernel_t = kernel_size
        self.conv = nn.Conv1d(cin, cout, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.conv3d(self.with_past(x), self.conv.weight[..., None, None], self.conv.bias)


def _make_conv(kind: str, cin: int, cout: int, kernel_size: int, causal: bool, pad_mode: str) -> nn.Module:
    """Convolution of a block kind: '2d' per frame, '1d' per pixel over time, '3d' both."""
    p = kernel_size // 2
    if kind == "2d":
        return FrameConv2d(cin, cout, kernel_size, padding=p)
    if kind == "1d":
        return (
            CausalConv1d(cin, cout, kernel_size, pad_mode) if causal else TimeConv1d(cin, cout, kernel_size, padding=p)
        )
    return (
        CausalConv3d(cin, cout, kernel_size, pad_mode=pad_mode) if causal else Conv3d(cin, cout, kernel_size, padding=p)
    )


# ================================================================================================= blocks


class ResBlock(nn.Module):
    """norm -> SiLU -> conv -> norm -> SiLU -> dropout -> conv, plus x (through a 1x1 conv if channels change).

    kind '2d' is VidTok's spatial block, '1d' its temporal block (second conv zero-initialised so every temporal
    block starts as the identity), '3d' the mid-block fusion.
    """

    def __init__(
        self, cin: int, cout: int, kind: str, causal: bool, pad_mode: str, dropout: float = 0.0, zero_init: bool = False
    ):
        super().__init__()
        self.norm1 = ChannelLayerNorm(cin)
        self.conv1 = _make_conv(kind, cin, cout, 3, causal, pad_mode)
        self.norm2 = ChannelLayerNorm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _make_conv(kind, cout, cout, 3, causal, pad_mode)
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)
        if cin != cout:
            self.nin_shortcut = _make_conv(kind, cin, cout, 1, causal, pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(kernels.silu(self.norm1(x)))
        h = self.norm2(h)  # rebinding frees conv1's output before conv2 allocates (inference peak memory)
        h = self.conv2(self.dropout(kernels.silu(h)))
        return kernels.add(h, self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x)


class FrameAttention(nn.Module):
    """Single-head self-attention over the H*W positions of each frame separately (no attention across time).

    q, k, v and the output projection are 1x1x1 convolutions in the reference code; here they run as one
    channels-last matmul each on the (B, T, H, W, C) view.
    """

    def __init__(self, channels: int, causal: bool, pad_mode: str):
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        for name in ("q", "k", "v", "proj_out"):
            conv = CausalConv3d(channels, channels, 1, pad_mode=pad_mode) if causal else Conv3d(channels, channels, 1)
            setattr(self, name, conv)

    @staticmethod
    def _linear(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, conv.weight.flatten(1), conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        hidden = self.norm(x).movedim(1, -1)  # (B, T, H, W, C)
        q, k, v = (self._linear(m, hidden).reshape(b * t, h * w, c) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C), one head of dim C
        out = self._linear(self.proj_out, out.reshape(b, t, h, w, c)).movedim(-1, 1)
        return x + out


class SpatialDownsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = FrameConv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(kernels.channels_last(F.pad(x, (0, 1, 0, 1))))


class SpatialUpsample(nn.Module):
    """Nearest x2 in H and W (computed in fp32, as the reference), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = FrameConv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x.float(), scale_factor=(1.0, 2.0, 2.0), mode="nearest").to(x.dtype)
        return self.conv(up)


def _register_mix_factor(module: nn.Module, mode: str, alpha: str, alpha_init: float) -> None:
    """AlphaBlender's mix_factor: a learnable Parameter, or for the fixed-alpha ablation a saved buffer."""
    module.mode = mode
    if mode == "alphablender":
        init = torch.tensor([alpha_init])
        if alpha == "learnable":
            module.mix_factor = nn.Parameter(init)
        else:
            module.register_buffer("mix_factor", init)


def _alpha_blend(module: nn.Module, smooth: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """alpha * smooth + (1 - alpha) * learned with alpha = sigmoid(mix_factor)."""
    if module.mode == "conv":  # the "w/o AlphaBlender" ablation: the conv path alone
        return learned
    return kernels.blend(smooth, learned, torch.sigmoid(module.mix_factor).to(learned.dtype))


class TemporalDownsample(CausalTime):
    """AlphaBlender x2 down in time: alpha * AvgPool(3, stride 2) + (1 - alpha) * Conv3d(3, stride 2).

    Causal: one frame of past padding, so output j covers input frames 2j-1, 2j, 2j+1 (20 -> 10 -> 5).
    Non-causal: one zero frame appended at the end, 16 -> 8 -> 4.
    """

    kernel_t, stride_t = 3, 2

    def __init__(self, channels: int, causal: bool, pad_mode: str, mode: str, alpha: str, alpha_init: float):
        super().__init__(pad_mode)
        _register_mix_factor(self, mode, alpha, alpha_init)
        self.causal = causal
        if causal:
            self.conv = CausalConv3d(channels, channels, 3, time_stride=2, pad_mode=pad_mode)
        else:
            self.conv = Conv3d(channels, channels, 3, stride=(2, 1, 1), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            y = self.with_past(x)
            if self.windows(y.shape[2]) == 0:
                return x[:, :, :0]
            learned = self.conv.conv(y)  # the shared, already padded input; the inner conv keeps no state
        else:
            y = F.pad(x, (0, 0, 0, 0, 0, 1))
            learned = self.conv(y)
        if self.mode == "conv":
            return learned
        return _alpha_blend(self, kernels.avg_pool_time(y, 3, 2), learned)


def _linear_upsample_into(seq: torch.Tensor, out: torch.Tensor) -> None:
    """Linear x2 upsampling in time with clamped edges (F.interpolate 'trilinear', align_corners=False), written
    into `out` (2m frames for a segment s_0..s_{m-1}): even output 2k = 0.75 s_k + 0.25 s_{k-1} (s_0 at the start),
    odd output 2k+1 = 0.75 s_k + 0.25 s_{k+1} (s_{m-1} at the end). Writing in place saves the stack/cat copies."""
    if seq.shape[2] == 0:
        return
    out[:, :, 0] = seq[:, :, 0]
    out[:, :, -1] = seq[:, :, -1]
    if seq.shape[2] > 1:
        out[:, :, 2::2] = torch.lerp(seq[:, :, 1:], seq[:, :, :-1], 0.25)
        out[:, :, 1:-1:2] = torch.lerp(seq[:, :, :-1], seq[:, :, 1:], 0.25)


class TemporalUpsample(nn.Module):
    """AlphaBlender x2 up in time: u = upsample(x); alpha * u + (1 - alpha) * Conv3d(3)(u).

    Causal 'trilinear' (v1.1) interpolates the first `first_frames` inputs (those of the first latent) on their
    own and the rest as one sequence; each output frame then depends on at most one future input, which a stream
    (`stream`: streaming.UpsampleHold) waits for before emitting the frame. 'nearest' repeats frames.
    """

    def __init__(
        self,
        channels: int,
        causal: bool,
        pad_mode: str,
        mode: str,
        alpha: str,
        alpha_init: float,
        interpolation: str,
        first_frames: int,
    ):
        super().__init__()
        _register_mix_factor(self, mode, alpha, alpha_init)
        self.causal = causal
        self.interpolation = interpolation if causal else "nearest"
        self.first_frames = first_frames
        self.conv = (
            CausalConv3d(channels, channels, 3, pad_mode=pad_mode)
            if causal
            else Conv3d(channels, channels, 3, padding=1)
        )
        self.stream: Any = None

    def interpolate(self, seq: torch.Tensor) -> torch.Tensor:
        """The 2m linearly interpolated frames of one segment of m inputs."""
        out = kernels.empty_frames(seq, 2 * seq.shape[2])
        _linear_upsample_into(seq, out)
        return out

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolation == "nearest":
            out = kernels.empty_frames(x, 2 * x.shape[2])
            out[:, :, 0::2] = x
            out[:, :, 1::2] = x
            return out
        if self.stream is not None:
            return self.stream.upsample(self, x)
        n = self.first_frames
        out = kernels.empty_frames(x, 2 * x.shape[2])
        _linear_upsample_into(x[:, :, :n], out[:, :, : 2 * n])
        if x.shape[2] > n:
            _linear_upsample_into(x[:, :, n:], out[:, :, 2 * n :])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = kernels.channels_last(self._upsample(x))
        if up.shape[2] == 0:
            return up
        return _alpha_blend(self, up, self.conv(up))


# ================================================================================================= encoder


class _Level(nn.Module):
    """Holder that gives checkpoint keys their reference names (down.{i}.block.{j}, down.{i}.downsample)."""


def _make_shortcut(cfg: ModelConfig) -> TrivialShortcut | None:
    return TrivialShortcut(cfg.temporal_factor, cfg.spatial_factor, cfg.causal) if cfg.shortcut == "trivial" else None


def _block_pair(cfg: ModelConfig, cin: int, cout: int) -> tuple[ResBlock, ResBlock | None]:
    """One res-block step of a level: a 2D block and a zero-initialised 1D temporal block (one 3D block if
    fully_3d)."""
    causal, pad = cfg.causal, cfg.causal_padding
    if cfg.fully_3d:
        return ResBlock(cin, cout, "3d", causal, pad, cfg.dropout), None
    block = ResBlock(cin, cout, "2d", causal, pad, cfg.dropout)
    return block, ResBlock(cout, cout, "1d", causal, pad, cfg.dropout, zero_init=True)


def _mid_block(cfg: ModelConfig, channels: int) -> _Level:
    """3D res-block, per-frame attention, 3D res-block (mid.block_1, mid.attn_1, mid.block_2)."""
    mid = _Level()
    mid.block_1 = ResBlock(channels, channels, "3d", cfg.causal, cfg.causal_padding, cfg.dropout)
    mid.attn_1 = FrameAttention(channels, cfg.causal, cfg.causal_padding)
    mid.block_2 = ResBlock(channels, channels, "3d", cfg.causal, cfg.causal_padding, cfg.dropout)
    return mid


class _Stack(nn.Module):
    """What the encoder and decoder share: gradient checkpointing of blocks and the mid block."""

    gradient_checkpointing: bool

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def _blocks(self, level: nn.Module, temporal: nn.Module, x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(level.block):
            x = self._run(block, x)
            if len(temporal.block):
                x = self._run(temporal.block[j], x)
        return x

    def _mid(self, x: torch.Tensor) -> torch.Tensor:
        x = self._run(self.mid.block_1, x)
        x = self._run(self.mid.attn_1, x)
        return self._run(self.mid.block_2, x)


class Encoder(_Stack):
    """Video (B, 3, T, H, W) -> encoder features (B, C_enc, t, h, w); C_enc is 2z for KL, z otherwise."""

    def __init__(self, cfg: ModelConfig, out_channels: int):
        super().__init__()
        self.cfg = cfg
        causal, pad = cfg.causal, cfg.causal_padding
        self.gradient_checkpointing = False
        self.conv_in = _make_conv("3d", cfg.in_channels, cfg.ch, 3, causal, pad)
        self.down = nn.ModuleList()
        self.down_temporal = nn.ModuleList()
        block_in = cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            block_out = cfg.ch * mult
            level, temporal = _Level(), _Level()
            level.block, temporal.block = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                block, time_block = _block_pair(cfg, block_in, block_out)
                level.block.append(block)
                if time_block is not None:
                    temporal.block.append(time_block)
                block_in = block_out
            if i in cfg.spatial_ds:
                level.downsample = SpatialDownsample(block_in)
                if i in cfg.tempo_ds:
                    temporal.downsample = TemporalDownsample(
                        block_in, causal, pad, cfg.temporal_resampler, cfg.alpha, cfg.alpha_init
                    )
            self.down.append(level)
            self.down_temporal.append(temporal)
        self.mid = _mid_block(cfg, block_in)
        self.norm_out = ChannelLayerNorm(block_in)
        self.conv_out = _make_conv("3d", block_in, out_channels, 3, causal, pad)
        self.shortcut = _make_shortcut(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_global(self.forward_local(x))

    def local_modules(self) -> nn.ModuleList:
        """The layers `forward_local` runs: they see a bounded neighbourhood, so they can run on spatial tiles."""
        return nn.ModuleList([self.conv_in, self.down, self.down_temporal])

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        """conv_in and the down levels: video -> features at the latent resolution (convolutions only). With the
        trivial shortcut, its samples of the video travel along as three more channels (tiles blend them too)."""
        samples = self.shortcut.samples(x) if self.shortcut is not None else None
        x = self.conv_in(kernels.channels_last(x))
        for level, temporal in zip(self.down, self.down_temporal):
            x = self._blocks(level, temporal, x)
            if hasattr(level, "downsample"):
                x = level.downsample(x)
                if hasattr(temporal, "downsample"):
                    x = temporal.downsample(x)
                    if x.shape[2] == 0:
                        raise ValueError("streaming chunk too short: a temporal downsample produced no frame")
        return x if samples is None else torch.cat([x, samples.to(x.dtype)], dim=1)

    def forward_global(self, x: torch.Tensor) -> torch.Tensor:
        """The mid block (its attention spans the whole frame) and the output conv, at the latent resolution."""
        samples = None
        if self.shortcut is not None:
            x, samples = kernels.channels_last(x[:, :-3]), x[:, -3:]
        x = self.conv_out(kernels.silu(self.norm_out(self._mid(x))))
        return x if samples is None else torch.cat([x[:, :3] + samples, x[:, 3:]], dim=1)


# ================================================================================================= decoder


class Decoder(_Stack):
    """Latent (B, z, t, h, w) -> video (B, 3, T', H, W); causal models give t * t_factor frames."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        causal, pad = cfg.causal, cfg.causal_padding
        self.gradient_checkpointing = False
        n = len(cfg.ch_mult)
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = _make_conv("3d", cfg.z_channels, block_in, 3, causal, pad)
        self.mid = _mid_block(cfg, block_in)
        # Each level has num_res_blocks + 1 block pairs; levels are stored low to high (up.0 is full resolution)
        # but run from the deepest level up.
        up: list[nn.Module] = [None] * n  # type: ignore[list-item]
        up_temporal: list[nn.Module] = [None] * n  # type: ignore[list-item]
        first_frames = 1  # inputs that come from the first latent: 1, then 2, 4 after each temporal up
        for i in reversed(range(n)):
            block_out = cfg.ch * cfg.ch_mult[i]
            level, temporal = _Level(), _Level()
            level.block, temporal.block = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                block, time_block = _block_pair(cfg, block_in, block_out)
                level.block.append(block)
                if time_block is not None:
                    temporal.block.append(time_block)
                block_in = block_out
            if i in cfg.spatial_us:
                level.upsample = SpatialUpsample(block_in)
                if i in cfg.tempo_us:
                    temporal.upsample = TemporalUpsample(
                        block_in,
                        causal,
                        pad,
                        cfg.temporal_resampler,
                        cfg.alpha,
                        cfg.alpha_init,
                        cfg.temporal_upsample,
                        first_frames,
                    )
                    first_frames *= 2
            up[i], up_temporal[i] = level, temporal
        self.up = nn.ModuleList(up)
        self.up_temporal = nn.ModuleList(up_temporal)
        self.norm_out = ChannelLayerNorm(block_in)
        self.conv_out = _make_conv("3d", block_in, 3, 3, causal, pad)
        self.shortcut = _make_shortcut(cfg)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_local(self.forward_global(z))

    def local_modules(self) -> nn.ModuleList:
        """The layers `forward_local` runs: they see a bounded neighbourhood, so they can run on spatial tiles."""
        shortcut = [self.shortcut] if self.shortcut is not None else []
        return nn.ModuleList([self.up, self.up_temporal, self.norm_out, self.conv_out, *shortcut])

    def forward_global(self, z: torch.Tensor) -> torch.Tensor:
        """conv_in and the mid block (its attention spans the whole frame), at the latent resolution."""
        x = self._mid(self.conv_in(kernels.channels_last(z)))
        # The trivial shortcut's latents travel along as three more channels, so tiles upsample their own part.
        return x if self.shortcut is None else torch.cat([x, z[:, :3].to(x.dtype)], dim=1)

    def forward_local(
        self, x: torch.Tensor, up_levels: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The up levels and the output conv: mid-block features -> video (convolutions only). `up_levels` runs
        them instead of `self.up_levels` (the streaming driver runs them on pieces of frames)."""
        run = self.up_levels if up_levels is None else up_levels
        if self.shortcut is None:
            return run(x)
        out = run(kernels.channels_last(x[:, :-3]))
        return out + self.shortcut.upsample(x[:, -3:], out.shape[2]).to(out.dtype)

    @property
    def num_levels(self) -> int:
        return len(self.up)

    def up_levels(self, x: torch.Tensor) -> torch.Tensor:
        """Every up level from the deepest, then the output norm and conv."""
        for index in range(self.num_levels):
            x = self.up_level(index, x)
        return self.output(x)

    def up_level(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Up level `index`, counted from the deepest: its block pairs, then its spatial and temporal upsampling."""
        level, temporal = self.up[-1 - index], self.up_temporal[-1 - index]
        x = self._blocks(level, temporal, x)
        if hasattr(level, "upsample"):
            x = level.upsample(x)
            if hasattr(temporal, "upsample"):
                x = temporal.upsample(x)
        return x

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(kernels.silu(self.norm_out(x)))

    def level_peak_per_frame(self, index: int, x: torch.Tensor) -> int:
        """Elements of the largest activation of up level `index` (counted from the deepest) per input frame."""
        level, temporal = self.up[-1 - index], self.up_temporal[-1 - index]
        channels = max(x.shape[1], self.cfg.ch * self.cfg.ch_mult[-1 - index])
        growth = (4 if hasattr(level, "upsample") else 1) * (2 if hasattr(temporal, "upsample") else 1)
        return x.shape[0] * channels * x.shape[3] * x.shape[4] * growth


# ================================================================================================= autoencoder


@dataclass
class Encoded:
    """Result of `VidTok.encode`.

    latents: what the decoder reads (B, z, t, h, w): quantized codes, the KL mean (or a sample), or raw features.
    indices: (B, t, h, w) int64 token ids for discrete regularizers.
    num_frames: T of the input clip; `decode(latents, num_frames)` gives back exactly T frames.
    """

    latents: torch.Tensor
    num_frames: int
    indices: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    logvar: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


def _nearest_multiples(value: int, factor: int) -> str:
    low = value // factor * factor
    return f"{low} or {low + factor}" if low > 0 else f"{factor}"


# A shortcut model starts with this posterior log-variance (std e^-4 = 0.018 on the [-1, 1] scale): sampling noise of
# std 1 (log-variance 0) on the trivial codec's samples would start it far below that codec.
SHORTCUT_LOGVAR_INIT = -8.0


def _start_as_trivial_codec(model: VidTok) -> None:
    """Zero the encoder's and decoder's output convolutions (the KL log-variance to SHORTCUT_LOGVAR_INIT): the
    untrained shortcut model reconstructs exactly what the trivial codec does."""
    for conv in (model.encoder.conv_out, model.decoder.conv_out):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    if model.config.regularizer == "kl":
        nn.init.constant_(model.encoder.conv_out.bias[model.config.z_channels :], SHORTCUT_LOGVAR_INIT)


class VidTok(nn.Module):
    """The VidTok autoencoder: encoder, regularizer (KL / FSQ / VQ / LFQ / none) and decoder.

    Frame rules: causal models take any T >= 1 and return T frames (v1.1 semantics: (-T) mod t_factor copies of
    the first frame are put in front, so 17 frames -> 5 latent frames at factor 4, the first latent seeing only
    frame 0); non-causal models need T divisible by the temporal factor. H and W must be divisible by the spatial
    factor.
    """

    def __init__(self, config: ModelConfig, name: str = "custom"):
        super().__init__()
        self.config = config
        self.name = name
        # Registered as "regularization": the prefix of its checkpoint keys in upstream's and every saved checkpoint.
        self.add_module("regularization", build_regularizer(config))
        self.encoder = Encoder(config, self.regularizer.encoder_channels)
        self.decoder = Decoder(config)
        if config.shortcut == "trivial":
            _start_as_trivial_codec(self)

    @property
    def regularizer(self) -> Regularizer:
        """The latent regularizer (vidtok.model.quantizers): KL, FSQ, LFQ, VQ or Identity."""
        return self.get_submodule("regularization")

    # ---------------------------------------------------------------------------------------- constructors

    @classmethod
    def from_preset(cls, name: str) -> VidTok:
        """A randomly initialised model of a named preset (`vidtok presets` lists them)."""
        return cls(get_preset(name), name=name)

    @classmethod
    def from_pretrained(cls, path: str, map_location: str | torch.device = "cpu") -> VidTok:
        """Load a `save_pretrained` folder (safetensors + JSON; nothing is unpickled)."""
        return load_pretrained(path, map_location=map_location)

    def save_pretrained(self, path: str, metadata: dict | None = None) -> None:
        save_pretrained(self, path, metadata=metadata)

    # ---------------------------------------------------------------------------------------- shape rules

    def check_video(self, video: torch.Tensor) -> None:
        """Raise ValueError naming the rule when `video` cannot be encoded by this model."""
        cfg = self.config
        if video.ndim != 5 or video.shape[1] != cfg.in_channels:
            raise ValueError(
                f"{self.name}: expected a video tensor (B, {cfg.in_channels}, T, H, W), got {tuple(video.shape)}"
            )
        if not video.is_floating_point():
            raise ValueError(f"{self.name}: expected float values in [-1, 1], got dtype {video.dtype}")
        t, h, w = video.shape[2:]
        s, tf = cfg.spatial_factor, cfg.temporal_factor
        for label, size in (("height", h), ("width", w)):
            if size % s or size == 0:
                raise ValueError(
                    f"{self.name}: {label} {size} is not divisible by the spatial factor {s}; "
                    f"nearest valid: {_nearest_multiples(size, s)}"
                )
        if t < 1:
            raise ValueError(f"{self.name}: the clip has no frames")
        if not cfg.causal and t % tf:
            raise ValueError(
                f"{self.name}: a non-causal model needs T divisible by the temporal factor {tf}, "
                f"got T={t}; nearest valid: {_nearest_multiples(t, tf)}"
            )

    def check_latents(self, latents: torch.Tensor) -> None:
        """Raise ValueError when `latents` are not (B, z_channels, t, h, w)."""
        if latents.ndim != 5 or latents.shape[1] != self.config.z_channels:
            raise ValueError(
                f"{self.name}: expected latents (B, {self.config.z_channels}, t, h, w), got {tuple(latents.shape)}"
            )

    def front_padding(self, num_frames: int) -> int:
        """Copies of frame 0 put in front of a causal clip: (-T) mod t_factor (17 -> 3, 16 -> 0, 1 -> 3)."""
        return (-num_frames) % self.config.temporal_factor if self.config.causal else 0

    def default_num_frames(self, latent_frames: int) -> int:
        """Frames a latent decodes to when T is not given: t_factor*(t-1)+1 causal (5 -> 17), t_factor*t otherwise."""
        tf = self.config.temporal_factor
        return tf * (latent_frames - 1) + 1 if self.config.causal else tf * latent_frames

    # ---------------------------------------------------------------------------------------- encode / decode

    def encode(self, video: torch.Tensor, sample: bool | None = None) -> Encoded:
        """Video (B, 3, T, H, W) in [-1, 1] -> `Encoded`. KL: the posterior mean unless `sample=True`."""
        self.check_video(video)
        num_frames = video.shape[2]
        v1_0_causal = self.config.causal and self.config.causal_padding == "zeros"
        if v1_0_causal and num_frames % self.config.temporal_factor != 1:
            warnings.warn(
                f"{self.name}: a v1.0 causal model on {num_frames} frames (not 1 + 4k): the upstream release pads 3 "
                "copies of frame 0 (none for 4k) and drops 3 output frames, this project pads to a multiple of 4 "
                "and keeps every frame (v1.1's rule), so results differ from upstream's; use 1 + 4k frames to match",
                stacklevel=2,
            )
        x = _pad_past(video, self.front_padding(num_frames), "replicate")
        q = self.regularizer(self.encoder(x), sample=sample)
        return Encoded(
            latents=q.latents, num_frames=num_frames, indices=q.indices, mean=q.mean, logvar=q.logvar, aux=q.aux
        )

    def trim_decoded(self, video: torch.Tensor, latent_frames: int, num_frames: int | None) -> torch.Tensor:
        """Drop the reconstruction of the front padding: keep the last `num_frames` frames."""
        if num_frames is None:
            num_frames = self.default_num_frames(latent_frames)
        if self.config.latent_frames(num_frames) != latent_frames:
            raise ValueError(
                f"{self.name}: {latent_frames} latent frames cannot decode to {num_frames} frames "
                f"(they cover {self.default_num_frames(latent_frames) if self.config.causal else ''}"
                f"..{self.config.temporal_factor * latent_frames} frames)"
            )
        return video[:, :, video.shape[2] - num_frames :]

    def decode(self, latents: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Latents (B, z, t, h, w) -> video (B, 3, T, H, W); T defaults to t_factor*(t-1)+1 for causal models."""
        self.check_latents(latents)
        video = self.decoder(latents).contiguous()
        return self.trim_decoded(video, latents.shape[2], num_frames)

    def indices_to_latents(self, indices: torch.Tensor) -> torch.Tensor:
        if not getattr(self.regularizer, "discrete", False):
            raise ValueError(f"{self.name}: regularizer {self.config.regularizer!r} has no token indices")
        if indices.ndim != 4:
            raise ValueError(f"{self.name}: expected token indices (B, t, h, w), got {tuple(indices.shape)}")
        size = self.config.num_codes
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size):
            raise ValueError(
                f"{self.name}: token indices must lie in [0, {size}), got [{int(indices.min())}, {int(indices.max())}]"
            )
        return self.regularizer.indices_to_latent(indices).to(self.decoder.conv_in.weight.dtype)

    def decode_indices(self, indices: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Token ids (B, t, h, w) of a discrete model -> video."""
        return self.decode(self.indices_to_latents(indices), num_frames)

    def forward(self, video: torch.Tensor, sample: bool | None = None) -> tuple[torch.Tensor, Encoded]:
        """Reconstruct `video`; returns (reconstruction with the input's T, Encoded with aux losses)."""
        encoded = self.encode(video, sample=sample)
        return self.decode(encoded.latents, encoded.num_frames), encoded

    def num_parameters(self) -> dict[str, int]:
        return {
            "encoder": sum(p.numel() for p in self.encoder.parameters()),
            "decoder": sum(p.numel() for p in self.decoder.parameters()),
            "regularizer": sum(p.numel() for p in self.regularizer.parameters()),
        }


# ================================================================================================= saving and loading

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: one line naming the file and the problem."""


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file`, with the same bytes for the same tensors and metadata in every process.

    The library serialises the header's metadata from a Rust HashMap, whose iteration order is seeded per
    process: the same checkpoint written by two runs differed in its header, so a re-run stage looked like a new
    output to DVC and to anyone comparing sha256s. Here the library writes the tensors without metadata (their
    header entries and data layout are deterministic) and the header is rewritten as sorted, compact JSON with the
    metadata added, padded with spaces to 8 bytes as the library does. Offsets in the header are relative to the
    end of the header, so its length may change freely."""
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"safetensors metadata must map str to str, got {dict(metadata)!r}")
    raw = memoryview(safetensors_bytes(dict(tensors)))
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(bytes(raw[8 : 8 + length]))
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(len(text).to_bytes(8, "little"))
        out.write(text)
        out.write(raw[8 + length :])


# ------------------------------------------------------------------------------------------------ validation


def check_state_dict(model: VidTok, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first mismatching keys (missing, unexpected, wrong shape)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (first: {'; '.join(wrong[:3])})")
    if problems:
        raise CheckpointError(
            f"{source}: does not match {model.name} ({model.config.compression}, "
            f"{model.config.regularizer}): " + "; ".join(problems)
        )


def load_checked_state(model: VidTok, state: Mapping[str, torch.Tensor], source: str) -> VidTok:
    """Load `state` into `model` after `check_state_dict` (every name and shape must match)."""
    check_state_dict(model, state, source)
    model.load_state_dict(dict(state), strict=True)
    return model


# ------------------------------------------------------------------------------------------------ own format


def save_pretrained(model: VidTok, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save weights (safetensors) and config (JSON) to the folder `path`, atomically."""
    target = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config_json = model.config.to_json()

    with atomic_folder(target) as folder:
        write_weights(folder, model.name, config_json, state, metadata)
    return target


def write_weights(
    folder: Path, name: str, config_json: str, state: Mapping[str, torch.Tensor], metadata: dict | None = None
) -> None:
    """model.safetensors + config.json (with the weights' sha256) into `folder`, a folder being written (see
    `save_pretrained`; a training checkpoint adds its training state beside them before it is published)."""
    weights = folder / WEIGHTS_NAME
    save_safetensors(state, weights, metadata={"format": "vidtok", "name": name, "config": config_json})
    record = {
        "format": "vidtok",
        "format_version": FORMAT_VERSION,
        "name": name,
        "model": json.loads(config_json),
        "weights_sha256": sha256_file(weights),
        "metadata": metadata or {},
    }
    (folder / CONFIG_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_config(path: str | os.PathLike, verify: bool = True) -> dict:
    """The config.json record of a checkpoint folder (CheckpointError when absent or unreadable); with `verify`, it
    must describe the weights beside it (`check_config_matches_weights`)."""
    folder = Path(path)
    config_file = folder / CONFIG_NAME
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    if not config_file.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_NAME} (not a vidtok checkpoint folder)")
    try:
        record = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_file}: not valid JSON ({err})") from None
    if record.get("format") != "vidtok" or "model" not in record:
        raise CheckpointError(f"{config_file}: not a vidtok checkpoint config (missing format/model)")
    weights = folder / WEIGHTS_NAME
    if verify and weights.is_file():
        check_config_matches_weights(record, weights, config_file)
    return record


def check_config_matches_weights(record: Mapping, weights: Path, config_file: Path) -> None:
    """config.json must describe the weights beside it: the model config and name it holds must equal the copy that
    `write_weights` stored in the safetensors header, which `weights_sha256` covers (it hashes the whole file). So an
    edited config.json (a flipped `shortcut`, `causal_padding`, `temporal_upsample`: every output would change while
    the weights still verify) is a CheckpointError naming the fields that differ. Reads only the header."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({err})") from None
    if "config" not in header:  # written by another tool (e.g. a raw export): nothing to compare with
        return
    try:
        stored = json.loads(header["config"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{weights}: the model config in its header is not valid JSON ({err})") from None
    described = record.get("model")
    if not isinstance(described, dict) or not isinstance(stored, dict):
        raise CheckpointError(f"{config_file}: 'model' must be a JSON object")
    differing = sorted(
        k for k in set(described) | set(stored) if described.get(k, "<absent>") != stored.get(k, "<absent>")
    )
    if differing:
        shown = "; ".join(
            f"{k} {described.get(k, '<absent>')!r} (config.json) vs {stored.get(k, '<absent>')!r} (weights)"
            for k in differing[:3]
        )
        more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
        raise CheckpointError(
            f"{config_file}: model config differs from the one stored with the weights ({shown}{more}): "
            "config.json was edited; restore it or train again"
        )
    if "name" in header and record.get("name", header["name"]) != header["name"]:
        raise CheckpointError(
            f"{config_file}: name {record.get('name')!r} differs from the weights' {header['name']!r} (edited?)"
        )


def load_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu", verify: bool = True) -> VidTok:
    """Build the model described by `path`/config.json and load `path`/model.safetensors into it."""
    folder = Path(path)
    record = read_config(folder, verify=verify)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME}")
    if verify:
        recorded = record.get("weights_sha256")
        if not isinstance(recorded, str) or len(recorded) != 64:
            raise CheckpointError(
                f"{folder / CONFIG_NAME}: no weights_sha256 recorded, so the weights cannot be verified (a config.json "
                "edited by hand? load with verify=False only if you trust the folder)"
            )
        if sha256_file(weights) != recorded:
            raise CheckpointError(f"{weights}: sha256 does not match config.json (file changed or corrupt)")
    try:
        config = ModelConfig.from_dict(record["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG_NAME}: invalid model config: {err}") from None
    model = VidTok(config, name=record.get("name", "custom"))
    try:
        state = {}
        with safe_open(str(weights), framework="pt", device=str(map_location)) as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                state[key] = f.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({err})") from None
    return load_checked_state(model.to(map_location), state, str(weights))


# ================================================================================================= the preset table


def count_parameters(config: ModelConfig) -> dict[str, int]:
    """Encoder / decoder / regularizer parameter counts, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = VidTok(config)
    return model.num_parameters()


def preset_table() -> list[dict[str, object]]:
    """One row per preset for `vidtok presets`: latent shape of a 17x256x256 clip (16 frames non-causal)."""
    rows = []
    for preset in PRESETS.values():
        cfg = preset.config
        frames = 17 if cfg.causal else 16
        c, t, h, w = cfg.latent_shape(frames, 256, 256)
        params = count_parameters(cfg)
        reg = cfg.regularizer if cfg.num_codes is None else f"{cfg.regularizer} {cfg.num_codes:,}"
        rows.append(
            {
                "name": preset.name,
                "family": preset.family,
                "causal": cfg.causal,
                "regularizer": reg,
                "compression": cfg.compression,
                "latent": f"{c}x{t}x{h}x{w} ({frames}x256x256)",
                "params_m": (params["encoder"] + params["decoder"] + params["regularizer"]) / 1e6,
                # the released weights' reported quality (PSNR, SSIM, LPIPS, FVD on MCL-JCV); None for tiny presets
                "paper_metrics": list(preset.paper_metrics) if preset.paper_metrics else None,
            }
        )
    return rows
