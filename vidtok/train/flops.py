"""How much arithmetic a training iteration does: what the staging study reports as compute, and what
benchmarks/train_speed.py divides by the step time (GFLOP/s against the machine's matmul ceiling).

    python -c "from vidtok.train.flops import iteration_flops; print(iteration_flops('tiny_kl_causal_444', 2, 17, 64))"

Counted with torch's FlopCounterMode on one forward + backward of the generator (reconstruction and its L1 loss)
on the meta device: shapes only, no arithmetic is run, so a count takes about a second whatever the size (and the
CPU's oneDNN convolutions, which FlopCounterMode does not see, never come into it). A FLOP is one multiply or one
add (a multiply-add is 2). The discriminator, when on, adds to this and is not counted here.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidtok.model.config import ModelConfig, get_preset
from vidtok.model.vidtok import VidTok

__all__ = ["iteration_flops"]


@functools.lru_cache(maxsize=64)
def _count(config: ModelConfig, batch: int, frames: int, resolution: int, frozen_encoder: bool) -> int:
    with torch.device("meta"):
        model = VidTok(config).train()
        x = torch.empty(batch, 3, frames, resolution, resolution)
    if frozen_encoder:  # stage 2: only the decoder trains, the encoder runs forward without gradients
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("decoder."))
    with FlopCounterMode(display=False) as counter:
        recon = model(x)[0]
        (recon - x).abs().mean().backward()
    return int(counter.get_total_flops())


def iteration_flops(
    model: str | ModelConfig, batch: int, frames: int, resolution: int, frozen_encoder: bool = False
) -> int:
    """FLOPs of one generator iteration (forward + backward) on `batch` clips of `frames` x `resolution`^2."""
    config = get_preset(model) if isinstance(model, str) else model
    return _count(config, int(batch), int(frames), int(resolution), bool(frozen_encoder))
