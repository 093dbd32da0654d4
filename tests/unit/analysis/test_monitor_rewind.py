"""Steps that go back: a job restarted from a checkpoint rewinds its series; a second file, or a
file read again after churn, repeating steps already seen does not (RunMonitor.observe)."""

from __future__ import annotations

import json
import math
import random

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.protocol.types import Sample, Severity


def curve(steps: range, seed: int = 0) -> list[float]:
    """A loss that falls fast early: going back 200 steps means a loss 3x higher."""
    rng = random.Random(seed)
    return [(3 * math.exp(-s / 100) + 0.1) * (1 + 0.02 * rng.uniform(-1, 1)) for s in steps]


def samples(steps: range, t0: float | None, metric: str = "loss") -> list[Sample]:
    return [
        Sample("r", metric, s, v, None if t0 is None else t0 + s)
        for s, v in zip(steps, curve(steps), strict=True)
    ]


def monitor() -> RunMonitor:
    return RunMonitor("r", Config().for_run("r"))


def test_a_restart_from_a_checkpoint_rewinds_and_is_no_divergence() -> None:
    m = monitor()
    first = m.observe(samples(range(400), t0=1e9), can_act=None, source="a")
    assert not first.rewinds
    # The restarted job logs 200.. again, later (a new TensorBoard event file, say).
    again = m.observe(samples(range(200, 450), t0=2e9), can_act=None, source="b")
    assert [(r.metric, r.from_step, r.to_step) for r in again.rewinds] == [("loss", 399, 200)]
    assert again.findings == [], again.findings
    assert m.series["loss"].last_step == 449 and m.series["loss"].rewinds == 1


def test_without_the_rewind_the_older_loss_would_read_as_trouble() -> None:
    """The test above is not vacuous: the same values fed as if they were new steps (detectors
    keeping their windows of the abandoned future) are flagged."""
    m = monitor()
    m.observe(samples(range(400), t0=1e9), can_act=None, source="a")
    values = curve(range(200, 450))
    shifted = [Sample("r", "loss", 400 + i, v, 2e9 + i) for i, v in enumerate(values)]
    found = m.observe(shifted, can_act=None, source="a").findings
    assert any(f.kind in ("divergence", "drift", "plateau") for f in found)


def test_a_second_file_repeating_steps_is_skipped() -> None:
    m = monitor()
    tb = samples(range(100), t0=1e9)
    jsonl = samples(range(100), t0=1e9 + 0.001)  # the same steps, logged a moment later
    m.observe(tb[:50], can_act=None, source="tb")
    out = m.observe(jsonl[:50], can_act=None, source="metrics.jsonl")
    assert not out.rewinds and m.series["loss"].out_of_order == 50
    m.observe(tb[50:], can_act=None, source="tb")
    assert not m.observe(jsonl[50:], can_act=None, source="metrics.jsonl").rewinds
    assert m.series["loss"].last_step == 99


def test_without_wall_times_an_append_going_back_rewinds_a_reread_does_not() -> None:
    m = monitor()
    m.observe(samples(range(300), t0=None), can_act=None, source="m.jsonl")
    # Another file, same steps: a repeat.
    assert not m.observe(samples(range(100), t0=None), can_act=None, source="x.csv").rewinds
    # The same file read again after churn: a repeat.
    out = m.observe(samples(range(300), t0=None), can_act=None, source="m.jsonl", reread=True)
    assert not out.rewinds
    # The same file, appended with steps going back: the job restarted.
    out = m.observe(samples(range(150, 200), t0=None), can_act=None, source="m.jsonl")
    assert [(r.from_step, r.to_step) for r in out.rewinds] == [(299, 150)]


def test_a_rewind_forgets_the_actions_of_the_abandoned_future() -> None:
    m = monitor()
    m.control.actions = [(100, Severity.CRITICAL), (350, Severity.CRITICAL)]
    m.observe(samples(range(400), t0=1e9), can_act=None, source="a")
    m.observe(samples(range(200, 210), t0=2e9), can_act=None, source="a")
    assert [a[0] for a in m.control.actions] == [100]  # the cooldown counts from 100, not 350


def test_rewind_bookkeeping_round_trips_through_state() -> None:
    m = monitor()
    m.observe(samples(range(50), t0=1e9), can_act=None, source="a")
    restored = monitor()
    restored.load_state_dict(json.loads(json.dumps(m.state_dict())))
    out = restored.observe(samples(range(10, 20), t0=2e9), can_act=None, source="b")
    assert [(r.from_step, r.to_step) for r in out.rewinds] == [(49, 10)]
    # A state saved before the bookkeeping existed still loads (no wall time, no source).
    old = m.state_dict()
    for series in old["series"].values():
        for key in ("last_wall_time", "source", "rewinds"):
            series.pop(key)
    monitor().load_state_dict(old)
