"""README.md stays true: its Python runs, its `vidtok` and `make` commands exist, and its map names real paths.

    pytest tests/test_readme.py -q

The ```python blocks run as they stand (random weights, seconds). The commands of the ```bash blocks are not run:
each `vidtok ...` is parsed by the CLI's own parser (vidtok.cli, torch-free), so a renamed command, a removed flag
or a missing required argument fails here; each `make TARGET` must be a target of the Makefile.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex

import torch

from tests.helpers import REPO
from vidtok.cli import build_parser

README = (REPO / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


def _command_lines() -> list[list[str]]:
    """Every simple command of the bash blocks as words: continuations joined, comments dropped, and `a && b`,
    `a; b`, `a | b` split."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token in ("&&", ";", "|", "||"):
                    commands += [words] if words else []
                    words = []
                else:
                    words.append(token)
    return commands


def test_python_blocks_run() -> None:
    blocks = _blocks("python")
    assert blocks, "README.md has no python block"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
        if "recon" in namespace:  # the tokenizer quick start: what its comments promise
            x, recon, encoded = namespace["x"], namespace["recon"], namespace["encoded"]
            assert recon.shape == x.shape and torch.isfinite(recon).all()
            assert encoded.indices is not None and encoded.indices.dtype == torch.int64  # FSQ is discrete


def test_every_vidtok_command_in_the_bash_blocks_parses() -> None:
    lines = [words for words in _command_lines() if words[0] == "vidtok"]
    assert len(lines) >= 10, lines  # the README's CLI examples were found at all
    failures = {}
    for words in lines:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = build_parser().parse_args(words[1:])
        except SystemExit:
            failures[shlex.join(words)] = stderr.getvalue().strip().splitlines()[-1:]
            continue
        if getattr(args, "handler", None) is None:
            failures[shlex.join(words)] = ["names a command group, not a command"]
    assert failures == {}


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every command and command group the parser knows, as words: ("data",), ("data", "fetch"), ..."""
    found = {prefix} if prefix else set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _command_paths(sub, (*prefix, name))
    return found


def test_every_vidtok_command_in_the_prose_exists() -> None:
    """Inline `vidtok ...` spans (often without their arguments) name a command the parser knows: its first word,
    and for a command group (`vidtok data ...`) the next word too."""
    known = _command_paths(build_parser())
    groups = {path[:1] for path in known if len(path) == 2}
    spans = re.findall(r"`vidtok ([a-z][^`]*)`", README)
    assert len(spans) >= 5
    unknown = []
    for span in spans:
        words = tuple(span.split())
        path = words[:2] if words[:1] in groups and len(words) > 1 else words[:1]
        if path not in known:
            unknown.append(span)
    assert unknown == []


def test_every_make_target_in_the_bash_blocks_exists() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    used = {words[1] for words in _command_lines() if words[0] == "make" and len(words) > 1}
    assert {"run", "test", "bench"} <= used
    assert used - targets == set()


def _where_things_are() -> str:
    return README.split("\n## Where things are\n", 1)[1].split("\n## ", 1)[0]


_PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)*\.(?:py|toml|md|yaml|lock|dvc)\b|[\w.-]+/(?:[\w.-]+/)*")


def test_where_things_are_names_only_paths_that_exist() -> None:
    """In the map, a path with a slash is from the repository root or the line's folder; a bare file name is in
    the line's folder or the one above it (`tokens.py` on the vidtok/train/ line is vidtok/tokens.py)."""
    section = _where_things_are()
    (block,) = re.findall(r"^```\n(.*?)^```", section, flags=re.M | re.S)
    missing, checked = [], 0
    for line in block.splitlines():
        first, *rest = _PATH.findall(line)
        folder = REPO / first if first.endswith("/") else (REPO / first).parent
        assert (REPO / first).exists(), first
        for name in rest:
            candidates = [folder / name, folder.parent / name] + ([REPO / name] if "/" in name else [])
            checked += 1
            if not any(c.exists() for c in candidates):
                missing.append(f"{first}: {name}")
    prose = section.replace(block, "")
    for name in [*_PATH.findall(prose), *re.findall(r"`(Makefile)`", prose)]:  # from the repository root
        checked += 1
        if not (REPO / name).exists():
            missing.append(name)
    assert checked > 30 and missing == []


def test_where_things_are_names_every_package_and_folder() -> None:
    """A new package of vidtok or a new top-level folder of code appears in the map, or this fails."""
    lines = re.findall(r"^```\n(.*?)^```", _where_things_are(), flags=re.M | re.S)[0].splitlines()
    firsts = {line.split()[0] for line in lines}
    packages = {f"{p.parent.relative_to(REPO)}/" for p in (REPO / "vidtok").glob("*/__init__.py")}
    named = {n for line in lines for n in _PATH.findall(line)}
    assert packages - {f"vidtok/{n}" for n in named} - firsts == set()
    assert {"flows/", "dashboard/", "benchmarks/", "experiments/", "tests/"} <= firsts
