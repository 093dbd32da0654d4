"""Two divergence rules that a diverging loss cannot talk its way out of.

The running-median rules of ``divergence.py`` compare the loss with its *recent* level, and a
recent level follows the loss: a loss that leaves its start at once has no level to leave, one
that climbs at a constant rate drags its level along, and one that jumps and stays becomes the
level after a window. These two rules hold by construction instead:

- **Anchored**: the loss's level (the median of its last 5 values: two bad batches cannot
  move it) is ``ratio`` times above the *best* level the run has reached.
  The best level only goes down, so nothing the loss does afterwards can raise the reference.
  The threshold is the larger of ``ratio`` and ``noise_sds`` times the series' own log-space
  noise, so a noisy loss (a log spread of 0.3 and more) needs a proportionally larger rise:
  its false-alarm rate is set by the noise, not by the corpus (docs/detectors.md has the
  simulation). Before a noise estimate exists (the first samples of a run), ``big_ratio``.
- **Climb**: a constant-rate climb in log space: over the last ``climb_window`` values, the
  medians of the three thirds rise one after another, each rise clear of the noise, and the
  whole window more than doubles. A bad batch or a warm restart jumps once and then decays;
  a step size past the stability edge keeps multiplying the loss.

Both need positive values (a log); a series that ever logs zero or less keeps only the
linear rules. Pure: values in, verdicts out.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from lrwatch.detectors._robust import plain_median

_LEVEL = 5  # values in the median that makes the best level
_HIGH = 3  # the values in a row that must all be up ...
_BURST = 6  # ... over at least this many steps (three garbage batches in a row are not enough)
_BLATANT = 10.0  # a level this far above the best, and above the start, pages at once
_HOLD = 20  # ... a smaller rise must hold (not decay) for this many values
# ... and, unless it went past the start, undo this share of the progress in the loss's own
# units: a loss that fell from 1 to 1e-4 and bounces to 1e-2 has lost 1 % of it, not 50 %.
_MATERIAL = 0.05
_STRETCH = 64
_Q3_SIGMA = 0.6744897501960817


class Anchor:
    """The best level a loss has reached, its current level, and a climb in progress."""

    __slots__ = (
        "_best",
        "_best_step",
        "_disabled",
        "_high_from",
        "_high_since",
        "_recent",
        "_start",
        "_steps",
        "_stretch",
        "window",
    )

    def __init__(self, climb_window: int = 16) -> None:
        self.window = max(8, climb_window - climb_window % 4)
        self._recent: deque[float] = deque(maxlen=self.window)  # log values
        self._steps: deque[int] = deque(maxlen=self.window)
        self._best = math.inf
        self._best_step = -1
        self._high_since: int | None = None  # first step of the current stretch above the bar
        self._high_from = 0  # the step of the sample before it
        self._stretch: list[float] = []  # its log values (the last _STRETCH)
        self._start = math.nan  # the level the run started at (median of its first values)
        self._disabled = False

    @property
    def best(self) -> float:
        """The best level reached (natural units; inf before any)."""
        return math.exp(min(self._best, 700.0)) if self._best < math.inf else math.inf

    def level(self) -> float:
        if not self._recent:
            return math.nan
        return math.exp(min(plain_median(list(self._recent)[-_LEVEL:]), 700.0))

    def update(self, step: int, value: float) -> bool:
        """One finite value; whether the best level moved (only once ``_LEVEL`` values exist)."""
        if self._disabled:
            return False
        if not value > 0:
            self._disabled = True
            self._recent.clear()
            return False
        self._recent.append(math.log(value))
        self._steps.append(step)
        if len(self._recent) <= _LEVEL and self._best_step <= self._steps[0]:
            self._start = plain_median(list(self._recent))
        if len(self._recent) >= _LEVEL or self._best == math.inf:
            level = plain_median(list(self._recent)[-_LEVEL:])
            if level < self._best:
                self._best, self._best_step = level, step
                return True
        return False

    def rebase(self) -> None:
        """The loss settled at a new level (an episode ended there): that is the best now."""
        if self._recent:
            self._best = plain_median(list(self._recent)[-_LEVEL:])
            self._best_step = self._steps[-1]
        self._high_since = None
        self._stretch.clear()

    def above(self, bar: float) -> tuple[float, int] | None:
        """If the level is ``exp(bar)`` times the best or more: (ratio, the first step of the
        stretch of values above the bar). The stretch's start dates the divergence."""
        if self._disabled or len(self._recent) < _HIGH or self._best == math.inf:
            return None
        last = self._recent[-1]
        if last - self._best < bar:
            self._high_since = None
            self._stretch.clear()
            return None
        if self._high_since is None:
            self._high_since = self._steps[-1]
            # The stretch stands for the steps since the sample before it: sparse logs too.
            self._high_from = self._steps[-2] if len(self._steps) > 1 else self._high_since - 1
        self._stretch = [*self._stretch[-(_STRETCH - 1) :], last]
        # Every value up for _HIGH samples and _BURST steps: a burst of bad batches, or the
        # low half of a swing, breaks the stretch.
        if len(self._stretch) < _HIGH or self._steps[-1] - self._high_from < _BURST:
            return None
        level = plain_median(self._stretch[-_LEVEL:])
        ratio = math.exp(min(level - self._best, 700.0))
        if level < self._start and not self._material(level):
            return None
        if not (level - self._best >= math.log(_BLATANT) and level >= self._start):
            # Up a few times but not past where it started: a concept shift does that too,
            # and then decays as the model adapts. Only a stretch that holds up is proof.
            s = self._stretch
            if len(s) < _HOLD or plain_median(s[len(s) // 2 :]) < plain_median(s[: len(s) // 2]):
                return None
        return ratio, self._high_since

    def _material(self, level: float) -> bool:
        """Whether the rise from the best to ``level`` (logs) undoes ``_MATERIAL`` of the
        progress from the start, in the loss's own units."""
        if not math.isfinite(self._start) or self._start <= self._best:
            return True
        best, start = math.exp(self._best), math.exp(min(self._start, 700.0))
        return math.exp(min(level, 700.0)) - best >= _MATERIAL * (start - best)

    def climbing(self, sigma: float, z: float) -> tuple[float, int] | None:
        """(factor over the window, the step it started from) if the last ``window`` values
        climb at a steady rate: the medians of its four quarters each ``z`` standard errors
        above the one before (a jump, a warm restart, lifts one quarter, not three), and the
        last quarter at least twice the first."""
        if self._disabled or len(self._recent) < self.window:
            return None
        v = list(self._recent)
        n = self.window // 4
        m = [plain_median(v[k * n : (k + 1) * n]) for k in range(4)]
        # The standard error of a difference of two medians; noise below 1 % is quantisation.
        se = 1.2533 * max(sigma, 0.01) / math.sqrt(n) * math.sqrt(2.0)
        if m[3] - m[0] < math.log(2.0) or any(m[k + 1] - m[k] < z * se for k in range(3)):
            return None
        if m[3] - self._best < math.log(2.0):
            return None  # back up to where it was is not a climb past anything
        if m[3] < self._start and not self._material(m[3]):
            return None
        low = min(range(2 * n), key=v.__getitem__)  # the climb starts at its trough
        return math.exp(min(m[3] - m[0], 700.0)), self._steps[low]

    def state(self) -> dict[str, Any]:
        return {
            "recent": list(self._recent),
            "steps": list(self._steps),
            "best": self._best if self._best < math.inf else None,
            "best_step": self._best_step,
            "high_since": self._high_since,
            "high_from": self._high_from,
            "stretch": list(self._stretch),
            "start": self._start if math.isfinite(self._start) else None,
            "disabled": self._disabled,
        }

    def load(self, state: dict[str, Any]) -> None:
        self._recent = deque((float(v) for v in state["recent"]), maxlen=self.window)
        self._steps = deque((int(s) for s in state["steps"]), maxlen=self.window)
        best = state["best"]
        self._best = math.inf if best is None else float(best)
        self._best_step = int(state["best_step"])
        high = state["high_since"]
        self._high_since = None if high is None else int(high)
        self._high_from = int(state["high_from"])
        self._stretch = [float(v) for v in state["stretch"]]
        start = state["start"]
        self._start = math.nan if start is None else float(start)
        self._disabled = bool(state["disabled"])


def log_spread(sorted_values: Sequence[float]) -> float | None:
    """The upper-quartile spread of the logs of ``sorted_values`` (a robust log-space SD), or
    None when they are too few or not all positive."""
    n = len(sorted_values)
    if n < 8 or not sorted_values[0] > 0:
        return None
    m = sorted_values[n // 2]
    q3 = sorted_values[(3 * n) // 4]
    return math.log(q3 / m) / _Q3_SIGMA
