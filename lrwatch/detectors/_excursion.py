"""An excursion of the divergence detector: a stretch of values far above the running level.

Its record (what ``state_dict`` persists) and the two tests of its shape that tell a step size
past the stability edge, which keeps pushing the loss up, from a concept shift or a bad batch,
which throws it up once and then holds or decays (docs/detectors.md, "Divergence").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lrwatch.detectors._robust import plain_median


@dataclass(slots=True)
class Excursion:
    onset: int
    length: int
    strong: int  # steps whose samples cleared the full thresholds, not just the hysteresis band
    rises: int  # successive samples each far above the one before
    prev: float
    peak: float
    peak_z: float
    values: list[float]  # its samples (at most ``window``: then it is a new level)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Excursion:
        """The inverse of ``dataclasses.asdict``, checking the types."""
        return cls(
            onset=int(state["onset"]),
            length=int(state["length"]),
            strong=int(state["strong"]),
            rises=int(state["rises"]),
            prev=float(state["prev"]),
            peak=float(state["peak"]),
            peak_z=float(state["peak_z"]),
            values=[float(v) for v in state["values"]],
        )

    def climbing(self, climb_ratio: float, confirm_z: float, spread: float) -> bool:
        """Still climbing: the median of the later half ``climb_ratio`` above that of the
        earlier half, significantly so given the window's log ``spread``, and the peak in the
        later half (a loss coming back from a huge bad batch also has a higher later half)."""
        v = self.values
        half = len(v) // 2
        if half == 0:
            return False
        early, late = plain_median(v[:half]), plain_median(v[half:])
        if not late >= climb_ratio * early or max(v[:half]) > max(v[half:]):
            return False
        # The two medians' log difference has a standard error of about
        # 1.25 log-spread * sqrt(1/n1 + 1/n2).
        se = 1.25 * spread * math.sqrt(1.0 / half + 1.0 / (len(v) - half))
        return math.log(late / early) >= confirm_z * se

    def decaying(self, level: float, patience: int) -> bool:
        """Falling back: the last three samples fall, or the last ``patience`` sit below the
        geometric midpoint between the level and the peak."""
        v = self.values
        if len(v) >= 3 and v[-1] < v[-2] < v[-3]:
            return True
        recent = plain_median(v[-patience:])
        return recent * recent < self.peak * level
