"""One metric of a run: its last point, the detectors watching it, and whether a sample at a
step already passed is a restart of the job (a rewind) or a repeat.

Pure: no I/O, no clocks; the series' state round-trips through ``state_dict()`` with its
detectors'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lrwatch.detectors.base import Detector
from lrwatch.protocol.types import Role, Sample


@dataclass(slots=True)
class Series:
    """The last point of one metric, and the detectors watching it (if it has a role)."""

    role: Role | None
    detectors: dict[str, Detector]  # by registered name (lrwatch.detectors)
    last_step: int = -1
    last_value: float = math.nan
    out_of_order: int = 0
    # Where the last step came from, to tell a restart from a repeat (see is_rewind).
    last_wall_time: float | None = None
    source: str = ""
    rewinds: int = 0

    def advance(self, sample: Sample, source: str) -> None:
        """``sample`` (from the file ``source``) is the series' new last point."""
        self.last_step = sample.step
        self.last_value = sample.value
        self.last_wall_time = sample.wall_time
        self.source = source

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "last_value": self.last_value,
            "out_of_order": self.out_of_order,
            "last_wall_time": self.last_wall_time,
            "source": self.source,
            "rewinds": self.rewinds,
            "detectors": {name: d.state_dict() for name, d in self.detectors.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> list[tuple[str, Exception]]:
        """Restore ``state_dict()``; the detectors that could not take theirs, and why."""
        self.last_step = int(state["last_step"])
        self.last_value = float(state["last_value"])
        self.out_of_order = int(state["out_of_order"])
        wall_time = state.get("last_wall_time")
        self.last_wall_time = None if wall_time is None else float(wall_time)
        self.source = str(state.get("source", ""))
        self.rewinds = int(state.get("rewinds", 0))
        saved = state["detectors"]
        if isinstance(saved, list):  # lrwatch 0.1.0 saved them as a list in building order
            saved = dict(zip(self.detectors, saved, strict=False))
        failed: list[tuple[str, Exception]] = []
        for name, detector in self.detectors.items():
            if name in saved:  # else a plugin installed since: it starts fresh
                try:
                    detector.load_state_dict(saved[name])
                except Exception as exc:
                    failed.append((name, exc))
        return failed


@dataclass(frozen=True, slots=True)
class Rewind:
    """A series that went back in time: the job restarted from a checkpoint."""

    metric: str
    from_step: int
    to_step: int


def is_rewind(series: Series, sample: Sample, source: str, reread: bool) -> bool:
    """Whether ``sample``, at a step ``series`` already passed, means the job went back in time.

    ``source`` names the file the sample comes from; ``reread`` says that file is being read
    again from its start (rotated, rewritten or replaced). A sample at a step already passed is:

    - a **rewind** when the job went back in time, i.e. restarted from a checkpoint: the
      sample was written *later* than the series' last one (when both carry wall times, as
      TensorBoard events and the hook's JSONL do), or else it was *appended* to the very file
      that wrote the last one. The monitor starts the series over from that step: its
      detectors are rebuilt (their windows describe an abandoned future, and would read the
      older, higher loss as a divergence or the lost progress as a plateau), and the policy
      forgets its actions at or after that step (cooldowns count steps of the job's timeline).
    - a **repeat** otherwise, and always at the same step: another file logging the same
      metric, or a file read again from its start. It is skipped (``out_of_order``).

    Without wall times, a job that truncates its log and starts over looks like a file read
    again, so its steps count only from past the last one seen.
    """
    if sample.step == series.last_step:
        return False
    if sample.wall_time is not None and series.last_wall_time is not None:
        return sample.wall_time > series.last_wall_time
    return not reread and bool(source) and source == series.source
