"""The daemon's end of a run's channel: numbering, acks, and when a heartbeat may be trusted."""

from __future__ import annotations

import time
from pathlib import Path

from lrwatch.daemon.actuator import Actuator
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, AckStatus, Action, ActionType, Heartbeat


def beat(last_seq: int, lr_scale: float) -> Heartbeat:
    return Heartbeat(1, "h", 10, lr_scale, last_seq, (0.1 * lr_scale,), time.time())


def test_a_heartbeat_older_than_the_last_ack_does_not_overrule_it(tmp_path: Path) -> None:
    channel.channel_id(tmp_path, create=True)
    channel.write_heartbeat(tmp_path, beat(0, 1.0))
    actuator = Actuator("r", tmp_path, None)
    command = actuator.new_command(Action(ActionType.SCALE_LR, 0.1), "test", "t", time.time())
    assert command.seq == 1 and actuator.send(command)
    assert not actuator.heartbeat_is_current()  # a command is outstanding

    channel.write_ack(tmp_path, Ack(1, AckStatus.APPLIED, 11, 0.1, (0.01,), "", time.time()))
    [ack] = actuator.poll(heartbeat=True)
    assert ack.lr_scale == 0.1
    # The heartbeat on disk was written before the ack: it still says 1.0.
    assert not actuator.heartbeat_is_current()

    channel.write_heartbeat(tmp_path, beat(1, 0.1))
    actuator.poll(heartbeat=True)
    assert actuator.heartbeat_is_current()


def test_numbering_goes_on_from_the_files(tmp_path: Path) -> None:
    channel.channel_id(tmp_path, create=True)
    first = Actuator("r", tmp_path, None)
    for _ in range(3):
        first.send(first.new_command(Action(ActionType.SCALE_LR, 0.5), "x", "t", 0.0))
    # A daemon that lost its database still never reuses a number the hook may have seen.
    # It writes into the next free slot, however it numbers the command in its own database.
    second = Actuator("r", tmp_path, None)
    assert second.send(second.new_command(Action(ActionType.SCALE_LR, 0.5), "x", "t", 0.0))
    assert channel.highest_command_seq(tmp_path) == 4
