"""Which findings stand, and which are only reported: one cause explains another away.

A finding another cause explains better must not win the policy, nor show as active: it would
repeat that cause in a weaker voice, or blame the data for what the run's own schedule did.
Pure functions of the findings and the detectors' ongoing kinds: no I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from lrwatch.detectors.schedule import ScheduleMotion
from lrwatch.protocol.types import Finding

_MASKED_BY_DIVERGENCE = frozenset({"plateau", "oscillation", "drift"})


def explained_away(
    findings: list[Finding],
    kinds: Collection[str],
    schedule: ScheduleMotion | None,
    loss_kinds: Callable[[], Collection[str]],
) -> list[Finding]:
    """``findings`` of one series (whose detectors say ``kinds`` are ongoing) minus those
    another cause explains better; ``schedule`` watches the run's LR, ``loss_kinds`` gives the
    kinds ongoing on its loss (asked only for an overfit):

    - a diverging loss also "stops improving" and may swing: those findings would only
      repeat the divergence in a weaker voice, and must not win the policy;
    - a swinging loss is far above its best in every high phase: the swing explains it;
    - a loss that rises while it swings, or after the run's own schedule raised the LR (a
      warm restart), has a cause other than the data: not a drift;
    - a validation loss that rises while the training loss drifts: the data changed (the
      validation set follows the stream), the model did not memorise its own: no overfit.
    """
    if "divergence" in kinds:
        findings = [f for f in findings if f.kind not in _MASKED_BY_DIVERGENCE]
    if "oscillation" in kinds:
        # A swinging loss's high phase sits far above its low one: not the anchored rule's
        # "far above its best". A non-finite value, a climb or a held level (a window of 32
        # values spans two cycles of any period looked for) still pages.
        findings = [f for f in findings if f.detail.get("trigger") != "anchored"]

    def drift_explained(found: Finding) -> bool:
        step = found.onset_step if found.onset_step is not None else found.step
        return "oscillation" in kinds or (schedule is not None and schedule.raised_before(step))

    findings = [f for f in findings if f.kind != "drift" or not drift_explained(f)]
    if any(f.kind == "overfit" for f in findings) and "drift" in loss_kinds():
        findings = [f for f in findings if f.kind != "overfit"]
    return findings


def unexplained_hold(found: Finding, schedule: ScheduleMotion | None) -> str | None:
    """Why a loss held far above its lowest level (the divergence rule "held") is reported
    but not acted on: unless the run's LR rose just before it, a shift in the data does that
    too (a continual-learning job's new concept: 20x up, and weeks to wear off), and cutting
    the LR then slows the adaptation. An LR that jumped and a loss that jumped with it and
    stays up is the optimizer's doing: that pages."""
    if found.detail.get("trigger") != "held" or _lr_rose(found, schedule):
        return None
    return (
        "the loss holds a level far above its lowest with no LR rise just before it; a shift "
        "in the data does that too"
    )


def garbage_explains(found: Finding, schedule: ScheduleMotion | None) -> bool:
    """Whether a held level is the damage garbage batches did to the weights: it came within a
    window of the loss's return from one (``after_garbage``) and the LR did not rise before it.
    Such damage wears off (a convnet 6-10x up for 30 steps after three corrupt batches, back in
    40), and the garbage itself was reported as spikes."""
    return bool(found.detail.get("after_garbage")) and not _lr_rose(found, schedule)


def _lr_rose(found: Finding, schedule: ScheduleMotion | None) -> bool:
    """Did the run's LR rise just before ``found``'s onset (``ScheduleMotion.raised_before``)?"""
    onset = found.onset_step if found.onset_step is not None else found.step
    return schedule is not None and schedule.raised_before(onset)


def reported_only(found: Finding, doubt: str | None, held: bool) -> str | None:
    """Why ``found`` is reported but not acted on (None: the policy answers it). ``doubt``: why
    its metric is not one to act on (a guessed role, an RL run's loss); ``held``: the run's own
    schedule is still moving its LR (warm-up, cosine), already doing a plateau cut's job."""
    if doubt is not None:
        return f"{found.kind}: reported only: {doubt}"
    if held and found.kind == "plateau":
        return "plateau: reported only while the LR schedule is still moving the LR"
    return None
