"""The one place where what a training job wrote (its heartbeat, its acks) becomes daemon data.

Any process that can write a run directory can write ``.lrwatch/heartbeat.json`` and the acks:
a buggy job, an old hook, a user's script, an attacker. So everything read from there is
parsed here and nowhere else, and comes out either as a ``Heartbeat``/``Ack`` whose every
number is finite and within the range the daemon (its controller, SQLite, Prometheus, the
next command) can use, or as a ``ChannelError`` whose ``kind`` names the problem for the
``lrwatch_channel_errors_total{run,error}`` counter. Nothing else escapes: not
OverflowError (``"step": Infinity``), not RecursionError (5000 nested lists), not a float
NaN that would later be refused by ``json.dumps(allow_nan=False)`` inside a command.

Standard library only: the hook imports it too (it reads acks to know what it has handled).
"""

from __future__ import annotations

import json
import math
from typing import Any

from lrwatch.protocol.types import Ack, AckStatus, Heartbeat

# Ranges. Integers stay within 2**53 so that they are exact as floats (Prometheus) and fit
# SQLite's int64; factors and LRs within what any real job uses, and strictly positive where
# the daemon divides by them (the controller divides by the factor).
MAX_INT = 2**53
MIN_SCALE, MAX_SCALE = 1e-12, 1e12
MAX_LR = 1e6
MAX_TIME = 1e11  # Unix seconds, year 5138
MAX_GROUPS = 4096
MAX_TEXT = 1000
MAX_HANDLERS = 16


class ChannelError(Exception):
    """A channel file is malformed, hostile or forged. The message is the ack's reason (hook
    side) or the log line (daemon side); ``kind`` is the counter's ``error`` label."""

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


def load_json(data: bytes) -> dict[str, Any]:
    """A JSON object, or ChannelError: bad UTF-8, bad JSON, nesting too deep, not an object."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ChannelError(f"not JSON: {str(exc)[:100]}", "not_json") from None
    if not isinstance(raw, dict):
        raise ChannelError("not a JSON object", "malformed")
    return raw


def integer(raw: dict[str, Any], name: str, low: int, high: int = MAX_INT, **kw: Any) -> int:
    value = raw.get(name, kw["default"]) if "default" in kw else _field(raw, name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ChannelError(f"{name} is {value!r}", "out_of_range")
    if type(value) is not int:  # bool is not an int here, nor is 3.0
        raise ChannelError(f"{name} must be an integer, got {_show(value)}", "malformed")
    if not low <= value <= high:
        raise ChannelError(f"{name} {_show(value)} is outside [{low}, {high}]", "out_of_range")
    return value


def number(value: object, name: str, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ChannelError(f"{name} must be a number, got {_show(value)}", "malformed")
    try:
        out = float(value)
    except OverflowError:  # a JSON integer too big for a float
        raise ChannelError(f"{name} is too large", "out_of_range") from None
    below = out <= low if open_low else out < low
    if not math.isfinite(out) or below or out > high:
        raise ChannelError(f"{name} {out!r} is outside [{low:g}, {high:g}]", "out_of_range")
    return out


def text(raw: dict[str, Any], name: str, default: str | None = None) -> str:
    value = raw.get(name, default) if default is not None else _field(raw, name)
    if not isinstance(value, str):
        raise ChannelError(f"{name} must be a string, got {_show(value)}", "malformed")
    return value[:MAX_TEXT]


def lrs(raw: dict[str, Any], name: str, *, required: bool = True) -> tuple[float, ...]:
    value = _field(raw, name) if required else raw.get(name, [])
    if not isinstance(value, list) or len(value) > MAX_GROUPS:
        raise ChannelError(f"{name} must be a list of at most {MAX_GROUPS} numbers", "malformed")
    return tuple(number(x, f"{name}[{i}]", 0.0, MAX_LR) for i, x in enumerate(value))


def parse_heartbeat(data: bytes) -> Heartbeat:
    raw = load_json(data)
    handlers = raw.get("handlers", [])
    if not isinstance(handlers, list) or len(handlers) > MAX_HANDLERS:
        raise ChannelError("handlers must be a short list of names", "malformed")
    schedule_step = raw.get("schedule_step")
    return Heartbeat(
        pid=integer(raw, "pid", 0, 2**32),
        host=text(raw, "host"),
        step=integer(raw, "step", -1),
        lr_scale=number(_field(raw, "lr_scale"), "lr_scale", MIN_SCALE, MAX_SCALE),
        last_seq=integer(raw, "last_seq", 0),
        lrs=lrs(raw, "lrs"),
        written_at=number(_field(raw, "written_at"), "written_at", 0.0, MAX_TIME),
        handlers=tuple(str(h)[:50] for h in handlers if isinstance(h, str)),
        world_size=integer(raw, "world_size", 1, 2**24, default=1),
        channel=text(raw, "channel", ""),
        schedule_lrs=lrs(raw, "schedule_lrs", required=False),
        schedule_step=None if schedule_step is None else integer(raw, "schedule_step", -1),
    )


def parse_ack(data: bytes) -> Ack:
    raw = load_json(data)
    try:
        status = AckStatus(str(raw.get("status")))
    except ValueError:
        raise ChannelError(f"unknown ack status {_show(raw.get('status'))}", "malformed") from None
    return Ack(
        seq=integer(raw, "seq", 1),
        status=status,
        step=integer(raw, "step", -1),
        lr_scale=number(_field(raw, "lr_scale"), "lr_scale", MIN_SCALE, MAX_SCALE),
        lrs=lrs(raw, "lrs"),
        reason=text(raw, "reason", ""),
        acked_at=number(_field(raw, "acked_at"), "acked_at", 0.0, MAX_TIME),
        digest=text(raw, "digest", ""),
    )


def _field(raw: dict[str, Any], name: str) -> Any:
    if name not in raw:
        raise ChannelError(f"{name} is missing", "malformed")
    return raw[name]


def _show(value: object) -> str:
    """A short, safe rendering of a hostile value for a log line (repr of a huge int or a deep
    list can itself be slow or raise)."""
    if isinstance(value, bool | float | str) or value is None:
        return repr(value)[:40]
    if isinstance(value, int):
        return "a huge integer" if value.bit_length() > 64 else str(value)
    return type(value).__name__
