"""Under CI=true a test that needs a real component (Chromium, diffusers, a Prefect API, the registries) cannot
skip: its skip is reported as a failure (tests/conftest.py), so a missing install step never passes as green.

.venv/bin/pytest tests/test_ci.py -q
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import REPO

pytest_plugins = ["pytester"]

PROBE = """
import pytest

@pytest.mark.browser
def test_needs_chromium():
    pytest.skip("no chromium here")

def test_plain_skip():
    pytest.skip("an ordinary skip stays a skip")
"""


@pytest.mark.parametrize(("ci", "outcomes"), [("true", {"failed": 1, "skipped": 1}), ("", {"skipped": 2})])
def test_required_components_cannot_skip_in_ci(pytester: pytest.Pytester, monkeypatch, ci, outcomes):
    shutil.copy(REPO / "tests" / "conftest.py", pytester.path / "conftest.py")
    (pytester.path / "tests").mkdir()
    shutil.copy(REPO / "tests" / "helpers.py", pytester.path / "tests" / "helpers.py")
    (pytester.path / "tests" / "__init__.py").write_text("")
    pytester.makeini("[pytest]\nmarkers =\n    browser: x\n    interop: x\n    prefect: x\n    registry: x\n")
    pytester.makepyfile(test_probe=PROBE)
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly")
    result.assert_outcomes(**outcomes)
    if ci:
        result.stdout.fnmatch_lines(["*skipped under CI=true, but a browser test must run in CI*no chromium here*"])
