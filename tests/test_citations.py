"""What the code and the docs cite is in the repository, and every test module says how to run itself.

    pytest tests/test_citations.py -q

A clone is all a reader has: a comment or a README that cites a notes file kept somewhere else, or a path that was
renamed, points at nothing. Outside sources are cited by what anyone can fetch (the paper, arXiv 2412.13061, and
its tables; the upstream repository microsoft/VidTok at commit d6ad92d and the file), never by a local copy.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
from functools import cache
from pathlib import Path

from tests.helpers import REPO

# Markdown files the code writes rather than commits, each with the module that writes it.
WRITTEN_BY_THE_CODE = {"audit.md": "vidtok/audit/record.py"}

# Records of what ran, which name paths as they were then: DVC's lock file and the committed result rows.
RECORDS = ("dvc.lock", "benchmarks/results/", "experiments/*/runs/")

# Upstream's own layout (microsoft/VidTok), cited as the source of an arithmetic: vidtok/modules/losses.py there.
UPSTREAM_PATHS = ("vidtok/modules/", "vidtok/models/")

TOP_LEVEL = ("vidtok", "tests", "benchmarks", "flows", "dashboard", "experiments")


@cache
def _files() -> tuple[str, ...]:
    """Tracked files and new ones git does not ignore (what a commit of this worktree would hold)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(rel for rel in out.splitlines() if (REPO / rel).is_file())


def _text(rel: str) -> str | None:
    data = (REPO / rel).read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def _is_record(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pattern + "*") for pattern in RECORDS)


def _exists(rel: str, token: str, known: set[str]) -> bool:
    """`token` as cited in `rel`: from the repository root or the citing file's folder; `<study>` or NAME is a
    placeholder that stands for any name."""
    token = token.lstrip("/")  # .gitignore's root-anchored form
    pattern = re.sub(r"<[^>]+>|\bNAME\b", "*", token)
    for base in (Path(), Path(rel).parent):
        candidate = Path(*(base / pattern).parts)
        normal = Path(*[p for p in candidate.parts if p != "."])
        if ".." in normal.parts:  # resolve ../ inside the repository only
            resolved = (REPO / normal).resolve()
            if not resolved.is_relative_to(REPO):
                continue
            normal = resolved.relative_to(REPO)
        if "*" in pattern:
            if any(fnmatch.fnmatch(k, str(normal)) for k in known):
                return True
        elif str(normal) in known or (REPO / normal).is_dir():
            return True
    return False


_MARKDOWN = re.compile(r"(?<![\w/.<>-])(/?(?:[\w.<>-]+/)*[\w.<>-]+\.md)(?![\w-])")


def test_no_file_cites_a_markdown_file_the_repository_lacks() -> None:
    files = _files()
    known = set(files)
    names = {Path(rel).name for rel in files if rel.endswith(".md")} | set(WRITTEN_BY_THE_CODE)
    cited, missing = 0, []
    for rel in files:
        text = _text(rel)
        if text is None:
            continue
        for token in _MARKDOWN.findall(text):
            cited += 1
            ok = token in names if "/" not in token else _exists(rel, token, known)
            if not ok:
                missing.append(f"{rel}: {token}")
    assert cited > 50, "no Markdown citation found at all: the pattern is broken"
    assert missing == []


def test_the_markdown_files_the_code_writes_are_written_there() -> None:
    for name, writer in WRITTEN_BY_THE_CODE.items():
        assert f'"{name}"' in (REPO / writer).read_text(), f"{writer} no longer writes {name}"


_REPO_PATH = re.compile(
    rf"(?<![\w/.<>-])((?:{'|'.join(TOP_LEVEL)})/(?:[\w.<>-]+/)*[\w.<>-]+\.(?:py|md|toml|yaml|json|jsonl|patch|csv))\b"
)


def test_no_file_names_a_repository_path_that_is_gone() -> None:
    """A test file's old name after the tests moved into tests/model/, the candidate patches' folder after the probes
    moved: every path into the repository's own folders that a file names exists (records of past runs aside)."""
    files = _files()
    known = set(files)
    named, missing = 0, []
    for rel in files:
        text = None if _is_record(rel) else _text(rel)
        if text is None:
            continue
        for token in _REPO_PATH.findall(text):
            if token.startswith(UPSTREAM_PATHS):
                continue
            named += 1
            if not _exists(rel, token, known):
                missing.append(f"{rel}: {token}")
    assert named > 100, "no repository path found at all: the pattern is broken"
    assert missing == []


def _test_modules() -> list[str]:
    return sorted(rel for rel in _files() if re.fullmatch(r"tests/(?:\w+/)*test_\w+\.py", rel))


def test_every_test_module_docstring_runs_itself() -> None:
    """The docstring of every tests/**/test_*.py names the command that runs it, with its own path, and no other
    test file's (the commands that named files since renamed were what this catches)."""
    wrong = {}
    for rel in _test_modules():
        doc = ast.get_docstring(ast.parse((REPO / rel).read_text())) or ""
        commands = re.findall(r"pytest [^\n]*", doc)
        others = {p for command in commands for p in re.findall(r"tests/\S+\.py", command)} - {rel}
        if not any(re.search(rf"(?:^| ){re.escape(rel)}(?:$|[ :])", command) for command in commands) or others:
            wrong[rel] = commands
    assert len(_test_modules()) > 30
    assert wrong == {}
