"""Divergence rules that a diverging loss cannot drag along, anchored at the run's best level.

The running-median rules of ``divergence.py`` compare the loss with its *recent* level, and a
recent level follows the loss: a loss that leaves its start at once has no level to leave, one
that climbs at a constant rate drags its level along, and one that jumps and stays becomes the
level after a window. These hold by construction instead: *above* (far above the best level the
run has reached, which only goes down), *bursting* (multiplying twice in a row) and *climbing*
(a steady climb in log space over 16 or 64 values). Their bars scale with the series' own
log-space noise, so a noisy loss needs a larger rise. Both need positive values (a log); a
series that ever logs zero or less keeps only the running-median rules. Pure: values in,
verdicts out. The rules and where their numbers come from: docs/detectors.md, "Divergence".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from lrwatch.detectors._held import HeldLevel
from lrwatch.detectors._robust import (
    Q3_SIGMA,
    line_residuals,
    plain_median,
    run_together,
    undoes_progress,
)

# A loss is up when it is RATIO times its best level, and more than SDS of its log noise
# (PAST_START_SDS once it is past the highest level the run held, its start or above: a healthy
# loss does not go back there);
# before the noise is known, EARLY times. From noise simulations (docs/detectors.md).
RATIO = 4.0
SDS = 10.0
PAST_START_SDS = 4.0
EARLY = 10.0
BURST_RISE = 3.0  # ... or twice in a row this much, ending EARLY times the best
_LEVEL = 5  # values in the median that makes a level (of a stretch up: the loss now)
# ... and in the one that makes the best level and the peak, once _LEVEL exist: the best is the
# lowest of many such medians, a lucky low, and a median of 16 values is less lucky than one of
# 5 (in noise simulations 5 let the best sit far enough below the typical level to page noise).
_BEST = 16
# A stretch up is measured in steps: _HIGH values in a row, all up, over at least _BURST steps
# (so 5 values of a log written every step: five garbage batches in a row are not enough; 2 of
# one written every 50 steps, which have shown the loss up for 50 steps).
_HIGH = 2
_BURST = 5
_BLATANT = 10.0  # a level this far above the best, and above the peak, pages at once
_HOLD = 20  # ... a smaller rise must hold (not decay) for this many values, and, unless it
# went past the start, undo a material share of the progress (_robust.undoes_progress)
_STRETCH = 64
_CLIMBS = (16, 64)  # the windows a steady climb is looked for in (values)
# The values before a stretch that say how much its noise runs together (``memory_before``):
# read off the stretch alone (15 steps of a 16-value window), an AR(0.95) wander's memory came
# out anywhere from none to all, and a wander paged as a climb (docs/detectors.md).
_MEMORY = 64
_KEEP = _CLIMBS[-1] + _MEMORY  # the log values kept: the longest window and the values before


class Anchor:
    """The best level a loss has reached, its current level, and a climb in progress."""

    __slots__ = (
        "_best",
        "_disabled",
        "_first_only",
        "_first_step",
        "_held",
        "_high_from",
        "_high_since",
        "_lowest",
        "_peak",
        "_recent",
        "_start",
        "_steps",
        "_stretch",
    )

    def __init__(self) -> None:
        # The last _KEEP log values and their steps (or up to twice as many: lists trimmed
        # in blocks, so that the tests slice them without a copy at every value; the last _LEVEL
        # of them make the level now).
        self._recent: list[float] = []
        self._steps: list[int] = []
        self._best = math.inf
        # Whether the best is still the first value alone (no level of _LEVEL values has gone
        # below it, no doubt settled it), its step, and the lowest level meanwhile: see
        # doubt_first.
        self._first_only = True
        self._first_step = 0
        self._lowest = math.inf
        self._high_since: int | None = None  # first step of the current stretch above the bar
        self._high_from = 0  # the step of the sample before it
        self._stretch: list[float] = []  # its log values (the last _STRETCH)
        self._start = math.nan  # the log of the first value: where the run started
        # The highest level held before the stretch up in progress (from the start on): a
        # loss that goes past it is doing what the run never did, while noise around a level
        # (a run that made no progress from its start) goes back there all the time.
        self._peak = math.nan
        self._disabled = False
        self._held = HeldLevel(RATIO)  # its own values: it watches a loss that underflows to 0

    @property
    def best(self) -> float:
        """The best level reached (natural units; inf before any)."""
        return math.exp(min(self._best, 700.0)) if self._best < math.inf else math.inf

    @property
    def held_lowest(self) -> float:
        """The lowest level the "held" rule's last hit was measured from (``_held.py``)."""
        return self._held.reference

    def level(self) -> float:
        if not self._recent:
            return math.nan
        return math.exp(min(plain_median(self._recent[-_LEVEL:]), 700.0))

    def update(self, step: int, value: float) -> bool:
        """One finite value; whether the best level (the median of the last ``_BEST``) moved
        (only once ``_LEVEL`` values exist)."""
        self._held.update(step, value)
        if self._disabled:
            return False
        if not value > 0:
            self._disabled = True
            self._recent.clear()
            return False
        if not math.isfinite(self._start):
            self._start = self._peak = math.log(value)  # a blow-up can start at the second value
            self._first_step = step
        logv = math.log(value)
        self._recent.append(logv)
        self._steps.append(step)
        if len(self._recent) >= 2 * _KEEP:
            del self._recent[:-_KEEP], self._steps[:-_KEEP]
        if len(self._recent) >= _LEVEL or self._best == math.inf:
            level = plain_median(self._recent[-_BEST:])
            if level > self._peak and self._high_since is None:
                self._peak = level
            if self._first_only and len(self._recent) >= _LEVEL and level < self._lowest:
                self._lowest = level  # (read by doubt_first only, while the flag holds)
            if level < self._best:
                self._first_only = self._best == math.inf
                self._best = level
                return True
        return False

    def doubt_first(self, sigma: float) -> None:
        """Asked with the noise known (``sigma``, log). A series logged from the run's start
        (its first step within two logging intervals of 0) keeps its first value as its best:
        the loss at initialisation, which a loss may leave at once for good. In a series seen
        from its middle (a run resumed into a new log, a rewind) the first value is one draw
        of the noise: once it lies within ``PAST_START_SDS`` noise SDs below the lowest level
        since (asked again at each value until then), the lowest level becomes the best."""
        if not self._first_only:
            return
        steps = self._steps
        interval = (steps[-1] - steps[0]) / max(1, len(steps) - 1)
        if self._first_step <= 2 * interval:
            self._first_only = False
        elif self._lowest - self._best < PAST_START_SDS * sigma:
            self._best, self._first_only = self._lowest, False

    def rebase(self) -> None:
        """The loss settled at a new level (an episode ended there): that is the best now."""
        if self._recent:
            self._best = plain_median(self._recent[-_BEST:])
        self._first_only = False
        self._held.rebase()
        self._high_since = None
        self._stretch.clear()

    def _bar(self, value: float, sigma: float | None) -> float:
        """How far above the best (log) ``value`` must be to count as up: past the peak,
        ``RATIO`` or ``PAST_START_SDS`` of the noise; short of it, ``RATIO`` or ``SDS``;
        with no noise estimate yet, ``EARLY``."""
        if sigma is None:
            return math.log(EARLY)
        sds = PAST_START_SDS if value >= self._peak else SDS
        return max(math.log(RATIO), sds * sigma)

    def above(self, sigma: float | None, widen: Callable[[], float]) -> tuple[float, int] | None:
        """If the loss is up (see ``_bar``; ``sigma`` is its log noise, None while unknown):
        (ratio of its level to the best, the first step of the stretch of values up). The
        stretch's start dates the divergence. Its level must also clear the bar with the
        noise times ``widen()``, the factor for values that run together (asked last: it
        costs a pass over the window)."""
        if self._disabled or len(self._recent) < _HIGH or self._best == math.inf:
            return None
        last = self._recent[-1]
        if last - self._best < self._bar(last, sigma):
            self._high_since = None
            self._stretch.clear()
            return None
        if self._high_since is None:
            self._high_since = self._steps[-1]
            # The stretch stands for the steps since the sample before it: sparse logs too.
            self._high_from = self._steps[-2] if len(self._steps) > 1 else self._high_since - 1
        self._stretch = [*self._stretch[-(_STRETCH - 1) :], last]
        # Every value up for _BURST steps (and _HIGH samples): a burst of bad batches, or the
        # low half of a swing, breaks the stretch.
        if len(self._stretch) < _HIGH or self._steps[-1] - self._high_from < _BURST:
            return None
        level = plain_median(self._stretch[-_LEVEL:])
        ratio = math.exp(min(level - self._best, 700.0))
        if level < self._start and not undoes_progress(self._start, self._best, level):
            return None
        if not (level - self._best >= math.log(_BLATANT) and level >= self._peak):
            # Up a few times but not past the peak: a concept shift does that too,
            # and then decays as the model adapts. Only a stretch that holds up is proof.
            s = self._stretch
            if len(s) < _HOLD or plain_median(s[len(s) // 2 :]) < plain_median(s[: len(s) // 2]):
                return None
        if sigma is not None and level - self._best < self._bar(level, sigma * widen()):
            return None
        return ratio, self._high_since

    def bursting(self, sigma: float | None) -> tuple[float, int] | None:
        """(ratio to the best, the step the burst left from) if the last two values each
        multiplied the loss by ``BURST_RISE`` (or 4 noise SDs) and the last is ``EARLY`` times
        the best: a blow-up on its way to inf, paged one sample before it gets there. Bad
        batches jump and fall back; they do not multiply twice in a row."""
        if self._disabled or len(self._recent) < 3 or self._best == math.inf:
            return None
        v2, v3 = self._recent[-2], self._recent[-1]
        rise = max(math.log(BURST_RISE), 4.0 * (sigma or 0.0))
        if v3 - v2 < rise or v3 - self._best < math.log(EARLY):
            return None  # (the cheap tests first: this runs at every value)
        # From the typical level before it (the median of up to 16 values), not from a lucky
        # low batch, nor from a few lucky ones in a row (a convnet at 0.005 whose batches
        # reach 0.02 read 0.0018, 0.0013, 0.009, 0.046: two 5x rises from a lucky low).
        v1 = max(self._recent[-3], plain_median(self._recent[-_CLIMBS[0] - 2 : -2]))
        if v2 - v1 < rise:
            return None
        return math.exp(min(v3 - self._best, 700.0)), self._steps[-2]

    def held(self) -> tuple[float, int] | None:
        """(ratio, onset) of a loss held far above its lowest level: ``_held.py``."""
        return self._held.held()

    def memory_before(self, last: int) -> float:
        """``run_together`` of up to ``_MEMORY`` log values before the loss's last ``last``
        (1 with fewer than 16). A wander's memory shows in the values before its swing up as
        well as in the swing, and a short stretch alone cannot tell it: the rules widen their
        bars by whichever of the two runs together more, so that a stretch the noise's own
        memory explains proves no divergence."""
        before = self._recent[-last - _MEMORY : -last] if last else self._recent[-_MEMORY:]
        return run_together(before) if len(before) >= _CLIMBS[0] else 1.0

    def climbing(self, sigma: float, z: float) -> tuple[float, int, int] | None:
        """(factor, the step it started from, the window) if the last 16 or 64 values climb
        at a steady rate: the medians of the window's four quarters each ``z`` standard errors
        above the one before (a jump, a warm restart, lifts one quarter, not three), and the
        last quarter at least twice the first. Two windows: a fast climb shows in 16 values,
        a slow one only over more."""
        if self._disabled or len(self._recent) < _CLIMBS[0]:
            return None
        if self._recent[-1] - self._best < math.log(2.0):
            return None  # tested when the newest value is twice the best: cheap, and a climb is
        recent = self._recent
        for window in _CLIMBS:
            if len(recent) < window:
                break
            found = self._climbing(recent[-window:], sigma, z)
            if found is not None:
                return (*found, window)
        return None

    def _climbing(self, v: list[float], sigma: float, z: float) -> tuple[float, int] | None:
        n = len(v) // 4
        # The ends first, the last quarter's twice the best first of all: most windows fail
        # these, before any more sorting.
        last = plain_median(v[3 * n :])
        if last - self._best < math.log(2.0):
            return None  # back up to where it was is not a climb past anything
        first = plain_median(v[:n])
        if last - first < math.log(2.0):
            return None
        m = [first, plain_median(v[n : 2 * n]), plain_median(v[2 * n : 3 * n]), last]
        if not m[0] < m[1] < m[2] < m[3]:
            return None
        # The standard error of a difference of two quarter medians; noise below 1 % is
        # quantisation.
        noise = _noise_around_trend(v, sigma) * max(run_together(v), self.memory_before(len(v)))
        se = 1.2533 * max(noise, 0.01) / math.sqrt(n) * math.sqrt(2.0)
        if any(m[k + 1] - m[k] < z * se for k in range(3)):
            return None
        if m[3] < self._start and not undoes_progress(self._start, self._best, m[3]):
            return None
        low = min(range(2 * n), key=v.__getitem__)  # the climb starts at its trough
        return math.exp(min(m[3] - m[0], 700.0)), self._steps[len(self._steps) - len(v) + low]

    def state(self) -> dict[str, Any]:
        return {
            "recent": self._recent[-_KEEP:],
            "steps": self._steps[-_KEEP:],
            "best": self._best if self._best < math.inf else None,
            "high_since": self._high_since,
            "high_from": self._high_from,
            "stretch": list(self._stretch),
            "start": self._start if math.isfinite(self._start) else None,
            "peak": self._peak if math.isfinite(self._peak) else None,
            "first_only": self._first_only,
            "first_step": self._first_step,
            "lowest": self._lowest if self._lowest < math.inf else None,
            "disabled": self._disabled,
            "held": self._held.state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self._recent = [float(v) for v in state["recent"]][-_KEEP:]
        self._steps = [int(s) for s in state["steps"]][-_KEEP:]
        best = state["best"]
        self._best = math.inf if best is None else float(best)
        high = state["high_since"]
        self._high_since = None if high is None else int(high)
        self._high_from = int(state["high_from"])
        self._stretch = [float(v) for v in state["stretch"]]
        start = state["start"]
        self._start = math.nan if start is None else float(start)
        peak = state.get("peak", start)  # (states before 0.3 kept none: the start)
        self._peak = math.nan if peak is None else float(peak)
        self._disabled = bool(state["disabled"])
        self._first_only = bool(state.get("first_only", False))  # (older states: long asked)
        self._first_step = int(state.get("first_step", 0))
        lowest = state.get("lowest")
        self._lowest = math.inf if lowest is None else float(lowest)
        self._held = HeldLevel(RATIO)  # (states before 0.2 kept none: it starts from here)
        if "held" in state:
            self._held.load(state["held"])


def _noise_around_trend(v: Sequence[float], sigma: float) -> float:
    """The noise of ``v`` (log values) around a straight line through them: a climb moves
    every value by the same amount, so the window's spread would count the climb itself as
    noise, while a line's residuals do not (a full-batch loss that multiplies by 1.25 a step
    has next to none); never more than ``sigma``, the series' own noise. The caller widens it
    by how much the values run together (``Anchor.memory_before``): a wandering loss is not
    climbing because it went up for a while; without it, AR(0.95) noise of log-SD 0.3 read as
    a steady climb in most simulated series."""
    resid = line_residuals(v)
    spread = plain_median([abs(r) for r in resid]) / 0.6745
    return min(sigma, spread)


def log_spread(sorted_values: Sequence[float]) -> float | None:
    """The quartile spread of the logs of ``sorted_values`` (a robust log-space SD), or None
    when they are too few or not all positive. Two-sided, the larger of the upper and the
    lower quartile's distance from the median: the rules measure rises from the best, the
    series' lowest stretch, whose distance below its typical level is the lower tail's."""
    n = len(sorted_values)
    if n < 8 or not sorted_values[0] > 0:
        return None
    q1, m, q3 = sorted_values[n // 4], sorted_values[n // 2], sorted_values[(3 * n) // 4]
    return max(math.log(q3 / m), math.log(m / q1)) / Q3_SIGMA
