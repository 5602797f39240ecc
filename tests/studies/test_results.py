"""The trials table schema and study summaries.  Run: pytest tests/test_studies.py -q"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from vidtok.studies.results import StudyFileError, read_trials, summarize, write_summary, write_trials


def trials(rows: list[tuple[float, int, str, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(
                study="sweep-fps",
                trial=i,
                state=state,
                factor="fps",
                level=f"{fps:g}",
                level_value=fps,
                seed=seed,
                regularizer="kl",
                psnr=psnr,
                ssim=0.7 if psnr else None,
                vmaf=None,
                lpips=None,
                fvd=None,
                trivial_psnr=20.0,
                codebook_utilisation=None,
                perplexity=None,
                train_wall_s=60.0,
                gpu_hours=None,
                steps=100,
                run_dir=f"runs/trial_{i}",
                metrics_path=None,
                metrics_sha256=None,
                code_sha256=None,
                params_json=json.dumps({"fps": fps}),
                error=None if state != "FAIL" else "stopped",
                started_at=None,
                ended_at=None,
            )
            for i, (fps, seed, state, psnr) in enumerate(rows)
        ]
    )


def test_round_trip_and_summary(tmp_path) -> None:
    df = trials([(3, 0, "COMPLETE", 24.0), (3, 1, "COMPLETE", 26.0), (8, 0, "COMPLETE", 23.0), (8, 1, "FAIL", None)])
    write_trials(df, tmp_path)
    back = read_trials(tmp_path)
    assert len(back) == 4 and list(back["trial"]) == [0, 1, 2, 3]
    summary = write_summary(tmp_path, back, "sweep-fps", "fps")
    level3 = next(r for r in summary["levels"] if r["level"] == "3")
    assert level3["psnr"]["mean"] == 25.0 and level3["psnr"]["std"] == pytest.approx(2**0.5) and level3["n"] == 2
    assert summary["best_level"] == "3" and summary["trials"]["FAIL"] == 1
    assert "| **3** | 2 | 25.00 +- 1.41 |" in (tmp_path / "summary.md").read_text()


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
