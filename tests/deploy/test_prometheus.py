"""deploy/prometheus: the rules and their unit tests pass promtool, the scrape config is valid,
every alert is complete and links to its runbook, and every metric the rules read is one that
lrwatch's exporter really exposes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.assets import DEPLOY, RUNBOOKS, TOOL_TIMEOUT, tool
from tests.deploy.promql import TARGET_LABELS, exported, metric_names, selector_labels

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULES_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RUNBOOK_PREFIX = "https://github.com/lrwatch/lrwatch/blob/main/docs/runbooks.md#"
SEVERITIES = {"critical", "warning", "info"}
# Alerts about the daemon itself have no run to name; they name the instance.
DAEMON_ALERTS = {
    "LRWatchDown",
    "LRWatchAbsent",
    "LRWatchPluginFailing",
    "LRWatchNotificationsFailing",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = tool("promtool", "Debian package prometheus")
    return subprocess.run(
        [exe, *map(str, args)], capture_output=True, text=True, timeout=TOOL_TIMEOUT
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings (lower case, punctuation dropped)."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(anchor)
    return anchors


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_rule_unit_tests() -> None:
    result = promtool("test", "rules", RULES_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config() -> None:
    result = promtool("check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "lrwatch"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9708"]
    assert config["global"]["scrape_interval"] == "15s"
    assert (CONFIG.parent / config["rule_files"][0]).resolve() == RULES.resolve()


def test_every_alert_has_a_unit_test_that_fires_and_one_that_does_not() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [case for t in tests for case in t["alert_rule_test"]]
    for alert in alerts():
        name = alert["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no silent case"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_is_complete(alert: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), "every alert needs a `for:`"
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    who = "$labels.instance" if alert["alert"] in DAEMON_ALERTS else "$labels.run"
    if alert["alert"] != "LRWatchAbsent":  # absent() has no target to name
        assert who in annotations["summary"]
    url = annotations["runbook_url"]
    assert url == RUNBOOK_PREFIX + alert["alert"].lower()


def test_every_runbook_link_lands_on_a_heading() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    urls = [a["annotations"]["runbook_url"] for a in alerts()]
    assert len(set(urls)) == len(urls), "one runbook section per alert"
    for url in urls:
        assert url.removeprefix(RUNBOOK_PREFIX) in anchors, f"{url}: no such heading"


def test_alerts_read_only_metrics_and_labels_lrwatch_exports() -> None:
    names = exported()
    for alert in alerts():
        expr = alert["expr"]
        used = metric_names(expr)
        assert used or "up{" in expr, f"{alert['alert']}: reads no metric"
        unknown = used - set(names)
        assert not unknown, f"{alert['alert']} reads {unknown}, which lrwatch does not export"
        for metric, labels in selector_labels(expr):
            allowed = names.get(metric, frozenset()) | TARGET_LABELS
            assert labels <= allowed, f"{alert['alert']}: {metric} has no label {labels - allowed}"
