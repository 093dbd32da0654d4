"""A daemon in this process, on a thread, for tests that look at its insides (its registry, its
runs) or need many quick restarts. Leaving ``running`` stops it and fails the test if any thread
it started is still alive: shutdown must be explicit and complete (watchdog's rule)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from lrwatch.config import Config
from lrwatch.daemon.service import Daemon


def config(tmp_path: Path, **overrides: Any) -> Config:
    root = tmp_path / "runs"
    root.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "logdir": root,
        "state": tmp_path / "state.sqlite",
        "metrics_port": 0,
        "poll_interval_seconds": 0.02,
        "rescan_interval_seconds": 1.0,
    }
    settings.update(overrides)
    return Config(**settings)


@contextmanager
def running(cfg: Config, **kwargs: Any) -> Iterator[Daemon]:
    before = set(threading.enumerate())
    daemon = Daemon(cfg, registry=CollectorRegistry(), **kwargs)
    thread = threading.Thread(target=daemon.run, name="daemon-under-test")
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not daemon._ready.is_set():
            assert thread.is_alive(), "the daemon died during start-up"
            assert time.monotonic() < deadline, "daemon not ready in 20 s"
            time.sleep(0.01)
        yield daemon
        assert thread.is_alive(), "the daemon thread died"
    finally:
        started = time.monotonic()
        daemon.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the daemon did not stop"
        assert time.monotonic() - started < 5, "shutdown took over 5 s"
        deadline = time.monotonic() + 2
        while leaked := [t for t in threading.enumerate() if t not in before and t.is_alive()]:
            assert time.monotonic() < deadline, f"threads leaked: {leaked}"
            time.sleep(0.02)


def value(daemon: Daemon, name: str, **labels: str) -> float | None:
    found: float | None = daemon.metrics.registry.get_sample_value(name, labels)
    return found


def wait_for(predicate: Any, timeout: float = 10, what: str = "", show: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {show() if show else ''}")
        time.sleep(0.02)
