"""The progress judge on a real noise floor: SGD at a constant LR on a noisy regression."""

from __future__ import annotations

import functools

import numpy as np
import torch

from benchmarks.rescue.tasks import regression
from lrwatch.analysis.monitor import RunMonitor
from lrwatch.analysis.progress import Progress
from lrwatch.config import Config
from lrwatch.protocol.types import Sample
from tests.unit.curves import _one_thread, tenfold_fall


@functools.cache
def _sgd_at_a_constant_lr(steps: int, seed: int = 0) -> tuple[float, ...]:
    """The rescue benchmark's plateau job as it trains unwatched: Friedman #1 with unit noise,
    batches of 32, SGD with momentum at LR 0.1 after a 50-step warm-up. Its loss falls fast,
    then hovers at the floor the LR's noise sets, creeping down."""
    task = regression()
    with _one_thread():
        torch.manual_seed(seed)
        model = task.model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        warm_up = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
        gen = np.random.default_rng(1000 + seed)
        losses = []
        for step in range(steps):
            x, y = task.batch(step, gen)
            loss = task.loss(model(x), y)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            warm_up.step()
            losses.append(loss.item())
    return tuple(losses)


def _verdict_at(step: int, *, noise_floor: bool = True) -> tuple[bool, str]:
    progress = Progress()
    for i, value in enumerate(_sgd_at_a_constant_lr(1000)[: step + 1]):
        progress.update(i, value)
    assert progress.first_step is not None
    verdict = progress.verdict(progress.first_step, step, noise_floor=noise_floor)
    return verdict.stalled, verdict.why


def test_a_young_noisy_run_is_not_called_at_its_noise_floor() -> None:
    """119 steps in, the loss gained 7 % over the last 59, smaller than one batch's scatter
    (36 %) but known only to within most of it: no floor can be told yet, and the loss went on
    to fall by half again. A cut there cost the rescue benchmark's plateau scenario its win
    over ReduceLROnPlateau whenever the timing let it through."""
    stalled, why = _verdict_at(119)
    assert not stalled, why


def test_an_old_run_hovering_at_its_noise_floor_is() -> None:
    stalled, why = _verdict_at(900)
    assert stalled and "noise floor" in why, why


def test_by_default_a_noise_floor_still_creeping_down_is_not_stalled() -> None:
    """Do no harm: the loss still creeps down at its floor, so only the policy's opt-in
    (``plateau_at_noise_floor``) may cut it; by default the verdict says it still improves."""
    stalled, why = _verdict_at(900, noise_floor=False)
    assert not stalled and "still improves" in why, why


def _tenfold_fall_then(creep: float) -> Progress:
    progress = Progress()
    for t, value in enumerate(tenfold_fall(creep)):
        progress.update(t, value)
    return progress


def test_a_long_run_still_improving_slowly_is_not_stalled() -> None:
    """Do no harm: 2 % over the last 20,000 steps is 1 % of a tenfold fall, far under the 5 %
    share, but the gain is known to be more than none, and a run that still improves has not
    stopped (a GPT-2 log improving at every evaluation was cut five times when it was)."""
    progress = _tenfold_fall_then(creep=1e-6)
    assert progress.first_step is not None
    verdict = progress.verdict(progress.first_step, 39_999)
    assert not verdict.stalled and "still improves" in verdict.why, verdict.why


def test_a_long_run_that_stopped_after_a_tenfold_fall_is_stalled() -> None:
    progress = _tenfold_fall_then(creep=0.0)
    assert progress.first_step is not None
    verdict = progress.verdict(progress.first_step, 39_999)
    assert verdict.stalled, verdict.why


def _watched(creep: float) -> tuple[list[str], set[str]]:
    """(the kinds found, the kinds ongoing at the end) of the run's monitor."""
    monitor = RunMonitor("a", Config().for_run("a"), assume_landed=True)
    samples = [Sample("a", "loss", t, v, None) for t, v in enumerate(tenfold_fall(creep))]
    outcome = monitor.observe(samples, can_act=None)
    return [f.kind for f in outcome.findings], monitor.active_kinds()


def test_a_run_still_improving_is_not_shown_on_a_plateau() -> None:
    """The plateau detector's fixed rate (2.5 % per 10 samples) calls a long run flat for most
    of its life; its findings are reported, but as long as the loss is known to improve no
    plateau is ongoing: ``lrwatch_finding_active{kind="plateau"}`` stays 0 and the on-call
    alert LRWatchRunPlateaued does not fire on a healthy run (the judgement of the last
    plateau finding, until the next one or the judge's re-check)."""
    found, ongoing = _watched(creep=1e-6)
    assert "plateau" in found and "plateau" not in ongoing
    found, ongoing = _watched(creep=0.0)
    assert "plateau" in found and "plateau" in ongoing


def test_fell_since_needs_a_fall_beyond_the_noise_and_keeps_its_steps() -> None:
    progress = Progress()
    noise = np.random.default_rng(0).normal(0, 0.01, 40)
    for step in range(20):  # a level, then 2 % a step down
        progress.update(10 * step, 4.0 * np.exp(noise[step]))
    for step in range(20, 26):
        progress.update(10 * step, 4.0 * np.exp(noise[step] - 0.02 * (step - 19)))
    assert progress.fell_since(200)
    level = Progress()
    for step in range(26):
        level.update(10 * step, 4.0 * np.exp(noise[step]))
    assert not level.fell_since(200)  # a loss that holds has not fallen
    assert not progress.fell_since(250)  # one value since says nothing
    again = Progress()
    again.load_state_dict(progress.state_dict())
    assert again.fell_since(200)
    old = {k: v for k, v in progress.state_dict().items() if k != "recent_steps"}
    again.load_state_dict(old)  # (states before 0.3: every value before any step asked)
    assert not again.fell_since(200)
