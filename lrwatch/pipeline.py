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

# Which detectors look at which role. A rising validation loss is overfitting, not a training
# divergence, so the validation series only gets the plateau detector for now.
_ANALYSED_ROLES = (Role.LOSS,)
_MASKED_BY_DIVERGENCE = frozenset({"plateau", "oscillation"})


@dataclass(slots=True)
class Series:
    """The last point of one metric, and the detectors watching it (if it has a role)."""

    role: Role | None
    detectors: list[Detector]
    last_step: int = -1
    last_value: float = math.nan
    out_of_order: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "last_value": self.last_value,
            "out_of_order": self.out_of_order,
            "detectors": [d.state_dict() for d in self.detectors],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.last_value = float(state["last_value"])
        self.out_of_order = int(state["out_of_order"])
        for detector, sub in zip(self.detectors, state["detectors"], strict=True):
            detector.load_state_dict(sub)


@dataclass(slots=True)
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


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
            detectors = build_detectors(self.settings.detectors) if role in _ANALYSED_ROLES else []
            series = self.series[metric] = Series(role, detectors)
        return series

    def observe(self, samples: Iterable[Sample], *, can_act: str | None) -> Outcome:
        """Feed new samples (any metrics, file order) through the detectors and the policy.

        A run's logs may be several files; a step at or before the last one seen for the same
        metric has been seen already (a second file repeating it) and is skipped. Samples of one
        metric from one file arrive in step order, so this merges files by step.
        """
        outcome = Outcome()
        for sample in samples:
            series = self._series(sample.metric)
            if sample.step <= series.last_step:
                series.out_of_order += 1
                continue
            series.last_step = sample.step
            series.last_value = sample.value
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
