"""The benchmarks stay runnable: every module imports and answers `--help`, and every documented command names one.

    pytest tests/test_benchmarks.py -q

Nothing is measured here (benchmarks/README.md has the measurements): a broken import, a helper that moved, or a
README command that names a module no longer there fails in seconds instead of at the next long run.
"""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks
from benchmarks import harness
from benchmarks.__main__ import BENCHMARKS
from tests.helpers import REPO


def _modules() -> list[str]:
    """Every module of the benchmarks package (benchmarks.NAME and benchmarks.probes.NAME), the runner included."""
    names = [m.name for m in pkgutil.walk_packages(benchmarks.__path__, "benchmarks.") if not m.ispkg]
    return sorted(n for n in names if n != "benchmarks.harness")


# A fresh interpreter imports each module and calls its main(["--help"]): the imports are the ones a real run makes
# (this test process has vidtok and torch loaded already), and argparse's exit after the help is caught per module.
_PROBE = """
import contextlib, importlib, io, json, sys, traceback
report = {}
for name in json.loads(sys.argv[1]):
    out = io.StringIO()
    try:
        module = importlib.import_module(name)
        with contextlib.redirect_stdout(out):
            code = module.main(["--help"])
    except SystemExit as exit:
        code = exit.code
    except BaseException:
        code = traceback.format_exc(limit=3)
    report[name] = {"code": code, "usage": out.getvalue().splitlines()[:1]}
print(json.dumps(report))
"""


def test_every_benchmark_imports_and_answers_help() -> None:
    names = _modules()
    assert {"benchmarks.tokenizer_speed", "benchmarks.__main__", "benchmarks.probes.learning_probe"} <= set(names)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(names)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert {name: r["code"] for name, r in report.items()} == {name: 0 for name in names}
    for name, r in report.items():  # the program name is the command that runs it
        assert r["usage"] and r["usage"][0].startswith(f"usage: python -m {name.removesuffix('.__main__')} "), r


def test_make_bench_runs_every_benchmark_and_no_probe() -> None:
    """A new benchmark joins the set of `python -m benchmarks` (make bench) or goes to probes/, never neither."""
    top_level = {n.removeprefix("benchmarks.") for n in _modules() if n.count(".") == 1} - {"__main__"}
    assert set(BENCHMARKS) == top_level
    assert "$(PY) -m benchmarks" in (REPO / "Makefile").read_text()


def _commands_in(text: str) -> set[str]:
    return set(re.findall(r"python -m (benchmarks(?:\.[a-z_]\w*)*)", text))  # not placeholders: benchmarks.NAME


def test_benchmark_readme_opens_with_a_table_of_every_module() -> None:
    readme = (REPO / "benchmarks" / "README.md").read_text()
    opening = readme.split("\n## ", 1)[0]  # before the first section: the table of what answers what
    table = [line for line in opening.splitlines() if line.startswith("| ")]
    listed = {m for line in table for m in _commands_in(line)}
    assert listed >= {n.removesuffix(".__main__") for n in _modules()}, "every benchmark and probe has a row"


def test_every_documented_benchmark_command_names_a_module() -> None:
    """Commands in the READMEs, the Makefile and the docstrings and comments of the code: `python -m benchmarks...`
    names a module that exists, and the old form (`python` and the script's path: it no longer imports) is gone."""
    runnable = {n.removesuffix(".__main__") for n in _modules()}
    files = [*REPO.glob("*.md"), REPO / "Makefile"]
    files += [p for d in ("benchmarks", "vidtok", "tests", "flows", "dashboard") for p in (REPO / d).rglob("*.*")]
    found: dict[str, set[str]] = {}
    old_form = []
    for path in files:
        if (path.suffix not in (".py", ".md", ".patch") and path.name != "Makefile") or "__pycache__" in path.parts:
            continue
        text = path.read_text()
        for command in _commands_in(text):
            found.setdefault(command, set()).add(str(path.relative_to(REPO)))
        old_form += [f"{path.relative_to(REPO)}: {m}" for m in re.findall(r"python3? benchmarks/[\w/]+\.py", text)]
    assert len(found) > 10, "the benchmark commands were not found at all"
    assert {c: files for c, files in found.items() if c not in runnable} == {}
    assert old_form == []


def test_no_benchmark_edits_sys_path() -> None:
    """`python -m` from the repository root is the one mechanism; the A/B probe's worker is the exception, since
    importing vidtok from another checkout is what it measures."""
    edits = {
        str(path.relative_to(REPO)): len(re.findall(r"sys\.path\.(?:insert|append)", path.read_text()))
        for path in (REPO / "benchmarks").rglob("*.py")
    }
    assert {rel: n for rel, n in edits.items() if n} == {"benchmarks/probes/train_step_ab.py": 1}


def test_emit_appends_one_json_line_per_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "rows.jsonl"
    harness.emit({"case": "a", "s": 1.5}, out)
    harness.emit({"case": "b", "s": 2.0}, out)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"case": "a", "s": 1.5},
        {"case": "b", "s": 2.0},
    ]
    assert capsys.readouterr().out.splitlines() == out.read_text().splitlines()


def test_run_fresh_names_the_command_and_its_error() -> None:
    expected = r"(?s)-m benchmarks\.cli_startup --no-such-flag failed \(exit 2\):\n.*unrecognized arguments"
    with pytest.raises(RuntimeError, match=expected):
        harness.run_fresh("benchmarks.cli_startup", ["--no-such-flag"])


def test_peak_memory_sees_an_allocation() -> None:
    before = harness.reset_peak_rss()
    block = bytearray(64 * 2**20)  # 64 MiB, touched so it is resident
    block[::4096] = b"x" * len(block[::4096])
    assert harness.peak_rss_mb() >= before + 60
    del block


def test_the_gpu_script_runs_on_cpu_with_a_tiny_preset(tmp_path: Path) -> None:
    """benchmarks/gpu_speed.py needs only torch and the repository: here at its CI size on the CPU, ours and
    diffusers beside (the interop extra), every row with its FLOPs and its fraction of the matmul ceiling."""
    out = tmp_path / "gpu.jsonl"
    args = ["--presets", "tiny_kl_causal_444", "--sizes", "32x32", "--frames", "9", "--repeats", "1", "--dtype", "bf16"]
    harness.run_fresh("benchmarks.gpu_speed", [*args, "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["implementation"], r["phase"]) for r in rows] == [
        ("vidtok", "encode"), ("vidtok", "decode"), ("diffusers", "encode"), ("diffusers", "decode")
    ]  # fmt: skip
    for row in rows:
        assert row["device"] == "cpu" and row["dtype"] == "bf16" and row["frames"] == 9
        assert row["encode_gflop"] > 0 and row["decode_gflop"] > 0 and 0 < row["fraction_of_matmul"] < 10
        assert row["frames_per_s"] == pytest.approx(9 / row["s"]) and "fraction_of_datasheet" not in row
