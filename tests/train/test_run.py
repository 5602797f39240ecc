"""Training: params loading, bad-config errors before compute, stages, EMA, NaN handling, exact SIGKILL resume and
2-process DDP (gloo), on tiny in-memory clips (9 x 32 x 32) so each test takes seconds.

    pytest tests/train/test_run.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO
from vidtok.data.config import DataConfig
from vidtok.data.loader import TensorClips
from vidtok.model.config import ModelSpec
from vidtok.model.vidtok import CheckpointError, VidTok, load_pretrained, save_pretrained
from vidtok.runs import read_run_record
from vidtok.train.config import Params, TrainConfig, load_params
from vidtok.train.losses import LossConfig
from vidtok.train.module import TrainingError
from vidtok.train.run import TrainHooks, train
from vidtok.train.state import read_training_state

DATA = DataConfig(clip_frames=9)
NO_LPIPS = LossConfig(perceptual_weight=0, disc_start=2, disc_ndf=16)  # a small PatchGAN keeps tests fast


def _clips(n: int = 6, seed: int = 123) -> TensorClips:
    g = torch.Generator().manual_seed(seed)
    # Smooth random videos (a coarse grid upsampled), so a few steps of training visibly learn something.
    coarse = torch.rand(n, 3, 3, 4, 4, generator=g) * 2 - 1
    return TensorClips(torch.nn.functional.interpolate(coarse, size=(9, 32, 32), mode="trilinear"))


def _cfg(**changes) -> TrainConfig:
    base = dict(steps=4, batch_size=1, resolution=32, checkpoint_every=2, val_every=2, val_clips=2)
    base.update(changes)
    return TrainConfig(**base)


def _train(run_dir: Path, *, preset: str = "tiny_kl_causal_444", loss: LossConfig = NO_LPIPS, ds=None, **changes):
    ds = ds or _clips()
    params = Params(DATA, ModelSpec(preset), _cfg(**changes), loss)
    return train(params, run_dir, datasets=(ds, ds), hooks=TrainHooks(progress=False))


# ------------------------------------------------------------------------------------------------ params


def test_load_params_layers_profile_sections_stage_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        textwrap.dedent(
            """
            profile: cpu
            data: {clip_frames: 9}
            model: {preset: tiny_fsq_causal_444}
            train:
              lr: 1e-3
              seed: null
              stage2: {resolution: 64, steps: 7, batch_size: null}
            loss: {perceptual_weight: 0}
            profiles:
              cpu:
                train: {steps: 5, lr: 5e-4, resolution: 32, seed: 3, stage2: {batch_size: 4}}
                loss: {disc_type: none}
              paper:
                train: {steps: 50000, precision: bf16-mixed}
            """
        )
    )
    p = load_params(path)
    assert p.train.stage == "stage1" and p.train.steps == 5 and p.train.resolution == 32
    assert p.train.lr == 1e-3  # top-level sections win over the profile (so `dvc exp run -S train.lr=` works)
    assert p.loss.disc_type == "none" and p.loss.perceptual_weight == 0
    assert p.model.config().regularizer == "fsq" and p.data.clip_frames == 9
    s2 = load_params(path, stage="stage2", overrides=["train.lr=2e-4", "model.fsq_levels=[8, 8, 8]"])
    assert (s2.train.stage, s2.train.resolution, s2.train.steps, s2.train.lr) == ("stage2", 64, 7, 2e-4)
    assert (s2.train.seed, s2.train.batch_size) == (3, 4)  # null at the top level: the profile's value
    assert s2.model.config().num_codes == 512 and s2.model.name == "tiny_fsq_causal_444[fsq_levels=(8, 8, 8)]"
    paper = load_params(path, profile="paper")
    assert paper.train.precision == "bf16-mixed" and paper.loss.disc_type == "2d"
    data, model, train_cfg, loss = load_params(None)  # defaults; unpacks as a 4-tuple
    assert train_cfg == TrainConfig() and loss == LossConfig() and model == ModelSpec()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], "unknown train parameter.*lrr"),
        (["loss.disc_typ=none"], "unknown loss parameter"),
        (["model.chanels=4"], "unknown model parameter"),
        (["model.preset=nope"], "unknown preset"),
        (["optim.lr=1"], "must start with one of"),
        (["train.lr"], "SECTION.KEY=VALUE"),
        (["train.stage=stage9"], "stage must be one of"),
        (["train.resolution=abc"], "train.resolution must be an integer"),
        (["train.precision=16-mixed"], "precision"),
    ],
)
def test_bad_params_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_params(None, overrides=overrides)


def test_missing_profile_and_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("profiles: {cpu: {}}\n")
    with pytest.raises(ValueError, match="no profile 'gpu'; profiles: cpu"):
        load_params(path, profile="gpu")
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")


# ------------------------------------------------------------------------------------------------ bad setups


def _assert_fails_before_compute(run_dir: Path, message: str, **kwargs) -> None:
    with pytest.raises((ValueError, CheckpointError), match=message):
        kw = {"loss": NO_LPIPS, **kwargs}
        data = kw.pop("data", DATA)
        ds = _clips()
        cfg = _cfg(**kw.pop("train", {}))
        params = Params(data, ModelSpec(kw.pop("preset", "tiny_kl_causal_444")), cfg, kw["loss"])
        train(params, run_dir, datasets=(ds, ds))
    assert not run_dir.exists()  # nothing written


def test_bad_setups_fail_before_any_compute(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _assert_fails_before_compute(run, "stage2 trains the decoder.*init_from", train={"stage": "stage2"})
    _assert_fails_before_compute(
        run, "resolution 34 is not divisible.*factor 4 .try 32 or 36", train={"resolution": 34}
    )
    _assert_fails_before_compute(
        run,
        "non-causal.*multiple of its temporal factor 4",
        preset="tiny_kl_noncausal_444",
        data=DataConfig(clip_frames=9),
    )
    _assert_fails_before_compute(run, "too small for a 3-layer 2D PatchGAN", train={"resolution": 16})
    other = tmp_path / "fsq"
    save_pretrained(VidTok.from_preset("tiny_fsq_causal_444"), other)
    _assert_fails_before_compute(
        run, "checkpoint of another model.*tiny_fsq_causal_444", train={"init_from": str(other)}
    )
    _assert_fails_before_compute(run, "checkpoint folder not found", train={"init_from": str(tmp_path / "nope")})


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    _train(tmp_path / "run", steps=2, val_every=0)
    with pytest.raises(ValueError, match=r"made by something else \(settings changed: train.lr: 0.0005 -> 0.002\)"):
        _train(tmp_path / "run", steps=3, lr=2e-3)


def _weights(result) -> dict[str, torch.Tensor]:
    return load_file(result.final_checkpoint / "model.safetensors")


def test_a_finished_run_is_reused_only_with_the_same_data(tmp_path: Path) -> None:
    """The same settings on other clips are another run: refused by default (naming the data), started over with
    on_change="restart" (the old folder came back with its old weights before run identity)."""
    first = _train(tmp_path / "run", steps=2, val_every=0, ds=_clips(seed=1))
    w1 = _weights(first)
    again = _train(tmp_path / "run", steps=2, val_every=0, ds=_clips(seed=1))
    assert again.run_record.run_id == first.run_record.run_id  # same settings, code and clips: reused
    with pytest.raises(ValueError, match=r"data changed: sha256 [0-9a-f]{12} -> [0-9a-f]{12}") as err:
        _train(tmp_path / "run", steps=2, val_every=0, ds=_clips(seed=2))
    assert "settings changed" not in str(err.value) and "\n" not in str(err.value)
    ds = _clips(seed=2)
    other = train(
        Params(DATA, ModelSpec("tiny_kl_causal_444"), _cfg(steps=2, val_every=0), NO_LPIPS), tmp_path / "run",
        datasets=(ds, ds), hooks=TrainHooks(progress=False), on_change="restart",
    )  # fmt: skip
    assert other.run_record.run_id != first.run_record.run_id
    assert other.run_record.identity["data_sha256"] != first.run_record.identity["data_sha256"]
    w2 = _weights(other)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_stage2_restarts_when_its_stage1_changed(tmp_path: Path) -> None:
    _train(tmp_path / "s1", steps=2, val_every=0)
    s2 = _train(tmp_path / "s2", steps=2, stage="stage2", init_from=str(tmp_path / "s1"), val_every=0)
    parent = s2.run_record.identity["parent_sha256"]
    assert parent == s2.run_record.parent_checkpoint_sha256 and parent is not None
    ds = _clips()
    train(
        Params(DATA, ModelSpec("tiny_kl_causal_444"), _cfg(steps=2, val_every=0, seed=5), NO_LPIPS), tmp_path / "s1",
        datasets=(ds, ds), hooks=TrainHooks(progress=False), on_change="restart",
    )  # fmt: skip
    with pytest.raises(ValueError, match="parent checkpoint changed"):
        _train(tmp_path / "s2", steps=2, stage="stage2", init_from=str(tmp_path / "s1"), val_every=0)


_TRAIN_WITH_THIS_CODE = """
import sys, torch
from vidtok.data.config import DataConfig
from vidtok.data.loader import TensorClips
from vidtok.model.config import ModelSpec
from vidtok.train.config import Params, TrainConfig
from vidtok.train.losses import LossConfig
from vidtok.train.run import TrainHooks, train
g = torch.Generator().manual_seed(123)
clips = TensorClips(torch.nn.functional.interpolate(torch.rand(6, 3, 3, 4, 4, generator=g) * 2 - 1,
                                                    size=(9, 32, 32), mode="trilinear"))
cfg = TrainConfig(steps=2, batch_size=1, resolution=32, checkpoint_every=2, val_every=0, val_clips=2)
loss = LossConfig(perceptual_weight=0, disc_start=2, disc_ndf=16)
r = train(Params(DataConfig(clip_frames=9), ModelSpec("tiny_kl_causal_444"), cfg, loss), sys.argv[1],
          datasets=(clips, clips), hooks=TrainHooks(progress=False), on_change=sys.argv[2])
print("RUN", r.run_record.run_id, r.run_record.identity["code_sha256"])
"""


def test_an_edited_library_source_restarts_the_run(tmp_path: Path) -> None:
    """A copy of the package with one comment added to vidtok/model/vidtok.py: another code identity."""
    import shutil

    code = tmp_path / "code"
    shutil.copytree(REPO / "vidtok", code / "vidtok", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(code)}

    def run(on_change: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", _TRAIN_WITH_THIS_CODE, str(tmp_path / "run"), on_change]
        return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    first = run("error")
    assert first.returncode == 0, first.stderr[-2000:]
    assert run("error").stdout == first.stdout  # unchanged code: the finished run is reused
    model_file = code / "vidtok" / "model" / "vidtok.py"
    model_file.write_text(model_file.read_text() + "\n# an edit\n")
    refused = run("error")
    assert (
        refused.returncode != 0 and "code (or the torch / torchvision / av version) changed: sha256" in refused.stderr
    )
    restarted = run("restart")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    run_id, code_sha = restarted.stdout.split()[1:3]
    assert run_id != first.stdout.split()[1] and code_sha != first.stdout.split()[2]


def test_on_change_restart_starts_a_changed_run_over(tmp_path: Path) -> None:
    first = _train(tmp_path / "run", steps=2, val_every=0)
    ds = _clips()
    again = train(
        Params(DATA, ModelSpec("tiny_kl_causal_444"), _cfg(steps=2, val_every=0, lr=2e-3), NO_LPIPS), tmp_path / "run",
        datasets=(ds, ds), hooks=TrainHooks(progress=False), on_change="restart",
    )  # fmt: skip
    assert again.run_record.run_id != first.run_record.run_id
    assert read_run_record(tmp_path / "run").config["train"]["lr"] == 2e-3
    with pytest.raises(ValueError, match="on_change must be"):
        train(Params(DATA, ModelSpec("tiny_kl_causal_444"), _cfg(), NO_LPIPS), tmp_path / "x", on_change="wipe")


def test_freeze_encoder_needs_a_trained_model(tmp_path: Path) -> None:
    _assert_fails_before_compute(tmp_path / "run", "frozen encoder must come from a trained model",
                                 train={"freeze_encoder": True})  # fmt: skip
    with pytest.raises(ValueError, match="train.freeze_encoder must be true, false or null"):
        TrainConfig(freeze_encoder="yes")


# ------------------------------------------------------------------------------------------------ runs


def test_stage1_run_folder_logs_and_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "stage1"
    result = _train(run, steps=4, keep_checkpoints=1)
    m = read_run_record(run)
    assert m.status == "completed" and m.steps_completed == 4 and m.final_checkpoint == "checkpoints/final"
    assert (
        m.final_checkpoint_sha256 == json.loads((run / "checkpoints/final/config.json").read_text())["weights_sha256"]
    )
    assert m.device["world_size"] == 1 and m.git["commit"] is not None and m.identity["data_sha256"] is not None
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["final", "step_0000004"]  # pruned to 1
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("step", "loss_g", "nll", "l1", "logvar", "kl", "g_loss", "d_weight", "loss_d", "lecam", "clips_per_s"):
        assert col in header
    assert [r["step"] for r in result.val_curve] == [0, 2, 4]
    assert all("trivial_psnr" in r for r in result.val_curve)
    assert result.last_metrics["step"] == 4 and "loss_d" in result.last_metrics  # GAN on from step 2
    meta = json.loads((run / "checkpoints/final/config.json").read_text())["metadata"]
    assert meta["step"] == 4 and meta["resolution"] == 32 and meta["weights"] == "raw"
    load_pretrained(run / "checkpoints/final")
    again = _train(run, steps=4, keep_checkpoints=1)  # a finished run is not retrained
    assert again.run_record.ended_at == m.ended_at


def test_stage2_freezes_encoder_and_trains_decoder(tmp_path: Path) -> None:
    s1 = _train(tmp_path / "s1", steps=2, val_every=0)
    before = load_pretrained(s1.final_checkpoint)
    s2 = _train(tmp_path / "s2", steps=3, stage="stage2", resolution=64, init_from=str(tmp_path / "s1"), val_every=0)
    after = load_pretrained(s2.final_checkpoint)
    enc_b, enc_a = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc_b[k], enc_a[k]) for k in enc_b)  # bit-identical
    dec_b, dec_a = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(dec_b[k], dec_a[k]) for k in dec_b)
    m = read_run_record(tmp_path / "s2")
    assert m.stage == "stage2" and m.parent_run == str(tmp_path / "s1")
    assert m.parent_checkpoint_sha256 == read_run_record(tmp_path / "s1").final_checkpoint_sha256
    # stage 2 continued stage 1's loss state (logvar, discriminator) rather than starting it afresh
    _, s1_state = read_training_state(s1.final_checkpoint)
    assert s1_state["loss.logvar"] != 0
    assert "kl" in (tmp_path / "s2/metrics.csv").read_text().splitlines()[0]
    # freeze_encoder=false: the paper's Table 4 "fix enc. no" row trains the encoder in stage 2 as well
    s2_all = _train(
        tmp_path / "s2all", steps=3, stage="stage2", resolution=64, init_from=str(tmp_path / "s1"), val_every=0,
        freeze_encoder=False,
    )  # fmt: skip
    enc_all = load_pretrained(s2_all.final_checkpoint).encoder.state_dict()
    assert any(not torch.equal(enc_b[k], enc_all[k]) for k in enc_b)


def test_ema_weights_are_the_final_checkpoint(tmp_path: Path) -> None:
    result = _train(tmp_path / "ema", steps=3, ema=True, ema_decay=0.5, val_every=0)
    final = load_file(str(result.final_checkpoint / "model.safetensors"))
    raw = load_file(str(tmp_path / "ema/checkpoints/step_0000003/model.safetensors"))
    _, state = read_training_state(result.final_checkpoint)
    key = "decoder.conv_out.conv.weight"
    assert torch.equal(final[key], state["ema." + key.replace(".", "__")])
    assert not torch.equal(final[key], raw[key])
    assert json.loads((result.final_checkpoint / "config.json").read_text())["metadata"]["weights"] == "ema"


class _PoisonAfter(TensorClips):
    """Returns NaN clips from the `after`-th item on (batch 1: from iteration `after` on)."""

    def __init__(self, clips: torch.Tensor, after: int):
        super().__init__(clips)
        self.after, self.calls = after, 0

    def __getitem__(self, item):
        self.calls += 1
        clip = super().__getitem__(item)
        return clip * float("nan") if self.calls > self.after else clip


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "nan"
    ds = _PoisonAfter(_clips().clips, after=5)
    cfg = _cfg(steps=8, checkpoint_every=2, val_every=0, val_clips=1)
    with pytest.raises(
        TrainingError, match=r"non-finite generator loss \(nan\) at step 5; last good checkpoint: .*step_0000004"
    ):
        train(Params(DATA, ModelSpec(), cfg, NO_LPIPS), run, datasets=(ds, _clips()), hooks=TrainHooks(progress=False))
    m = read_run_record(run)
    assert m.status == "failed" and "at step 5" in m.error and m.final_checkpoint is None
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    assert torch.isfinite(load_pretrained(run / "checkpoints/step_0000004").decoder.conv_out.conv.weight).all()


# ------------------------------------------------------------------------------------------------ resume and DDP

SCRIPT = """
import sys, torch
from vidtok.data.config import DataConfig
from vidtok.data.loader import TensorClips
from vidtok.model.config import ModelSpec
from vidtok.train.config import Params, TrainConfig
from vidtok.train.losses import LossConfig
from vidtok.train.run import TrainHooks, train

run_dir, steps, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(7)
coarse = torch.rand(6, 3, 3, 4, 4, generator=g) * 2 - 1
ds = TensorClips(torch.nn.functional.interpolate(coarse, size=(9, 32, 32), mode="trilinear"))
cfg = TrainConfig(
    steps=steps, batch_size=1, resolution=32, checkpoint_every=1, keep_checkpoints=3, val_every=0, val_clips=1,
    ema=True, num_threads=1, devices=devices, accelerator="cpu", strategy="ddp" if devices > 1 else "auto",
)
loss = LossConfig(perceptual_weight=0, disc_start=2, disc_ndf=16)  # GAN, BatchNorm stats, LeCAM EMAs change mid-run
train(Params(DataConfig(clip_frames=9), ModelSpec("tiny_kl_causal_444"), cfg, loss), run_dir, datasets=(ds, ds),
      hooks=TrainHooks(progress=False))
"""


def _run_script(tmp_path: Path, *args: str, wait: bool = True) -> subprocess.Popen:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if wait:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out.decode()[-3000:]
    return proc


def test_sigkill_then_restart_ends_with_the_same_weights(tmp_path: Path) -> None:
    steps = 8
    _run_script(tmp_path, str(tmp_path / "ref"), str(steps), "1")
    killed = tmp_path / "killed"
    proc = _run_script(tmp_path, str(killed), str(steps), "1", wait=False)
    deadline = time.time() + 180
    while not (killed / "checkpoints/step_0000004").is_dir():
        assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints/final").exists()
    assert read_run_record(killed).status == "running"  # killed: nobody could mark it
    _run_script(tmp_path, str(killed), str(steps), "1")
    m = read_run_record(killed)
    assert m.status == "completed" and len(m.resumed_at_steps) == 1 and m.resumed_at_steps[0] >= 4
    for name in ("model.safetensors", "training_state.safetensors"):
        ref = load_file(str(tmp_path / "ref/checkpoints/final" / name))
        got = load_file(str(killed / "checkpoints/final" / name))
        assert ref.keys() == got.keys()
        different = [k for k in ref if not torch.equal(ref[k], got[k])]
        assert not different, f"{name}: {different[:5]}"
    cols = ("step", "loss_g", "nll", "kl", "loss_d", "lecam")
    rows = lambda p: [tuple(r.split(",")[i] for i in idx) for r in p.read_text().splitlines()[1:]]  # noqa: E731
    header = (tmp_path / "ref/metrics.csv").read_text().splitlines()[0].split(",")
    idx = [header.index(c) for c in cols]
    assert rows(tmp_path / "ref/metrics.csv") == rows(killed / "metrics.csv")  # same losses at every step


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    _run_script(tmp_path, str(run), "3", "2")
    m = read_run_record(run)
    assert m.status == "completed" and m.device["world_size"] == 2 and m.device["strategy"] == "ddp"
    lines = (run / "metrics.csv").read_text().splitlines()
    assert len(lines) == 4 and "loss_d" in lines[0]  # header + 3 steps, discriminator stepped at step 3
    weights = load_file(str(run / "checkpoints/final/model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    # Both ranks ended with the same weights (and EMA): the digests each rank computed at the end agree.
    final = json.loads((run / "checkpoints/final/config.json").read_text())
    digests = final["metadata"]["ddp_rank_weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1] and len(digests[0]) == 64


# ------------------------------------------------------------------------------------------------ command line


@pytest.mark.slow  # about 30 s idle, 100 s on a busy 2-core machine: data layer, two stages, evaluation
def test_cli_stage1_stage2_evaluate_on_real_video(sample_video_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    from vidtok.cli import main as cli_main

    (tmp_path / "data").mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4", "bigbuckbunny.mp4"):
        shutil.copy(sample_video_dir / name, tmp_path / "data" / name)
    params = tmp_path / "params.yaml"
    params.write_text(
        textwrap.dedent(
            f"""
            data: {{data_dir: {tmp_path}/data, manifest: {tmp_path}/out/manifest.parquet,
                    clips_dir: {tmp_path}/out/clips, cache_dir: {tmp_path}/out/cache, clip_frames: 9,
                    cache_resolutions: [32]}}
            model: {{preset: tiny_kl_causal_444}}
            train:
              fps: 8
              batch_size: 1
              val_clips: 1
              stage1: {{resolution: 32, steps: 2}}
              stage2: {{resolution: 64, steps: 1, init_from: {tmp_path}/runs/s1}}
            loss: {{perceptual_weight: 0, disc_type: none}}
            """
        )
    )
    common = ["--config", str(params), "--no-progress"]
    assert cli_main(["stage", "stage1", "--run-dir", str(tmp_path / "runs/s1"), *common]) == 0
    assert cli_main(["stage", "stage2", "--run-dir", str(tmp_path / "runs/s2"), *common]) == 0
    out = capsys.readouterr().out
    assert out.count("wrote ") == 2 and "trivial codec" in out
    m1, m2 = read_run_record(tmp_path / "runs/s1"), read_run_record(tmp_path / "runs/s2")
    assert m1.identity["data_sha256"] is not None and m1.data_files
    assert m2.parent_run == f"{tmp_path}/runs/s1" and m2.params["file"] == str(params)
    assert m2.config["train"]["resolution"] == 64 and m2.config["train"]["stage"] == "stage2"
    metrics = tmp_path / "eval/metrics.json"
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "runs/s2"), "-o", str(metrics), *common]) == 0
    record = json.loads(metrics.read_text())
    assert record["data"]["resolution"] == "64x64" and record["checkpoint"]["metadata"]["stage"] == "stage2"
    assert cli_main(["stage", "stage2", "--run-dir", str(tmp_path / "x"), "--set", "train.lr=-1"]) == 1
    assert "train.lr must be a number >= 0" in capsys.readouterr().err


def test_lr_warmup_is_a_function_of_the_step() -> None:
    from vidtok.train.losses import VidTokLoss
    from vidtok.train.module import TrainingModule

    torch.manual_seed(0)
    module = TrainingModule(
        VidTok.from_preset("tiny_ae_causal_444"),
        VidTokLoss(LossConfig(perceptual_weight=0, disc_type="none")),
        TrainConfig(lr=1e-3, lr_disc=1e-3, betas=(0.9, 0.999), grad_clip=20, seed=0, freeze_encoder=False, lr_warmup=4),
        start_step=1,  # as after a resume at step 1
    )
    (opt,) = module.configure_optimizers()
    x = _clips(1).clips
    module.iteration(x, opt, None, lambda t: t.backward())
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 2 / 4)  # iteration 1 of 4
    for _ in range(3):
        module.iteration(x, opt, None, lambda t: t.backward())
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_on_validation_hook_sees_every_pass_and_can_stop_the_run(tmp_path: Path) -> None:
    seen: list[tuple[int, float]] = []

    class Pruned(Exception):
        pass

    def hook(step: int, value: float) -> None:
        seen.append((step, value))
        if step == 2:
            raise Pruned(f"pruned at step {step}")

    ds = _clips()
    with pytest.raises(Pruned, match="pruned at step 2"):
        train(Params(DATA, ModelSpec(), _cfg(steps=4), NO_LPIPS), tmp_path / "run", datasets=(ds, ds),
              hooks=TrainHooks(progress=False, on_validation=hook))  # fmt: skip
    assert [s for s, _ in seen] == [0, 2] and all(v > 0 for _, v in seen)
    manifest = read_run_record(tmp_path / "run")
    assert manifest.status == "failed" and "pruned at step 2" in manifest.error


def test_another_torch_version_is_another_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch / torchvision / av versions are part of the code identity: a finished run is not reused by another."""
    from vidtok import runs

    first = _train(tmp_path / "run", steps=2, val_every=0)
    versions = runs.numeric_package_versions()
    monkeypatch.setattr(runs, "numeric_package_versions", lambda: {**versions, "torch": "1.0.0"})
    with pytest.raises(ValueError, match=r"code \(or the torch / torchvision / av version\) changed"):
        _train(tmp_path / "run", steps=2, val_every=0)
    monkeypatch.undo()
    assert _train(tmp_path / "run", steps=2, val_every=0).run_record.run_id == first.run_record.run_id


def test_an_extended_run_has_no_final_checkpoint_until_it_ends(tmp_path: Path) -> None:
    """Raising train.steps of a finished run continues it; meanwhile its record names no final checkpoint (the old
    one is not its result any more), so nothing evaluates or starts from it."""
    run = tmp_path / "run"
    first = _train(run, steps=2, val_every=0)
    assert first.run_record.final_checkpoint is not None
    seen: list[tuple[str, object, object]] = []

    def look(step: int, value: float) -> None:
        record = read_run_record(run)
        seen.append((record.status, record.final_checkpoint, record.final_checkpoint_sha256))

    ds = _clips()
    longer = train(
        Params(DATA, ModelSpec("tiny_kl_causal_444"), _cfg(steps=4, val_every=1), NO_LPIPS), run,
        datasets=(ds, ds), hooks=TrainHooks(progress=False, on_validation=look),
    )  # fmt: skip
    assert seen and seen[0] == ("running", None, None)
    assert longer.run_record.status == "completed" and longer.run_record.steps_completed == 4
    assert longer.run_record.final_checkpoint_sha256 != first.run_record.final_checkpoint_sha256
