"""The four sample videos alone (`vidtok data samples`) are a corpus every profile can run: the split gives them a
train, a val and a test video, each profile's stage 1 has training clips at its rate and resolution, and its
evaluation has val and test clips. An empty split is an error naming the rule, not clip length.

.venv/bin/pytest tests/data/test_small_corpus.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, data_config_in
from vidtok import VidTok
from vidtok.data.clips import ensure_clip_index, load_clip_index
from vidtok.data.loader import val_subset
from vidtok.data.manifest import build_manifest, empty_split_reason, ensure_manifest, read_manifest
from vidtok.data.sources import copy_samples
from vidtok.evaluation.evaluate import EvalOptions, resolve
from vidtok.model.vidtok import save_pretrained
from vidtok.train.config import load_params

PROFILES = sorted(yaml.safe_load((REPO / "params.yaml").read_text())["profiles"])


@pytest.fixture(scope="module")
def samples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small-corpus")
    copy_samples(str(root / "data"), dvc=False, log=lambda _: None)
    return root


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_has_train_val_and_test_clips_on_the_samples(samples_root: Path, profile: str) -> None:
    params = load_params(REPO / "params.yaml", profile)
    stages = [load_params(REPO / "params.yaml", profile, stage=s).train for s in ("stage1", "stage2")]
    config = data_config_in(samples_root, **{k: getattr(params.data, k) for k in ("clip_frames", "min_side")})
    ensure_manifest(config, progress=False)
    for rate in {train.fps for train in stages} | {config.val_fps}:
        ensure_clip_index(config, rate, progress=False)
    for train in stages:
        index = load_clip_index(config, train.fps)
        assert (index["split"] == "train").sum() > 0, f"{profile} {train.stage}: no train clips at {train.fps} fps"
    evaluation = load_clip_index(config, config.val_fps)
    for split in ("val", "test"):
        chosen = val_subset(evaluation, config.clip_frames, config.clip_stride, 0, split=split, per_video=8)
        assert len(chosen) > 0, f"{profile}: no {split} clips at {config.val_fps} fps"


def test_a_split_that_cannot_be_filled_names_the_rule(samples_root: Path, tmp_path: Path) -> None:
    """Two videos of one footage (the carphone pair): one content group, so no val or test video can exist."""
    config = data_config_in(tmp_path)
    Path(config.data_dir).mkdir(parents=True)
    for name in ("carphone_pristine.mp4", "carphone_distorted.mp4"):
        (Path(config.data_dir) / name).write_bytes((samples_root / "data" / name).read_bytes())
    build_manifest(config, progress=False)
    why = empty_split_reason(read_manifest(config.manifest), "test")
    assert why is not None and "needs 3 content groups" in why and "2 accepted videos in 1 groups" in why
    assert "camera 1" in why and "vidtok data fetch" in why
    ensure_clip_index(config, 8, progress=False)
    checkpoint = save_pretrained(VidTok.from_preset("tiny_kl_causal_444"), tmp_path / "ckpt")
    with pytest.raises(ValueError, match="no video is in the test split: the split rule") as err:
        resolve(checkpoint, config, EvalOptions(split="test", fps=8, resolution=32))
    assert "shorter" not in str(err.value)  # the old message blamed clip length
