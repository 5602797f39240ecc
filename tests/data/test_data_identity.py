"""The manifest, clip indexes and frame caches are keyed by the code, settings and files that made them: change any
one input and the next run rebuilds (or refuses), never reads the old artefact.

.venv/bin/pytest tests/data/test_data_identity.py -q
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import data_config_in
from vidtok import runs
from vidtok.data.clips import (
    ClipIndexError,
    build_clip_index,
    cache_path,
    ensure_clip_caches,
    ensure_clip_index,
    load_clip_index,
    read_clip_summary,
)
from vidtok.data.config import DataConfig
from vidtok.data.manifest import (
    build_manifest,
    ensure_manifest,
    manifest_record_path,
    manifest_stale_reason,
    read_manifest,
)
from vidtok.data.video import write_video

RATE = 8


def footage(path: Path, seed: int, frames: int = 60) -> None:
    """3 s of its own footage at 20 fps, 64x64: a smooth random colour field drifting right, so every seed is
    other content (its own content group) and every frame differs."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (8, 16, 3)).astype(np.float32)
    big = np.kron(field, np.ones((8, 8, 1), np.float32))  # (64, 128, 3)
    write_video(path, np.stack([big[:, 2 * t % 64 : 2 * t % 64 + 64] for t in range(frames)]).astype(np.uint8), 20)


@pytest.fixture
def built(tmp_path: Path) -> DataConfig:
    """Five small PyAV-made videos (enough content groups for a val and a test group), their manifest, the clip
    index at 8 fps and a 32 px frame cache, all current."""
    config = data_config_in(tmp_path, min_side=32, cache_resolutions=(32,))
    Path(config.data_dir).mkdir(parents=True)
    for k in range(5):
        footage(Path(config.data_dir) / f"v{k}.mp4", seed=k)
    build_manifest(config, progress=False)
    ensure_clip_index(config, RATE, progress=False)
    ensure_clip_caches(config, RATE, [32], progress=False)
    assert manifest_stale_reason(config) is None
    return config


def _rebuilt(config: DataConfig) -> bool:
    """ensure_* on every artefact; True when the manifest was rebuilt (the index and cache follow it)."""
    before = read_clip_summary(config, RATE)["index_sha256"]
    manifest = ensure_manifest(config, progress=False)
    ensure_clip_index(config, RATE, progress=False)
    ensure_clip_caches(config, RATE, [32], progress=False)
    meta = json.loads(cache_path(config, RATE, 32).with_suffix(".json").read_text())
    assert meta["index_sha256"] == read_clip_summary(config, RATE)["index_sha256"]  # the cache follows the index
    load_clip_index(config, RATE)  # current now
    return manifest is not None and (before is not None)


def test_a_current_manifest_is_not_rebuilt_even_in_a_copy_with_new_mtimes(built: DataConfig, tmp_path: Path) -> None:
    assert ensure_manifest(built, progress=False) is None
    copy = tmp_path / "copy"
    shutil.copytree(Path(built.data_dir).parent, copy)  # copytree keeps mtimes: touch them, as a checkout would
    for video in (copy / "data").iterdir():
        os.utime(video, (1_000_000_000, 1_000_000_000))
    config = data_config_in(copy, min_side=32, cache_resolutions=(32,))
    assert manifest_stale_reason(config) is None  # same bytes: re-hashed, not rebuilt


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"split_salt": "another draw"}, "settings changed: data.split_salt 'vidtok' -> 'another draw'"),
        ({"test_fraction": 0.3}, "data.test_fraction 0.2 -> 0.3"),
        ({"val_fraction": 0.25}, "data.val_fraction 0.15 -> 0.25"),
        ({"min_side": 40}, "data.min_side 32 -> 40"),
        ({"clip_frames": 9}, "data.clip_frames 17 -> 9"),
    ],
)
def test_each_setting_that_shapes_the_manifest_rebuilds_it(built: DataConfig, change: dict, phrase: str) -> None:
    config = built.replace(**change)
    assert phrase in str(manifest_stale_reason(config))
    with pytest.raises(ClipIndexError, match="the manifest is stale .*vidtok data manifest"):
        load_clip_index(config, RATE)  # a reader never takes the old one
    with pytest.raises(ClipIndexError, match="rebuild it first with `vidtok data manifest`"):
        build_clip_index(config, RATE, progress=False)
    assert _rebuilt(config)
    assert manifest_stale_reason(config) is None and manifest_stale_reason(built) is not None


def test_a_changed_split_salt_gives_the_new_split_to_every_artefact(built: DataConfig) -> None:
    before = read_manifest(built.manifest).set_index("path")["split"]
    for salt in ("a", "b", "c", "d", "e", "f"):
        config = built.replace(split_salt=salt)
        _rebuilt(config)
        after = read_manifest(config.manifest).set_index("path")["split"]
        if not after.equals(before):
            break
    else:
        pytest.fail("six salts drew the same split")
    index = load_clip_index(config, RATE)
    assert index.groupby("path")["split"].first().to_dict() == after[after.index.isin(index["path"])].to_dict()


@pytest.mark.parametrize("edit", ["added", "removed", "modified"])
def test_changed_data_files_rebuild_the_manifest(built: DataConfig, edit: str) -> None:
    data = Path(built.data_dir)
    if edit == "added":
        footage(data / "v9.mp4", seed=9)
    elif edit == "removed":
        (data / "v4.mp4").unlink()
    else:  # other footage under the same name, same size class: what a re-export does
        footage(data / "v4.mp4", seed=99)
    assert f"the files under {built.data_dir} changed: 1 {edit}" in str(manifest_stale_reason(built))
    assert _rebuilt(built)


def test_changed_data_code_rebuilds_every_artefact(built: DataConfig, tmp_path: Path, monkeypatch) -> None:
    """A line changed in a source file of CODE_PATHS['manifest'] (here an extra file put on that list)."""
    extra = tmp_path / "extra_rule.py"
    extra.write_text("RULE = 1\n")
    monkeypatch.setitem(runs.CODE_PATHS, "manifest", (*runs.CODE_PATHS["manifest"], str(extra)))
    monkeypatch.setitem(runs.CODE_PATHS, "clips", (*runs.CODE_PATHS["clips"], str(extra)))
    build_manifest(built, progress=False)
    ensure_clip_index(built, RATE, progress=False)
    assert manifest_stale_reason(built) is None
    extra.write_text("RULE = 2\n")
    assert "the data code (or the torch / torchvision / av version) changed" in str(manifest_stale_reason(built))
    assert _rebuilt(built)


def test_another_torch_version_rebuilds_every_artefact(built: DataConfig, monkeypatch) -> None:
    versions = runs.numeric_package_versions()
    monkeypatch.setattr(runs, "numeric_package_versions", lambda: {**versions, "av": "0.0.1"})
    assert "torch / torchvision / av version" in str(manifest_stale_reason(built))
    assert _rebuilt(built)


def test_clip_code_alone_rebuilds_the_index_and_cache(built: DataConfig, tmp_path: Path, monkeypatch) -> None:
    extra = tmp_path / "clip_rule.py"
    extra.write_text("X = 1\n")
    monkeypatch.setitem(runs.CODE_PATHS, "clips", (*runs.CODE_PATHS["clips"], str(extra)))
    with pytest.raises(ClipIndexError, match="the clip code .* changed since it was built"):
        load_clip_index(built, RATE)
    assert not _rebuilt(built)  # the manifest stays (its code did not change); index and cache were rebuilt


@pytest.mark.parametrize("damage", ["record missing", "manifest edited"])
def test_a_manifest_without_its_true_record_is_rebuilt(built: DataConfig, damage: str) -> None:
    if damage == "record missing":
        os.remove(manifest_record_path(built))
        phrase = "(what made the manifest) does not exist"
    else:
        df = read_manifest(built.manifest)
        df.loc[0, "split"] = "test" if df.loc[0, "split"] != "test" else "train"
        df.to_parquet(built.manifest, index=False)
        phrase = "is not the file its record describes"
    assert phrase in str(manifest_stale_reason(built))
    assert _rebuilt(built)
