"""Plateau: the loss has stopped improving — ReduceLROnPlateau's question, asked of a noisy series.

ReduceLROnPlateau, fed per-step minibatch losses, cuts all the time: a lucky batch sets a "best"
the loss will not beat for a while. So this detector asks with a confidence bound: *is the loss
improving by less than ``threshold`` per ``horizon`` samples?* The rate is the least-squares
slope over a window, its noise the window's own (from the mean square second difference); a
plateau is when the slope's whole confidence interval lies within the rate that counts. Windows
of ``patience`` samples, 1.5x longer each up to ``max_window``: the shortest that proves the
plateau wins. A loss that rises is not on a plateau (the divergence and drift detectors').

A finding (info) is the rising edge of a plateau, dated from the start of the window that proved
it; then it waits ``cooldown`` samples, and a new finding needs a window wholly after the last
one. ``active`` stays "plateau" until the loss improves with confidence faster than the rate.
Nothing is reported in the first ``patience`` samples; non-finite values are skipped. The
reasoning and figures: docs/detectors.md, "Plateau".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lrwatch.protocol.types import Finding, Role, Severity

_GROW = 1.5  # each window tried is this much longer than the one before
_STRIDE = 8  # ... and is tested every n // _STRIDE samples


class PlateauConfig(BaseModel):
    """Knobs of :class:`PlateauDetector`; embedded in the daemon's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    mode: Literal["min", "max"] = Field(
        default="min", description="min for losses, max for accuracies"
    )
    threshold: float = Field(
        default=0.025,
        ge=0,
        description="an improvement smaller than this per `horizon` samples does not count",
    )
    threshold_mode: Literal["rel", "abs"] = Field(
        default="rel", description="rel: a fraction of |level|; abs: in the metric's units"
    )
    patience: int = Field(
        default=10, ge=3, description="samples the evidence covers at least (the first window)"
    )
    horizon: int | None = Field(
        default=None,
        ge=1,
        description="samples over which `threshold` is the improvement due (default: patience)",
    )
    cooldown: int = Field(
        default=400,
        ge=0,
        description="samples after a finding before another one (an LR cut's effect takes long "
        "to show in a noisy loss)",
    )
    noise_z: float = Field(
        default=2.0, ge=0, description="confidence of the bound on the improvement rate, in SEs"
    )
    max_window: int = Field(
        default=1000, ge=3, le=100_000, description="longest stretch the evidence is read from"
    )

    @model_validator(mode="after")
    def _check(self) -> PlateauConfig:
        if self.patience > self.max_window:
            raise ValueError(
                f"patience {self.patience} must not exceed max_window {self.max_window}"
            )
        return self

    @property
    def per(self) -> int:
        """The samples ``threshold`` is counted over."""
        return self.horizon if self.horizon is not None else self.patience


def _windows(cfg: PlateauConfig) -> tuple[tuple[int, int, float, float], ...]:
    """The windows tried, shortest first: ``patience`` growing by ``_GROW`` to ``max_window``
    (12 of them with the defaults), each as (length n, stride, Sxx, SE factor).

    A window of ``n`` is tested every ``n // _STRIDE`` samples only (rounded down to a power of
    two, so that the windows due at a sample are a prefix of the list): a plateau it proves
    stays provable for a while, so this delays a finding by at most an eighth of its window
    and cuts the cost to about three window tests per sample whatever ``max_window``. The SE
    factor turns the noise SD into the slope's SE, times a small-sample allowance: the noise is
    read off n - 2 overlapping second differences, worth about (n - 2) / 2 independent squares,
    and 1 + 4 / (n - 2) is roughly a t quantile's excess over the normal one for that many
    degrees of freedom (1.5 for the first window of 10). With 1 + 2 / (n - 2) a noisy
    loss still falling 0.35 % per sample read as flat over 10 samples by chance; the corpus
    scores are the same either way."""
    lengths = [cfg.patience]
    while lengths[-1] < cfg.max_window:
        lengths.append(min(cfg.max_window, max(lengths[-1] + 1, round(lengths[-1] * _GROW))))
    out = []
    for n in lengths:
        sxx = n * (n * n - 1) / 12.0
        factor = (1.0 + 4.0 / (n - 2)) / math.sqrt(6.0 * (n - 2) * sxx)
        stride = 1 << max(0, (n // _STRIDE).bit_length() - 1)  # a power of two
        out.append((n, stride, sxx, factor))
    return tuple(out)


class PlateauDetector:
    """Reports ``plateau`` (info) on one series."""

    kinds: ClassVar[tuple[str, ...]] = ("plateau",)
    roles: ClassVar[tuple[Role, ...]] = (Role.LOSS,)
    config_model: ClassVar[type[PlateauConfig]] = PlateauConfig

    def __init__(self, config: PlateauConfig | None = None) -> None:
        self.config = cfg = config or PlateauConfig()
        self._sign = 1.0 if cfg.mode == "min" else -1.0  # work on a series to minimise
        self._lengths = _windows(cfg)
        self._cap = cfg.max_window  # the longest window
        size = 2 * self._cap  # room to run on for ``cap`` samples between rebuilds
        self._values = [0.0] * size  # ring buffers, indexed by sample number modulo size
        self._steps = [0] * size
        self._d2 = [0.0] * size  # squared second difference ending at each sample
        self._sum = [0.0] * size  # prefix sums since the last rebuild: of x, i*x, d2^2
        self._isum = [0.0] * size
        self._qsum = [0.0] * size
        self._n = 0  # samples seen (finite ones)
        self._base = 0  # sample number the prefix sums start from
        self._since = 0  # samples since the last finding (cooldown and fresh window)
        self._found_once = False
        self._active = False
        self._proof = cfg.patience  # the window that proved the last plateau

    @property
    def active(self) -> str | None:
        return "plateau" if self._active else None

    def update(self, step: int, value: float) -> Finding | None:
        if not math.isfinite(value):
            return None
        self._push(step, self._sign * value)
        if self._n < self.config.patience:
            return None
        n, slope, se, rho, level, flat, improving = self._test()
        if self._active and improving:
            self._active = False  # improving again, with confidence
        if not flat or not self._may_report(n):
            return None
        self._active, self._since, self._found_once, self._proof = True, 0, True, n
        return self._finding(step, n, slope, se, rho, level)

    def _may_report(self, n: int) -> bool:
        if not self._found_once:
            return True
        return self._since >= max(self.config.cooldown, n)

    # -- the running statistics ----------------------------------------------------------------

    def _push(self, step: int, x: float) -> None:
        size = len(self._values)
        i = self._n
        slot = i % size
        d2 = 0.0
        if i >= 2:
            # Second differences: a linear trend cancels, a curved one nearly so, which first
            # differences would count as noise right after a fast descent.
            d2 = x - 2.0 * self._values[(i - 1) % size] + self._values[(i - 2) % size]
        self._values[slot], self._steps[slot], self._d2[slot] = x, step, d2 * d2
        self._since += 1
        self._n += 1
        if i - self._base >= size - 1 or not self._prefix(i, slot):
            self._rebuild(max(0, self._n - self._cap))

    def _prefix(self, i: int, slot: int) -> bool:
        """Extend the prefix sums by sample ``i``; False if they overflowed."""
        x, q = self._values[slot], self._d2[slot]
        if i == self._base:
            total, itotal, qtotal = x, 0.0, q
        else:
            prev = (slot - 1) % len(self._values)
            total = self._sum[prev] + x
            itotal = self._isum[prev] + (i - self._base) * x
            qtotal = self._qsum[prev] + q
        self._sum[slot], self._isum[slot], self._qsum[slot] = total, itotal, qtotal
        return math.isfinite(total) and math.isfinite(itotal) and math.isfinite(qtotal)

    def _rebuild(self, base: int) -> None:
        """Restart the prefix sums at sample ``base``: ``cap`` samples back, O(cap) once every
        ``cap`` samples; or, on a resume, where the uninterrupted detector started them."""
        size = len(self._values)
        self._base = base
        for i in range(base, self._n):
            self._prefix(i, i % size)

    def _test(self) -> tuple[int, float, float, float, float, bool, bool]:
        """The shortest window due that proves a plateau: (n, slope, its SE, rho, level, True,
        improving); else (0, .., False, improving). ``improving`` is
        read off the first window tested as long as the one that proved the last plateau:
        shorter ones are noisier, longer ones may still hold the descent before the plateau.
        Hot path: one prefix-sum difference per window sum; the d2 sum covers the n - 2
        second differences that lie wholly inside the window (from its third sample on)."""
        cfg = self.config
        z, rate, rel = cfg.noise_z, cfg.threshold / cfg.per, cfg.threshold_mode == "rel"
        count, base = self._n, self._base
        have = count - base
        sums, isums, qsums = self._sum, self._isum, self._qsum
        size = len(self._values)
        last = (count - 1) % size
        s_all, i_all, q_all = sums[last], isums[last], qsums[last]
        improving = False
        tested = None
        for n, stride, sxx, factor in self._lengths:
            # Strides are powers of two growing with n: the windows due are a prefix.
            if n > have or count & (stride - 1):
                break
            first = count - n
            if first > base:
                before = (first - 1) % size
                total, itotal = s_all - sums[before], i_all - isums[before]
            else:
                total, itotal = s_all, i_all
            q = q_all - qsums[(first + 1) % size]  # the n - 2 second differences inside
            slope = (itotal - (first - base) * total - (n - 1) * 0.5 * total) / sxx
            # The window's own noise: E[d2^2] = 6 sigma^2 for independent noise.
            # (q may round below zero; NaN when the sums overflowed: then nothing is flat.)
            bound = z * factor * math.sqrt(q) if q > 0.0 else (0.0 if q <= 0.0 else math.nan)
            level = total / n
            rho = rate * abs(level) if rel else rate
            # Flat with confidence: not improving faster than rho, and not rising faster either
            # (a loss on its way up is the divergence and drift detectors' business, and halving
            # the LR for a "plateau" a few steps before a divergence would spend the cooldown).
            # NaN or inf anywhere makes every comparison False: no finding.
            if (slope if slope >= 0.0 else -slope) + bound < rho:
                se = math.sqrt(max(q, 0.0) / (6.0 * (n - 2) * sxx))
                return n, slope, se, rho, level, True, improving
            if tested is None and n >= self._proof:
                tested = n
                improving = -slope - bound > rho
        return 0, 0.0, 0.0, 0.0, 0.0, False, improving

    # -- findings and persistence ------------------------------------------------------------

    def _finding(
        self, step: int, n: int, slope: float, se: float, rho: float, level: float
    ) -> Finding:
        cfg = self.config
        size = len(self._values)
        onset = self._steps[(self._n - n) % size]
        per = cfg.per
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
            "noise_sd": se * math.sqrt(n * (n * n - 1) / 12.0),
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
        # Everything the prefix sums are built from, from where they start: a resumed detector
        # adds the same floats in the same order, so its slopes equal the uninterrupted one's
        # to the last bit, and a window on the edge of its bar is judged the same.
        size = len(self._values)
        kept = range(self._base, self._n)
        return {
            "detector": "plateau",
            "version": 4,
            "n": self._n,
            "values": [self._values[i % size] for i in kept],
            "steps": [self._steps[i % size] for i in kept],
            "d2": [self._d2[i % size] for i in kept],
            "since": self._since,
            "found_once": self._found_once,
            "active": self._active,
            "proof": self._proof,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        found = (state.get("detector"), state.get("version"))
        if found not in (("plateau", 2), ("plateau", 3), ("plateau", 4)):
            raise ValueError(f"not a plateau detector state (version 2 to 4): {found!r}")
        size, current = len(self._values), state.get("version") == 4
        keep = size - 1 if current else self._cap  # (2, 3: the last max_window samples)
        values = [float(v) for v in state["values"]][-keep:]
        steps = [int(s) for s in state["steps"]][-keep:]
        saved = [float(q) for q in state["d2"]][-keep:] if current else None
        self._n = int(state["n"])
        first = self._n - len(values)
        if first < 0 or (saved is not None and len(saved) != len(values)):
            raise ValueError("plateau state: n, values and d2 do not agree")
        for k, (v, s) in enumerate(zip(values, steps, strict=True)):
            i = first + k
            d2 = v - 2.0 * values[k - 1] + values[k - 2] if k >= 2 else 0.0
            self._values[i % size], self._steps[i % size] = v, s
            self._d2[i % size] = d2 * d2 if saved is None else saved[k]
        self._rebuild(first)
        self._since = int(state["since"])
        self._found_once = bool(state["found_once"])
        self._active = bool(state["active"])
        self._proof = int(state.get("proof", self.config.patience))
