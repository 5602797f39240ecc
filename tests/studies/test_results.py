"""The trials table schema and study summaries.

pytest tests/studies/test_results.py -q
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import trial_table as trials
from vidtok.studies.results import StudyFileError, read_trials, summarize, write_summary, write_trials


def test_round_trip_and_summary(tmp_path) -> None:
    df = trials([(3, 0, "COMPLETE", 24.0), (3, 1, "COMPLETE", 26.0), (8, 0, "COMPLETE", 23.0), (8, 1, "FAIL", None)])
    write_trials(df, tmp_path)
    back = read_trials(tmp_path)
    assert len(back) == 4 and list(back["trial"]) == [0, 1, 2, 3]
    summary = write_summary(tmp_path, back, "sweep-fps", "fps")
    level3 = next(r for r in summary["levels"] if r["level"] == "3")
    assert level3["psnr"]["mean"] == 25.0 and level3["psnr"]["std"] == pytest.approx(2**0.5) and level3["n"] == 2
    assert summary["best_level"] == "3" and summary["trials"]["FAIL"] == 1
    assert "| **3** | 2 | 25.00 +- 1.41 | [12.29, 37.71] |" in (tmp_path / "summary.md").read_text()  # t(1) CI


def test_confidence_intervals_and_paired_comparison_against_the_baseline(tmp_path) -> None:
    """Seeds pair the levels: 8 fps is 1 dB below 3 fps for every seed, so the paired difference is exact even
    though each level's own spread over seeds (2 dB) is larger than the effect."""
    rows = [(3, s, "COMPLETE", 24.0 + 2 * s) for s in range(3)] + [(8, s, "COMPLETE", 23.0 + 2 * s) for s in range(3)]
    rows += [(1, 0, "COMPLETE", 20.0), (1, 1, "COMPLETE", 22.5), (1, 2, "FAIL", None)]
    summary = summarize(trials(rows), "psnr", baseline="3")
    level3 = next(r for r in summary["levels"] if r["level"] == "3")
    half = 4.302653 * 2.0 / 3**0.5  # t(0.975, 2) x std / sqrt(n)
    assert level3["psnr"]["ci95"] == pytest.approx([26.0 - half, 26.0 + half], rel=1e-5)
    val = {c["level"]: c for c in summary["comparisons"]["val"]}
    assert val["8"]["pairs"] == 3 and val["8"]["mean_diff"] == pytest.approx(-1.0) and val["8"]["std_diff"] == 0
    assert val["8"]["p_value"] == 0.0  # the same difference for every seed
    assert val["1"]["pairs"] == 2 and val["1"]["seeds"] == [0, 1]  # the failed seed has no pair
    assert val["1"]["mean_diff"] == pytest.approx(((20 - 24) + (22.5 - 26)) / 2)
    assert 0 < val["1"]["p_value"] < 1 and val["1"]["test"].startswith("paired t-test")
    test = {c["level"]: c for c in summary["comparisons"]["test"]}
    assert test["8"]["mean_diff"] == pytest.approx(-1.0)  # test_psnr = psnr - 2 for every trial
    text = write_summary(tmp_path, trials(rows), "sweep-fps", "fps", baseline="3") and (tmp_path / "summary.md")
    assert "Against the baseline **3** on val" in text.read_text() and "| 8 | 3 | -1.00 |" in text.read_text()


@pytest.mark.parametrize(
    "change,phrase",
    [
        (lambda df: df.assign(state="DONE"), "state"),
        (lambda df: df.assign(psnr=None), "complete_trials_have_quality"),
        (lambda df: pd.concat([df, df]), "unique_trials"),
        (lambda df: df.assign(ssim=3.0), "ssim"),
    ],
)
def test_schema_rejects_bad_tables(tmp_path, change, phrase) -> None:
    with pytest.raises(StudyFileError, match=phrase):
        write_trials(change(trials([(3, 0, "COMPLETE", 24.0)])), tmp_path)
    assert not (tmp_path / "trials.parquet").exists()


def test_corrupt_or_missing_file(tmp_path) -> None:
    with pytest.raises(StudyFileError, match="not found"):
        read_trials(tmp_path)
    (tmp_path / "trials.parquet").write_bytes(b"not parquet")
    with pytest.raises(StudyFileError, match="unreadable parquet file"):
        read_trials(tmp_path)


def test_lower_is_better_metrics_pick_the_minimum() -> None:
    df = trials([(3, 0, "COMPLETE", 24.0), (8, 0, "COMPLETE", 23.0)]).assign(lpips=[0.3, 0.2])
    assert summarize(df, "lpips")["best_level"] == "8"
