"""The control API handler behind ``lrwatch status``, ``set-lr``, ``pause`` and ``resume``, over
real HTTP on 127.0.0.1: the daemon's HTTP server hands each request to a thread that answers it
as the daemon's main loop does (control.serve), against a real RunBook and state file. What a
user relies on: a clear JSON answer for each refusal, the command written and audited when one
is accepted, and a failing request that does not take the loop down."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from lrwatch.config import Config, Mode
from lrwatch.daemon import control
from lrwatch.daemon.http import ControlRequest, DaemonServer
from lrwatch.daemon.runs import RunBook
from lrwatch.daemon.store import Store
from lrwatch.protocol import channel
from lrwatch.protocol.types import Heartbeat
from lrwatch.sinks.prometheus import Metrics
from lrwatch.sources.follow import Follower


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemonish:
    """The HTTP server and a main loop answering control requests, over ``root``."""

    url: str
    root: Path
    book: RunBook
    store: Store

    def call(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def hooked(self, name: str, lr: float = 0.1) -> None:
        """A run whose hook is attached and beating, known to the daemon."""
        run_dir = self.root / name
        run_dir.mkdir()
        cid = channel.channel_id(run_dir, create=True) or ""
        beat = Heartbeat(1, "h", 10, 1.0, 0, (lr,), time.time(), channel=cid)
        channel.write_heartbeat(run_dir, beat)
        self.book.get(name)


@pytest.fixture(params=[Mode.ACT])
def daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Daemonish]:
    root = tmp_path / "runs"
    root.mkdir()
    config = Config(logdir=root, mode=request.param)
    store = Store(tmp_path / "state.sqlite")
    metrics = Metrics(CollectorRegistry())
    book = RunBook(root, config, None, store, metrics, Follower(root))
    requests: queue.Queue[ControlRequest] = queue.Queue(maxsize=8)
    server = DaemonServer("127.0.0.1", free_port(), metrics.registry, lambda: True, requests, None)
    stop = threading.Event()

    def main_loop() -> None:  # the daemon's turn, as far as control requests go
        while not stop.wait(0.01):
            control.serve(requests, book, config, time.time)

    loop = threading.Thread(target=main_loop, name="test-main-loop")
    server.start()
    loop.start()
    try:
        yield Daemonish(server.url, root, book, store)
    finally:
        stop.set()
        loop.join(5)
        server.stop()
        store.close()


def test_status_lists_the_runs(daemon: Daemonish) -> None:
    daemon.hooked("exp")
    code, answer = daemon.call("/api/status")
    assert code == 200 and answer["mode"] == "act" and answer["root"] == str(daemon.root)
    [row] = answer["runs"]
    assert row["run"] == "exp" and row["hook_alive"] is True and row["lrs"] == [0.1]


def test_an_unknown_run_is_404(daemon: Daemonish) -> None:
    assert daemon.call("/api/runs/ghost/pause", {}) == (404, {"error": "no run named 'ghost'"})


def test_set_lr_writes_an_audited_command(daemon: Daemonish) -> None:
    daemon.hooked("exp")
    code, answer = daemon.call("/api/runs/exp/set-lr", {"scale": 0.5, "who": "cli:alice"})
    assert code == 202
    assert answer == {"run": "exp", "seq": 1, "factor": 0.5, "written": True}
    sent = json.loads(channel.command_path(daemon.root / "exp", 1).read_bytes())
    assert sent["action"] == {"type": "scale_lr", "factor": 0.5}
    assert sent["issuer"] == "cli:alice" and sent["reason"] == "manual set-lr by cli:alice"
    [audit] = [a for a in daemon.store.audit_log("exp") if a["event"] == "set-lr"]
    assert audit["who"] == "cli:alice" and audit["detail"]["factor"] == 0.5
    # --value is an absolute LR: the hook reports 0.1 at factor 1, so 0.05 is a factor 0.5 on
    # the one the daemon holds now.
    code, answer = daemon.call("/api/runs/exp/set-lr", {"value": 0.05})
    assert code == 202 and answer["factor"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "give 'scale', or 'value' for a run whose hook reports its LR"),
        ({"scale": "half"}, "scale and value must be numbers"),
        ({"scale": 2.0}, "resulting LR factor 2 is outside [0.0001, 1]"),
        ({"scale": float("nan")}, "resulting LR factor nan is outside [0.0001, 1]"),
        ({"scale": 1e-3}, "change x0.001 exceeds the per-command limit 10"),
    ],
)
def test_set_lr_refuses_what_the_policy_forbids(
    daemon: Daemonish, body: dict[str, Any], error: str
) -> None:
    daemon.hooked("exp")
    assert daemon.call("/api/runs/exp/set-lr", body) == (400, {"error": error})
    assert not channel.command_path(daemon.root / "exp", 1).exists()


def test_set_lr_needs_a_live_hook(daemon: Daemonish) -> None:
    (daemon.root / "logs-only").mkdir()
    daemon.book.get("logs-only")
    code, answer = daemon.call("/api/runs/logs-only/set-lr", {"scale": 0.5})
    assert (code, answer) == (409, {"error": "run logs-only has no live hook"})


@pytest.mark.parametrize("daemon", [Mode.OBSERVE], indirect=True)
def test_observe_mode_writes_no_command_but_pauses(daemon: Daemonish) -> None:
    daemon.hooked("exp")
    code, answer = daemon.call("/api/runs/exp/set-lr", {"scale": 0.5})
    assert (code, answer) == (409, {"error": "observe mode: lrwatch writes no commands"})
    assert daemon.call("/api/runs/exp/pause", {}) == (200, {"run": "exp", "paused": True})


def test_pause_and_resume_show_in_status_and_the_audit(daemon: Daemonish) -> None:
    daemon.hooked("exp")
    assert daemon.call("/api/runs/exp/pause", {"reason": "page"}) == (
        200,
        {"run": "exp", "paused": True},
    )
    assert daemon.call("/api/status")[1]["runs"][0]["state"] == "paused"
    assert daemon.call("/api/runs/exp/resume", {}) == (200, {"run": "exp", "paused": False})
    assert daemon.call("/api/status")[1]["runs"][0]["state"] != "paused"
    events = [(a["event"], a["detail"]) for a in daemon.store.audit_log("exp")]
    assert events == [("pause", {"reason": "page"}), ("resume", {})]


def test_a_failing_request_is_a_500_and_the_loop_goes_on(
    daemon: Daemonish, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.hooked("exp")

    def audit(*args: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(daemon.store, "audit", audit)  # the request cannot be committed
    assert daemon.call("/api/runs/exp/pause", {}) == (500, {"error": "disk on fire"})
    monkeypatch.undo()
    assert daemon.call("/api/status")[0] == 200  # the loop still answers
    assert daemon.call("/api/runs/exp/pause", {})[0] == 200
