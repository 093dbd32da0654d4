"""Daemon logging: human text by default, one JSON object per line with ``--log-format json``
for log shippers. Secrets never reach a log record: nothing here formats config values."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Hashable
from typing import Any, TypeVar

_Key = TypeVar("_Key", bound=Hashable)


def first_time(seen: set[_Key], key: _Key, level: int) -> int:
    """``level`` the first time ``key`` is logged, DEBUG after: a file that stays bad must not
    flood the log (its counter says how often)."""
    if key in seen:
        return logging.DEBUG
    seen.add(key)
    return level


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def _message(record: logging.LogRecord) -> str:
    """The record's message; a record whose arguments do not fit its format is still one JSON
    line (logging would print a traceback of its own, in plain text)."""
    try:
        return record.getMessage()
    except Exception:
        return f"{record.msg!r} % {record.args!r}"


def setup_logging(*, json_format: bool = False, level: int = logging.INFO) -> None:
    """lrwatch's records at ``level``; with ``json_format`` every line on stderr is JSON: the
    records of other libraries (watchdog, urllib3), warnings, and exceptions nothing caught,
    in the main thread or another, all go through the same formatter."""
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lrwatch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if not json_format:
        return
    others = logging.getLogger()
    others.handlers[:] = [handler]
    others.setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)  # warnings.warn goes to "py.warnings", through the handler
    crash = logging.getLogger("lrwatch.crash")

    def excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        crash.critical("uncaught exception", exc_info=(kind, exc, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        info = (args.exc_type, args.exc_value, args.exc_traceback)
        crash.critical("uncaught exception in thread %s", name, exc_info=info)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
