"""Whether a run's own LR schedule is still moving its LR, and when it last raised it: the
``lr`` role's watcher.

A loss that flattens while a warm-up or cosine schedule anneals the LR is the schedule doing the
plateau's job already, so the monitor reports a plateau found while the LR is moving and acts on
none; a loss that rises because the schedule *raised* the LR (a warm restart) is the schedule's
doing, so a drift whose onset follows an LR rise within ``rise_window`` steps is dropped. A
logged LR is often rounded, so the LR counts as moving for as long again as the run had run
when it last changed, and for ``span`` samples at least; a job with the hook says so exactly
(its heartbeat), which the monitor prefers. A detector in form (it never finds anything), so a
series builds, runs and persists it like the others. Why: docs/detectors.md, "Do no harm".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lrwatch.protocol.types import Finding, Role


class ScheduleConfig(BaseModel):
    """Knobs of :class:`ScheduleMotion`; ``enabled: false`` lets plateaus act at any time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    span: int = Field(
        default=20,
        ge=1,
        description="the LR is moving if it changed (by more than 1e-6 of itself) within its "
        "last this many samples, or fewer have been seen (too soon to tell a constant LR)",
    )
    rise_window: int = Field(
        default=100,
        ge=0,
        description="a drift whose onset is at most this many steps after the LR rose is the "
        "schedule's (a warm restart), not the data's: dropped (0: never)",
    )


class ScheduleMotion:
    """Says whether the LR series it watches is still moving (``moving``), and whether a loss
    rise from ``step`` on follows the schedule raising the LR (``raised_before``)."""

    kinds: ClassVar[tuple[str, ...]] = ()
    roles: ClassVar[tuple[Role, ...]] = (Role.LR,)
    config_model: ClassVar[type[ScheduleConfig]] = ScheduleConfig

    def __init__(self, config: ScheduleConfig | None = None) -> None:
        cfg = config or ScheduleConfig()
        self.span, self.rise_window = cfg.span, cfg.rise_window
        self._seen = 0
        self._last = math.nan
        self._since_change = 0
        self._rose_at: int | None = None  # the step of the last LR rise
        self._first_step: int | None = None
        self._last_step = 0
        self._changed_at: int | None = None  # the step of the last change

    @property
    def active(self) -> str | None:
        return None

    @property
    def last_step(self) -> int:
        """The step of the last LR seen (-1 before any)."""
        return self._last_step if self._seen else -1

    @property
    def moving(self) -> bool:
        if self._since_change < self.span:
            return True
        if self._changed_at is None or self._first_step is None:
            return False
        return 2 * (self._last_step - self._changed_at) < self._last_step - self._first_step

    def raised_before(self, step: int) -> bool:
        """Whether the LR rose at most ``rise_window`` steps before ``step`` (or after it);
        never with a ``rise_window`` of 0."""
        if self._rose_at is None or self.rise_window == 0:
            return False
        return step - self._rose_at <= self.rise_window

    def update(self, step: int, value: float) -> Finding | None:
        if not math.isfinite(value):
            return None
        if self._first_step is None:
            self._first_step = step
        self._last_step = step
        if self._seen and abs(value - self._last) > 1e-6 * abs(self._last):
            self._since_change = 0
            self._changed_at = step
            if value > self._last:
                self._rose_at = step
        else:
            self._since_change += 1
        self._seen += 1
        self._last = value
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "schedule",
            "version": 3,
            "seen": self._seen,
            "steps": [self._first_step, self._last_step, self._changed_at],
            "last": self._last if math.isfinite(self._last) else None,
            "since_change": self._since_change,
            "rose_at": self._rose_at,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # Version 1 (before rise tracking) loads with no rise seen.
        if state.get("detector") != "schedule" or state.get("version") not in (1, 2, 3):
            raise ValueError(f"not a schedule state: {state.get('detector')!r}")
        self._seen = int(state["seen"])
        last = state["last"]
        self._last = math.nan if last is None else float(last)
        self._since_change = int(state["since_change"])
        rose_at = state.get("rose_at")
        self._rose_at = None if rose_at is None else int(rose_at)
        first, last_step, changed = state.get("steps", [None, 0, None])  # version 3
        self._first_step = None if first is None else int(first)
        self._last_step = int(last_step)
        self._changed_at = None if changed is None else int(changed)
