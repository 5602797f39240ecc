"""The metrics and audit records of vidtok.formats: the committed files read back, edits of real files refused with one
line naming the file and the key, and one reader behind the dashboard, `vidtok audit` and `vidtok report`.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_formats.py -q

(The token file format has its own tests: tests/test_token_file.py.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO
from vidtok import formats
from vidtok.audit.committed import PIPELINE_EVAL, check_metrics
from vidtok.audit.record import AuditResult, Check, write_outputs
from vidtok.evaluation.report import report
from vidtok.formats import AuditFileError, MetricsFileError, read_audit_record, read_metrics_record

COMMITTED_METRICS = subprocess.run(
    ["git", "ls-files", "--", "outputs/eval/metrics.json", "experiments/*/metrics.json"],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
).stdout.split()


def _edited(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the committed outputs/eval/metrics.json with `edit` applied, as a person with a JSON editor would."""
    record = json.loads((REPO / PIPELINE_EVAL).read_text())
    edit(record)
    path = tmp_path / "outputs" / "eval" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return path


def _one_line_naming(err: Exception, path: Path, key: str) -> str:
    text = str(err)
    assert "\n" not in text and text.startswith(f"{path}: ") and key in text, text
    return text


# ------------------------------------------------------------------------------------------------ metrics records


def test_every_committed_metrics_file_reads() -> None:
    """The pipeline's and every study trial's committed evaluation (written by vidtok evaluate) pass the reader."""
    assert len(COMMITTED_METRICS) > 100  # outputs/eval and the val and test evaluations of each committed trial
    for name in COMMITTED_METRICS:
        record = read_metrics_record(REPO / name)
        assert record["format"] == formats.METRICS_FORMAT and record["version"] == formats.METRICS_FORMAT_VERSION


def _delete(*keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(record: dict[str, Any]) -> None:
        *parents, last = keys
        for key in parents:
            record = record[key]
        del record[last]

    return edit


def _set(value: Any, *keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(record: dict[str, Any]) -> None:
        *parents, last = keys
        for key in parents:
            record = record[key]
        record[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (_set("vidtok-metric", "format"), "not a vidtok metrics file (format 'vidtok-metric')"),
        (_set(2, "version"), "metrics format version 2, this vidtok reads 1"),
        (_delete("version"), "metrics format version None"),
        (_delete("summary", "psnr"), "summary.psnr missing or not a number"),
        (_set("27.1", "summary", "psnr"), "summary.psnr missing or not a number"),
        (_set(True, "summary", "psnr"), "summary.psnr missing or not a number"),  # JSON true is no number
        (_delete("metrics"), "'metrics' missing or not an object"),
        (_set([1, 2], "metrics", "ssim"), "metrics.ssim is not an object"),
        (_delete("metrics", "psnr", "value"), "metrics.psnr.value missing or not a number"),
        (_delete("metrics", "ssim", "protocol"), "metrics.ssim.protocol missing"),
        (_set("val", "data"), "'data' is not an object"),
        (_set(None, "baseline_trivial_codec"), "'baseline_trivial_codec' is not an object"),
    ],
)
def test_an_edited_metrics_file_is_refused_naming_the_key(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], key: str
) -> None:
    path = _edited(tmp_path, edit)
    with pytest.raises(MetricsFileError) as err:
        read_metrics_record(path)
    _one_line_naming(err.value, path, key)


def test_a_metric_not_measured_needs_no_value(tmp_path: Path) -> None:
    reason = "no LPIPS trunk weights (set VIDTOK_LPIPS_TRUNK)"
    path = _edited(tmp_path, _set({"available": False, "reason": reason}, "metrics", "lpips"))
    assert read_metrics_record(path)["metrics"]["lpips"]["reason"] == reason


def test_unreadable_metrics_files(tmp_path: Path) -> None:
    committed = (REPO / PIPELINE_EVAL).read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(committed[: len(committed) // 2])  # a copy that stopped half way
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe" + committed[:40])
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([json.loads(committed)]))
    cases = [
        (cut, "not valid JSON ("),
        (binary, "not UTF-8 text"),
        (listed, "expected a JSON object, got list"),
        (tmp_path / "absent.json", "file not found"),
    ]
    for path, problem in cases:
        with pytest.raises(MetricsFileError) as err:
            read_metrics_record(path)
        _one_line_naming(err.value, path, problem)


def test_dashboard_audit_and_report_refuse_a_bad_file_with_the_same_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One reader: the dashboard's Overview, `vidtok audit`'s metrics check and `vidtok report` give one message."""
    from dashboard import data

    path = _edited(tmp_path, _delete("metrics", "psnr", "protocol"))
    with pytest.raises(MetricsFileError) as err:
        read_metrics_record(path)
    expected = str(err.value).replace(str(path), PIPELINE_EVAL)
    assert expected == f"{PIPELINE_EVAL}: metrics.psnr.protocol missing"

    monkeypatch.setenv(data.ROOT_ENV, str(tmp_path))
    with pytest.raises(data.DataError) as shown:
        data.read_eval(path.parent)
    assert str(shown.value) == expected

    result = AuditResult(target=str(tmp_path), checked_at="now")
    assert check_metrics(result, tmp_path, {}) is None
    assert [(c.name, c.status, c.detail) for c in result.checks] == [("metrics", "fail", expected)]

    with pytest.raises(ValueError) as reported:
        report(path, tmp_path / "report.md")
    assert str(reported.value) == str(err.value)
    assert not (tmp_path / "report.md").exists()


# ------------------------------------------------------------------------------------------------ audit records


def _written_audit(folder: Path) -> Path:
    """An audit record as `vidtok audit` writes it: passing, failing, skipped and not-run-here checks."""
    when = "2026-01-01T00:00:00+00:00"
    result = AuditResult(target="outputs/train/stage2", checked_at=when, tolerance={"psnr": 0.01})
    result.add("git", True, "commit 0123456789, no modified tracked files")
    result.add("metrics", False, "outputs/eval/metrics.json: summary.psnr 28.1 but metrics.psnr.value 27.1")
    result.add("rerun", None, "not requested (--rerun)")
    result.not_run("data", "the raw data", "`make run`")
    write_outputs(result, folder)
    return folder / "audit.json"


def test_the_audit_writes_what_its_reader_reads(tmp_path: Path) -> None:
    record = read_audit_record(_written_audit(tmp_path))
    assert record["passed"] is False and record["target"] == "outputs/train/stage2"
    assert [c["status"] for c in record["checks"]] == [formats.AUDIT_PASS, formats.AUDIT_FAIL, "skip", "skip"]
    assert record["not_run_here"] == ["data"] and record["tolerance"] == {"psnr": 0.01}


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (_set("yes", "passed"), "'passed' missing or not true/false"),
        (_delete("passed"), "'passed' missing or not true/false"),
        (_set({"git": "pass"}, "checks"), "'checks' missing or not a list"),
        (lambda r: r["checks"][1].pop("name"), "checks[1] has no name"),
        (lambda r: r["checks"][2].update(status="maybe"), "checks[2].status must be pass, fail or skip, got 'maybe'"),
        (_set(0.01, "tolerance"), "'tolerance' is not an object"),
    ],
)
def test_an_edited_audit_record_is_refused_naming_the_key(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], key: str
) -> None:
    path = _written_audit(tmp_path)
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(AuditFileError) as err:
        read_audit_record(path)
    _one_line_naming(err.value, path, key)


def test_an_audit_with_an_unknown_status_writes_nothing(tmp_path: Path) -> None:
    """The writer checks its record against the format first: neither audit.json nor audit.md is left behind."""
    result = AuditResult(target="t", checked_at="now", checks=[Check("git", "passed", "commit 0123")])
    with pytest.raises(AuditFileError, match=r"checks\[0\]\.status must be pass, fail or skip, got 'passed'"):
        write_outputs(result, tmp_path / "audit")
    assert not (tmp_path / "audit").exists()


# ------------------------------------------------------------------------------------------------ command line


def test_command_line_checks_each_file(tmp_path: Path) -> None:
    bad = _edited(tmp_path, _delete("summary", "psnr"))
    audit = _written_audit(tmp_path / "audit")
    shutil.copy(REPO / PIPELINE_EVAL, tmp_path / "good.json")
    files = [str(tmp_path / "good.json"), str(bad), str(audit)]
    out = subprocess.run([sys.executable, "-m", "vidtok.formats", *files], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1
    assert out.stderr == f"error: {bad}: summary.psnr missing or not a number\n"
    assert f"{tmp_path / 'good.json'}: vidtok-metrics version 1, psnr " in out.stdout
    assert f"{audit}: audit record, failed, 4 checks" in out.stdout
