"""Reconstructions: original | reconstruction side by side as playable videos, per-clip and per-frame PSNR, and the
token maps of discrete models. Reads an evaluation folder (outputs/eval/ or a study trial's eval/): metrics.json,
per_video.csv, videos/*_orig_vs_recon.mp4, optional per_frame.csv and tokens/*.tokens."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import data, ui

MAX_FRAMES_SHOWN = 12


def token_colours(indices: np.ndarray) -> np.ndarray:
    """(h, w) token ids -> (h, w, 3) uint8: one fixed colour per id (hue stepped by the golden ratio, so ids that
    differ by one get distant hues and equal ids the same colour in every frame and file)."""
    ids, inverse = np.unique(indices, return_inverse=True)
    hues = (ids.astype(np.float64) * 0.6180339887498949) % 1.0
    sat = 0.55 + 0.35 * ((ids * 7919) % 3) / 2  # three saturation bands separate nearby hues
    val = 0.70 + 0.25 * ((ids * 104729) % 2)
    palette = np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hues, sat, val)]) * 255
    return palette.round().astype(np.uint8)[inverse.reshape(indices.shape)]


def _upscale(image: np.ndarray, target: int = 192) -> np.ndarray:
    """Nearest-neighbour upscaling so one token is a visible block."""
    k = max(1, target // max(image.shape[:2]))
    return np.repeat(np.repeat(image, k, axis=0), k, axis=1)


def _fps(text: str | None) -> str:
    """ "30000/1001" -> "29.97", "3/1" -> "3"."""
    try:
        num, den = (int(v) for v in str(text).split("/"))
        return f"{num / den:.4g}"
    except ValueError:
        return str(text)


def _choose_folder(base: Path) -> Path | None:
    folders = data.eval_folders(base)
    if not folders:
        ui.empty_state(
            "No evaluation yet (no outputs/eval/metrics.json or videos/)",
            data.CMD_PIPELINE,
            alternative=data.CMD_EVALUATE,
        )
        return None
    return st.selectbox("Evaluation folder", folders, format_func=data.display, key="recon-folder")


def _videos(folder: Path) -> None:
    st.header("Original | reconstruction")
    videos = data.eval_videos(folder)
    if not videos:
        ui.empty_state(
            f"No reconstruction videos in {data.display(folder / 'videos')}",
            data.CMD_EVALUATE,
            before="evaluate writes side-by-side mp4s for the first few videos.",
        )
        return
    video = st.selectbox("Video", videos, format_func=lambda p: p.name, key="recon-video")
    left, right = st.columns([3, 1])
    left.video(str(video))
    left.caption("Left half: the original clip frames; right half: the model's reconstruction (same frames, same fps).")
    try:
        per_video = data.read_csv(folder / "per_video.csv", required=("video",))
    except data.DataError as err:
        ui.show_error(err)
        return
    if per_video is None:
        right.caption("No per_video.csv in this folder.")
        return
    stem = video.name.removesuffix("_orig_vs_recon.mp4")
    mine = per_video[per_video["video"].astype(str).map(lambda v: Path(v).stem) == stem]
    if len(mine):
        row = mine.iloc[0]
        for name, digits in (("psnr", 2), ("ssim", 4), ("trivial_psnr", 2), ("lpips", 4)):
            if name in row and pd.notna(row[name]):
                right.metric(name.replace("_", " ").upper() if name != "trivial_psnr" else "trivial codec PSNR",
                             ui.fmt(float(row[name]), digits))  # fmt: skip
        right.caption(f"Mean over this video's {row.get('clips', '?')} clip(s).")
    st.markdown("**Per-video metrics** (mean over each video's clips; the selected video first)")
    ui.table(pd.concat([mine, per_video.drop(mine.index)]), "per-video", "per-video")


def _psnr_plots(folder: Path, record: dict[str, Any] | None) -> None:
    st.header("PSNR per frame and per clip")
    if record is None:
        st.caption("No metrics.json in this folder: no PSNR to plot.")
        return
    try:
        frames = data.per_frame_table(folder, record)
    except data.DataError as err:
        ui.show_error(err)
        frames = None
    if frames is not None:
        ys = [c for c in ("psnr",) if c in frames.columns]
        st.altair_chart(ui.line_chart(frames, "index", ys, "frame (clip-major)", "PSNR (dB)", True), width="stretch")
        ui.table(frames, "per-frame-psnr", "per-frame")
    else:
        st.info(
            "No per-frame PSNR in this evaluation: evaluate keeps per-clip values only (metrics.json drops "
            "`per_frame`, and there is no per_frame.csv). Showing PSNR per clip instead.",
            icon=":material/info:",
        )
    psnr = record["metrics"].get("psnr") or {}
    trivial = ((record.get("baseline_trivial_codec") or {}).get("psnr") or {}).get("per_clip")
    per_clip = psnr.get("per_clip")
    if isinstance(per_clip, list) and per_clip:
        clips = pd.DataFrame({"clip": np.arange(len(per_clip)), "psnr": per_clip})
        if isinstance(trivial, list) and len(trivial) == len(per_clip):
            clips["trivial codec psnr"] = trivial
        ys = [c for c in clips.columns if c != "clip"]
        st.altair_chart(ui.line_chart(clips, "clip", ys, "clip", "PSNR (dB)", integer_x=True), width="stretch")
        st.caption("Every evaluated clip in evaluation order (videos one after another), next to the trivial codec.")
        ui.table(clips, "per-clip-psnr", "per-clip")


def _tokens(folder: Path, record: dict[str, Any] | None) -> None:
    st.header("Token maps")
    regularizer = ((record or {}).get("checkpoint") or {}).get("regularizer")
    files = data.token_files(folder)
    if not files:
        if regularizer in ("kl", "none"):
            st.info(f"This model has continuous latents ({regularizer}): there are no tokens to map.")
            return
        ui.empty_state(
            f"No token files in {data.display(folder / 'tokens')}",
            data.CMD_EVALUATE,
            alternative="vidtok encode VIDEO -o outputs/eval/tokens/NAME.tokens "
            "--checkpoint outputs/train/stage2/checkpoints/final",
            before="Token maps exist for discrete models (FSQ, LFQ, VQ).",
        )
        return
    path = st.selectbox("Token file", files, format_func=lambda p: p.name, key="recon-tokens")
    try:
        tokens = data.read_tokens(path)
    except data.DataError as err:
        ui.show_error(err)
        return
    assert tokens is not None
    if tokens["kind"] != "indices":
        st.info(f"{path.name} holds continuous latents {tokens['shape']}: no token map.")
        return
    idx = tokens["indices"]
    t, h, w = idx.shape
    # The codebook size as the evaluation recorded it (ModelConfig.num_codes of the evaluated checkpoint), for
    # token files of those weights; the dashboard does not re-derive it from the file's model config.
    evaluated = (record or {}).get("checkpoint") or {}
    same_weights = tokens["weights_sha256"] is not None and tokens["weights_sha256"] == evaluated.get("weights_sha256")
    size = evaluated.get("num_codes") if same_weights else None
    used = int(np.unique(idx).size)
    cols = st.columns(4)
    cols[0].metric("latent frames", t)
    cols[1].metric("tokens per frame", f"{h}×{w}")
    cols[2].metric("distinct tokens", used)
    cols[3].metric("codebook size", f"{size:,}" if size else "?")
    st.caption(
        f"Source `{tokens['source']}`, {tokens['num_frames']} frames at {_fps(tokens['fps'])} fps. One colour per "
        "token id (the same id has the same colour in every frame)."
    )
    shown = range(t) if t <= MAX_FRAMES_SHOWN else range(*st.slider("Latent frames", 0, t, (0, MAX_FRAMES_SHOWN)))
    images = [_upscale(token_colours(idx[i])) for i in shown]
    per_row = 6
    for start in range(0, len(images), per_row):
        row = st.columns(per_row)
        for col, i, image in zip(row, list(shown)[start : start + per_row], images[start : start + per_row]):
            col.image(image, caption=f"latent frame {i}", width="stretch")
    counts = pd.Series(idx.ravel()).value_counts().head(20)
    with st.expander("Most frequent tokens"):
        st.dataframe(pd.DataFrame({"token": counts.index, "count": counts.values}), hide_index=True)


st.title("Reconstructions")
FOLDER = _choose_folder(data.root())
if FOLDER is not None:
    try:
        RECORD = data.read_eval(FOLDER)
    except data.DataError as err:
        ui.show_error(err)
        RECORD = None
    if RECORD is not None:
        c = RECORD.get("checkpoint") or {}
        st.caption(
            f"Model `{c.get('name') or c.get('path', '?')}`: {c.get('regularizer', '?')}, {c.get('compression', '?')}"
            + (f", {c['num_codes']:,} codes" if c.get("num_codes") else "")
            + f"; PSNR {ui.fmt(RECORD['summary'].get('psnr'), 2)} dB."
        )
    _videos(FOLDER)
    _psnr_plots(FOLDER, RECORD)
    _tokens(FOLDER, RECORD)
