"""The environment for DVC and the commands dvc.yaml runs (`vidtok train ...`) as subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def tool_env() -> dict[str, str]:
    """os.environ with DVC analytics off and this interpreter's bin folder first on PATH.

    `make run` calls `.venv/bin/vidtok` without activating the virtual environment; the stages DVC starts run
    `vidtok ...` through the shell, which finds it only when the environment's bin folder is on PATH.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        path = os.pathsep.join([bin_dir, path]) if path else bin_dir
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path}
