"""The alert rules against the real thing: a real Prometheus scrapes a real `lrwatch run` daemon
that watches a real PyTorch job diverge beside a healthy one, evaluates deploy/prometheus's
rules, and fires LRWatchRunDiverging for the diverging run only.

The rules are a test-only copy with every `for:` set to 0s (the real ones wait minutes); the
expressions, labels and annotations are the shipped ones. Prometheus scrapes and evaluates every
second. Both jobs run without the hook (`--no-lrwatch`), so lrwatch only observes them and the
divergence stays active until the end. The jobs run the demo's default number of steps, the
length over which its default peak LR is known to diverge.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lrwatch.testing import daemon_argv, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DIVERGING, HEALTHY = "job", "healthy"
FIRING_TIMEOUT = 120.0


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            assert proc.poll() is None, f"{what} exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{what} not ready in 30 s:\n{log.read_text()}"
            time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End one process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fast_rules(path: Path) -> Path:
    """alerts.yml with every `for:` at 0s, so that a test need not wait minutes."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        stop(proc)


def diverging_alerts(prometheus: str) -> list[dict[str, Any]]:
    answer = get_json(f"{prometheus}/api/v1/alerts")
    return [
        a for a in answer["data"]["alerts"] if a["labels"].get("alertname") == "LRWatchRunDiverging"
    ]


def test_prometheus_fires_the_divergence_alert_for_the_diverging_run_only(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        pytest.skip("prometheus is not installed (Debian package prometheus); .ci/run installs it")
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")

    root = tmp_path / "runs"
    root.mkdir()
    daemon_port, prometheus_port = free_port(), free_port()
    daemon_log = tmp_path / "daemon.log"
    with daemon_log.open("w") as out:  # the child keeps its own copy of the descriptor
        processes.append(
            subprocess.Popen(
                daemon_argv(root, daemon_port, tmp_path / "state.sqlite"),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
    daemon = f"http://127.0.0.1:{daemon_port}"
    wait_until_up(f"{daemon}/readyz", processes[-1], daemon_log, "lrwatch")

    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(fast_rules(tmp_path / "alerts.yml"))],
                "scrape_configs": [
                    {
                        "job_name": "lrwatch",
                        "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}],
                    }
                ],
            }
        )
    )
    prometheus_log = tmp_path / "prometheus.log"
    with prometheus_log.open("w") as out:
        processes.append(
            subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    wait_until_up(f"{prometheus}/-/ready", processes[-1], prometheus_log, "prometheus")

    jobs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lrwatch.demo.train",
                str(root / name),
                "--no-lrwatch",
                "--step-time",
                "0.02",
                *extra,
            ],
            cwd=REPO,
        )
        for name, extra in ((DIVERGING, []), (HEALTHY, ["--peak-lr", "0.3"]))
    }
    processes.extend(jobs.values())

    firing: list[dict[str, Any]] = []
    deadline = time.monotonic() + FIRING_TIMEOUT
    while not firing:
        assert time.monotonic() < deadline, (
            f"no firing LRWatchRunDiverging for run {DIVERGING!r} in {FIRING_TIMEOUT:.0f} s; "
            f"alerts: {diverging_alerts(prometheus)}\n"
            f"lrwatch_finding_active: {query(prometheus, 'lrwatch_finding_active')}\n"
            f"daemon log:\n{daemon_log.read_text()[-3000:]}"
        )
        time.sleep(1)
        firing = [
            a
            for a in diverging_alerts(prometheus)
            if a["labels"].get("run") == DIVERGING and a["state"] == "firing"
        ]

    (alert,) = firing
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["job"] == "lrwatch"
    assert alert["labels"]["instance"] == f"127.0.0.1:{daemon_port}"
    assert alert["annotations"]["summary"] == f"Run {DIVERGING} is diverging"

    # The healthy run, finished and scraped to the end, never raised one.
    for job in jobs.values():
        assert job.wait(timeout=120) == 0
    time.sleep(3)  # a few scrapes and evaluations after the last lines
    last_line = (root / HEALTHY / "metrics.jsonl").read_text().splitlines()[-1]
    last_step = float(json.loads(last_line)["step"])
    assert query(prometheus, f'lrwatch_run_last_step{{run="{HEALTHY}"}}') == [last_step]
    assert not [a for a in diverging_alerts(prometheus) if a["labels"].get("run") == HEALTHY]


def query(prometheus: str, promql: str) -> list[float]:
    answer = get_json(f"{prometheus}/api/v1/query?query={urllib.parse.quote(promql)}")
    return [float(r["value"][1]) for r in answer["data"]["result"]]
