"""The channel's refusals as the hook meets them: with a secret only authentic commands
apply; symlinked, oversized, non-regular and non-JSON command files are acked rejected; and
random junk never raises into the loop, escapes the LR bounds or wedges the channel."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrwatch.protocol import channel
from lrwatch.protocol.types import AckStatus, ActionType
from tests.unit.hook.job import (
    ack,
    attach,
    make_model,
    record_used,
    rejected,
    send,
    train_step,
)

KEY = b"s3cret"


def test_with_a_secret_only_authentic_commands_apply(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path, secret=KEY)
    send(tmp_path, 1, 0.5)
    rejected(tmp_path, 1, hook, "unsigned")
    send(tmp_path, 2, 0.5, key=b"wrong")
    rejected(tmp_path, 2, hook, "bad signature")
    send(tmp_path, 3, 0.5, key=KEY, channel_id="another-run")
    rejected(tmp_path, 3, hook, "another channel")
    good = send(tmp_path, 4, 0.5, key=KEY)
    hook.step(4)
    assert ack(tmp_path, 4).status is AckStatus.APPLIED and hook.lr_scale == 0.5
    shutil.copy(good, channel.command_path(tmp_path, 5))  # replay under the next number
    rejected(tmp_path, 5, hook, "does not match file number")


def test_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(channel.SECRET_ENV, "from-env")
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, 0.5)
    rejected(tmp_path, 1, hook, "unsigned")
    send(tmp_path, 2, 0.5, key=b"from-env")
    hook.step(2)
    assert hook.lr_scale == 0.5


def test_hostile_files_are_rejected_and_do_not_wedge(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    outside = send(tmp_path / "elsewhere", 1, 0.5, channel_id=channel.channel_id(tmp_path))
    channel.command_path(tmp_path, 1).parent.mkdir(parents=True, exist_ok=True)
    channel.command_path(tmp_path, 1).symlink_to(outside)
    rejected(tmp_path, 1, hook, "cannot open")
    channel.command_path(tmp_path, 2).write_bytes(b" " * (channel.MAX_COMMAND_BYTES + 1))
    rejected(tmp_path, 2, hook, "limit")
    os.mkfifo(channel.command_path(tmp_path, 3))
    rejected(tmp_path, 3, hook, "not a regular file")
    channel.command_path(tmp_path, 4).write_bytes(b"{not json")
    rejected(tmp_path, 4, hook, "not JSON")
    send(tmp_path, 5, 0.5)
    hook.step(5)
    assert ack(tmp_path, 5).status is AckStatus.APPLIED


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
NUMBER = st.floats() | st.integers(min_value=-(10**400), max_value=10**400) | st.booleans()
COMMANDISH = st.fixed_dictionaries(
    {
        "channel": st.sampled_from(["<cid>", "other"]),
        "seq": st.sampled_from([1, 2, 0, True, "1"]),
        "action": st.fixed_dictionaries(
            {
                "type": st.sampled_from([*ActionType, "explode"]) | JSON,
                "factor": st.floats(0.05, 20) | NUMBER | JSON,
            }
        ),
    },
    optional={"reason": JSON, "issued_at": NUMBER, "run": JSON, "signature": JSON},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.binary(max_size=300) | JSON.map(json.dumps) | COMMANDISH.map(json.dumps))
def test_junk_never_raises_escapes_bounds_or_wedges(junk: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        model, opt = make_model((0.1, 0.4))
        hook = attach(opt, run_dir, min_lr=0.05, max_lr=0.5)
        calls: list[int] = []
        hook.on("checkpoint", lambda step, command: calls.append(step))
        used = record_used(opt)
        data = junk.encode() if isinstance(junk, str) else junk
        cid = channel.channel_id(run_dir)
        assert cid is not None
        data = data.replace(b"<cid>", cid.encode())
        channel.atomic_write(channel.command_path(run_dir, 1), data)
        for step in range(3):
            hook.step(step)
            train_step(model, opt)
        assert channel.load_ack(run_dir, 1) is not None
        assert all(0.05 <= lr <= 0.5 for row in used for lr in row)
        send(run_dir, 2, kind=ActionType.CHECKPOINT)
        hook.step(3)
        assert ack(run_dir, 2).status is AckStatus.APPLIED and calls[-1] == 3
