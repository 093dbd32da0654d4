"""How ``lrwatch status``, ``set-lr``, ``pause`` and ``resume`` reach a running daemon: its control
API over HTTP (daemon/control.py), with the bearer token from ``$LRWATCH_API_TOKEN`` when set."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TOKEN_ENV = "LRWATCH_API_TOKEN"
TIMEOUT_SECONDS = 15


class ApiError(Exception):
    """A failed call to the daemon's API; the message says why (HTTP status, or no daemon)."""


def call(host: str, port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    """GET ``path`` (or POST ``body`` as JSON) and return the JSON answer; ApiError says why not."""
    url = f"http://{host}:{port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    token = os.environ.get(TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise ApiError(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"no daemon at {url}: {exc}") from None


def run_path(run: str, verb: str) -> str:
    """The API path of ``verb`` on ``run`` (a name with ``/`` in it stays one path)."""
    return f"/api/runs/{urllib.parse.quote(run, safe='/')}/{verb}"


def who() -> str:
    """Who a manual command comes from, for the audit log."""
    try:
        return f"cli:{os.getlogin()}"
    except OSError:
        return f"cli:uid{os.getuid()}"
