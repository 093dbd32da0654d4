"""Discovery: what is a log, which run it belongs to, the full scan, and the live watcher
(delivery, overflow, fallback, clean shutdown)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.observers.polling import PollingObserver

from lrwatch.sources import watch
from lrwatch.sources.csv import CsvReader
from lrwatch.sources.jsonl import JsonlReader
from lrwatch.sources.layout import log_format, open_reader, run_name, scan
from lrwatch.sources.tensorboard import TensorBoardReader
from lrwatch.sources.watch import LogWatcher

# watchdog 7.1's inotify backend warns when a directory created in quick succession with its
# children is registered twice (by its own event and by the parent's recursive walk); harmless.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while (leaked := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not leaked, f"leaked threads: {leaked}"


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("runs/a/metrics.jsonl", "jsonl"),
        ("runs/a/metrics.csv", "csv"),
        ("runs/a/events.out.tfevents.1700000000.host.1.0", "tensorboard"),
        ("runs/a/tb/x.tfevents.profile", "tensorboard"),
        ("runs/a/notes.txt", "text"),  # read; a file none of whose lines parse yields nothing
        ("runs/a/train.log", "text"),
        ("runs/a/README.txt", None),
        ("runs/a/requirements.txt", None),
        ("runs/a/metrics.json", "jsonl"),  # detectron2
        ("runs/a/checkpoint-500/trainer_state.json", "trainer_state"),
        ("runs/a/learn_error.tsv", "csv"),
        ("runs/a/config.json", None),
        ("runs/a/metrics.jsonl.tmp", None),
        ("runs/a/.metrics.jsonl", None),  # an atomic writer's temp file
        ("runs/a/.lrwatch/acks.jsonl", None),  # the control channel
        ("runs/a/lrwatch/findings.jsonl", None),  # lrwatch's own output
    ],
)
def test_log_format(name: str, fmt: str | None) -> None:
    assert log_format(Path(name)) == fmt


def test_log_format_looks_only_below_the_root() -> None:
    assert log_format("/srv/lrwatch/runs/a/m.jsonl", root="/srv/lrwatch/runs") == "jsonl"
    assert log_format("/srv/lrwatch/runs/a/m.jsonl") is None
    assert log_format("/srv/runs/a/.lrwatch/m.jsonl", root="/srv/runs") is None


def test_run_name(tmp_path: Path) -> None:
    assert run_name(tmp_path, tmp_path / "metrics.jsonl") == "."
    assert run_name(tmp_path, tmp_path / "a" / "b" / "metrics.csv") == "a/b"
    # The hook's channel marks the run: logs in its subdirectories belong to it.
    (tmp_path / "exp1" / ".lrwatch").mkdir(parents=True)
    assert run_name(tmp_path, tmp_path / "exp1" / "tb" / "train" / "events.tfevents.1") == "exp1"
    assert run_name(tmp_path, tmp_path / "exp1" / "metrics.jsonl") == "exp1"
    # The nearest marked ancestor wins.
    (tmp_path / "exp1" / "tb" / ".lrwatch").mkdir(parents=True)
    assert run_name(tmp_path, tmp_path / "exp1" / "tb" / "train" / "e.tfevents.1") == "exp1/tb"
    # Unmarked siblings keep their own directory.
    assert run_name(tmp_path, tmp_path / "exp2" / "v0" / "metrics.csv") == "exp2/v0"
    with pytest.raises(ValueError):
        run_name(tmp_path / "exp2", tmp_path / "exp1" / "metrics.jsonl")


def test_run_name_marked_root(tmp_path: Path) -> None:
    (tmp_path / ".lrwatch").mkdir()
    assert run_name(tmp_path, tmp_path / "tb" / "events.tfevents.1") == "."


def test_open_reader_chooses_by_format(tmp_path: Path) -> None:
    (tmp_path / "a" / ".lrwatch").mkdir(parents=True)
    jsonl = open_reader(tmp_path, tmp_path / "a" / "tb" / "m.jsonl")
    assert isinstance(jsonl, JsonlReader) and jsonl.run == "a" and jsonl.format == "jsonl"
    assert isinstance(open_reader(tmp_path, tmp_path / "m.csv"), CsvReader)
    tb = open_reader(tmp_path, tmp_path / "b" / "events.out.tfevents.1")
    assert isinstance(tb, TensorBoardReader) and tb.run == "b"
    with pytest.raises(ValueError):
        open_reader(tmp_path, tmp_path / "a" / ".lrwatch" / "cmd.jsonl")
    with pytest.raises(ValueError):
        open_reader(tmp_path, tmp_path / "README.txt")


def test_scan(tmp_path: Path) -> None:
    logs = [
        touch(tmp_path / "metrics.jsonl"),
        touch(tmp_path / "a" / "metrics.csv"),
        touch(tmp_path / "a" / "b" / "events.out.tfevents.1.h"),
    ]
    touch(tmp_path / "a" / ".lrwatch" / "acks.jsonl")
    touch(tmp_path / "a" / "lrwatch" / "out.jsonl")
    touch(tmp_path / "a" / ".tmp.jsonl")
    touch(tmp_path / "a" / "readme.md")
    assert scan(tmp_path) == sorted(logs)
    assert scan(tmp_path / "missing") == []


def test_scan_ignores_symlinks_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    secret = touch(outside / "secret.jsonl", '{"step": 1, "x": 1}\n')
    real = touch(root / "a" / "metrics.jsonl")
    (root / "a" / "evil.jsonl").symlink_to(secret)  # a planted file link
    (root / "b").symlink_to(outside, target_is_directory=True)  # a planted directory link
    (root / "a" / "alias.jsonl").symlink_to(real)  # a link inside the root is fine
    assert scan(root) == [root / "a" / "alias.jsonl", real]


# --- the watcher -----------------------------------------------------------------------------


def wait_for(watcher: LogWatcher, want: set[Path], seconds: float = 5.0) -> tuple[set[Path], bool]:
    """Drain until ``want`` has been delivered (or, for an empty ``want``, a rescan asked for)."""
    seen: set[Path] = set()
    rescan = False
    deadline = time.monotonic() + seconds
    while not ((want <= seen) if want else rescan) and time.monotonic() < deadline:
        paths, overflowed = watcher.drain(0.1)
        seen |= paths
        rescan |= overflowed
    return seen, rescan


@pytest.mark.parametrize("use_polling", [False, True])
def test_watcher_delivers_a_new_file_in_a_new_directory(tmp_path: Path, use_polling: bool) -> None:
    watcher = LogWatcher(tmp_path, use_polling=use_polling, polling_interval=0.1)
    watcher.start()
    try:
        assert watcher.backend == ("PollingObserver" if use_polling else "InotifyObserver")
        started = time.monotonic()
        log = touch(tmp_path / "new" / "run" / "metrics.jsonl", '{"step": 1, "loss": 1}\n')
        touch(tmp_path / "new" / "run" / ".lrwatch" / "cmd.jsonl")
        touch(tmp_path / "new" / "run" / "README.txt")
        seen, _ = wait_for(watcher, {log})
        assert seen == {log}
        assert time.monotonic() - started < 3.0
        with log.open("a") as f:  # a later append is delivered again
            f.write('{"step": 2, "loss": 1}\n')
        assert wait_for(watcher, {log})[0] == {log}
    finally:
        watcher.stop()


def test_watcher_wait_times_out_quietly(tmp_path: Path) -> None:
    watcher = LogWatcher(tmp_path)
    watcher.start()
    try:
        started = time.monotonic()
        assert watcher.drain(0.2) == (set(), False)
        assert 0.15 < time.monotonic() - started < 2.0
    finally:
        watcher.stop()
    watcher.stop()  # idempotent


def test_overflow_raises_the_rescan_flag(tmp_path: Path) -> None:
    watcher = LogWatcher(tmp_path, maxsize=2)  # not started: the producer side is driven by hand
    for name in ["a.jsonl", "b.jsonl", "a.jsonl", "c.jsonl"]:
        watcher.offer(str(tmp_path / name))  # never blocks, even when full
    assert watcher.drain() == ({tmp_path / "a.jsonl", tmp_path / "b.jsonl"}, True)
    assert watcher.drain() == (set(), False)  # the flag is cleared once reported
    watcher.offer(str(tmp_path / "a.jsonl"))  # queued again once drained
    assert watcher.drain() == ({tmp_path / "a.jsonl"}, False)


def test_overflow_with_a_real_observer(tmp_path: Path) -> None:
    watcher = LogWatcher(tmp_path, maxsize=1)
    watcher.start()
    try:
        for i in range(5):
            touch(tmp_path / f"r{i}" / "metrics.jsonl")
        time.sleep(1.0)  # nobody drains meanwhile: the second distinct path finds the queue full
        _, rescan = wait_for(watcher, set(), seconds=3.0)
        assert rescan
    finally:
        watcher.stop()


def test_moved_directory_requests_a_rescan(tmp_path: Path) -> None:
    touch(tmp_path / "old" / "metrics.jsonl")
    watcher = LogWatcher(tmp_path)
    watcher.start()
    try:
        (tmp_path / "old").rename(tmp_path / "renamed")
        _, rescan = wait_for(watcher, set(), seconds=3.0)
        assert rescan
    finally:
        watcher.stop()


def test_watcher_ignores_symlinks_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    secret = touch(tmp_path / "secret.jsonl")
    watcher = LogWatcher(root)
    watcher.offer(str(root / "evil.jsonl"))
    (root / "evil.jsonl").symlink_to(secret)
    assert watcher.drain() == (set(), False)


def test_falls_back_to_polling_when_native_watching_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(PollingObserver):
        def start(self) -> None:
            raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(watch, "Observer", Broken)
    watcher = LogWatcher(tmp_path, polling_interval=0.1)
    watcher.start()
    try:
        assert watcher.backend == "PollingObserver"
        log = touch(tmp_path / "metrics.jsonl")
        assert wait_for(watcher, {log})[0] == {log}
    finally:
        watcher.stop()


def test_watching_a_missing_root_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        LogWatcher(tmp_path / "missing").start()
    with pytest.raises(ValueError, match="maxsize"):
        LogWatcher(tmp_path, maxsize=0)


def test_scan_and_watcher_agree_on_paths(tmp_path: Path) -> None:
    """The daemon keys its readers by path: both sources must spell a file the same way."""
    watcher = LogWatcher(tmp_path)
    watcher.start()
    try:
        log = touch(tmp_path / "a" / "metrics.jsonl")
        seen, _ = wait_for(watcher, {log})
        assert seen == set(scan(tmp_path)) == {log}
        assert os.fspath(next(iter(seen))) == os.fspath(log)
    finally:
        watcher.stop()
