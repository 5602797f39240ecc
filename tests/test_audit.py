"""`vidtok audit` on the committed results: real copies of the committed studies and pipeline records, tampered the
way a person would (pandas edits of trials.parquet, a text editor on optuna.journal, summary.md, FINDINGS.md,
metrics.json and dvc.lock), and a fresh `git clone` without data/ or outputs/train.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_audit.py -q
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO
from vidtok.audit import AuditResult, audit, check_studies, check_summary, check_trials
from vidtok.audit import studies as audit_studies
from vidtok.runs import code_sha256

STUDY = "sweep-fps"
# What a repository holding committed results has: the pipeline's definition and records, and the studies.
PIPELINE_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", "data.dvc", ".dvcignore", ".gitignore", ".dvc/config",
                  ".dvc/.gitignore", "outputs/eval/metrics.json", "outputs/report.md")  # fmt: skip
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _committed(*paths: str) -> list[str]:
    """The files of this repository's commit under `paths` (what a clone of it holds)."""
    return _git("ls-files", "--", *paths, cwd=REPO).splitlines()


def _copy(files: list[str], dest: Path) -> Path:
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return dest


def _repo(dest: Path, experiments: bool) -> Path:
    """A git repository holding this repository's committed results (no code, no data/, no outputs/train)."""
    _copy(_committed(*PIPELINE_FILES, *(["experiments"] if experiments else [])), dest)
    _git("init", "-q", cwd=dest)
    _git("add", "-A", cwd=dest)
    _git("commit", "-qm", "committed results", cwd=dest)
    return dest


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A copy of the committed sweep-fps study (trials, journal, summaries, plot, the trials' run records)."""
    return _copy(_committed(f"experiments/{STUDY}"), tmp_path) / "experiments" / STUDY


@pytest.fixture
def experiments(tmp_path: Path) -> Path:
    """A copy of every committed study and FINDINGS.md."""
    return _copy(_committed("experiments"), tmp_path) / "experiments"


def _checks(run) -> dict[str, tuple[str, str]]:  # noqa: ANN001 - a callable adding checks to an AuditResult
    result = AuditResult("test", "now")
    run(result)
    for check in result.checks:
        assert "\n" not in check.detail, check  # every result is one line
    return {c.name: (c.status, c.detail) for c in result.checks}


def _trials(study: Path) -> dict[str, tuple[str, str]]:
    return _checks(lambda result: check_trials(result, study))


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# ------------------------------------------------------------------------------------------------ the committed files


def test_the_committed_study_is_consistent_with_its_sources(study: Path) -> None:
    checks = {**_trials(study), **_checks(lambda result: check_summary(result, study))}
    assert checks[f"trials:{STUDY}"][0] == "pass", checks[f"trials:{STUDY}"]
    assert "18 finished trials (of 18)" in checks[f"trials:{STUDY}"][1]
    assert checks[f"summary:{STUDY}"] == ("pass", "summary.json and summary.md are what the trials give "
                                          "(regenerated: same bytes)")  # fmt: skip
    # Staleness is its own check: the committed trials ran the code they recorded, maybe not this checkout's.
    status, detail = checks[f"code:{STUDY}"]
    stale = set(pd.read_parquet(study / "trials.parquet")["code_sha256"]) != {code_sha256("train")}
    assert (status, detail.startswith("stale: rerun the study")) == (("fail", True) if stale else ("pass", False))


def test_a_study_made_by_other_code_is_stale_not_tampered(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_studies, "code_sha256", lambda kind: "0" * 64)
    checks = _trials(study)
    assert checks[f"trials:{STUDY}"][0] == "pass"  # the numbers are still consistent with their sources
    status, detail = checks[f"code:{STUDY}"]
    assert status == "fail" and detail.startswith("stale: rerun the study (`prefect deployment run sweep-fps/")
    ran = ", ".join(sorted({sha[:12] for sha in pd.read_parquet(study / "trials.parquet")["code_sha256"]}))
    assert f"18 of 18 finished trials ran library code {ran}, not this checkout's 000000000000" in detail
    assert "not tampered" in detail


# ------------------------------------------------------------------------------------------------ trials.parquet


def test_an_edited_parquet_cell_fails_naming_trial_column_and_sources(study: Path) -> None:
    path = study / "trials.parquet"
    df = pd.read_parquet(path)
    original = float(df.loc[3, "psnr"])
    df.loc[3, "psnr"] = original + 0.5  # a better number for 4 fps, seed 0
    df.to_parquet(path, index=False)
    status, detail = _trials(study)[f"trials:{STUDY}"]
    assert status == "fail"
    assert f"trial 3 (4 fps, seed 0): trials.parquet psnr {original + 0.5!r}, optuna.journal {original!r}" in detail
    assert f"runs/trial_3/eval/metrics.json summary.psnr {original!r}" in detail
    assert "objective value" in detail  # the journal's value for the trial is the unedited number


def test_a_deleted_row_fails(study: Path) -> None:
    path = study / "trials.parquet"
    df = pd.read_parquet(path)
    df[df["trial"] != 5].to_parquet(path, index=False)  # drop a bad seed
    status, detail = _trials(study)[f"trials:{STUDY}"]
    assert status == "fail"
    assert detail == "trial 5 (30 fps, seed 0) (COMPLETE) is in optuna.journal but not in trials.parquet (row deleted?)"


def test_an_added_row_fails(study: Path) -> None:
    path = study / "trials.parquet"
    df = pd.read_parquet(path)
    extra = df[df["trial"] == 4].assign(trial=18, seed=3)  # one more good seed for 8 fps, copied from trial 4
    pd.concat([df, extra], ignore_index=True).to_parquet(path, index=False)
    status, detail = _trials(study)[f"trials:{STUDY}"]
    assert status == "fail"
    # Its metrics files are trial 4's, so they agree with it: only the journal knows no trial 18.
    assert detail == "trial 18 (8 fps, seed 3) is in trials.parquet but not in optuna.journal (row added?)"


# ------------------------------------------------------------------------------------------------ optuna.journal


def _journal_value(journal: Path, trial: int) -> str:
    """The text of trial `trial`'s objective value in the journal, as an editor shows it."""
    match = re.search(rf'"trial_id":{trial},"state":1,"values":\[([0-9.e+-]+)\]', journal.read_text())
    assert match, trial
    return match.group(1)


def test_an_edited_journal_value_fails(study: Path) -> None:
    journal = study / "optuna.journal"
    value = _journal_value(journal, 2)
    edited = float(value) + 1.0  # 1 dB better for 3 fps, seed 0
    _rewrite(journal, f'"trial_id":2,"state":1,"values":[{value}]', f'"trial_id":2,"state":1,"values":[{edited}]')
    status, detail = _trials(study)[f"trials:{STUDY}"]
    assert (status, detail) == (
        "fail",
        f"trial 2 (3 fps, seed 0): optuna.journal records the objective value {edited!r}, trials.parquet psnr "
        f"{float(value)!r}",
    )


def test_an_edited_journal_metric_attribute_fails(study: Path) -> None:
    journal = study / "optuna.journal"
    value = _journal_value(journal, 1)  # the objective is the psnr user attr, recorded alongside
    _rewrite(journal, f'"trial_id":1,"user_attr":{{"psnr":{value}}}', '"trial_id":1,"user_attr":{"psnr":20.5}')
    status, detail = _trials(study)[f"trials:{STUDY}"]
    assert status == "fail"
    assert f"trial 1 (2 fps, seed 0): trials.parquet psnr {float(value)!r}, optuna.journal 20.5" in detail


# ------------------------------------------------------------------------------------------------ summaries, findings


def test_an_edited_summary_md_number_fails(study: Path) -> None:
    path = study / "summary.md"
    row = next(line for line in path.read_text().splitlines() if line.startswith("| 8 fps |"))
    cells = row.split(" | ")
    edited = " | ".join([*cells[:2], "19.00 +- 0.10", *cells[3:]])
    _rewrite(path, row, edited)
    status, detail = _checks(lambda result: check_summary(result, study))[f"summary:{STUDY}"]
    assert status == "fail" and detail.startswith("summary.md: line ")
    assert "19.00 +- 0.10" in detail and cells[2] in detail and "(1 line differs) from trials.parquet" in detail


def test_an_edited_summary_json_number_fails(study: Path) -> None:
    path = study / "summary.json"
    summary = json.loads(path.read_text())
    true = summary["levels"][0]["test_psnr"]["mean"]
    summary["levels"][0]["test_psnr"]["mean"] = 21.0
    path.write_text(json.dumps(summary, indent=2) + "\n")
    status, detail = _checks(lambda result: check_summary(result, study))[f"summary:{STUDY}"]
    assert (status, detail) == (
        "fail", f"summary.json: levels[0].test_psnr.mean 21.0, regenerated from trials.parquet {true!r}"
    )  # fmt: skip


def test_the_committed_findings_and_plots_are_what_the_trials_give(
    experiments: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even when this checkout's code differs from the trials' (a stale study), FINDINGS.md regenerates as written:
    # its "Stale study" lines compare with the code that wrote it, and the code:<study> rows report the staleness.
    monkeypatch.setattr(audit_studies, "code_sha256", lambda kind: "0" * 64)
    checks = _checks(lambda result: check_studies(result, experiments))
    for name in ("sweep-fps", "sweep-codebook", "sweep-staging", "ablations"):
        for kind in ("trials", "summary", "plot"):
            assert checks[f"{kind}:{name}"][0] == "pass", checks[f"{kind}:{name}"]
        assert checks[f"code:{name}"][0] == "fail" and checks[f"code:{name}"][1].startswith("stale: rerun the study")
    assert checks["findings"] == ("pass", "experiments/FINDINGS.md is what the trials give (regenerated: same bytes)")


@pytest.mark.parametrize("file", ["FINDINGS.md", f"{STUDY}/plot.svg"])
def test_an_edited_findings_number_or_plot_fails(experiments: Path, file: str) -> None:
    path = experiments / file
    text = path.read_text()
    if file == "FINDINGS.md":  # the answer's difference against the paper's choice, in the frame-rate section
        old = re.search(r"on test it is ([+-][0-9.]+) dB against 3 fps", text).group(1)  # type: ignore[union-attr]
        _rewrite(path, f"on test it is {old} dB", f"on test it is +{abs(float(old)) + 1:.2f} dB")
    else:  # a point moved up
        old = re.search(r'<circle cx="([0-9.]+)" cy="([0-9.]+)"', text).group(2)  # type: ignore[union-attr]
        _rewrite(path, f'cy="{old}"', f'cy="{float(old) - 20:.1f}"')
    checks = _checks(lambda result: check_studies(result, experiments))
    name = "findings" if file == "FINDINGS.md" else f"plot:{STUDY}"
    status, detail = checks[name]
    assert status == "fail" and detail.startswith(f"{'experiments/' if file == 'FINDINGS.md' else ''}{file}: line ")
    assert old in detail and "from the trials" in detail
    failed = {n for n, (s, _) in checks.items() if s == "fail" and not n.startswith("code:")}
    assert failed == {name}


# ------------------------------------------------------------------------------------------------ pipeline records


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("per_clip_too", [False, True])
def test_an_edited_metrics_json_with_its_md5_edited_in_dvc_lock_fails(tmp_path: Path, per_clip_too: bool) -> None:
    repo = _repo(tmp_path / "repo", experiments=False)
    metrics, lock = repo / "outputs/eval/metrics.json", repo / "dvc.lock"
    old_md5 = _md5(metrics)
    record = json.loads(metrics.read_text())
    record["summary"]["psnr"] += 1.0  # the headline number, and its metric entry, as a careful editor would
    record["metrics"]["psnr"]["value"] = record["summary"]["psnr"]
    record["summary"]["psnr_gain_over_trivial_db"] += 1.0
    if per_clip_too:  # ... and every clip, so that their mean agrees
        record["metrics"]["psnr"]["per_clip"] = [v + 1.0 for v in record["metrics"]["psnr"]["per_clip"]]
    metrics.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    lock.write_text(lock.read_text().replace(old_md5, _md5(metrics)))  # every md5 dvc.lock records for it
    result = audit(repo, out_dir=tmp_path / "audit")
    checks = {c.name: (c.status, c.detail) for c in result.checks}
    assert checks["dvc-lock"][0] == "pass"  # the lock file agrees with itself and with the edited file
    assert checks["metrics"][0] == ("pass" if per_clip_too else "fail"), checks["metrics"]
    if not per_clip_too:
        assert "outputs/eval/metrics.json: metrics.psnr.value" in checks["metrics"][1]
        assert "per-clip values average" in checks["metrics"][1]
    status, detail = checks["report"]
    assert status == "fail" and "outputs/report.md: line " in detail  # the report still shows the measured number
    assert f"{record['summary']['psnr'] - 1.0:.4f}" in detail and f"{record['summary']['psnr']:.4f}" in detail
    assert not result.passed


def test_an_edited_md5_in_dvc_lock_alone_fails(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", experiments=False)
    lock = repo / "dvc.lock"
    md5 = _md5(repo / "outputs/report.md")
    lock.write_text(lock.read_text().replace(md5, "f" * 32))
    checks = {c.name: (c.status, c.detail) for c in audit(repo, out_dir=tmp_path / "audit").checks}
    assert checks["report"] == (
        "fail",
        f"outputs/report.md: md5 {md5[:12]} differs from dvc.lock (report) ffffffffffff",
    )


# ------------------------------------------------------------------------------------------------ one run folder


def test_a_run_folder_without_its_evaluation_fails_saying_so(tmp_path: Path) -> None:
    files = [f for f in _committed(f"experiments/{STUDY}/runs/trial_0") if "/eval" not in f]
    repo = _copy(files + _committed("dvc.yaml", "params.yaml", f"experiments/{STUDY}/study.json"), tmp_path / "repo")
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "a trial without its evaluation", cwd=repo)
    run = (repo / "experiments" / STUDY / "runs" / "trial_0" / "stage2").resolve()
    result = audit(run)
    checks = {c.name: (c.status, c.detail) for c in result.checks}
    assert not result.passed
    assert checks["metrics"] == (
        "fail",
        f"{run}: no eval/metrics.json in the run folder or beside it: its results were never evaluated or the "
        f"evaluation is gone (`vidtok evaluate --checkpoint {run}`)",
    )
    # Without a workspace (no data/, no checkpoints) the checkpoint and identity are not run here, naming the study.
    assert checks["checkpoint:stage2"][0] == "skip" and "not run here" in checks["checkpoint:stage2"][1]
    assert "prefect deployment run sweep-fps/sweep-fps" in checks["checkpoint:stage2"][1]
    # With its evaluation back, the metrics check traces it to the run's final checkpoint.
    _copy(_committed(f"experiments/{STUDY}/runs/trial_0/eval"), repo)
    checks = {c.name: (c.status, c.detail) for c in audit(run).checks}
    assert checks["metrics"][0] == "pass" and "scored this run's final checkpoint" in checks["metrics"][1]
    # Stage 1 is evaluated through the stage 2 that continued from its final checkpoint.
    checks = {c.name: (c.status, c.detail) for c in audit(run.parent / "stage1").checks}
    assert checks["metrics"][0] == "pass" and "the final checkpoint of stage2, which continued" in checks["metrics"][1]


# ------------------------------------------------------------------------------------------------ a fresh clone


def test_a_fresh_clone_checks_every_committed_result(tmp_path: Path) -> None:
    origin = _repo(tmp_path / "origin", experiments=True)
    clone = tmp_path / "clone"
    _git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    assert not (clone / "data").exists() and not (clone / "outputs" / "train").exists()
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's vidtok; the clone holds results, not code
    proc = subprocess.run([sys.executable, "-m", "vidtok.cli", "audit"], cwd=clone, env=env, capture_output=True,
                          text=True)  # fmt: skip
    report = json.loads((clone / "outputs" / "audit" / "audit.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    committed = ["git", "dvc-lock", "metrics", "report", "findings"]
    committed += [f"{k}:{s}" for s in ("ablations", "sweep-codebook", "sweep-fps", "sweep-staging")
                  for k in ("trials", "summary", "plot")]  # fmt: skip
    for name in committed:
        assert checks[name]["status"] == "pass", checks[name]
    # The workspace checks are listed, not failed: each says what it needs and the command that makes it.
    assert report["workspace"] == "absent"
    assert report["not_run_here"] == ["dvc-status", "data", "run:stage1", "run:stage2", "metrics:run"]
    for name in report["not_run_here"]:
        assert checks[name]["status"] == "skip" and checks[name]["detail"].startswith("not run here: needs ")
        assert "`make run`" in checks[name]["enable"] and "`dvc pull`" in checks[name]["enable"]
    assert "5 checks not run here" in proc.stdout and "--require-workspace" in proc.stdout
    # What is left is staleness, labelled as such: the exit code is 0 exactly when the studies ran this code.
    stale = [c for name, c in checks.items() if name.startswith("code:") and c["status"] == "fail"]
    assert all(c["detail"].startswith("stale: rerun the study") for c in stale)
    assert {c["name"] for c in report["checks"] if c["status"] == "fail"} == {c["name"] for c in stale}
    assert proc.returncode == (1 if stale else 0), proc.stdout[-3000:] + proc.stderr[-2000:]

    required = audit(clone, require_workspace=True, out_dir=tmp_path / "required")
    failed = {c.name for c in required.checks if c.status == "fail"} - {c["name"] for c in stale}
    assert failed == {"dvc-status", "data", "run:stage1", "run:stage2", "metrics:run"}
    assert required.as_dict()["workspace"] == "required" and not required.not_run_here


@pytest.mark.parametrize(
    ("item", "phrase"),
    [
        ("psnr=nan", "--tolerance psnr=nan: must be a finite number >= 0"),
        ("psnr=inf", "--tolerance psnr=inf: must be a finite number >= 0"),
        ("ssim=-1", "--tolerance ssim=-1.0: must be a finite number >= 0"),
        ("pnsr=0.01", "--tolerance pnsr: unknown metric; known: psnr, ssim"),
        ("psnr", "--tolerance 'psnr': expected METRIC=NUMBER"),
    ],
)
def test_a_tolerance_that_would_let_everything_pass_is_refused(item: str, phrase: str, capsys, tmp_path) -> None:
    from vidtok.cli import main

    assert main(["audit", str(tmp_path), "--rerun", "--tolerance", item]) == 1
    err = capsys.readouterr().err.strip()
    assert phrase in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "outputs").exists()  # refused before anything ran
