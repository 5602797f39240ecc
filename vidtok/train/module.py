"""The LightningModule of VidTok training: one generator and one discriminator step per iteration, the weight EMA.

python -c "from vidtok.train.module import TrainingModule; help(TrainingModule.iteration)"
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vidtok.model.vidtok import VidTok
from vidtok.train.config import TrainConfig
from vidtok.train.losses import LossConfig, VidTokLoss
from vidtok.train.state import split_state, unflatten_optimizer


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss or gradients): one line with the step and the last good checkpoint."""


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of iteration `step` on `rank`: independent streams per (seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------------ EMA


class ModelEMA(nn.Module):
    """Exponential moving average of the trained parameters, as buffers (so they move with the module).

    decay_t = min(decay, (1 + n) / (10 + n)) after n updates (LitEma's warm-up, used by the reference code)."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self._params = [p for p in model.parameters() if p.requires_grad]
        for name, p in zip(self.names, self._params):
            self.register_buffer(name.replace(".", "__"), p.detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    def shadows(self) -> list[Tensor]:
        return [getattr(self, n.replace(".", "__")) for n in self.names]

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        n = float(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(self.shadows(), [p.detach() for p in self._params], 1.0 - decay)

    def model_state(self, model: nn.Module) -> dict[str, Tensor]:
        """The model's state dict with every averaged parameter replaced by its EMA."""
        state = dict(model.state_dict())
        for name, shadow in zip(self.names, self.shadows()):
            state[name] = shadow
        return state


# ------------------------------------------------------------------------------------------------ the module


def log_columns(model: VidTok, loss: LossConfig) -> list[str]:
    """Every column metrics.csv can hold for this model and loss (fixed up front, so rows line up)."""
    cols = ["step", "loss_g", "nll", "l1", "logvar", "psnr", "grad_norm_g", "lr", "clips_per_s", "step_time_s"]
    if loss.perceptual:
        cols.append(loss.perceptual_name)
    cols += {
        "kl": ["kl"],
        "fsq": ["entropy", "commitment", "entropy_weight"],
        "lfq": ["entropy", "commitment", "entropy_weight"],
        "vq": ["codebook", "commitment"],
        "none": [],
    }[model.config.regularizer]
    if loss.disc_type != "none":
        cols += ["g_loss", "d_weight", "loss_d", "d_hinge", "logits_real", "logits_fake", "grad_norm_d"]
        if loss.lecam_weight > 0:
            cols.append("lecam")
    return cols


def last_layer(model: VidTok) -> Tensor:
    """The decoder's last conv weight, where the adaptive GAN weight is measured."""
    return model.decoder.conv_out.weight


class TrainingModule(L.LightningModule):
    """Manual optimisation: per batch one generator step (encoder, decoder, logvar), then one discriminator step.

    `config` gives the rates (lr, lr_d, betas, lr_warmup), grad_clip, the seed, the EMA (ema, ema_decay) and
    whether the encoder is frozen (`encoder_frozen`, stage 2): then the encoder and regularizer run without
    gradients and stay out of the optimizer. `resume` holds a training state to restore in
    `configure_optimizers`. `make_loader(rank, world)` builds the step-indexed DataLoader once the strategy knows the
    rank."""

    def __init__(
        self,
        model: VidTok,
        loss: VidTokLoss,
        config: TrainConfig,
        *,
        start_step: int = 0,
        resume: tuple[dict[str, Any], dict[str, Tensor]] | None = None,
        make_loader: Callable[[int, int], DataLoader] | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model, self.loss, self.config = model, loss, config
        self.freeze_encoder = config.encoder_frozen
        if self.freeze_encoder:
            model.encoder.requires_grad_(False)
            model.regularizer.requires_grad_(False)
        self.ema = ModelEMA(model, config.ema_decay) if config.ema else None
        self.completed_steps = start_step
        self._resume = resume
        self._make_loader = make_loader
        self.last_logs: dict[str, float] = {}
        self.last_checkpoint: str | None = None
        self.rank_weights_sha256: list[str] | None = None  # DDP: each rank's weights digest at the end (Recorder)
        if resume is not None:
            self.loss.load_training_state_dict(split_state(resume[1], "loss"))
            if self.ema is not None:
                self.ema.load_state_dict(split_state(resume[1], "ema"))

    def train(self, mode: bool = True) -> TrainingModule:
        super().train(mode)
        if self.freeze_encoder:
            self.model.encoder.eval()  # frozen: no dropout noise in features the decoder learns from
        return self

    def generator_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.loss.logvar.requires_grad:
            params.append(self.loss.logvar)
        return params

    def configure_optimizers(self) -> Any:
        cfg = self.config
        opt_g = torch.optim.Adam(self.generator_parameters(), lr=cfg.lr, betas=cfg.betas)
        opts = [opt_g]
        if self.loss.discriminator is not None:
            opts.append(torch.optim.Adam(self.loss.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas))
        if self._resume is not None:
            record, tensors = self._resume
            for name, opt in zip(("opt_g", "opt_d"), opts):
                if name in record["optimizers"]:
                    opt.load_state_dict(unflatten_optimizer(name, tensors, record["optimizers"][name]))
        return opts

    def train_dataloader(self) -> DataLoader:
        assert self._make_loader is not None, "TrainingModule needs make_loader to train under a Trainer"
        return self._make_loader(self.global_rank, self.trainer.world_size)

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        return {name: getattr(o, "optimizer", o) for name, o in zip(("opt_g", "opt_d"), opts)}

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        self.last_logs = self.iteration(batch, opts[0], opts[1] if len(opts) > 1 else None, self.manual_backward)

    def _finite(self, value: Tensor, what: str, step: int) -> None:
        if not bool(torch.isfinite(value).all()):
            where = self.last_checkpoint or "none yet (the run dies before its first checkpoint)"
            raise TrainingError(
                f"non-finite {what} ({float(value.detach())}) at step {step}; last good checkpoint: {where}"
            )

    def _clip(self, params: Sequence[Tensor], what: str, step: int) -> Tensor:
        grads = [p for p in params if p.grad is not None]
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(grads, max_norm) if grads else torch.zeros(())
        self._finite(norm, f"{what} gradient norm", step)
        return norm

    def iteration(
        self, x: Tensor, opt_g: Any, opt_d: Any | None, backward: Callable[[Tensor], None]
    ) -> dict[str, float]:
        """One optimisation iteration on batch x (B, 3, T, H, W); also used without a Trainer by the benchmark."""
        step = self.completed_steps
        torch.manual_seed(step_seed(self.config.seed, step, self.global_rank))
        model, loss = self.model, self.loss
        disc = loss.discriminator
        # Generator step. The discriminator judges the reconstruction but is not updated by this loss.
        if disc is not None:
            disc.requires_grad_(False)
        if self.freeze_encoder:
            with torch.no_grad():
                encoded = model.encode(x)
            recon = model.decode(encoded.latents, encoded.num_frames)
        else:
            recon, encoded = model(x)
        loss_g, logs = loss.generator_loss(
            x, recon, encoded.aux, step, last_layer(model), include_aux=not self.freeze_encoder
        )
        self._finite(loss_g, "generator loss", step)
        scale = self.config.lr_scale(step)  # the warm-up of both rates
        for opt, base in ((opt_g, self.config.lr), (opt_d, self.config.lr_d)):
            for group in getattr(opt, "param_groups", ()):
                group["lr"] = base * scale
        opt_g.zero_grad(set_to_none=True)
        backward(loss_g)
        logs["grad_norm_g"] = self._clip(self.generator_parameters(), "generator", step)
        opt_g.step()
        if self.ema is not None:
            self.ema.update()
        if disc is not None:
            disc.requires_grad_(True)
        # Discriminator step on the same (detached) reconstruction, from disc_start on.
        if opt_d is not None and disc is not None and loss.config.gan_active(step):
            loss_d, logs_d = loss.discriminator_loss(x, recon, step)
            self._finite(loss_d, "discriminator loss", step)
            opt_d.zero_grad(set_to_none=True)
            backward(loss_d)
            logs_d["grad_norm_d"] = self._clip(list(disc.parameters()), "discriminator", step)
            opt_d.step()
            logs.update(logs_d)
        with torch.no_grad():
            mse = (x.float().clamp(-1, 1) - recon.detach().float().clamp(-1, 1)).div(2).pow(2).mean()
            logs["psnr"] = -10 * torch.log10(mse.clamp_min(1e-10))
        self.completed_steps = step + 1
        return {k: float(v) for k, v in logs.items()}
