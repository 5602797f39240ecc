"""`make run` works from a virtual environment that was never activated (DVC's stages call `vidtok ...`).

pytest tests/test_files.py -q
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from vidtok._files import tool_env


def test_stage_commands_are_found_without_an_activated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # what a fresh shell has: no .venv/bin
    assert shutil.which("vidtok") is None
    env = tool_env()
    assert env["DVC_NO_ANALYTICS"] == "1"
    result = subprocess.run(["bash", "-c", "vidtok --help"], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "usage: vidtok" in result.stdout
