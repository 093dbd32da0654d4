"""The command/ack file protocol: round trips, refusals, and files planted by someone else."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrwatch.protocol import channel
from lrwatch.protocol.channel import ChannelError
from lrwatch.protocol.types import Ack, AckStatus, Action, ActionType, Command, Heartbeat

KEY = b"k3y"
CID = "0123456789abcdef"


def command(
    seq: int = 1, factor: float | None = 0.5, kind: ActionType = ActionType.SCALE_LR
) -> Command:
    return Command("exp", seq, Action(kind, factor), "divergence at step 10", 123.5, "lrwatch")


def decode(data: bytes, *, seq: int = 1, key: bytes | None = None) -> Command:
    return channel.decode_command(data, expected_seq=seq, channel=CID, key=key)


def payload(**changes: Any) -> bytes:
    raw: dict[str, Any] = json.loads(channel.encode_command(command(), CID, None))
    raw.update(changes)
    return json.dumps(raw).encode()


# --- commands -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, KEY])
def test_command_round_trip(tmp_path: Path, key: bytes | None) -> None:
    sent = command(seq=7)
    path = channel.write_command(tmp_path, sent, channel=CID, key=key)
    assert path == channel.command_path(tmp_path, 7) and path.name == "000000000007.json"
    got = decode(path.read_bytes(), seq=7, key=key)
    assert (got.run, got.seq, got.action, got.reason, got.issued_at, got.issuer) == (
        sent.run,
        7,
        Action(ActionType.SCALE_LR, 0.5),
        sent.reason,
        123.5,
        "lrwatch",
    )
    assert (got.signature is None) == (key is None)


def test_signed_command_is_refused_under_another_key_or_unsigned() -> None:
    signed = channel.encode_command(command(), CID, KEY)
    with pytest.raises(ChannelError, match="bad signature"):
        decode(signed, key=b"other")
    with pytest.raises(ChannelError, match="unsigned"):
        decode(channel.encode_command(command(), CID, None), key=KEY)
    tampered = json.loads(signed)
    tampered["action"]["factor"] = 10.0
    with pytest.raises(ChannelError, match="bad signature"):
        decode(json.dumps(tampered).encode(), key=KEY)


def test_replay_and_misaddressed_commands_are_refused() -> None:
    signed = channel.encode_command(command(seq=1), CID, KEY)
    with pytest.raises(ChannelError, match="does not match file number 2"):
        decode(signed, seq=2, key=KEY)
    other = channel.encode_command(command(), "another-channel", KEY)
    with pytest.raises(ChannelError, match="another channel"):
        decode(other, key=KEY)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "not JSON"),  # deeper than the recursion limit
        (payload(seq=True), "sequence"),
        (payload(seq="1"), "sequence"),
        (payload(action={"type": "explode"}), "unknown action type"),
        (payload(action={"type": ["scale_lr"]}), "unknown action type"),
        (payload(action={"type": "scale_lr"}), "numeric factor"),
        (payload(action={"type": "scale_lr", "factor": True}), "numeric factor"),
        (payload(action={"type": "scale_lr", "factor": 0}), "finite positive"),
        (payload(action={"type": "scale_lr", "factor": -2}), "finite positive"),
        (
            b'{"seq":1,"channel":"%s","action":{"type":"scale_lr","factor":NaN}}' % CID.encode(),
            "finite positive",
        ),
        (payload(action={"type": "scale_lr", "factor": 10**400}), "out of range"),
        (payload(issued_at=10**400), "out of range"),
        (payload(issued_at="yesterday"), "issued_at"),
        (payload(reason=5), "strings"),
    ],
)
def test_malformed_commands_are_refused_with_a_reason(data: bytes, match: str) -> None:
    with pytest.raises(ChannelError, match=match):
        decode(data)


def test_non_ascii_signature_is_a_bad_signature_not_a_crash() -> None:
    with pytest.raises(ChannelError, match="bad signature"):
        decode(payload(signature="é" * 64), key=KEY)


def test_other_actions_carry_no_factor() -> None:
    got = decode(
        channel.encode_command(command(factor=None, kind=ActionType.STOP), CID, KEY), key=KEY
    )
    assert got.action == Action(ActionType.STOP)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), key=st.sampled_from([None, KEY]))
def test_decode_raises_nothing_but_channel_error(data: bytes, key: bytes | None) -> None:
    with contextlib.suppress(ChannelError):
        decode(data, key=key)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["seq", "channel", "action", "reason", "issued_at", "issuer", "run", "signature"]
        ),
        JSON,
    )
)
def test_decode_of_random_json_raises_nothing_but_channel_error(fields: dict[str, Any]) -> None:
    data = json.dumps({"seq": 1, "channel": CID, **fields}).encode()
    for key in (None, KEY):
        with contextlib.suppress(ChannelError):
            decode(data, key=key)


def test_highest_command_seq(tmp_path: Path) -> None:
    assert channel.highest_command_seq(tmp_path) == 0
    for seq in (3, 12):
        channel.write_command(tmp_path, command(seq=seq), channel=CID, key=None)
    commands = channel.command_path(tmp_path, 1).parent
    for name in ("999.json.tmp", ".000000000099.json.1.ab.tmp", "²².json", "notes.txt", "50"):
        (commands / name).write_text("x")
    assert channel.highest_command_seq(tmp_path) == 12


# --- acks and heartbeats ------------------------------------------------------------------------


def test_ack_round_trip(tmp_path: Path) -> None:
    sent = Ack(4, AckStatus.REJECTED, 120, 0.5, (0.05, 0.001), "bad signature", 99.0)
    assert channel.load_ack(tmp_path, 4) is None and not channel.ack_exists(tmp_path, 4)
    channel.write_ack(tmp_path, sent)
    assert channel.load_ack(tmp_path, 4) == sent and channel.ack_exists(tmp_path, 4)
    channel.ack_path(tmp_path, 5).write_text('{"seq": 5}')
    with pytest.raises(ChannelError, match="unknown ack status"):
        channel.load_ack(tmp_path, 5)


def test_heartbeat_round_trip(tmp_path: Path) -> None:
    assert channel.read_heartbeat(tmp_path) is None
    beat = Heartbeat(42, "node-1", 300, 0.25, 6, (0.01, 0.002), 1000.5, ("stop",), 4)
    channel.write_heartbeat(tmp_path, beat)
    assert channel.read_heartbeat(tmp_path) == beat
    channel.heartbeat_path(tmp_path).write_text("{garbled")
    assert channel.read_heartbeat(tmp_path) is None


# --- hostile files ------------------------------------------------------------------------------


def test_read_regular_file_refusals(tmp_path: Path) -> None:
    target = tmp_path / "target.json"
    target.write_text("{}")
    assert channel.read_regular_file(target, 10) == b"{}"
    with pytest.raises(FileNotFoundError):
        channel.read_regular_file(tmp_path / "absent.json", 10)
    (tmp_path / "link.json").symlink_to(target)
    with pytest.raises(ChannelError, match=r"cannot open link\.json"):
        channel.read_regular_file(tmp_path / "link.json", 10)
    os.mkfifo(tmp_path / "fifo.json")  # would block a plain open() forever
    with pytest.raises(ChannelError, match="not a regular file"):
        channel.read_regular_file(tmp_path / "fifo.json", 10)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ChannelError, match="not a regular file"):
        channel.read_regular_file(tmp_path / "dir.json", 10)
    (tmp_path / "big.json").write_bytes(b"x" * 11)
    with pytest.raises(ChannelError, match="over the 10"):
        channel.read_regular_file(tmp_path / "big.json", 10)


def test_channel_id_is_created_once_and_kept(tmp_path: Path) -> None:
    assert channel.channel_id(tmp_path) is None
    first = channel.channel_id(tmp_path, create=True)
    assert first is not None and channel.channel_id(tmp_path, create=True) == first
    assert channel.channel_id(tmp_path) == first


def test_channel_id_creation_never_replaces_another_writers_id(tmp_path: Path) -> None:
    path = channel.channel_dir(tmp_path) / "id"
    assert channel._create_exclusive(path, b"first")
    assert not channel._create_exclusive(path, b"second")  # the race's loser learns it lost
    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["id"]  # no temp files left


def test_channel_id_refuses_a_planted_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("attacker-chosen")
    channel.channel_dir(tmp_path).mkdir()
    (channel.channel_dir(tmp_path) / "id").symlink_to(elsewhere)
    assert channel.channel_id(tmp_path, create=True) is None


def test_atomic_write_replaces_whole_and_cleans_up_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sub" / "file.json"
    channel.atomic_write(path, b"one", durable=True)
    channel.atomic_write(path, b"two")
    assert path.read_bytes() == b"two"

    def full_disk(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        channel.atomic_write(path, b"three")
    monkeypatch.undo()
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.json"]


def test_atomic_write_finishes_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:3]))
    channel.atomic_write(tmp_path / "f", b"0123456789")
    monkeypatch.undo()
    assert (tmp_path / "f").read_bytes() == b"0123456789"


# --- secrets ------------------------------------------------------------------------------------


def test_load_secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(channel.SECRET_ENV, raising=False)
    monkeypatch.delenv(channel.SECRET_FILE_ENV, raising=False)
    assert channel.load_secret() is None
    assert channel.load_secret("abc") == b"abc" and channel.load_secret(b"raw") == b"raw"
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    assert channel.load_secret(str(secret_file)) == b"from-file"
    monkeypatch.setenv(channel.SECRET_FILE_ENV, str(secret_file))
    assert channel.load_secret() == b"from-file"
    monkeypatch.setenv(channel.SECRET_ENV, "from-env")
    assert channel.load_secret() == b"from-env"
    assert channel.load_secret("explicit") == b"explicit"
