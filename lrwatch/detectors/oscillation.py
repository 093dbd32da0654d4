"""Oscillation: the loss goes up, down, up, down — the step size overshoots the valley.

Why these statistics
--------------------
Past the stability edge of gradient descent (lr > 2 / lambda_max of the Hessian) the iterate
bounces across the valley, and on a non-quadratic loss the loss bounces with it: it settles
into a period-2 cycle (up, down, up, ...) instead of converging — Meng et al. (2024) show it for
logistic regression on non-separable data, and the test curves reproduce it. The detector looks
at the last ``window`` successive differences ``d_i = x_i - x_(i-1)`` and asks three things:

1. *Sign flips*: the fraction of consecutive pairs with ``d_i * d_(i-1) < 0``. Beware: for i.i.d.
   noise the differences flip sign 2/3 of the time (of three i.i.d. values, the middle one is a
   peak or a trough with probability 2/3), so a threshold near 2/3 would call every noisy run
   oscillating. A period-2 cycle flips every time.
2. *Lag-1 autocorrelation of the differences* (centred): -0.5 in expectation for i.i.d. values
   (``d_i`` and ``d_(i-1)`` share one value with opposite signs), close to -1 for a period-2
   cycle (exactly -(w-1)/w for a pure one). It weighs large swings more than the sign count does,
   so it rejects windows where many tiny wiggles flip but the big moves do not alternate.
3. *Amplitude*: the median ``|d_i|`` relative to the median level of the window. It cannot be
   what tells noise apart — minibatch noise is often a third of the level, far above any
   useful threshold — the sign tests do that. It rejects alternations too small to matter: a
   damped oscillation below the edge that is dying out, float jitter of a converged loss.

Measured with this detector on 400k samples (defaults: 30 differences, flips >= 0.9,
autocorrelation <= -0.8): i.i.d. Gaussian noise raised 0.15 episodes per 10k samples,
log-normal 0.05, Student-t(3) 0.08, AR(1) (phi = 0.5) none; a 20-difference window with flips
>= 0.8 raised 6 per 10k on the Gaussian noise. The period-2 cycles of the test curves score
flips 1.0 and autocorrelation near -0.9.

The sign count is kept incrementally (O(1) per sample); autocorrelation and medians cost
O(window) and are computed only when the cheap sign test passes. An episode starts when all
three hold, and ends when they have not held for ``window`` samples in a row — the window has
turned over without the pattern — so a ragged oscillation is one episode, not many. Non-finite
values break the series (differences are meaningless across them) and restart the detector.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from statistics import median
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lrwatch.types import Finding, Severity


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


class OscillationDetector:
    """Reports ``oscillation`` (warning) on one loss series."""

    kinds: ClassVar[tuple[str, ...]] = ("oscillation",)

    def __init__(self, config: OscillationConfig | None = None) -> None:
        self.config = config or OscillationConfig()
        self._values: deque[float] = deque()  # the last window + 1 finite values
        self._steps: deque[int] = deque()  # ... and their steps (logs may skip steps)
        self._diffs: deque[float] = deque()  # their window successive differences
        self._flips: deque[bool] = deque()  # sign flips between successive differences
        self._n_flips = 0
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
                self._quiet += 1
                if self._quiet >= self.config.window:
                    self._active, self._quiet = False, 0
            return None
        self._quiet = 0
        if self._active:
            return None
        self._active = True
        return self._finding(step, *stats)

    def _push(self, step: int, value: float) -> None:
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
        if len(values) > w + 1:
            values.popleft()
            self._steps.popleft()

    def _stats(self) -> tuple[float, float, float, float] | None:
        """(flip fraction, autocorrelation, swing, level) if the pattern holds, else None.

        The level is the median magnitude, so a loss alternating around zero has one too.
        Values near the float limits overflow these statistics: then it is no oscillation
        (the divergence detector has the case), and the details stay finite.
        """
        cfg = self.config
        if len(self._diffs) < cfg.window:
            return None
        flip_fraction = self._n_flips / (cfg.window - 1)
        if flip_fraction < cfg.min_flip_fraction:
            return None
        level = median(abs(v) for v in self._values)
        swing = median(abs(d) for d in self._diffs)
        if not (0 < level < math.inf and swing < math.inf and swing >= cfg.min_amplitude * level):
            return None
        autocorr = _lag1_autocorr(self._diffs)
        if not autocorr <= cfg.max_autocorr:
            return None
        return flip_fraction, autocorr, swing, level

    def _finding(
        self, step: int, flip_fraction: float, autocorr: float, swing: float, level: float
    ) -> Finding:
        w = self.config.window
        amplitude = swing / level
        reason = (
            f"loss alternates up and down: {flip_fraction:.0%} of the last {w} changes flip "
            f"sign (lag-1 autocorrelation {autocorr:.2f}), swinging by a median {swing:.3g} "
            f"({amplitude:.1%} of its level {level:.4g})"
        )
        detail = {
            "flip_fraction": flip_fraction,
            "autocorr": autocorr,
            "amplitude": amplitude,
            "swing": swing,
            "level": level,
            "window": w,
        }
        return Finding(
            kind="oscillation",
            severity=Severity.WARNING,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=self._steps[0],
        )

    def _reset(self) -> None:
        self._values.clear()
        self._steps.clear()
        self._diffs.clear()
        self._flips.clear()
        self._n_flips = 0
        self._active = False
        self._quiet = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "oscillation",
            "version": 1,
            "values": list(self._values),
            "steps": list(self._steps),
            "active": self._active,
            "quiet": self._quiet,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("detector"), state.get("version")) != ("oscillation", 1):
            found = (state.get("detector"), state.get("version"))
            raise ValueError(f"not a oscillation detector state (version 1): {found!r}")
        self._reset()
        for step, value in zip(state["steps"], state["values"], strict=True):
            self._push(int(step), float(value))  # differences and flips follow from these
        self._active = bool(state["active"])
        self._quiet = int(state["quiet"])


def _lag1_autocorr(diffs: deque[float]) -> float:
    """Centred lag-1 autocorrelation; the centring removes the trend of a converging loss."""
    n = len(diffs)
    mean = sum(diffs) / n
    c = [d - mean for d in diffs]
    denom = sum(x * x for x in c)
    if not denom > 0:
        return math.nan
    return sum(c[i] * c[i - 1] for i in range(1, n)) / denom
