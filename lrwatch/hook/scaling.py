"""How a factor reaches the optimizer without the job's LR scheduler ever seeing it.

The factor is applied in an optimizer step *pre*-hook and undone in the step *post*-hook. Between
steps ``group["lr"]`` holds exactly what the schedule wrote, so every scheduler (chainable ones
such as StepLR, which multiply the current value, and closed-form ones such as LambdaLR and
OneCycleLR, which overwrite it) keeps computing its own schedule, and the LR used by each step is
the factor times that schedule. Multiplying ``group["lr"]`` once would compound under chainable
schedulers and be overwritten by closed-form ones.

This module is also the hook's one place that enforces LR bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Commands are computed by the controller and rounded to 12 digits; a factor exactly at the
# per-command limit must not be refused because of the last bit.
_LIMIT_TOLERANCE = 1e-9

ErrorSink = Callable[[str, BaseException], None]


@dataclass(frozen=True, slots=True)
class Bounds:
    """The hook's own safety limits: defence in depth, whatever the daemon was told.

    ``max_change`` limits one command: its factor must lie in ``[1/max_change, max_change]``.
    """

    min_lr: float | None = None
    max_lr: float | None = None
    max_change: float = 10.0

    def __post_init__(self) -> None:
        for name in ("min_lr", "max_lr"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0 <= value < math.inf):
                raise ValueError(f"{name} must be None or a finite number >= 0, got {value!r}")
        if self.min_lr is not None and self.max_lr is not None and self.min_lr > self.max_lr:
            raise ValueError(f"min_lr {self.min_lr!r} is above max_lr {self.max_lr!r}")
        if not (_is_number(self.max_change) and 1 < self.max_change < math.inf):
            raise ValueError(f"max_change must be a finite number > 1, got {self.max_change!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def bounded_lr(scheduled: float, factor: float, bounds: Bounds) -> float:
    """The LR a step uses: the schedule's LR times the factor, kept within the bounds.

    The bounds limit what lrwatch does, not what the job's own schedule does. Where the schedule
    alone is outside ``[min_lr, max_lr]`` (a warmup from 0, a cosine decay to 0) the bound on
    that side is relaxed to the schedule's value: the factor can never push the LR further past a
    bound, never drags it against the schedule (a plain clamp would lift a warmup's first steps
    to ``min_lr`` as soon as any factor is set), and a factor of 1 is exactly the schedule.
    """
    lr = scheduled * factor
    if bounds.min_lr is not None:
        lr = max(lr, min(bounds.min_lr, scheduled))
    if bounds.max_lr is not None:
        lr = min(lr, max(bounds.max_lr, scheduled))
    return lr


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a scale command is carried out, the factor that results, and why, for the ack."""

    accepted: bool
    factor: float
    reason: str


def judge_scale(
    change: float, current: float, scheduled: Sequence[float], bounds: Bounds
) -> Verdict:
    """Decide a ``scale_lr`` command against the per-command limit and the LR bounds.

    Refused: a change outside ``[1/max_change, max_change]``, and a change that the bounds would
    hold back in *every* param group (each group's LR would be carried past a bound in the
    direction the command moves it), since nothing of it could be carried out as asked.
    Accepted with a note: a change the bounds hold back in some groups only; the others still
    need it. Checked against the schedule's LRs of the coming step; the bounds keep being
    enforced at every later step as the schedule moves.
    """
    limit = bounds.max_change
    if not (1 / limit) * (1 - _LIMIT_TOLERANCE) <= change <= limit * (1 + _LIMIT_TOLERANCE):
        return Verdict(False, current, f"x{change:g} exceeds the per-command limit x{limit:g}")
    new = current * change
    if abs(new - 1.0) < 1e-12:
        new = 1.0  # undoing an earlier change lands on exactly 1, where the hooks stand aside
    if not (0 < new < math.inf):
        return Verdict(False, current, f"x{change:g} would make the LR factor {new!r}")
    clamped = [i for i, lr in enumerate(scheduled) if bounded_lr(lr, new, bounds) != lr * new]
    blocked = [i for i in clamped if _pushes_past(scheduled[i], new, change, bounds)]
    if scheduled and len(blocked) == len(scheduled):
        return Verdict(
            False, current, f"x{change:g} would take every param group past {_bounds(bounds)}"
        )
    reason = f"LR factor {current:g} -> {new:g} (x{change:g})"
    if clamped:
        reason += f"; param groups {clamped} held within {_bounds(bounds)}"
    return Verdict(True, new, reason)


def _pushes_past(scheduled: float, factor: float, change: float, bounds: Bounds) -> bool:
    """True when the bounds hold this group back in the direction the command moves it."""
    held = bounded_lr(scheduled, factor, bounds)
    wanted = scheduled * factor
    return held > wanted if change < 1 else held < wanted


def _bounds(bounds: Bounds) -> str:
    return f"min_lr={bounds.min_lr} max_lr={bounds.max_lr}"


class LRScaler:
    """Owns the two optimizer hooks and the current factor.

    A factor of exactly 1.0 makes both hooks return at once, so an idle lrwatch changes nothing
    about the job, down to the bit.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, bounds: Bounds, report: ErrorSink):
        self.factor = 1.0
        self.bounds = bounds
        self._optimizer = optimizer
        self._report = report
        # (group, the object group["lr"] held, a copy of a tensor LR's value) for each group
        self._saved: list[tuple[dict[str, Any], Any, torch.Tensor | None]] | None = None
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]

    def scheduled_lrs(self) -> tuple[float, ...]:
        """The schedule's LRs for the coming step (what the optimizer holds between steps)."""
        if self._saved is not None:  # a step raised between our hooks: the saved values are true
            return tuple(float(saved if copy is None else copy) for _, saved, copy in self._saved)
        return tuple(float(group["lr"]) for group in self._optimizer.param_groups)

    def effective_lrs(self) -> tuple[float, ...]:
        return tuple(bounded_lr(lr, self.factor, self.bounds) for lr in self.scheduled_lrs())

    def remove(self) -> None:
        """Detach from the optimizer, leaving the schedule's values in place."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._restore()

    def _pre_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        try:
            # A step that raised skipped our post-hook; restore first or the factor compounds.
            self._restore()
            if self.factor != 1.0:
                self._scale(optimizer)
        except Exception as exc:
            self._restore()  # this step runs at the schedule's LR rather than half-scaled
            self._report("applying the LR factor", exc)

    def _post_step(self, *_: Any) -> None:
        try:
            self._restore()
        except Exception as exc:
            self._report("restoring the scheduled LR", exc)

    def _scale(self, optimizer: torch.optim.Optimizer) -> None:
        saved: list[tuple[dict[str, Any], Any, torch.Tensor | None]] = []
        self._saved = saved
        for group in optimizer.param_groups:
            lr = group["lr"]
            if isinstance(lr, torch.Tensor):
                copy = lr.detach().clone()
                saved.append((group, lr, copy))
                _scale_tensor_(lr, copy, self.factor, self.bounds)
            else:
                saved.append((group, lr, None))
                group["lr"] = bounded_lr(float(lr), self.factor, self.bounds)

    def _restore(self) -> None:
        saved, self._saved = self._saved, None
        for group, original, copy in saved or ():
            if copy is not None:
                with torch.no_grad():
                    original.copy_(copy)
            group["lr"] = original  # the very object the schedule wrote, not an equal value


def _scale_tensor_(lr: torch.Tensor, scheduled: torch.Tensor, factor: float, b: Bounds) -> None:
    """``bounded_lr`` in place on a tensor LR, without reading it back to the host.

    A tensor LR (capturable or compiled optimizers) may live on the GPU; ``float()`` here would
    synchronise the device at every step. Only the bound on the side the factor moves can bind.
    """
    with torch.no_grad():
        lr.mul_(factor)
        if factor < 1 and b.min_lr is not None:
            lr.clamp_(min=scheduled.clamp(max=b.min_lr))
        elif factor > 1 and b.max_lr is not None:
            lr.clamp_(max=scheduled.clamp(min=b.max_lr))
