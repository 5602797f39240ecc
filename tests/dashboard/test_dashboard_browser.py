"""The dashboard in a real browser: the app served on a free loopback port with fixture data, every page opened in
headless system Chromium through Playwright, screenshots in pytest's temporary folder.

    pytest tests/dashboard/test_dashboard_browser.py -q   # needs /usr/bin/chromium (`make system-deps`) and playwright

No browser is downloaded: Playwright drives the OS package's Chromium. The server is stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.dashboard.fixture_data import build
from tests.helpers import REPO, accepts_connections, free_port, non_loopback_ipv4
from vidtok.studies.findings import code_currency, coverage
from vidtok.studies.results import read_trials
from vidtok.studies.specs import STUDIES as SPECS

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
]

try:
    import playwright.sync_api as playwright_api
except ImportError:  # pragma: no cover - depends on the environment
    playwright_api = None

# A module-level skip: under CI=true it fails the run instead (tests/conftest.py), so CI cannot pass without a browser.
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"{CHROMIUM} not found: install it with `make system-deps` (apt-get install chromium)", allow_module_level=True
    )
if playwright_api is None:
    pytest.skip("the playwright package is not installed (pip install -e '.[dev]')", allow_module_level=True)

# (url path, file name of the screenshot, texts that must be visible once the page has drawn)
PAGES = [
    ("", "overview", ["vidtok overview", "Latest pipeline run", "Metrics with their protocol", "Params and data"]),
    (
        "frame_rate",
        "frame_rate",
        ["Open question: frame rate", "Best training frame rate", "Download sweep-fps-psnr.csv"],
    ),
    ("codebook", "codebook", ["Open question: codebook size", "Codebook utilisation against codebook size"]),
    ("staging", "staging", ["Open question: staging schedule", "Quality against compute"]),
    (
        "ablations",
        "ablations",
        ["Ablations: ours next to the paper's", "Paper's Table 2: architecture", "not measured here"],
    ),
    ("reconstructions", "reconstructions", ["Original | reconstruction", "Token maps", "latent frame 0"]),
    ("audit", "audit", ["Latest reproducibility audit", "Audit passed", "Compare two runs"]),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(build(tmp_path_factory.mktemp("dashboard-root"), "normal"), tmp_path_factory)


@pytest.fixture(scope="module")
def committed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard on the repository itself: the committed experiments/ (what a fresh clone shows)."""
    yield from _serve(REPO, tmp_path_factory)


def _serve(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"),
        "--server.port", str(port), "--server.fileWatcherType", "none",  # address: .streamlit/config.toml
        "--", "--root", str(root),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "VIDTOK_ROOT"} | {"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "0"}
    log = tmp_path_factory.mktemp("dashboard-log") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not become healthy on {url}:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        # Started without --server.address, from the repository root: the dashboard's own config pins loopback.
        outside = non_loopback_ipv4()
        assert outside is not None, "no non-loopback address to check the bind against"
        assert not accepts_connections(outside, port), f"the dashboard also listens on {outside}:{port}"
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this fixture started, nothing else
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots of every page, in pytest's temporary folder (kept for the last 3 sessions), never the repo."""
    return tmp_path_factory.mktemp("dashboard-screenshots")


def _wait_until_drawn(page: object, first_text: str) -> None:
    page.get_by_text(first_text, exact=False).first.wait_for(state="visible", timeout=30_000)
    # Streamlit draws in several deltas and loads some widgets' code lazily (a grey skeleton until then): wait until
    # its "running" indicator and every skeleton are gone, then give Vega a moment to lay out the charts.
    page.wait_for_function(
        '() => !document.querySelector(\'[data-testid="stStatusWidget"], [data-testid="stSkeleton"]\')',
        timeout=30_000,
        polling=200,
    )
    page.wait_for_timeout(1200)


@pytest.mark.parametrize(("path", "name", "texts"), PAGES, ids=[p[1] for p in PAGES])
def test_page_renders_in_chromium(
    server: str, browser: object, artifacts: Path, path: str, name: str, texts: list[str]
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 2600})
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded")
        _wait_until_drawn(page, texts[0])
        for text in texts:
            assert page.get_by_text(text, exact=False).first.is_visible(), f"{name}: {text!r} not visible"
        assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: an exception box is shown"
        errors = page.locator('[data-testid="stAlertContentError"]')
        assert errors.count() == 0, f"{name}: error shown: {errors.first.inner_text()}"
        if name == "reconstructions":
            video = page.locator("video").first
            video.wait_for(state="attached", timeout=10_000)
            duration = page.wait_for_function(
                "() => { const v = document.querySelector('video'); return v && v.duration > 0 && v.duration; }",
                timeout=15_000,
            ).json_value()
            assert duration == pytest.approx(17 / 3, abs=0.5)  # 17 frames at 3 fps, decoded by Chromium
        page.screenshot(path=str(artifacts / f"{name}.png"))
    finally:
        page.close()


# (url path, study, page title, a text only that page has, how many charts at least): every study's page
COMMITTED_STUDIES = [
    ("frame_rate", "sweep-fps", "Open question: frame rate", "The paper's PSNR at these", 2),  # ours, the paper's
    ("codebook", "sweep-codebook", "Open question: codebook size", "The paper's PSNR at these", 3),  # + utilisation
    ("staging", "sweep-staging", "Open question: staging schedule", "Quality against compute", 2),
    ("ablations", "ablations", "Ablations: ours next to the paper's", "Ours next to the paper's numbers", 1),
]


@pytest.mark.parametrize(
    ("path", "study", "title", "own_text", "charts"), COMMITTED_STUDIES, ids=[s[1] for s in COMMITTED_STUDIES]
)
def test_fresh_clone_shows_the_committed_study(
    committed_server: str,
    browser: object,
    artifacts: Path,
    path: str,
    study: str,
    title: str,
    own_text: str,
    charts: int,
) -> None:
    """The committed results (not fixtures): the answer, every level, the test-split table and the cost, and the
    "Partial study" and "Stale study" warnings exactly when FINDINGS.md has them. Nothing is run: the page reads
    experiments/ as a fresh clone has it."""
    summary = json.loads((REPO / "experiments" / study / "summary.json").read_text())
    levels = [r["level"] for r in summary["levels"]]
    assert summary["trials"]["COMPLETE"] >= len(levels) >= 2, "the committed study has fewer trials than levels"
    partial = coverage(SPECS[study], summary)
    stale = code_currency(read_trials(REPO / "experiments" / study))
    page = browser.new_page(viewport={"width": 1400, "height": 3200})
    try:
        page.goto(f"{committed_server}/{path}", wait_until="domcontentloaded")
        _wait_until_drawn(page, title)
        for text in [
            "Answer at this scale", "Best on val", "Reported on the test split", "paired by seed",
            own_text,
        ]:  # fmt: skip
            assert page.get_by_text(text, exact=False).first.is_visible(), f"{path}: {text!r} not visible"
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator('[data-testid="stVegaLiteChart"]').count() >= charts
        body = page.inner_text("body")
        assert f"Best on val: {summary['best_level']}" in body
        assert ("Partial study" in body) == bool(partial), f"{path}: partial study shown: {'Partial study' in body}"
        assert ("Stale study" in body) == bool(stale), f"{path}: stale study shown: {'Stale study' in body}"
        complete = page.locator('[data-testid="stMetric"]').filter(has_text="complete").first.inner_text()
        assert str(summary["trials"]["COMPLETE"]) in complete
        # The val table and the test table. Data frames load their widget code lazily, and under load they can attach
        # after the skeletons are gone: wait for the second one (a timeout fails the test) rather than count at once.
        page.locator('[data-testid="stDataFrame"]').nth(1).wait_for(state="attached", timeout=30_000)
        page.screenshot(path=str(artifacts / f"committed_{path}.png"), full_page=True)
    finally:
        page.close()


def test_fresh_clone_overview_links_the_committed_findings(
    committed_server: str, browser: object, artifacts: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 3200})
    try:
        page.goto(committed_server, wait_until="domcontentloaded")
        _wait_until_drawn(page, "vidtok overview")
        assert page.get_by_text("experiments/FINDINGS.md", exact=False).first.is_visible()
        page.screenshot(path=str(artifacts / "committed_overview.png"), full_page=True)
    finally:
        page.close()
