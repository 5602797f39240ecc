"""DataConfig: every bad value is refused naming its field; params.yaml and overrides.

.venv/bin/pytest tests/data/test_config.py -q
"""

from __future__ import annotations

import re

import pytest

from vidtok.data.config import DataConfig, load_data_config


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"val_fraction": 1.0}, "data.val_fraction must be in [0, 1)"),
        ({"test_fraction": -0.1}, "data.test_fraction must be in [0, 1)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must leave a share for training"),
        ({"clip_frames": 0}, "data.clip_frames must be an integer >= 1"),
        ({"fps": [3, -1]}, "data.fps must hold positive frame rates"),
        ({"manifest": "m.json"}, "must end in .parquet or .csv"),
        ({"train_crop": "left"}, "'center' or 'random'"),
        ({"cache_resolutions": [4]}, "data.cache_resolutions must hold square sizes >= 8"),
        ({"num_workers": -1}, "data.num_workers must be an integer >= 0"),
        ({"train_clips_per_video": 1.5}, "data.train_clips_per_video must be an integer >= 0"),
        ({"eval_clips_per_video": -2}, "data.eval_clips_per_video must be an integer >= 0"),
    ],
)
def test_config_rejects_bad_values_with_the_field_name(change, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        DataConfig(**change)


def test_config_from_params_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  fps: [3, 8]\n  clip_frames: 16\n  cache_resolutions: [64, 128]\ntrain:\n  lr: 1\n")
    config = load_data_config(params, seed=7, num_workers=None)
    assert (config.fps, config.clip_frames, config.cache_resolutions, config.seed) == ((3, 8), 16, (64, 128), 7)
    assert config.num_workers == DataConfig().num_workers  # None overrides change nothing
    assert load_data_config(tmp_path / "absent.yaml") == DataConfig()
    params.write_text("data:\n  fsp: [3]\n")
    with pytest.raises(ValueError, match="unknown data parameter.*fsp; known: .*fps"):
        load_data_config(params)
