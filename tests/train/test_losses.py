"""The VidTok training loss: arithmetic against hand computations, GAN terms, schedules and the LPIPS weights path.

pytest tests/train/test_losses.py -q
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidtok import VidTok
from vidtok.metrics import MissingWeightsError
from vidtok.train.config import TrainConfig
from vidtok.train.losses import (
    LossConfig,
    PatchDiscriminator2d,
    PatchDiscriminator3d,
    VidTokLoss,
    hinge_d_loss,
    lecam_regularizer,
    non_saturating_g_loss,
)
from vidtok.train.module import TrainingModule, last_layer


def _video(b: int = 2, t: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.rand(b, 3, t, h, w) * 2 - 1


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"disc_type": "4d"}, "disc_type"),
        ({"lecam_decay": 1.0}, "lecam_decay"),
        ({"kl_weight": -1}, "kl_weight"),
        ({"lpips_net": "squeeze"}, "lpips_net"),
        ({"disc_start": 1.5}, "disc_start"),
        ({"entropy_anneal_factor": 0.5}, "entropy_anneal_factor"),
        ({"learn_logvar": "yes"}, "learn_logvar"),
    ],
)
def test_bad_loss_config_names_the_field(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LossConfig(**change)


def test_unknown_loss_key_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown loss parameter.*perceptual_weight"):
        LossConfig.from_dict({"percept_weight": 1.0})


def test_entropy_weight_anneals_linearly_from_three_times() -> None:
    cfg = LossConfig()
    assert cfg.entropy_weight_at(0) == pytest.approx(0.3)
    assert cfg.entropy_weight_at(1000) == pytest.approx(0.2)
    assert cfg.entropy_weight_at(1999) == pytest.approx(0.1001)
    assert cfg.entropy_weight_at(2000) == 0.1
    assert cfg.entropy_weight_at(10**6) == 0.1


def test_disc_start_gates_the_gan_by_iteration() -> None:
    cfg = LossConfig(disc_start=5)
    assert [cfg.gan_active(s) for s in (0, 4, 5, 6)] == [False, False, True, True]
    assert not LossConfig(disc_type="none", disc_start=0).gan_active(100)
    assert LossConfig().disc_start == 10_000  # the reference's 20001 global steps = ~10k iterations


# ------------------------------------------------------------------------------------------------ terms


def test_hinge_lecam_and_generator_terms_by_hand() -> None:
    real = torch.tensor([[2.0, 0.5], [-1.0, 0.0]])
    fake = torch.tensor([[-2.0, 0.5], [1.0, -0.5]])
    hinge = 0.5 * (((1 - real).clamp_min(0)).mean() + ((1 + fake).clamp_min(0)).mean())
    assert hinge_d_loss(real, fake) == pytest.approx(float(hinge))
    ema_r, ema_f = torch.tensor(0.25, dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64)
    lecam = ((real + 0.5).clamp_min(0) ** 2).mean() + ((0.25 - fake).clamp_min(0) ** 2).mean()
    assert lecam_regularizer(real, fake, ema_r, ema_f) == pytest.approx(float(lecam))
    # per-sample mean logit, then softplus(-l): the non-saturating BCE with target 1
    means = real.mean(1)
    expected = F.binary_cross_entropy_with_logits(means, torch.ones_like(means))
    assert non_saturating_g_loss(real) == pytest.approx(float(expected), rel=1e-6)


def test_nll_is_summed_over_pixels_and_averaged_over_frames() -> None:
    loss = VidTokLoss(LossConfig(perceptual_weight=0, disc_type="none", logvar_init=0.5))
    x, y = _video(2, 3, 8, 8), _video(2, 3, 8, 8)
    total, logs = loss.generator_loss(x, y, {}, step=0)
    expected = ((x - y).abs() / math.exp(0.5) + 0.5).sum() / (2 * 3)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert float(logs["l1"]) == pytest.approx(float((x - y).abs().mean()), rel=1e-6)


def test_perceptual_term_is_broadcast_to_every_pixel_of_its_frame() -> None:
    cfg = LossConfig(lpips_random_trunk_for_tests=True, disc_type="none", perceptual_weight=0.5)
    loss = VidTokLoss(cfg)
    x, y = _video(1, 2, 32, 32), _video(1, 2, 32, 32)
    total, logs = loss.generator_loss(x, y, {}, step=0)
    frames = lambda v: v.transpose(1, 2).reshape(2, 3, 32, 32)  # noqa: E731
    p = loss.perceptual(frames(x), frames(y)).flatten()  # one value per frame
    expected = ((x - y).abs().sum() + 0.5 * p.sum() * 3 * 32 * 32) / 2  # logvar 0: nll = rec
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    assert "lpips" not in logs and "random_feature_distance" in logs  # a random trunk is never called LPIPS
    assert not loss.perceptual.training
    loss.train()
    assert not loss.perceptual.training  # LPIPS stays a fixed metric (no dropout)


def test_perceptual_loss_without_trunk_weights_stops_before_compute(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("VIDTOK_LPIPS_TRUNK", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    with pytest.raises(MissingWeightsError, match=r"vgg16-397923af\.pth.*perceptual_weight=0"):
        VidTokLoss(LossConfig(perceptual_weight=1.0))
    VidTokLoss(LossConfig(perceptual_weight=0))  # explicitly off: fine


def test_aux_terms_are_weighted_and_annealed() -> None:
    loss = VidTokLoss(LossConfig(perceptual_weight=0, disc_type="none"))
    x = _video(1, 1, 8, 8)
    base, _ = loss.generator_loss(x, x, {}, step=0)
    aux = {"entropy": torch.tensor(2.0), "commitment": torch.tensor(4.0)}
    total, logs = loss.generator_loss(x, x, aux, step=1000)
    assert float(total - base) == pytest.approx(0.2 * 2.0 + 0.25 * 4.0)
    assert logs["entropy_weight"] == pytest.approx(0.2)
    total, _ = loss.generator_loss(x, x, {"kl": torch.tensor(1e6)}, step=0)
    assert float(total - base) == pytest.approx(1.0)  # KL weight 1e-6
    zero = VidTokLoss(LossConfig(perceptual_weight=0, disc_type="none", codebook_weight=0, commitment_weight=0))
    total, logs = zero.generator_loss(x, x, {"codebook": torch.tensor(3.0), "commitment": torch.tensor(3.0)}, 0)
    assert float(total) == pytest.approx(float(base)) and float(logs["codebook"]) == 3.0  # "VQ without reg. loss"
    frozen, _ = loss.generator_loss(x, x, aux, step=0, include_aux=False)
    assert float(frozen) == pytest.approx(float(base))


def test_adaptive_weight_matches_hand_autograd() -> None:
    torch.manual_seed(0)
    model = VidTok.from_preset("tiny_kl_causal_444")
    loss = VidTokLoss(LossConfig(perceptual_weight=0, disc_start=0))
    x = _video(1, 5, 32, 32)
    recon, enc = model(x)
    w = last_layer(model)
    total, logs = loss.generator_loss(x, recon, enc.aux, step=0, last_layer=w)
    nll = ((x - recon).abs() / torch.exp(loss.logvar) + loss.logvar).sum() / 5
    g = F.softplus(-loss.discriminator(recon.transpose(1, 2).reshape(5, 3, 32, 32)).flatten(1).mean(1)).mean()
    gn = torch.autograd.grad(nll, w, retain_graph=True)[0].norm()
    gg = torch.autograd.grad(g, w, retain_graph=True)[0].norm()
    expected = (gn / (gg + 1e-4)).clamp(0, 1e4) * 0.2
    assert float(logs["d_weight"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(total) == pytest.approx(float(nll + expected * g + 1e-6 * enc.aux["kl"]), rel=1e-5)


def test_lecam_ema_is_a_checkpointed_buffer_updated_before_use() -> None:
    loss = VidTokLoss(LossConfig(perceptual_weight=0, disc_start=0, lecam_decay=0.5))
    assert {"lecam_ema_real", "lecam_ema_fake"} <= set(loss.training_state_dict())
    x, y = _video(), _video()
    _, logs = loss.discriminator_loss(x, y, step=0)
    assert float(loss.lecam_ema_real) == pytest.approx(0.5 * float(logs["logits_real"]), rel=1e-5)
    assert float(loss.lecam_ema_fake) == pytest.approx(0.5 * float(logs["logits_fake"]), rel=1e-5)
    state = {k: v.clone() for k, v in loss.training_state_dict().items()}
    other = VidTokLoss(LossConfig(perceptual_weight=0, disc_start=0, lecam_decay=0.5))
    other.load_training_state_dict(state)
    assert torch.equal(other.lecam_ema_real, loss.lecam_ema_real)
    assert not any(k.startswith("perceptual.") for k in state)


def test_discriminators_keep_the_reference_layout() -> None:
    d2 = PatchDiscriminator2d()
    keys = {k.split(".")[1] for k in d2.state_dict()}
    assert keys == {"0", "2", "3", "5", "6", "8", "9", "11"}  # reference main.* indices
    assert d2.main[8].stride == (1, 1) and d2.main[5].stride == (2, 2)  # 4th conv keeps the resolution
    assert isinstance(d2.main[3], torch.nn.BatchNorm2d)
    assert d2(torch.randn(2, 3, 64, 64)).shape == (2, 1, *d2.output_size(64, 64)) == (2, 1, 6, 6)
    assert float(d2.main[2].weight.std()) == pytest.approx(0.02, rel=0.1)
    d3 = PatchDiscriminator3d()
    assert d3.main[0].kernel_size == (3, 3, 3)
    assert d3(torch.randn(1, 3, 9, 32, 32)).shape == (1, 1, *d3.output_size(9, 32, 32))
    loss = VidTokLoss(LossConfig(perceptual_weight=0))
    with pytest.raises(ValueError, match="at least 24 pixels"):
        loss.check_input(9, 16, 16)


@pytest.mark.parametrize("disc_type", ["2d", "3d"])
def test_generator_and_discriminator_steps_touch_only_their_parameters(disc_type: str) -> None:
    torch.manual_seed(0)
    model = VidTok.from_preset("tiny_kl_causal_444")
    loss = VidTokLoss(LossConfig(perceptual_weight=0, disc_start=0, disc_type=disc_type))
    module = TrainingModule(
        model, loss, TrainConfig(lr=1e-3, lr_disc=1e-3, betas=(0.9, 0.999), grad_clip=20, seed=0, freeze_encoder=False)
    )
    opt_g, opt_d = module.configure_optimizers()
    g_before = {k: v.clone() for k, v in model.state_dict().items()}
    d_before = {k: v.clone() for k, v in loss.discriminator.state_dict().items()}
    x = _video(1, 5, 32, 32)
    # A G-only iteration (D step skipped by passing no D optimizer): D weights untouched (BN stats may move).
    module.iteration(x, opt_g, None, lambda t: t.backward())
    d_params = dict(loss.discriminator.named_parameters())
    assert all(torch.equal(d_before[k], d_params[k]) for k in d_params)
    assert any(not torch.equal(g_before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in loss.discriminator.parameters())  # toggled off during the G step
    # The D loss on an attached reconstruction gives the generator no gradient (it sees detached inputs).
    model.zero_grad(set_to_none=True)
    recon, _ = model(x)
    loss_d, _ = loss.discriminator_loss(x, recon, step=0)
    loss_d.backward()
    assert all(p.grad is None for p in model.parameters())
    assert any(p.grad is not None for p in loss.discriminator.parameters())
    # A full iteration steps both.
    logs = module.iteration(x, opt_g, opt_d, lambda t: t.backward())
    assert "loss_d" in logs and "g_loss" in logs and "grad_norm_d" in logs
    assert any(not torch.equal(d_params[k], d_before[k]) for k in d_params)
    assert module.completed_steps == 2
