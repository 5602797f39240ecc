"""The dashboard with Streamlit's AppTest: every page on fixture data in three states (empty, normal, corrupt), and
the data-loading, table and paper-matching code under it.

    pytest tests/dashboard/test_dashboard.py -q

Fixture data roots are written by tests/fixtures/dashboard/fixture_data.py with the project's own writers. The app
finds them through VIDTOK_ROOT, as a user would point it at another workspace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import analysis, data
from tests.fixtures.dashboard.fixture_data import build, trial_rows
from tests.helpers import REPO
from vidtok.studies import paper

APP = str(REPO / "dashboard" / "app.py")
PAGES = ("overview", "frame_rate", "codebook", "staging", "ablations", "reconstructions", "audit")
STUDY_OF = {
    "frame_rate": "sweep-fps",
    "codebook": "sweep-codebook",
    "staging": "sweep-staging",
    "ablations": "ablations",
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {state: build(tmp_path_factory.mktemp(f"root-{state}"), state) for state in ("empty", "normal", "corrupt")}


def run_page(root: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv(data.ROOT_ENV, str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(f"views/{page}.py")
    return at.run()


def text_of(at: AppTest) -> str:
    """Every visible text element of the page, one per line (dataframes excluded: checked where needed)."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success", "warning", "error"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    parts += [e.label for e in at.expander]
    parts += [str(s.label) for s in at.selectbox]
    return "\n".join(parts)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# ------------------------------------------------------------------------------------------------ three states

NORMAL = {
    "overview": ["vidtok overview", "Latest pipeline run", "stage2", "completed", "Metrics with their protocol",
                 "27.65", "Not measured", "Params and data", "data.dvc", "Studies"],
    "frame_rate": ["Open question: frame rate", "Best training frame rate (fps): **4 fps**", "PSNR (dB) against",
                   "1 failed trial(s)", "The paper's numbers: 3 vs 8 fps",
                   "**Partial study**: fewer than 3 seeds: 1 fps (2), 2 fps (2)"],
    "codebook": ["Open question: codebook size", "Best codebook size (log2 codes): **fsq-14**,",
                 "Codebook utilisation against codebook size"],
    "staging": ["Open question: staging schedule", "Best staging schedule: **one-stage-high-res**",
                "Quality against compute", "Compute measure"],
    "ablations": ["Our ablation study", "Answer at this scale", "Ours next to the paper's numbers",
                  "Reported by VidTok (arXiv 2412.13061), "
                  "not measured here", "Paper's Table 2: architecture", "Paper's Table 3: quantizers"],
    "reconstructions": ["Original | reconstruction", "Left half: the original", "Per-video metrics",
                        "No per-frame PSNR in this evaluation", "Token maps", "distinct tokens"],
    "audit": ["Latest reproducibility audit", "Audit passed", "3 passed, 0 failed, 1 skipped", "Compare two runs",
              "Params: 3 differ"],
}  # fmt: skip

EMPTY = {
    "overview": ["No pipeline run yet", "`make run`", "`dvc repro`", "No evaluation yet"],
    "frame_rate": ["No study yet", "make prefect-up",
                   "prefect deployment run sweep-fps/sweep-fps --param n_trials=18 --param profile=study"],
    "codebook": ["No study yet", "prefect deployment run sweep-codebook/sweep-codebook --param n_trials=36"],
    "staging": ["No study yet", "prefect deployment run sweep-staging/sweep-staging --param n_trials=15"],
    "ablations": ["No study yet", "prefect deployment run ablations/ablations", "Reported by VidTok"],
    "reconstructions": ["No evaluation yet", "vidtok evaluate --checkpoint outputs/train/stage2"],
    "audit": ["No audit yet", "`vidtok audit`", "Two runs are needed to compare; found 0"],
}  # fmt: skip

CORRUPT = {
    "overview": ["outputs/train/stage1/run.json: not valid JSON", "outputs/train/stage2/run.json: field 'status'",
                 "outputs/eval/metrics.json: summary.psnr", "params.yaml: not valid YAML",
                 "experiments/sweep-fps/trials.parquet: unreadable parquet file",
                 "experiments/sweep-codebook/trials.parquet: does not match the trials schema: psnr"],
    "frame_rate": ["experiments/sweep-fps/trials.parquet: unreadable parquet file"],
    "codebook": ["experiments/sweep-codebook/trials.parquet: does not match the trials schema"],
    "staging": ["experiments/sweep-staging/trials.parquet: does not match the trials schema: state"],
    "ablations": ["experiments/ablations/trials.parquet: unreadable parquet file"],
    "reconstructions": ["outputs/eval/metrics.json: summary.psnr missing or not a number",
                        "outputs/eval/tokens/bikes.tokens: unreadable token file"],
    "audit": ["outputs/audit/audit.json: checks[0].status must be pass, fail or skip, got 'maybe'"],
}  # fmt: skip


@pytest.mark.parametrize("page", PAGES)
def test_page_normal(page: str, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(roots["normal"], page, monkeypatch)
    assert_clean(at)
    text = text_of(at)
    for expected in NORMAL[page]:
        assert expected in text, f"{page}: {expected!r} not shown"
    assert "Traceback" not in text


@pytest.mark.parametrize("page", PAGES)
def test_page_empty_names_the_command(page: str, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(roots["empty"], page, monkeypatch)
    assert_clean(at)
    text = text_of(at)
    for expected in EMPTY[page]:
        assert expected in text, f"{page}: {expected!r} not shown"
    assert not at.get("vega_lite_chart") or page == "ablations"  # no plot without data (ablations: paper tables)


@pytest.mark.parametrize("page", PAGES)
def test_page_corrupt_one_line_errors(page: str, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(roots["corrupt"], page, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    errors = [str(e.value) for e in at.error]
    for expected in CORRUPT[page]:
        assert any(expected in e for e in errors), f"{page}: no error containing {expected!r} in {errors}"
    for e in errors:
        assert "\n" not in e and "Traceback" not in e and "could not be drawn" not in e
    assert not at.get("vega_lite_chart") or page == "audit"


# ------------------------------------------------------------------------------------------------ page behaviour


def test_study_best_setting_and_tables_match_the_study_summary(
    roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-setting table equals vidtok.studies.results' summary.json (mean, std over seeds), the best is marked."""
    at = run_page(roots["normal"], "frame_rate", monkeypatch)
    table = at.dataframe[0].value
    summary = json.loads((roots["normal"] / "experiments" / "sweep-fps" / "summary.json").read_text())
    for level in summary["levels"]:
        row = table[table["training frame rate (fps)"] == level["level"]].iloc[0]
        assert row["psnr mean"] == pytest.approx(level["psnr"]["mean"], abs=5e-5)  # shown to 4 decimals
        assert row["psnr std"] == pytest.approx(level["psnr"]["std"], abs=5e-5)
        assert row["seeds (n)"] == level["n"]
    assert table.loc[table["best"] == "best", "training frame rate (fps)"].tolist() == [summary["best_level"]]
    assert len(at.get("vega_lite_chart")) == 2  # ours, and the paper's points at 3 and 8 fps beside it
    assert "The paper's PSNR at these training frame rate levels" in text_of(at)
    assert len(at.get("download_button")) >= 3  # the plot's table, every metric, all trials


def test_study_metric_choice_redraws(roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(roots["normal"], "frame_rate", monkeypatch)
    at.selectbox(key="sweep-fps-metric").select("ssim").run()
    assert_clean(at)
    assert "SSIM against training frame rate (fps)" in text_of(at)
    assert "ssim mean" in at.dataframe[0].value.columns


def test_codebook_page_plots_utilisation_per_regularizer(
    roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page(roots["normal"], "codebook", monkeypatch)
    util = at.dataframe[1].value
    assert set(util["regularizer"]) == {"fsq", "lfq"} and "codebook_utilisation mean" in util.columns
    assert len(at.get("vega_lite_chart")) == 3  # quality (and the paper's Table 3 points beside it), utilisation


def test_staging_page_puts_quality_next_to_compute(roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(roots["normal"], "staging", monkeypatch)
    compute = at.dataframe[1].value
    assert {"psnr mean", "train_wall_s mean", "train_wall_s std"} <= set(compute.columns)
    assert compute.loc[compute["staging schedule"] == "two-stage-75pct", "train_wall_s mean"].item() == 435


def test_ablations_next_to_the_papers_numbers(roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(roots["normal"], "ablations", monkeypatch)
    ours = at.dataframe[0].value.set_index("variant")
    assert ours.loc["ours", "paper's row"] == "Table 2: Ours (VidTok)" and ours.loc["ours", "paper's psnr"] == 29.64
    assert ours.loc["no_alphablender", "paper's psnr"] == 29.36
    assert ours.loc["vq", "paper's row"] == "Table 3: VQ 262,144 with aux loss"
    assert ours.loc["fixed_alpha", "paper's row"] == "— (not in the paper)"
    assert pd.isna(ours.loc["fixed_alpha", "paper's psnr"])
    tables = [d.value for d in at.dataframe]
    assert any("TFLOPs" in t.columns for t in tables) and any("utilisation" in t.columns for t in tables)


def test_reconstructions_video_tokens_and_per_frame_psnr(
    roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page(roots["normal"], "reconstructions", monkeypatch)
    assert len(at.get("video")) == 1
    assert len(at.get("image")) == 5  # 17 frames -> 5 latent frames, one colour map each
    # An evaluation folder with per-frame data plots it instead of saying it is absent.
    import shutil

    root = tmp_path / "root"
    shutil.copytree(roots["normal"], root)
    frames = pd.DataFrame({"video": "bikes", "clip": 0, "frame": range(17), "psnr": np.linspace(26, 29, 17)})
    frames.to_csv(root / "outputs" / "eval" / "per_frame.csv", index=False)
    at = run_page(root, "reconstructions", monkeypatch)
    assert_clean(at)
    assert "No per-frame PSNR" not in text_of(at)
    assert any("frame" in d.value.columns and len(d.value) == 17 for d in at.dataframe)


def test_codebook_size_is_the_evaluations_record(
    roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token map's codebook size is what evaluate recorded for its checkpoint (checkpoint.num_codes), shown for
    token files of those weights only: the dashboard derives no codebook size from a model config."""
    import shutil

    at = run_page(roots["normal"], "reconstructions", monkeypatch)
    assert {m.label: m.value for m in at.metric}["codebook size"] == "4,096"
    root = tmp_path / "root"
    shutil.copytree(roots["normal"], root)
    path = root / "outputs" / "eval" / "metrics.json"
    record = json.loads(path.read_text())
    record["checkpoint"]["weights_sha256"] = "f" * 64  # the evaluation scored other weights than the tokens'
    path.write_text(json.dumps(record))
    at = run_page(root, "reconstructions", monkeypatch)
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["codebook size"] == "?"


def test_tampered_token_file_is_named(roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    root = tmp_path / "root"
    shutil.copytree(roots["normal"], root)
    path = root / "outputs" / "eval" / "tokens" / "bikes.tokens"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # one byte of the indices tensor
    path.write_bytes(bytes(raw))
    at = run_page(root, "reconstructions", monkeypatch)
    assert not at.exception
    assert any("bikes.tokens: header or tensor bytes do not match their recorded sha256" in e.value for e in at.error)


def test_failed_audit_names_the_failing_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = tmp_path / "outputs" / "audit"
    audit.mkdir(parents=True)
    checks = [
        {"name": "data hash", "status": "fail", "detail": "data/raw/bikes.mp4 changed"},
        {"name": "dvc status clean", "status": "pass", "detail": ""},
    ]
    (audit / "audit.json").write_text(
        json.dumps(
            {"passed": False, "checked_at": "2026-01-01T00:00:00+00:00", "target": "workspace", "checks": checks}
        )
    )
    at = run_page(tmp_path, "audit", monkeypatch)
    assert not at.exception
    assert any("Audit failed" in e.value and "data hash" in e.value for e in at.error)
    assert at.dataframe[0].value["status"].tolist() == ["FAIL", "PASS"]


def test_audit_diff_of_two_chosen_runs(roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(roots["normal"], "audit", monkeypatch)
    params = at.dataframe[1].value
    assert set(params["key"]) == {"config.train.lr", "config.train.freeze_encoder", "stage"}
    labels = at.selectbox(key="diff-b").options
    trial = next(i for i, label in enumerate(labels) if label.startswith("sweep-fps trial 2 "))
    at.selectbox(key="diff-b").set_value(trial).run()
    assert_clean(at)
    keys = set(at.dataframe[1].value["key"])
    assert {"fps", "study.fps", "config.train.lr"} <= keys  # a trial's params against a pipeline run's
    metrics = at.dataframe[2].value.set_index("key")
    assert "psnr" in metrics.index and pd.notna(metrics.loc["val.val_psnr", "A"])


# ------------------------------------------------------------------------------------------------ modules


def test_root_from_cli_argument_env_and_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["app.py", "--root", str(tmp_path)])
    monkeypatch.setenv(data.ROOT_ENV, "/elsewhere")
    assert data.root() == tmp_path.resolve()
    monkeypatch.setattr(sys, "argv", ["app.py"])
    assert data.root() == Path("/elsewhere")
    monkeypatch.delenv(data.ROOT_ENV)
    monkeypatch.chdir(tmp_path)
    assert data.root() == tmp_path.resolve()


def test_loading_is_cached_on_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vidtok.studies.results

    calls: list[str] = []
    real = vidtok.studies.results.read_trials
    monkeypatch.setattr(vidtok.studies.results, "read_trials", lambda folder: calls.append(folder) or real(folder))
    study = tmp_path / "experiments" / "sweep-fps"
    vidtok.studies.results.write_trials(trial_rows("sweep-fps", "fps", [(3, 3.0, "kl", 25.0, {})]), study)
    assert len(data.read_trials(study)) == 2 and len(data.read_trials(study)) == 2
    assert len(calls) == 1  # the second read came from the cache
    time.sleep(0.01)
    vidtok.studies.results.write_trials(
        trial_rows("sweep-fps", "fps", [(3, 3.0, "kl", 25.0, {}), (8, 8.0, "kl", 24.0, {})]), study
    )
    assert len(data.read_trials(study)) == 4 and len(calls) == 2  # a rewritten file (new mtime) is read again


def test_level_stats_and_best() -> None:
    df = trial_rows("sweep-fps", "fps", [(3, 3.0, "kl", 25.0, {}), (8, 8.0, "kl", 24.0, {})], seeds=3)
    df.loc[0, "state"] = "FAIL"
    df.loc[0, "psnr"] = None
    stats = analysis.setting_stats(df, "psnr", ["psnr", "lpips"])  # results.summarize, flattened
    three = stats.set_index("level").loc["3"]
    ok = df[(df["level"] == "3") & (df["state"] == "COMPLETE")]["psnr"]
    assert three["n"] == 2 and three["psnr_mean"] == pytest.approx(ok.mean())
    assert three["psnr_std"] == pytest.approx(ok.std(ddof=1)) and three["best"]
    assert three["lpips_n"] == 0 and np.isnan(three["lpips_mean"])
    df["lpips"] = [0.2, 0.2, 0.2, 0.1, 0.1, 0.1]
    assert analysis.setting_stats(df, "lpips", ["lpips"]).set_index("level").loc["8", "best"]


def test_setting_tables_of_the_committed_studies_are_their_summaries() -> None:
    """On every committed study the per-setting table the study page draws holds its committed summary.json's
    numbers (the file `vidtok audit` checks byte for byte), in its order, with its best level marked."""
    from vidtok.studies.results import read_trials

    for name, spec in data.STUDIES.items():
        folder = REPO / "experiments" / name
        summary = json.loads((folder / "summary.json").read_text())
        stats = analysis.setting_stats(read_trials(folder), spec.metric, ["psnr", "test_psnr", "train_wall_s"])
        assert stats["level"].tolist() == [str(r["level"]) for r in summary["levels"]], name
        assert stats.loc[stats["best"], "level"].tolist() == [summary["best_level"]], name
        for row, level in zip(stats.to_dict("records"), summary["levels"], strict=True):
            for metric in ("psnr", "test_psnr", "train_wall_s"):
                for part in ("mean", "std", "n"):
                    expected, value = level[metric][part], row[f"{metric}_{part}"]
                    assert np.isnan(value) if expected is None else value == expected, (name, level["level"], metric)


def test_paper_rows() -> None:
    assert paper.paper_row("w/o AlphaBlender")[0] == "Table 2: Variant 2: w/o AlphaBlender"
    assert paper.paper_row("Fully-3D")[1]["psnr"] == 29.39
    assert paper.paper_row("lfq_noaux")[1]["psnr"] == 23.91
    assert paper.paper_row("fsq")[1]["fvd"] == 160.1
    assert paper.paper_row("fixed_alpha") is None
    assert paper.TABLE2.loc[paper.TABLE2["variant"] == "Ours (VidTok)", "ssim"].item() == 0.852


def test_diff_table() -> None:
    diff = analysis.diff_table({"a": 1, "b": [1, 2], "c": "x"}, {"a": 3, "b": [1, 2], "d": None})
    assert diff.set_index("key")["B - A"].to_dict()["a"] == 2
    assert set(diff["key"]) == {"a", "c"}  # b is equal, d is None on both sides


def test_dashboard_never_imports_torch(roots: dict[str, Path]) -> None:
    """Every page on the normal fixture in a fresh interpreter: torch (and vidtok's model) are never imported."""
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"for page in {list(PAGES)!r}:\n"
        f"    at = AppTest.from_file({APP!r}, default_timeout=60)\n"
        "    at.switch_page(f'views/{page}.py').run()\n"
        "    assert not at.exception and not at.error, (page, at.exception, at.error)\n"
        "heavy = ('torch', 'vidtok.model', 'lightning')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy))\n"
        "print('IMPORTED', bad)\n"
        "assert not bad, bad\n"
    )
    env = os.environ | {data.ROOT_ENV: str(roots["normal"])}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "IMPORTED []" in result.stdout


def test_make_dashboard_binds_loopback() -> None:
    out = subprocess.run(["make", "-n", "dashboard"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if "streamlit run dashboard/app.py" in x)
    for flag in ("--server.address 127.0.0.1", "--server.port 8501", "--server.headless true",
                 "--browser.gatherUsageStats false"):  # fmt: skip
        assert flag in line
