"""The daemon's HTTP face: /metrics for Prometheus, /healthz and /readyz for supervisors, and
a small JSON API on which ``lrwatch status``, ``set-lr``, ``pause`` and ``resume`` are built.

It binds 127.0.0.1 unless configured otherwise. The HTTP threads never touch daemon state:
status and control requests are handed to the main loop through a bounded queue and answered
when the loop has handled them (watchdog's producer/consumer split; control.py answers them).
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
CONTROL_TIMEOUT_SECONDS = 10.0
STATUS_TIMEOUT_SECONDS = 5.0
IDLE_TIMEOUT_SECONDS = 5.0
"""A connection that sends nothing (or too slowly) for this long is closed: else each idle
client would hold a thread for ever."""
MAX_CONNECTIONS = 256
"""Connections served at once (a thread each); more are closed unanswered. Prometheus and the
CLI need a few; the idle timeout frees the slots of clients that say nothing."""
LISTEN_BACKLOG = 128


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer with a real listen backlog (the default is 5) and a bound on the
    threads: past ``MAX_CONNECTIONS`` a new connection is closed unanswered."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or timed out: a debug line, not socketserver's traceback
        on stderr (which is not a log record, nor JSON)."""
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)


@dataclass(slots=True)
class ControlRequest:
    """``status``, or ``set-lr``, ``pause`` or ``resume`` for one run, waiting for the main
    loop's answer."""

    verb: str
    run: str
    body: dict[str, Any]
    who: str
    reply: Future[tuple[int, dict[str, Any]]] = field(default_factory=Future)


class DaemonServer:
    """The HTTP server: binds ``host:port`` when built (port 0 picks a free one, see ``url``),
    serves on its own thread between ``start`` and ``stop``."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        control: queue.Queue[ControlRequest],
        token: str | None,
    ) -> None:
        handler = _make_handler(registry, ready, control, token)
        self._httpd = _Server((host, port), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="lrwatch-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; safe before ``start`` (``shutdown()`` would wait
        forever for a serve loop that never ran)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()


def status(control: queue.Queue[ControlRequest]) -> dict[str, Any]:
    """``lrwatch status``'s answer: the main loop builds it (only it touches the runs) and
    answers within a turn; a loop too busy for that says so instead."""
    request = ControlRequest("status", "", {}, "")
    try:
        control.put_nowait(request)
        _, answer = request.reply.result(timeout=STATUS_TIMEOUT_SECONDS)
    except queue.Full:
        return {"error": "the daemon is busy", "runs": []}
    except TimeoutError:
        request.reply.cancel()
        return {"error": "the daemon is busy", "runs": []}
    return answer


def _withdraw(request: ControlRequest) -> tuple[int, dict[str, Any]]:
    """A control request the main loop did not answer in time: withdrawn, or waited for.

    ``Future.cancel()`` and the loop's ``set_running_or_notify_cancel()`` decide atomically
    which of the two happens: either the request is withdrawn and never carried out (504, safe
    to retry: a retried set-lr cannot apply the change twice), or the loop has already taken
    it, and its answer comes within a turn (the handling itself is short).
    """
    if request.reply.cancel():
        return HTTPStatus.GATEWAY_TIMEOUT, {
            "error": "the daemon is busy; the request was withdrawn, nothing was changed: retry"
        }
    try:
        return request.reply.result(timeout=CONTROL_TIMEOUT_SECONDS)
    except TimeoutError:  # a loop stuck inside the handling: the outcome is unknown
        return HTTPStatus.GATEWAY_TIMEOUT, {
            "error": "the daemon took the request but did not answer: see lrwatch status "
            "before retrying"
        }


def _make_handler(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    control: queue.Queue[ControlRequest],
    token: str | None,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "lrwatch"
        timeout = IDLE_TIMEOUT_SECONDS  # socket timeout of each connection (StreamRequestHandler)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain")
            elif path == "/readyz":
                ok = ready()
                code = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(code, b"ready\n" if ok else b"starting\n", "text/plain")
            elif path == "/api/status":
                self._json(HTTPStatus.OK, status(control))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {path}"})

        def do_POST(self) -> None:
            # /api/runs/<run, url-quoted, may contain '/'>/<verb>
            path = self.path.split("?", 1)[0]
            prefix = "/api/runs/"
            run, _, verb = path[len(prefix) :].rpartition("/")
            if not path.startswith(prefix) or verb not in ("set-lr", "pause", "resume") or not run:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {path}"})
                return
            if token is not None:
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    self._json(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong bearer token"})
                    return
            body = self._body()
            if body is None:
                return
            who = str(body.pop("who", "")) or f"http:{self.client_address[0]}"
            request = ControlRequest(verb, unquote(run), body, who[:100])
            try:
                control.put_nowait(request)
                code, answer = request.reply.result(timeout=CONTROL_TIMEOUT_SECONDS)
            except queue.Full:
                code, answer = HTTPStatus.SERVICE_UNAVAILABLE, {"error": "daemon busy"}
            except TimeoutError:
                code, answer = _withdraw(request)
            self._json(code, answer)

        def _body(self) -> dict[str, Any] | None:
            raw = (self.headers.get("Content-Length") or "0").strip()
            if not raw.isdigit() or not raw.isascii():  # "-1" would read to the end of the stream
                self._json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
                return None
            length = int(raw)
            if length > MAX_BODY_BYTES:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return None
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except (ValueError, RecursionError):
                self._json(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
                return None
            if not isinstance(body, dict):
                self._json(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON object"})
                return None
            return body

        def _json(self, code: int, payload: dict[str, Any]) -> None:
            self._send(code, json.dumps(payload).encode(), "application/json")

        def _send(self, code: int, data: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the daemon's own log

    return Handler
