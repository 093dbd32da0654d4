"""Shared pieces of the deploy tests: where the assets are, and the real tools that check them.

Each test that needs an external tool (promtool, systemd-analyze, kubernetes-validate) skips
with the tool's name when it is not installed; `.ci/run` installs them, so in CI they all run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RUNBOOKS = REPO / "docs" / "runbooks.md"
TOOL_TIMEOUT = 30


def tool(name: str, why: str) -> str:
    """The path of an executable (the venv's bin first), or skip the test saying what is missing."""
    beside_python = Path(sys.executable).parent / name
    path = str(beside_python) if beside_python.exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed ({why}); .ci/run installs it")
    return path
