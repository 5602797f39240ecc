"""The command line's parser: every command has help and a handler, and neither help nor a flag error loads torch.

pytest tests/test_cli.py -q
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from vidtok.cli import build_parser
from vidtok.commands import HANDLERS


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every runnable command line (e.g. ("data", "fetch")) -> the handler name its parser sets."""
    found: dict[tuple[str, ...], object] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _commands(sub, (*prefix, name))
    if prefix and not found:
        found[prefix] = parser.get_default("handler")
    return found


def test_every_command_names_a_handler_and_every_handler_a_command() -> None:
    commands = _commands(build_parser())
    assert len(commands) == len(HANDLERS) == 16
    assert {name: " ".join(words) for words, name in commands.items()} == {name: name for name in HANDLERS}


# Runs in a fresh interpreter: `--help` for every command, and a missing required flag, then lists which heavy
# modules got imported. The test process itself has torch loaded already, so it could not tell.
_PROBE = """
import json, sys
from vidtok.cli import main
commands = json.loads(sys.argv[1])
codes = {}
for words in [[], ["data"]] + [c + ["--help"] for c in commands] + [["encode", "in.mp4"]]:
    try:
        codes[" ".join(words)] = main(words)
    except SystemExit as exit:
        codes[" ".join(words)] = exit.code
print(json.dumps({"codes": codes, "loaded": sorted({"torch", "lightning", "vidtok.commands"} & set(sys.modules))}))
"""


def test_help_and_flag_errors_answer_without_loading_torch() -> None:
    commands = [list(words) for words in _commands(build_parser())]
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(commands)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loaded"] == [], "help must not import the library's heavy modules"
    codes = report["codes"]
    assert codes.pop("encode in.mp4") == 2 and "the following arguments are required: -o/--output" in result.stderr
    assert codes == {key: 0 for key in codes} and len(codes) == 2 + 16
    for words in commands:
        assert f"usage: vidtok {' '.join(words)}" in result.stdout, words
