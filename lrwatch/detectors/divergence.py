"""Divergence and spikes: the loss leaves its level, and does or does not come back.

The running-level rules compare each value with the median of the last ``window`` accepted
values and a one-sided spread read off their upper quartile (``_level.py``). A value
``z_threshold`` spreads and ``min_ratio`` times above the level starts an *excursion*, whose
values never enter the window (a divergence cannot teach the detector that it is normal). It
becomes a **divergence** (critical) when it keeps *rising* (``fast_rises`` large rises in a
row), or is *sustained* (``patience`` samples, not decaying, clear in log space, climbing or
crept up to unless ``big_ratio`` up, and higher than the swings the loss recently came back
from); before a level exists, by a *warm-up* blow-up. If it comes back first, it was a
**spike** (warning). The anchored rules (``_anchor.py``) compare with the best level the run
reached, which a diverging loss cannot drag along. A non-finite value is a divergence at once.
One finding per episode; an episode ends after ``recovery`` calm samples, or when the loss
settles at a new level. The reasoning and figures: docs/detectors.md, "Divergence".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lrwatch.detectors import _divergence_findings as findings
from lrwatch.detectors._anchor import Anchor, log_spread
from lrwatch.detectors._excursion import Excursion
from lrwatch.detectors._held import WIDE
from lrwatch.detectors._level import NOISE_MIN, RunningLevel
from lrwatch.detectors._robust import ReturnedPeaks, json_float, plain_median
from lrwatch.protocol.types import Finding, Role

_HYSTERESIS = 0.5  # an excursion continues above this fraction of the thresholds
_CREEP = 10  # the accepted values just before an excursion that tell whether the loss crept up
# The anchored rules' bars are in _anchor.py; a climb's quarters each rise CLIMB_Z standard
# errors. Set from noise simulations (docs/detectors.md), not fitted to a corpus.
CLIMB_Z = 4.0


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


class DivergenceDetector:
    """Reports ``divergence`` (critical) and ``spike`` (warning) on one loss series."""

    kinds: ClassVar[tuple[str, ...]] = ("divergence", "spike")
    roles: ClassVar[tuple[Role, ...]] = (Role.LOSS,)
    config_model: ClassVar[type[DivergenceConfig]] = DivergenceConfig

    def __init__(self, config: DivergenceConfig | None = None) -> None:
        self.config = config or DivergenceConfig()
        self._level = RunningLevel(self.config.window)  # the accepted values
        self._exc: Excursion | None = None
        self._diverging = False
        self._calm = 0  # consecutive samples near the level during an episode
        self._held: list[float] = []  # elevated finite values of the ongoing episode
        # Recent spikes' peaks, for as long as ``window`` accepted values (the level's memory).
        self._returned = ReturnedPeaks(self.config.window)
        # When (``_returned.seen``) the loss last came back from a batch ``big_ratio`` times its
        # level: the values just after are the damage such garbage did, not a creep.
        self._back_at: int | None = None
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
            # A best reached in a noisy stretch is a lucky low: the bar keeps that noise too.
            enough = len(self._level.sorted) >= NOISE_MIN
            self._noise_at_best = log_spread(self._level.sorted) if enough else 0.0
        if len(self._level.sorted) < self.config.min_history:
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
        level the run reached, bursting, climbing at a steady rate in log space, or held far
        above its lowest level (a finding that opens no episode: see arbitration.py)."""
        if not self.config.anchored_rules:
            return None
        sigma = log_spread(self._level.sorted) if len(self._level.sorted) >= NOISE_MIN else None
        if sigma is not None:
            self._anchor.doubt_first(sigma)
            sigma = max(sigma, self._noise_at_best or 0.0)
        hit: tuple[float, int] | tuple[float, int, int] | None
        trigger, hit = "anchored", self._anchor.above(sigma, self._level.run_together)
        if hit is None:
            trigger, hit = "rising", self._anchor.bursting(sigma)
        if hit is None and sigma is not None:
            trigger, hit = "climb", self._anchor.climbing(sigma, CLIMB_Z)
        if hit is None:
            trigger, hit = "held", self._anchor.held()
        if hit is None:
            return None
        if trigger == "held":  # no episode: unless the LR rose, the monitor only warns
            junk = self._after_garbage(WIDE)
            return findings.anchored(step, value, trigger, hit, hit[1], self._anchor, sigma, junk)
        onset = hit[1] if self._exc is None else min(hit[1], self._exc.onset)
        self._exc = None
        self._diverging, self._calm = True, 0
        return findings.anchored(step, value, trigger, hit, onset, self._anchor, sigma)

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
        # A loss underflowed to 0 (overconfident logits) has no lowest value: its median then.
        ref, of = (self._level.median(), "median") if low == 0 else (low, "lowest value")
        if (
            self._diverging
            or not 0 < self.config.warmup_rises <= self._rise_len
            or not 0 < ref < math.inf
            or value < self.config.min_ratio**2 * max(ref, self._level.median())
        ):
            return None
        self._diverging, self._calm = True, 0
        return findings.warmup(step, value, ref, of, self._rise_len, self._rise_start)

    def _maybe_start(self, step: int, value: float) -> Finding | None:
        z = self._z_above(value, self._level.median(), 1.0)
        if z is None:
            self._accept(value)
            return None
        self._exc = Excursion(
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
        level = self._level.median()
        z = self._z_above(value, level, _HYSTERESIS)
        if z is None:  # back near the level before patience ran out: it was a spike
            self._exc = None
            self._accept(value)
            if exc.peak >= cfg.big_ratio * level and exc.length < cfg.patience:  # garbage
                self._back_at = self._returned.seen
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
            self._level.clear()
            for held in exc.values:
                self._accept(held)
            self._exc = None
        return found

    def _confirm(self, step: int, value: float, z: float) -> Finding | None:
        """The sustained path: long enough, not falling back, clear in log space, higher than
        recent swings, and (below ``big_ratio``) climbing or crept up to."""
        exc = self._exc
        assert exc is not None
        cfg = self.config
        patience = cfg.patience
        if exc.length < patience:
            return None
        level = self._level.median()
        if level > 0:
            if exc.length < 3 * patience and exc.decaying(level, patience):
                return None
            typical = plain_median(exc.values)
            # The window's spread, widened when its values (or those before the excursion)
            # run together: a loss that wanders (smoothed, or an RL loss) swings up by itself.
            memory = self._anchor.memory_before(len(exc.values))
            spread = self._level.upper_log_spread() * max(self._level.run_together(), memory)
            if math.log(typical / level) < cfg.confirm_z * spread:
                return None
            if typical <= self._came_back_from(level):
                return None
            if typical < cfg.big_ratio * level and not (
                exc.climbing(cfg.climb_ratio, cfg.confirm_z, spread) or self._crept(level, spread)
            ):
                return None
        return self._diverge(step, value, z, "patience")

    def _crept(self, level: float, spread: float) -> bool:
        """Had the loss been creeping up before the excursion? The median of the last
        ``_CREEP`` accepted values is ``creep_ratio`` above the level, and significantly so (a
        median of k values has a standard error of about 1.25 ``spread`` / sqrt(k)). Not if
        the loss came back among them from a batch ``big_ratio`` times its level: what garbage
        data does to the weights shows in the values after it, and wears off (a convnet's
        loss, 6x up for 25 steps after two garbage batches 200-400x up, back in 40)."""
        if self._after_garbage(_CREEP):
            return False
        recent = plain_median(list(itertools.islice(reversed(self._level.order), _CREEP)))
        if not recent >= self.config.creep_ratio * level:
            return False
        se = 1.25 * spread / math.sqrt(_CREEP)
        return math.log(recent / level) >= self.config.confirm_z * se

    def _after_garbage(self, n: int) -> bool:
        """Did the loss come back from garbage (``big_ratio`` x its level) in its last ``n``?"""
        return self._back_at is not None and self._returned.seen - self._back_at <= n

    def _came_back_from(self, level: float) -> float:
        """How high the loss recently went and came back from by itself, which an excursion
        must clear: the highest value in the window, and ``min_ratio`` times the peak of any
        spike of the last ``window`` samples."""
        if not level > 0:
            return -math.inf
        return max(self._level.sorted[-1], self.config.min_ratio * self._returned.highest())

    def _during_episode(self, value: float) -> None:
        if self._z_above(value, self._level.median(), _HYSTERESIS) is None:
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
        self._level.clear()
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
        self._diverging, self._calm = False, 0
        self._held.clear()

    # -- findings ---------------------------------------------------------------------------

    def _nonfinite(self, step: int, value: float) -> Finding | None:
        self._calm = 0
        if self._diverging:
            return None  # already reported: one finding per episode
        onset = self._exc.onset if self._exc is not None else step
        self._exc = None
        self._diverging = True
        level = self._level.median() if self._level.sorted else None
        return findings.nonfinite(step, value, onset, level)

    def _diverge(self, step: int, value: float, z: float, trigger: str) -> Finding:
        exc = self._exc
        assert exc is not None
        self._exc = None
        self._diverging, self._calm = True, 0
        level, spread, ratio = self._level.median(), self._level.spread(), self.config.min_ratio
        return findings.excursion(step, value, z, trigger, exc, level, spread, ratio)

    def _spike(self, step: int, exc: Excursion) -> Finding:
        level, spread = self._level.median(), self._level.spread()
        return findings.spike(step, exc.peak, exc.peak_z, level, spread, exc.length, exc.onset)

    # -- the running level ------------------------------------------------------------------

    def _accept(self, value: float) -> None:
        self._returned.tick()  # spikes are remembered as long as the values around them
        self._level.accept(value)

    def _z_above(self, value: float, base: float, frac: float) -> float | None:
        """The robust z of ``value`` above ``base`` if it clears ``frac`` of both thresholds.

        The ratio test comes first because it is O(1) and fails for nearly every sample.
        """
        rise = value - base
        if not rise > 0 or rise < frac * (self.config.min_ratio - 1.0) * abs(base):
            return None
        z = rise / self._level.spread()
        return z if z >= frac * self.config.z_threshold else None

    # -- persistence ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "divergence",
            "version": 6,
            "window": list(self._level.order),
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
            "back_at": self._back_at,
            "anchor": self._anchor.state(),
            "noise_at_best": self._noise_at_best,
            "last_step": self._last_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        found = (state.get("detector"), state.get("version"))
        if found[0] != "divergence" or found[1] not in (2, 3, 4, 5, 6):
            raise ValueError(f"not a divergence detector state (version 2 to 6): {found!r}")
        self._level.load(state["window"])
        exc = state["excursion"]
        self._exc = None
        if exc is not None:
            self._exc = Excursion.from_state(exc)
        self._diverging = bool(state["diverging"])
        self._calm = int(state["calm"])
        self._held = [float(v) for v in state["held"]]
        low, self._rise_start, self._rise_len, prev = state["warmup"]
        self._low, self._prev = float(low), float(prev)
        self._rise_start, self._rise_len = int(self._rise_start), int(self._rise_len)
        self._returned = ReturnedPeaks(self.config.window)  # version 2 kept none
        self._returned.load(state.get("returned", []))
        self._back_at = None if state.get("back_at") is None else int(state["back_at"])
        self._anchor = Anchor()  # versions 2 and 3 kept none: it starts from here
        if "anchor" in state:
            self._anchor.load(state["anchor"])
        noise = state.get("noise_at_best")
        self._noise_at_best = None if noise is None else float(noise)
        last = state.get("last_step")
        self._last_step = None if last is None else int(last)
