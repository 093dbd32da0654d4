"""A gradient norm's divergence is reported only when the loss does not refute it: not while the
loss falls with confidence (Progress.fell_since), as it does when a model starts to learn."""

from __future__ import annotations

import math
import random

import pytest

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.protocol.types import Sample, Severity


def run(loss_after: float) -> tuple[RunMonitor, list[tuple[Severity, bool]]]:
    """A run whose gradient norm sits at 0.008 for 70 steps, then grows 6 % a step to 10x (a
    model leaving its initial plateau, or an LR past the edge); from step 70 its loss moves by
    ``loss_after`` a step (log), with noise of 0.1 %. Returns the monitor and each
    gradient-norm divergence's (severity, whether it changed the LR)."""
    rng = random.Random(0)
    monitor = RunMonitor("r", Config().for_run("r"), assume_landed=True)
    samples = []
    for step in range(200):
        grown = 0.008 * min(10.0, 1.06 ** max(0, step - 70)) * math.exp(rng.gauss(0, 0.1))
        loss = 4.159 * math.exp(loss_after * max(0, step - 70) + rng.gauss(0, 0.001))
        samples += [Sample("r", "loss", step, loss), Sample("r", "grad_norm", step, grown)]
    outcome = monitor.observe(samples, can_act=None)
    found = [
        (d.finding.severity, d.action is not None)
        for d in outcome.decisions
        if d.finding is not None and d.finding.metric == "grad_norm"
    ]
    return monitor, found


def test_a_gradient_norm_growing_while_the_loss_falls_is_not_reported() -> None:
    monitor, found = run(loss_after=-0.001)
    assert found == []  # no finding, no page, no cut: a model learning
    assert "divergence" not in monitor.active_kinds()  # no alert either


@pytest.mark.parametrize("loss_after", [0.0, 0.0005])
def test_a_gradient_norm_growing_while_the_loss_holds_pages(loss_after: float) -> None:
    """A loss that has not fallen: the gradient norm may be the first sign of a divergence."""
    _, found = run(loss_after)
    assert found[:1] == [(Severity.CRITICAL, True)]


def test_a_gradient_norm_growing_while_the_loss_climbs_pages() -> None:
    monitor, found = run(loss_after=0.05)  # the loss's own page came first, and cut the LR
    assert found[:1] == [(Severity.CRITICAL, False)]
    assert "divergence" in monitor.active_kinds()
