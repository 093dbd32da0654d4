"""lrwatch's decisions as TensorBoard events: written where TensorBoard looks, read back by
TensorBoard's own EventAccumulator (the reader the TensorBoard UI uses), never raising."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, AckStatus, Command, Sample
from lrwatch.sinks.tensorboard import (
    FINDING_TAG_PREFIX,
    TAG_ACTION,
    TAG_DECISIONS,
    TAG_LR_SCALE,
    DecisionWriter,
)


def samples(start: int, values: list[float]) -> list[Sample]:
    return [Sample("r", "loss", start + i, v) for i, v in enumerate(values)]


def healthy(n: int, level: float = 1.0) -> list[float]:
    """A noisy, flat loss: deterministic wiggle of a few percent."""
    return [level * (1.0 + 0.05 * math.sin(1.7 * i)) for i in range(n)]


def blow_up(n: int) -> list[float]:
    """Geometric growth, the signature of an LR past the stability edge."""
    return [2.0**i for i in range(1, n + 1)]


def attached(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert channel.channel_id(run_dir, create=True)  # what lrwatch.attach() does first
    return run_dir


def load(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "lrwatch"))
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def texts(acc: EventAccumulator) -> str:
    return "\n".join(
        s.decode() for e in acc.Tensors(TAG_DECISIONS) for s in e.tensor_proto.string_val
    )


def test_findings_commands_and_acks_read_back_by_tensorboard(tmp_path: Path) -> None:
    run_dir = attached(tmp_path)
    monitor = RunMonitor("r", Config().for_run("r"))
    writer = DecisionWriter()

    outcome = monitor.observe(samples(0, healthy(60)), can_act=None)
    writer.record(run_dir, monitor, outcome)
    outcome = monitor.observe(samples(60, blow_up(8)), can_act=None)
    found = [f for f in outcome.findings if f.kind == "divergence"]
    assert found, "a geometric blow-up must be a divergence"
    decision = next(d for d in outcome.decisions if d.action is not None)
    assert decision.action is not None
    command = Command("r", 1, decision.action, decision.reason, time.time())
    writer.record(run_dir, monitor, outcome, [command])

    # The hook applies the cut a few steps later and acknowledges it; the daemon's actuator
    # reads the ack and hands it over.
    ack_step = found[0].step + 3
    ack = Ack(1, AckStatus.APPLIED, ack_step, 0.1, (0.03,), "scaled x0.1", time.time())
    writer.acked(run_dir, [ack])
    outcome = monitor.observe(samples(68, healthy(40, level=0.5)), can_act=None)
    writer.record(run_dir, monitor, outcome)
    # The daemon's own view may fall back to a stale heartbeat's factor for a moment after an
    # ack; what TensorBoard shows is the acknowledged factor, whatever that view says.
    monitor.control.lr_scale = 1.0
    writer.record(run_dir, monitor, monitor.observe(samples(108, healthy(150, 0.5)), can_act=None))

    acc = load(run_dir)
    tags = acc.Tags()
    assert {TAG_LR_SCALE, TAG_ACTION, FINDING_TAG_PREFIX + "divergence"} <= set(tags["scalars"])
    assert TAG_DECISIONS in tags["tensors"]
    lr_scale = dict(scalars(acc, TAG_LR_SCALE))
    assert lr_scale[59] == pytest.approx(1.0)  # the factor from the start of the run ...
    assert lr_scale[ack_step - 1] == pytest.approx(1.0)  # ... to the step before the ack
    assert lr_scale[ack_step] == pytest.approx(0.1)  # ... and the new one from the ack's step
    assert all(v == pytest.approx(0.1) for s, v in lr_scale.items() if s >= ack_step)
    assert max(lr_scale) == 257  # and the line goes on to the run's last step
    assert scalars(acc, TAG_ACTION) == [(ack_step, pytest.approx(0.1))]
    divergence = scalars(acc, FINDING_TAG_PREFIX + "divergence")
    assert (found[0].step, 1.0) in divergence
    assert min(v for _, v in divergence) == 0.0  # shown as an edge, not a lone point
    text = texts(acc)
    assert "**divergence** (critical)" in text
    assert "command #1 sent: divergence at step" in text
    assert "ack #1 **applied**" in text and "LR factor 0.1" in text


def test_a_run_without_a_hook_is_left_untouched(tmp_path: Path) -> None:
    run_dir = tmp_path / "observed"
    run_dir.mkdir()
    monitor = RunMonitor("r", Config().for_run("r"))
    outcome = monitor.observe(samples(0, healthy(30) + blow_up(8)), can_act="no live hook")
    DecisionWriter().record(run_dir, monitor, outcome)
    assert list(run_dir.iterdir()) == []


def test_an_unwritable_output_dir_is_reported_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = attached(tmp_path)
    (run_dir / "lrwatch").write_text("a file where the directory should be")
    monitor = RunMonitor("r", Config().for_run("r"))
    writer = DecisionWriter()
    for start in (0, 30, 60):
        outcome = monitor.observe(samples(start, healthy(30)), can_act=None)
        writer.record(run_dir, monitor, outcome)
    warnings = [r for r in caplog.records if "TensorBoard events" in r.getMessage()]
    assert len(warnings) == 1


def test_the_factor_line_keeps_going_without_changes(tmp_path: Path) -> None:
    run_dir = attached(tmp_path)
    monitor = RunMonitor("r", Config().for_run("r"))
    writer = DecisionWriter()
    for start in range(0, 400, 25):
        writer.record(run_dir, monitor, monitor.observe(samples(start, healthy(25)), can_act=None))
    steps = [s for s, _ in scalars(load(run_dir), TAG_LR_SCALE)]
    assert steps[0] == 24 and steps[-1] >= 300  # a point at least every 100 steps
    assert all(b - a <= 125 for a, b in itertools.pairwise(steps))


def test_the_daemon_side_imports_neither_torch_nor_tensorflow() -> None:
    code = (
        "import sys, lrwatch.daemon.service, lrwatch.sinks.tensorboard; "
        "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_acks_of_commands_it_showed_are_drawn(tmp_path: Path) -> None:
    """A manual set-lr's ack (its command never passed through ``record``) is not drawn."""
    run_dir = attached(tmp_path)
    monitor = RunMonitor("r", Config().for_run("r"))
    writer = DecisionWriter()
    writer.record(run_dir, monitor, monitor.observe(samples(0, healthy(30)), can_act=None))
    manual = Ack(7, AckStatus.APPLIED, 20, 0.5, (0.05,), "scaled x0.5", time.time())
    writer.acked(run_dir, [manual])
    writer.record(run_dir, monitor, monitor.observe(samples(30, healthy(30)), can_act=None))
    acc = load(run_dir)
    assert TAG_ACTION not in acc.Tags()["scalars"]
    assert "ack #7" not in texts(acc)
