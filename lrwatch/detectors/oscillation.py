"""Oscillation: the loss goes up, down, up, down — the step size overshoots the valley.

Past the stability edge of gradient descent the loss settles into a period-2 cycle instead of
converging. Over the last ``window`` successive differences the detector asks: do their signs
flip nearly every time (i.i.d. noise flips 2/3 of the time), is their lag-1 autocorrelation
close to -1 (-0.5 for noise), and are the swings big enough to matter relative to the level?
Further past the edge the cycle doubles or turns chaotic; a fourth test, *recurrence* (values
come back to near the value one period earlier), catches those (``_longer_cycle``).

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
from statistics import median
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lrwatch.protocol.types import Finding, Role, Severity

_EVERY = 32  # the recurrence test runs on every 32nd sample


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

    def _stats(self) -> tuple[float, float, float, float, int] | None:
        """(flip fraction, autocorrelation, swing, level, period) if a cycle shows, else None.

        The level is the median magnitude, so a loss alternating around zero has one too.
        Values near the float limits overflow these statistics: then it is no oscillation
        (the divergence detector has the case), and the details stay finite.
        """
        cfg = self.config
        if len(self._diffs) < cfg.window:
            return None
        flip_fraction = self._n_flips / (cfg.window - 1)
        if flip_fraction >= cfg.min_flip_fraction:
            period, autocorr = 2, _lag_autocorr(self._diffs, 1)
            if not autocorr <= cfg.max_autocorr:
                return None
        else:
            found = self._longer_cycle(flip_fraction)
            if found is None:
                return None
            period, autocorr = found
        level = median(abs(v) for v in self._values)
        swing = median(abs(d) for d in self._diffs)
        if not (0 < level < math.inf and swing < math.inf and swing >= cfg.min_amplitude * level):
            return None
        return flip_fraction, autocorr, swing, level, period

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
        recent = range(n - w, n)
        tol = cfg.recurrence_tolerance * median(abs(v[i] - v[i - 1]) for i in recent)
        if not 0 < tol < math.inf:
            return None
        best: tuple[int, float] | None = None
        for lag in range(2, cfg.max_period + 1):
            recurring = sum(abs(v[i] - v[i - lag]) <= tol for i in recent) / w
            if recurring >= cfg.min_recurring and (best is None or recurring > best[1]):
                best = (lag, recurring)
        return best

    def _finding(
        self,
        step: int,
        flip_fraction: float,
        autocorr: float,
        swing: float,
        level: float,
        period: int,
    ) -> Finding:
        w = self.config.window
        amplitude = swing / level
        if period == 2:
            pattern = (
                f"loss alternates up and down: {flip_fraction:.0%} of the last {w} changes flip "
                f"sign (lag-1 autocorrelation {autocorr:.2f})"
            )
        else:
            pattern = (
                f"loss repeats a {period}-step cycle: over the last {w} steps, {autocorr:.0%} of "
                f"its values come back to within half a typical step of the one {period} earlier"
            )
        reason = (
            f"{pattern}, swinging by a median {swing:.3g} ({amplitude:.1%} of its level "
            f"{level:.4g})"
        )
        detail = {
            "flip_fraction": flip_fraction,
            ("autocorr" if period == 2 else "recurrence"): autocorr,
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

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "oscillation",
            "version": 2,
            "count": self._count,
            "values": list(self._values),
            "steps": list(self._steps),
            "active": self._active,
            "quiet": self._quiet,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("detector"), state.get("version")) != ("oscillation", 2):
            found = (state.get("detector"), state.get("version"))
            raise ValueError(f"not an oscillation detector state (version 2): {found!r}")
        self._reset()
        for step, value in zip(state["steps"], state["values"], strict=True):
            self._push(int(step), float(value))  # differences and flips follow from these
        self._count = int(state["count"])
        self._active = bool(state["active"])
        self._quiet = int(state["quiet"])


def _lag_autocorr(diffs: deque[float], lag: int) -> float:
    """Centred autocorrelation at ``lag``; the centring removes the trend of a converging loss."""
    n = len(diffs)
    mean = sum(diffs) / n
    c = [d - mean for d in diffs]
    denom = sum(x * x for x in c)
    if not denom > 0:
        return math.nan
    return sum(c[i] * c[i - lag] for i in range(lag, n)) / denom
