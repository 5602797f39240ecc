"""Helpers the tests share (one place for each): the repository root, small models, frame comparison, throw-away
copies of a data root.

    from tests.helpers import REPO, tiny, psnr
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
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


def deterministic_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Float32 weights for every key of `shapes`, the same on any machine and in any process: each tensor comes from
    its own numpy PCG64 generator seeded with seed + crc32(key), so no key depends on which other keys are asked for.

    Scaled so a whole VidTok keeps its activations O(1): conv / linear weights (2+ dims) normal / sqrt(fan_in), norm
    weights 1 + 0.1 normal, biases 0.05 normal, AlphaBlender mix_factor normal (alpha = sigmoid around 0.5, both
    paths count), other scalars 0.1 normal. Used to run the project and the upstream code on identical random weights
    (tests/golden/make_upstream_golden.py) without storing a checkpoint.
    """
    out = {}
    for key, shape in shapes.items():
        shape = tuple(int(d) for d in shape)
        rng = np.random.Generator(np.random.PCG64(seed + zlib.crc32(key.encode())))
        noise = rng.standard_normal(shape, dtype=np.float32)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "mix_factor":
            value = noise
        elif len(shape) >= 2:
            value = noise / np.float32(np.sqrt(np.prod(shape[1:])))
        elif leaf == "weight":
            value = 1 + np.float32(0.1) * noise
        elif leaf == "bias":
            value = np.float32(0.05) * noise
        else:
            value = np.float32(0.1) * noise
        out[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return out


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of the PostgreSQL server programs (initdb, pg_ctl) from the OS packages, or None."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


@contextlib.contextmanager
def postgres_server(database: str = "optuna") -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust authentication, TCP only), yielding the SQLAlchemy URL of
    an empty `database`; stopped and deleted afterwards. PostgreSQL refuses to run as root, so as root the cluster
    belongs to the `postgres` account the OS package creates (its folder outside pytest's private temp tree)."""
    binaries = postgres_bin()
    if binaries is None:
        raise FileNotFoundError("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="vidtok-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "optuna", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start")
        try:
            run(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "optuna", database)
            yield f"postgresql+psycopg2://optuna@127.0.0.1:{port}/{database}"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def accepts_connections(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is accepted (a server listening there)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def trial_table(
    rows: list[tuple[float, int, str, float | None]],
    test_offset: float = -2.0,
    study: str = "sweep-fps",
    label: str = "{:g}",
) -> pd.DataFrame:
    """A trials table (vidtok.studies.results.TrialsSchema) of (fps, seed, state, val psnr) rows: level label
    `label.format(fps)`, test PSNR = val PSNR + test_offset, trivial codec 20 dB on val and 19 dB on test."""
    return pd.DataFrame(
        [
            dict(
                study=study,
                trial=i,
                state=state,
                factor="fps",
                level=label.format(fps),
                level_value=fps,
                seed=seed,
                regularizer="kl",
                psnr=psnr,
                ssim=0.7 if psnr else None,
                vmaf=None,
                lpips=None,
                fvd=None,
                trivial_psnr=20.0,
                codebook_utilisation=None,
                perplexity=None,
                test_psnr=None if psnr is None else psnr + test_offset,
                test_ssim=0.6 if psnr else None,
                test_trivial_psnr=19.0,
                train_tflops=12.5,
                train_wall_s=60.0,
                gpu_hours=None,
                steps=100,
                run_dir=f"runs/trial_{i}",
                metrics_path=None,
                metrics_sha256=None,
                test_metrics_path=None,
                test_metrics_sha256=None,
                code_sha256=None,
                params_json=json.dumps(  # what run_trial was asked, as sweeps.py records it
                    {
                        "study": study,
                        "level": label.format(fps),
                        "seed": seed,
                        "profile": "study",
                        "overrides": [f"train.fps={fps:g}"],
                        "schedule": "twostage",
                        "eval_clips": 96,
                    },
                    sort_keys=True,
                ),
                error=None if state != "FAIL" else "stopped",
                started_at=None,
                ended_at=None,
            )  # fmt: skip
            for i, (fps, seed, state, psnr) in enumerate(rows)
        ]
    )
