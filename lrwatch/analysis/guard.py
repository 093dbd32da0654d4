"""Running a series' detectors so that one plugin's failure stays its own.

A detector that raises, or returns what no later stage can use (not a ``Finding``, a detail
that is not JSON), is dropped from that series and said in ``problems`` (the daemon logs and
counts them, replay prints them); the other detectors on the series go on. Built-in detectors
never trip this: it is the fence around third-party code. Pure: no I/O, no clocks.
"""

from __future__ import annotations

import json
from dataclasses import replace

from lrwatch.detectors.base import Detector
from lrwatch.plugins import PluginProblem
from lrwatch.protocol.types import Finding, Sample, Severity


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class DetectorGuard:
    """The detectors of one run, each series' dict of them (by registered name) in turn."""

    def __init__(self, run: str, problems: list[PluginProblem]) -> None:
        self.run = run
        self.problems = problems  # shared with the monitor, which hands them on

    def update(self, detectors: dict[str, Detector], sample: Sample) -> list[Finding]:
        """What ``detectors`` find in ``sample``, in their order."""
        found: list[tuple[str, Finding]] = []  # (detector, what it found)
        ran, step, value = 0, sample.step, sample.value
        try:
            for name, detector in detectors.items():
                finding = detector.update(step, value)
                ran += 1
                if finding is not None:
                    found.append((name, finding))
        except Exception as exc:
            found += self._isolate(detectors, sample, ran, exc)
        return self._checked(detectors, sample, found) if found else []

    def active(self, detectors: dict[str, Detector]) -> list[str]:
        """The kinds ``detectors`` say are ongoing; a detector whose ``active`` raises is
        dropped."""
        kinds = []
        for name, detector in list(detectors.items()):
            try:
                kind = detector.active
            except Exception as exc:
                self._drop(detectors, name, "", f"active raised {describe(exc)}")
                continue
            if kind:
                kinds.append(kind)
        return kinds

    def _isolate(
        self, detectors: dict[str, Detector], sample: Sample, ran: int, error: Exception
    ) -> list[tuple[str, Finding]]:
        """The detector after the first ``ran`` raised ``error`` on ``sample``: drop it; run the
        rest one by one, dropping any that raises."""
        found: list[tuple[str, Finding]] = []
        rest = list(detectors.items())[ran:]
        why = f"raised {describe(error)} at step {sample.step}"
        self._drop(detectors, rest[0][0], sample.metric, why)
        for name, detector in rest[1:]:
            try:
                finding = detector.update(sample.step, sample.value)
            except Exception as exc:
                why = f"raised {describe(exc)} at step {sample.step}"
                self._drop(detectors, name, sample.metric, why)
                continue
            if finding is not None:
                found.append((name, finding))
        return found

    def _checked(
        self, detectors: dict[str, Detector], sample: Sample, found: list[tuple[str, Finding]]
    ) -> list[Finding]:
        """What the detectors found, minus what no later stage could use: its detector is
        dropped."""
        good = []
        for name, finding in found:
            try:
                if not isinstance(finding, Finding):
                    raise TypeError(f"returned {type(finding).__name__}, not a Finding")
                json.dumps(dict(finding.detail))
                if not isinstance(finding.severity, Severity):
                    finding = replace(finding, severity=Severity(finding.severity))
            except Exception as exc:
                if name in detectors:
                    why = f"at step {sample.step}: {describe(exc)}"
                    self._drop(detectors, name, sample.metric, why)
                continue
            good.append(finding)
        return good

    def _drop(self, detectors: dict[str, Detector], name: str, metric: str, why: str) -> None:
        del detectors[name]
        where = f"{self.run}/{metric}" if metric else self.run
        message = f"{why} on {where}; no longer run on that series"
        self.problems.append(PluginProblem("detectors", name, "run", message))
