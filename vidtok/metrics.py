"""Video-reconstruction metrics, each stored with the protocol that produced it.

    python -m vidtok.metrics REFERENCE.mp4 RECONSTRUCTION.mp4 [--vmaf] [--lpips vgg|alex] [--clip-length 17]

prints the metrics of two equally long videos as JSON (one record per metric, protocol included).

Inputs are float tensors (B, 3, T, H, W) or (3, T, H, W), RGB, values in [0, 1]. Model outputs live in [-1, 1]:
map them with `to_unit` (clamp to [-1, 1], then (x + 1) / 2, as VidTok's evaluation does) before measuring.

Numbers are comparable only when their protocols match (VidTok's scripts/inference_evaluate.py and
vidtok/modules/util.py at d6ad92d against TokenBench's token_bench/metrics_cli.py, for instance):
- PSNR: `psnr` is the VidTok/Open-Sora-Plan protocol, the mean over frames of per-frame PSNR on [0, 1];
  `psnr_whole` is the PSNR of the MSE pooled over a clip (TokenBench style). Mean-of-PSNR >= PSNR-of-mean (Jensen).
- SSIM: Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, per frame and RGB channel over the valid region, averaged
  (VidTok's `compute_ssim`, skimage with gaussian_weights=True); torchmetrics 1.x also averages a mirror-padded
  border (`border="reflect"`). Not skimage's default 7x7 uniform window (TokenBench).
- LPIPS: v0.1 heads on a VGG16 or AlexNet ImageNet trunk read from a file; never a silent random trunk.
- VMAF: vmaf_v0.6.1 via vmaf-torch (float features, BT.601 full-range luma); close to, not identical with, libvmaf.
- FVD: StyleGAN-V I3D TorchScript features; a set statistic that needs many clips (convention: 2,048).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidtok._files import sha256_file
from vidtok.data.video import probe, read_frames

__all__ = [
    "FVD",
    "FrameProtocol",
    "LPIPSMetric",
    "MetricResult",
    "MissingWeightsError",
    "Protocol",
    "codebook_metrics",
    "feature_statistics",
    "frechet_distance",
    "lpips_head_path",
    "psnr",
    "psnr_whole",
    "ssim",
    "ssim_downsample_factor",
    "to_unit",
    "video_metrics",
    "vmaf",
]

PSNR_MAX_DB = 100.0  # identical frames (MSE 0) score this; VidTok's mse + 1e-8 would cap at 80 dB instead
SSIM_KERNEL, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
FVD_CONVENTIONAL_CLIPS = 2048  # StyleGAN-V fvd2048_16f: 2,048 real and 2,048 generated 16-frame clips
LPIPS_TRUNK_ENV = "VIDTOK_LPIPS_TRUNK"
I3D_ENV = "VIDTOK_I3D_TORCHSCRIPT"
# The sha256 the detector file must have: set it (or pass expected_sha256) to the value of the file your comparison
# uses. No published sha256 of i3d_torchscript.pt could be found offline, so none is pinned here; every FVD protocol
# records the sha256 of the file it used, and two FVDs are comparable only when those agree.
I3D_SHA256_ENV = "VIDTOK_I3D_SHA256"
I3D_SOURCE = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt (StyleGAN-V's FVD detector)"
# torchvision ImageNet trunks used by lpips; the hex in each name is the sha256 prefix torch.hub checks.
LPIPS_TRUNKS = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}


class MissingWeightsError(RuntimeError):
    """A metric needs a weights file that is not on this machine; the message says which and where to put it."""


# ----------------------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Protocol:
    """How a number was measured. Two values are comparable only when their protocols are equal."""

    metric: str
    pooling: str
    data_range: float | None = 1.0
    window: str | None = None
    backbone: str | None = None
    version: str | None = None
    weights_sha256: str | None = None
    clip_length: int | None = None
    resolution: str | None = None  # "HxW" of the frames the metric saw
    num_clips: int | None = None
    fps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Protocol:
        return cls(**{**data, "extra": dict(data.get("extra") or {})})


@dataclass(frozen=True)
class MetricResult:
    """One metric value with its protocol and, where defined, the per-frame and per-clip values it pools."""

    name: str
    value: float
    protocol: Protocol
    per_frame: tuple[float, ...] | None = None  # clip-major: clip 0 frames 0..T-1, then clip 1, ...
    per_clip: tuple[float, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "per_frame": None if self.per_frame is None else list(self.per_frame),
            "per_clip": None if self.per_clip is None else list(self.per_clip),
            "protocol": self.protocol.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricResult:
        def tup(v: Any) -> tuple[float, ...] | None:
            return None if v is None else tuple(float(x) for x in v)

        return cls(
            name=data["name"],
            value=float(data["value"]),
            protocol=Protocol.from_dict(data["protocol"]),
            per_frame=tup(data.get("per_frame")),
            per_clip=tup(data.get("per_clip")),
        )


# ----------------------------------------------------------------------------------------------------------------------
# Input handling


def to_unit(x: Tensor) -> Tensor:
    """Model space [-1, 1] -> metric space [0, 1]: clamp to [-1, 1] first (VidTok `inference_evaluate.py`)."""
    return (x.clamp(-1.0, 1.0) + 1.0) / 2.0


def _video(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4:
        x = x.unsqueeze(0)
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected (B, 3, T, H, W) or (3, T, H, W) RGB, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected floats in [0, 1], got {x.dtype} (divide uint8 frames by 255)")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6 or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{what}: values span [{lo:.4g}, {hi:.4g}], expected [0, 1] (map model outputs with to_unit)")
    return x


def _pair(reference: Tensor, reconstruction: Tensor) -> tuple[Tensor, Tensor]:
    ref, rec = _video(reference, "reference"), _video(reconstruction, "reconstruction")
    if ref.shape != rec.shape:
        raise ValueError(f"reference {tuple(ref.shape)} and reconstruction {tuple(rec.shape)} differ in shape")
    return ref, rec


def _frames(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W), clip-major."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _split_clips(x: Tensor, clip_length: int | None) -> Tensor:
    """Cut each video into non-overlapping clips of `clip_length` frames: (B, 3, T, H, W) -> (B*T/L, 3, L, H, W)."""
    if clip_length is None or clip_length == x.shape[2]:
        return x
    b, c, t, h, w = x.shape
    if clip_length <= 0 or t % clip_length:
        raise ValueError(f"clip_length {clip_length} does not divide the {t} frames; pad or trim the videos first")
    return x.reshape(b, c, t // clip_length, clip_length, h, w).permute(0, 2, 1, 3, 4, 5).flatten(0, 1)


def _geometry(x: Tensor, fps: float | None) -> dict[str, Any]:
    b, _, t, h, w = x.shape
    return {"clip_length": t, "resolution": f"{h}x{w}", "num_clips": b, "fps": fps}


def _result(name: str, per_frame: Tensor, clips: int, protocol: Protocol) -> MetricResult:
    per_frame = per_frame.detach().double().cpu()
    return MetricResult(
        name=name,
        value=float(per_frame.mean()),
        protocol=protocol,
        per_frame=tuple(per_frame.tolist()),
        per_clip=tuple(per_frame.view(clips, -1).mean(1).tolist()),
    )


# ----------------------------------------------------------------------------------------------------------------------
# PSNR and SSIM


def _psnr_db(mse: Tensor, max_db: float) -> Tensor:
    # data range 1: PSNR = 10 log10(1 / MSE); MSE 0 -> +inf -> capped.
    return (-10.0 * torch.log10(mse)).clamp(max=max_db)


def psnr(
    reference: Tensor, reconstruction: Tensor, *, max_db: float = PSNR_MAX_DB, fps: float | None = None
) -> MetricResult:
    """Mean over frames of per-frame PSNR on [0, 1] (VidTok protocol); each clip's frames weigh equally."""
    ref, rec = _pair(reference, reconstruction)
    mse = (ref.double() - rec.double()).pow(2).mean(dim=(1, 3, 4)).flatten()  # (B, T) -> clip-major frames
    protocol = Protocol(
        metric="psnr",
        pooling="mean over all frames of per-frame PSNR (MSE over 3 channels x H x W of each frame)",
        data_range=1.0,
        extra={"max_db": max_db, "identical_frames": f"MSE 0 scores {max_db} dB", "dtype": "float64"},
        **_geometry(ref, fps),
    )
    return _result("psnr", _psnr_db(mse, max_db), ref.shape[0], protocol)


def psnr_whole(
    reference: Tensor, reconstruction: Tensor, *, max_db: float = PSNR_MAX_DB, fps: float | None = None
) -> MetricResult:
    """PSNR of the MSE pooled over all frames of each clip, then mean over clips (TokenBench style, NOT VidTok's)."""
    ref, rec = _pair(reference, reconstruction)
    mse = (ref.double() - rec.double()).pow(2).mean(dim=(1, 2, 3, 4))
    per_clip = _psnr_db(mse, max_db)
    protocol = Protocol(
        metric="psnr_whole",
        pooling="per clip: PSNR of the MSE pooled over all frames; then mean over clips",
        data_range=1.0,
        extra={"max_db": max_db, "dtype": "float64"},
        **_geometry(ref, fps),
    )
    return MetricResult("psnr_whole", float(per_clip.mean()), protocol, per_clip=tuple(per_clip.tolist()))


@lru_cache(maxsize=8)
def _gaussian_1d(size: int, sigma: float) -> Tensor:
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_frames(x: Tensor, y: Tensor, border: str) -> Tensor:
    """Per-image SSIM, the mean over channels of the mean SSIM map, for float (N, C, H, W) in [0, 1]."""
    if border == "reflect":  # torchmetrics >= 1.x: pad by 5 (mirror) so the map covers all H x W pixels
        pad = (SSIM_KERNEL - 1) // 2
        x, y = F.pad(x, (pad,) * 4, mode="reflect"), F.pad(y, (pad,) * 4, mode="reflect")
    n, c, h, w = x.shape
    g = _gaussian_1d(SSIM_KERNEL, SSIM_SIGMA).to(x.device, x.dtype)
    # The five local moments as one depthwise (groups = N*C) separable 11-tap convolution: ~6x faster on CPU than
    # a single-channel conv2d over 5*N*C maps. No padding, so the map is (H-10) x (W-10): the 'valid' region that
    # skimage (after cropping) and VidTok's compute_ssim (padding=0) average over.
    maps = torch.stack([x, y, x * x, y * y, x * y]).reshape(5, n * c, h, w)
    maps = F.conv2d(maps, g.view(1, 1, -1, 1).expand(n * c, 1, -1, 1), groups=n * c)
    maps = F.conv2d(maps, g.view(1, 1, 1, -1).expand(n * c, 1, 1, -1), groups=n * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = maps.view(5, n, c, h - SSIM_KERNEL + 1, w - SSIM_KERNEL + 1)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K * data_range)^2 with data_range 1
    var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


def ssim_downsample_factor(height: int, width: int) -> int:
    """VidTok's pre-SSIM average-pool factor: max(1, round(min(H, W) / 256)), e.g. 1080p -> 4, 256 -> 1."""
    return max(1, round(min(height, width) / 256))


def ssim(
    reference: Tensor,
    reconstruction: Tensor,
    *,
    downsample: Literal["auto"] | None = None,
    border: Literal["valid", "reflect"] = "valid",
    fps: float | None = None,
) -> MetricResult:
    """Mean over frames of SSIM (Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1), RGB per channel.

    `border="valid"` (default) averages the SSIM map where the window fits, as VidTok's `compute_ssim` and skimage
    (`gaussian_weights=True`) do; `"reflect"` mirror-pads and averages all pixels, as torchmetrics 1.x does (on
    carphone 176x144 the two differ by 0.008). `downsample="auto"` first average-pools each frame by
    `ssim_downsample_factor` as VidTok does (a change only for short sides >= 384); None measures full resolution.
    Moments are float32 (float64 inputs stay float64): |error| < 1e-5 against skimage's float64 on real frames.
    """
    if downsample not in (None, "auto"):
        raise ValueError(f"downsample must be None or 'auto', got {downsample!r}")
    if border not in ("valid", "reflect"):
        raise ValueError(f"border must be 'valid' or 'reflect', got {border!r}")
    ref, rec = _pair(reference, reconstruction)
    h, w = ref.shape[-2:]
    factor = ssim_downsample_factor(h, w) if downsample == "auto" else 1
    if min(h, w) // factor < SSIM_KERNEL:
        raise ValueError(f"SSIM needs frames of at least {SSIM_KERNEL}x{SSIM_KERNEL} after downsampling, got {h}x{w}")
    dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
    fx, fy = _frames(ref), _frames(rec)
    chunk = max(1, 2**22 // (h * w))  # frames per pass: 5 moment maps x 3 channels x 4 Mpixel = 240 MB in float32
    scores = []
    for i in range(0, fx.shape[0], chunk):
        x, y = fx[i : i + chunk].to(dtype), fy[i : i + chunk].to(dtype)
        if factor > 1:
            x, y = F.avg_pool2d(x, factor), F.avg_pool2d(y, factor)
        scores.append(_ssim_frames(x, y, border))
    protocol = Protocol(
        metric="ssim",
        pooling="mean over all frames of per-frame SSIM (mean of the SSIM map, then mean over R, G, B)",
        data_range=1.0,
        window=f"gaussian {SSIM_KERNEL}x{SSIM_KERNEL} sigma {SSIM_SIGMA}, {border} border",
        extra={
            "k1": SSIM_K1,
            "k2": SSIM_K2,
            "color": "per RGB channel, averaged (no luma conversion)",
            "covariance": "population (Gaussian-weighted)",
            "border": border,
            "downsample": downsample,
            "downsample_factor": factor,
            "dtype": str(dtype).removeprefix("torch."),
        },
        **_geometry(ref, fps),
    )
    return _result("ssim", torch.cat(scores), ref.shape[0], protocol)


# ----------------------------------------------------------------------------------------------------------------------
# VMAF


@lru_cache(maxsize=1)
def _vmaf_model() -> torch.nn.Module:
    from vmaf_torch import VMAF  # vmaf_v0.6.1 SVM embedded in the package: no file, no download

    return VMAF(temporal_pooling=False, enable_motion=True, clip_score=False).eval()


def vmaf(reference: Tensor, reconstruction: Tensor, *, fps: float | None = None) -> MetricResult:
    """VMAF (vmaf_v0.6.1) per frame, mean over frames; motion features restart at every clip."""

    ref, rec = _pair(reference, reconstruction)

    def luma(v: Tensor) -> Tensor:  # BT.601 full-range Y' on [0, 255], as torchmetrics' VMAF wrapper: (T, 1, H, W)
        r, g, b = v.float().unbind(0)
        return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1) * 255

    model = _vmaf_model().to(ref.device)
    with torch.no_grad():
        scores = [model.compute_vmaf_score(luma(r), luma(d)).flatten() for r, d in zip(ref, rec)]
    protocol = Protocol(
        metric="vmaf",
        pooling="mean over all frames of per-frame VMAF (arithmetic mean, not libvmaf's harmonic option)",
        data_range=1.0,
        version="vmaf_v0.6.1",
        extra={
            "implementation": f"vmaf-torch {version('vmaf-torch')} (float features; libvmaf uses integer features)",
            "luma": "Y = 0.299 R + 0.587 G + 0.114 B on [0, 255] (BT.601 full range from RGB, no 4:2:0)",
            "score_clip": "none (identical frames score about 100.3-100.6)",
            "motion": "per clip; the first frame of each clip has motion 0",
        },
        **_geometry(ref, fps),
    )
    return _result("vmaf", torch.cat(scores), ref.shape[0], protocol)


# ----------------------------------------------------------------------------------------------------------------------
# LPIPS


def lpips_head_path(net: str, version: str = "0.1") -> Path:
    """The calibrated linear heads shipped inside the lpips wheel (found without importing lpips or downloading)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError("LPIPS needs the `lpips` package (pip install lpips); it ships the linear heads")
    return Path(spec.submodule_search_locations[0]) / "weights" / f"v{version}" / f"{net}.pth"


class LPIPSMetric:
    """LPIPS v0.1 (VGG16 or AlexNet trunk), applied per frame to videos: B*T image pairs, mean over frames.

    The ImageNet trunk (a torchvision state dict; only its `features.*` tensors are used) is taken from, in order:
    `trunk_path`, the env var VIDTOK_LPIPS_TRUNK, the torch hub cache (`torch.hub.get_dir()/checkpoints/
    vgg16-397923af.pth` or `alexnet-owt-7be5be79.pth`); nothing is ever downloaded. Otherwise `MissingWeightsError`
    is raised at construction, before any computation.
    `random_trunk_for_tests=True` uses a randomly initialised trunk and reports "random_feature_distance", never
    "lpips": it only exercises the plumbing.
    """

    def __init__(
        self,
        net: Literal["vgg", "alex"] = "vgg",
        *,
        trunk_path: str | os.PathLike[str] | None = None,
        random_trunk_for_tests: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        if net not in LPIPS_TRUNKS:
            raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_TRUNKS)}, got {net!r}")
        if random_trunk_for_tests and trunk_path is not None:
            raise ValueError("pass either trunk_path or random_trunk_for_tests=True, not both")
        self.net, self.version, self.batch_size = net, "0.1", batch_size
        self.random_trunk = random_trunk_for_tests
        head_path = lpips_head_path(net, self.version)
        self.trunk_path, self.trunk_source = (None, "random") if self.random_trunk else self._find_trunk(trunk_path)
        if not self.random_trunk and self.trunk_path is None:
            file, url = LPIPS_TRUNKS[net]
            hub = Path(torch.hub.get_dir()) / "checkpoints" / file
            raise MissingWeightsError(
                f"LPIPS-{net} needs the torchvision ImageNet trunk {file} ({url}): put it at {hub}, pass "
                f"trunk_path=, or set {LPIPS_TRUNK_ENV}=/path/to/{file} (nothing is downloaded)"
            )
        self.trunk_sha256 = None if self.trunk_path is None else sha256_file(self.trunk_path)
        prefix = LPIPS_TRUNKS[net][0].rsplit("-", 1)[1].split(".")[0]  # torch.hub file names carry a sha256 prefix
        if self.trunk_source == "torch hub cache" and not str(self.trunk_sha256).startswith(prefix):
            raise ValueError(f"{self.trunk_path}: sha256 does not start with {prefix}; the file is corrupt, delete it")
        self.head_sha256 = sha256_file(head_path)
        self._model = self._build(head_path).to(device)

    def _find_trunk(self, trunk_path: str | os.PathLike[str] | None) -> tuple[Path | None, str]:
        file, _ = LPIPS_TRUNKS[self.net]
        explicit = [(trunk_path, "trunk_path"), (os.environ.get(LPIPS_TRUNK_ENV) or None, LPIPS_TRUNK_ENV)]
        for given, source in explicit:
            if given is not None:
                if not Path(given).is_file():
                    raise MissingWeightsError(f"LPIPS-{self.net} trunk {source}={given} is not a file (need {file})")
                return Path(given), source
        cached = Path(torch.hub.get_dir()) / "checkpoints" / file
        if cached.is_file():
            return cached, "torch hub cache"  # sha256 prefix verified in __init__
        return None, ""

    def _build(self, head_path: Path) -> torch.nn.Module:
        import lpips

        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(pretrained=False, net=self.net, version=self.version, pnet_rand=True, verbose=False)
        heads = torch.load(head_path, map_location="cpu", weights_only=True)
        missing = [
            k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.") and k not in heads
        ]
        if missing:
            raise ValueError(f"{head_path}: LPIPS heads lack {missing}")
        model.load_state_dict(heads, strict=False)
        if self.trunk_path is not None:
            model.net.load_state_dict(self._trunk_state(model.net), strict=True)
        return model.eval().requires_grad_(False)

    def _trunk_state(self, trunk: torch.nn.Module) -> dict[str, Tensor]:
        """Map torchvision `features.<i>.*` keys onto lpips' `slice<k>.<i>.*` (lpips keeps torchvision's indices)."""
        state = torch.load(self.trunk_path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"{self.trunk_path}: expected a torchvision state dict, got {type(state).__name__}")
        mapped = {}
        for key, param in trunk.state_dict().items():
            source = "features." + key.split(".", 1)[1]  # slice3.10.weight -> features.10.weight
            if source not in state or tuple(state[source].shape) != tuple(param.shape):
                got = tuple(state[source].shape) if source in state else "missing"
                raise ValueError(
                    f"{self.trunk_path}: not a torchvision {self.net} state dict ({source}: {got}, "
                    f"expected {tuple(param.shape)})"
                )
            mapped[key] = state[source]
        return mapped

    @property
    def name(self) -> str:
        return "random_feature_distance" if self.random_trunk else "lpips"

    @property
    def module(self) -> torch.nn.Module:
        """The frozen lpips network: inputs (N, 3, H, W) in [-1, 1], output (N, 1, 1, 1); differentiable in its
        inputs, so the training loss (vidtok.train.losses) reuses this trunk resolution instead of duplicating it."""
        return self._model

    def __call__(self, reference: Tensor, reconstruction: Tensor, *, fps: float | None = None) -> MetricResult:
        ref, rec = _pair(reference, reconstruction)
        fx, fy = _frames(ref), _frames(rec)
        device = next(self._model.parameters()).device
        with torch.no_grad():
            scores = [
                self._model(
                    fx[i : i + self.batch_size].float().to(device),
                    fy[i : i + self.batch_size].float().to(device),
                    normalize=True,  # [0, 1] -> [-1, 1] inside lpips
                ).flatten()
                for i in range(0, fx.shape[0], self.batch_size)
            ]
        backbone = "vgg16" if self.net == "vgg" else "alexnet"
        protocol = Protocol(
            metric=self.name,
            pooling="mean over all frames of per-frame LPIPS (spatial average of each image's distance map)",
            data_range=1.0,
            backbone=f"{backbone} (RANDOM trunk: not LPIPS)" if self.random_trunk else backbone,
            version=self.version,
            weights_sha256=self.trunk_sha256,
            extra={
                "trunk": "random init, plumbing tests only" if self.random_trunk else "torchvision ImageNet",
                "trunk_source": self.trunk_source,
                "trunk_file": None if self.trunk_path is None else self.trunk_path.name,
                "heads_sha256": self.head_sha256,
                "input": "[0, 1] mapped to [-1, 1], lpips ScalingLayer",
            },
            **_geometry(ref, fps),
        )
        return _result(self.name, torch.cat(scores), ref.shape[0], protocol)


# ----------------------------------------------------------------------------------------------------------------------
# FVD


def feature_statistics(features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (N - 1) of (N, D) features, float64 (as StyleGAN-V's FVD)."""
    f = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64.

    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner matrix is symmetric PSD, so symmetric eigen-
    decompositions with eigenvalues clipped at 0 replace the non-symmetric sqrtm (no complex parts, no NaN for
    singular covariances such as N < D). Rounding can leave a tiny negative total; it is clipped at 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    r1 = _psd_sqrt(s1)
    inner = r1 @ s2 @ r1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return max(0.0, float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt))


class FVD:
    """Fréchet Video Distance with StyleGAN-V's I3D TorchScript (`i3d_torchscript.pt`, Kinetics-400, 400-d logits).

    Call convention of that file: `model(videos, rescale=True, resize=True, return_features=True)` with `videos`
    a float (B, 3, T, H, W) tensor of uint8 levels [0, 255]; the model rescales to [-1, 1] and resizes to 224x224
    itself. Here inputs are [0, 1] videos, fed as round(255 x). The file comes from `extractor_path` or env
    VIDTOK_I3D_TORCHSCRIPT and is never downloaded. FVD is a set statistic: the convention is 2,048 clips of 16
    frames per side; fewer clips bias it upwards, and values with different N, clip length or extractor differ.
    """

    def __init__(
        self,
        extractor_path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        expected_sha256: str | None = None,
    ) -> None:
        given = extractor_path if extractor_path is not None else os.environ.get(I3D_ENV) or None
        if given is None or not Path(given).is_file():
            where = "no path given" if given is None else f"{given} is not a file"
            raise MissingWeightsError(
                f"FVD needs the I3D TorchScript i3d_torchscript.pt ({where}); get it from {I3D_SOURCE} and pass "
                f"extractor_path= or set {I3D_ENV}"
            )
        self.path, self.device, self.batch_size = Path(given), torch.device(device), batch_size
        self.sha256 = sha256_file(self.path)
        expected = expected_sha256 or os.environ.get(I3D_SHA256_ENV) or None
        if expected is not None and self.sha256 != expected.lower():
            raise MissingWeightsError(
                f"{self.path}: sha256 {self.sha256[:12]} is not the expected {expected[:12]} ({I3D_SHA256_ENV}): "
                "another detector file gives FVDs that cannot be compared"
            )
        with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated; the detector ships as one
            warnings.simplefilter("ignore", FutureWarning)
            self._model = torch.jit.load(str(self.path), map_location=self.device).eval()
        self._real: list[np.ndarray] = []
        self._fake: list[np.ndarray] = []
        self._geometry: dict[str, Any] | None = None

    def features(self, videos: Tensor) -> np.ndarray:
        """(B, 3, T, H, W) in [0, 1] -> (B, D) float64 extractor features."""
        x = _video(videos, "videos")
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                batch = (x[i : i + self.batch_size].float() * 255).round().to(self.device)
                out.append(self._model(batch, rescale=True, resize=True, return_features=True).double().cpu())
        return torch.cat(out).numpy()

    def update(self, reference: Tensor, reconstruction: Tensor) -> None:
        """Add clips of both sets (reconstruction FVD: originals vs reconstructions, same clip geometry)."""
        ref, rec = _pair(reference, reconstruction)
        geometry = {k: v for k, v in _geometry(ref, None).items() if k in ("clip_length", "resolution")}
        if self._geometry not in (None, geometry):
            raise ValueError(f"FVD clips must share one geometry: had {self._geometry}, got {geometry}")
        self._geometry = geometry
        self._real.append(self.features(ref))
        self._fake.append(self.features(rec))

    def compute(self, *, fps: float | None = None) -> MetricResult:
        if not self._real:
            raise ValueError("FVD.compute() before any FVD.update()")
        real, fake = np.concatenate(self._real), np.concatenate(self._fake)
        n = real.shape[0]
        if n < FVD_CONVENTIONAL_CLIPS:
            warnings.warn(
                f"FVD from {n} clips per side; the convention is {FVD_CONVENTIONAL_CLIPS} and fewer clips bias FVD "
                "upwards: compare only with values of the same N",
                stacklevel=2,
            )
        value = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
        protocol = Protocol(
            metric="fvd",
            pooling="Fréchet distance between Gaussians fitted to per-clip features (mean, unbiased covariance)",
            data_range=1.0,
            backbone="I3D TorchScript (StyleGAN-V convention)",
            weights_sha256=self.sha256,
            num_clips=n,
            fps=fps,
            extra={
                "extractor_file": self.path.name,
                "feature_dim": int(real.shape[1]),
                "call": "model(round(255 x), rescale=True, resize=True, return_features=True)",
                "conventional_num_clips": FVD_CONVENTIONAL_CLIPS,
                "below_convention": n < FVD_CONVENTIONAL_CLIPS,
            },
            **(self._geometry or {}),
        )
        return MetricResult("fvd", value, protocol)


# ----------------------------------------------------------------------------------------------------------------------
# Codebook use


def codebook_metrics(
    indices_or_counts: Tensor | np.ndarray | Sequence[int], codebook_size: int, *, counts: bool = False
) -> dict[str, MetricResult]:
    """Codebook utilisation (share of codes used at least once) and perplexity exp(H) of the token distribution.

    `indices_or_counts` holds token indices of any shape, or with `counts=True` a length-`codebook_size` vector of
    per-code counts. Uniform use of K codes gives perplexity K and utilisation 1; total collapse gives 1 and 1/K.
    """
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    if isinstance(indices_or_counts, Tensor):
        data = indices_or_counts.detach().cpu()
    else:
        data = torch.as_tensor(np.asarray(indices_or_counts))
    if counts:
        if data.shape != (codebook_size,) or bool((data < 0).any()):
            raise ValueError(f"counts must be {codebook_size} non-negative numbers, got shape {tuple(data.shape)}")
        hist = data.double()
    else:
        if data.is_floating_point() or data.is_complex():
            raise ValueError(f"indices must be integers, got {data.dtype} (pass counts=True for a count vector)")
        flat = data.flatten().long()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
            raise ValueError(f"indices span [{int(flat.min())}, {int(flat.max())}], outside [0, {codebook_size})")
        hist = torch.bincount(flat, minlength=codebook_size).double()
    total = float(hist.sum())
    if total <= 0:
        raise ValueError("no tokens: codebook metrics need at least one index")
    p = hist[hist > 0] / total
    entropy = float(-(p * p.log()).sum())  # nats
    used = int((hist > 0).sum())
    extra = {"codebook_size": codebook_size, "num_tokens": int(round(total)), "codes_used": used}
    extra["entropy_bits"] = entropy / math.log(2)
    return {
        "codebook_utilisation": MetricResult(
            "codebook_utilisation",
            used / codebook_size,
            Protocol(
                "codebook_utilisation", "codes used at least once / codebook size, over all tokens", None, extra=extra
            ),
        ),
        "codebook_perplexity": MetricResult(
            "codebook_perplexity",
            math.exp(entropy),
            Protocol(
                "codebook_perplexity",
                "exp(entropy in nats) of the empirical code distribution over all tokens",
                None,
                extra=extra,
            ),
        ),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Convenience


_FRAME_METRICS = {"psnr": psnr, "psnr_whole": psnr_whole, "ssim": ssim}


@dataclass(frozen=True)
class FrameProtocol:
    """How video_metrics takes its frame metrics: SSIM's downsampling and border (see `ssim`) and the PSNR of
    identical frames (`psnr`)."""

    ssim_downsample: Literal["auto"] | None = None
    ssim_border: Literal["valid", "reflect"] = "valid"
    psnr_max_db: float = PSNR_MAX_DB


def video_metrics(
    reference: Tensor,
    reconstruction: Tensor,
    *,
    metrics: Sequence[str] = ("psnr", "ssim"),
    lpips: LPIPSMetric | None = None,
    with_vmaf: bool = False,
    clip_length: int | None = None,
    fps: float | None = None,
    frame: FrameProtocol = FrameProtocol(),
) -> dict[str, MetricResult]:
    """Every requested metric of [0, 1] videos, keyed by result name ("lpips" or "random_feature_distance", "vmaf").

    `with_vmaf` adds VMAF. `clip_length` cuts each video into non-overlapping clips first (it must divide T);
    per-clip values, psnr_whole and VMAF motion then follow those clips. `fps` is recorded in every protocol;
    `frame` sets SSIM's and PSNR's conventions.
    """
    unknown = [m for m in metrics if m not in _FRAME_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metrics {unknown}; choose from {sorted(_FRAME_METRICS)} (lpips=, with_vmaf= for others)"
        )
    ref, rec = _pair(reference, reconstruction)
    ref, rec = _split_clips(ref, clip_length), _split_clips(rec, clip_length)
    results: dict[str, MetricResult] = {}
    for name in metrics:
        if name == "ssim":
            results[name] = ssim(ref, rec, downsample=frame.ssim_downsample, border=frame.ssim_border, fps=fps)
        else:
            results[name] = _FRAME_METRICS[name](ref, rec, max_db=frame.psnr_max_db, fps=fps)
    if lpips is not None:
        result = lpips(ref, rec, fps=fps)
        results[result.name] = result
    if with_vmaf:
        results["vmaf"] = vmaf(ref, rec, fps=fps)
    return results


def _read_video(path: str) -> tuple[Tensor, float]:
    """A video file as a (3, T, H, W) tensor in [0, 1] and its frame rate, read by the data layer (rotation applied,
    local or fsspec paths, one-line VideoError for a bad file)."""
    fps = float(probe(path).fps)
    return torch.from_numpy(read_frames(path)).permute(3, 0, 1, 2).float().div(255), fps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidtok.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("reference")
    parser.add_argument("reconstruction")
    parser.add_argument("--vmaf", action="store_true")
    parser.add_argument("--lpips", choices=sorted(LPIPS_TRUNKS), help="needs the trunk weights (see LPIPSMetric)")
    parser.add_argument("--clip-length", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        ref, fps = _read_video(args.reference)
        rec, _ = _read_video(args.reconstruction)
        lp = LPIPSMetric(args.lpips) if args.lpips else None
        results = video_metrics(
            ref,
            rec,
            metrics=("psnr", "psnr_whole", "ssim"),
            lpips=lp,
            with_vmaf=args.vmaf,
            clip_length=args.clip_length,
            fps=fps,
        )
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: {**r.as_dict(), "per_frame": None} for k, r in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
