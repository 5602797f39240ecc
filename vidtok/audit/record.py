"""The audit's record: one row per check (pass / fail / skip and a one-line detail), the table `vidtok audit`
prints and the outputs/audit/audit.json and audit.md it writes.

    vidtok audit                   # prints AuditResult.table(); write_outputs writes audit.json and audit.md

A check that needs the workspace (the raw data, the pipeline's run folders, the DVC cache) in a checkout that has
none, a fresh clone, is recorded as skipped with a detail that starts "not run here" and names the command that
enables it (`Check.enable`); `vidtok audit --require-workspace` runs those checks anyway (and they fail).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vidtok._files import atomic_write
from vidtok.formats import AUDIT_FAIL, AUDIT_PASS, AUDIT_SKIP, validate_audit_record

NOT_RUN_HERE = "not run here"
# How many problems a failing check names before "and N more": the detail stays one readable line.
SHOWN_PROBLEMS = 4


@dataclass
class Check:
    name: str
    status: str  # AUDIT_PASS | AUDIT_FAIL | AUDIT_SKIP (vidtok.formats: the audit record's statuses)
    detail: str
    enable: str | None = None  # a check not run here (status skip): the command that makes it runnable


@dataclass
class AuditResult:
    target: str
    checked_at: str
    checks: list[Check] = field(default_factory=list)
    tolerance: dict[str, float] = field(default_factory=dict)
    # present: the workspace checks ran; absent: a checkout without one (they are "not run here"); required:
    # --require-workspace ran them although there is none
    workspace: str = "present"

    @property
    def passed(self) -> bool:
        return all(c.status != AUDIT_FAIL for c in self.checks)

    @property
    def not_run_here(self) -> list[Check]:
        return [c for c in self.checks if c.enable is not None]

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        self.checks.append(Check(name, AUDIT_SKIP if ok is None else AUDIT_PASS if ok else AUDIT_FAIL, detail))

    def add_problems(self, name: str, problems: list[str], passed: str) -> None:
        """A check that fails with its first problems (one line, "; "-separated) or passes with `passed`."""
        if not problems:
            self.add(name, True, passed)
            return
        more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        self.add(name, False, "; ".join(problems[:SHOWN_PROBLEMS]) + more)

    def not_run(self, name: str, needs: str, enable: str) -> None:
        """A check this checkout cannot run: it needs `needs`, which `enable` (the commands, in backticks) makes."""
        self.checks.append(Check(name, AUDIT_SKIP, f"{NOT_RUN_HERE}: needs {needs}; {enable} makes it", enable))

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "target": self.target,
            "checked_at": self.checked_at,
            "workspace": self.workspace,
            "not_run_here": [c.name for c in self.not_run_here],
            "tolerance": self.tolerance,
            "checks": [asdict(c) for c in self.checks],
        }

    def _footer(self) -> str:
        skipped = self.not_run_here
        if not skipped:
            return ""
        commands = "; ".join(dict.fromkeys(str(c.enable) for c in skipped))
        return (
            f"{len(skipped)} checks not run here: this checkout has no workspace; {commands} makes one, and "
            "`vidtok audit --require-workspace` requires them."
        )

    def table(self) -> str:
        width = max((len(c.name) for c in self.checks), default=4)
        lines = [f"{'check':{width}s}  result  detail", f"{'-' * width}  ------  ------"]
        lines += [f"{c.name:{width}s}  {c.status.upper():6s}  {c.detail}" for c in self.checks]
        verdict = "PASSED" if self.passed else f"FAILED ({sum(c.status == AUDIT_FAIL for c in self.checks)} checks)"
        footer = self._footer()
        return "\n".join(lines) + f"\n\naudit {verdict}: {self.target}\n" + (f"{footer}\n" if footer else "")

    def markdown(self) -> str:
        lines = [
            f"# Reproducibility audit: {'passed' if self.passed else 'FAILED'}",
            "",
            f"Target `{self.target}`, checked {self.checked_at}.",
            "",
            "| check | result | detail |",
            "|---|---|---|",
        ]
        lines += [f"| {c.name} | {c.status} | {c.detail.replace('|', '/')} |" for c in self.checks]
        if footer := self._footer():
            lines += ["", footer]
        if self.tolerance:
            lines += ["", "Re-run tolerance (absolute): " + ", ".join(f"{k} {v:g}" for k, v in self.tolerance.items())]
        return "\n".join(lines) + "\n"


def write_outputs(result: AuditResult, out_dir: str | os.PathLike[str]) -> Path:
    folder = Path(out_dir)
    record = validate_audit_record(result.as_dict(), str(folder / "audit.json"))  # the format its readers check
    atomic_write(folder / "audit.md", result.markdown())
    atomic_write(folder / "audit.json", json.dumps(record, indent=2) + "\n")
    return folder
