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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# ------------------------------------------------------------------------------------------------ presets / convert


def cmd_presets(args: argparse.Namespace) -> None:
    from vidtok.presets import preset_table

    rows = preset_table()
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return
    header = f"{'name':38s} {'family':6s} {'regularizer':13s} {'compression':11s} {'latent (C x t x h x w)':30s} params"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:38s} {r['family']:6s} {r['regularizer']:13s} {r['compression']:11s} "
              f"{r['latent']:30s} {r['params_m']:7.2f}M")


def cmd_convert(args: argparse.Namespace) -> None:
    from vidtok import checkpoints

    if args.to == "diffusers":
        model = checkpoints.load_pretrained(args.source)
        out = checkpoints.to_diffusers(model, args.output)
    elif args.source_format == "upstream":
        if not args.preset:
            raise CommandError("--preset is required with --from upstream (the .ckpt does not name its architecture)")
        model = checkpoints.from_upstream(args.source, args.preset)
        out = checkpoints.save_pretrained(model, args.output, metadata={"converted_from": str(args.source)})
    else:
        model = checkpoints.from_diffusers(args.source, name=args.preset or "diffusers")
        out = checkpoints.save_pretrained(model, args.output, metadata={"converted_from": str(args.source)})
    print(f"wrote {out} ({model.name}, {model.config.compression}, {model.config.regularizer})")


# ------------------------------------------------------------------------------------------------ data


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """`vidtok data ...`: sample videos, manifest, frame-rate resampled clip sets (vidtok.data)."""
    data = sub.add_parser("data", help="sample videos, manifest and resampled clip sets")
    data.set_defaults(func=lambda a: data.print_help())


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

    add_data_commands(sub)
    return parser


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    from vidtok.checkpoints import CheckpointError
    from vidtok.io import VideoError

    try:
        func(args)
    except (CommandError, CheckpointError, VideoError, ValueError, FileNotFoundError) as err:
        print(f"vidtok {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `vidtok presets | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"vidtok {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
