"""Helpers the tests share (one place for each): the repository root, small models, frame comparison, throw-away
copies of a data root.

    from tests.helpers import REPO, tiny, psnr
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import torch

from vidtok.data.config import DataConfig
from vidtok.model.config import derive
from vidtok.model.vidtok import VidTok

REPO = Path(__file__).resolve().parent.parent
# Two decodes of the same picture through a lossy codec stay above this PSNR (dB); different frames do not.
SAME_FRAME_DB = 32


def randomize_identity_init(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Zero-initialised temporal convs make a fresh model blind to time; give them weights so tests can see it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mix_factor" in name:
                p.uniform_(-1.0, 3.0)
            elif p.abs().sum() == 0:
                p.normal_(0.0, std)
    return model


def tiny(name: str = "tiny_kl_causal_444", **changes: object) -> VidTok:
    """A tiny preset (or one with changed fields) in eval mode, sensitive to time."""
    return randomize_identity_init(VidTok(derive(name, **changes), name=name)).eval()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays (inf when equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def copy_root(template: Path, dest: Path) -> Path:
    """A writable copy of a prepared data root (params.yaml, data/, outputs/), links kept as links."""
    shutil.copytree(template, dest, symlinks=True)
    return dest


def data_config_in(root: Path, **changes: object) -> DataConfig:
    """A DataConfig whose folders (data, manifest, clip indexes, caches) all lie under `root`."""
    return DataConfig(
        data_dir=str(root / "data"),
        manifest=str(root / "out" / "manifest.parquet"),
        clips_dir=str(root / "out" / "clips"),
        cache_dir=str(root / "out" / "cache"),
        **changes,  # type: ignore[arg-type]
    )


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine other than 127.x (the one its default route uses), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def accepts_connections(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is accepted (a server listening there)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False
