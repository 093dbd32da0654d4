"""The daemon's HTTP server, spoken to over real HTTP on 127.0.0.1: what Prometheus, supervisors
and ``lrwatch status``/``set-lr`` rely on. Status codes, body bounds, the bearer token, errors as
JSON, and the hand-over to the main loop (here a stand-in thread that answers the queue)."""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from lrwatch.daemon import http as daemon_http
from lrwatch.daemon.http import MAX_BODY_BYTES, ControlRequest, DaemonServer

Answer = Callable[[ControlRequest], tuple[int, dict[str, Any]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A running server, its control queue, and what the stand-in loop was asked."""

    def __init__(self, server: DaemonServer, control: queue.Queue[ControlRequest]) -> None:
        self.server, self.control = server, control
        self.asked: list[ControlRequest] = []
        self.ready = False

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return request(self.url + path)

    def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = b"" if body is None else json.dumps(body).encode()
        code, _, raw = request(self.url + path, data, headers or {})
        return code, json.loads(raw)


def request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@contextmanager
def serving(
    answer: Answer | None = None, token: str | None = None, loop: bool = True
) -> Iterator[Served]:
    """A DaemonServer on a free port; unless ``loop`` is off, a thread answers its queue as the
    daemon's main loop does (``answer``, or an echo of the request)."""
    control: queue.Queue[ControlRequest] = queue.Queue(maxsize=2)
    registry = CollectorRegistry()
    Counter("lrwatch_test_total", "A counter for the test.", registry=registry).inc(3)
    served: Served
    server = DaemonServer("127.0.0.1", free_port(), registry, lambda: served.ready, control, token)
    served = Served(server, control)
    stop = threading.Event()

    def main_loop() -> None:
        while not stop.is_set():
            try:
                req = control.get(timeout=0.01)
            except queue.Empty:
                continue
            if not req.reply.set_running_or_notify_cancel():
                continue
            served.asked.append(req)
            if answer is not None:
                req.reply.set_result(answer(req))
            else:
                echo = {"verb": req.verb, "run": req.run, "body": req.body, "who": req.who}
                req.reply.set_result((HTTPStatus.OK, echo))

    thread = threading.Thread(target=main_loop, name="test-main-loop")
    server.start()
    if loop:
        thread.start()
    try:
        yield served
    finally:
        stop.set()
        if loop:
            thread.join(5)
        server.stop()


# --- health, readiness, metrics --------------------------------------------------------------


def test_health_readiness_and_metrics() -> None:
    with serving() as s:
        assert s.get("/healthz")[::2] == (200, b"ok\n")
        assert s.get("/readyz")[::2] == (503, b"starting\n")  # not ready: a supervisor waits
        s.ready = True
        assert s.get("/readyz")[::2] == (200, b"ready\n")
        code, headers, body = s.get("/metrics?name[]=x")  # a query string is ignored
        assert code == 200 and headers["Content-Type"].startswith("text/plain")
        assert "lrwatch_test_total 3.0" in body.decode()


def test_a_port_of_0_picks_a_free_one_and_the_url_names_it() -> None:
    control: queue.Queue[ControlRequest] = queue.Queue()
    server = DaemonServer("127.0.0.1", 0, CollectorRegistry(), lambda: True, control, None)
    server.start()
    try:
        assert not server.url.endswith(":0")
        assert request(server.url + "/healthz")[0] == 200
    finally:
        server.stop()


def test_a_taken_port_is_refused_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            DaemonServer("127.0.0.1", port, CollectorRegistry(), lambda: True, queue.Queue(), None)


def test_stop_before_start_releases_the_port() -> None:
    port = free_port()
    server = DaemonServer("127.0.0.1", port, CollectorRegistry(), lambda: True, queue.Queue(), None)
    server.stop()
    again = DaemonServer("127.0.0.1", port, CollectorRegistry(), lambda: True, queue.Queue(), None)
    again.stop()


def test_unknown_paths_are_404_with_a_json_error() -> None:
    with serving() as s:
        code, headers, body = s.get("/nope")
        assert code == 404 and headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": "no such endpoint /nope"}
        for path in ("/api/runs/r/explode", "/api/runs//pause", "/api/other/r/pause"):
            code, answer = s.post(path, {})
            assert code == 404 and "no such endpoint" in answer["error"]
        assert s.asked == []


# --- status and control: handed to the main loop -----------------------------------------------


def test_status_is_answered_by_the_main_loop() -> None:
    with serving(lambda req: (200, {"runs": [{"run": "a"}], "verb": req.verb})) as s:
        code, headers, body = s.get("/api/status")
        assert code == 200 and headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"runs": [{"run": "a"}], "verb": "status"}


def test_status_says_busy_when_the_loop_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_http, "STATUS_TIMEOUT_SECONDS", 0.2)
    with serving(loop=False) as s:
        code, _, body = s.get("/api/status")
        assert code == 200 and json.loads(body) == {"error": "the daemon is busy", "runs": []}
        # The request was withdrawn: a loop that gets to it later does not carry it out.
        assert not s.control.get_nowait().reply.set_running_or_notify_cancel()


def test_a_control_request_reaches_the_loop_with_its_run_verb_and_body() -> None:
    with serving() as s:
        code, answer = s.post("/api/runs/team%2Fexp%201/set-lr", {"scale": 0.5})
        assert code == 200
        assert answer == {
            "verb": "set-lr",
            "run": "team/exp 1",  # url-quoted, may contain '/'
            "body": {"scale": 0.5},
            "who": "http:127.0.0.1",
        }
        code, answer = s.post("/api/runs/r/pause", {"who": "cli:alice", "reason": "x"})
        assert answer["who"] == "cli:alice" and answer["body"] == {"reason": "x"}
        code, answer = s.post("/api/runs/r/resume")  # no body: {}
        assert code == 200 and answer["body"] == {}


def test_the_loop_answer_is_the_http_answer() -> None:
    with serving(lambda req: (HTTPStatus.CONFLICT, {"error": "observe mode"})) as s:
        assert s.post("/api/runs/r/set-lr", {"scale": 2}) == (409, {"error": "observe mode"})


def test_a_loop_too_slow_withdraws_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """504, and nothing was done: the loop, reaching it later, must not carry it out, so a
    retried set-lr can never apply twice."""
    monkeypatch.setattr(daemon_http, "CONTROL_TIMEOUT_SECONDS", 0.2)
    with serving(loop=False) as s:
        code, answer = s.post("/api/runs/r/set-lr", {"scale": 0.5})
        assert code == 504 and "withdrawn, nothing was changed" in answer["error"]
        assert not s.control.get_nowait().reply.set_running_or_notify_cancel()


def test_a_full_queue_is_503() -> None:
    with serving(loop=False) as s:
        for _ in range(s.control.maxsize):
            s.control.put_nowait(ControlRequest("pause", "r", {}, "t"))
        assert s.post("/api/runs/r/pause", {}) == (503, {"error": "daemon busy"})


# --- what a request may carry ------------------------------------------------------------------


def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/api/runs/r/set-lr")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_bodies_are_bounded_and_must_be_a_json_object() -> None:
    with serving() as s:
        big = {"reason": "x" * MAX_BODY_BYTES}
        assert s.post("/api/runs/r/set-lr", big) == (413, {"error": "body too large"})
        bad = s.url, b"{not json", {"Content-Length": "9"}
        assert raw_post(*bad) == (400, {"error": "body is not JSON"})
        bad = s.url, b"[1, 2]", {"Content-Length": "6"}
        assert raw_post(*bad) == (400, {"error": "body must be a JSON object"})
        for length in ("-1", "abc", "²"):  # "-1" would read to the end of the stream
            assert raw_post(s.url, b"{}", {"Content-Length": length})[0] == 400
        deep = b"[" * 3000 + b"]" * 3000  # under the bound, but past the JSON parser's depth
        assert raw_post(s.url, deep[:4000], {"Content-Length": "4000"})[0] == 400
        assert s.asked == []  # none of them reached the loop


def test_with_a_token_control_requests_need_it_and_reads_do_not() -> None:
    with serving(token="s3cret") as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            code, answer = s.post("/api/runs/r/pause", {}, headers)
            assert (code, answer) == (401, {"error": "missing or wrong bearer token"})
        assert s.asked == []
        code, answer = s.post("/api/runs/r/pause", {}, {"Authorization": "Bearer s3cret"})
        assert code == 200 and answer["verb"] == "pause"
        assert s.get("/healthz")[0] == 200 and s.get("/metrics")[0] == 200
