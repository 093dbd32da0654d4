"""The stall detector the daemon feeds its clock: silent logs with a live hook are a stall, once
per episode; silent logs without one are a finished run, no finding."""

from __future__ import annotations

import json

import pytest

from lrwatch.detectors.stall import StallDetector
from lrwatch.protocol.types import Severity


def test_a_stall_is_found_once_per_episode() -> None:
    d = StallDetector(60)
    assert d.check(now=100, last_sample_at=50, hook_alive=True) is None  # 50 s: not yet
    found = d.check(now=111, last_sample_at=50, hook_alive=True)
    assert found is not None and found.kind == "stall" and found.severity is Severity.WARNING
    assert found.detail["silent_seconds"] == 61 and "heartbeats" in found.reason
    assert d.active == "stall"
    assert d.check(now=500, last_sample_at=50, hook_alive=True) is None  # the same episode
    assert d.check(now=501, last_sample_at=500, hook_alive=True) is None  # data again: over
    assert d.active is None
    assert d.check(now=600, last_sample_at=500, hook_alive=True) is not None  # a new episode


def test_silence_without_a_live_hook_is_a_finished_run() -> None:
    d = StallDetector(60)
    assert d.check(now=1000, last_sample_at=0, hook_alive=False) is None
    assert d.active is None
    assert d.check(now=1000, last_sample_at=0, hook_alive=True) is not None
    assert d.check(now=1001, last_sample_at=0, hook_alive=False) is None  # the job went away
    assert d.active is None


def test_state_round_trip_keeps_an_episode_reported_once() -> None:
    d = StallDetector(60)
    assert d.check(now=200, last_sample_at=0, hook_alive=True) is not None
    restored = StallDetector(60)
    restored.load_state_dict(json.loads(json.dumps(d.state_dict())))
    assert restored.active == "stall"
    assert restored.check(now=300, last_sample_at=0, hook_alive=True) is None
    with pytest.raises(ValueError, match="stall detector"):
        restored.load_state_dict({"detector": "plateau", "version": 1})


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "60"])
def test_bad_threshold_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="stale_after_seconds"):
        StallDetector(bad)  # type: ignore[arg-type]
