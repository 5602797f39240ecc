"""Does it learn? Short training runs on the main job's clips, outside the training harness, to tell the model, the
optimiser and the loss apart (issue 17, item 3).

    python -m benchmarks.probes.learning_probe --model plain --steps 300          # a plain conv autoencoder, same grid
    python -m benchmarks.probes.learning_probe --model tiny_kl_causal_444 --lr 1e-3 --loss l1
    python -m benchmarks.probes.learning_probe --model tiny_kl_causal_444 --loss nll   # the harness's NLL + logvar
    python -m benchmarks.probes.learning_probe --model trivial:tiny_kl_causal_444 --batch 8 --resolution 32 --lr 5e-4

Both models compress a (3, 17, 64, 64) clip to a (4, 5, 16, 16) latent (4x4x4, 4 channels; the trivial codec keeps
3 channels on the same grid). Train clips: the data module of params.yaml (3 fps, the cached 64 px shard, the
per-video cap); val: `--val-clips` clips evenly spaced over the val split at data.val_fps, the same clips for
every run. Adam, a linear warm-up, no GAN, no KL term (the harness weighs it 1e-6). Prints one JSON line per
evaluation (step, val PSNR / SSIM, the trivial codec on the same clips, train PSNR of the last 25 steps, wall
seconds) and appends them to benchmarks/results/learning_probe.jsonl.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn as nn

from benchmarks.harness import ROOT, add_out_argument, argument_parser, emit
from vidtok import metrics as M
from vidtok.data.config import load_data_config
from vidtok.data.loader import VideoDataModule, stack_clips
from vidtok.model.config import derive, get_preset
from vidtok.model.trivial import trivial_codec
from vidtok.model.vidtok import VidTok


class PlainAutoencoder(nn.Module):
    """Two stride-2 3D convolutions down (time and space: 4x4x4), two transposed up, ReLU, no normalisation: the
    simplest model with the tiny preset's latent grid. Causality and the first-frame rule of VidTok are not
    reproduced; frame counts 1 + 4k are padded by one replicated frame at the start."""

    def __init__(self, width: int = 32, z_channels: int = 4):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv3d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv3d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv3d(2 * width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(2 * width, z_channels, 3, padding=1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv3d(z_channels, 2 * width, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose3d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(width, width, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose3d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(width, 3, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        t = x.shape[2]
        padded = torch.cat([x[:, :, :1].expand(-1, -1, (-t) % 4, -1, -1), x], dim=2)
        return self.decoder(self.encoder(padded))[:, :, -t:], {}


class LinearCodec(nn.Module):
    """The trivial codec with learned colour mixing: box-average 4x4x4, a 1x1x1 conv to 4 channels and back,
    trilinear upsampling. Near the trivial codec from its first steps if the optimiser works at all."""

    def __init__(self, z_channels: int = 4):
        super().__init__()
        self.encode = nn.Conv3d(3, z_channels, 1)
        self.decode = nn.Conv3d(z_channels, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        t, h, w = x.shape[2:]
        padded = torch.cat([x[:, :, :1].expand(-1, -1, (-t) % 4, -1, -1), x], dim=2)
        z = self.encode(nn.functional.avg_pool3d(padded, 4))
        out = nn.functional.interpolate(self.decode(z), size=padded.shape[2:], mode="trilinear")
        return out[:, :, -t:], {}


class FrameGroupNorm(nn.Module):
    """GroupNorm over (channels of a group, H, W) of each frame: statistics never mix frames (causal-safe)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class BlockShortcut(nn.Module):
    """Residual autoencoding around a VidTok model (after DC-AE's shortcuts, Chen et al. 2024), for the probe: the
    block-averaged input is added to the first three latent channels (the KL mean), the decoder output gets those
    channels back, repeated over each block. Zero-initialised output convs make the untrained model this block
    codec; training learns the residual."""

    def __init__(self, model: VidTok, logvar_init: float = -8.0):
        super().__init__()
        self.model = model
        for conv in (model.encoder.conv_out, model.decoder.conv_out):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        if model.config.regularizer == "kl":
            nn.init.constant_(model.encoder.conv_out.bias[model.config.z_channels :], logvar_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        m, cfg = self.model, self.model.config
        t = x.shape[2]
        tf, sf = cfg.temporal_factor, cfg.spatial_factor
        padded = torch.cat([x[:, :, :1].expand(-1, -1, m.front_padding(t), -1, -1), x], dim=2)
        h = m.encoder(padded)
        pooled = nn.functional.avg_pool3d(padded, (tf, sf, sf))
        h = torch.cat([h[:, :3] + pooled, h[:, 3:]], dim=1)
        z = m.regularizer(h).latents
        up = z[:, :3].repeat_interleave(tf, 2).repeat_interleave(sf, 3).repeat_interleave(sf, 4)
        out = m.decoder(z) + up
        return out[:, :, -t:], {}


def build(name: str, norm: str = "layer") -> nn.Module:
    if name.startswith("trivial:"):  # the model's own shortcut (ModelConfig.shortcut), which this probe introduced
        return VidTok(derive(name[8:], shortcut="trivial"), name=name)
    if name.startswith("shortcut:"):
        return BlockShortcut(VidTok(get_preset(name[9:]), name=name[9:]))
    if name == "plain":
        return PlainAutoencoder()
    if name == "linear":
        return LinearCodec()
    model = VidTok(get_preset(name), name=name)
    if norm != "layer":
        for module in list(model.modules()):
            for child_name, child in list(module.named_children()):
                if type(child).__name__ == "ChannelLayerNorm":
                    channels = child.norm.normalized_shape[0]
                    new = nn.Identity() if norm == "none" else FrameGroupNorm(channels, max(1, channels // 8))
                    setattr(module, child_name, new)
    return model


def reconstruct(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + batch])[0] for i in range(0, len(x), batch)])
    model.train()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--model", default="plain", help="'plain' or a preset name")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=25)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--fps", type=float, default=3)
    parser.add_argument("--frames", type=int, default=0, help="use the first N frames of each clip (0: all)")
    parser.add_argument("--loss", choices=("l1", "mse", "nll"), default="l1")
    parser.add_argument("--clip", type=float, default=0.0, help="gradient-norm clip (0: off)")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--val-clips", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--norm",
        choices=("layer", "group", "none"),
        default="layer",
        help="VidTok's channel LayerNorm, per-frame GroupNorm (8 channels a group) or none",
    )
    parser.add_argument("--overfit", action="store_true", help="train on the first batch only (a capacity check)")
    add_out_argument(parser, "learning_probe")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    config = load_data_config(ROOT / "params.yaml")
    dm = VideoDataModule(config, fps=args.fps, resolution=args.resolution, batch_size=args.batch)
    dm.setup("fit")
    loader = dm.step_loader(0, args.steps)()
    val = stack_clips(dm.val_dataset, args.val_clips)
    if args.frames:
        val = val[:, :, : args.frames]
    model = build(args.model, args.norm)
    trivial = M.to_unit(trivial_codec(val, get_preset("tiny_kl_causal_444")))
    ref = M.to_unit(val)
    baseline = {"trivial_psnr": M.psnr(ref, trivial).value, "trivial_ssim": M.ssim(ref, trivial).value}
    logvar = nn.Parameter(torch.zeros(()))
    params = list(model.parameters()) + ([logvar] if args.loss == "nll" else [])
    opt = torch.optim.Adam(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup)))
    train_psnr: list[float] = []
    start = time.perf_counter()

    def report(step: int) -> None:
        rec = M.to_unit(reconstruct(model, val, args.batch))
        row = {
            "model": args.model, "loss": args.loss, "lr": args.lr, "warmup": args.warmup, "batch": args.batch,
            "resolution": args.resolution, "frames": args.frames, "clip": args.clip, "seed": args.seed,
            "tag": args.tag, "step": step,
            "overfit": args.overfit, "norm": args.norm,
            "val_psnr": round(M.psnr(ref, rec).value, 3), "val_ssim": round(M.ssim(ref, rec).value, 4),
            **{k: round(v, 3) for k, v in baseline.items()},
            "train_psnr_last": round(statistics.mean(train_psnr[-25:]), 3) if train_psnr else None,
            "wall_s": round(time.perf_counter() - start, 1),
            "logvar": round(float(logvar.detach()), 4),
        }  # fmt: skip
        emit(row, args.out)

    report(0)
    first = None
    for step, x in enumerate(loader, start=1):
        if args.frames:
            x = x[:, :, : args.frames]
        if args.overfit:
            first = x if first is None else first
            x = first
        recon = model(x)[0]
        err = recon - x
        if args.loss == "l1":
            loss = err.abs().mean()
        elif args.loss == "mse":
            loss = err.pow(2).mean()
        else:  # the harness: sum over a frame's pixels, mean over frames, learned scalar log-variance
            loss = (err.abs() / torch.exp(logvar) + logvar).sum() / (x.shape[0] * x.shape[2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        sched.step()
        mse = float(err.detach().pow(2).mean()) / 4  # [-1, 1] -> [0, 1]
        train_psnr.append(10 * math.log10(1 / max(mse, 1e-12)))
        if step % args.every == 0 or step == args.steps:
            report(step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
