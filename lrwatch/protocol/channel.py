"""The command/ack file protocol between the daemon and a training job's hook, one directory per
run, ``<run_dir>/.lrwatch/``::

    id                           random channel id, created once by the hook; commands name it
    commands/000000000001.json   written by the daemon (the single writer), one per command
    acks/000000000001.json       written by the hook, one per command it handled
    heartbeat.json               rewritten by the hook every few seconds

Both ends import this module, so it uses the standard library only. Files, because both ends
already have the directory and a renamed temp file is seen whole or not at all; one file per
sequence number, so a pending check is one failed ``open()`` and a command is applied at most
once. Why, at length: docs/architecture.md (the channel).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from lrwatch.protocol.channel_input import ChannelError, load_json, parse_ack, parse_heartbeat
from lrwatch.protocol.types import Ack, Action, ActionType, Command, Heartbeat

CHANNEL_DIRNAME = ".lrwatch"
MAX_COMMAND_BYTES = 4096
MAX_ACK_BYTES = 16384
SECRET_ENV = "LRWATCH_SECRET"
SECRET_FILE_ENV = "LRWATCH_SECRET_FILE"
_SEQ_WIDTH = 12


__all__ = ["ChannelError"]  # defined in channel_input.py, where every inbound file is parsed


def channel_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / CHANNEL_DIRNAME


def command_path(run_dir: str | os.PathLike[str], seq: int) -> Path:
    return channel_dir(run_dir) / "commands" / f"{seq:0{_SEQ_WIDTH}d}.json"


def ack_path(run_dir: str | os.PathLike[str], seq: int) -> Path:
    return channel_dir(run_dir) / "acks" / f"{seq:0{_SEQ_WIDTH}d}.json"


def heartbeat_path(run_dir: str | os.PathLike[str]) -> Path:
    return channel_dir(run_dir) / "heartbeat.json"


def load_secret(secret: str | bytes | None = None) -> bytes | None:
    """The HMAC key: an explicit value, else ``$LRWATCH_SECRET``, else the file named by
    ``$LRWATCH_SECRET_FILE``. A value that names an existing file is read from that file, so a
    Kubernetes secret mount can be passed as a path."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV) or None
        if secret is None and os.environ.get(SECRET_FILE_ENV):
            secret = Path(os.environ[SECRET_FILE_ENV]).read_text().strip()
    if secret is None:
        return None
    if isinstance(secret, bytes):
        return secret
    if os.sep in secret and Path(secret).is_file():
        return Path(secret).read_text().strip().encode()
    return secret.encode()


# --- atomic files -------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` so that readers see the old file or the new one, never a part.

    ``durable`` fsyncs the data before the rename: needed for commands and acks, whose loss
    after a crash would break exactly-once, not for the heartbeat that is rewritten anyway.
    """
    tmp = _write_temp(path, data, durable=durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Like ``atomic_write`` but never replaces an existing file; False if one was there.

    ``os.link`` fails when the target exists, which ``os.replace`` cannot express: two
    processes creating the same file both believe they won with a rename, and one of them then
    holds a value that is no longer on disk.
    """
    tmp = _write_temp(path, data, durable=True)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:
        # Filesystems without hard links: fall back to a rename, racy but no worse than before.
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def _write_temp(path: Path, data: bytes, *, durable: bool) -> Path:
    """A fully written sibling temp file of ``path``; removed again if writing it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, some network filesystems)
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)  # a full disk must not also leave litter behind
        raise
    os.close(fd)
    return tmp


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """Read a small file that an untrusted party may have planted.

    Refuses symlinks (``O_NOFOLLOW``), anything but a regular file, and files over
    ``max_bytes``. Raises FileNotFoundError when absent (the common, cheap case) and
    ChannelError for everything hostile.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ChannelError(f"cannot open {path.name}: {exc.strerror}", "unreadable") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ChannelError(f"{path.name} is not a regular file", "unreadable")
        if info.st_size > max_bytes:
            size = f"{info.st_size} bytes, over the {max_bytes} limit"
            raise ChannelError(f"{path.name} is {size}", "unreadable")
        data = os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ChannelError(f"{path.name} is over the {max_bytes} byte limit", "unreadable")
    return data


def channel_id(run_dir: str | os.PathLike[str], *, create: bool = False) -> str | None:
    """The run's random channel id, which binds commands to this run directory.

    A signed command copied from another run's channel names the other run's id and is refused.
    """
    path = channel_dir(run_dir) / "id"
    try:
        raw = read_regular_file(path, 128).decode("ascii", "replace").strip()
        if raw:
            return raw
    except FileNotFoundError:
        pass
    except ChannelError:
        return None
    if not create:
        return None
    new_id = secrets.token_hex(8)
    if _create_exclusive(path, new_id.encode()):
        return new_id
    # Another process (a second rank, a restarted job) created it first: use theirs.
    return channel_id(run_dir, create=False)


# --- commands -----------------------------------------------------------------------------------


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _command_payload(command: Command, channel: str, ident: int | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "version": 1,
        "channel": channel,
        "run": command.run,
        "seq": command.seq,
        "action": command.action.to_json(),
        "reason": command.reason,
        "issued_at": command.issued_at,
        "issuer": command.issuer,
    }
    if ident is not None:
        # The daemon's own number for the command (its database key), which differs from the
        # file number ``seq`` once a slot was taken by a foreign file or the job was relaunched
        # (see actuator.py). Hooks ignore it; the daemon finds its files by it after a restart.
        payload["id"] = ident
    return payload


def digest(data: bytes) -> str:
    """What an ack names to say which command file it answers: the bytes the hook read."""
    return hashlib.sha256(data).hexdigest()[:32]


def sign(payload: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, _canonical(payload), hashlib.sha256).hexdigest()


def encode_command(
    command: Command, channel: str, key: bytes | None, *, ident: int | None = None
) -> bytes:
    payload = _command_payload(command, channel, ident)
    if key is not None:
        payload["signature"] = sign(payload, key)
    return _canonical(payload)


def write_command(
    run_dir: str | os.PathLike[str], command: Command, *, channel: str, key: bytes | None
) -> Path:
    """Daemon side. The caller is the single writer of this run's channel."""
    path = command_path(run_dir, command.seq)
    atomic_write(path, encode_command(command, channel, key), durable=True)
    return path


def create_command(run_dir: str | os.PathLike[str], seq: int, data: bytes) -> bool:
    """Daemon side: write command file ``seq`` unless a file is already there (False then).

    Never over another file: whatever is at that number (a junk file, a planted command) may
    have been read and acknowledged by the hook already, and an ack of it must not pass for
    an ack of ours.
    """
    return _create_exclusive(command_path(run_dir, seq), data)


def decode_command(data: bytes, *, expected_seq: int, channel: str, key: bytes | None) -> Command:
    """Parse and authenticate one command file; every refusal raises ChannelError with a reason.

    The sequence number inside the signed payload must equal the one in the file name, so an
    old signed command renamed to the next number is a replay and is refused.
    """
    payload = load_json(data)
    signature = payload.pop("signature", None)
    if key is not None:
        if not isinstance(signature, str):
            raise ChannelError("unsigned command while a secret is configured")
        try:
            expected = sign(payload, key)
        except (TypeError, ValueError, RecursionError):
            raise ChannelError("payload cannot be canonicalised") from None
        # compare_digest raises TypeError on non-ASCII str; a real signature is hex anyway.
        if not signature.isascii() or not hmac.compare_digest(signature, expected):
            raise ChannelError("bad signature (forged, or a different secret)")
    seq = payload.get("seq")
    if type(seq) is not int or seq != expected_seq:
        raise ChannelError(f"sequence {seq!r} does not match file number {expected_seq}")
    if payload.get("channel") != channel:
        raise ChannelError("command addressed to another channel (unknown writer or copied file)")
    action = _decode_action(payload.get("action"))
    reason = payload.get("reason", "")
    issued_at = payload.get("issued_at", 0.0)
    issuer = payload.get("issuer", "")
    run = payload.get("run", "")
    if not isinstance(reason, str) or not isinstance(issuer, str) or not isinstance(run, str):
        raise ChannelError("reason, issuer and run must be strings")
    if not isinstance(issued_at, int | float) or isinstance(issued_at, bool):
        raise ChannelError("issued_at must be a number")
    return Command(
        run=run,
        seq=seq,
        action=action,
        reason=reason[:500],
        issued_at=_as_float(issued_at, "issued_at"),
        issuer=issuer[:100],
        signature=signature if isinstance(signature, str) else None,
    )


def _decode_action(raw: object) -> Action:
    if not isinstance(raw, dict):
        raise ChannelError("action must be an object")
    try:
        kind = ActionType(str(raw.get("type")))
    except ValueError:
        raise ChannelError(f"unknown action type {raw.get('type')!r}") from None
    if kind is ActionType.SCALE_LR:
        factor = raw.get("factor")
        if not isinstance(factor, int | float) or isinstance(factor, bool):
            raise ChannelError("scale_lr needs a numeric factor")
        factor = _as_float(factor, "factor")
        if not math.isfinite(factor) or factor <= 0:
            raise ChannelError(f"factor {factor!r} is not a finite positive number")
        return Action(kind, factor)
    return Action(kind)


def _as_float(value: int | float, what: str) -> float:
    """A JSON number as a float; JSON integers can be too large for one (OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        raise ChannelError(f"{what} is out of range") from None


def highest_command_seq(run_dir: str | os.PathLike[str]) -> int:
    """The largest sequence number present in a run's command directory (0 if none).

    The daemon calls this at start-up: the files, not its own database, are the truth about
    which numbers are taken, because a crash can fall between writing a file and recording it.
    """
    best = 0
    try:
        entries = os.listdir(channel_dir(run_dir) / "commands")
    except OSError:
        return 0
    for name in entries:
        stem, _, ext = name.partition(".")
        # isascii: str.isdigit() accepts e.g. "²", which int() then refuses.
        if ext == "json" and stem.isascii() and stem.isdigit():
            best = max(best, int(stem))
    return best


# --- acks ---------------------------------------------------------------------------------------


def ack_to_json(ack: Ack) -> dict[str, Any]:
    """An ack as the JSON object of its file (also what the daemon audits and stores)."""
    return {
        "seq": ack.seq,
        "status": ack.status.value,
        "step": ack.step,
        "lr_scale": ack.lr_scale,
        "lrs": list(ack.lrs),
        "reason": ack.reason,
        "acked_at": ack.acked_at,
        "digest": ack.digest,
    }


def encode_ack(ack: Ack) -> bytes:
    return json.dumps(ack_to_json(ack)).encode()


def write_ack(run_dir: str | os.PathLike[str], ack: Ack) -> None:
    atomic_write(ack_path(run_dir, ack.seq), encode_ack(ack), durable=True)


def load_ack(run_dir: str | os.PathLike[str], seq: int) -> Ack | None:
    """The ack file for ``seq`` through the boundary (channel_input.py): None when absent, else a
    checked Ack or ChannelError (with its ``kind``)."""
    try:
        data = read_regular_file(ack_path(run_dir, seq), MAX_ACK_BYTES)
    except FileNotFoundError:
        return None
    ack = parse_ack(data)
    if ack.seq != seq:
        raise ChannelError(f"ack {seq} names command {ack.seq}", "malformed")
    return ack


def ack_answers(run_dir: str | os.PathLike[str], seq: int, command_digest: str) -> bool:
    """Hook side: whether an ack of *this* command file exists (it was handled before).

    An ack of other bytes at the same number (a junk file once there, a planted ack) does not
    count, nor does an unreadable one. An ack without a digest was written by a hook older
    than digests and is taken at its word: applying a command twice is worse than once less.
    """
    try:
        ack = load_ack(run_dir, seq)
    except ChannelError:
        return False
    return ack is not None and ack.digest in ("", command_digest)


def ack_exists(run_dir: str | os.PathLike[str], seq: int) -> bool:
    return ack_path(run_dir, seq).exists()


# --- heartbeat ----------------------------------------------------------------------------------


def write_heartbeat(run_dir: str | os.PathLike[str], beat: Heartbeat) -> None:
    data = json.dumps(
        {
            "pid": beat.pid,
            "host": beat.host,
            "step": beat.step,
            "lr_scale": beat.lr_scale,
            "last_seq": beat.last_seq,
            "lrs": list(beat.lrs),
            "written_at": beat.written_at,
            "handlers": list(beat.handlers),
            "world_size": beat.world_size,
            "channel": beat.channel,
            "schedule_lrs": list(beat.schedule_lrs),
            "schedule_step": beat.schedule_step,
        }
    ).encode()
    atomic_write(heartbeat_path(run_dir), data)


def load_heartbeat(run_dir: str | os.PathLike[str]) -> Heartbeat | None:
    """The heartbeat through the boundary: None when absent, else checked or ChannelError."""
    try:
        data = read_regular_file(heartbeat_path(run_dir), MAX_ACK_BYTES)
    except FileNotFoundError:
        return None
    return parse_heartbeat(data)


def read_heartbeat(run_dir: str | os.PathLike[str]) -> Heartbeat | None:
    """The last heartbeat, or None if there is none or it is unreadable."""
    try:
        return load_heartbeat(run_dir)
    except (ChannelError, OSError):
        return None
