"""The daemon's channel boundary: whatever bytes a job (or anyone) writes as a heartbeat or an
ack, nothing but ChannelError comes out, and what comes through is finite and in range."""

from __future__ import annotations

import errno
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrwatch
from lrwatch.daemon.actuator import Actuator
from lrwatch.protocol import channel, channel_input
from lrwatch.protocol.channel_input import ChannelError
from lrwatch.protocol.types import Ack, AckStatus, Action, ActionType, Heartbeat

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
json_values = st.recursive(
    numbers, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner)
)
HEARTBEAT_KEYS = ["pid", "host", "step", "lr_scale", "last_seq", "lrs", "written_at", "handlers"]
HEARTBEAT_KEYS += ["world_size", "channel", "schedule_lrs", "schedule_step"]
ACK_KEYS = ["seq", "status", "step", "lr_scale", "lrs", "reason", "acked_at", "digest"]


def plausible(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the real keys (each maybe missing) holding anything, often near-valid."""
    valid: dict[str, Any] = {
        "pid": 1, "host": "h", "step": 3, "lr_scale": 0.5, "last_seq": 0, "lrs": [0.1],
        "written_at": 1.0, "handlers": [], "world_size": 1, "channel": "c", "schedule_lrs": [0.2],
        "schedule_step": 3, "seq": 1, "status": "applied", "reason": "", "acked_at": 1.0,
        "digest": "d",
    }  # fmt: skip
    value = st.one_of(json_values, st.lists(numbers, max_size=3))
    return st.fixed_dictionaries(
        {},
        optional={k: st.one_of(st.just(valid[k]), value) for k in keys},
    )


def encoded(value: object) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as the bare words a job may write


def check_heartbeat(beat: Heartbeat) -> None:
    for x in (beat.lr_scale, beat.written_at, *beat.lrs, *beat.schedule_lrs):
        assert isinstance(x, float) and math.isfinite(x)
    assert channel_input.MIN_SCALE <= beat.lr_scale <= channel_input.MAX_SCALE
    assert all(0 <= lr <= channel_input.MAX_LR for lr in (*beat.lrs, *beat.schedule_lrs))
    for n in (beat.pid, beat.step, beat.last_seq, beat.world_size):
        assert type(n) is int and -1 <= n <= channel_input.MAX_INT


def check_ack(ack: Ack) -> None:
    assert math.isfinite(ack.lr_scale) and ack.lr_scale >= channel_input.MIN_SCALE
    assert all(math.isfinite(x) and x >= 0 for x in ack.lrs) and math.isfinite(ack.acked_at)
    assert type(ack.seq) is int and 1 <= ack.seq <= channel_input.MAX_INT and type(ack.step) is int


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), plausible(HEARTBEAT_KEYS).map(encoded)))
def test_any_heartbeat_bytes_parse_or_are_refused(data: bytes) -> None:
    try:
        beat = channel_input.parse_heartbeat(data)
    except ChannelError as exc:
        assert exc.kind in ("not_json", "malformed", "out_of_range")
    else:
        check_heartbeat(beat)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.binary(max_size=300), plausible(ACK_KEYS).map(encoded), json_values.map(encoded))
)
def test_any_ack_bytes_parse_or_are_refused(data: bytes) -> None:
    try:
        ack = channel_input.parse_ack(data)
    except ChannelError as exc:
        assert exc.kind in ("not_json", "malformed", "out_of_range")
    else:
        check_ack(ack)


@pytest.mark.parametrize(
    "data",
    [
        b'{"step": Infinity}',
        b"[" * 5000 + b"]" * 5000,
        b'{"lrs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        encoded({"pid": 1, "host": "h", "step": 10**400, "lr_scale": 1, "last_seq": 0,
                 "lrs": [], "written_at": 1}),
        encoded({"pid": 1, "host": "h", "step": 1, "lr_scale": 0, "last_seq": 0,
                 "lrs": [], "written_at": 1}),
        encoded({"pid": 1, "host": "h", "step": 1, "lr_scale": float("nan"), "last_seq": 0,
                 "lrs": [], "written_at": 1}),
    ],
)  # fmt: skip
def test_the_reported_crashes_are_refused(data: bytes) -> None:
    with pytest.raises(ChannelError):
        channel_input.parse_heartbeat(data)
    with pytest.raises(ChannelError):
        channel_input.parse_ack(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.binary(max_size=200), plausible(HEARTBEAT_KEYS).map(encoded)),
    st.one_of(st.binary(max_size=200), plausible(ACK_KEYS).map(encoded)),
)
def test_the_actuator_never_raises_on_what_a_job_writes(beat: bytes, ack: bytes) -> None:
    """The files themselves, through the daemon's end of the channel (as the main loop calls
    it): errors are reported, never raised; a heartbeat taken in is in range."""
    reported: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        channel.channel_id(run_dir, create=True)
        channel.heartbeat_path(run_dir).write_bytes(beat)
        actuator = Actuator("r", run_dir, None, lambda k, m: reported.append((k, m)))
        command = actuator.new_command(Action(ActionType.SCALE_LR, 0.5), "t", "t", 0.0)
        actuator.send(command)
        channel.ack_path(run_dir, 1).parent.mkdir(parents=True, exist_ok=True)
        channel.ack_path(run_dir, 1).write_bytes(ack)
        for _ in range(2):
            for got in actuator.poll(heartbeat=True):
                check_ack(got)
        if actuator.heartbeat is not None:
            check_heartbeat(actuator.heartbeat)


# --- the channel's numbering and acks, daemon side -----------------------------------------------


def live(run_dir: Path, last_seq: int = 0, channel_id: str = "") -> None:
    beat = Heartbeat(1, "h", 5, 1.0, last_seq, (0.1,), time.time(), channel=channel_id)
    channel.write_heartbeat(run_dir, beat)


def cut(actuator: Actuator) -> int:
    command = actuator.new_command(Action(ActionType.SCALE_LR, 0.1), "t", "t", 0.0)
    actuator.send(command)
    return command.seq


def test_a_stale_ack_at_the_slot_is_not_taken_for_the_answer(tmp_path: Path) -> None:
    cid = channel.channel_id(tmp_path, create=True) or ""
    live(tmp_path, channel_id=cid)
    channel.ack_path(tmp_path, 1).parent.mkdir(parents=True)
    stale = Ack(1, AckStatus.REJECTED, 3, 1.0, (0.1,), "not JSON", 1.0, digest="0" * 32)
    channel.write_ack(tmp_path, stale)
    reported: list[str] = []
    actuator = Actuator("r", tmp_path, None, lambda k, m: reported.append(k))
    ident = cut(actuator)
    assert actuator.poll(heartbeat=True) == [] and "stale_ack" in reported
    data = channel.command_path(tmp_path, 1).read_bytes()
    real = Ack(1, AckStatus.APPLIED, 4, 0.1, (0.01,), "", 2.0, digest=channel.digest(data))
    channel.write_ack(tmp_path, real)
    [ack] = actuator.poll(heartbeat=True)
    assert ack.status is AckStatus.APPLIED and ack.seq == ident


def test_a_far_ahead_file_does_not_move_the_numbering(tmp_path: Path) -> None:
    cid = channel.channel_id(tmp_path, create=True) or ""
    live(tmp_path, last_seq=2, channel_id=cid)
    channel.command_path(tmp_path, 100_000_000).parent.mkdir(parents=True)
    channel.command_path(tmp_path, 100_000_000).write_bytes(b"junk")
    cut(Actuator("r", tmp_path, None))
    assert channel.command_path(tmp_path, 3).exists()


def test_a_full_disk_keeps_commands_pending_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = channel.channel_id(tmp_path, create=True) or ""
    live(tmp_path, channel_id=cid)
    reported: list[str] = []
    actuator = Actuator("r", tmp_path, None, lambda k, m: reported.append(k))
    real = channel.create_command

    def full(*args: Any) -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(channel, "create_command", full)
    first, second = cut(actuator), cut(actuator)
    assert reported.count("write_failed") == 2 and "write_failed" in actuator.trouble
    assert sorted(actuator.unacked) == [first, second]
    monkeypatch.setattr(channel, "create_command", real)
    actuator.poll(heartbeat=True)  # retried at the next tick, oldest first
    assert actuator.trouble == {}
    ids = [json.loads(channel.command_path(tmp_path, s).read_bytes())["id"] for s in (1, 2)]
    assert ids == [first, second]


def test_a_new_channel_supersedes_what_the_old_job_was_owed(tmp_path: Path) -> None:
    old = channel.channel_id(tmp_path, create=True) or ""
    live(tmp_path, last_seq=3, channel_id=old)
    actuator = Actuator("r", tmp_path, None)
    owed = cut(actuator)
    assert channel.command_path(tmp_path, 4).exists()
    (tmp_path / ".lrwatch" / "id").write_text("newnewnewnewnewn")
    live(tmp_path, last_seq=0, channel_id="newnewnewnewnewn")
    [ack] = actuator.poll(heartbeat=True)
    assert ack.seq == owed and ack.status is AckStatus.REJECTED and "superseded" in ack.reason
    fresh = cut(actuator)
    assert fresh > owed and channel.command_path(tmp_path, 1).exists()


# --- set-lr: a 504 withdraws the request atomically ----------------------------------------------


def test_a_timed_out_control_request_is_withdrawn_or_answered() -> None:
    from lrwatch.daemon.http import ControlRequest, _withdraw

    waiting = ControlRequest("set-lr", "r", {"scale": 0.5}, "t")
    code, _ = _withdraw(waiting)
    assert code == 504 and not waiting.reply.set_running_or_notify_cancel()  # never carried out

    taken = ControlRequest("set-lr", "r", {"scale": 0.5}, "t")
    assert taken.reply.set_running_or_notify_cancel()  # the main loop took it first
    taken.reply.set_result((202, {"seq": 1}))
    assert _withdraw(taken) == (202, {"seq": 1})


# --- the heartbeat carries the schedule's own LRs ----------------------------------------------


def test_the_heartbeat_carries_the_schedules_unscaled_lrs(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (s + 1))
    hook = lrwatch.attach(optimizer, tmp_path, heartbeat_interval=1e-9)
    hook.load_state_dict({"lr_scale": 0.5, "last_seq": 0})
    for step in range(3):
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        scheduler.step()
        hook.step(step)
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and beat.schedule_step == 2
    assert beat.schedule_lrs == pytest.approx((0.1 / 4,))
    assert beat.lrs == pytest.approx((0.5 * 0.1 / 4,)) and beat.channel == hook._channel
    hook.close()
