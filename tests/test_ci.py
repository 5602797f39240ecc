"""Under CI=true nothing that needs a real component (Chromium, diffusers, a Prefect API, the registries, PostgreSQL)
can skip silently (tests/conftest.py, CiGuard): a marked test's skip is a failure, and so is any skip at collection
time (a module-level skip or importorskip, a conftest that skips its folder), so a missing install step never passes
as green. Without CI they stay skips.

.venv/bin/pytest tests/test_ci.py -q
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import REPO

pytest_plugins = ["pytester"]

IN_TESTS = """
import pytest

@pytest.mark.browser
def test_needs_chromium():
    pytest.skip("no chromium here")

def test_plain_skip():
    pytest.skip("an ordinary skip stays a skip")

@pytest.mark.interop
@pytest.mark.xfail(reason="a known divergence", strict=True)
def test_known_divergence():
    assert False
"""

# Each skips before any of its tests exists, the way tests/dashboard/test_dashboard_browser.py and
# tests/model/test_interop.py do when Chromium, Playwright or diffusers is missing.
AT_COLLECTION = {
    "test_module_skip.py": """
import pytest

pytest.skip("no chromium at /usr/bin/chromium", allow_module_level=True)

def test_page():
    pass
""",
    "test_module_importorskip.py": """
import pytest

peer = pytest.importorskip("vidtok_no_such_package", reason="the interop extra is not installed")
pytestmark = pytest.mark.interop

def test_parity():
    pass
""",
    "skipped_folder/conftest.py": """
import pytest

pytest.skip("this folder needs a GPU", allow_module_level=True)
""",
    "skipped_folder/test_in_folder.py": """
def test_in_folder():
    pass
""",
    "test_plain.py": """
def test_runs():
    pass
""",
}


def _project(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    """The repository's tests/conftest.py (with tests/helpers.py, which it imports) at the root of a probe project."""
    shutil.copy(REPO / "tests" / "conftest.py", pytester.path / "conftest.py")
    (pytester.path / "tests").mkdir()
    shutil.copy(REPO / "tests" / "helpers.py", pytester.path / "tests" / "helpers.py")
    (pytester.path / "tests" / "__init__.py").write_text("")
    markers = "".join(f"    {m}: x\n" for m in ("browser", "interop", "prefect", "registry", "postgres"))
    pytester.makeini(f"[pytest]\nmarkers =\n{markers}")
    for name, text in files.items():
        (pytester.path / name).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / name).write_text(text)


@pytest.mark.parametrize(
    ("ci", "outcomes"), [("true", {"failed": 1, "skipped": 1, "xfailed": 1}), ("", {"skipped": 2, "xfailed": 1})]
)
def test_required_components_cannot_skip_in_ci(pytester: pytest.Pytester, monkeypatch, ci, outcomes):
    _project(pytester, {"test_probe.py": IN_TESTS})
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly")
    result.assert_outcomes(**outcomes)
    if ci:
        result.stdout.fnmatch_lines(["*skipped under CI=true, but a browser test must run in CI*no chromium here*"])


def test_a_skip_at_collection_fails_the_run_in_ci(pytester: pytest.Pytester, monkeypatch):
    _project(pytester, AT_COLLECTION)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # collection errors: no test runs, the run fails
    result.assert_outcomes(errors=3)  # and test_plain.py's test did not run
    result.stdout.fnmatch_lines_random(
        [
            "*test_module_skip.py skipped at collection under CI=true*no chromium at /usr/bin/chromium*",
            "*test_module_importorskip.py skipped at collection under CI=true*the interop extra is not installed*",
            "*skipped_folder skipped at collection under CI=true*skipped_folder/conftest.py:4: this folder needs a GPU",
        ]
    )
    # --collect-only (what a CI job may run first) fails the same way.
    collected = pytester.runpytest_subprocess("-q", "--collect-only", "-p", "no:randomly")
    assert collected.ret == pytest.ExitCode.INTERRUPTED
    collected.assert_outcomes(errors=3)


def test_a_skip_at_collection_stays_a_skip_without_ci(pytester: pytest.Pytester, monkeypatch):
    _project(pytester, AT_COLLECTION)
    monkeypatch.setenv("CI", "")
    result = pytester.runpytest_subprocess("-q", "-rs", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=3, passed=1)
    result.stdout.fnmatch_lines_random(
        ["*no chromium at /usr/bin/chromium*", "*the interop extra is not installed*", "*this folder needs a GPU*"]
    )
