"""VidTok's training loss: L1 + LPIPS inside a learned-variance NLL, PatchGAN discriminators (hinge + LeCAM), the
non-saturating generator loss with the VQGAN adaptive weight, and the regularizer's auxiliary terms.

    python -c "from vidtok.train.losses import LossConfig; print(LossConfig(perceptual_weight=0))"

The arithmetic follows upstream's `GeneralLPIPSWithDiscriminator` (microsoft/VidTok at d6ad92d,
vidtok/modules/losses.py):

- rec = l1_weight * |x - x_hat| per element, plus perceptual_weight * LPIPS(frame) broadcast-added to every
  element of its frame, so the perceptual term is weighted by C*H*W per frame (12,288 at 3x64x64).
- nll = rec / exp(logvar) + logvar per element with a learned scalar logvar; nll_loss = sum(nll) / (B*T): a sum over
  the pixels of a frame, a mean over frames. Its minimum over logvar is at logvar = log(mean rec).
- Generator: g_loss = mean over frames (3D: clips) of softplus(-mean patch logit), the non-saturating BCE;
  weight d = ||grad_W nll_loss|| / (||grad_W g_loss|| + 1e-4), clamped to [0, 1e4], detached, x disc_weight 0.2,
  W = the decoder's last conv weight. Total = nll_loss + d * disc_factor * g_loss + weighted aux terms.
- Discriminator: 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))) + lecam_weight * LeCAM, with LeCAM =
  mean relu(D(x) - ema_fake)^2 + mean relu(ema_real - D(x_hat))^2 and EMAs (decay 0.999) of the mean logits,
  updated before use.
- Aux terms (unweighted in `Encoded.aux`): kl * 1e-6 (KL summed per sample); FSQ/LFQ entropy * w(n) +
  commitment * 0.25 with w(n) falling linearly from 3 x 0.1 to 0.1 over the first 2,000 iterations; VQ codebook
  * 1.0 + commitment * 0.25 (both 0: the paper's "VQ without regularization loss").

Deliberate differences from the reference (each keeps the generator's update identical unless stated):
- `disc_start` counts optimisation iterations (one generator step + one discriminator step). The reference
  compares its 20001 with Lightning's global_step, which advances twice per iteration with two manually stepped
  optimizers, so its GAN starts after about 10,000 iterations: the default here is 10,000.
- Before disc_start the discriminator is neither run nor stepped. The reference runs it, multiplies its losses by 0
  and steps Adam on zero gradients (the generator sees exactly 0 from it either way); its BatchNorm running stats
  and Adam's step count (bias correction) therefore differ from here when the GAN starts.
- The LeCAM EMAs are float64 buffers (the reference keeps Python floats outside the state dict), so they are
  checkpointed and a resumed run continues them exactly. Under DDP they follow rank 0 (buffers are broadcast).
- LPIPS stays in eval mode during training: the reference's Lightning `.train()` also switches its LPIPS dropout
  layers on, which makes its perceptual term random.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidtok.metrics import LPIPSMetric, MissingWeightsError
from vidtok.params import check_bool, check_choice, check_int, check_number, from_mapping

__all__ = [
    "LossConfig",
    "PatchDiscriminator2d",
    "PatchDiscriminator3d",
    "VidTokLoss",
    "hinge_d_loss",
    "lecam_regularizer",
    "non_saturating_g_loss",
]

DiscType = Literal["2d", "3d", "none"]


@dataclass(frozen=True)
class LossConfig:
    """Weights and switches of the training loss. Field names are the keys under ``loss:`` in params.yaml."""

    l1_weight: float = 1.0  # the reference's pixel term is a plain |x - x_hat| (its pixelloss_weight is unused)
    # LPIPS per frame; 0 turns the perceptual loss off (then no trunk weights are needed).
    perceptual_weight: float = 1.0
    lpips_net: Literal["vgg", "alex"] = "vgg"  # the reference uses VGG16
    lpips_trunk_path: str | None = None  # else env VIDTOK_LPIPS_TRUNK, then the torch hub cache (vidtok.metrics)
    lpips_random_trunk_for_tests: bool = False  # tests only: a random trunk, logged as "random_feature_distance"
    learn_logvar: bool = True
    logvar_init: float = 0.0
    disc_type: DiscType = "2d"  # PatchGAN on frames ("2d", the reference), on clips ("3d"), or no GAN ("none")
    disc_ndf: int = 64
    disc_layers: int = 3
    disc_start: int = 10_000  # optimisation iterations (the reference's 20001 global steps ~ 10,000 iterations)
    disc_weight: float = 0.2
    disc_factor: float = 1.0
    adaptive_weight: bool = True  # VQGAN's ||grad nll|| / ||grad g|| on the decoder's last layer
    adaptive_weight_max: float = 1e4
    lecam_weight: float = 0.005
    lecam_decay: float = 0.999
    kl_weight: float = 1e-6
    entropy_weight: float = 0.1  # FSQ / LFQ entropy penalty after annealing
    entropy_anneal_factor: float = 3.0  # starts at factor x entropy_weight ...
    entropy_anneal_steps: int = 2000  # ... and reaches entropy_weight linearly after this many iterations
    commitment_weight: float = 0.25  # FSQ, LFQ and VQ
    codebook_weight: float = 1.0  # VQ codebook term (0 with commitment 0: "VQ without regularization loss")

    def __post_init__(self) -> None:
        for name in (
            "l1_weight",
            "perceptual_weight",
            "disc_weight",
            "disc_factor",
            "lecam_weight",
            "kl_weight",
            "entropy_weight",
            "commitment_weight",
            "codebook_weight",
            "adaptive_weight_max",
        ):
            check_number(f"loss.{name}", getattr(self, name))
        check_number("loss.entropy_anneal_factor", self.entropy_anneal_factor, low=1.0)
        for name, low in (("disc_ndf", 1), ("disc_layers", 1), ("disc_start", 0), ("entropy_anneal_steps", 0)):
            check_int(f"loss.{name}", getattr(self, name), low)
        if isinstance(self.logvar_init, bool) or not isinstance(self.logvar_init, int | float):
            raise ValueError(f"loss.logvar_init must be a number, got {self.logvar_init!r}")
        if not (isinstance(self.lecam_decay, int | float) and 0 <= self.lecam_decay < 1):
            raise ValueError(f"loss.lecam_decay must be in [0, 1) (e.g. 0.999), got {self.lecam_decay!r}")
        check_choice("loss.lpips_net", self.lpips_net, ("vgg", "alex"))
        check_choice("loss.disc_type", self.disc_type, ("2d", "3d", "none"))
        for name in ("learn_logvar", "adaptive_weight", "lpips_random_trunk_for_tests"):
            check_bool(f"loss.{name}", getattr(self, name))
        if self.lpips_trunk_path is not None and not isinstance(self.lpips_trunk_path, str):
            raise ValueError(f"loss.lpips_trunk_path must be a path string or null, got {self.lpips_trunk_path!r}")
        if self.lpips_random_trunk_for_tests and self.lpips_trunk_path:
            raise ValueError("loss.lpips_random_trunk_for_tests and loss.lpips_trunk_path exclude each other")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LossConfig:
        return from_mapping(cls, values, "loss parameter(s)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def perceptual(self) -> bool:
        return self.perceptual_weight > 0

    @property
    def perceptual_name(self) -> str:
        """Log key of the perceptual term: never "lpips" for a random trunk."""
        return "random_feature_distance" if self.lpips_random_trunk_for_tests else "lpips"

    def gan_active(self, step: int) -> bool:
        """Whether iteration `step` (0-based) runs the GAN terms: from disc_start on, with a discriminator."""
        return self.disc_type != "none" and self.disc_factor > 0 and step >= self.disc_start

    def entropy_weight_at(self, step: int) -> float:
        """w(n) = start - (n / N) * (start - w) for n < N, then w; start = factor * w (0.3 -> 0.1 over 2,000)."""
        n, total, w = step, self.entropy_anneal_steps, self.entropy_weight
        if n >= total:
            return float(w)
        start = self.entropy_anneal_factor * w
        return float(start - (n / total) * (start - w))


# ------------------------------------------------------------------------------------------------ discriminators


def _init_weights(module: nn.Module) -> None:
    # pix2pix / taming init: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0; conv biases as PyTorch's.
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _conv_out(size: int, kernel: int, stride: int, pad: int = 1) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class PatchDiscriminator2d(nn.Module):
    """PatchGAN (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", arXiv 1611.07004)
    on single frames, as VidTok uses it: 4x4 convs, ndf 64; stride-2 convs up to `n_layers`, then a stride-1 conv
    with 8 x ndf at most, BatchNorm and LeakyReLU(0.2) after every conv but the first and the last. The layer
    indices (main.0, main.2, main.3, ..., main.11 for 3 layers) are the reference's state-dict keys."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        self.n_layers = n_layers
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last of these keeps the resolution (the "4th conv, stride 1")
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(ndf * mult)]
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        _init_weights(self)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch-logit map size: each stride-2 4x4 conv (pad 1) halves, each stride-1 one removes a pixel."""
        sizes = []
        for size in (height, width):
            for _ in range(self.n_layers):
                size = _conv_out(size, 4, 2)
            sizes.append(_conv_out(_conv_out(size, 4, 1), 4, 1))
        return sizes[0], sizes[1]

    def forward(self, frames: Tensor) -> Tensor:
        return self.main(frames)


class PatchDiscriminator3d(nn.Module):
    """The 3D PatchGAN variant of the reference code (from Open-Sora-Plan; unused in VidTok's configs): 3x3x3 convs,
    pad 1; the first conv has stride 2 in every axis, the next (2, 2, 2), later ones (1, 2, 2), the last of the
    `n_layers` stride 1; BatchNorm3d and LeakyReLU(0.2)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        self.n_layers = n_layers
        self.strides: list[tuple[int, int, int]] = [(2, 2, 2)]
        layers: list[nn.Module] = [nn.Conv3d(in_channels, ndf, 3, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = ((2 if n == 1 else 1), 2, 2) if n < n_layers else (1, 1, 1)
            self.strides.append(stride)
            layers += [nn.Conv3d(ndf * prev, ndf * mult, 3, stride, 1, bias=False), nn.BatchNorm3d(ndf * mult)]
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Conv3d(ndf * mult, 1, 3, 1, 1))
        self.strides.append((1, 1, 1))
        self.main = nn.Sequential(*layers)
        _init_weights(self)

    def output_size(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        sizes = [frames, height, width]
        for stride in self.strides:
            sizes = [_conv_out(s, 3, st) for s, st in zip(sizes, stride)]
        return sizes[0], sizes[1], sizes[2]

    def forward(self, video: Tensor) -> Tensor:
        return self.main(video)


# ------------------------------------------------------------------------------------------------ loss terms


def _frames(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W), batch-major: the reference's `b c t h w -> (b t) c h w`."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def lecam_regularizer(logits_real: Tensor, logits_fake: Tensor, ema_real: Tensor, ema_fake: Tensor) -> Tensor:
    """LeCAM (Tseng et al., "Regularizing Generative Adversarial Networks under Limited Data", arXiv 2104.03310)."""
    ema_real, ema_fake = ema_real.to(logits_real.dtype), ema_fake.to(logits_real.dtype)
    return F.relu(logits_real - ema_fake).pow(2).mean() + F.relu(ema_real - logits_fake).pow(2).mean()


def non_saturating_g_loss(logits_fake: Tensor) -> Tensor:
    """mean over samples of softplus(-mean patch logit) = BCE(sigmoid(l), 1) on each sample's mean logit."""
    return F.softplus(-logits_fake.flatten(1).mean(1)).mean()


class VidTokLoss(nn.Module):
    """The loss module: learned logvar, optional LPIPS (frozen) and discriminator, LeCAM EMA buffers.

    `generator_loss` and `discriminator_loss` return (loss, logs) with detached log tensors. `training_state_dict`
    is what a checkpoint keeps (everything but the frozen LPIPS network, which is rebuilt from its weights file).
    Raises `vidtok.metrics.MissingWeightsError` at construction when the perceptual loss is on and no LPIPS trunk
    can be found, before any computation.
    """

    def __init__(self, config: LossConfig):
        super().__init__()
        self.config = config
        self.logvar = nn.Parameter(torch.tensor(float(config.logvar_init)), requires_grad=config.learn_logvar)
        self.perceptual: nn.Module | None = None
        if config.perceptual:
            self.perceptual = _lpips_module(config)
        self.discriminator: nn.Module | None = None
        if config.disc_type == "2d":
            self.discriminator = PatchDiscriminator2d(3, config.disc_ndf, config.disc_layers)
        elif config.disc_type == "3d":
            self.discriminator = PatchDiscriminator3d(3, config.disc_ndf, config.disc_layers)
        # float64 like the reference's Python floats; buffers, so checkpoints and resumes carry them.
        self.register_buffer("lecam_ema_real", torch.zeros((), dtype=torch.float64))
        self.register_buffer("lecam_ema_fake", torch.zeros((), dtype=torch.float64))

    def train(self, mode: bool = True) -> VidTokLoss:
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.eval()  # a fixed metric: its dropout layers stay off (see the module docstring)
        return self

    def training_state_dict(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("perceptual.")}

    def load_training_state_dict(self, state: Mapping[str, Tensor]) -> None:
        expected = self.training_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"loss state does not match loss config (disc_type {self.config.disc_type}): "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        self.load_state_dict(dict(state), strict=False)

    def check_input(self, frames: int, height: int, width: int) -> None:
        """ValueError when the discriminator's patch map would be empty for clips of this size."""
        d = self.discriminator
        if isinstance(d, PatchDiscriminator2d) and min(d.output_size(height, width)) < 1:
            raise ValueError(
                f"a {self.config.disc_layers}-layer 2D PatchGAN needs frames of at least "
                f"{3 * 2**self.config.disc_layers} pixels per side, got {height}x{width} (lower loss.disc_layers)"
            )
        if isinstance(d, PatchDiscriminator3d) and min(d.output_size(frames, height, width)) < 1:
            raise ValueError(
                f"the 3D PatchGAN gives no patch for {frames}x{height}x{width} clips (lower loss.disc_layers)"
            )

    def _disc_logits(self, video: Tensor) -> Tensor:
        assert self.discriminator is not None
        if self.config.disc_type == "2d":
            return self.discriminator(_frames(video))
        return self.discriminator(video)

    def aux_weight(self, key: str, step: int) -> float:
        cfg = self.config
        weights = {
            "kl": cfg.kl_weight,
            "entropy": cfg.entropy_weight_at(step),
            "commitment": cfg.commitment_weight,
            "codebook": cfg.codebook_weight,
        }
        if key not in weights:
            raise ValueError(f"no loss weight for the regularizer's aux term {key!r} (known: {sorted(weights)})")
        return weights[key]

    def adaptive_weight(self, nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor | None) -> Tensor:
        """VQGAN's balance ||grad_W nll|| / (||grad_W g|| + 1e-4), clamped, detached, times disc_weight."""
        cfg = self.config
        if not cfg.adaptive_weight or last_layer is None or not last_layer.requires_grad:
            return torch.tensor(cfg.disc_weight, device=nll_loss.device)
        nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        weight = torch.linalg.vector_norm(nll_grad.float()) / (torch.linalg.vector_norm(g_grad.float()) + 1e-4)
        return weight.clamp(0.0, cfg.adaptive_weight_max).detach() * cfg.disc_weight

    def generator_loss(
        self,
        x: Tensor,
        recon: Tensor,
        aux: Mapping[str, Tensor],
        step: int,
        last_layer: Tensor | None = None,
        *,
        include_aux: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total generator loss at iteration `step`; x and recon are (B, 3, T, H, W) in [-1, 1].

        `include_aux=False` logs the aux terms without adding them (stage 2: the encoder is frozen)."""
        cfg = self.config
        b, _, t = x.shape[:3]
        abs_err = (x - recon).abs()
        logs: dict[str, Tensor] = {"l1": abs_err.detach().float().mean()}
        rec = abs_err * cfg.l1_weight if cfg.l1_weight != 1.0 else abs_err
        if self.perceptual is not None:
            # One LPIPS value per frame, broadcast over that frame's C x H x W elements (the reference's arithmetic).
            p = self.perceptual(_frames(x.contiguous()), _frames(recon.contiguous())).float()
            rec = rec + cfg.perceptual_weight * p.view(b, t).view(b, 1, t, 1, 1)
            logs[cfg.perceptual_name] = p.detach().mean()
        nll = rec / torch.exp(self.logvar) + self.logvar
        nll_loss = nll.sum() / (b * t)
        total = nll_loss
        logs.update(nll=nll_loss.detach(), logvar=self.logvar.detach())
        if cfg.gan_active(step) and self.discriminator is not None:
            g_loss = non_saturating_g_loss(self._disc_logits(recon))
            d_weight = self.adaptive_weight(nll_loss, g_loss, last_layer)
            total = total + d_weight * cfg.disc_factor * g_loss
            logs.update(g_loss=g_loss.detach(), d_weight=d_weight.detach())
        for key, value in aux.items():
            weight = self.aux_weight(key, step)
            logs[key] = value.detach().float()
            if include_aux and weight:
                total = total + weight * value
        if "entropy" in aux:
            logs["entropy_weight"] = torch.tensor(cfg.entropy_weight_at(step))
        logs["loss_g"] = total.detach()
        return total, logs

    def discriminator_loss(self, x: Tensor, recon: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Hinge + LeCAM loss of the discriminator on detached inputs; updates the LeCAM EMAs first."""
        cfg = self.config
        if self.discriminator is None:
            raise ValueError("discriminator_loss called with loss.disc_type 'none'")
        logits_real = self._disc_logits(x.detach().contiguous())
        logits_fake = self._disc_logits(recon.detach().contiguous())
        hinge = hinge_d_loss(logits_real, logits_fake)
        loss = hinge
        real_mean, fake_mean = logits_real.detach().double().mean(), logits_fake.detach().double().mean()
        logs = {"d_hinge": hinge.detach(), "logits_real": real_mean.float(), "logits_fake": fake_mean.float()}
        if cfg.lecam_weight > 0:
            with torch.no_grad():
                self.lecam_ema_real.mul_(cfg.lecam_decay).add_((1 - cfg.lecam_decay) * real_mean)
                self.lecam_ema_fake.mul_(cfg.lecam_decay).add_((1 - cfg.lecam_decay) * fake_mean)
            lecam = lecam_regularizer(logits_real, logits_fake, self.lecam_ema_real, self.lecam_ema_fake)
            loss = loss + cfg.lecam_weight * lecam
            logs["lecam"] = lecam.detach()
        loss = cfg.disc_factor * loss
        logs["loss_d"] = loss.detach()
        return loss, logs


def _lpips_module(config: LossConfig) -> nn.Module:
    """The frozen LPIPS network, resolved exactly as the LPIPS metric resolves its trunk (vidtok.metrics)."""

    try:
        metric = LPIPSMetric(
            config.lpips_net,
            trunk_path=config.lpips_trunk_path,
            random_trunk_for_tests=config.lpips_random_trunk_for_tests,
        )
    except MissingWeightsError as err:
        raise MissingWeightsError(f"{err}; or train without it: loss.perceptual_weight=0") from None
    return metric.module
