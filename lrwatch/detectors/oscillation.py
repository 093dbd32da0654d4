"""Oscillation: the loss goes up, down, up, down — the step size overshoots the valley.

Past the stability edge of gradient descent the loss settles into a period-2 cycle instead of
converging. Over the last ``window`` successive differences the detector asks: do their signs
flip nearly every time (i.i.d. noise flips 2/3 of the time), is their lag-1 autocorrelation
close to -1 (-0.5 for noise), and are the swings big enough to matter relative to the level?
Further past the edge the cycle doubles or turns chaotic; a fourth test, *recurrence* (values
come back to near the value one period earlier), catches those (``_longer_cycle``). Further
still, gradient descent *relaxes*: the loss settles, bursts 10x, settles again, at a period too
long and too uneven for recurrence; regular *bursts* catch that (``_bursting``).

The sign count is incremental; the other tests run only when it passes, the recurrence test on
every 32nd sample. An episode starts when the tests hold and ends when they have not held for
``window`` + 32 samples in a row, so a ragged oscillation is one episode. Non-finite values
break the series and restart the detector. The reasoning and the false-alarm figures:
docs/detectors.md, "Oscillation".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from itertools import pairwise, repeat
from operator import le, sub
from statistics import median
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lrwatch.detectors._robust import lag_autocorr
from lrwatch.protocol.types import Finding, Role, Severity

_EVERY = 32  # the recurrence test runs on every 32nd sample
# A burst: a local peak _BURST times the median of the values around it and _BURST_SDS of their
# log noise (from second differences); _BURSTS of them in a row, at intervals within a factor
# _REGULAR of one another and each at most 4 max_period steps, are a relaxation cycle.
_BURST = 3.0
_BURST_SDS = 6.0
_BURSTS = 5
_REGULAR = 2.0
_MEASURES = {"alternates": "autocorr", "cycle": "recurrence", "bursts": "regularity"}


class OscillationConfig(BaseModel):
    """Knobs of :class:`OscillationDetector`; embedded in the daemon's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window: int = Field(
        default=30, ge=6, le=10_000, description="successive differences the statistics cover"
    )
    min_flip_fraction: float = Field(
        default=0.9,
        gt=2 / 3,
        le=1.0,
        description="fraction of sign flips between successive differences (i.i.d. noise: 2/3)",
    )
    max_autocorr: float = Field(
        default=-0.8,
        ge=-1.0,
        lt=-0.5,
        description="lag-1 autocorrelation of the differences must be at most this (noise: -0.5)",
    )
    min_amplitude: float = Field(
        default=0.005, gt=0, description="median |difference| relative to the median level"
    )
    max_period: int = Field(
        default=16, ge=2, le=64, description="longest cycle looked for by recurrence"
    )
    recurrence_tolerance: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="x_t recurs if within this fraction of the median step change of x_(t-p)",
    )
    min_recurring: float = Field(
        default=0.7,
        gt=0.5,
        le=1.0,
        description="fraction of the window that must recur at the period (noise: ~0.25)",
    )


class OscillationDetector:
    """Reports ``oscillation`` (warning) on one loss series."""

    kinds: ClassVar[tuple[str, ...]] = ("oscillation",)
    roles: ClassVar[tuple[Role, ...]] = (Role.LOSS,)
    config_model: ClassVar[type[OscillationConfig]] = OscillationConfig

    def __init__(self, config: OscillationConfig | None = None) -> None:
        self.config = config or OscillationConfig()
        self._values: deque[float] = deque()  # the last window + max_period finite values
        self._steps: deque[int] = deque()  # ... and their steps (logs may skip steps)
        self._diffs: deque[float] = deque()  # their window successive differences
        self._flips: deque[bool] = deque()  # sign flips between successive differences
        self._n_flips = 0
        self._count = 0  # samples pushed since the last reset (paces the longer-cycle test)
        self._active = False
        self._quiet = 0  # samples in a row without the pattern, during an episode
        self._bursts: deque[int] = deque(maxlen=_BURSTS)  # the steps of the last bursts

    @property
    def active(self) -> str | None:
        return "oscillation" if self._active else None

    def update(self, step: int, value: float) -> Finding | None:
        if not math.isfinite(value):
            self._reset()
            return None
        self._push(step, value)
        stats = self._stats()
        if stats is None:
            if self._active:
                self._quiet += 1  # (the recurrence test looks only every _EVERY samples)
                if self._quiet >= self.config.window + _EVERY:
                    self._active, self._quiet = False, 0
            return None
        self._quiet = 0
        if self._active:
            return None
        self._active = True
        return self._finding(step, *stats)

    def _push(self, step: int, value: float) -> None:
        self._count += 1
        w = self.config.window
        values, diffs, flips = self._values, self._diffs, self._flips
        if values:
            d = value - values[-1]
            if diffs:
                flip = d * diffs[-1] < 0
                flips.append(flip)
                self._n_flips += flip
                if len(flips) > w - 1:
                    self._n_flips -= flips.popleft()
            diffs.append(d)
            if len(diffs) > w:
                diffs.popleft()
        values.append(value)
        self._steps.append(step)
        if len(values) > w + self.config.max_period:
            values.popleft()
            self._steps.popleft()
        if self._peak_bursts():
            self._bursts.append(self._steps[-2])

    def _peak_bursts(self) -> bool:
        """Is the value before the last a local peak ``_BURST`` times the median of the values
        kept, and ``_BURST_SDS`` of their log noise above it, with a neighbour up too (sqrt
        ``_BURST``: a burst lasts more than one batch)? The noise is read off second
        differences (``_log_noise``), which the smooth settle and decay between bursts do not
        inflate. O(1) for nearly every sample: the median is taken only for a peak 3x a
        neighbour (or the value before them: a burst's top may span two values)."""
        v = self._values
        if len(v) < self.config.window:
            return False
        peak, after, before = v[-2], v[-1], v[-3]
        if not (peak > after and peak >= before and peak > _BURST * min(after, before, v[-4]) > 0):
            return False
        if not min(v) > 0:
            return False
        mid = median(v)
        if max(after, before) < math.sqrt(_BURST) * mid:
            return False  # one value up: a bad batch, which a burst of the weights is not
        return math.log(peak / mid) >= max(math.log(_BURST), _BURST_SDS * _log_noise(v))

    def _stats(self) -> tuple[float, float, float, float, int, str] | None:
        """(flip fraction, the pattern's measure, swing, level, period, pattern) if a cycle
        shows, else None. The patterns: ``alternates`` (period 2; its measure the lag-1
        autocorrelation), ``cycle`` (recurrence: the share of values that recur), ``bursts``
        (the longest over the shortest interval between them).

        The level is the median magnitude, so a loss alternating around zero has one too.
        Values near the float limits overflow these statistics: then it is no oscillation
        (the divergence detector has the case), and the details stay finite.
        """
        cfg = self.config
        if len(self._diffs) < cfg.window:
            return None
        flip_fraction = self._n_flips / (cfg.window - 1)
        if flip_fraction >= cfg.min_flip_fraction:
            period, measure, pattern = 2, lag_autocorr(self._diffs, 1), "alternates"
            if not measure <= cfg.max_autocorr:
                return None
        elif (cycle := self._longer_cycle(flip_fraction)) is not None:
            (period, measure), pattern = cycle, "cycle"
        elif (bursts := self._bursting()) is not None:
            (period, measure), pattern = bursts, "bursts"
        else:
            return None
        level = median(abs(v) for v in self._values)
        swing = median(abs(d) for d in self._diffs)
        if not (0 < level < math.inf and swing < math.inf and swing >= cfg.min_amplitude * level):
            return None
        return flip_fraction, measure, swing, level, period, pattern

    def _longer_cycle(self, flip_fraction: float) -> tuple[int, float] | None:
        """(period, recurring fraction) of a cycle of period 2..max_period the pair test missed.

        Past the stability edge the period-2 cycle can double to period 4, 8, 16 (as in the
        logistic map), or wobble chaotically around it; the differences then flip sign less
        regularly, but the loss *recurs*: ``x_t`` is close to ``x_(t-p)`` (within
        ``recurrence_tolerance`` of the median step-to-step change) for most ``t``. For i.i.d.
        noise that holds for about a quarter of them at any lag, for a trend at none, and a
        spike is just one point that does not recur (a mean of differences would let two
        spikes that happen to be ``p`` apart fake a cycle). O(window x max_period), so it is
        evaluated on every ``_EVERY``-th sample only.
        """
        cfg = self.config
        if self._count % _EVERY or flip_fraction < 1.0 / cfg.max_period:
            return None
        v = self._values
        n, w = len(v), cfg.window
        if n < w + cfg.max_period:
            return None
        values = list(v)  # (zipped slices: no deque indexing in the O(w x period) loop)
        recent = values[n - w :]
        tol = cfg.recurrence_tolerance * median(
            abs(b - a) for a, b in zip(values[n - w - 1 : n - 1], recent, strict=True)
        )
        if not 0 < tol < math.inf:
            return None
        best: tuple[int, float] | None = None
        for lag in range(2, cfg.max_period + 1):
            earlier = values[n - w - lag : n - lag]
            recurring = sum(map(le, map(abs, map(sub, recent, earlier)), repeat(tol))) / w
            if recurring >= cfg.min_recurring and (best is None or recurring > best[1]):
                best = (lag, recurring)
        return best

    def _bursting(self) -> tuple[int, float] | None:
        """(period, longest / shortest interval) when the burst just seen is the last of
        ``_BURSTS`` in a row whose intervals are within a factor ``_REGULAR`` of one another,
        each at most 4 ``max_period`` steps: a relaxation cycle (garbage batches and warm
        restarts come at uneven, or much longer, intervals)."""
        if len(self._bursts) < _BURSTS or self._bursts[-1] != self._steps[-2]:
            return None  # (the burst must be the one just seen)
        gaps = [b - a for a, b in pairwise(self._bursts)]
        shortest, longest = min(gaps), max(gaps)
        if not (shortest > 0 and longest <= min(_REGULAR * shortest, 4 * self.config.max_period)):
            return None
        return int(median(gaps)), longest / shortest

    def _finding(
        self,
        step: int,
        flip_fraction: float,
        measure: float,
        swing: float,
        level: float,
        period: int,
        pattern: str,
    ) -> Finding:
        w = self.config.window
        amplitude = swing / level
        if pattern == "bursts":
            text = (
                f"loss bursts and settles every ~{period} steps: {_BURSTS} bursts in a row, each "
                f"{_BURST:g}x its level or more (a step size relaxing past the stability edge)"
            )
        elif pattern == "alternates":
            text = (
                f"loss alternates up and down: {flip_fraction:.0%} of the last {w} changes flip "
                f"sign (lag-1 autocorrelation {measure:.2f})"
            )
        else:
            text = (
                f"loss repeats a {period}-step cycle: over the last {w} steps, {measure:.0%} of "
                f"its values come back to within half a typical step of the one {period} earlier"
            )
        reason = (
            f"{text}, swinging by a median {swing:.3g} ({amplitude:.1%} of its level {level:.4g})"
        )
        detail = {
            "flip_fraction": flip_fraction,
            _MEASURES[pattern]: measure,
            "amplitude": amplitude,
            "swing": swing,
            "level": level,
            "window": w,
            "period": period,
        }
        return Finding(
            kind="oscillation",
            severity=Severity.WARNING,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=self._steps[max(0, len(self._steps) - self.config.window - 1)],
        )

    def _reset(self) -> None:
        self._values.clear()
        self._steps.clear()
        self._diffs.clear()
        self._flips.clear()
        self._n_flips = 0
        self._count = 0
        self._active = False
        self._quiet = 0
        self._bursts.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "oscillation",
            "version": 3,
            "count": self._count,
            "values": list(self._values),
            "steps": list(self._steps),
            "active": self._active,
            "quiet": self._quiet,
            "bursts": list(self._bursts),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        found = (state.get("detector"), state.get("version"))
        if found[0] != "oscillation" or found[1] not in (2, 3):
            raise ValueError(f"not an oscillation detector state (version 2 or 3): {found!r}")
        self._reset()
        for step, value in zip(state["steps"], state["values"], strict=True):
            self._push(int(step), float(value))  # differences and flips follow from these
        self._count = int(state["count"])
        self._active = bool(state["active"])
        self._quiet = int(state["quiet"])
        self._bursts = deque((int(b) for b in state.get("bursts", [])), maxlen=_BURSTS)  # v2: none


def _log_noise(values: deque[float]) -> float:
    """The noise SD of positive ``values`` in log space, from the median absolute second
    difference (an SD of sqrt(6) sigma for i.i.d. noise): a smooth stretch, the decay of a
    relaxation after a burst or a settled loss, adds nothing to it, unlike the spread of the
    values themselves, and the few bursts among them do not move the median."""
    logs = [math.log(x) for x in values]
    d2 = [abs(a - 2.0 * b + c) for a, b, c in zip(logs, logs[1:], logs[2:], strict=False)]
    return median(d2) / (0.6745 * math.sqrt(6.0)) if d2 else math.inf
