"""Durable daemon state in SQLite (WAL): tail offsets, run analysis state, findings, commands,
acks and the audit log.

Exactly-once rests on one rule: the offsets a batch of samples came from, the detector state
they produced, the findings and the commands they led to are committed in ONE transaction.
Command files are written only after that commit (a transactional outbox): a crash before the
commit replays the batch with nothing sent; a crash after it finds the command in the database
and (re)writes its file with the same sequence number, which the hook applies at most once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrwatch.protocol.channel import ack_to_json
from lrwatch.protocol.types import Ack, AckStatus, Action, ActionType, Command, Finding
from lrwatch.sources.boundary import escape_name, unescape_name

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readers (
    path TEXT PRIMARY KEY, run TEXT NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at REAL NOT NULL, lifecycle TEXT);
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY, run TEXT NOT NULL, metric TEXT NOT NULL, step INTEGER NOT NULL,
    kind TEXT NOT NULL, severity TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    onset_step INTEGER, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    run TEXT NOT NULL, seq INTEGER NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL,
    issuer TEXT NOT NULL, issued_at REAL NOT NULL, ack TEXT, acked_at REAL,
    PRIMARY KEY (run, seq));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, run TEXT NOT NULL, event TEXT NOT NULL,
    who TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS findings_run ON findings(run, id);
"""


class StateInUse(OSError):
    """Another daemon holds this state file (or this log root): two would both write commands."""


def exclusive_lock(path: Path, what: str, *, directory: bool = False) -> int:
    """Hold an exclusive ``flock`` on ``path`` (a file, created if need be, or a directory) for
    as long as the returned descriptor is open.

    The kernel drops the lock when the process dies, SIGKILL included, so a crashed daemon never
    leaves a stale lock behind (a pid file would); and since the lock is on the state file or
    the log root itself, deleting some lock file cannot let a second daemon in. Raises
    StateInUse if another process (or another open of it in this one) has it.

    (A refused open in the process that holds the lock closes its descriptor, which drops that
    process's POSIX locks on the file, SQLite's: only tests open one state file twice in one
    process, and the second open is refused at once.)
    """
    if directory:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateInUse(f"{what} is in use by another lrwatch daemon (lock {path})") from None
    return fd


def lock_root(root: Path) -> int | None:
    """One daemon per log root: two would both write commands into the same channels. The lock
    is on the root directory itself: no lock file that could be deleted. None (logged) for a
    root that cannot be locked, say a read-only one (observe mode over a mounted share)."""
    try:
        return exclusive_lock(root, f"log root {root}", directory=True)
    except StateInUse:
        raise
    except OSError as exc:
        log.info("cannot lock %s (%s); make sure no other daemon watches it", root, exc)
        return None


@dataclass(frozen=True, slots=True)
class StoredCommand:
    command: Command
    ack: Ack | None


class Store:
    """A thin, typed door onto the database. Only the daemon's main thread uses it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The lock is on the database file itself, not on a sidecar: a deleted lock file would
        # let a second daemon in. flock and SQLite's own (POSIX, fcntl) locks are independent.
        self._lock = exclusive_lock(path, f"state file {path}")
        self.problems: list[tuple[str, str, str]] = []  # (table, key, why): rows left out
        self._undo: list[Callable[[], None]] = []
        self._closed = False
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL keeps the WAL safe across process crashes (our SIGKILL case); only a power
            # loss can drop the last transactions, which then replay from older offsets.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
            if "lifecycle" not in columns:  # a state file from lrwatch 0.1.0
                self._db.execute("ALTER TABLE runs ADD COLUMN lifecycle TEXT")
        except BaseException:
            os.close(self._lock)
            raise

    def close(self) -> None:
        """Fold the WAL into the database file, so that the state is one self-contained file
        after a clean shutdown (a crash leaves the WAL beside it, which is just as safe).
        A checkpoint that fails (a full disk) leaves the WAL, which is as good: not fatal.
        Once only: a second close must not close a file descriptor the process has reused."""
        if self._closed:
            return
        self._closed = True
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("state file %s: WAL not folded in at shutdown (%s)", self.path, exc)
        finally:
            self._db.close()
            os.close(self._lock)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; whatever failed inside it is what is raised. (SQLite rolls back
        by itself on some errors, SQLITE_FULL among them: a second ROLLBACK would then fail
        with "cannot rollback - no transaction is active" and hide the real error.)"""
        self._db.execute("BEGIN IMMEDIATE")
        self._undo = []
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            for undo in reversed(self._undo):
                undo()
            raise
        finally:
            self._undo = []

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Inside a transaction: what to undo in memory should it not commit (a run marked
        saved must be marked unsaved again, or it would wait for its next batch)."""
        self._undo.append(undo)

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        """All rows at once: a cursor left open by a failing parse would lock the table
        ("database table is locked") for every statement after it."""
        rows: list[tuple[Any, ...]] = self._db.execute(sql).fetchall()
        return rows

    def _bad_row(self, table: str, key: str, exc: Exception) -> None:
        self.problems.append((table, key, f"{type(exc).__name__}: {exc}"))

    # --- readers and runs --------------------------------------------------------------------

    def reader_states(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Each file's saved position, by path; a row that does not parse is left out (said in
        ``problems``): that file is read again, the others go on where they were."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for path, run, state in self._rows("SELECT path, run, state FROM readers"):
            try:
                out[unescape_name(path)] = (str(run), _object(state))
            except (ValueError, TypeError) as exc:
                self._bad_row("readers", str(path), exc)
        return out

    def save_reader(self, path: str, run: str, state: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO readers VALUES (?, ?, ?)",
            (escape_name(path), run, json.dumps(state)),
        )

    def run_states(self) -> dict[str, dict[str, Any]]:
        """Each run's saved analysis; a row that does not parse is left out (said in
        ``problems``): that run starts afresh, the others are restored."""
        out: dict[str, dict[str, Any]] = {}
        for run, state in self._rows("SELECT run, state FROM runs"):
            try:
                out[str(run)] = _object(state)
            except (ValueError, TypeError) as exc:
                self._bad_row("runs", str(run), exc)
        return out

    def lifecycles(self) -> dict[str, dict[str, Any]]:
        """The daemon's own record of each run (when data last came, its stall episode)."""
        sql = "SELECT run, lifecycle FROM runs WHERE lifecycle IS NOT NULL"
        out: dict[str, dict[str, Any]] = {}
        for run, lifecycle in self._rows(sql):
            try:
                out[str(run)] = _object(lifecycle)
            except (ValueError, TypeError) as exc:
                self._bad_row("runs", str(run), exc)
        return out

    def save_run(
        self, run: str, state: Mapping[str, Any], lifecycle: Mapping[str, Any] | None = None
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
            (
                run,
                json.dumps(state),
                time.time(),
                None if lifecycle is None else json.dumps(lifecycle),
            ),
        )

    def forget_run(self, run: str, paths: list[str]) -> None:
        """Drop an expired run's analysis state and the offsets of its vanished files. Its
        findings, commands and audit stay: they are history, and the audit log is the point."""
        self._db.execute("DELETE FROM runs WHERE run = ?", (run,))
        self.forget_readers(paths)

    def forget_readers(self, paths: list[str]) -> None:
        """Drop the offsets of vanished files (see Follower.prune)."""
        self._db.executemany(
            "DELETE FROM readers WHERE path = ?", [(escape_name(p),) for p in paths]
        )

    # --- findings, commands, audit -----------------------------------------------------------

    def add_finding(self, f: Finding) -> None:
        self._db.execute(
            "INSERT INTO findings (run, metric, step, kind, severity, reason, detail, onset_step,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f.run,
                f.metric,
                f.step,
                f.kind,
                f.severity.value,
                f.reason,
                json.dumps(dict(f.detail)),
                f.onset_step,
                time.time(),
            ),
        )

    def findings(self, run: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        sql = "SELECT run, metric, step, kind, severity, reason, detail, onset_step FROM findings"
        args: tuple[Any, ...] = ()
        if run is not None:
            sql, args = sql + " WHERE run = ?", (run,)
        rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        keys = ("run", "metric", "step", "kind", "severity", "reason", "detail", "onset_step")
        out = [dict(zip(keys, row, strict=True)) for row in reversed(rows)]
        for item in out:
            item["detail"] = json.loads(item["detail"])
        return out

    def add_command(self, command: Command) -> None:
        self._db.execute(
            "INSERT INTO commands (run, seq, action, reason, issuer, issued_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                command.run,
                command.seq,
                json.dumps(command.action.to_json()),
                command.reason,
                command.issuer,
                command.issued_at,
            ),
        )

    def record_ack(self, run: str, ack: Ack) -> None:
        self._db.execute(
            "UPDATE commands SET ack = ?, acked_at = ? WHERE run = ? AND seq = ?",
            (json.dumps(ack_to_json(ack)), ack.acked_at, run, ack.seq),
        )

    def commands(self, run: str | None = None, *, unacked: bool = False) -> list[StoredCommand]:
        sql = "SELECT run, seq, action, reason, issuer, issued_at, ack, acked_at FROM commands"
        clauses, args = [], []
        if run is not None:
            clauses.append("run = ?")
            args.append(run)
        if unacked:
            clauses.append("ack IS NULL")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        out = []
        for row in self._db.execute(sql + " ORDER BY run, seq", args).fetchall():
            run_, seq, action, reason, issuer, issued_at, ack, acked_at = row
            try:
                raw_action = _object(action)
                command = Command(
                    run=run_,
                    seq=int(seq),
                    reason=reason,
                    issuer=issuer,
                    issued_at=issued_at,
                    action=Action(ActionType(raw_action["type"]), raw_action.get("factor")),
                )
                stored = StoredCommand(command, _ack_from_row(seq, ack, acked_at))
            except (ValueError, TypeError, KeyError) as exc:
                self._bad_row("commands", f"{run_}#{seq}", exc)
                continue
            out.append(stored)
        return out

    def max_seq(self, run: str) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM commands WHERE run = ?", (run,)).fetchone()
        return int(row[0] or 0)

    def audit(self, run: str, event: str, who: str, detail: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO audit (at, run, event, who, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), run, event, who, json.dumps(dict(detail))),
        )

    def audit_log(self, run: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = "SELECT at, run, event, who, detail FROM audit"
        args: tuple[Any, ...] = ()
        if run is not None:
            sql, args = sql + " WHERE run = ?", (run,)
        rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [
            {"at": at, "run": r, "event": e, "who": w, "detail": json.loads(d)}
            for at, r, e, w, d in reversed(rows)
        ]


def error_kind(exc: BaseException) -> str:
    """What a failure of the state file is, for ``lrwatch_state_errors_total{error}``: full
    (SQLITE_FULL: no space left), io, locked, or other."""
    text = str(exc).lower()
    if "full" in text:
        return "full"
    if "i/o" in text or "disk" in text or isinstance(exc, OSError):
        return "io"
    if "locked" in text or "busy" in text:
        return "locked"
    return "other"


def _object(text: Any) -> dict[str, Any]:
    """A JSON object stored as text; ValueError for anything else."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {type(value).__name__}")
    return value


def _ack_from_row(seq: int, ack: str | None, acked_at: float | None) -> Ack | None:
    if ack is None:
        return None
    raw = _object(ack)
    return Ack(
        seq=seq,
        status=AckStatus(raw["status"]),
        step=raw["step"],
        lr_scale=raw["lr_scale"],
        lrs=tuple(raw["lrs"]),
        reason=raw["reason"],
        acked_at=acked_at or 0.0,
    )
