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

An excursion becomes a **divergence** (critical) in one of three ways:

* *rising*: ``fast_rises`` successive samples each far above the one before (both thresholds
  again) — geometric growth, the signature of a step size past the stability edge, which can
  reach inf within a few samples;
* *sustained*: it has lasted ``patience`` samples, is not falling back (its last sample is still
  above the geometric midpoint between the level and its peak: a corrupted batch or a concept
  shift throws the loss up once, then it decays), and its median clears ``confirm_z`` robust SDs
  *in log space*. The log test is what keeps late-training losses that span decades from paging:
  there a loss of 1e-3 with bad batches at 1e-2 is ordinary, its quartiles say so (a log spread
  of ~1), and a stretch at 10x the median is ~2 log-SDs, not a divergence; for a loss with small
  relative noise (the demo's MSE: log spread ~0.3) the same 2.5x rise is ~3 log-SDs. Quantiles
  commute with the log, so this costs no state: the log-quartiles are the quartiles' logs.
  The log test needs a positive level; at zero or below, the linear tests decide alone.
  Below ``big_ratio`` times the level, the excursion must also be *climbing* (the median of
  its later half ``climb_ratio`` above that of its earlier half, significantly given the
  window's log spread, with the peak in the later half) or have been preceded by a *creep*
  (the last accepted values already up): a step size past the stability edge keeps pushing
  the loss up — an LR raised x8 mid-run doubles the loss within a few steps and climbs on for
  tens of steps before inf, which must be paged then, not once it is 100x up — while a
  concept shift or a bad stretch of data throws the loss up once, then holds or decays (a
  moderate step that holds is a new level after ``window`` samples: the drift detector's);
* *warm-up*: before ``min_history`` samples there is no level to leave, but a loss that rises
  ``warmup_rises`` times in a row to ``min_ratio``² times its lowest value is blowing up from the
  first step (an LR far too high), and waiting for a level would let it reach inf first.

*Higher than the recent swings.* A rising or sustained excursion must also clear what the loss
recently went up to and came back from by itself: the highest value in the window, and
``min_ratio`` times the peak of any spike among the last ``window`` accepted values (see
``_came_back_from``). The bursts of a step size at the edge of stability, a minibatch loss made
bimodal by a concept shift (each return to the old level ends an excursion, the next starts
afresh, and the low post-shift values creep into the window as a "creep") and the bumps of a
late Adam run had paged 5 of the corpus' 81 non-diverging runs; with this test none, and of
the 31 diverging runs one is paged 3 steps later (on its loss, not its gradient norm), the
median and p90 delays unchanged. A non-finite value needs no such proof.

If the loss comes back sooner it was a **spike** (warning), reported on return (only then is it
known not to be a divergence) if at least ``min_spike_length`` of its samples cleared the full
thresholds: one high sample is one bad minibatch. A spike is therefore never ``active``
(``report_spikes: false`` keeps them quiet, as for gradient norms, which spike all the time).
An excursion that neither confirms nor comes back within ``window`` samples is a new level (a
concept shift; the drift detector's business): the window restarts from it, silently.
A non-finite value is a divergence at once (``detail.nonfinite``), dated from the excursion it
ends, if any.

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
import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lrwatch.detectors._anchor import Anchor, log_spread
from lrwatch.detectors._robust import Q3_SIGMA as _Q3_SIGMA
from lrwatch.detectors._robust import ReturnedPeaks, json_float, plain_median
from lrwatch.protocol.types import Finding, Role, Severity

_HYSTERESIS = 0.5  # an excursion continues above this fraction of the thresholds
_CREEP = 10  # the accepted values just before an excursion that tell whether the loss crept up
_SCALE_FLOOR = 0.01  # the spread is at least 1 % of the level: flat (quantised) losses
_TINY = 1e-300  # ... and not zero when the level is
# The anchored rules' bars are in _anchor.py; a climb's quarters each rise CLIMB_Z standard
# errors. Set from noise simulations (docs/detectors.md), not fitted to a corpus.
CLIMB_Z = 4.0
_NOISE_MIN = 20  # accepted values before the window's log spread is trusted


class DivergenceConfig(BaseModel):
    """Knobs of :class:`DivergenceDetector`; embedded in the daemon's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The anchored rules (not a knob): off for gradient norms, which grow for long stretches
    # of healthy training.
    anchored_rules: ClassVar[bool] = True

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
        default=2,
        ge=1,
        description="steps a spike must span above the thresholds; fewer is a bad batch "
        "(a sample stands for the steps since the one before it, so sparse logs are not blind)",
    )
    recovery: int = Field(
        default=5, ge=1, description="samples back near the level that end a divergence episode"
    )
    confirm_z: float = Field(
        default=2.0,
        ge=0,
        description="log-space robust z the median of a sustained excursion must clear",
    )
    big_ratio: float = Field(
        default=10.0,
        gt=1,
        description="a sustained excursion this far up needs no creeping-up before it",
    )
    creep_ratio: float = Field(
        default=1.3,
        gt=1,
        description="... below it, the last 10 accepted values must sit this far above the level",
    )
    climb_ratio: float = Field(
        default=1.2,
        gt=1,
        description="... or the later half of the excursion this far above its earlier half",
    )
    warmup_rises: int = Field(
        default=3,
        ge=0,
        description="rises in a row that are a blow-up before min_history (0: off)",
    )
    report_spikes: bool = Field(default=True, description="report spikes (warnings) at all")

    @model_validator(mode="after")
    def _check(self) -> DivergenceConfig:
        if self.min_history > self.window:
            raise ValueError(f"min_history {self.min_history} must not exceed window {self.window}")
        return self


@dataclass(slots=True)
class _Excursion:
    onset: int
    length: int
    strong: int  # steps whose samples cleared the full thresholds, not just the hysteresis band
    rises: int  # successive samples each far above the one before
    prev: float
    peak: float
    peak_z: float
    values: list[float]  # its samples (at most ``window``: then it is a new level)


class DivergenceDetector:
    """Reports ``divergence`` (critical) and ``spike`` (warning) on one loss series."""

    kinds: ClassVar[tuple[str, ...]] = ("divergence", "spike")
    roles: ClassVar[tuple[Role, ...]] = (Role.LOSS,)
    config_model: ClassVar[type[DivergenceConfig]] = DivergenceConfig

    def __init__(self, config: DivergenceConfig | None = None) -> None:
        self.config = config or DivergenceConfig()
        self._order: deque[float] = deque()  # accepted values, oldest first
        self._sorted: list[float] = []  # the same, sorted
        self._exc: _Excursion | None = None
        self._diverging = False
        self._calm = 0  # consecutive samples near the level during an episode
        self._held: list[float] = []  # elevated finite values of the ongoing episode
        # Recent spikes' peaks, for as long as ``window`` accepted values (the level's memory).
        self._returned = ReturnedPeaks(self.config.window)
        # Warm-up only: the lowest value so far, and the rise in progress (start step, length).
        self._low = math.inf
        self._rise_start = 0
        self._rise_len = 0
        self._prev = math.nan
        self._anchor = Anchor()
        self._noise_at_best: float | None = None
        self._last_step: int | None = None
        self._gap = 1  # steps since the previous sample: what one sample stands for

    @property
    def active(self) -> str | None:
        return "divergence" if self._diverging else None

    # -- the update -------------------------------------------------------------------------

    def update(self, step: int, value: float) -> Finding | None:
        last, self._last_step = self._last_step, step
        self._gap = step - last if last is not None and step > last else 1
        if not math.isfinite(value):
            return self._nonfinite(step, value)
        if self.config.anchored_rules and self._anchor.update(step, value):
            # The noise around the best level: a best reached in a noisy stretch is a lucky
            # low, and the bar keeps the larger of that noise and today's.
            enough = len(self._sorted) >= _NOISE_MIN
            self._noise_at_best = log_spread(self._sorted) if enough else 0.0
        if len(self._sorted) < self.config.min_history:
            found = self._warm_up(step, value)
        elif self._diverging:
            self._during_episode(value)
            return None
        elif self._exc is None:
            found = self._maybe_start(step, value)
        else:
            found = self._during_excursion(step, value)
        if found is None and not self._diverging:
            found = self._anchored(step, value)
        return found

    def _anchored(self, step: int, value: float) -> Finding | None:
        """The rules a diverging loss cannot drag along (see _anchor.py): far above the best
        level the run reached, or climbing at a steady rate in log space."""
        if not self.config.anchored_rules:
            return None
        sigma = log_spread(self._sorted) if len(self._sorted) >= _NOISE_MIN else None
        if sigma is not None and self._noise_at_best is not None:
            sigma = max(sigma, self._noise_at_best)
        hit: tuple[float, int] | tuple[float, int, int] | None
        trigger, hit = "anchored", self._anchor.above(sigma)
        if hit is None:
            trigger, hit = "rising", self._anchor.bursting(sigma)
        if hit is None and sigma is not None:
            trigger, hit = "climb", self._anchor.climbing(sigma, CLIMB_Z)
        if hit is None:
            return None
        factor, onset = hit[0], hit[1]
        if self._exc is not None:
            onset = min(onset, self._exc.onset)
        self._exc = None
        self._diverging, self._calm = True, 0
        best = self._anchor.best
        if trigger == "anchored":
            how = f"{factor:.3g}x the best level {best:.4g} the run had reached"
        elif trigger == "rising":
            how = f"multiplying fast, {factor:.3g}x the best level {best:.4g} the run had reached"
        else:
            how = f"climbing steadily: x{factor:.3g} over its last {hit[-1]} samples"
        detail = {
            "nonfinite": False,
            "trigger": trigger,
            "value": json_float(value),
            "level": json_float(self._anchor.level()),
            "best": json_float(best),
            "ratio": json_float(factor),
            "log_noise": json_float(sigma if sigma is not None else math.nan),
        }
        return Finding(
            kind="divergence",
            severity=Severity.CRITICAL,
            step=step,
            reason=f"loss {value:.4g} is {how}, since step {onset}",
            detail=detail,
            onset_step=onset,
        )

    def _warm_up(self, step: int, value: float) -> Finding | None:
        """No level yet: everything finite makes the level, unless it is blowing up already."""
        self._accept(value)  # (a blow-up's values are in the window: the episode re-bases)
        if value > (1.0 + _HYSTERESIS * (self.config.min_ratio - 1.0)) * self._prev:
            if self._rise_len == 0:
                self._rise_start = step
            self._rise_len += 1
        else:
            self._rise_len = 0
            self._calm_down()  # only a loss that stopped climbing calms an episode down
        self._prev = value
        low, self._low = self._low, min(self._low, value)
        cfg = self.config
        if (
            self._diverging
            or not cfg.warmup_rises
            or self._rise_len < cfg.warmup_rises
            or not 0 < low < math.inf
            or value < cfg.min_ratio**2 * max(low, self._median())
        ):
            return None
        self._diverging, self._calm = True, 0
        reason = (
            f"loss {value:.4g} has risen {self._rise_len} times in a row since step "
            f"{self._rise_start}, to {value / low:.3g}x its lowest value {low:.4g}, before a "
            "running level could form"
        )
        detail = {
            "nonfinite": False,
            "trigger": "warmup",
            "value": json_float(value),
            "level": json_float(low),
            "ratio": json_float(value / low),
            "samples": self._rise_len,
        }
        return Finding(
            kind="divergence",
            severity=Severity.CRITICAL,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=self._rise_start,
        )

    def _maybe_start(self, step: int, value: float) -> Finding | None:
        z = self._z_above(value, self._median(), 1.0)
        if z is None:
            self._accept(value)
            return None
        self._exc = _Excursion(
            onset=step,
            length=1,
            strong=self._gap,
            rises=0,
            prev=value,
            peak=value,
            peak_z=z,
            values=[value],
        )
        return self._confirm(step, value, z)

    def _during_excursion(self, step: int, value: float) -> Finding | None:
        exc = self._exc
        assert exc is not None
        cfg = self.config
        level = self._median()
        z = self._z_above(value, level, _HYSTERESIS)
        if z is None:  # back near the level before patience ran out: it was a spike
            self._exc = None
            self._accept(value)
            if exc.strong < cfg.min_spike_length:
                return None  # one bad batch says nothing about the loss's swings
            self._returned.add(exc.peak)
            return self._spike(step, exc) if cfg.report_spikes else None
        exc.length += 1
        exc.values.append(value)
        exc.strong += self._gap if self._z_above(value, level, 1.0) is not None else 0
        exc.rises = exc.rises + 1 if self._z_above(value, exc.prev, 1.0) is not None else 0
        exc.prev = value
        if value > exc.peak:
            exc.peak, exc.peak_z = value, z
        if exc.rises >= cfg.fast_rises and value > self._came_back_from(level):
            return self._diverge(step, value, z, "rising")
        found = self._confirm(step, value, z)
        if found is None and exc.length >= cfg.window:
            # Neither up for good nor back: a new level (a concept shift). Watch that one.
            self._order.clear()
            self._sorted.clear()
            for held in exc.values:
                self._accept(held)
            self._exc = None
        return found

    def _confirm(self, step: int, value: float, z: float) -> Finding | None:
        """The sustained path: long enough, not falling back, and clear in log space too.

        A moderate step up (below ``big_ratio``) counts only if the loss had been creeping up
        before it: a step size past the stability edge grows the loss before it leaps, while a
        concept shift or a bad batch throws it up at once (and a moderate step that stays is a
        new level after ``window`` samples: the drift detector's business).
        """
        exc = self._exc
        assert exc is not None
        cfg = self.config
        patience = cfg.patience
        if exc.length < patience:
            return None
        level = self._median()
        if level > 0:
            if exc.length < 3 * patience and self._decaying(exc, level):
                return None
            typical = plain_median(exc.values)
            if math.log(typical / level) < cfg.confirm_z * self._log_spread():
                return None
            if typical <= self._came_back_from(level):
                return None
            if typical < cfg.big_ratio * level and not (self._climbing(exc) or self._crept(level)):
                return None
        return self._diverge(step, value, z, "patience")

    def _climbing(self, exc: _Excursion) -> bool:
        """Is the loss still climbing within the excursion? The median of its later half is
        ``climb_ratio`` above that of its earlier half: a step size past the stability edge
        keeps pushing the loss up, a concept shift or a bad stretch of data throws it up once
        and then it holds or decays. The peak must be in the later half too: a loss coming
        back from a huge bad batch also has a higher later half than its trough."""
        v = exc.values
        half = len(v) // 2
        if half == 0:
            return False
        early, late = plain_median(v[:half]), plain_median(v[half:])
        if not late >= self.config.climb_ratio * early or max(v[:half]) > max(v[half:]):
            return False
        # ... and significantly so: the two medians' log difference has a standard error of
        # about 1.25 log-spread * sqrt(1/n1 + 1/n2) (the window's noise, as in ``_crept``).
        se = 1.25 * self._log_spread() * math.sqrt(1.0 / half + 1.0 / (len(v) - half))
        return math.log(late / early) >= self.config.confirm_z * se

    def _crept(self, level: float) -> bool:
        """Had the loss been creeping up before the excursion? The median of the last
        ``_CREEP`` accepted values is ``creep_ratio`` above the level, and significantly so (a
        median of k values has a standard error of about 1.25 spread / sqrt(k))."""
        recent = plain_median(list(itertools.islice(reversed(self._order), _CREEP)))
        if not recent >= self.config.creep_ratio * level:
            return False
        se = 1.25 * self._log_spread() / math.sqrt(_CREEP)
        return math.log(recent / level) >= self.config.confirm_z * se

    def _decaying(self, exc: _Excursion, level: float) -> bool:
        """Falling back: the last three samples fall, or the recent ones sit below the
        geometric midpoint between the level and the peak."""
        v = exc.values
        if len(v) >= 3 and v[-1] < v[-2] < v[-3]:
            return True
        recent = plain_median(v[-self.config.patience :])
        return recent * recent < exc.peak * level

    def _came_back_from(self, level: float) -> float:
        """How high the loss recently went and came back from by itself: an excursion must
        clear it to be a divergence. That is the highest value in the window (swings accepted
        during the warm-up, or kept when the window re-based) and ``min_ratio`` times the peak
        of any spike of the last ``window`` samples (a spike is measured from the level, so the
        next swing must leave the spike's height as an excursion leaves the level). Without
        it, the bursts of a step size at the edge of stability, and a minibatch loss made
        bimodal by a concept shift (its returns to the old level end one excursion after
        another, and its low values creep into the window), page again and again. A divergence
        soon goes higher than anything recent; a non-finite value needs no such proof."""
        if not level > 0:
            return -math.inf
        return max(self._sorted[-1], self.config.min_ratio * self._returned.highest())

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
        before, after = plain_median(self._held[:half]), plain_median(self._held[half:])
        if after - before >= (self.config.min_ratio - 1.0) * abs(before):
            del self._held[:half]  # still climbing: keep watching (O(log w) amortised)
            return
        # The loss has settled at a new level: watch that one from now on.
        self._order.clear()
        self._sorted.clear()
        for held in self._held:
            self._accept(held)
        self._anchor.rebase()
        self._end_episode()

    def _calm_down(self) -> None:
        if self._diverging:
            self._calm += 1
            if self._calm >= self.config.recovery:
                # Calm near the running level, which may have followed the loss up: the
                # episode is over, and the level it ended at is the reference from now on.
                self._anchor.rebase()
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
        shown = json_float(value)
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
            detail={"nonfinite": True, "value": shown, "level": json_float(level)},
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
            "value": json_float(value),
            "level": json_float(level),
            "spread": json_float(self._spread()),
            "z": json_float(z),
            "ratio": json_float(ratio),
            "peak": json_float(exc.peak),
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
            "peak": json_float(exc.peak),
            "level": json_float(level),
            "spread": json_float(self._spread()),
            "z": json_float(exc.peak_z),
            "ratio": json_float(ratio),
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
        self._returned.tick()  # spikes are remembered as long as the values around them
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

    def _log_spread(self) -> float:
        """The upper-quartile spread of the log values (a positive level assumed)."""
        m, q3 = self._median(), self._quantile(0.75)
        return max(math.log(q3 / m) / _Q3_SIGMA, math.log1p(_SCALE_FLOOR))

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
            "version": 4,
            "window": list(self._order),
            "excursion": asdict(self._exc) if self._exc is not None else None,
            "diverging": self._diverging,
            "calm": self._calm,
            "held": list(self._held),
            "warmup": [
                json_float(self._low),
                self._rise_start,
                self._rise_len,
                json_float(self._prev),
            ],
            "returned": self._returned.state(),
            "anchor": self._anchor.state(),
            "noise_at_best": self._noise_at_best,
            "last_step": self._last_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        found = (state.get("detector"), state.get("version"))
        if found not in (("divergence", 2), ("divergence", 3), ("divergence", 4)):
            raise ValueError(f"not a divergence detector state (version 2 to 4): {found!r}")
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
                values=[float(v) for v in exc["values"]],
            )
        self._diverging = bool(state["diverging"])
        self._calm = int(state["calm"])
        self._held = [float(v) for v in state["held"]]
        low, self._rise_start, self._rise_len, prev = state["warmup"]
        self._low, self._prev = float(low), float(prev)
        self._rise_start, self._rise_len = int(self._rise_start), int(self._rise_len)
        self._returned = ReturnedPeaks(self.config.window)  # version 2 kept none
        self._returned.load(state.get("returned", []))
        self._anchor = Anchor()  # versions 2 and 3 kept none: it starts from here
        if "anchor" in state:
            self._anchor.load(state["anchor"])
        noise = state.get("noise_at_best")
        self._noise_at_best = None if noise is None else float(noise)
        last = state.get("last_step")
        self._last_step = None if last is None else int(last)
