"""The pipeline report: the evaluation's metrics table (each metric with its protocol), the trivial-codec verdict
and the training runs behind it.

    vidtok report --eval outputs/eval/metrics.json -o outputs/report.md
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidtok._files import atomic_write
from vidtok.formats import read_metrics_record
from vidtok.runs import read_run_record

__all__ = ["report", "report_markdown"]


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def _protocol_text(record: dict[str, Any]) -> str:
    protocol = record.get("protocol") or {}
    keys = ("pooling", "data_range", "window", "backbone", "clip_length", "resolution", "num_clips", "fps")
    return "; ".join(f"{k} {protocol[k]}" for k in keys if protocol.get(k) not in (None, ""))


def report_markdown(eval_record: dict[str, Any], runs: Sequence[dict[str, Any]] = ()) -> str:
    """The metrics table (each metric with its protocol), the trivial-codec comparison and the training runs."""
    s = eval_record["summary"]
    ck, data = eval_record["checkpoint"], eval_record["data"]
    lines = [
        "# VidTok pipeline report",
        "",
        f"Model `{ck.get('name')}` ({ck.get('compression')}, {ck.get('regularizer')}), checkpoint "
        f"`{ck.get('path')}` (sha256 {str(ck.get('weights_sha256'))[:12]}).",
        f"Evaluated on {data['num_clips']} {data['split']} clips of {data['clip_length']} frames at "
        f"{_fmt(data['fps'], 0)} fps, {data['resolution']} ({data['num_videos']} "
        f"video{'' if data['num_videos'] == 1 else 's'}).",
        "",
        "| metric | value | protocol |",
        "|---|---|---|",
    ]
    for name, record in eval_record["metrics"].items():
        if record.get("available") is False:
            lines.append(f"| {name} | unavailable | {record.get('reason', '')} |")
        else:
            lines.append(f"| {name} | {_fmt(record.get('value'), 4)} | {_protocol_text(record)} |")
    gain = s.get("psnr_gain_over_trivial_db")
    verdict = "beats it" if s.get("beats_trivial_codec") else "does **not** beat it"
    lines += [
        "",
        f"Trivial codec at the same compression: PSNR {_fmt(s.get('trivial_psnr'))} dB, SSIM "
        f"{_fmt(s.get('trivial_ssim'), 4)}. The tokenizer {verdict} (PSNR difference {_fmt(gain)} dB).",
    ]
    if s.get("colour_shift_rgb") is not None:
        r, g, b = s["colour_shift_rgb"]
        lines.append(
            f"Colours: mean shift R {r:+.1f}, G {g:+.1f}, B {b:+.1f} (8-bit levels, reconstruction minus original), "
            f"{_fmt(s.get('colour_shift_abs'), 1)} levels per clip and channel on average; removing each clip's "
            f"shift would add {_fmt(s.get('colour_offset_cost_db'))} dB PSNR."
        )
    if runs:
        lines += ["", "| run | stage | status | steps | wall time (s) | seed | device | commit |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for run in runs:
            device = run.get("device") or {}
            git = run.get("git") or {}
            commit = str(git.get("commit") or "-")[:10] + (" (dirty)" if git.get("dirty") else "")
            lines.append(
                f"| {run.get('run_id')} | {run.get('stage')} | {run.get('status')} | {run.get('steps_completed')} | "
                f"{_fmt(run.get('wall_time_s'), 0)} | {run.get('seed')} | {device.get('accelerator', '-')} | {commit} |"
            )
    return "\n".join(lines) + "\n"


def report(eval_path: str | os.PathLike[str], out: str | os.PathLike[str], run_dirs: Sequence[str] = ()) -> str:
    """Write the markdown report of an evaluation (and its training runs) to `out`; returns the text."""
    path = Path(eval_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no evaluation yet (run `dvc repro evaluate` or `vidtok evaluate`)")
    record = read_metrics_record(path)  # MetricsFileError (a ValueError) naming the file and the bad key
    runs = []
    for run_dir in run_dirs:
        if (Path(run_dir) / "run.json").is_file():
            runs.append(read_run_record(run_dir).to_dict())
    text = report_markdown(record, runs)
    atomic_write(out, text)
    return text
