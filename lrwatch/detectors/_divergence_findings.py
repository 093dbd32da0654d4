"""What a divergence or spike finding says: a reason for people, a detail for tools.

Kept apart from ``divergence.py`` so that module reads as the rules. The words and the detail
keys are part of what ``lrwatch replay`` prints and notifiers send, so they change only on
purpose: one function per way a finding comes about, each a pure function of the numbers the
rule had in hand.
"""

from __future__ import annotations

import math
from typing import Any

from lrwatch.detectors._anchor import Anchor
from lrwatch.detectors._excursion import Excursion
from lrwatch.detectors._robust import json_float
from lrwatch.protocol.types import Finding, Severity


def _divergence(step: int, reason: str, detail: dict[str, Any], onset: int) -> Finding:
    return Finding(
        kind="divergence",
        severity=Severity.CRITICAL,
        step=step,
        reason=reason,
        detail=detail,
        onset_step=onset,
    )


def nonfinite(step: int, value: float, onset: int, level: float | None) -> Finding:
    """A NaN or inf; ``level`` is the running median, None before there is one."""
    shown = json_float(value)
    if level is not None:
        since = f", rising since step {onset}" if onset != step else ""
        context = f" (running median {level:.4g}{since})"
    else:
        level, context = math.nan, ""
    detail = {"nonfinite": True, "value": shown, "level": json_float(level)}
    return _divergence(step, f"loss is {shown} at step {step}{context}", detail, onset)


def anchored(
    step: int,
    value: float,
    trigger: str,
    hit: tuple[float, int] | tuple[float, int, int],
    onset: int,
    anchor: Anchor,
    sigma: float | None,
    after_garbage: bool = False,
) -> Finding:
    """An anchored rule's hit (``_anchor.py``): ``trigger`` is "anchored", "held", "rising" or
    "climb", ``hit`` the rule's (factor, onset[, samples]); ``after_garbage``: a held level
    within a window of the loss's return from garbage (the monitor weighs it)."""
    factor = hit[0]
    if trigger == "held":  # the lowest level of a window (its median or upper quartile), and now
        best = anchor.held_lowest
        level = best * factor
    else:
        best, level = anchor.best, anchor.level()
    if trigger == "held":
        how = f"held at {factor:.3g}x the lowest level {best:.4g} the run had held"
    elif trigger == "anchored":
        how = f"{factor:.3g}x the best level {best:.4g} the run had reached"
    elif trigger == "rising":
        how = f"multiplying fast, {factor:.3g}x the best level {best:.4g} the run had reached"
    else:
        how = f"climbing steadily: x{factor:.3g} over its last {hit[-1]} samples"
    detail = {
        "nonfinite": False,
        "trigger": trigger,
        "value": json_float(value),
        "level": json_float(level),
        "best": json_float(best),
        "ratio": json_float(factor),
        "log_noise": json_float(sigma if sigma is not None else math.nan),
    }
    if trigger == "held":
        detail["after_garbage"] = after_garbage
    return _divergence(step, f"loss {value:.4g} is {how}, since step {onset}", detail, onset)


def warmup(step: int, value: float, low: float, of: str, rises: int, since: int) -> Finding:
    """A blow-up before a running level could form: ``rises`` in a row since step ``since``,
    to ``value``, measured from ``low``, the loss's ``of`` (its lowest value, or its median)."""
    reason = (
        f"loss {value:.4g} has risen {rises} times in a row since step "
        f"{since}, to {value / low:.3g}x its {of} {low:.4g}, before a "
        "running level could form"
    )
    detail = {
        "nonfinite": False,
        "trigger": "warmup",
        "value": json_float(value),
        "level": json_float(low),
        "ratio": json_float(value / low),
        "samples": rises,
    }
    return _divergence(step, reason, detail, since)


def excursion(
    step: int,
    value: float,
    z: float,
    trigger: str,
    exc: Excursion,
    level: float,
    spread: float,
    min_ratio: float,
) -> Finding:
    """An excursion above the running level confirmed as a divergence (``trigger``: "rising",
    ``exc.rises`` rises of ``min_ratio`` in a row, or "patience": ``exc.length`` samples up)."""
    if trigger == "rising":
        how = f"rose {exc.rises} times in a row by a factor of {min_ratio:g}+"
    else:
        how = f"has stayed up for {exc.length} samples"
    peak, samples, onset = exc.peak, exc.length, exc.onset
    ratio = value / level if level > 0 else math.inf
    reason = (
        f"loss {value:.4g} is {z:.1f} robust SDs ({ratio:.3g}x) above its running median "
        f"{level:.4g} and {how} since step {onset}"
    )
    detail = {
        "nonfinite": False,
        "trigger": trigger,
        "value": json_float(value),
        "level": json_float(level),
        "spread": json_float(spread),
        "z": json_float(z),
        "ratio": json_float(ratio),
        "peak": json_float(peak),
        "samples": samples,
    }
    return _divergence(step, reason, detail, onset)


def spike(
    step: int, peak: float, peak_z: float, level: float, spread: float, samples: int, onset: int
) -> Finding:
    """An excursion that came back by itself."""
    ratio = peak / level if level > 0 else math.inf
    reason = (
        f"loss spiked to {peak:.4g} ({ratio:.3g}x its running median {level:.4g}, "
        f"{peak_z:.1f} robust SDs) at step {onset} and was back after "
        f"{samples} samples"
    )
    detail = {
        "peak": json_float(peak),
        "level": json_float(level),
        "spread": json_float(spread),
        "z": json_float(peak_z),
        "ratio": json_float(ratio),
        "samples": samples,
    }
    return Finding(
        kind="spike",
        severity=Severity.WARNING,
        step=step,
        reason=reason,
        detail=detail,
        onset_step=onset,
    )
