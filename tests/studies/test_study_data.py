"""A study's data (outputs/studies/data) follows the settings and files it is made from: a changed split setting or
video rebuilds the manifest, clip indexes and caches before any trial reads them.

.venv/bin/pytest tests/studies/test_study_data.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import copy_root
from vidtok.data.manifest import read_manifest
from vidtok.studies.sweeps import STUDY_DATA_DIR, prepare_data


@pytest.fixture
def root(smoke_root_template: Path, tmp_path: Path) -> Path:
    return copy_root(smoke_root_template, tmp_path / "root")


def _prepare(root: Path) -> list[str]:
    logs: list[str] = []
    prepare_data(root, profile="smoke", fps=[3], log=logs.append)
    return logs


def test_study_data_is_reused_then_rebuilt_when_a_split_setting_changes(root: Path) -> None:
    assert not any("rebuilding" in line for line in _prepare(root))  # the template's data is current
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"] = {**(params.get("data") or {}), "split_salt": "a new draw"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    logs = _prepare(root)
    assert any("rebuilding (settings changed: data.split_salt 'vidtok' -> 'a new draw')" in line for line in logs)
    assert not any("rebuilding" in line for line in _prepare(root))  # and current again
    assert read_manifest(root / STUDY_DATA_DIR / "manifest.parquet") is not None


def test_study_data_is_rebuilt_when_a_video_is_removed(root: Path) -> None:
    (root / "data" / "carphone_distorted.mp4").unlink()
    logs = _prepare(root)
    assert any("the files under" in line and "1 removed (first: carphone_distorted.mp4)" in line for line in logs)
    manifest = read_manifest(root / STUDY_DATA_DIR / "manifest.parquet")
    assert "carphone_distorted.mp4" not in set(manifest["path"])
