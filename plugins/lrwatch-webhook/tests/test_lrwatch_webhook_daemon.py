"""A real ``lrwatch run`` daemon with webhook notifiers: a JSONL run whose loss diverges is
POSTed to a local endpoint as a finding; an unreachable endpoint is counted as failed and logged
without its secrets; ``lrwatch config check`` names a bad option without echoing the URL."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from webhook_receiver import receiver

from lrwatch.testing import free_port, scrape, spawn, stop, wait_for, wait_ready

pytestmark = pytest.mark.slow

SECRETS = ("pathSECRET1", "qSECRET2", "hdrSECRET3", "deadSECRET4")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jsonl(steps: range, loss: list[float]) -> str:
    return "".join(
        json.dumps({"step": s, "time": 1.7e9 + s, "loss": loss[s]}) + "\n" for s in steps
    )


def test_daemon_posts_a_divergence_finding_and_counts_a_dead_endpoint(tmp_path: Path) -> None:
    root, log = tmp_path / "runs", tmp_path / "daemon.log"
    (root / "a").mkdir(parents=True)
    losses = [2.0 / (1 + 0.1 * s) for s in range(60)] + [0.5 * 2.0**k for k in range(20)]
    losses.append(float("nan"))
    metrics = root / "a" / "metrics.jsonl"
    metrics.write_text(jsonl(range(60), losses))
    with receiver() as server:
        config = tmp_path / "lrwatch.yaml"
        config.write_text(
            json.dumps(
                {
                    "mode": "observe",
                    "notifiers": {
                        "ops": {
                            "plugin": "webhook",
                            "url": server.url("/hook/pathSECRET1?token=qSECRET2"),
                            "headers": {"Authorization": "Bearer hdrSECRET3"},
                            "min_severity": "warning",
                        },
                        "dead": {
                            "plugin": "webhook",
                            "url": f"http://127.0.0.1:{closed_port()}/x/deadSECRET4",
                            "retries": 0,
                            "format": "slack",
                        },
                    },
                }
            )
        )
        port = free_port()
        proc = spawn(root, tmp_path / "state.sqlite", port, log, "--config", str(config))
        try:
            wait_ready(proc, port, log)
            time.sleep(0.5)  # the healthy steps are read: nothing to tell yet
            assert server.received == []
            with metrics.open("a") as job:
                job.write(jsonl(range(60, len(losses)), losses))
            received = server.wait(1, timeout=15)
            findings = [r.body for r in received if r.body["event"] == "finding"]
            assert findings, received
            first = findings[0]
            assert (first["run"], first["kind"], first["metric"]) == ("a", "divergence", "loss")
            assert first["severity"] in ("warning", "critical") and first["step"] >= 60
            assert received[0].headers["Authorization"] == "Bearer hdrSECRET3"
            assert received[0].path == "/hook/pathSECRET1?token=qSECRET2"

            def counted() -> dict[str, float]:
                return {k: v for k, v in scrape(port).items() if "notifications_total" in k}

            wait_for(
                lambda: any('"dead"' in k and '"failed"' in k for k in counted()),
                15,
                "the dead endpoint's failure",
                show=counted,
            )
            assert any('"ops"' in k and '"sent"' in k and v >= 1 for k, v in counted().items())
        finally:
            stop(proc, log)
    text = log.read_text()
    assert "notifier dead" in text  # the failure is logged once ...
    for secret in SECRETS:
        assert secret not in text  # ... naming the endpoint by host and port only


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example/services/pathSECRET1", "http or https"),
        # Valid to the model, refused by the constructor: config check builds it as the daemon
        # would, so the daemon never starts without a notifier that check said was fine.
        ("https://hooks.example:99999/services/pathSECRET1", "Port out of range"),
    ],
)
def test_config_check_names_the_bad_option_without_echoing_the_url(
    tmp_path: Path, url: str, why: str
) -> None:
    config = tmp_path / "lrwatch.yaml"
    config.write_text(json.dumps({"notifiers": {"ops": {"plugin": "webhook", "url": url}}}))
    checked = subprocess.run(
        [sys.executable, "-m", "lrwatch", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = " ".join((checked.stdout + checked.stderr).split())  # rich wraps long lines
    assert checked.returncode != 0, said
    assert "webhook" in said and why in said
    assert "pathSECRET1" not in said
