"""Small robust-statistics helpers shared by the divergence detector (and its gradient-norm twin).

Kept apart so that ``divergence.py`` reads as the rules, not the bookkeeping.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

Q3_SIGMA = 0.6744897501960817  # Q3 - median of a standard normal


def json_float(x: float) -> float | str:
    """Finding details must be strict JSON; non-finite floats become strings."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def plain_median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else s[mid - 1] / 2 + s[mid] / 2


class ReturnedPeaks:
    """The peaks of the excursions a series recently came back from by itself, for ``span``
    ticks after each return (the caller ticks once per value it keeps).

    Why: a loss that has just swung up to some height and come back on its own is telling what
    its normal swings look like (the bursts of a step size at the edge of stability, a
    minibatch loss that turned bimodal after a concept shift, a late Adam run's bumps). The
    next swing to that height is more of the same; a divergence soon goes well past it.
    O(1) amortised per sample: entries leave in the order they came.
    """

    __slots__ = ("_peaks", "_seen", "span")

    def __init__(self, span: int) -> None:
        self.span = span
        self._seen = 0  # samples counted so far
        self._peaks: deque[tuple[int, float]] = deque()  # (sample number of the return, peak)

    def tick(self) -> None:
        """One more value; forget the returns more than ``span`` ticks old."""
        self._seen += 1
        while self._peaks and self._peaks[0][0] <= self._seen - self.span:
            self._peaks.popleft()

    def add(self, peak: float) -> None:
        self._peaks.append((self._seen, peak))

    def highest(self) -> float:
        """The highest recent peak, or -inf when there is none."""
        return max((p for _, p in self._peaks), default=-math.inf)

    def state(self) -> list[float]:
        """``[seen, n_1, peak_1, n_2, peak_2, ...]``: plain JSON numbers."""
        out: list[float] = [self._seen]
        for n, peak in self._peaks:
            out += [n, peak]
        return out

    def load(self, state: Sequence[float]) -> None:
        self._seen = int(state[0]) if state else 0
        pairs = state[1:]
        self._peaks = deque(
            (int(pairs[k]), float(pairs[k + 1])) for k in range(0, len(pairs) - 1, 2)
        )
