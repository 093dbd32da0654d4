"""The running level of the divergence detector: a median and a one-sided spread.

*Level* is the median of the last ``window`` accepted values: a median ignores the occasional
bad batch that would drag a mean (or an EMA) upwards, and it is exact under the sliding window
(a sorted list kept with ``bisect``). *Spread* is ``(Q3 - median) / 0.6745``, the upper
quartile's distance from the median rescaled to a standard deviation: a rise is the only
departure the detector tests, so the upper half's spread is the one that matters. Both are read
in linear space; why, with the figures: docs/detectors.md, "Divergence".
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable

from lrwatch.detectors._robust import Q3_SIGMA, run_together, sorted_median

NOISE_MIN = 20  # accepted values before the window's log spread is trusted
SCALE_FLOOR = 0.01  # the spread is at least 1 % of the level: flat (quantised) losses
_TINY = 1e-300  # ... and not zero when the level is


class RunningLevel:
    """The last ``window`` accepted values, oldest first (``order``) and sorted (``sorted``)."""

    __slots__ = ("order", "sorted", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.order: deque[float] = deque()
        self.sorted: list[float] = []

    def accept(self, value: float) -> None:
        """One more value; the oldest leaves once there are ``window``. O(log w) comparisons
        plus a memmove of at most ``window`` pointers."""
        self.order.append(value)
        bisect.insort(self.sorted, value)
        if len(self.order) > self.window:
            old = self.order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]

    def clear(self) -> None:
        self.order.clear()
        self.sorted.clear()

    def load(self, values: Iterable[float]) -> None:
        """Start again from ``values`` (the last ``window`` of them)."""
        self.order = deque(float(v) for v in list(values)[-self.window :])
        self.sorted = sorted(self.order)

    def quantile(self, p: float) -> float:
        s = self.sorted
        pos = p * (len(s) - 1)
        lo = int(pos)
        frac = pos - lo
        if frac == 0.0 or lo + 1 >= len(s):
            return s[lo]
        return s[lo] * (1.0 - frac) + s[lo + 1] * frac  # weights sum to 1: no overflow

    def median(self) -> float:
        """``quantile(0.5)``, the same arithmetic without its generality: it runs at every value."""
        return sorted_median(self.sorted)

    def spread(self) -> float:
        m = self.median()
        return max((self.quantile(0.75) - m) / Q3_SIGMA, SCALE_FLOOR * abs(m), _TINY)

    def upper_log_spread(self) -> float:
        """The upper-quartile spread of the log values (a positive level assumed); quantiles
        commute with the log, so the log-quartiles are the quartiles' logs. One-sided, as the
        running-level rules' z-scores are (the anchored rules' ``_anchor.log_spread`` is
        two-sided)."""
        m, q3 = self.median(), self.quantile(0.75)
        return max(math.log(q3 / m) / Q3_SIGMA, math.log1p(SCALE_FLOOR))

    def run_together(self, fewest: int = NOISE_MIN) -> float:
        """``run_together`` of the log values (1 with fewer than ``fewest``, or one not
        positive; a pass over the window: asked only of a value already far up)."""
        if len(self.order) < fewest or not min(self.order) > 0:
            return 1.0
        return run_together([math.log(v) for v in self.order])
