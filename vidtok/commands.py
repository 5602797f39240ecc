"""What each `vidtok` subcommand does: one function per command, taking the parsed flags and calling the library.

vidtok.cli builds the parser (flags, help) and imports this module only once a command runs, so `vidtok --help`
and a mistyped flag answer without loading torch and Lightning. HANDLERS names the function of each command;
USER_ERRORS are the failures the entry point prints as one line (exit 1) instead of a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from vidtok._files import one_line, resolve_device
from vidtok.audit import audit, parse_tolerance
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
from vidtok.pipeline import ChainLayout, ParamSource, StageRun, evaluate_stage, run_main_job, train_stage
from vidtok.runs import EVALUATE, OUTPUTS, Outputs
from vidtok.studies.findings import write_findings
from vidtok.studies.specs import STUDIES
from vidtok.studies.sweeps import StudyOptions, run_study
from vidtok.tokens import (
    ModelRef,
    RunOptions,
    Source,
    TokenFile,
    decode_file,
    encode_file,
    reconstruct_file,
    resolve_dtype,
)
from vidtok.train.config import load_params
from vidtok.train.module import TrainingError
from vidtok.train.run import TrainHooks

__all__ = ["HANDLERS", "USER_ERRORS", "CommandError"]


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# Bad input (files, checkpoints, configs, flags) and training's own failures (non-finite loss, missing LPIPS
# weights): one line naming the thing and the problem.
USER_ERRORS: tuple[type[Exception], ...] = (
    CommandError,
    CheckpointError,
    VideoError,
    ValueError,
    FileNotFoundError,
    TrainingError,
    MissingWeightsError,
)


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
    device = resolve_device(args.device)
    dtype, why = resolve_dtype(args.dtype, device)
    if args.dtype != "fp32" and not getattr(args, "quiet", False):
        print(f"precision: {why}", file=sys.stderr)
    return RunOptions(
        chunk_frames=args.chunk_frames,
        tile=tile,
        device=device,
        dtype=dtype,
        allow_partial=getattr(args, "allow_partial", False),
    )


def _weights(args: argparse.Namespace) -> ModelRef:
    return ModelRef(preset=args.preset, checkpoint=args.checkpoint)


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
            weights=_weights(args),
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
            weights=_weights(args),
            options=_run_options(args),
            progress=bar.update,
        )
    print(f"wrote {out}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    with _progress(_frame_count(args), args.quiet) as bar:
        result = reconstruct_file(
            str(args.input),
            args.output,
            weights=_weights(args),
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


# ------------------------------------------------------------------------------------------------ train / evaluate


def _params_file(value: str) -> str | None:
    # The default params.yaml may be absent (a bare checkout): then the dataclass defaults apply.
    return value if value != "params.yaml" or Path(value).is_file() else None


def cmd_evaluate(args: argparse.Namespace) -> None:
    data = load_params(_params_file(args.config), args.profile, list(args.set or [])).data
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


def cmd_stage(args: argparse.Namespace) -> None:
    source = ParamSource(_params_file(args.config), args.profile, tuple(args.set or []))
    layout = ChainLayout.main_job(Outputs(args.repo), args.schedule)
    if args.name == EVALUATE:
        given = [flag for flag, value in (("--run-dir", args.run_dir), ("--init-from", args.init_from),
                                          ("--on-change", args.on_change)) if value]  # fmt: skip
        if given:
            raise CommandError(
                f"{', '.join(given)}: for the training stages; `vidtok evaluate --checkpoint RUN` evaluates any run"
            )
        options = EvalOptions(split=args.split, vmaf=args.vmaf, lpips_net=args.lpips_net, num_videos=args.videos)
        record = evaluate_stage(layout, source, options, progress=not args.no_progress)
        s = record["summary"]
        print(
            f"wrote {layout.eval_dir}: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f} on {s['num_clips']} "
            f"{args.split} clips (trivial codec {s['trivial_psnr']:.2f} dB)"
        )
        return
    # The main job's folders belong to the chain (dvc repro restarts what changed); a --run-dir is the caller's.
    run = StageRun(args.name, Path(args.run_dir)) if args.run_dir else layout.stage(args.name)
    if args.init_from:
        run = dataclasses.replace(run, parent=Path(args.init_from))
    on_change = args.on_change or ("error" if args.run_dir else "restart")
    result = train_stage(run, source, on_change=on_change, hooks=TrainHooks(progress=not args.no_progress))
    if result is None:  # a DDP worker process (rank > 0): rank 0 reports
        return
    line = f"wrote {result.run_dir}: {result.steps} steps in {result.wall_time_s:.0f} s"
    line += f", final checkpoint {result.final_checkpoint}"
    if result.val_curve:
        last = result.val_curve[-1]
        line += f"; val PSNR {last.get('val_psnr', float('nan')):.2f} dB"
        line += f" (trivial codec {last.get('trivial_psnr', float('nan')):.2f} dB)"
    print(line)


# ------------------------------------------------------------------------------------------------ pipeline


def cmd_run_pipeline(args: argparse.Namespace) -> None:
    status = run_main_job(args.repo)
    if status:
        raise SystemExit(status)


def cmd_study(args: argparse.Namespace) -> None:
    if args.list or not args.name:
        for spec in STUDIES.values():
            print(f"{spec.name} ({spec.factor}): {spec.question}")
            print("  " + "; ".join(lv.label for lv in spec.levels))
        if not args.list:
            raise SystemExit(2)  # a study to run was not named
        return
    options = StudyOptions(
        root=args.root,
        n_trials=args.n_trials,
        profile=args.profile,
        seeds=args.seeds,
        study_name=args.study_name,
        storage=args.storage,
        levels=args.level,
        eval_clips=args.eval_clips,
        retry_failed=args.retry_failed,
        pruner=args.pruner,
    )
    result = run_study(args.name, options)
    print(result.markdown, end="")
    print(f"wrote {result.folder}/trials.parquet, summary.json, summary.md")


def cmd_findings(args: argparse.Namespace) -> None:
    path = write_findings(args.experiments)
    print(f"wrote {path} (and a plot.svg in each study folder that has results)")


def cmd_report(args: argparse.Namespace) -> None:
    text = report(args.eval, args.output, run_dirs=args.runs)
    print(text, end="")
    print(f"wrote {args.output}")


def cmd_audit(args: argparse.Namespace) -> None:
    try:
        tolerance = parse_tolerance(args.tolerance or [])
    except ValueError as err:
        raise CommandError(str(err)) from None
    try:
        result = audit(
            args.target,
            rerun=args.rerun,
            tolerance=tolerance,
            out_dir=args.out_dir,
            require_workspace=args.require_workspace,
        )
    except (OSError, ValueError) as err:  # no such workspace or run folder, unreadable files: nothing was audited
        print(f"vidtok audit: cannot run: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    print(result.table(), end="")
    out = args.out_dir or (
        str(OUTPUTS.audit) if not (Path(args.target) / "run.json").is_file() else f"{args.target}/audit"
    )
    print(f"wrote {out}/audit.json and audit.md")
    if not result.passed:
        raise SystemExit(1)


# The command each parser of vidtok.cli names with `handler=`; "data fetch" is `vidtok data fetch`.
HANDLERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "presets": cmd_presets,
    "convert": cmd_convert,
    "encode": cmd_encode,
    "decode": cmd_decode,
    "reconstruct": cmd_reconstruct,
    "data fetch": cmd_data_fetch,
    "data samples": cmd_data_samples,
    "data manifest": cmd_data_manifest,
    "data resample": cmd_data_resample,
    "stage": cmd_stage,
    "evaluate": cmd_evaluate,
    "run-pipeline": cmd_run_pipeline,
    "study": cmd_study,
    "findings": cmd_findings,
    "report": cmd_report,
    "audit": cmd_audit,
}
