"""Fixtures the integration tests share."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.integration import actuation_job as job


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (jobs, daemons): killed at its end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        job.stop(proc)
