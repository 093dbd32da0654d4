"""A loss held far above its lowest level: the divergence rule for a noisy loss that an LR jump
left several times higher for good.

The per-value rules (``_anchor.py``) need every value of a stretch up, and a noisy loss puts
some back under the bar: a convnet under AdamW whose LR went x30 moved from a median of 0.12 to
0.5, its batches still ranging 0.01 to 2; a logistic regression under RMSprop whose LR went
x300 turned bimodal, half its batches at 1e-40 or 0.0 (underflow: the weights are huge) and
half at 1-25. So this compares *windows*: the upper quartile of the last ``WIDE`` values
against the lowest such quartile of the last ``_MEMORY`` values. The upper quartile moves with
a level shift as the median does, but not when half the batches collapse to nothing; the
median, each against its own lowest, too: it moves when the noise collapses as the level rises
(a net that died outputs the same loss, chance, for every batch). Its own buffer of logs, a
value at or below ``_FLOOR`` counted as ``_FLOOR``, so a loss that underflows to 0.0 is still
watched (the anchored rules stop at a value <= 0). Pure: values in, verdicts out. Why, with
the figures: docs/detectors.md.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Any

from lrwatch.detectors._robust import run_together, undoes_progress

WIDE = 32  # values in a window
_EVERY = 8  # values between two windows kept as references
_MEMORY = 256  # a level held this long is the loss's level now (a concept shift's new one)
HELD_Z = 6.0  # standard errors of the difference of two quartiles
_Q3_SE = 1.3626  # the standard error of a normal sample's upper quartile, in SDs / sqrt(n)
_MEDIAN_SE = 1.2533  # ... and of its median (sqrt(pi / 2))
_IQR_SIGMA = 1.3489795003921634  # the interquartile range of a standard normal
_FLOOR = 1e-30
_LOG_FLOOR = math.log(_FLOOR)


class HeldLevel:
    """The upper quartiles of windows of one loss, and whether the newest holds far above."""

    __slots__ = (
        "_held_at",
        "_log_ratio",
        "_lowest",
        "_lowest_median",
        "_off",
        "_recent",
        "_reference",
        "_seen",
        "_start",
        "_steps",
        "_wides",
    )

    def __init__(self, ratio: float) -> None:
        self._log_ratio = math.log(ratio)
        self._recent: deque[float] = deque(maxlen=2 * WIDE)  # log values, floored
        self._steps: deque[int] = deque(maxlen=WIDE)
        self._seen = 0
        self._start = math.nan  # the log of the first value
        self._held_at = -_MEMORY  # the value (count) a hit was last reported at
        # (upper quartile, log noise, median) of the last WIDE values, every _EVERY values
        self._wides: deque[tuple[float, float, float]] = deque(maxlen=_MEMORY // _EVERY)
        self._lowest = (math.inf, 0.0)  # the lowest of them (asked at every value)
        self._lowest_median = (math.inf, 0.0)  # (median, log noise) of the lowest median
        self._reference = math.inf  # the lowest level of the last hit (its log)
        self._off = False  # a negative value: a loss that is no log-scale quantity

    @property
    def reference(self) -> float:
        """The lowest level the last hit of ``held`` was measured from (natural units): the
        lowest upper quartile or the lowest median of a window in memory; inf before a hit."""
        return math.exp(min(self._reference, 700.0))

    def update(self, step: int, value: float) -> None:
        """One finite value (0.0 counts as ``_FLOOR``: underflow; a negative one turns the
        rule off for good, as the anchored rules are)."""
        if self._off or value < 0:
            self._off = True
            return
        logv = math.log(value) if value > _FLOOR else _LOG_FLOOR
        if self._seen == 0:
            self._start = logv
        self._recent.append(logv)
        self._steps.append(step)
        self._seen += 1
        if self._seen >= WIDE and self._seen % _EVERY == 0:
            self._refresh()

    def rebase(self) -> None:
        """The loss settled at a new level (an episode ended there): that is the reference."""
        self._wides.clear()
        self._lowest = self._lowest_median = (math.inf, 0.0)
        if len(self._recent) >= WIDE:
            self._refresh()

    def _refresh(self) -> None:
        window = sorted(itertools.islice(reversed(self._recent), WIDE))
        self._wides.append((_q3(window), _iqr_sd(window), window[WIDE // 2]))
        self._lowest = min((q, noise) for q, noise, _ in self._wides)
        self._lowest_median = min((m, noise) for _, noise, m in self._wides)

    def held(self) -> tuple[float, int] | None:
        """(the ratio of the newest window's level to the lowest, the step it rose at) if
        that ratio is ``ratio`` or more, ``HELD_Z`` standard errors of the difference (the
        reference window's noise, widened when values run together: the noise of no change),
        not decaying (the later half's level not below the earlier half's), and, below where
        the run started, undoing a material share of its progress
        (``_robust.undoes_progress``). The level is read two ways, each against its own
        lowest: the upper quartile, which holds when half the batches collapse to nothing, and
        the median, which holds when the noise does (a net that died outputs one loss for
        every batch, at chance). Once per ``_MEMORY`` values: it opens no episode."""
        if self._off or self._seen < 2 * WIDE or self._seen - self._held_at < _MEMORY:
            return None
        # (inf with no window yet: no value clears the bar)
        bar = min(self._lowest[0], self._lowest_median[0]) + self._log_ratio
        if self._recent[-1] < bar:
            return None  # (a quarter of the window must clear it: cheap, most values do not)
        window = list(itertools.islice(self._recent, WIDE, None))
        ordered, half = sorted(window), WIDE // 2
        halves: tuple[list[float], list[float]] | None = None
        for level_of, (lowest, noise), se_sd in (
            (_q3, self._lowest, _Q3_SE),
            (_median, self._lowest_median, _MEDIAN_SE),
        ):
            level = level_of(ordered)
            if level < lowest + self._log_ratio:
                continue  # not up
            halves = halves or (sorted(window[:half]), sorted(window[half:]))
            if level_of(halves[1]) < level_of(halves[0]):
                continue  # decaying: a concept shift the model is adapting to
            if level < self._start and not undoes_progress(self._start, lowest, level):
                continue
            se = se_sd * noise * run_together(self._recent) * math.sqrt(2.0 / WIDE)
            if level - lowest < HELD_Z * se:
                continue
            mid = (lowest + level) / 2
            first = next(i for i, v in enumerate(window) if v >= mid)
            self._held_at, self._reference = self._seen, lowest
            return math.exp(min(level - lowest, 700.0)), self._steps[first]
        return None

    def state(self) -> dict[str, Any]:
        return {
            "recent": list(self._recent),
            "steps": list(self._steps),
            "seen": self._seen,
            "start": self._start if math.isfinite(self._start) else None,
            "held_at": self._held_at,
            "wides": [list(w) for w in self._wides],
            "off": self._off,
        }

    def load(self, state: dict[str, Any]) -> None:
        self._recent = deque((float(v) for v in state["recent"]), maxlen=2 * WIDE)
        self._steps = deque((int(s) for s in state["steps"]), maxlen=WIDE)
        self._seen = int(state["seen"])
        start = state["start"]
        self._start = math.nan if start is None else float(start)
        self._held_at = int(state["held_at"])
        # (a state saved before the median was kept: its upper quartile stands in, higher)
        self._wides = deque(
            (
                (float(w[0]), float(w[1]), float(w[2] if len(w) > 2 else w[0]))
                for w in state["wides"]
            ),
            maxlen=_MEMORY // _EVERY,
        )
        self._lowest = min(((q, n) for q, n, _ in self._wides), default=(math.inf, 0.0))
        self._lowest_median = min(((m, n) for _, n, m in self._wides), default=(math.inf, 0.0))
        self._off = bool(state["off"])


def _q3(ordered: list[float]) -> float:
    return ordered[(3 * len(ordered)) // 4]


def _median(ordered: list[float]) -> float:
    return ordered[len(ordered) // 2]


def _iqr_sd(ordered: list[float]) -> float:
    """The interquartile range of sorted ``ordered`` as a normal SD."""
    n = len(ordered)
    return (ordered[(3 * n) // 4] - ordered[n // 4]) / _IQR_SIGMA
