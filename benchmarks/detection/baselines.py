"""The usual baselines lrwatch is scored against, each a pure function of one series of
``(step, value)`` pairs returning the steps at which it would alarm (or cut the LR)."""

from __future__ import annotations

import math
from collections.abc import Callable

Series = list[tuple[int, float]]


def nan_only(series: Series) -> list[int]:
    """Keras ``TerminateOnNaN``: the first non-finite value."""
    return [s for s, v in series if not math.isfinite(v)][:1]


def twice_min(series: Series) -> list[int]:
    """Every step at which the rule holds (a stateless threshold fires again and again)."""
    low, alarms = math.inf, []
    for step, value in series:
        if not math.isfinite(value) or value > 2.0 * low:
            alarms.append(step)
        if math.isfinite(value):
            low = min(low, value)
    return alarms


def reduce_on_plateau(series: Series, patience: int = 10) -> list[int]:
    """torch's scheduler stepped with each value; every step at which it would cut the LR."""
    import torch

    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=patience, min_lr=0.0)
    flags = []
    for step, value in series:
        before = opt.param_groups[0]["lr"]
        sched.step(value)
        if opt.param_groups[0]["lr"] < before:
            flags.append(step)
            opt.param_groups[0]["lr"] = 1.0  # count every flag, not just until the LR underflows
    return flags


def early_stopping(series: Series, patience: int = 10) -> list[int]:
    """Keras ``EarlyStopping``: the step at which it would stop, if any."""
    best, wait = math.inf, 0
    for step, value in series:
        if value < best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return [step]
    return []


DIVERGENCE: dict[str, Callable[[Series], list[int]]] = {
    "NaN-only": nan_only,
    "2x running min": twice_min,
}
