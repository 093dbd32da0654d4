"""A real HTTP endpoint for the webhook tests: ``http.server`` on 127.0.0.1, in a thread.

It records every request (path, headers, JSON body) and answers from a script of replies, the
last one repeating: ``Reply(500)``, then ``Reply(200)``, say. A reply may also stall (a server
too slow to answer) or close the connection without a word.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _not_json(literal: str) -> Any:
    raise ValueError(f"{literal} is not JSON: a strict parser (JavaScript, Go) would refuse it")


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (beyond the client's timeout: a timeout)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON


class Receiver:
    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies) or [Reply()]
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = False  # server_close() joins the handlers: no leaks
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.02,), name="webhook-receiver"
        )  # a short poll interval: shutdown() waits for it

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {len(self.received)}")
            time.sleep(0.02)

    def _next(self, request: Received) -> Reply:
        with self.lock:
            self.received.append(request)
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                body = json.loads(raw, parse_constant=_not_json)  # strict: no bare NaN
                request = Received(self.path, dict(self.headers.items()), body)
                reply = receiver._next(request)
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        return Handler


@contextmanager
def receiver(*replies: Reply) -> Iterator[Receiver]:
    """A running receiver, shut down and joined on exit (no thread outlives the test)."""
    found = Receiver(list(replies))
    found.thread.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()
        found.thread.join(5)
