"""One run's analysis: samples in, findings and decisions out.

The daemon and ``lrwatch replay`` both drive this object, which is what makes replay an honest
rehearsal of the daemon: same role mapping, same detectors, same policy, same order. It is pure
(no I/O, no clocks), and its whole state round-trips through ``state_dict()`` so the daemon can
persist it in the same transaction as the tail offsets that produced it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lrwatch.config import RunSettings
from lrwatch.controller import Controller, ControlState
from lrwatch.detectors import build_detectors
from lrwatch.detectors.base import Detector
from lrwatch.types import Decision, Finding, Role, Sample

# Which detectors look at which role is decided in lrwatch.detectors.build_detectors (the loss
# gets divergence, oscillation, plateau and drift; the gradient norm an early divergence signal;
# the validation loss an overfit detector). Unrecognised metrics get none.
_MASKED_BY_DIVERGENCE = frozenset({"plateau", "oscillation", "drift"})


@dataclass(slots=True)
class Series:
    """The last point of one metric, and the detectors watching it (if it has a role)."""

    role: Role | None
    detectors: list[Detector]
    last_step: int = -1
    last_value: float = math.nan
    out_of_order: int = 0
    # Where the last step came from, to tell a restart from a repeat (see RunMonitor.observe).
    last_wall_time: float | None = None
    source: str = ""
    rewinds: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "last_value": self.last_value,
            "out_of_order": self.out_of_order,
            "last_wall_time": self.last_wall_time,
            "source": self.source,
            "rewinds": self.rewinds,
            "detectors": [d.state_dict() for d in self.detectors],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.last_value = float(state["last_value"])
        self.out_of_order = int(state["out_of_order"])
        wall_time = state.get("last_wall_time")
        self.last_wall_time = None if wall_time is None else float(wall_time)
        self.source = str(state.get("source", ""))
        self.rewinds = int(state.get("rewinds", 0))
        for detector, sub in zip(self.detectors, state["detectors"], strict=True):
            detector.load_state_dict(sub)


@dataclass(frozen=True, slots=True)
class Rewind:
    """A series that went back in time: the job restarted from a checkpoint."""

    metric: str
    from_step: int
    to_step: int


@dataclass(slots=True)
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    rewinds: list[Rewind] = field(default_factory=list)


def _is_rewind(series: Series, sample: Sample, source: str, reread: bool) -> bool:
    """Whether a sample at a step already passed means the job went back (see ``observe``)."""
    if sample.step == series.last_step:
        return False
    if sample.wall_time is not None and series.last_wall_time is not None:
        return sample.wall_time > series.last_wall_time
    return not reread and bool(source) and source == series.source


class RunMonitor:
    """Everything lrwatch knows about one run, minus its files and its channel."""

    def __init__(self, run: str, settings: RunSettings) -> None:
        self.run = run
        self.settings = settings
        self.controller = Controller(settings.policy)
        self.control = ControlState()
        self.series: dict[str, Series] = {}

    def _series(self, metric: str) -> Series:
        series = self.series.get(metric)
        if series is None:
            role = self.settings.roles.role_of(metric)
            detectors = build_detectors(self.settings.detectors, role)
            series = self.series[metric] = Series(role, detectors)
        return series

    def observe(
        self,
        samples: Iterable[Sample],
        *,
        can_act: str | None,
        source: str = "",
        reread: bool = False,
    ) -> Outcome:
        """Feed new samples (any metrics, in file order) through the detectors and the policy.

        ``source`` names the file the samples come from; ``reread`` says that file is being read
        again from its start (it was rotated, rewritten or replaced). A run's logs may be several
        files; each series keeps its last step, the wall time it was written at and its file.
        A sample at a step already passed is one of two things:

        - a **rewind** when the job went back in time, i.e. restarted from a checkpoint: the
          sample was written *later* than the series' last one (when both carry wall times,
          as TensorBoard events and the hook's JSONL do), or else it was *appended* to the very
          file that wrote the last one. The series starts over from that step: its detectors
          are rebuilt (their windows describe a future that was abandoned, and would read the
          older, higher loss as a divergence or the lost progress as a plateau; they warm up
          again as on a new run, a non-finite value still being caught at once), and the
          policy forgets its actions at or after that step (cooldown and rate limit count
          steps of the timeline the job is now on).
        - a **repeat** otherwise, and always at the same step: another file logging the same
          metric, or a file read again from its start. It is skipped (``out_of_order``).

        Without wall times, a job that truncates its log and starts over looks like a file
        read again, so its steps count only from past the last one seen.
        """
        outcome = Outcome()
        for sample in samples:
            series = self._series(sample.metric)
            if sample.step <= series.last_step:
                if not _is_rewind(series, sample, source, reread):
                    series.out_of_order += 1
                    continue
                series = self._rewind(series, sample, outcome)
            series.last_step = sample.step
            series.last_value = sample.value
            series.last_wall_time = sample.wall_time
            series.source = source
            found_here = [f for d in series.detectors if (f := d.update(sample.step, sample.value))]
            if found_here and any(d.active == "divergence" for d in series.detectors):
                # A diverging loss also "stops improving" and may swing: those findings would
                # only repeat the divergence in a weaker voice, and must not win the policy.
                found_here = [f for f in found_here if f.kind not in _MASKED_BY_DIVERGENCE]
            for found in found_here:
                found = replace(found, run=self.run, metric=sample.metric)
                outcome.findings.append(found)
                decision = self.controller.decide(found, self.control, can_act=can_act)
                self.controller.record(self.control, decision)
                outcome.decisions.append(decision)
        return outcome

    def _rewind(self, old: Series, sample: Sample, outcome: Outcome) -> Series:
        """Start ``sample.metric`` over at ``sample.step`` (see ``observe``)."""
        outcome.rewinds.append(Rewind(sample.metric, old.last_step, sample.step))
        del self.series[sample.metric]
        series = self._series(sample.metric)
        series.out_of_order, series.rewinds = old.out_of_order, old.rewinds + 1
        self.control.forget_from(sample.step)
        return series

    def active_kinds(self) -> set[str]:
        return {k for s in self.series.values() for d in s.detectors if (k := d.active)}

    def role_metric(self, role: Role) -> str | None:
        """The metric playing ``role`` in this run (the first configured name it logs)."""
        for name in getattr(self.settings.roles, role.value):
            if name in self.series:
                return str(name)
        return None

    def last_step(self) -> int:
        return max((s.last_step for s in self.series.values()), default=-1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "control": self.control.state_dict(),
            "series": {name: s.state_dict() for name, s in self.series.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.control.load_state_dict(state["control"])
        for name, sub in state["series"].items():
            self._series(name).load_state_dict(sub)
