"""Checkpoint save/load, tamper detection and upstream .ckpt import.

pytest tests/model/test_save_load.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from tests.helpers import REPO, tiny
from vidtok import VidTok
from vidtok.model.interop import from_upstream, read_upstream_state_dict
from vidtok.model.vidtok import CheckpointError, load_pretrained, read_config, save_pretrained, save_safetensors


def _same_outputs(a: VidTok, b: VidTok) -> bool:
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        return torch.equal(a(video)[0], b(video)[0])


def test_save_load_round_trip(tmp_path) -> None:
    model = tiny("tiny_fsq_causal_444")
    save_pretrained(model, tmp_path / "ckpt", metadata={"step": 7})
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]
    loaded = load_pretrained(tmp_path / "ckpt").eval()
    assert loaded.name == "tiny_fsq_causal_444" and loaded.config == model.config
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["metadata"] == {"step": 7}
    assert _same_outputs(model, loaded)
    assert not list(tmp_path.glob(".ckpt.*")), "temporary folders left behind"


def test_overwrite_is_atomic(tmp_path) -> None:
    first, second = tiny(), tiny()
    save_pretrained(first, tmp_path / "ckpt")
    save_pretrained(second, tmp_path / "ckpt")
    assert _same_outputs(second, load_pretrained(tmp_path / "ckpt").eval())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch) -> None:
    model = tiny()
    save_pretrained(model, tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("vidtok.model.vidtok.save_safetensors", broken)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(tiny(), tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


_WRITE_IN_A_FRESH_PROCESS = """
import sys, torch
from vidtok.model.vidtok import save_safetensors
torch.manual_seed(0)
tensors = {"b.weight": torch.randn(3, 2), "a.bias": torch.arange(4, dtype=torch.int64)}
save_safetensors(tensors, sys.argv[1], metadata={f"key{i}": f"value {i}" for i in range(8)})
"""


def test_safetensors_files_are_byte_identical_across_processes(tmp_path) -> None:
    # The library orders metadata by a per-process random hash seed: with 8 keys, two processes writing the same
    # file agree by chance once in 40320 times, so this fails on the library's own save_file.
    paths = [tmp_path / f"run{i}.safetensors" for i in range(2)]
    for path in paths:
        subprocess.run([sys.executable, "-c", _WRITE_IN_A_FRESH_PROCESS, str(path)], check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with safe_open(str(paths[0]), "pt") as f:
        assert f.metadata() == {f"key{i}": f"value {i}" for i in range(8)}
        assert torch.equal(f.get_tensor("a.bias"), torch.arange(4))
        assert f.get_tensor("b.weight").shape == (3, 2)
    assert int.from_bytes(paths[0].read_bytes()[:8], "little") % 8 == 0, "header not padded to 8 bytes"


def test_safetensors_metadata_must_be_strings(tmp_path) -> None:
    with pytest.raises(TypeError, match="str to str"):
        save_safetensors({"x": torch.zeros(1)}, tmp_path / "x.safetensors", metadata={"step": 7})
    assert not (tmp_path / "x.safetensors").exists()


def test_tampered_weights_are_detected(tmp_path) -> None:
    save_pretrained(tiny(), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one byte of tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 does not match config.json"):
        load_pretrained(tmp_path / "ckpt")


def test_a_config_without_its_weights_sha256_is_refused(tmp_path) -> None:
    """Deleting the recorded sha256 must not turn verification off: the weights could then be anything."""
    save_pretrained(tiny(), tmp_path / "ckpt")
    config = tmp_path / "ckpt" / "config.json"
    record = json.loads(config.read_text())
    del record["weights_sha256"]
    config.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="no weights_sha256 recorded"):
        load_pretrained(tmp_path / "ckpt")
    assert load_pretrained(tmp_path / "ckpt", verify=False) is not None  # the explicit opt-out still works


def test_truncated_weights_are_a_clear_error(tmp_path) -> None:
    save_pretrained(tiny(), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="unreadable safetensors file"):
        load_pretrained(tmp_path / "ckpt", verify=False)


def test_config_of_another_preset_names_first_mismatching_keys(tmp_path) -> None:
    save_pretrained(tiny("tiny_kl_causal_444"), tmp_path / "ckpt")
    record = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    record["model"]["ch_mult"] = [1, 2, 2, 2]
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"missing keys \(first: encoder\.down\.3"):
        load_pretrained(tmp_path / "ckpt", verify=False)  # verified, the edit is caught first (test below)


@pytest.mark.parametrize(
    ("key", "value"), [("shortcut", "trivial"), ("causal_padding", "zeros"), ("temporal_upsample", "nearest")]
)
def test_an_edited_config_json_is_refused(tmp_path, key: str, value: str) -> None:
    """config.json is not covered by the weights' sha256; the copy of the config in the safetensors header is. A
    flipped field that changes every output while the weights still verify is an error naming the field."""
    save_pretrained(tiny("tiny_kl_causal_444"), tmp_path / "ckpt")
    config = tmp_path / "ckpt" / "config.json"
    record = json.loads(config.read_text())
    assert key in record["model"] and record["model"][key] != value
    record["model"][key] = value
    config.write_text(json.dumps(record, indent=2))
    with pytest.raises(CheckpointError, match=rf"config.json: model config differs .*{key} '{value}' \(config.json\)"):
        load_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="model config differs"):
        read_config(tmp_path / "ckpt")  # every reader of the record (evaluation, stage-2 parents) sees it too


@pytest.mark.parametrize("bad", ["missing", "not-json", "not-vidtok"])
def test_bad_folders(tmp_path, bad: str) -> None:
    folder = tmp_path / "ckpt"
    if bad != "missing":
        folder.mkdir()
        (folder / "config.json").write_text("{oops" if bad == "not-json" else json.dumps({"x": 1}))
    message = {"missing": "checkpoint folder not found", "not-json": "not valid JSON", "not-vidtok": "not a vidtok"}
    with pytest.raises(CheckpointError, match=message[bad]):
        load_pretrained(folder)


UPSTREAM_LAYOUT = json.loads((REPO / "tests" / "golden" / "upstream_ckpt_layout.json").read_text())


def _upstream_ckpt(model: VidTok, path) -> None:
    """A Lightning checkpoint laid out as microsoft/VidTok's training saves one (tests/golden/
    upstream_ckpt_layout.json, read from upstream's code at d6ad92d): every top-level key, the model's keys, and
    one tensor of the recorded shape under each training-only prefix (log-variance, LPIPS, discriminator, EMA)."""
    state = dict(model.state_dict())
    for prefix, entry in UPSTREAM_LAYOUT["state_dict_prefixes"].items():
        if not prefix.startswith(("encoder", "decoder", "regularization")):
            state[entry["example_key"]] = torch.zeros(entry["example_shape"])
    adam = {
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
        "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": [0]}],
    }
    blob = {
        "epoch": 0,
        "global_step": 10,
        "pytorch-lightning_version": "2.2.4",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/rec_loss', 'mode': 'min'}": {"best_model_score": None}},
        "optimizer_states": [adam, adam],
        "lr_schedulers": [],
    }  # fmt: skip
    assert set(blob) == set(UPSTREAM_LAYOUT["top_level_keys"])
    torch.save(blob, path)


def test_upstream_ckpt_import(tmp_path) -> None:
    model = tiny("tiny_fsq_causal_444")
    _upstream_ckpt(model, tmp_path / "up.ckpt")
    state = read_upstream_state_dict(tmp_path / "up.ckpt")
    assert not any(k.startswith("loss.") for k in state)
    loaded = from_upstream(tmp_path / "up.ckpt", "tiny_fsq_causal_444").eval()
    assert _same_outputs(model, loaded)


def test_upstream_ckpt_of_another_preset(tmp_path) -> None:
    _upstream_ckpt(tiny("tiny_kl_causal_444"), tmp_path / "up.ckpt")
    with pytest.raises(CheckpointError, match=r"up\.ckpt: does not match tiny_kl_causal_488 .*missing keys"):
        from_upstream(tmp_path / "up.ckpt", "tiny_kl_causal_488")


def test_pickled_code_is_never_executed(tmp_path) -> None:
    """A .ckpt that carries a pickled object (code) is refused by weights_only loading."""

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"state_dict": {"x": Payload()}}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="not a loadable tensor checkpoint"):
        read_upstream_state_dict(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()


def test_garbage_ckpt(tmp_path) -> None:
    (tmp_path / "bad.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"bad\.ckpt: not a loadable tensor checkpoint"):
        read_upstream_state_dict(tmp_path / "bad.ckpt")
