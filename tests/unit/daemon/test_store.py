"""SQLite state: what one transaction commits survives a reopen; a failed one leaves nothing."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import pytest

from lrwatch.daemon.store import StateInUse, Store
from lrwatch.protocol.types import Ack, AckStatus, Action, ActionType, Command, Finding, Severity


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path)
    command = Command("a/b", 1, Action(ActionType.SCALE_LR, 0.1), "divergence", 10.0, "ctl")
    with store.transaction():
        store.save_reader("/logs/a/b/m.jsonl", "a/b", {"offset": 42, "inode": 7})
        store.save_run("a/b", {"control": {"lr_scale": 1.0}})
        store.add_finding(
            Finding(
                "divergence", Severity.CRITICAL, 9, "why", {"nonfinite": True}, 7, "a/b", "loss"
            )
        )
        store.add_command(command)
        store.audit("a/b", "decision", "controller", {"step": 9})
    store.close()

    store = Store(path)
    assert store.reader_states() == {"/logs/a/b/m.jsonl": ("a/b", {"offset": 42, "inode": 7})}
    assert store.run_states() == {"a/b": {"control": {"lr_scale": 1.0}}}
    [found] = store.findings("a/b")
    assert found["kind"] == "divergence" and found["onset_step"] == 7
    assert found["detail"] == {"nonfinite": True}
    [stored] = store.commands(unacked=True)
    assert stored.command == command and stored.ack is None
    assert store.max_seq("a/b") == 1
    assert store.audit_log("a/b")[0]["who"] == "controller"

    ack = Ack(1, AckStatus.APPLIED, 12, 0.1, (0.01, 0.02), "ok", 11.0)
    with store.transaction():
        store.record_ack("a/b", ack)
    assert store.commands(unacked=True) == []
    assert store.commands("a/b")[0].ack == ack


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    with pytest.raises(RuntimeError), store.transaction():
        store.save_reader("p", "r", {"offset": 1})
        raise RuntimeError("crash between offsets and findings")
    assert store.reader_states() == {}


def test_non_finite_detail_is_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    with store.transaction():
        store.add_finding(
            Finding(
                "divergence", Severity.CRITICAL, 1, "nan", {"value": math.nan}, None, "r", "loss"
            )
        )
    assert math.isnan(store.findings()[0]["detail"]["value"])


def test_lifecycle_is_stored_beside_the_run_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    with store.transaction():
        store.save_run("a", {"x": 1}, {"last_sample_at": 12.5})
        store.save_run("b", {"x": 2})
    assert store.lifecycles() == {"a": {"last_sample_at": 12.5}}
    with store.transaction():
        store.save_reader("/logs/a/m.jsonl", "a", {"offset": 3})
        store.save_reader("/logs/a/old.jsonl", "a", {"offset": 9})
        store.forget_run("a", ["/logs/a/old.jsonl"])
    assert set(store.run_states()) == {"b"}
    assert set(store.reader_states()) == {"/logs/a/m.jsonl"}  # a file still there keeps its place
    store.close()


def test_a_state_file_from_before_the_lifecycle_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (run TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at REAL)")
    db.execute("INSERT INTO runs VALUES ('a', '{}', 1.0)")
    db.commit()
    db.close()
    store = Store(path)
    assert store.run_states() == {"a": {}} and store.lifecycles() == {}
    with store.transaction():
        store.save_run("a", {}, {"last_sample_at": 2.0})
    assert store.lifecycles() == {"a": {"last_sample_at": 2.0}}
    store.close()


def test_one_store_per_file_and_a_clean_close_folds_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path)
    with pytest.raises(StateInUse, match="in use by another lrwatch daemon"):
        Store(path)
    with store.transaction():
        store.save_run("a", {"x": 1})
    store.close()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    Store(path).close()  # the lock went with the first one


def test_an_unparseable_row_is_left_out_and_said(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path)
    with store.transaction():
        store.save_run("good", {"x": 1}, {"last_sample_at": 1.0})
        store.save_run("bad", {"x": 2}, {"last_sample_at": 1.0})
        store.save_reader(os.fsdecode(b"/r/bad\xff/m.jsonl"), "bad\\xff", {"offset": 3})
    store._db.execute("UPDATE runs SET state = '{not json', lifecycle = '[]' WHERE run = 'bad'")
    assert store.run_states() == {"good": {"x": 1}}
    assert store.lifecycles() == {"good": {"last_sample_at": 1.0}}
    assert [(t, k) for t, k, _ in store.problems] == [("runs", "bad"), ("runs", "bad")]
    # the non-UTF-8 path is stored escaped, and comes back as the path
    assert store.reader_states() == {
        os.fsdecode(b"/r/bad\xff/m.jsonl"): ("bad\\xff", {"offset": 3})
    }
    store.close()  # no "database table is locked": no cursor was left open


def test_a_failed_transaction_raises_its_own_error_and_undoes(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    undone = []
    with pytest.raises(ZeroDivisionError), store.transaction():
        store.on_rollback(lambda: undone.append(1))
        store._db.execute("ROLLBACK")  # as SQLite does by itself on SQLITE_FULL
        raise ZeroDivisionError
    assert undone == [1]
    with store.transaction():  # usable again
        store.save_run("a", {})
    store.close()


def test_the_lock_is_the_state_file_itself(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path)
    assert sorted(p.name for p in tmp_path.iterdir() if "lock" in p.name) == []
    with pytest.raises(StateInUse):
        Store(path)
    store.close()


def test_closing_twice_leaves_other_files_alone(tmp_path: Path) -> None:
    """A second close must not close a descriptor number the process has since reused."""
    store = Store(tmp_path / "state.sqlite")
    store.close()
    other = os.open(tmp_path / "other", os.O_CREAT | os.O_WRONLY)
    try:
        store.close()
        os.fstat(other)  # still open
    finally:
        os.close(other)
