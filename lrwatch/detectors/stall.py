"""Stall: a run whose job is alive but whose logs stopped.

Unlike the other detectors this one watches no series: silence has no samples to look at. It is
fed the daemon's clock instead, ``check(now, last_sample_at, hook_alive)``, and stays pure — no
clock of its own, no I/O — so it is tested with plain numbers and persisted like the others.

Why the hook's heartbeat decides: a run that stopped logging either finished (or died) or hung.
From the logs alone the two look the same. The hook heartbeats from ``hook.step()``, i.e. from
the training loop itself, so "heartbeat fresh, logs silent" is a job that is stepping but whose
logging is stuck (a full disk, a dead logger thread, a hung collective on the logging rank) —
a stall worth a warning — while "both silent" is a run that ended, which is no finding at all.
The Prometheus rule ``LRWatchRunStalled`` makes the same distinction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from lrwatch.protocol.types import Finding, Severity


class StallDetector:
    """One run's stall episodes: a finding at the start of each, ``active`` while it lasts.

    The finding's ``step`` is -1 and its ``run`` empty: the detector knows neither, the daemon
    fills them in (the run's last step), as the pipeline does for series detectors.
    """

    kinds: ClassVar[tuple[str, ...]] = ("stall",)

    def __init__(self, stale_after_seconds: float) -> None:
        if not (
            isinstance(stale_after_seconds, int | float) and 0 < stale_after_seconds < math.inf
        ):
            raise ValueError(
                f"stale_after_seconds must be a finite number > 0, got {stale_after_seconds!r}"
            )
        self.stale_after_seconds = float(stale_after_seconds)
        self._stalled = False

    @property
    def active(self) -> str | None:
        return "stall" if self._stalled else None

    def check(self, now: float, last_sample_at: float, hook_alive: bool) -> Finding | None:
        """A ``stall`` finding when the run has just become stalled, else None."""
        silent = now - last_sample_at
        stalled = hook_alive and silent > self.stale_after_seconds
        if stalled == self._stalled:
            return None
        self._stalled = stalled
        if not stalled:
            return None  # data flows again, or the job is gone: the episode ends
        return Finding(
            kind="stall",
            severity=Severity.WARNING,
            step=-1,
            reason=(
                f"no new log data for {silent:.0f} s while the hook heartbeats: the job is "
                "stepping but its logging is stuck"
            ),
            detail={
                "silent_seconds": round(silent, 3),
                "stale_after_seconds": self.stale_after_seconds,
                "last_sample_at": last_sample_at,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {"detector": "stall", "version": 1, "stalled": self._stalled}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("detector"), state.get("version")) != ("stall", 1):
            found = (state.get("detector"), state.get("version"))
            raise ValueError(f"not a stall detector state (version 1): {found!r}")
        self._stalled = bool(state["stalled"])
