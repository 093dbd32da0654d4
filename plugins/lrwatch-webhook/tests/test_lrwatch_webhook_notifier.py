"""The webhook notifier against a real HTTP server on 127.0.0.1: the bodies it posts, when it
retries and when it gives up, and that no secret ever reaches a message."""

from __future__ import annotations

import math
import socket
import threading
import time
from typing import Any

import pytest
from lrwatch_webhook import WebhookConfig, WebhookError, WebhookNotifier, summary
from lrwatch_webhook.notifier import endpoint, retry_after
from webhook_receiver import Reply, receiver

from lrwatch import plugins
from lrwatch.protocol.types import Severity
from lrwatch.sinks.notify import Notice, Notifier, NotifierSettings, build_outlets

FINDING = Notice(
    "finding",
    "exp/a",
    120,
    "divergence",
    Severity.CRITICAL,
    "loss is NaN at step 120 (non-finite)",
    1_700_000_000.5,
    "train/loss",
    {"nonfinite": True, "value": math.nan, "bounds": [0.0, math.inf], "onset_step": 118},
)
ACTION = Notice(
    "action",
    "exp/a",
    121,
    "divergence",
    Severity.CRITICAL,
    "scale the LR by 0.1 after a divergence",
    1_700_000_001.0,
    detail={"action": {"type": "scale_lr", "factor": 0.1}, "seq": 3},
)


def notifier(url: str, sleeps: list[float] | None = None, **options: Any) -> WebhookNotifier:
    """Built as lrwatch builds it: the options validated by the plugin's config model."""
    config = WebhookConfig.model_validate({"url": url, **options})
    record = sleeps.append if sleeps is not None else None
    return WebhookNotifier(config, sleep=record)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


# --- bodies ----------------------------------------------------------------------------------


def test_generic_format_posts_the_notice_as_json_with_the_configured_headers() -> None:
    with receiver(Reply(204, b"")) as server:
        hook = notifier(server.url(), headers={"Authorization": "Bearer tok"})
        assert isinstance(hook, Notifier)
        hook.notify(FINDING)
        hook.notify(ACTION)
        first, second = server.wait(2)
    # Strict JSON (the receiver refuses bare NaN): non-finite numbers are spelled as strings.
    assert first.body == {
        **FINDING.to_json(),
        "detail": {
            "nonfinite": True,
            "value": "NaN",
            "bounds": [0.0, "Infinity"],
            "onset_step": 118,
        },
    }
    assert first.body["kind"] == "divergence" and first.body["detail"]["nonfinite"] is True
    assert second.body["event"] == "action" and second.body["detail"]["seq"] == 3
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Authorization"] == "Bearer tok"
    assert first.path == "/hook"


def test_slack_format_is_an_incoming_webhook_message_with_a_readable_line() -> None:
    tricky = Notice("finding", "exp/<b>", 7, "spike", Severity.WARNING, "loss > 3 & rising", 0.0)
    with receiver() as server:
        hook = notifier(server.url(), format="slack")
        hook.notify(FINDING)
        hook.notify(ACTION)
        hook.notify(tricky)
        finding, action, escaped = (r.body for r in server.wait(3))
    assert finding["text"] == (
        "[critical] lrwatch divergence in run exp/a at step 120 (train/loss): "
        "loss is NaN at step 120 (non-finite)"
    )
    assert action["text"] == (
        "[critical] lrwatch scale_lr factor=0.1 on run exp/a at step 121 after divergence: "
        "scale the LR by 0.1 after a divergence"
    )
    section, context = finding["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"].startswith(":rotating_light: [critical]")
    assert "metric: train/loss" in [e["text"] for e in context["elements"]]
    # Slack's mrkdwn control characters are escaped in blocks; the plain text stays plain.
    assert "exp/&lt;b&gt;" in escaped["blocks"][0]["text"]["text"]
    assert "&gt; 3 &amp; rising" in escaped["blocks"][0]["text"]["text"]
    assert escaped["text"] == summary(tricky)


# --- retries ---------------------------------------------------------------------------------


def test_a_500_is_retried_with_exponential_backoff_until_it_passes() -> None:
    sleeps: list[float] = []
    with receiver(Reply(500), Reply(502), Reply(200)) as server:
        notifier(server.url(), sleeps, backoff_seconds=0.25).notify(FINDING)
        assert len(server.wait(3)) == 3
    assert sleeps == [0.25, 0.5]


def test_gives_up_after_the_configured_retries_and_says_why() -> None:
    sleeps: list[float] = []
    with receiver(Reply(503, b"overloaded")) as server:
        hook = notifier(server.url(), sleeps, retries=2, backoff_seconds=1, max_backoff_seconds=1.5)
        with pytest.raises(WebhookError, match=r"after 3 attempts: HTTP 503 .*overloaded"):
            hook.notify(FINDING)
        assert len(server.received) == 3
    assert sleeps == [1, 1.5]  # 1, then 2 capped at max_backoff_seconds


def test_a_429_waits_as_long_as_retry_after_says_within_the_cap() -> None:
    sleeps: list[float] = []
    slow_down = Reply(429, b"", {"Retry-After": "2"})
    much_later = Reply(429, b"", {"Retry-After": "3600"})
    with receiver(slow_down, much_later, Reply(200)) as server:
        notifier(server.url(), sleeps, max_backoff_seconds=10).notify(FINDING)
        assert len(server.received) == 3
    assert sleeps == [2.0, 10.0]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("7", 0.0) == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == 10.0
    assert retry_after("soon", 0.0) is None
    assert retry_after(None, 0.0) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_fail_at_once_without_a_retry(status: int) -> None:
    sleeps: list[float] = []
    with receiver(Reply(status, b"invalid_token")) as server:
        with pytest.raises(WebhookError, match=rf"not retried: HTTP {status} .*invalid_token"):
            notifier(server.url(), sleeps).notify(FINDING)
        assert len(server.received) == 1
    assert sleeps == []


def test_a_redirect_is_not_followed_since_urllib_would_drop_the_body() -> None:
    with receiver(Reply(302, b"", {"Location": "/elsewhere"})) as server:
        with pytest.raises(WebhookError, match="not retried: HTTP 302"):
            notifier(server.url()).notify(FINDING)
        assert [r.path for r in server.received] == ["/hook"]


def test_a_server_slower_than_the_timeout_is_a_retried_timeout() -> None:
    with receiver(Reply(200, delay=1.0)) as server:
        hook = notifier(server.url(), [], timeout_seconds=0.2, retries=1)
        started = time.monotonic()
        with pytest.raises(WebhookError, match="after 2 attempts: timeout"):
            hook.notify(FINDING)
        assert time.monotonic() - started < 0.9  # two 0.2 s timeouts, not the server's 2 s
        assert len(server.wait(2)) == 2


def test_connection_refused_is_retried_then_raised() -> None:
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{closed_port()}/hook"
    with pytest.raises(WebhookError, match=r"after 2 attempts: ConnectionRefusedError"):
        notifier(url, sleeps, retries=1).notify(FINDING)
    assert sleeps == [0.5]


def test_close_interrupts_a_backoff_so_the_daemon_can_stop() -> None:
    with receiver(Reply(500)) as server:
        hook = notifier(server.url(), None, retries=5, backoff_seconds=30)  # the real sleep
        failure: list[BaseException] = []

        def deliver() -> None:
            try:
                hook.notify(FINDING)
            except WebhookError as exc:
                failure.append(exc)

        worker = threading.Thread(target=deliver)
        worker.start()
        server.wait(1)
        started = time.monotonic()
        hook.close()
        worker.join(5)
        assert not worker.is_alive() and time.monotonic() - started < 2
    assert "closed before delivery" in str(failure[0])


# --- secrets ---------------------------------------------------------------------------------

SLACK_PATH = "/services/T0SECRET1/B0SECRET2/xoxSECRETtoken3"
SECRETS = ("T0SECRET1", "B0SECRET2", "xoxSECRETtoken3", "qsecret42", "Bearer hdrsecret9")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {text!r}"
    assert "hdrsecret9" not in text


def test_secrets_are_redacted_from_errors_even_when_the_server_echoes_them() -> None:
    echo = (SLACK_PATH + "?token=qsecret42 Authorization: Bearer hdrsecret9").encode()
    with receiver(Reply(500, echo)) as server:
        url = server.url(SLACK_PATH + "?token=qsecret42")
        hook = notifier(url, [], retries=1, headers={"Authorization": "Bearer hdrsecret9"})
        with pytest.raises(WebhookError) as raised:
            hook.notify(FINDING)
        assert server.received[0].headers["Authorization"] == "Bearer hdrsecret9"
    message = str(raised.value)
    assert_no_secret(message)
    assert f"POST http://127.0.0.1:{server.port}/… failed after 2 attempts: HTTP 500" in message
    assert "[redacted]" in message
    # No chained urllib error whose traceback could show the full URL.
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_secrets_are_redacted_when_the_endpoint_is_unreachable() -> None:
    url = f"https://user:pw-SECRET@127.0.0.1:{closed_port()}{SLACK_PATH}?token=qsecret42"
    with pytest.raises(WebhookError) as raised:
        notifier(url, [], retries=0).notify(FINDING)
    assert_no_secret(str(raised.value))
    assert "pw-SECRET" not in str(raised.value)


def test_the_config_never_shows_its_secrets() -> None:
    url = "https://hooks.slack.com" + SLACK_PATH + "?token=qsecret42"
    config = WebhookConfig.model_validate(
        {"url": url, "headers": {"Authorization": "Bearer hdrsecret9"}}
    )
    for shown in (repr(config), str(config), config.model_dump_json()):
        assert_no_secret(shown)
    assert endpoint(url) == "https://hooks.slack.com/…"
    assert endpoint("http://example.com:8080") == "http://example.com:8080"


# --- configuration, through lrwatch ----------------------------------------------------------


def test_options_are_validated_by_lrwatch_registry_naming_the_field_not_the_secret() -> None:
    def problem(raw: dict[str, Any]) -> str:
        found = plugins.check("notifiers", "webhook", raw)
        assert found is not None
        return str(found)

    assert plugins.check("notifiers", "webhook", {"url": "https://h.example/x"}) is None
    assert "url" in problem({})
    bad_scheme = problem({"url": "ftp://h.example/xoxSECRETtoken3"})
    assert "url" in bad_scheme and "http or https" in bad_scheme
    assert_no_secret(bad_scheme)
    assert "colour" in problem({"url": "https://h.example", "colour": "red"})
    assert "format" in problem({"url": "https://h.example", "format": "teams"})
    assert "retries" in problem({"url": "https://h.example", "retries": -1})
    injected = problem({"url": "https://h.example", "headers": {"X-A": "v\r\nX-B: hdrsecret9"}})
    assert "X-A" in injected and "line break" in injected
    assert_no_secret(injected)


def test_lrwatch_outlet_delivers_through_the_plugin_and_counts() -> None:
    """lrwatch's own notifier machinery (queue + thread per instance) with this plugin."""
    counts: list[tuple[str, str]] = []
    with receiver(Reply(200), Reply(404)) as server:
        settings = NotifierSettings.model_validate(
            {"plugin": "webhook", "min_severity": "critical", "url": server.url(), "retries": 0}
        )
        outlets, problems = build_outlets({"ops": settings}, lambda *k: counts.append(k))
        assert problems == []
        [outlet] = outlets
        try:
            outlet.offer(FINDING)
            outlet.offer(Notice("finding", "exp/a", 1, "plateau", Severity.INFO, "flat", 0.0))
            outlet.offer(ACTION)
            server.wait(2)
        finally:
            outlet.close(wait=5, drain=True)
        assert [r.body["event"] for r in server.received] == ["finding", "action"]
    assert counts == [("ops", "sent"), ("ops", "failed")]
