"""The trivial codec, and the shortcut that makes a model start as it (`ModelConfig.shortcut = "trivial"`).

    python -c "import torch; from vidtok.model.trivial import trivial_codec; from vidtok import ModelConfig; \
        print(trivial_codec(torch.rand(1, 3, 17, 32, 32), ModelConfig(ch=16)).shape)"

The trivial codec is the "does it beat doing nothing clever" bar at a tokenizer's compression: keep the samples a
latent grid of the model's factors would hold, then interpolate linearly back. Spatially: average s x s blocks,
bilinear upsampling (pixel centres). Temporally, causal models: keep frames T-1, T-1-tf, ... (for T = 1 + k*tf:
frames 0, tf, ..., T-1, exactly ceil(T / tf) = latent frames) and interpolate linearly between them; non-causal:
average groups of tf frames, placed at the group centres, linear in between and held at the ends. It stores 3 float
values (RGB) per latent position where the model stores z_channels, and no quantisation. Evaluation scores it beside
every checkpoint (vidtok/evaluation/evaluate.py); TrivialShortcut is the same codec as a residual inside the model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidtok.model.config import ModelConfig


def _linear_in_time(samples: Tensor, positions: Tensor, length: int) -> Tensor:
    """Piecewise-linear interpolation along dim 2 from samples at sorted `positions` to frames 0..length-1,
    holding the end values outside [positions[0], positions[-1]]."""
    if samples.shape[2] == 1:
        return samples.expand(-1, -1, length, -1, -1).clone()
    t = torch.arange(length, dtype=torch.float64)
    hi = torch.searchsorted(positions, t, right=True).clamp(1, len(positions) - 1)
    lo = hi - 1
    w = ((t - positions[lo]) / (positions[hi] - positions[lo])).clamp(0, 1).to(samples.dtype)
    w = w.view(1, 1, -1, 1, 1)
    return samples[:, :, lo] * (1 - w) + samples[:, :, hi] * w


def trivial_codec(video: Tensor, config: ModelConfig) -> Tensor:
    """(B, C, T, H, W) -> same shape: downsample by the temporal and spatial factors of `config` (a ModelConfig:
    temporal_factor, spatial_factor, causal), upsample linearly back (the sampling grid is described above)."""
    tf, s = config.temporal_factor, config.spatial_factor
    b, c, t, h, w = video.shape
    x = video.float()
    if s > 1:
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        small = F.avg_pool2d(frames, s)
        frames = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        x = frames.reshape(b, t, c, h, w).transpose(1, 2)
    if tf > 1:
        if config.causal:
            keep = torch.arange(t - 1, -1, -tf).flip(0)  # anchored at the last frame: 0, tf, ..., T-1 for 1 + k*tf
            x = _linear_in_time(x[:, :, keep], keep.double(), t)
        else:
            groups = x[:, :, : t // tf * tf].reshape(b, c, t // tf, tf, h, w).mean(3)
            centres = torch.arange(t // tf, dtype=torch.float64) * tf + (tf - 1) / 2
            x = _linear_in_time(groups, centres, t)
    return x.to(video.dtype)


class TrivialShortcut(nn.Module):
    """A residual around the trivial codec (`ModelConfig.shortcut = "trivial"`, after DC-AE's residual
    autoencoding, Chen et al. 2024): the encoder adds the clip's trivial-codec samples to the first three latent
    channels, the decoder adds their linear upsampling to its output, on exactly the grid of `trivial_codec`. With
    zero-initialised output convolutions the untrained model *is* the trivial codec at the same compression;
    training learns what the other latent channels and the residual add.

    Sampling: each latent frame covers a group of `tf` input frames (after the causal front padding); causal models
    keep the group's last frame, non-causal ones its mean, box-averaged over `s` x `s` pixels. Upsampling: bilinear
    in space; in time, causal models interpolate linearly from latent j - 1 (at the end of its group) to latent j
    (the first group holds latent 0), non-causal ones between the groups' centres, holding the ends. Both are
    local (a group, a pixel neighbourhood), so chunks and tiles see the same values; a causal decoder's output
    only needs past latents, and a stream (`stream`: streaming.ShortcutHold) keeps the frames computed ahead of the
    decoder's (which holds some back for its own interpolation) until it emits them."""

    def __init__(self, temporal_factor: int, spatial_factor: int, causal: bool):
        super().__init__()
        self.tf, self.s, self.causal = temporal_factor, spatial_factor, causal
        self.stream: Any = None

    def samples(self, video: Tensor) -> Tensor:
        """(B, 3, tf * t, H, W), front padding included -> (B, 3, t, H / s, W / s)."""
        b, c, frames, h, w = video.shape
        groups = video.float().reshape(b, c, frames // self.tf, self.tf, h, w)
        picked = groups[:, :, :, -1] if self.causal else groups.mean(3)
        small = F.avg_pool2d(picked.transpose(1, 2).reshape(-1, c, h, w), self.s)
        return small.reshape(b, -1, c, h // self.s, w // self.s).transpose(1, 2).to(video.dtype)

    def _spatial_up(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        frames = x.float().transpose(1, 2).reshape(b * t, c, h, w)
        up = F.interpolate(frames, scale_factor=self.s, mode="bilinear", align_corners=False)
        return up.reshape(b, t, c, h * self.s, w * self.s).transpose(1, 2).to(x.dtype)

    def causal_frames(self, z: Tensor, previous: Tensor | None) -> Tensor:
        """tf upsampled frames per latent of `z`; `previous` is the latent before z[:, :, 0] (None: z starts the
        clip)."""
        seq = z if previous is None else torch.cat([previous, z], dim=2)
        steps = [(k + 1) / self.tf for k in range(self.tf)]
        rest = [torch.lerp(seq[:, :, :-1], seq[:, :, 1:], w) for w in steps]
        rest = torch.stack(rest, dim=3).flatten(2, 3) if seq.shape[2] > 1 else seq[:, :, :0]
        if previous is None:
            rest = torch.cat([z[:, :, :1].expand(-1, -1, self.tf, -1, -1), rest], dim=2)
        return self._spatial_up(rest)

    def _noncausal_frames(self, z: Tensor) -> Tensor:
        t = z.shape[2]
        centre = (self.tf - 1) / 2
        position = (torch.arange(t * self.tf, dtype=torch.float64) - centre) / self.tf  # in latent units
        lo = position.floor().clamp(0, max(t - 2, 0)).long()
        hi = (lo + 1).clamp(max=t - 1)
        w = (position - lo).clamp(0, 1).to(z.dtype).view(1, 1, -1, 1, 1)
        return z[:, :, lo] * (1 - w) + z[:, :, hi] * w

    def upsample(self, z: Tensor, frames: int) -> Tensor:
        """Latents (B, >= 3, t, h, w) -> (B, 3, frames, H, W): the trivial codec's reconstruction of the decoder's
        next `frames` output frames (all tf * t of them outside streaming)."""
        z = z[:, :3]
        if not self.causal:
            return self._spatial_up(self._noncausal_frames(z))
        if self.stream is not None:
            return self.stream.upsample(self, z, frames)
        return self.causal_frames(z, None)
