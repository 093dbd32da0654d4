"""Small robust-statistics helpers shared by the divergence detector (and its gradient-norm twin).

Kept apart so that ``divergence.py`` reads as the rules, not the bookkeeping.
"""

from __future__ import annotations

import itertools
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
    return sorted_median(sorted(xs))


def sorted_median(s: Sequence[float]) -> float:
    """The median of ``s``, already sorted (a running window kept in order needs no sort)."""
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else s[mid - 1] / 2 + s[mid] / 2


MATERIAL = 0.05  # the share of its progress a rise short of the run's start must undo


def undoes_progress(start: float, low: float, level: float) -> bool:
    """Whether a rise from ``low`` to ``level`` (logs) undoes ``MATERIAL`` of the progress from
    ``start`` down to ``low``, in the loss's own units: a loss that fell from 1 to 1e-4 and
    bounces to 1e-2 has lost 1 % of it, not 50 %. True when there was no progress to undo (or
    no start). The anchored rules and the held rule ask it of a level below the start."""
    if not math.isfinite(start) or start <= low:
        return True
    lowest, first = math.exp(low), math.exp(min(start, 700.0))
    return math.exp(min(level, 700.0)) - lowest >= MATERIAL * (first - lowest)


def line_residuals(values: Sequence[float]) -> list[float]:
    """What a least-squares straight line through ``values`` (at 0, 1, 2, ...) leaves."""
    n = len(values)
    if n < 3:
        return [0.0] * n
    mean_x, mean_v = (n - 1) / 2.0, sum(values) / n
    sxx = n * (n * n - 1) / 12.0
    slope = sum((i - mean_x) * (v - mean_v) for i, v in enumerate(values)) / sxx
    return [v - mean_v - slope * (i - mean_x) for i, v in enumerate(values)]


def run_together(values: Sequence[float]) -> float:
    """How much less n of ``values`` are worth than n independent ones, as a factor on a
    standard error: sqrt((1 + phi) / (1 - phi)), phi their AR(1) coefficient, clipped to
    [0, 0.95] (the effective sample size of an AR(1) series). phi is read off the steps
    between values, whose lag-1 autocorrelation is -(1 - phi) / 2: a smooth trend under the
    noise barely moves it, as it would the autocorrelation of the values themselves. 1 for
    independent noise; about 6 for a loss that wanders with phi 0.95 (smoothed, or an RL
    loss), whose every stretch up is the same swing, not new evidence."""
    steps = [b - a for a, b in itertools.pairwise(values)]
    if len(steps) < 3:
        return 1.0
    rho = lag_autocorr(steps, 1)
    if math.isnan(rho):
        return 1.0
    phi = min(max(1.0 + 2.0 * rho, 0.0), 0.95)
    return math.sqrt((1.0 + phi) / (1.0 - phi))


def lag_autocorr(values: Sequence[float], lag: int) -> float:
    """Centred autocorrelation of ``values`` at ``lag`` (nan when they are all equal); the
    centring removes the trend of a converging loss from its differences."""
    n = len(values)
    mean = sum(values) / n
    c = [v - mean for v in values]
    denom = sum(x * x for x in c)
    if not denom > 0:
        return math.nan
    return sum(c[i] * c[i - lag] for i in range(lag, n)) / denom


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

    @property
    def seen(self) -> int:
        """Ticks so far: the caller's count of the values it kept."""
        return self._seen

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
