"""A daemon past ``max_file_events_per_second`` sweeps its known files instead of taking an event
per write, and loses nothing on the way in or out of that mode."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lrwatch.sources import watch
from tests.integration import inproc

pytestmark = pytest.mark.slow


def test_a_busy_daemon_sweeps_and_reads_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "ADAPT_WINDOW_SECONDS", 0.5)
    cfg = inproc.config(tmp_path, max_file_events_per_second=50, sweep_interval_seconds=0.1)
    assert cfg.logdir is not None
    files = []
    for i in range(5):
        (cfg.logdir / f"r{i}").mkdir()
        files.append((cfg.logdir / f"r{i}" / "metrics.jsonl").open("a", buffering=1))
    steps = 400
    with inproc.running(cfg) as daemon:
        swept = False
        for step in range(steps):  # 5 files x ~250 lines/s: far above 50 events/s
            for f in files:
                f.write(json.dumps({"step": step, "time": time.time(), "loss": 1.0}) + "\n")
            swept |= daemon.watcher.sweeping
            time.sleep(0.004)
        for f in files:
            f.close()
        assert swept, "the daemon never switched to sweeps"
        inproc.wait_for(
            lambda: all(
                inproc.value(daemon, "lrwatch_run_last_step", run=f"r{i}") == steps - 1
                for i in range(5)
            ),
            10,
            "every line",
        )
        total = inproc.value(daemon, "lrwatch_ingested_samples_total", format="jsonl")
        assert total == 5 * steps  # each line once: none lost, none read twice
        inproc.wait_for(lambda: not daemon.watcher.sweeping, 10, "the return to file events")
