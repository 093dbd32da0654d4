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
from lrwatch.detectors.schedule import ScheduleMotion
from lrwatch.registry import PluginProblem
from lrwatch.types import Decision, Finding, Role, Sample

# Which detectors look at which role is decided in lrwatch.detectors.build_detectors (the loss
# gets divergence, oscillation, plateau and drift; the gradient norm an early divergence signal;
# the validation loss an overfit detector). Unrecognised metrics get none.
_MASKED_BY_DIVERGENCE = frozenset({"plateau", "oscillation", "drift"})


@dataclass(slots=True)
class Series:
    """The last point of one metric, and the detectors watching it (if it has a role)."""

    role: Role | None
    detectors: dict[str, Detector]  # by registered name (lrwatch.detectors)
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
            "detectors": {name: d.state_dict() for name, d in self.detectors.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
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
        for name, detector in self.detectors.items():
            if name in saved:  # else a plugin installed since: it starts fresh
                detector.load_state_dict(saved[name])


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
    problems: list[PluginProblem] = field(default_factory=list)  # plugins that failed here


def _is_rewind(series: Series, sample: Sample, source: str, reread: bool) -> bool:
    """Whether a sample at a step already passed means the job went back (see ``observe``)."""
    if sample.step == series.last_step:
        return False
    if sample.wall_time is not None and series.last_wall_time is not None:
        return sample.wall_time > series.last_wall_time
    return not reread and bool(source) and source == series.source


class RunMonitor:
    """Everything lrwatch knows about one run, minus its files and its channel."""

    def __init__(self, run: str, settings: RunSettings, *, assume_landed: bool = False) -> None:
        """``assume_landed``: each LR action is taken to land at once (replay, which has no
        hook to ack it); the daemon leaves it False and learns the factor from the acks."""
        self.run = run
        self.settings = settings
        self.assume_landed = assume_landed
        self.controller = Controller(settings.policy)
        self.control = ControlState()
        self.series: dict[str, Series] = {}
        # Plugins that failed (not installed, bad config, raised), until the next observe()
        # hands them to its caller: the daemon logs and counts them, replay prints them.
        self._problems: list[PluginProblem] = list(self.controller.problems)
        self.controller.problems = self._problems

    def _series(self, metric: str) -> Series:
        series = self.series.get(metric)
        if series is None:
            role = self.settings.roles.role_of(metric)
            detectors = build_detectors(self.settings.detectors, role, self._problems)
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
            found_here: list[Finding] = []
            ran = 0
            try:
                for detector in series.detectors.values():
                    found = detector.update(sample.step, sample.value)
                    ran += 1
                    if found is not None:
                        found_here.append(found)
            except Exception as exc:
                found_here += self._isolate(series, sample, ran, exc)
            if series.role is Role.LOSS:
                due = self.controller.on_step(self.run, sample.step, self.control, can_act=can_act)
                if due is not None:
                    self._record(due)
                    outcome.decisions.append(due)
            if found_here and any(d.active == "divergence" for d in series.detectors.values()):
                # A diverging loss also "stops improving" and may swing: those findings would
                # only repeat the divergence in a weaker voice, and must not win the policy.
                found_here = [f for f in found_here if f.kind not in _MASKED_BY_DIVERGENCE]
            # A plateau while the run's own schedule is still moving its LR (warm-up, cosine)
            # is reported, not acted on: the schedule is already doing the plateau's job.
            lr_series = self.series.get(self.role_metric(Role.LR) or "") if found_here else None
            watch = lr_series.detectors.get("schedule") if lr_series is not None else None
            held = isinstance(watch, ScheduleMotion) and watch.moving
            for found in found_here:
                found = replace(found, run=self.run, metric=sample.metric)
                outcome.findings.append(found)
                if held and found.kind == "plateau":
                    why = "plateau: reported only while the LR schedule is still moving the LR"
                    decision = Decision(self.run, found.step, None, why, found, label=found.kind)
                else:
                    decision = self.controller.decide(found, self.control, can_act=can_act)
                self._record(decision)
                outcome.decisions.append(decision)
        if self._problems:
            outcome.problems, self._problems[:] = list(self._problems), []
        return outcome

    def _record(self, decision: Decision) -> None:
        self.controller.record(self.control, decision)
        action = decision.action
        if self.assume_landed and action is not None and action.factor is not None:
            self.control.lr_scale *= action.factor

    def _isolate(self, series: Series, sample: Sample, ran: int, error: Exception) -> list[Finding]:
        """The detector after the first ``ran`` raised ``error`` on ``sample``: drop it from
        this series (said in ``problems``); run the rest one by one, dropping any that raises."""
        found: list[Finding] = []
        rest = list(series.detectors.items())[ran:]
        self._drop(series, rest[0][0], sample, error)
        for name, detector in rest[1:]:
            try:
                finding = detector.update(sample.step, sample.value)
            except Exception as exc:
                self._drop(series, name, sample, exc)
                continue
            if finding is not None:
                found.append(finding)
        return found

    def _drop(self, series: Series, name: str, sample: Sample, error: Exception) -> None:
        del series.detectors[name]
        message = (
            f"raised {type(error).__name__}: {error} at step {sample.step} of "
            f"{self.run}/{sample.metric}; no longer run on that series"
        )
        self._problems.append(PluginProblem("detectors", name, "run", message))

    def _rewind(self, old: Series, sample: Sample, outcome: Outcome) -> Series:
        """Start ``sample.metric`` over at ``sample.step`` (see ``observe``)."""
        outcome.rewinds.append(Rewind(sample.metric, old.last_step, sample.step))
        del self.series[sample.metric]
        series = self._series(sample.metric)
        series.out_of_order, series.rewinds = old.out_of_order, old.rewinds + 1
        self.control.forget_from(sample.step)
        return series

    def active_kinds(self) -> set[str]:
        return {k for s in self.series.values() for d in s.detectors.values() if (k := d.active)}

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
