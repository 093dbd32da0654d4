"""Drift: the loss of a long-running job moves up to a new level and stays there.

A concept shift (the data change; the loss steps up, then creeps down as the model adapts) is
not a divergence: nothing runs away, and cutting the LR would only slow the adaptation. So it
is its own kind, reported, not acted on (the policy's choice). The test is Page's CUSUM on the
*log* loss against an exponential moving baseline, each excess standardised by the series'
successive-difference noise and clipped, so one bad batch cannot trip it: a finding when the
sum reaches ``threshold``, dated from the last time it was zero. Then the baseline jumps to
the new level; ``active`` stays "drift" for ``baseline_span`` samples, extended silently while
the loss keeps moving up. A shift of ``sharp_ratio`` or more is held back ``sharp_wait``
samples, since it may be a divergence in the making. Values at or below zero and non-finite
ones are skipped. The reasoning and figures: docs/detectors.md, "Drift".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lrwatch.protocol.types import Finding, Role, Severity

_MAD_TO_SD = math.sqrt(math.pi) / 2.0  # sigma = E|x_t - x_(t-1)| * sqrt(pi) / 2
_SIGMA_FLOOR = 1e-3  # a 0.1 % scatter at least: a constant loss is not infinitely sensitive


class DriftConfig(BaseModel):
    """Knobs of :class:`DriftDetector`; embedded in the daemon's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    baseline_span: int = Field(
        default=200, ge=2, description="span of the moving baseline (log loss), in samples"
    )
    min_history: int = Field(
        default=100, ge=2, description="samples before any finding: the baseline settles"
    )
    slack: float = Field(
        default=0.5, ge=0, description="per-sample allowance k, in SDs: smaller shifts are noise"
    )
    threshold: float = Field(
        default=8.0, gt=0, description="CUSUM decision threshold h, in SDs summed over samples"
    )
    clip: float = Field(
        default=3.0, gt=0, description="one sample adds at most this many SDs (bad batches)"
    )
    sharp_ratio: float = Field(
        default=2.0,
        gt=1,
        description="a shift this large is held back, as it may be a divergence in the making",
    )
    sharp_wait: int = Field(
        default=12, ge=0, description="... for at most this many samples (0: never)"
    )


class DriftDetector:
    """Reports ``drift`` (info) on one loss series."""

    kinds: ClassVar[tuple[str, ...]] = ("drift",)
    roles: ClassVar[tuple[Role, ...]] = (Role.LOSS,)
    config_model: ClassVar[type[DriftConfig]] = DriftConfig

    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = cfg = config or DriftConfig()
        self._alpha = 2.0 / (cfg.baseline_span + 1.0)
        self._n = 0
        self._mean = 0.0  # baseline: EMA of the log loss
        self._mad = 0.0  # EMA of |successive difference| of the log loss
        self._prev = 0.0
        self._cusum = 0.0
        self._onset = 0  # the step at which the cusum last left zero
        self._since_sum = 0.0  # sum and count of log values since then
        self._since_n = 0
        self._active_left = 0
        self._waited = 0  # samples a sharp shift has been held back

    @property
    def active(self) -> str | None:
        return "drift" if self._active_left > 0 else None

    def update(self, step: int, value: float) -> Finding | None:
        if not (value > 0 and math.isfinite(value)):
            return None
        y = math.log(value)
        self._n += 1
        if self._active_left > 0:
            self._active_left -= 1
        if self._n == 1:
            self._mean, self._prev = y, y
            return None
        weight = max(self._alpha, 1.0 / (self._n - 1))  # a plain mean until the span fills
        self._mad += weight * (abs(y - self._prev) - self._mad)
        self._prev = y
        sigma = max(self._mad * _MAD_TO_SD, _SIGMA_FLOOR)
        cfg = self.config
        u = min((y - self._mean) / sigma, cfg.clip)
        self._mean += weight * (y - self._mean)
        if self._n < cfg.min_history:
            return None
        if self._cusum == 0.0:
            self._onset, self._since_sum, self._since_n = step, 0.0, 0
        self._cusum = max(0.0, self._cusum + u - cfg.slack)
        self._since_sum += y
        self._since_n += 1
        crossed = self._cusum >= cfg.threshold
        if self._active_left > 0:
            if crossed:
                # Moving up again within an episode (a loss that keeps climbing): one finding
                # per episode; watch the newer level, and keep the episode open.
                self._mean, self._cusum = self._since_sum / self._since_n, 0.0
                self._active_left = cfg.baseline_span
            return None
        if not (crossed or self._waited):
            return None
        if self._waited < cfg.sharp_wait and y - self._mean >= math.log(cfg.sharp_ratio):
            # A sharp rise is the divergence detector's to confirm first: it pages, and a drift
            # finding meanwhile would be the first word on it, in the weaker voice (if it does
            # confirm, the pipeline masks this one). A concept shift is reported late by at
            # most ``sharp_wait`` samples, and once the CUSUM has crossed, it is reported even
            # if the loss falls back meanwhile.
            self._waited += 1
            return None
        return self._finding(step, sigma)

    def _finding(self, step: int, sigma: float) -> Finding:
        before = self._mean
        after = self._since_sum / self._since_n
        factor = math.exp(after - before)
        reason = (
            f"loss moved up to {factor:.3g}x its baseline {math.exp(before):.4g} since step "
            f"{self._onset} (CUSUM {self._cusum:.1f} SDs, noise {sigma:.2g} in log units)"
        )
        detail = {
            "baseline": math.exp(before),
            "level": math.exp(after),
            "factor": factor,
            "cusum": self._cusum,
            "log_sigma": sigma,
            "samples": self._since_n,
        }
        # Watch the new regime from here on.
        self._mean, self._cusum, self._waited = after, 0.0, 0
        self._active_left = self.config.baseline_span
        return Finding(
            kind="drift",
            severity=Severity.INFO,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=self._onset,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "drift",
            "version": 2,
            "n": self._n,
            "mean": self._mean,
            "mad": self._mad,
            "prev": self._prev,
            "cusum": self._cusum,
            "onset": self._onset,
            "since_sum": self._since_sum,
            "since_n": self._since_n,
            "active_left": self._active_left,
            "waited": self._waited,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("detector"), state.get("version")) != ("drift", 2):
            found = (state.get("detector"), state.get("version"))
            raise ValueError(f"not a drift detector state (version 2): {found!r}")
        self._n = int(state["n"])
        self._mean = float(state["mean"])
        self._mad = float(state["mad"])
        self._prev = float(state["prev"])
        self._cusum = float(state["cusum"])
        self._onset = int(state["onset"])
        self._since_sum = float(state["since_sum"])
        self._since_n = int(state["since_n"])
        self._active_left = int(state["active_left"])
        self._waited = int(state["waited"])
