"""Plateau: the loss has stopped improving — ReduceLROnPlateau's question, asked of a noisy series.

Why these statistics
--------------------
torch's ``ReduceLROnPlateau`` compares each epoch's metric with the best so far. Per-step
minibatch losses are far noisier than epoch means: a lucky batch sets a "best" the smoothed
loss never beats again, and an unlucky stretch looks like a stall. So this detector

* compares an exponential moving average (span ``smoothing``, alpha = 2 / (span + 1)) rather
  than raw values. For the first ``1 / alpha`` samples it is the plain running mean (alpha_t =
  max(alpha, 1/t)), so it does not start biased towards the first value;
* counts an improvement only when the smoothed value beats the best by more than *both* the
  ``threshold`` (``rel``: a fraction of ``|best|``, ``abs``: in loss units — torch's semantics)
  *and* ``noise_z`` standard errors of the smoothed value. The noise variance sigma^2 is half
  the exponentially weighted mean square successive difference (von Neumann's estimator:
  E[(x_i - x_(i-1))^2] = 2 sigma^2 for independent noise, nearly blind to a smooth trend, unlike
  residuals from a lagging average), and an EMA's standard error is sigma * sqrt(alpha / (2 -
  alpha)). Without this margin, noise alone keeps resetting the patience counter;
* reports ``plateau`` (info) after ``patience`` samples without such an improvement, dated
  (``onset_step``) from the last improvement. Then, like ReduceLROnPlateau, it waits
  ``cooldown`` samples before counting again, so a plateau that outlasts
  ``cooldown + patience`` (e.g. an LR cut did not help) is reported again; each finding is the
  rising edge of one patience-long stretch. ``active`` stays "plateau" until an improvement.

Nothing is reported during the first ``smoothing`` samples, while the average settles.
Non-finite values are skipped: they are the divergence detector's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from lrwatch.types import Finding, Severity


class PlateauConfig(BaseModel):
    """Knobs of :class:`PlateauDetector`; embedded in the daemon's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    mode: Literal["min", "max"] = Field(
        default="min", description="min for losses, max for accuracies"
    )
    threshold: float = Field(
        default=0.01, ge=0, description="smallest improvement that counts (see threshold_mode)"
    )
    threshold_mode: Literal["rel", "abs"] = Field(
        default="rel", description="rel: a fraction of |best|; abs: in the metric's units"
    )
    patience: int = Field(
        default=200, ge=1, description="samples without improvement before a plateau"
    )
    cooldown: int = Field(
        default=200, ge=0, description="samples after a finding before counting again"
    )
    smoothing: int = Field(default=50, ge=1, description="span of the moving average, in samples")
    noise_z: float = Field(
        default=2.0, ge=0, description="improvements must also exceed this many standard errors"
    )


class PlateauDetector:
    """Reports ``plateau`` (info) on one series."""

    kinds: ClassVar[tuple[str, ...]] = ("plateau",)

    def __init__(self, config: PlateauConfig | None = None) -> None:
        self.config = cfg = config or PlateauConfig()
        self._alpha = 2.0 / (cfg.smoothing + 1.0)
        self._sign = 1.0 if cfg.mode == "min" else -1.0  # work on a series to minimise
        self._n = 0
        self._ema = 0.0
        self._msd = 0.0  # EW mean square successive difference
        self._prev = 0.0
        self._best: float | None = None
        self._best_step = 0
        self._bad = 0
        self._cooldown_left = 0
        self._active = False

    @property
    def active(self) -> str | None:
        return "plateau" if self._active else None

    def update(self, step: int, value: float) -> Finding | None:
        if not math.isfinite(value):
            return None
        x = self._sign * value
        self._smooth(x)
        if self._n < self.config.smoothing:
            return None
        if self._best is None:
            self._best, self._best_step = self._ema, step
            return None
        margin = self._margin(self._best)
        if self._ema < self._best - margin:
            self._best, self._best_step, self._bad = self._ema, step, 0
            self._active = False
        else:
            self._bad += 1
        if self._cooldown_left > 0:
            self._cooldown_left -= 1
            self._bad = 0
        if self._bad < self.config.patience:
            return None
        self._bad = 0
        self._cooldown_left = self.config.cooldown
        self._active = True
        return self._finding(step, margin)

    def _smooth(self, x: float) -> None:
        self._n += 1
        a = max(self._alpha, 1.0 / self._n)
        if self._n == 1:
            self._ema = x
        else:
            d = x - self._prev
            w = max(self._alpha, 1.0 / (self._n - 1))  # n - 1 differences so far
            self._msd += w * (d * d - self._msd)
            self._ema += a * (x - self._ema)
        self._prev = x
        if not (math.isfinite(self._ema) and math.isfinite(self._msd)):
            # Values near the float limits overflowed the averages: start over from this one.
            self._n, self._ema, self._msd, self._best, self._bad = 1, x, 0.0, None, 0

    def _stderr(self) -> float:
        a = self._alpha
        return math.sqrt(self._msd / 2.0 * a / (2.0 - a))

    def _margin(self, best: float) -> float:
        cfg = self.config
        needed = cfg.threshold * abs(best) if cfg.threshold_mode == "rel" else cfg.threshold
        return max(needed, cfg.noise_z * self._stderr())

    def _finding(self, step: int, margin: float) -> Finding:
        assert self._best is not None
        cfg = self.config
        best, now = self._sign * self._best, self._sign * self._ema
        noun, verb = ("loss", "fallen below") if cfg.mode == "min" else ("value", "risen above")
        reason = (
            f"smoothed {noun} {now:.4g} has not {verb} its best {best:.4g} (step "
            f"{self._best_step}) by the needed {margin:.3g} in {cfg.patience} samples"
        )
        detail = {
            "best": best,
            "best_step": self._best_step,
            "smoothed": now,
            "margin": margin if math.isfinite(margin) else "inf",  # an absurd threshold
            "noise_stderr": self._stderr(),
            "patience": cfg.patience,
            "mode": cfg.mode,
        }
        return Finding(
            kind="plateau",
            severity=Severity.INFO,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=self._best_step,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "plateau",
            "version": 1,
            "n": self._n,
            "ema": self._ema,
            "msd": self._msd,
            "prev": self._prev,
            "best": self._best,
            "best_step": self._best_step,
            "bad": self._bad,
            "cooldown_left": self._cooldown_left,
            "active": self._active,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("detector"), state.get("version")) != ("plateau", 1):
            found = (state.get("detector"), state.get("version"))
            raise ValueError(f"not a plateau detector state (version 1): {found!r}")
        self._n = int(state["n"])
        self._ema = float(state["ema"])
        self._msd = float(state["msd"])
        self._prev = float(state["prev"])
        best = state["best"]
        self._best = None if best is None else float(best)
        self._best_step = int(state["best_step"])
        self._bad = int(state["bad"])
        self._cooldown_left = int(state["cooldown_left"])
        self._active = bool(state["active"])
