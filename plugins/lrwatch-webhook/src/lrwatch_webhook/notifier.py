"""POST lrwatch's findings and actions to an HTTP endpoint, as JSON.

Built on urllib: a notifier runs on its own thread (lrwatch.sinks.notify.Outlet) and sends a few
small JSON bodies a minute at most, so a client library (requests, httpx) would add a dependency and
buy nothing. Redirects are not followed: urllib turns a redirected POST into a GET without its
body, which would lose the notice while looking delivered.

**Retries.** A connection error, a timeout, an HTTP 5xx or a 429 is tried again, ``retries``
times, after ``backoff_seconds`` doubling each time; a 429 or 503 that says ``Retry-After`` is
waited for instead, up to ``max_backoff_seconds`` (a server asking for an hour is not waited
for an hour: the queue behind this notice would only fill). Any other 4xx is our request being
wrong (bad token, bad URL, bad payload): trying it again cannot help, so it fails at once.
``notify`` raises ``WebhookError`` when it gives up; lrwatch counts and logs that once.

**Secrets.** The URL of a Slack incoming webhook *is* its credential (``/services/T…/B…/…``),
and headers carry tokens. So the config holds both as ``SecretStr`` (a dumped or printed config
shows ``**********``), error messages name the endpoint only by ``scheme://host[:port]``, and
any text quoted from a response is scrubbed of every secret before it goes into a message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from lrwatch.sinks.notify import Notice

USER_AGENT = "lrwatch-webhook/0.1"
MIN_SECRET_CHARS = 4
MAX_QUOTED_BYTES = 200  # of an error response's body, quoted in the raised message
_RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))


class WebhookConfig(BaseModel):
    """One ``notifiers.NAME`` entry's own options (lrwatch takes plugin/min_severity/events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr = Field(description="http(s) URL the notices are POSTed to; kept secret")
    format: Literal["generic", "slack"] = Field(
        default="generic",
        description="'generic': Notice.to_json() as the body; 'slack': a Slack incoming-webhook "
        "message (text and blocks)",
    )
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=3, ge=0, le=20, description="tries after the first one")
    backoff_seconds: float = Field(
        default=0.5, ge=0, description="wait before the first retry; doubles after each"
    )
    max_backoff_seconds: float = Field(
        default=30.0, ge=0, description="cap on any one wait, Retry-After included"
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="extra request headers (e.g. Authorization); secret"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        # Never echo the URL itself into the error: it is the credential of a Slack webhook.
        parts = urllib.parse.urlsplit(url.get_secret_value())
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"must be an http or https URL (got scheme {parts.scheme!r})")
        if not parts.hostname:
            raise ValueError("must name a host (http://HOST/...)")
        return url

    @field_validator("headers")
    @classmethod
    def _no_injection(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not name or any(c in name for c in " :\r\n"):
                raise ValueError(f"not a valid header name: {name!r}")
            if any(c in value.get_secret_value() for c in "\r\n"):
                raise ValueError(f"the value of header {name!r} holds a line break")
        return headers


class WebhookError(Exception):
    """The notice could not be delivered; the message names no secret."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Let a 3xx through as an HTTPError (see the module docstring: a redirected POST loses
    its body in urllib)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def endpoint(url: str) -> str:
    """How messages name the endpoint: ``scheme://host[:port]``, without the user info, the
    path and the query, where webhooks keep their tokens."""
    parts = urllib.parse.urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.hostname}{port}{rest}"


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), if valid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class WebhookNotifier:
    """The ``webhook`` notifier (entry point ``lrwatch.notifiers: webhook``).

    ``sleep`` waits between tries; by default it is interrupted by ``close()``, so a daemon
    that stops is not held up by a notice still being retried (that notice then fails).
    """

    config_model: ClassVar[type[BaseModel]] = WebhookConfig

    def __init__(
        self,
        config: WebhookConfig,
        *,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._url = config.url.get_secret_value()
        self._where = endpoint(self._url)
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **{name: value.get_secret_value() for name, value in config.headers.items()},
        }
        self._secrets = _secrets(self._url, config.headers)
        self._closed = threading.Event()
        self._sleep = sleep if sleep is not None else self._closed.wait
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect())

    def body(self, notice: Notice) -> dict[str, Any]:
        """The JSON object POSTed for ``notice``, in the configured format."""
        if self.config.format == "slack":
            return slack_message(notice)
        return notice.to_json()

    def notify(self, notice: Notice) -> None:
        """POST ``notice``; retry what may pass later; WebhookError when giving up."""
        data = json.dumps(_finite(self.body(notice)), allow_nan=False, default=str).encode()
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            if self._closed.is_set():
                raise WebhookError(f"POST {self._where}: notifier closed before delivery")
            retryable, problem, wait = self._post(data)
            if problem is None:
                return
            if not retryable:
                raise WebhookError(f"POST {self._where} failed, not retried: {problem}")
            if attempt + 1 == attempts:
                break
            backoff = self.config.backoff_seconds * 2**attempt
            delay = min(wait if wait is not None else backoff, self.config.max_backoff_seconds)
            self._sleep(delay)
        tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
        raise WebhookError(f"POST {self._where} failed after {tries}: {problem}")

    def _post(self, data: bytes) -> tuple[bool, str | None, float | None]:
        """One try: ``(retryable, problem or None if delivered, Retry-After seconds)``."""
        request = urllib.request.Request(self._url, data, self._headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.config.timeout_seconds) as response:
                response.read()
                return False, None, None
        except urllib.error.HTTPError as exc:
            status = exc.code
            quoted = _quote(exc)
            problem = self._scrub(f"HTTP {status} {exc.reason}" + (f": {quoted}" if quoted else ""))
            wait = None
            if status in (429, 503):
                wait = retry_after(exc.headers.get("Retry-After"), self._clock())
            return status in _RETRY_STATUSES, problem, wait
        except urllib.error.URLError as exc:  # refused, DNS, TLS; a timeout while connecting
            reason = exc.reason
            name = "timeout" if isinstance(reason, TimeoutError) else type(reason).__name__
            # A certificate the endpoint will still present next time: no use trying again.
            retryable = not isinstance(reason, ssl.SSLCertVerificationError)
            return retryable, self._scrub(f"{name}: {reason}"), None
        except (OSError, http.client.HTTPException) as exc:
            # A timeout or a dropped connection while reading the response: the server may have
            # taken the notice. Retrying may send it twice; chat and paging tolerate a duplicate
            # better than a lost alert.
            name = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            return True, self._scrub(f"{name}: {exc}"), None

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def close(self) -> None:
        self._closed.set()


def _secrets(url: str, headers: Mapping[str, SecretStr]) -> list[str]:
    """Every string that must not appear in a message, longest first (so a secret holding
    another is replaced whole). Strings under 4 characters are left out: scrubbing every "/"
    or "1" would make messages unreadable, and no token is that short."""
    parts = urllib.parse.urlsplit(url)
    found = {url, parts.path, parts.query, parts.netloc.rpartition("@")[0]}
    found |= set(parts.path.split("/")) | set(re.split("[&=]", parts.query))
    found |= {value.get_secret_value() for value in headers.values()}
    return sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)


def _finite(value: Any) -> Any:
    """``value`` with its non-finite floats as the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"``: a diverged loss is NaN in a finding's detail, and Python's bare ``NaN`` is
    not JSON (JavaScript's ``JSON.parse`` and Go's ``encoding/json`` refuse the whole body)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _quote(error: urllib.error.HTTPError) -> str:
    """The start of an error response's body, on one line: servers say there what was wrong
    (Slack: ``invalid_payload``, ``no_service``)."""
    try:
        raw = error.read(MAX_QUOTED_BYTES)
    except (OSError, http.client.HTTPException):
        return ""
    return " ".join(raw.decode("utf-8", "replace").split())


# --- Slack ---------------------------------------------------------------------------------

_ICON = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


def _escape(text: str) -> str:
    """Slack mrkdwn's three control characters (its docs: escape &, < and > in text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _number(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def summary(notice: Notice) -> str:
    """One readable line: severity, what, run, step, metric, reason. Plain text, no markup."""
    severity = notice.severity.value
    where = f"run {notice.run} at step {notice.step}"
    if notice.event == "action":
        action = notice.detail.get("action")
        what = "action"
        if isinstance(action, Mapping):
            what = str(action.get("type", "action"))
            what += "".join(f" {k}={_number(v)}" for k, v in action.items() if k != "type")
        head = f"[{severity}] lrwatch {what} on {where} after {notice.kind}"
    else:
        metric = f" ({notice.metric})" if notice.metric else ""
        head = f"[{severity}] lrwatch {notice.kind} in {where}{metric}"
    return f"{head}: {notice.reason}" if notice.reason else head


def slack_message(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook payload: ``text`` (the notification and fallback line) and
    blocks (the same line with an icon, then the details as context)."""
    icon = _ICON.get(notice.severity.value, "")
    facts = [f"event: {notice.event}", f"kind: {notice.kind}", f"severity: {notice.severity}"]
    if notice.metric:
        facts.append(f"metric: {notice.metric}")
    context = [_escape(fact) for fact in facts]
    # Slack renders the time in the reader's own time zone; the fallback is UTC.
    fallback = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(notice.time))
    context.append(f"<!date^{int(notice.time)}^{{date_short_pretty}} {{time_secs}}|{fallback}>")
    line = summary(notice)
    return {
        "text": line,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {_escape(line)}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in context]},
        ],
    }
