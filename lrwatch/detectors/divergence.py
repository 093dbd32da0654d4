"""Divergence and spikes: the loss leaves its recent level, and does or does not come back.

Why these statistics
--------------------
*Level* is the running median of the last ``window`` accepted values: a median ignores the
occasional bad batch that would drag a mean (or an EMA) upwards, and it is exact under the
sliding window (a sorted list kept with ``bisect``: O(log w) comparisons per sample plus a
memmove of at most ``window`` pointers).

*Spread* is one-sided: ``(Q3 - median) / 0.6745``, the upper quartile's distance from the
median rescaled to a standard deviation (Q3 - median = 0.6745 sigma for a normal law). A rise
is the only departure tested here, so the spread that matters is the upper half's; the
symmetric MAD also counts the lower tail, which is long for minibatch losses late in training
(many near-perfect batches). Quantiles are read off the sorted window in O(1) and, like the
MAD, break down only past 25 % outliers. z = (value - median) / spread, "robust SDs".

*Linear, not log, space.* Losses span decades over a run, but the window is local and every
test here is scale-free (median and spread scale with the loss, and so does the ratio test),
so the log buys no invariance; it only changes the shape. Minibatch losses are right-skewed,
and the log compresses exactly the upper tail where spikes live: on the healthy test curves
(digits MLP, batch 16) a 2-sample spike of 5x the level scored ~2.5 robust SDs in log space
and ~5 in linear space. Over 12 healthy runs with a 5x spike at 11 places each, log space at
z >= 3 found 97/132 spikes, linear space at z >= 4 found 124/132, each with one natural false
spike in all 7,200 samples. Linear space also copes with zero and negative losses as they are.

A value *starts an excursion* when it is both ``z_threshold`` spreads and ``min_ratio`` times
(as a rise: ``(min_ratio - 1) * |median|``) above the level: the z test scales with the run's
noise, the ratio test keeps a run with near-zero noise (quantised or full-batch losses) from
alarming on a 1 % wiggle. The excursion *continues* while values stay above half of both
thresholds (hysteresis: a loss hovering near the threshold is one excursion, not many).
Excursion values never enter the window, so a divergence cannot teach the detector that a
diverging loss is normal.

An excursion becomes a **divergence** (critical) once it has lasted ``patience`` samples, or
earlier when it *keeps rising*: ``fast_rises`` successive samples each far above the one before
(both thresholds again) — geometric growth, the signature of a step size past the stability
edge, which can reach inf before ``patience`` runs out. If the loss comes back sooner it was a
**spike** (warning), reported on return (only then is it known not to be a divergence) if at
least ``min_spike_length`` of its samples cleared the full thresholds: one high sample is one
bad minibatch. A spike is therefore never ``active``. A non-finite value is a divergence at once
(``detail.nonfinite``), dated from the excursion it ends, if any.

A divergence episode lasts until ``recovery`` samples in a row are back near the level; a new
episode means a new finding, and nothing fires within one (a NaN after a reported rise is the
same episode). If the loss settles at a new, higher level instead — ``window`` elevated samples
whose second half is not ``min_ratio`` above the first — the episode ends and the window
restarts from them, so the detector watches the new regime rather than a level that is gone;
a loss still climbing stays one episode however long it climbs. Slow upward drift is not this
detector's business: it creeps into the window, by design.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lrwatch.types import Finding, Severity

_Q3_SIGMA = 0.6744897501960817  # Q3 - median of a standard normal
_HYSTERESIS = 0.5  # an excursion continues above this fraction of the thresholds
_SCALE_FLOOR = 0.01  # the spread is at least 1 % of the level: flat (quantised) losses
_TINY = 1e-300  # ... and not zero when the level is


class DivergenceConfig(BaseModel):
    """Knobs of :class:`DivergenceDetector`; embedded in the daemon's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window: int = Field(
        default=50, ge=8, le=100_000, description="accepted samples the running level is read from"
    )
    min_history: int = Field(
        default=20, ge=4, description="accepted samples needed before any finding but non-finite"
    )
    z_threshold: float = Field(
        default=4.0, gt=0, description="robust z (upper-quartile spread) that starts an excursion"
    )
    min_ratio: float = Field(
        default=2.0, gt=1, description="... and the factor above the level it must also reach"
    )
    patience: int = Field(
        default=4, ge=1, description="samples an excursion lasts before it is a divergence"
    )
    fast_rises: int = Field(
        default=2, ge=1, description="successive large rises that make it a divergence sooner"
    )
    min_spike_length: int = Field(
        default=2, ge=1, description="high samples a spike needs; fewer is a bad batch"
    )
    recovery: int = Field(
        default=5, ge=1, description="samples back near the level that end a divergence episode"
    )

    @model_validator(mode="after")
    def _check(self) -> DivergenceConfig:
        if self.min_history > self.window:
            raise ValueError(f"min_history {self.min_history} must not exceed window {self.window}")
        return self


@dataclass(slots=True)
class _Excursion:
    onset: int
    length: int
    strong: int  # samples that cleared the full thresholds, not just the hysteresis band
    rises: int  # successive samples each far above the one before
    prev: float
    peak: float
    peak_z: float


def _json_float(x: float) -> float | str:
    """Finding details must be strict JSON; non-finite floats become strings."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _plain_median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else s[mid - 1] / 2 + s[mid] / 2


class DivergenceDetector:
    """Reports ``divergence`` (critical) and ``spike`` (warning) on one loss series."""

    kinds: ClassVar[tuple[str, ...]] = ("divergence", "spike")

    def __init__(self, config: DivergenceConfig | None = None) -> None:
        self.config = config or DivergenceConfig()
        self._order: deque[float] = deque()  # accepted values, oldest first
        self._sorted: list[float] = []  # the same, sorted
        self._exc: _Excursion | None = None
        self._diverging = False
        self._calm = 0  # consecutive samples near the level during an episode
        self._held: list[float] = []  # elevated finite values of the ongoing episode

    @property
    def active(self) -> str | None:
        return "divergence" if self._diverging else None

    # -- the update -------------------------------------------------------------------------

    def update(self, step: int, value: float) -> Finding | None:
        if not math.isfinite(value):
            return self._nonfinite(step, value)
        if len(self._sorted) < self.config.min_history:
            self._accept(value)  # warm-up: no level yet, so everything finite makes the level
            self._calm_down()
            return None
        if self._diverging:
            self._during_episode(value)
            return None
        if self._exc is None:
            return self._maybe_start(step, value)
        return self._during_excursion(step, value)

    def _maybe_start(self, step: int, value: float) -> Finding | None:
        z = self._z_above(value, self._median(), 1.0)
        if z is None:
            self._accept(value)
            return None
        self._exc = _Excursion(
            onset=step, length=1, strong=1, rises=0, prev=value, peak=value, peak_z=z
        )
        if self.config.patience <= 1:
            return self._diverge(step, value, z, "patience")
        return None

    def _during_excursion(self, step: int, value: float) -> Finding | None:
        exc = self._exc
        assert exc is not None
        cfg = self.config
        level = self._median()
        z = self._z_above(value, level, _HYSTERESIS)
        if z is None:  # back near the level before patience ran out: it was a spike
            self._exc = None
            self._accept(value)
            return self._spike(step, exc) if exc.strong >= cfg.min_spike_length else None
        exc.length += 1
        exc.strong += self._z_above(value, level, 1.0) is not None
        exc.rises = exc.rises + 1 if self._z_above(value, exc.prev, 1.0) is not None else 0
        exc.prev = value
        if value > exc.peak:
            exc.peak, exc.peak_z = value, z
        if exc.rises >= cfg.fast_rises:
            return self._diverge(step, value, z, "rising")
        if exc.length >= cfg.patience:
            return self._diverge(step, value, z, "patience")
        return None

    def _during_episode(self, value: float) -> None:
        if self._z_above(value, self._median(), _HYSTERESIS) is None:
            self._accept(value)
            self._calm_down()
            return
        self._calm = 0
        self._held.append(value)
        w = self.config.window
        if len(self._held) < w:
            return
        half = w // 2
        before, after = _plain_median(self._held[:half]), _plain_median(self._held[half:])
        if after - before >= (self.config.min_ratio - 1.0) * abs(before):
            del self._held[:half]  # still climbing: keep watching (O(log w) amortised)
            return
        # The loss has settled at a new level: watch that one from now on.
        self._order.clear()
        self._sorted.clear()
        for held in self._held:
            self._accept(held)
        self._end_episode()

    def _calm_down(self) -> None:
        if self._diverging:
            self._calm += 1
            if self._calm >= self.config.recovery:
                self._end_episode()

    def _end_episode(self) -> None:
        self._diverging = False
        self._calm = 0
        self._held.clear()

    # -- findings ---------------------------------------------------------------------------

    def _nonfinite(self, step: int, value: float) -> Finding | None:
        self._calm = 0
        if self._diverging:
            return None  # already reported: one finding per episode
        onset = self._exc.onset if self._exc is not None else step
        self._exc = None
        self._diverging = True
        shown = _json_float(value)
        if self._sorted:
            level = self._median()
            since = f", rising since step {onset}" if onset != step else ""
            context = f" (running median {level:.4g}{since})"
        else:
            level, context = math.nan, ""
        return Finding(
            kind="divergence",
            severity=Severity.CRITICAL,
            step=step,
            reason=f"loss is {shown} at step {step}{context}",
            detail={"nonfinite": True, "value": shown, "level": _json_float(level)},
            onset_step=onset,
        )

    def _diverge(self, step: int, value: float, z: float, trigger: str) -> Finding:
        exc = self._exc
        assert exc is not None
        self._exc = None
        self._diverging, self._calm = True, 0
        level = self._median()
        ratio = value / level if level > 0 else math.inf
        if trigger == "rising":
            how = f"rose {exc.rises} times in a row by a factor of {self.config.min_ratio:g}+"
        else:
            how = f"has stayed up for {exc.length} samples"
        reason = (
            f"loss {value:.4g} is {z:.1f} robust SDs ({ratio:.3g}x) above its running median "
            f"{level:.4g} and {how} since step {exc.onset}"
        )
        detail = {
            "nonfinite": False,
            "trigger": trigger,
            "value": _json_float(value),
            "level": _json_float(level),
            "spread": _json_float(self._spread()),
            "z": _json_float(z),
            "ratio": _json_float(ratio),
            "peak": _json_float(exc.peak),
            "samples": exc.length,
        }
        return Finding(
            kind="divergence",
            severity=Severity.CRITICAL,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=exc.onset,
        )

    def _spike(self, step: int, exc: _Excursion) -> Finding:
        level = self._median()
        ratio = exc.peak / level if level > 0 else math.inf
        reason = (
            f"loss spiked to {exc.peak:.4g} ({ratio:.3g}x its running median {level:.4g}, "
            f"{exc.peak_z:.1f} robust SDs) at step {exc.onset} and was back after "
            f"{exc.length} samples"
        )
        detail = {
            "peak": _json_float(exc.peak),
            "level": _json_float(level),
            "spread": _json_float(self._spread()),
            "z": _json_float(exc.peak_z),
            "ratio": _json_float(ratio),
            "samples": exc.length,
        }
        return Finding(
            kind="spike",
            severity=Severity.WARNING,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=exc.onset,
        )

    # -- the running level ------------------------------------------------------------------

    def _accept(self, value: float) -> None:
        self._order.append(value)
        bisect.insort(self._sorted, value)
        if len(self._order) > self.config.window:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def _quantile(self, p: float) -> float:
        s = self._sorted
        pos = p * (len(s) - 1)
        lo = int(pos)
        frac = pos - lo
        if frac == 0.0 or lo + 1 >= len(s):
            return s[lo]
        return s[lo] * (1.0 - frac) + s[lo + 1] * frac  # weights sum to 1: no overflow

    def _median(self) -> float:
        return self._quantile(0.5)

    def _spread(self) -> float:
        m = self._median()
        return max((self._quantile(0.75) - m) / _Q3_SIGMA, _SCALE_FLOOR * abs(m), _TINY)

    def _z_above(self, value: float, base: float, frac: float) -> float | None:
        """The robust z of ``value`` above ``base`` if it clears ``frac`` of both thresholds.

        The ratio test comes first because it is O(1) and fails for nearly every sample.
        """
        rise = value - base
        if not rise > 0 or rise < frac * (self.config.min_ratio - 1.0) * abs(base):
            return None
        z = rise / self._spread()
        return z if z >= frac * self.config.z_threshold else None

    # -- persistence ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "divergence",
            "version": 1,
            "window": list(self._order),
            "excursion": asdict(self._exc) if self._exc is not None else None,
            "diverging": self._diverging,
            "calm": self._calm,
            "held": list(self._held),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("detector"), state.get("version")) != ("divergence", 1):
            found = (state.get("detector"), state.get("version"))
            raise ValueError(f"not a divergence detector state (version 1): {found!r}")
        self._order = deque(float(v) for v in state["window"][-self.config.window :])
        self._sorted = sorted(self._order)
        exc = state["excursion"]
        self._exc = None
        if exc is not None:
            self._exc = _Excursion(
                onset=int(exc["onset"]),
                length=int(exc["length"]),
                strong=int(exc["strong"]),
                rises=int(exc["rises"]),
                prev=float(exc["prev"]),
                peak=float(exc["peak"]),
                peak_z=float(exc["peak_z"]),
            )
        self._diverging = bool(state["diverging"])
        self._calm = int(state["calm"])
        self._held = [float(v) for v in state["held"]]
