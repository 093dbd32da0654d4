"""Plateau: the loss has stopped improving — ReduceLROnPlateau's question, asked of a noisy series.

Why these statistics
--------------------
torch's ``ReduceLROnPlateau`` compares each epoch's metric with the best so far and cuts after
``patience`` epochs without an improvement of ``threshold``. Fed per-step minibatch losses it
cuts all the time: a lucky batch sets a "best" the loss will not beat for a while, noise or not.
"No improvement seen" is not "no improvement": with noise, absence of evidence needs evidence of
absence. So this detector asks a question with a confidence bound:

    *Is the loss improving, with confidence, by less than ``threshold`` per ``horizon``
    samples?*

* The *rate* is the least-squares slope of the raw values over the last ``n`` samples; with
  independent noise of SD sigma its standard error is ``sigma * sqrt(12 / (n (n^2 - 1)))``.
  A plateau is when the whole confidence interval of the slope, ``slope +- noise_z * se``,
  lies within plus or minus the rate that counts, ``rho = threshold * |level| / horizon``
  (``threshold_mode: abs``: in loss units, ``threshold / horizon``) — torch's threshold
  semantics, as a rate. A loss that rises is not on a plateau: that is the divergence and
  drift detectors' business. The default, 1 % per 200 samples, is the old fixed-patience
  detector's: a plateau costs the run an LR cut (the policy's default), so "still improving
  slowly" must not read as "stuck".
* The *window* ``n`` is as short as the noise allows: the smallest ``n >= patience`` at which
  ``noise_z * se <= rho`` (``n ~ (noise_z * sigma * sqrt(12) / rho)^(2/3)``), at most
  ``max_window``. A full-batch loss (sigma ~ 0) is judged over ``patience`` samples, as
  ReduceLROnPlateau would; a loss whose batches scatter by 10 % needs about 600, and one too
  noisy to tell within ``max_window`` samples is never called a plateau (at the default rate,
  a scatter above ~15 %: most small-batch losses. Lower ``horizon`` to judge those sooner).
* *sigma* comes from the exponentially weighted mean square *second* difference (span
  ``smoothing``): E[(x_i - 2 x_(i-1) + x_(i-2))^2] = 6 sigma^2 for independent noise, while a
  linear trend cancels and a curved one nearly so. (First differences, von Neumann's estimator,
  count the slope itself as noise: right after a fast descent that stops — a full-batch run
  whose LR collapses — they called for windows five times too long.)
* The window's sums are kept as running prefix sums over a ring buffer (O(1) per sample, rebuilt
  from the buffer every ``max_window`` samples so that rounding never accumulates and a huge
  value is forgotten once it leaves), so the test costs the same for any ``n``.

A finding (info) is the rising edge of a plateau, dated (``onset_step``) from the start of the
window that proved it. Then, like ReduceLROnPlateau, it waits ``cooldown`` samples, and a new
finding needs a window wholly after the last one: a plateau that outlasts an LR cut is reported
again. ``active`` stays "plateau" until the loss improves with confidence faster than ``rho``.
Nothing is reported during the first ``patience`` samples. Non-finite values are skipped: they
are the divergence detector's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lrwatch.types import Finding, Severity


class PlateauConfig(BaseModel):
    """Knobs of :class:`PlateauDetector`; embedded in the daemon's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    mode: Literal["min", "max"] = Field(
        default="min", description="min for losses, max for accuracies"
    )
    threshold: float = Field(
        default=0.01,
        ge=0,
        description="an improvement smaller than this per `horizon` samples does not count",
    )
    threshold_mode: Literal["rel", "abs"] = Field(
        default="rel", description="rel: a fraction of |level|; abs: in the metric's units"
    )
    patience: int = Field(default=20, ge=2, description="samples the evidence covers at least")
    horizon: int = Field(
        default=200, ge=1, description="samples over which `threshold` is the improvement due"
    )
    cooldown: int = Field(
        default=200, ge=0, description="samples after a finding before another one"
    )
    smoothing: int = Field(default=50, ge=2, description="span of the noise estimate, in samples")
    noise_z: float = Field(
        default=2.0, ge=0, description="confidence of the bound on the improvement rate, in SEs"
    )
    max_window: int = Field(
        default=1000, ge=2, le=100_000, description="longest stretch the evidence is read from"
    )

    @model_validator(mode="after")
    def _check(self) -> PlateauConfig:
        if self.patience > self.max_window:
            raise ValueError(
                f"patience {self.patience} must not exceed max_window {self.max_window}"
            )
        return self


class PlateauDetector:
    """Reports ``plateau`` (info) on one series."""

    kinds: ClassVar[tuple[str, ...]] = ("plateau",)

    def __init__(self, config: PlateauConfig | None = None) -> None:
        self.config = cfg = config or PlateauConfig()
        self._alpha = 2.0 / (cfg.smoothing + 1.0)
        self._sign = 1.0 if cfg.mode == "min" else -1.0  # work on a series to minimise
        self._cap = cfg.max_window + 1  # the longest window and the value just before it
        size = 2 * self._cap  # room to run on for ``cap`` samples between rebuilds
        self._values = [0.0] * size  # ring buffers, indexed by sample number modulo size
        self._steps = [0] * size
        self._sum = [0.0] * size  # prefix sums since the last rebuild: sum of x, of i*x
        self._isum = [0.0] * size
        self._n = 0  # samples seen (finite ones)
        self._base = 0  # sample number the prefix sums start from
        self._m2 = 0.0  # EW mean square second difference: 6 sigma^2 for independent noise
        self._prev = 0.0
        self._prev2 = 0.0
        self._since = 0  # samples since the last finding (cooldown and fresh window)
        self._found_once = False
        self._active = False

    @property
    def active(self) -> str | None:
        return "plateau" if self._active else None

    def update(self, step: int, value: float) -> Finding | None:
        if not math.isfinite(value):
            return None
        x = self._sign * value
        self._push(step, x)
        if self._n < self.config.patience:
            return None
        test = self._test()
        if test is None:
            return None
        n, slope, se, rho, level = test
        z = self.config.noise_z
        if self._active and -slope - z * se > rho:
            self._active = False  # improving again, with confidence
        # Flat with confidence: not improving faster than rho, and not rising faster either
        # (a loss on its way up is the divergence and drift detectors' business, and halving
        # the LR for a "plateau" a few steps before a divergence would spend the cooldown).
        if abs(slope) + z * se >= rho or not self._may_report(n):
            return None
        self._active, self._since, self._found_once = True, 0, True
        return self._finding(step, n, slope, se, rho, level)

    def _may_report(self, n: int) -> bool:
        if not self._found_once:
            return True
        return self._since >= max(self.config.cooldown, n)

    # -- the running statistics ----------------------------------------------------------------

    def _push(self, step: int, x: float) -> None:
        size = len(self._values)
        i = self._n
        if i >= 2:
            # Second differences: a linear trend cancels, a curved one nearly so, which first
            # differences would count as noise right after a fast descent.
            d2 = x - 2.0 * self._prev + self._prev2
            weight = max(self._alpha, 1.0 / (i - 1))  # i - 1 of them so far: a plain mean first
            self._m2 += weight * (d2 * d2 - self._m2)
            if not math.isfinite(self._m2):
                self._m2 = 0.0  # values near the float limits: start the estimate over
        self._prev2, self._prev = self._prev, x
        self._since += 1
        slot = i % size
        self._values[slot], self._steps[slot] = x, step
        self._n += 1
        if i - self._base >= size - 1 or not self._prefix(i, slot, x):
            self._rebuild()

    def _prefix(self, i: int, slot: int, x: float) -> bool:
        """Extend the prefix sums by sample ``i``; False if they overflowed."""
        size = len(self._values)
        if i == self._base:
            total, itotal = x, 0.0
        else:
            prev = (slot - 1) % size
            total = self._sum[prev] + x
            itotal = self._isum[prev] + (i - self._base) * x
        self._sum[slot], self._isum[slot] = total, itotal
        return math.isfinite(total) and math.isfinite(itotal)

    def _rebuild(self) -> None:
        """Restart the prefix sums ``cap`` samples back: O(cap) once every ``cap`` samples."""
        size = len(self._values)
        self._base = max(0, self._n - self._cap)
        for i in range(self._base, self._n):
            self._prefix(i, i % size, self._values[i % size])

    def _sigma(self) -> float:
        return math.sqrt(self._m2 / 6.0)

    def _window_sums(self, n: int) -> tuple[float, float]:
        """(sum x, sum u*x) over the last ``n`` samples, u = 0..n-1 from the oldest."""
        size = len(self._values)
        last = (self._n - 1) % size
        first = self._n - n  # sample number of the window's oldest value
        total, itotal = self._sum[last], self._isum[last]
        if first > self._base:
            before = (first - 1) % size
            total -= self._sum[before]
            itotal -= self._isum[before]
        return total, itotal - (first - self._base) * total

    def _test(self) -> tuple[int, float, float, float, float] | None:
        """(n, slope, its SE, rho, level) over the window the noise asks for, if it is full."""
        cfg = self.config
        sigma = self._sigma()
        total, _ = self._window_sums(cfg.patience)
        level = total / cfg.patience
        rho = cfg.threshold / cfg.horizon
        if cfg.threshold_mode == "rel":
            rho *= abs(level)
        if not (rho > 0 and math.isfinite(rho) and math.isfinite(sigma)):
            return None
        needed = (cfg.noise_z * sigma * math.sqrt(12.0) / rho) ** (2.0 / 3.0)
        if needed > cfg.max_window:
            return None  # too noisy to tell within max_window samples
        n = max(cfg.patience, math.ceil(needed))
        if n > min(self._n, self._n - self._base):
            return None
        total, utotal = self._window_sums(n)
        sxx = n * (n * n - 1) / 12.0
        slope = (utotal - (n - 1) / 2.0 * total) / sxx
        se = sigma / math.sqrt(sxx)
        if not math.isfinite(slope):
            return None
        return n, slope, se, rho, level

    # -- findings and persistence ------------------------------------------------------------

    def _finding(
        self, step: int, n: int, slope: float, se: float, rho: float, level: float
    ) -> Finding:
        cfg = self.config
        size = len(self._values)
        onset = self._steps[(self._n - n) % size]
        per = cfg.horizon
        noun = "loss" if cfg.mode == "min" else "value"
        change = self._sign * slope * per  # in the metric's own direction
        of_level = " of its level" if cfg.threshold_mode == "rel" else ""
        reason = (
            f"{noun} has not improved over the last {n} samples: it moves by {change:+.3g} per "
            f"{per} samples (+-{cfg.noise_z * se * per:.2g}), less than the needed "
            f"{rho * per:.3g} ({cfg.threshold:g}{of_level})"
        )
        detail = {
            "window": n,
            "slope": self._sign * slope,
            "slope_se": se,
            "needed_rate": rho,
            "level": self._sign * level,
            "noise_sd": self._sigma(),
            "horizon": per,
            "mode": cfg.mode,
        }
        return Finding(
            kind="plateau",
            severity=Severity.INFO,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=onset,
        )

    def state_dict(self) -> dict[str, Any]:
        size = len(self._values)
        kept = range(max(0, self._n - self._cap), self._n)
        return {
            "detector": "plateau",
            "version": 2,
            "n": self._n,
            "values": [self._values[i % size] for i in kept],
            "steps": [self._steps[i % size] for i in kept],
            "m2": self._m2,
            "prev": self._prev,
            "prev2": self._prev2,
            "since": self._since,
            "found_once": self._found_once,
            "active": self._active,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("detector"), state.get("version")) != ("plateau", 2):
            found = (state.get("detector"), state.get("version"))
            raise ValueError(f"not a plateau detector state (version 2): {found!r}")
        size = len(self._values)
        values = [float(v) for v in state["values"]][-self._cap :]
        steps = [int(s) for s in state["steps"]][-self._cap :]
        self._n = int(state["n"])
        first = self._n - len(values)
        for k, (v, s) in enumerate(zip(values, steps, strict=True)):
            self._values[(first + k) % size], self._steps[(first + k) % size] = v, s
        self._rebuild()
        self._m2 = float(state["m2"])
        self._prev = float(state["prev"])
        self._prev2 = float(state["prev2"])
        self._since = int(state["since"])
        self._found_once = bool(state["found_once"])
        self._active = bool(state["active"])
