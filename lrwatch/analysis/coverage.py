"""What lrwatch could not judge, said the same way by replay, status and /metrics.

A monitor that reads nothing and reports "no findings" is the worst answer there is: healthy and
never read look alike. So every place that shows findings also shows what it did not read: a run
whose loss it does not recognise (the detectors of the loss, which page, never run on it),
records skipped as corrupt, files it does not know. This module holds the facts' one wording.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.protocol.types import Role
from lrwatch.roles import loss_word

MAX_NAMES = 8  # metric names listed in a message; the rest are counted
ROLE_HINT = "name the loss in a config file (--config): roles: {loss: [NAME, loss]}"


def loss_of(monitor: RunMonitor) -> tuple[str | None, bool]:
    """The metric playing the loss in ``monitor``'s run, and whether it was inferred (no
    configured name matched; a metric whose name contains "loss" stands in, which the
    ``formats`` readers record in ``RunMonitor.inferred_roles``)."""
    configured = monitor.role_metric(Role.LOSS)
    inferred: Mapping[Any, str] = getattr(monitor, "inferred_roles", None) or {}
    guess = inferred.get(Role.LOSS) or inferred.get(Role.LOSS.value)
    if guess and configured in (None, guess):
        return str(guess), True
    return configured, False


def names(metrics: Iterable[str]) -> str:
    """``metrics`` for a one-line message: sorted, the first few, then a count."""
    ordered = sorted(metrics)
    shown = ", ".join(ordered[:MAX_NAMES])
    more = len(ordered) - MAX_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def no_loss(run: str, metrics: Iterable[str]) -> str:
    """Why a run is not judged: the message replay prints and status shows."""
    listed = names(metrics)
    if not listed:  # nothing to name: the logs held no record lrwatch could read
        return f"run {run}: no metric read from its logs, not judged"
    return f"run {run}: no loss recognised, not judged (metrics found: {listed}); {ROLE_HINT}"


def inferred_loss(run: str, metric: str) -> str:
    return (
        f"run {run}: using `{metric}` as the loss (its name contains '{loss_word(metric)}'); "
        f"to say so: roles: {{loss: [{metric}]}} in a config file"
    )


def skipped(path: str, stats: Mapping[str, int]) -> str | None:
    """The records of ``path`` a reader skipped as corrupt, as a message; None if none."""
    corrupt = int(stats.get("corrupt_records", 0))
    if not corrupt:
        return None
    return f"{path}: skipped {corrupt} corrupt record{'s' if corrupt != 1 else ''}"


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float spelled as a string ("nan", "inf", "-inf"), in
    nested dicts and lists too: strict JSON has no NaN, and the detectors' details, replay's
    rows and /api/status all spell them this way."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
