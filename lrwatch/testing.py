"""Test helpers: a real ``lrwatch run`` daemon process, read from outside (HTTP) the way a
supervisor or Prometheus would. lrwatch's own integration tests use them, and so can a plugin's:

    from lrwatch import testing

    port = testing.free_port()
    proc = testing.spawn(root, tmp / "state.sqlite", port, tmp / "daemon.log", "--config", cfg)
    testing.wait_ready(proc, port, tmp / "daemon.log")
    testing.wait_for(lambda: testing.scrape(port).get(name, 0) >= 1, 20, "the finding")
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def daemon_argv(root: Path, port: int, state: Path, *extra: str) -> list[str]:
    """The command line of a real ``lrwatch run`` daemon process over ``root``."""
    return [sys.executable, "-m", "lrwatch", "run", "--logdir", str(root),
            "--metrics-port", str(port), "--state", str(state), *extra]  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(root: Path, state: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            daemon_argv(root, port, state, *extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def get(port: int, path: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(f"{url(port)}{path}", timeout=timeout) as response:
        data: bytes = response.read()
        return data


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get(port, "/readyz", timeout=1)
            return
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"daemon not ready in {timeout} s"
            time.sleep(0.05)


def status(port: int) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(get(port, "/api/status"))
    return answer


def scrape(port: int) -> dict[str, float]:
    samples = {}
    for line in get(port, "/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def wait_for(
    predicate: Any, timeout: float, what: str, *, interval: float = 0.1, show: Any = None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {show() if show else ''}")
        time.sleep(interval)


def stop(proc: subprocess.Popen[bytes], log: Path, timeout: float = 10) -> None:
    """SIGTERM, and the clean exit (status 0) a supervisor expects; killed if it hangs."""
    proc.terminate()
    try:
        assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
