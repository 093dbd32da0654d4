"""Overfit: the validation loss has passed its minimum and is climbing back.

A rising validation loss is not a training divergence, and cutting the LR does not cure it, so
it is a finding of its own, reported with the step of the best validation loss: the checkpoint
to keep. Two rules: ``overfit`` (warning) when an exponential moving average over ``smoothing``
evaluations has sat above its best by more than ``threshold`` and ``noise_z`` standard errors
for ``patience`` evaluations in a row and is still climbing; or, for runs evaluated a few times
only, when the last ``RISES`` raw evaluations each rose, from the lowest so far, to ``2 *
threshold`` above it and clear of the noise. ``active`` stays "overfit" until the average sets a
new best. Non-finite values are skipped. Why: docs/detectors.md, "Overfitting".
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lrwatch.protocol.types import Finding, Role, Severity

RISES = 3  # evaluations in a row, each above the one before, that are a climb however few


class OverfitConfig(BaseModel):
    """Knobs of :class:`OverfitDetector`; embedded in the daemon's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    smoothing: int = Field(default=5, ge=1, description="span of the moving average (evaluations)")
    threshold: float = Field(
        default=0.05, ge=0, description="rise above the best average that counts (relative)"
    )
    noise_z: float = Field(default=2.0, ge=0, description="... and in standard errors")
    patience: int = Field(
        default=8, ge=1, description="evaluations the rise must last (EarlyStopping's patience)"
    )
    min_history: int = Field(
        default=5,
        ge=1,
        description="evaluations before the moving average's finding (the few-evaluations "
        "climb needs only its RISES + 1)",
    )


class OverfitDetector:
    """Reports ``overfit`` (warning) on one validation-loss series."""

    kinds: ClassVar[tuple[str, ...]] = ("overfit",)
    roles: ClassVar[tuple[Role, ...]] = (Role.VAL_LOSS,)
    config_model: ClassVar[type[OverfitConfig]] = OverfitConfig

    def __init__(self, config: OverfitConfig | None = None) -> None:
        self.config = cfg = config or OverfitConfig()
        self._alpha = 2.0 / (cfg.smoothing + 1.0)
        self._n = 0
        self._ema = 0.0
        self._msd = 0.0
        self._prev = 0.0
        self._best = math.inf
        self._best_step = 0
        self._rising = 0
        self._recent: deque[float] = deque(maxlen=cfg.patience + 1)  # the last averages
        self._active = False
        self._raw: deque[tuple[int, float]] = deque(maxlen=RISES + 1)  # the last evaluations
        self._raw_best = math.inf

    @property
    def active(self) -> str | None:
        return "overfit" if self._active else None

    def update(self, step: int, value: float) -> Finding | None:
        if not math.isfinite(value):
            return None
        self._n += 1
        a = max(self._alpha, 1.0 / self._n)
        if self._n == 1:
            self._ema = value
        else:
            d = value - self._prev
            self._msd += max(self._alpha, 1.0 / (self._n - 1)) * (d * d - self._msd)
            self._ema += a * (value - self._ema)
        self._prev = value
        self._raw.append((step, value))
        climb = self._climbing(value)
        self._raw_best = min(self._raw_best, value)
        if climb is not None and not self._active:
            self._active = True
            return climb
        if not (math.isfinite(self._ema) and math.isfinite(self._msd)):
            self._n, self._ema, self._msd, self._best, self._rising = 1, value, 0.0, math.inf, 0
            self._recent.clear()
        self._recent.append(self._ema)
        if self._ema < self._best:
            self._best, self._best_step, self._rising, self._active = self._ema, step, 0, False
            return None
        cfg = self.config
        margin = self._margin()
        if self._ema <= self._best + margin:
            self._rising = 0
            return None
        self._rising += 1
        if (
            self._active
            or self._n < cfg.min_history
            or self._rising < cfg.patience
            or not self._ema > self._recent[0]
        ):
            return None
        self._active = True
        return self._finding(step, margin)

    def _climbing(self, value: float) -> Finding | None:
        """The few-evaluations rule: the last ``RISES`` values climb from the lowest so far."""
        raw = list(self._raw)
        if len(raw) < RISES + 1 or raw[0][1] > self._raw_best or not raw[0][1] > 0:
            return None
        if any(b[1] <= a[1] for a, b in itertools.pairwise(raw)):
            return None
        best_step, best = raw[0]
        noise = self.config.noise_z * math.sqrt(self._msd / 2.0)
        if value - best < max(2 * self.config.threshold * best, noise):
            return None
        self._best_step = best_step
        rise = value / best - 1.0
        reason = (
            f"validation loss {value:.4g} has risen {RISES} evaluations in a row, "
            f"{rise:.1%} above its best {best:.4g} at step {best_step}: overfitting; the best "
            f"checkpoint is step {best_step}"
        )
        detail = {"best": best, "best_step": best_step, "value": value, "rise": rise}
        return Finding(
            kind="overfit",
            severity=Severity.WARNING,
            step=self._raw[-1][0],
            reason=reason,
            detail=detail | {"evaluations": RISES, "trigger": "climb"},
            onset_step=best_step,
        )

    def _margin(self) -> float:
        a = self._alpha
        stderr = math.sqrt(self._msd / 2.0 * a / (2.0 - a))
        return max(self.config.threshold * abs(self._best), self.config.noise_z * stderr)

    def _finding(self, step: int, margin: float) -> Finding:
        rise = (self._ema - self._best) / abs(self._best) if self._best else math.inf
        reason = (
            f"validation loss (smoothed) {self._ema:.4g} is {rise:.1%} above its best "
            f"{self._best:.4g} at step {self._best_step} and has stayed up for "
            f"{self._rising} evaluations: overfitting; the best checkpoint is step "
            f"{self._best_step}"
        )
        detail = {
            "best": self._best,
            "best_step": self._best_step,
            "smoothed": self._ema,
            "rise": rise if math.isfinite(rise) else "inf",
            "margin": margin,
            "evaluations": self._rising,
        }
        return Finding(
            kind="overfit",
            severity=Severity.WARNING,
            step=step,
            reason=reason,
            detail=detail,
            onset_step=self._best_step,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": "overfit",
            "version": 1,
            "n": self._n,
            "ema": self._ema,
            "msd": self._msd,
            "prev": self._prev,
            "best": self._best if math.isfinite(self._best) else None,
            "best_step": self._best_step,
            "rising": self._rising,
            "recent": list(self._recent),
            "active": self._active,
            "raw": [[s, v] for s, v in self._raw],
            "raw_best": self._raw_best if math.isfinite(self._raw_best) else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("detector"), state.get("version")) != ("overfit", 1):
            found = (state.get("detector"), state.get("version"))
            raise ValueError(f"not an overfit detector state (version 1): {found!r}")
        self._n = int(state["n"])
        self._ema = float(state["ema"])
        self._msd = float(state["msd"])
        self._prev = float(state["prev"])
        best = state["best"]
        self._best = math.inf if best is None else float(best)
        self._best_step = int(state["best_step"])
        self._rising = int(state["rising"])
        self._recent = deque((float(v) for v in state["recent"]), maxlen=self.config.patience + 1)
        self._active = bool(state["active"])
        self._raw = deque(((int(s), float(v)) for s, v in state.get("raw", [])), maxlen=RISES + 1)
        raw_best = state.get("raw_best")
        self._raw_best = math.inf if raw_best is None else float(raw_best)
