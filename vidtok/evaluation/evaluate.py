"""Evaluate a checkpoint on the data layer's clips: every metric with its protocol, next to the trivial codec.

    vidtok evaluate --checkpoint outputs/train/stage2 --split test -o outputs/eval/metrics.json

Four steps, one function each: `resolve` (which checkpoint, which clips, which metrics; every setting checked
before anything is computed), `score` (the model on the clips, batch by batch), `summarise` (the metrics.json
record) and `write` (the files). `evaluate` runs the four.

Clips: the clip index of `data` at `fps` (default data.val_fps), the videos of `split`, non-overlapping clips, at
most data.eval_clips_per_video per video evenly spaced (vidtok.data.loader.val_subset, as the val set; no padded
tail clip, unlike the reference's repeat-padding), centre crop + antialiased resize to `resolution` (default: the
resolution the checkpoint was trained at). KL models reconstruct from the posterior mean (deterministic; the
reference samples), outputs are clamped to [-1, 1] and mapped to [0, 1] (vidtok.metrics.to_unit). The trivial codec
(vidtok.model.trivial.trivial_codec) is scored on the same clips; `per_source` gives the means per source package.

Written next to the metrics file (atomically): metrics.json (summary, every metric with its protocol, the
trivial-codec baseline, and what was unavailable and why), per_video.csv, per_frame.csv, videos/<name>.mp4
side-by-side original | reconstruction for the first few videos, and tokens/<name>.tokens for the same videos.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vidtok import metrics as M
from vidtok._files import atomic_write, resolve_device, sha256_file
from vidtok.data.clips import clip_index_path, clip_summary_path, load_clip_index, open_cache
from vidtok.data.config import DataConfig, join
from vidtok.data.loader import ClipDataset, VideoDataModule, val_subset
from vidtok.data.manifest import empty_split_reason, frame_indexes, read_manifest
from vidtok.data.video import write_video
from vidtok.formats import METRICS_FORMAT, METRICS_FORMAT_VERSION, validate_metrics_record
from vidtok.model.config import ModelConfig
from vidtok.model.trivial import trivial_codec
from vidtok.model.vidtok import VidTok, load_pretrained, read_config
from vidtok.params import check_int
from vidtok.runs import OUTPUTS, read_run_record
from vidtok.tokens import ModelRef, RunOptions, encode_file

__all__ = ["EvalOptions", "evaluate", "resolve", "score", "summarise", "write"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: which clips, which metrics, where to compute. Defaults: the val clips at data.val_fps and the
    checkpoint's training resolution, all of them, LPIPS (VGG) when its trunk weights are on this machine."""

    split: str = "val"
    fps: float | None = None  # None: data.val_fps
    resolution: int | None = None  # None: the resolution the checkpoint was trained at
    max_clips: int = 0  # 0: all
    batch_size: int = 2
    vmaf: bool = False  # slow
    lpips_net: str | None = "vgg"  # vgg, alex or None
    lpips_trunk_path: str | None = None  # else VIDTOK_LPIPS_TRUNK or the torch hub cache; never downloaded
    fvd_i3d_path: str | None = None  # StyleGAN-V i3d_torchscript.pt; FVD only with it
    num_videos: int = 3  # side-by-side videos and token files to write
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.lpips_net not in (None, "vgg", "alex"):
            raise ValueError(f"lpips_net must be vgg, alex or None, got {self.lpips_net!r}")
        for name, low in (("max_clips", 0), ("batch_size", 1), ("num_videos", 0)):
            check_int(name, getattr(self, name), low)


# ------------------------------------------------------------------------------------------------ resolve


@dataclass
class Evaluation:
    """A resolved evaluation: the checkpoint and its model, the clips and the metric objects, all checked."""

    checkpoint: Path  # the save_pretrained folder
    record: dict[str, Any]  # its config.json
    model: VidTok
    data: DataConfig
    options: EvalOptions
    fps: float
    resolution: int
    dataset: ClipDataset
    num_clips: int
    index_path: str
    index_sha256: str | None
    lpips: M.LPIPSMetric | None
    fvd: M.FVD | None
    unavailable: dict[str, str]  # metric -> why it is not computed
    sources: dict[str, str]  # video path -> where it comes from (the source package, or "own" for a user's video)


def resolve(checkpoint: str | os.PathLike[str], data: DataConfig | None, options: EvalOptions) -> Evaluation:
    """Everything `score` needs, checked: `checkpoint` is a save_pretrained folder or a run folder (its final
    checkpoint). LPIPS is computed only with real trunk weights; without them it is recorded as unavailable with
    the reason, unless a trunk path was given explicitly (then a missing file is an error)."""
    folder = Path(checkpoint)
    # A run folder, or a checkpoint inside one (RUN/checkpoints/NAME): only a completed run's weights are results.
    run_dir = folder if (folder / "run.json").is_file() else folder.parent.parent
    if (run_dir / "run.json").is_file():
        run = read_run_record(run_dir)
        if run.status != "completed":
            state = f"{run.status} at step {run.steps_completed} of {run.total_steps}"
            why = f": {run.error}" if run.error else ""
            raise ValueError(f"{run_dir}: the run is {state}{why}; evaluate it once it has completed")
        if folder == run_dir:
            folder = folder / str(run.final_checkpoint)
    record = read_config(folder)
    config = data if data is not None else DataConfig()
    resolution = int(options.resolution or (record.get("metadata") or {}).get("resolution") or 128)
    fps = float(options.fps or config.val_fps)
    model = load_pretrained(folder)
    cfg = model.config
    if resolution % cfg.spatial_factor:
        raise ValueError(f"resolution {resolution} is not divisible by the model's spatial factor {cfg.spatial_factor}")
    if not cfg.causal and config.clip_frames % cfg.temporal_factor:
        raise ValueError(
            f"data.clip_frames {config.clip_frames} is not a multiple of the temporal factor {cfg.temporal_factor}"
        )
    unavailable: dict[str, str] = {}
    lpips = None
    if options.lpips_net is None:
        unavailable["lpips"] = "not requested"
    else:
        try:
            lpips = M.LPIPSMetric(options.lpips_net, trunk_path=options.lpips_trunk_path)  # type: ignore[arg-type]
        except M.MissingWeightsError as err:
            if options.lpips_trunk_path is not None:
                raise
            unavailable["lpips"] = str(err)
    fvd = None
    if options.fvd_i3d_path is None:
        unavailable["fvd"] = "no I3D weights given (fvd_i3d_path / --fvd-i3d); FVD is never downloaded silently"
    else:
        fvd = M.FVD(options.fvd_i3d_path)
    if not options.vmaf:
        unavailable["vmaf"] = "not requested (slow; --vmaf)"
    if cfg.num_codes is None:
        unavailable["codebook"] = f"continuous latents ({cfg.regularizer}): no codebook"
    dataset, index_path, index_sha = _clips(config, fps, options.split, resolution)
    manifest = read_manifest(config.manifest)
    sources = {row.path: row.package if isinstance(row.package, str) else "own" for row in manifest.itertuples()}
    n = len(dataset) if options.max_clips <= 0 else min(options.max_clips, len(dataset))
    if n == 0:
        raise ValueError(_no_clips_reason(manifest, options.split, fps, config))
    return Evaluation(
        folder, record, model, config, options, fps, resolution, dataset, n, index_path, index_sha, lpips, fvd,
        unavailable, sources,
    )  # fmt: skip


def _no_clips_reason(manifest: Any, split: str, fps: float, config: DataConfig) -> str:
    """The true cause of an empty evaluation: no video in the split at all, or videos too short for a clip."""
    why = empty_split_reason(manifest, split)
    if why is not None:
        return f"{config.manifest}: {why} (e.g. --split val)"
    videos = int(((manifest["status"] == "ok") & (manifest["split"] == split)).sum())
    span = (config.clip_frames - 1) / fps
    return (
        f"no {split} clips at {fps:g} fps: each of the {videos} {split} video(s) is shorter than one "
        f"{config.clip_frames}-frame clip, which spans {span:.2f} s at that rate (lower data.clip_frames or raise "
        f"--fps; {clip_summary_path(config, fps)} lists each video)"
    )


def _clips(config: DataConfig, fps: float, split: str, resolution: int) -> tuple[ClipDataset, str, str | None]:
    """(ClipDataset of the non-overlapping clips of `split`, clip index path, its sha256)."""
    VideoDataModule(config, fps=fps, resolution=resolution, val_fps=fps).prepare_data()
    index = load_clip_index(config, fps)
    chosen = val_subset(
        index, config.clip_frames, config.clip_stride, config.val_stride, split=split,
        per_video=config.eval_clips_per_video,
    )  # fmt: skip
    cache = None
    for r in sorted(config.cache_resolutions):
        if r >= resolution and (cache := open_cache(config, fps, r)) is not None:
            break
    indexes = frame_indexes(read_manifest(config.manifest))
    dataset = ClipDataset(chosen, config.data_dir, resolution, crop="center", cache=cache, frame_indexes=indexes)
    path = clip_index_path(config, fps)
    digest = sha256_file(path) if "://" not in path and os.path.isfile(path) else None
    return dataset, path, digest


# ------------------------------------------------------------------------------------------------ score


# Measured for the summary and per_video.csv, not metrics of their own in metrics.json.
DIAGNOSTIC_PARTS = ("trivial_psnr", "trivial_ssim", "offset_free_psnr")


@dataclass
class Scores:
    """What `score` measured, batch by batch, before pooling."""

    parts: dict[str, list[M.MetricResult]] = field(default_factory=lambda: defaultdict(list))
    by_video: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    clips_per_video: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    frame_rows: list[tuple[str, int, int, float, float]] = field(default_factory=list)  # video, clip, frame, psnr, ssim
    videos: dict[str, list[Tensor]] = field(default_factory=lambda: defaultdict(list))  # original | reconstruction
    colour_shifts: list[list[float]] = field(default_factory=list)  # per clip: mean R, G, B of recon - original
    code_counts: Tensor | None = None
    seconds: float = 0.0


def evaluated_rows(total: int, count: int) -> list[int]:
    """The dataset rows an evaluation of `count` of `total` clips scores: all of them, or `count` spread evenly (a
    split lists its videos one after another, so the first `count` rows would come from its first video or two)."""
    if count >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def score(ev: Evaluation, *, progress: bool = True) -> Scores:
    """Reconstruct the clips batch by batch and measure every requested metric (and the trivial codec)."""
    started = time.perf_counter()
    cfg, opts, fps, n = ev.model.config, ev.options, ev.fps, ev.num_clips
    model = ev.model.to(torch.device(resolve_device(opts.device))).eval()
    device = next(model.parameters()).device
    out = Scores(code_counts=torch.zeros(cfg.num_codes or 1, dtype=torch.int64))
    chosen = evaluated_rows(len(ev.dataset), n)
    keep_videos = list(dict.fromkeys(str(ev.dataset.paths[r]) for r in chosen))[: opts.num_videos]
    with torch.no_grad(), tqdm(total=n, unit="clip", desc=f"evaluate {opts.split}", disable=not progress) as bar:
        for lo in range(0, n, opts.batch_size):
            rows = chosen[lo : lo + opts.batch_size]
            x = torch.stack([ev.dataset[r] for r in rows])
            recon, encoded = model(x.to(device))
            ref, rec = M.to_unit(x), M.to_unit(recon.float().cpu())
            triv = M.to_unit(trivial_codec(x, cfg))
            # Each clip's colour offset: the reconstruction's mean minus the original's, per channel (a cast).
            shift = (rec - ref).mean(dim=(2, 3, 4), keepdim=True)
            results = {
                "psnr": M.psnr(ref, rec, fps=fps),
                "ssim": M.ssim(ref, rec, fps=fps),
                "trivial_psnr": M.psnr(ref, triv, fps=fps),
                "trivial_ssim": M.ssim(ref, triv, fps=fps),
                "offset_free_psnr": M.psnr(ref, (rec - shift).clamp(0, 1), fps=fps),
            }
            if ev.lpips is not None:
                results["lpips"] = ev.lpips(ref, rec, fps=fps)
            if opts.vmaf:
                results["vmaf"] = M.vmaf(ref, rec, fps=fps)
            if ev.fvd is not None:
                ev.fvd.update(ref, rec)
            if encoded.indices is not None and cfg.num_codes:
                out.code_counts += torch.bincount(encoded.indices.flatten().long().cpu(), minlength=cfg.num_codes)
            for name, result in results.items():
                out.parts[name].append(result)
                for i, r in enumerate(rows):
                    out.by_video[str(ev.dataset.paths[r])][name].append(result.per_clip[i])  # type: ignore[index]
            for i, r in enumerate(rows):
                levels = shift[i].flatten().mul(255).tolist()
                out.colour_shifts.append(levels)
                for channel, value in zip("rgb", levels):
                    out.by_video[str(ev.dataset.paths[r])][f"colour_shift_{channel}"].append(value)
            t = x.shape[2]
            psnr_frames, ssim_frames = results["psnr"].per_frame, results["ssim"].per_frame
            for i, r in enumerate(rows):
                path = str(ev.dataset.paths[r])
                clip = out.clips_per_video[path]
                for f in range(t):
                    out.frame_rows.append((path, clip, f, psnr_frames[i * t + f], ssim_frames[i * t + f]))  # type: ignore[index]
                out.clips_per_video[path] += 1
                if path in keep_videos and len(out.videos[path]) < 8:
                    out.videos[path].append(torch.cat([ref[i], rec[i]], dim=-1))
            bar.update(len(rows))
    out.seconds = time.perf_counter() - started
    return out


# ------------------------------------------------------------------------------------------------ summarise


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


def _baseline_description(cfg: ModelConfig) -> str:
    temporal = "subsampling anchored at the last frame" if cfg.causal else "group means"
    return (
        f"downsample by {cfg.compression} (spatial box average, temporal {temporal}), linear upsampling back;"
        " 3 float values per latent position, no quantisation"
    )


def _colour_summary(scores: Scores, pooled: dict[str, M.MetricResult]) -> dict[str, Any]:
    """How far the reconstructions' colours are off: the mean per-clip shift of R, G, B in 8-bit levels (a cast shows
    as one channel up and the others down), the mean size of a clip's shift, and the PSNR that removing each clip's
    shift would add (what the wrong colours cost)."""
    shifts = np.asarray(scores.colour_shifts, dtype=np.float64).reshape(-1, 3)
    return {
        "colour_shift_rgb": [float(v) for v in shifts.mean(axis=0)],
        "colour_shift_abs": float(np.abs(shifts).mean()),
        "colour_offset_cost_db": pooled["offset_free_psnr"].value - pooled["psnr"].value,
    }


def summarise(ev: Evaluation, scores: Scores) -> dict[str, Any]:
    """The metrics.json record: summary, every metric with its protocol, the trivial codec, what was unavailable."""
    cfg, opts = ev.model.config, ev.options
    pooled = {name: _pool(p) for name, p in scores.parts.items()}
    metrics: dict[str, Any] = {name: _record(pooled[name]) for name in pooled if name not in DIAGNOSTIC_PARTS}
    if ev.fvd is not None:
        metrics["fvd"] = _record(ev.fvd.compute(fps=ev.fps))
    if cfg.num_codes and scores.code_counts is not None:
        for name, result in M.codebook_metrics(scores.code_counts, cfg.num_codes, counts=True).items():
            metrics[name] = _record(result)
    for name, reason in ev.unavailable.items():
        if name != "codebook":
            metrics.setdefault(name, {"available": False, "reason": reason})
    gain = pooled["psnr"].value - pooled["trivial_psnr"].value
    summary: dict[str, Any] = {
        "psnr": pooled["psnr"].value,
        "ssim": pooled["ssim"].value,
        "trivial_psnr": pooled["trivial_psnr"].value,
        "trivial_ssim": pooled["trivial_ssim"].value,
        "psnr_gain_over_trivial_db": gain,
        "beats_trivial_codec": bool(gain > 0),
        "num_clips": ev.num_clips,
        "num_videos": len(scores.clips_per_video),
        **_colour_summary(scores, pooled),
    }
    for name in ("lpips", "vmaf", "fvd", "codebook_utilisation", "codebook_perplexity"):
        if name in metrics and "value" in metrics[name]:
            summary[name] = metrics[name]["value"]
    by_source: dict[str, dict[str, list[float]]] = {}
    for video, values in scores.by_video.items():
        entry = by_source.setdefault(ev.sources.get(video, "own"), {"psnr": [], "ssim": [], "trivial_psnr": []})
        for name in entry:
            entry[name] += values.get(name, [])
    per_source = {
        source: {"clips": len(v["psnr"]), **{name: float(np.mean(v[name])) for name in v if v[name]}}
        for source, v in sorted(by_source.items())
    }
    record = {
        "format": METRICS_FORMAT,
        "version": METRICS_FORMAT_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "checkpoint": {
            "path": str(ev.checkpoint),
            "name": ev.record.get("name"),
            "weights_sha256": ev.record.get("weights_sha256"),
            "compression": cfg.compression,
            "regularizer": cfg.regularizer,
            "num_codes": cfg.num_codes,
            "metadata": ev.record.get("metadata") or {},
        },
        "data": {
            "split": opts.split,
            "fps": ev.fps,
            "resolution": f"{ev.resolution}x{ev.resolution}",
            "clip_length": ev.data.clip_frames,
            "num_clips": ev.num_clips,
            "num_videos": len(scores.clips_per_video),
            "clip_index": ev.index_path,
            "clip_index_sha256": ev.index_sha256,
            "sampling": "non-overlapping clips of the clip index (data module val rule), no padded tail clip",
            "preprocessing": "centre crop to the target aspect, antialiased bilinear resize, uint8, then [-1, 1]",
            "latents": "KL: posterior mean (deterministic)" if cfg.regularizer == "kl" else cfg.regularizer,
        },
        "summary": summary,
        "per_source": per_source,  # mean over each source's clips: where the model is weak
        "metrics": metrics,
        "baseline_trivial_codec": {
            "description": _baseline_description(cfg),
            "psnr": _record(pooled["trivial_psnr"]),
            "ssim": _record(pooled["trivial_ssim"]),
        },
        "unavailable": ev.unavailable,
        "wall_time_s": round(scores.seconds, 3),
    }
    return _json_safe(record)


# ------------------------------------------------------------------------------------------------ write


def write(ev: Evaluation, scores: Scores, record: dict[str, Any], out_dir: Path, metrics_name: str) -> None:
    """metrics.json, per_video.csv, per_frame.csv, the side-by-side videos and the token files, each atomically."""
    validate_metrics_record(record, str(out_dir / metrics_name))  # what its readers accept, or nothing is written
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / metrics_name, json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
    atomic_write(out_dir / "per_video.csv", _per_video_csv(scores, ev.data.clip_frames, ev.sources))
    atomic_write(out_dir / "per_frame.csv", _per_frame_csv(scores.frame_rows))
    (out_dir / "videos").mkdir(exist_ok=True)
    for path, clips in scores.videos.items():
        frames = np.concatenate([_to_uint8(c) for c in clips])
        write_video(out_dir / "videos" / (Path(path).stem + "_orig_vs_recon.mp4"), frames, ev.fps)
    # The token file (`vidtok encode` format) of each shown video at the evaluation fps and size: what the
    # dashboard's token maps read. Indices for discrete models, latents for KL.
    (out_dir / "tokens").mkdir(exist_ok=True)
    cfg = ev.model.config
    options = RunOptions(chunk_frames=16 if cfg.causal else ev.data.clip_frames, device=ev.options.device)
    for video in scores.videos:
        source = join(ev.dataset.data_dir, video)
        encode_file(source, out_dir / "tokens" / f"{Path(video).stem}.tokens",
                    weights=ModelRef(checkpoint=str(ev.checkpoint)), fps=ev.fps, resolution=ev.resolution,
                    options=options)  # fmt: skip


def _to_uint8(x: Tensor) -> np.ndarray:
    """(3, T, H, W) in [0, 1] -> (T, H, W, 3) uint8, rounded."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous().numpy()


def _per_frame_csv(rows: list[tuple[str, int, int, float, float]]) -> str:
    """Per-frame PSNR/SSIM (clip = the video's n-th evaluated clip): the seams and drifts a mean hides."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video", "clip", "frame", "psnr", "ssim"])
    for video, clip, frame, p, q in rows:
        writer.writerow([video, clip, frame, f"{p:.6g}", f"{q:.6g}"])
    return buffer.getvalue()


def _per_video_csv(scores: Scores, clip_frames: int, sources: dict[str, str]) -> str:
    measured = {name for values in scores.by_video.values() for name in values}
    colour = [n for n in ("offset_free_psnr", "colour_shift_r", "colour_shift_g", "colour_shift_b") if n in measured]
    names = sorted(measured - set(colour)) + colour  # the metrics, then the colour diagnostics
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video", "source", "clips", "frames", *names])
    for video in sorted(scores.by_video):
        values, clips = scores.by_video[video], scores.clips_per_video[video]
        row = [video, sources.get(video, "own"), clips, clips * clip_frames]
        row += [f"{float(np.mean(values[name])):.6g}" if values.get(name) else "" for name in names]
        writer.writerow(row)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ evaluate


def evaluate(
    checkpoint: str | os.PathLike[str],
    data: DataConfig | None = None,
    options: EvalOptions | None = None,
    *,
    out_dir: str | os.PathLike[str] = OUTPUTS.eval,
    metrics_name: str = "metrics.json",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `checkpoint` (a save_pretrained folder, or a run folder: its final checkpoint) on the clips of
    `data` (default DataConfig()) as `options` say, write out_dir/{metrics_name, per_video.csv, per_frame.csv,
    videos/, tokens/} and return the metrics.json record."""
    ev = resolve(checkpoint, data, options or EvalOptions())
    scores = score(ev, progress=progress)
    record = summarise(ev, scores)
    write(ev, scores, record, Path(out_dir), metrics_name)
    return record
