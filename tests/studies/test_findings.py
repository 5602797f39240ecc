"""experiments/FINDINGS.md is generated from the committed trials, never edited by hand (vidtok.studies.findings).

.venv/bin/pytest tests/studies/test_findings.py -q
"""

from __future__ import annotations

import json

from tests.helpers import trial_table
from vidtok.cli import main
from vidtok.studies.findings import code_currency, coverage
from vidtok.studies.results import summarize, write_trials
from vidtok.studies.specs import get_study


def test_findings_answer_each_question_from_the_trials(tmp_path) -> None:
    # sweep-fps: 8 fps 1 dB above 3 fps for every seed (a real effect); 2 fps 0.5 dB below on average but with
    # spread (within it); 1 fps below the trivial codec on test.
    rows = [(3, s, "COMPLETE", 24.0 + 2 * s) for s in range(3)] + [(8, s, "COMPLETE", 25.0 + 2 * s) for s in range(3)]
    rows += [(2, 0, "COMPLETE", 22.0), (2, 1, "COMPLETE", 27.0), (2, 2, "COMPLETE", 27.5)]
    rows += [(1, s, "COMPLETE", 20.0 + s * 0.1) for s in range(3)]
    write_trials(trial_table(rows, label="{:g} fps"), tmp_path / "sweep-fps")
    for stage, steps in (("stage1", 80), ("stage2", 20)):  # the first trial's run records, as training writes them
        record = tmp_path / "sweep-fps" / "runs" / "trial_0" / stage / "run.json"
        record.parent.mkdir(parents=True)
        train = {"steps": steps, "resolution": 64, "batch_size": 2, "lr": 0.001}
        record.write_text(json.dumps({"config": {"train": train, "data": {"clip_frames": 17}}}))
    assert main(["findings", "--experiments", str(tmp_path)]) == 0
    text = (tmp_path / "FINDINGS.md").read_text()
    fps = text.split("\n## Frame rate")[1].split("\n## ")[0]
    assert "Best on val: **8 fps**; on test it is +1.00 dB against 3 fps over 3 seed pairs" in fps
    assert "Below the trivial codec on test: 1 fps." in fps
    assert "**Partial study**: not run yet: 4 fps, 30 fps." in fps  # the levels with no trial are named
    assert "| 2 fps | 3 | -0.50 |" in fps  # the paired difference, shown with its CI and p
    assert "| codebook use | perplexity | train wall (s) |" in fps  # code use beside quality (issue 19)
    assert "The paper's numbers" in fps and "not measured here" in fps
    assert "stage1 80 steps at 64 px, batch 2, lr 0.001, 17-frame clips; stage2 20 steps at 64 px" in fps
    # the study's own summary files are rewritten with the same tables (and its baseline's comparisons)
    summary_md = (tmp_path / "sweep-fps" / "summary.md").read_text()
    assert "| codebook use | perplexity |" in summary_md and "| 2 fps | 3 | -0.50 |" in summary_md
    assert json.loads((tmp_path / "sweep-fps" / "summary.json").read_text())["baseline"] == "3 fps"
    svg = (tmp_path / "sweep-fps" / "plot.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<circle") == 4 and "8 fps" in svg
    for other in ("## Codebook size", "## Staging schedule", "## Ablations"):
        section = text.split("\n" + other)[1].split("\n## ")[0]
        assert "Not run yet. Run it with `prefect deployment run" in section


def test_a_partial_study_names_its_missing_levels_and_short_seed_counts() -> None:
    spec = get_study("sweep-fps")
    rows = [(f, s, "COMPLETE", 20.0 + s) for f in (1, 2, 3, 4, 8) for s in range(3)]
    full = summarize(trial_table(rows + [(30, s, "COMPLETE", 21.0) for s in range(3)], label="{:g} fps"))
    assert coverage(spec, full) == ""  # every level at every seed: nothing to say
    partial = summarize(trial_table(rows[:-1], label="{:g} fps"), "psnr", "3 fps")  # 8 fps lost seed 2
    assert coverage(spec, partial) == "**Partial study**: not run yet: 30 fps; fewer than 3 seeds: 8 fps (2)."


def test_a_study_made_by_other_code_says_so() -> None:
    # Trials record vidtok.runs.code_sha256("study"); a study whose trials ran other code is stale (the audit fails
    # it) and the findings say so, naming the code it ran and this checkout's.
    trials = trial_table([(3, s, "COMPLETE", 24.0) for s in range(3)] + [(8, 0, "FAIL", None)])
    now, before = "a" * 64, "b" * 64
    trials["code_sha256"] = now
    assert code_currency(trials, now) == ""
    trials.loc[[0, 1], "code_sha256"] = before
    trials.loc[2, "code_sha256"] = None
    assert code_currency(trials, now) == (
        "**Stale study**: 2 of 3 finished trials ran library code (sha256 bbbbbbbbbbbb) that differs from this"
        " checkout's (aaaaaaaaaaaa): `vidtok audit` fails this study until it is rerun; 1 of 3 finished trials"
        " record no code sha256."
    )
