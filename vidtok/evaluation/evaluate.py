"""Evaluate a checkpoint on the data layer's clips: every metric with its protocol, next to the trivial codec.

    vidtok evaluate --checkpoint outputs/train/stage2/checkpoints/final --split val -o outputs/eval/metrics.json

Clips: the clip index of `data` at `fps` (default data.val_fps), the videos of `split`, non-overlapping clips
(every ceil(clip_frames / clip_stride)-th indexed clip of a video, as the data module's val set; no padded tail
clip, unlike the reference's repeat-padding), centre crop + antialiased resize to `resolution` (default: the
resolution the checkpoint was trained at). KL models reconstruct from the posterior mean (deterministic; the
reference samples), outputs are clamped to [-1, 1] and mapped to [0, 1] (vidtok.metrics.to_unit).

Written next to the metrics file (atomically): metrics.json (summary, every metric with its protocol, the
trivial-codec baseline, and what was unavailable and why), per_video.csv, and videos/<name>.mp4 side-by-side
original | reconstruction for the first few videos.

The trivial codec is the "does it beat doing nothing clever" bar at the same compression: keep the samples a
latent grid of the preset's factors would hold, then interpolate linearly back. Spatially: average s x s blocks,
bilinear upsampling (pixel centres). Temporally, causal models: keep frames T-1, T-1-tf, ... (for T = 1 + k*tf:
frames 0, tf, ..., T-1, exactly ceil(T / tf) = latent frames) and interpolate linearly between them; non-causal:
average groups of tf frames, placed at the group centres, linear in between and held at the ends. It stores 3 float
values (RGB) per latent position where the model stores z_channels, and no quantisation.
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vidtok import metrics as M
from vidtok._files import atomic_write

__all__ = ["evaluate"]

FORMAT = "vidtok-metrics"
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------------ helpers


def _pool(parts: list[M.MetricResult]) -> M.MetricResult:
    """Concatenate per-batch results of one metric (all clips have the same length): mean over all frames."""
    per_frame = [v for p in parts for v in (p.per_frame or ())]
    per_clip = [v for p in parts for v in (p.per_clip or ())]
    first = parts[0]
    protocol = M.Protocol.from_dict({**first.protocol.as_dict(), "num_clips": len(per_clip) or None})
    value = float(np.mean(per_frame)) if per_frame else float(np.mean([p.value for p in parts]))
    return M.MetricResult(first.name, value, protocol, tuple(per_frame) or None, tuple(per_clip) or None)


def _record(result: M.MetricResult) -> dict[str, Any]:
    out = result.as_dict()
    out.pop("per_frame", None)  # per-clip values stay; per-frame ones are too many for a metrics file
    return out


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _to_uint8(x: Tensor) -> np.ndarray:
    """(3, T, H, W) in [0, 1] -> (T, H, W, 3) uint8, rounded."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous().numpy()


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _eval_clips(config: Any, fps: float, split: str, resolution: int) -> tuple[Any, str, str | None]:
    """(ClipDataset of the non-overlapping clips of `split`, clip index path, its sha256)."""
    import pandas as pd

    from vidtok._files import sha256_file
    from vidtok.data.clips import clip_index_path, load_clip_index, open_cache
    from vidtok.data.loader import ClipDataset, VideoDataModule

    VideoDataModule(config, fps=fps, resolution=resolution, val_fps=fps).prepare_data()
    index = load_clip_index(config, fps)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    # The data module's val rule (val_subset), for either split: every k-th clip of a video, k = clip length in
    # index strides, so clips do not overlap.
    step = config.val_stride or -(-config.clip_frames // config.clip_stride)
    chosen: pd.DataFrame = index[(index["split"] == split) & (index["clip"] % step == 0)].reset_index(drop=True)
    cache = None
    for r in sorted(config.cache_resolutions):
        if r >= resolution and (cache := open_cache(config, fps, r)) is not None:
            break
    dataset = ClipDataset(chosen, config.data_dir, resolution, crop="center", cache=cache)
    path = clip_index_path(config, fps)
    digest = sha256_file(path) if "://" not in path and os.path.isfile(path) else None
    return dataset, path, digest


# ------------------------------------------------------------------------------------------------ evaluate


def evaluate(
    checkpoint: str | os.PathLike[str],
    data: Any = None,
    *,
    split: str = "val",
    out_dir: str | os.PathLike[str] = "outputs/eval",
    metrics_name: str = "metrics.json",
    resolution: int | None = None,
    fps: float | None = None,
    max_clips: int = 0,
    batch_size: int = 2,
    vmaf: bool = False,
    lpips_net: str | None = "vgg",
    lpips_trunk_path: str | None = None,
    fvd_i3d_path: str | None = None,
    num_videos: int = 3,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `checkpoint` (a save_pretrained folder, or a run folder: its final checkpoint) and write
    out_dir/{metrics_name, per_video.csv, videos/}. Returns the metrics.json record.

    `data` is a DataConfig (default: DataConfig()). LPIPS is computed only with real trunk weights (lpips_trunk_path,
    env VIDTOK_LPIPS_TRUNK or the torch hub cache); otherwise it is recorded as unavailable with the reason, unless
    a trunk path was given explicitly (then a missing file is an error). FVD needs `fvd_i3d_path` (never
    downloaded). VMAF is slow and off unless `vmaf=True`."""
    from tqdm import tqdm

    from vidtok.data.config import DataConfig
    from vidtok.model.vidtok import load_pretrained, read_config

    started = time.perf_counter()
    folder = Path(checkpoint)
    if (folder / "run.json").is_file():
        from vidtok.runs import read_manifest

        manifest = read_manifest(folder)
        if manifest.final_checkpoint is None:
            raise ValueError(f"{folder}: run is {manifest.status}, it has no final checkpoint")
        folder = folder / manifest.final_checkpoint
    record = read_config(folder)
    config = data if data is not None else DataConfig()
    meta = record.get("metadata") or {}
    resolution = int(resolution or meta.get("resolution") or 128)
    fps = float(fps or config.val_fps)
    if lpips_net not in (None, "vgg", "alex"):
        raise ValueError(f"lpips_net must be vgg, alex or None, got {lpips_net!r}")
    model = load_pretrained(folder)
    cfg = model.config
    s, tf = cfg.spatial_factor, cfg.temporal_factor
    if resolution % s:
        raise ValueError(f"resolution {resolution} is not divisible by the model's spatial factor {s}")
    if not cfg.causal and config.clip_frames % tf:
        raise ValueError(f"data.clip_frames {config.clip_frames} is not a multiple of the temporal factor {tf}")

    unavailable: dict[str, str] = {}
    lpips_metric = None
    if lpips_net is None:
        unavailable["lpips"] = "not requested"
    else:
        try:
            lpips_metric = M.LPIPSMetric(lpips_net, trunk_path=lpips_trunk_path)  # type: ignore[arg-type]
        except M.MissingWeightsError as err:
            if lpips_trunk_path is not None:
                raise
            unavailable["lpips"] = str(err)
    fvd = None
    if fvd_i3d_path is None:
        unavailable["fvd"] = "no I3D weights given (fvd_i3d_path / --fvd-i3d); FVD is never downloaded silently"
    else:
        fvd = M.FVD(fvd_i3d_path)
    if not vmaf:
        unavailable["vmaf"] = "not requested (slow; --vmaf)"
    if cfg.num_codes is None:
        unavailable["codebook"] = f"continuous latents ({cfg.regularizer}): no codebook"

    dataset, index_path, index_sha = _eval_clips(config, fps, split, resolution)
    n = len(dataset) if max_clips <= 0 else min(max_clips, len(dataset))
    if n == 0:
        raise ValueError(f"no {split} clips at {fps:g} fps (videos shorter than {config.clip_frames} frames?)")
    dev = _resolve_device(device)
    model = model.to(dev).eval()
    parts: dict[str, list[M.MetricResult]] = defaultdict(list)
    by_video: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    clip_counts: dict[str, int] = defaultdict(int)
    counts = torch.zeros(cfg.num_codes or 1, dtype=torch.int64)
    videos: dict[str, list[Tensor]] = defaultdict(list)
    frame_rows: list[tuple[str, int, int, float, float]] = []  # video, clip, frame, psnr, ssim
    keep_videos = list(dict.fromkeys(str(p) for p in dataset.paths[:n]))[:num_videos]
    with torch.no_grad(), tqdm(total=n, unit="clip", desc=f"evaluate {split}", disable=not progress) as bar:
        for lo in range(0, n, batch_size):
            rows = list(range(lo, min(n, lo + batch_size)))
            x = torch.stack([dataset[r] for r in rows])
            recon, encoded = model(x.to(dev))
            ref, rec = M.to_unit(x), M.to_unit(recon.float().cpu())
            triv = M.to_unit(M.trivial_codec(x, cfg))
            results = {
                "psnr": M.psnr(ref, rec, fps=fps),
                "ssim": M.ssim(ref, rec, fps=fps),
                "trivial_psnr": M.psnr(ref, triv, fps=fps),
                "trivial_ssim": M.ssim(ref, triv, fps=fps),
            }
            if lpips_metric is not None:
                results["lpips"] = lpips_metric(ref, rec, fps=fps)
            if vmaf:
                results["vmaf"] = M.vmaf(ref, rec, fps=fps)
            if fvd is not None:
                fvd.update(ref, rec)
            if encoded.indices is not None and cfg.num_codes:
                counts += torch.bincount(encoded.indices.flatten().long().cpu(), minlength=cfg.num_codes)
            for name, result in results.items():
                parts[name].append(result)
                for i, r in enumerate(rows):
                    by_video[str(dataset.paths[r])][name].append(result.per_clip[i])  # type: ignore[index]
            t = x.shape[2]
            for i, r in enumerate(rows):
                path = str(dataset.paths[r])
                for f in range(t):
                    frame_rows.append(
                        (path, clip_counts[path], f, results["psnr"].per_frame[i * t + f],  # type: ignore[index]
                         results["ssim"].per_frame[i * t + f])  # type: ignore[index]
                    )  # fmt: skip
                clip_counts[path] += 1
                if path in keep_videos and len(videos[path]) < 8:
                    videos[path].append(torch.cat([ref[i], rec[i]], dim=-1))  # original | reconstruction
            bar.update(len(rows))

    pooled = {name: _pool(p) for name, p in parts.items()}
    metrics: dict[str, Any] = {name: _record(pooled[name]) for name in pooled if not name.startswith("trivial_")}
    if fvd is not None:
        metrics["fvd"] = _record(fvd.compute(fps=fps))
    if cfg.num_codes:
        for name, result in M.codebook_metrics(counts, cfg.num_codes, counts=True).items():
            metrics[name] = _record(result)
    for name, reason in unavailable.items():
        if name != "codebook":
            metrics.setdefault(name, {"available": False, "reason": reason})
    baseline = {
        "description": (
            f"downsample by {cfg.compression} (spatial box average, temporal "
            f"{'subsampling anchored at the last frame' if cfg.causal else 'group means'}), linear upsampling back;"
            " 3 float values per latent position, no quantisation"
        ),
        "psnr": _record(pooled["trivial_psnr"]),
        "ssim": _record(pooled["trivial_ssim"]),
    }
    gain = pooled["psnr"].value - pooled["trivial_psnr"].value
    summary: dict[str, Any] = {
        "psnr": pooled["psnr"].value,
        "ssim": pooled["ssim"].value,
        "trivial_psnr": pooled["trivial_psnr"].value,
        "trivial_ssim": pooled["trivial_ssim"].value,
        "psnr_gain_over_trivial_db": gain,
        "beats_trivial_codec": bool(gain > 0),
        "num_clips": n,
    }
    for name in ("lpips", "vmaf", "fvd", "codebook_utilisation", "codebook_perplexity"):
        if name in metrics and "value" in metrics[name]:
            summary[name] = metrics[name]["value"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "checkpoint": {
            "path": str(folder),
            "name": record.get("name"),
            "weights_sha256": record.get("weights_sha256"),
            "compression": cfg.compression,
            "regularizer": cfg.regularizer,
            "num_codes": cfg.num_codes,
            "metadata": meta,
        },
        "data": {
            "split": split,
            "fps": fps,
            "resolution": f"{resolution}x{resolution}",
            "clip_length": config.clip_frames,
            "num_clips": n,
            "num_videos": len(clip_counts),
            "clip_index": index_path,
            "clip_index_sha256": index_sha,
            "sampling": "non-overlapping clips of the clip index (data module val rule), no padded tail clip",
            "preprocessing": "centre crop to the target aspect, antialiased bilinear resize, uint8, then [-1, 1]",
            "latents": "KL: posterior mean (deterministic)" if cfg.regularizer == "kl" else cfg.regularizer,
        },
        "summary": summary,
        "metrics": metrics,
        "baseline_trivial_codec": baseline,
        "unavailable": unavailable,
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    result = _json_safe(result)
    import json

    atomic_write(out_dir / metrics_name, json.dumps(result, indent=2, sort_keys=True, allow_nan=False) + "\n")
    _write_per_video(out_dir / "per_video.csv", by_video, clip_counts, config.clip_frames)
    _write_per_frame(out_dir / "per_frame.csv", frame_rows)
    _write_videos(out_dir / "videos", videos, fps)
    from vidtok.data.config import join

    sources = [join(dataset.data_dir, v) for v in keep_videos]
    _write_tokens(out_dir / "tokens", sources, folder, fps, resolution, cfg, config.clip_frames, device)
    return result


def _write_per_frame(path: Path, rows: list[tuple[str, int, int, float, float]]) -> None:
    """Per-frame PSNR/SSIM (clip = the video's n-th evaluated clip): the seams and drifts a mean hides."""
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video", "clip", "frame", "psnr", "ssim"])
    for video, clip, frame, p, q in rows:
        writer.writerow([video, clip, frame, f"{p:.6g}", f"{q:.6g}"])
    atomic_write(path, buffer.getvalue())


def _write_tokens(
    folder: Path, sources: list[str], checkpoint: Path, fps: float, resolution: int, cfg: Any, clip: int, device: str
) -> None:
    """The token file (`vidtok encode` format) of each shown video at the evaluation fps and short side: what the
    dashboard's token maps read. Indices for discrete models, latents for KL."""
    from vidtok.tokens import RunOptions, encode_file

    folder.mkdir(parents=True, exist_ok=True)
    options = RunOptions(chunk_frames=16 if cfg.causal else clip, device=device)
    for source in sources:
        encode_file(source, folder / f"{Path(source).stem}.tokens", checkpoint=str(checkpoint), fps=fps,
                    resolution=resolution, options=options)  # fmt: skip


def _write_per_video(
    path: Path, by_video: dict[str, dict[str, list[float]]], counts: dict[str, int], clip_frames: int
) -> None:
    names = sorted({name for values in by_video.values() for name in values})
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video", "clips", "frames", *names])
    for video in sorted(by_video):
        values = by_video[video]
        row = [video, counts[video], counts[video] * clip_frames]
        row += [f"{float(np.mean(values[name])):.6g}" if values.get(name) else "" for name in names]
        writer.writerow(row)
    atomic_write(path, buffer.getvalue())


def _write_videos(folder: Path, videos: dict[str, list[Tensor]], fps: float) -> None:
    from vidtok.data.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    for path, clips in videos.items():
        name = Path(path).stem + "_orig_vs_recon.mp4"
        frames = np.concatenate([_to_uint8(c) for c in clips])
        write_video(folder / name, frames, fps)
