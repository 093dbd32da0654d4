"""The watcher's two modes: file events while they are few, sweeps of the known files (and events
for new files only) while they are many, and back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lrwatch.sources import watch
from lrwatch.sources.watch import LogWatcher


def test_many_events_switch_to_sweeps_and_few_changes_switch_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "ADAPT_WINDOW_SECONDS", 0.5)
    log = tmp_path / "run" / "metrics.jsonl"
    log.parent.mkdir()
    log.touch()
    watcher = LogWatcher(tmp_path, max_events_per_second=40)
    watcher.start()
    try:
        with log.open("a", buffering=1) as f:
            deadline = time.monotonic() + 5
            while not watcher.sweeping:  # ~500 writes/s, each a file event
                f.write('{"step": 1, "loss": 1.0}\n')
                time.sleep(0.002)
                watcher.drain(None)
                watcher.adapt()
                assert time.monotonic() < deadline, "never switched to sweeps"
        # Sweeping: writes no longer come as events, but a new file still does.
        time.sleep(0.3)
        watcher.drain(None)
        log.open("a").write('{"step": 2, "loss": 1.0}\n')
        new = tmp_path / "run" / "other.jsonl"
        new.touch()
        seen: set[Path] = set()
        deadline = time.monotonic() + 3
        while new not in seen and time.monotonic() < deadline:
            seen |= watcher.drain(0.1)[0]
        assert new in seen and log not in seen
        # Sweeps that find nothing: back to events (and a rescan for the gap).
        deadline = time.monotonic() + 5
        while watcher.sweeping:
            watcher.adapt(swept=0)
            time.sleep(0.05)
            assert time.monotonic() < deadline, "never switched back"
        assert watcher.drain(None)[1], "no rescan asked for after the switch"
        log.open("a").write('{"step": 3, "loss": 1.0}\n')
        seen = set()
        deadline = time.monotonic() + 3
        while log not in seen and time.monotonic() < deadline:
            seen |= watcher.drain(0.1)[0]
        assert log in seen
    finally:
        watcher.stop()
