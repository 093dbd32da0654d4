"""Actions beyond the LR, in a real hooked job process: a registered ``rollback`` handler runs
and its command is acked ``applied``; unregistered ``stop`` and ``checkpoint`` are acked
``unsupported`` and the job goes on, its LR untouched. The commands are written as the daemon
writes them (``channel.write_command`` with the run's channel id)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from lrwatch import testing
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, Action, ActionType, Command
from tests.integration import actuation_job as job

pytestmark = pytest.mark.slow


def send(run: Path, seq: int, kind: ActionType) -> Ack:
    channel_id = channel.channel_id(run)
    assert channel_id is not None
    command = Command(run.name, seq, Action(kind), "test", time.time(), "controller")
    channel.write_command(run, command, channel=channel_id, key=None)
    testing.wait_for(lambda: channel.load_ack(run, seq) is not None, 10, f"ack {seq}")
    ack = channel.load_ack(run, seq)
    assert ack is not None
    return ack


def test_registered_handler_runs_and_unregistered_actions_are_unsupported(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    run = tmp_path / "exp"
    proc = job.start(run, "--step-time", "0.01", "--on", "rollback")
    procs.append(proc)
    testing.wait_for(
        lambda: (b := channel.read_heartbeat(run)) is not None and b.handlers == ("rollback",),
        30,
        "the heartbeat listing the rollback handler",
    )

    ack = send(run, 1, ActionType.ROLLBACK)
    assert ack.status.value == "applied", ack
    assert ack.lr_scale == 1.0
    handled = [json.loads(line) for line in (run / "handled.jsonl").read_text().splitlines()]
    assert handled == [{"event": "rollback", "step": ack.step, "seq": 1}]

    for seq, kind in ((2, ActionType.STOP), (3, ActionType.CHECKPOINT)):
        ack = send(run, seq, kind)
        assert ack.status.value == "unsupported", ack
        assert kind.value in ack.reason and "no handler" in ack.reason
        assert ack.lr_scale == 1.0

    time.sleep(0.3)
    assert proc.poll() is None, "an unsupported stop must not end the job"
    handled = [json.loads(line) for line in (run / "handled.jsonl").read_text().splitlines()]
    assert len(handled) == 1, "the handler ran again"
    beat = channel.read_heartbeat(run)
    assert beat is not None and beat.last_seq == 3 and beat.lr_scale == 1.0
    assert all(r["lr"] == pytest.approx(0.1) for r in job.read_log(run))


def test_the_policy_asks_for_a_rollback_with_the_cut(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """`policy.requests: {divergence: rollback}`: the daemon sends the LR cut and, right after
    it, a rollback request, which the job's registered handler receives once."""
    from tests.integration.test_actuation_manual import start_daemon

    config = tmp_path / "lrwatch.yaml"
    # Only the divergence acts: the job could reach its noise floor (a plateau) first.
    config.write_text("policy:\n  factors: {divergence: 0.1}\n  requests: {divergence: rollback}\n")
    daemon, _, root, _ = start_daemon(tmp_path, "--config", str(config))
    procs.append(daemon)
    run = root / "wild"
    # Full-batch least squares at LR 0.9, past 2/lambda_max (~0.75): the loss grows ~1.4x a step.
    procs.append(job.start(run, "--step-time", "0.02", "--lr", "0.9", "--on", "rollback"))
    testing.wait_for(lambda: channel.load_ack(run, 2) is not None, 60, "acks 1 and 2")
    cut, rollback = channel.load_ack(run, 1), channel.load_ack(run, 2)
    assert cut is not None and rollback is not None
    assert cut.status.value == "applied" and cut.lr_scale == 0.1
    assert rollback.status.value == "applied" and rollback.lr_scale == 0.1
    handled = [json.loads(line) for line in (run / "handled.jsonl").read_text().splitlines()]
    assert handled == [{"event": "rollback", "step": rollback.step, "seq": 2}]
