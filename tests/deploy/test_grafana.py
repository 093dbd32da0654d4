"""deploy/grafana/lrwatch.json: a valid dashboard whose every query is PromQL that Prometheus
parses and that reads only metrics lrwatch exports."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.assets import DEPLOY, TOOL_TIMEOUT, tool
from tests.deploy.promql import TARGET_LABELS, exported, metric_names, selector_labels

DASHBOARD = DEPLOY / "grafana" / "lrwatch.json"
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Grafana's variables, replaced by something PromQL accepts so that promtool can parse the query.
_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and query variable."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
            assert match, f"variable {var['name']}: {var['definition']}"
            yield f"variable {var['name']!r}", match.group(1)


def as_promql(expr: str) -> str:
    for name, value in _VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)  # $run, ${instance}: only used in regex matchers


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] == "lrwatch"
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["run"]["definition"].startswith("label_values(lrwatch_run_last_step")
    assert variables["run"]["definition"].endswith(", run)")
    assert variables["run"]["multi"] and variables["run"]["includeAll"]


def test_every_panel_uses_the_datasource_variable_and_fits_the_grid() -> None:
    board = dashboard()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS, panel["title"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == DS


def test_expected_panels_and_queries() -> None:
    board = dashboard()
    exprs = {
        title: [t["expr"] for t in p["targets"]]
        for p in panels(board)
        if (title := p["title"]) and "targets" in p
    }
    assert "Runs by state" in exprs and "lrwatch_runs" in exprs["Runs by state"][0]
    runs_table = " ".join(exprs["Runs"])
    assert "lrwatch_run_last_step" in runs_table and "lrwatch_lr_scale" in runs_table
    assert "lrwatch_metric_value" in exprs["Loss and role metrics"][0]
    assert "lrwatch_effective_lr" in exprs["Effective LR"][0]
    assert "lrwatch_lr_scale" in exprs["LR factor"][0]
    assert "increase(lrwatch_adjustments_total" in exprs["Adjustments"][0]
    assert exprs["Scrape up"][0].startswith('up{job="lrwatch"')
    assert "rate(lrwatch_ingested_samples_total" in exprs["Ingest rate"][0]
    assert exprs["Ingest lag p99"][0].startswith("histogram_quantile(0.99,")
    assert "lrwatch_commands_unacked" in exprs["Unacked commands"][0]
    assert "lrwatch_hook_last_heartbeat_timestamp_seconds" in exprs["Hook heartbeat age"][0]
    annotations = {a["name"]: a for a in board["annotations"]["list"]}
    assert "changes(lrwatch_findings_total" in annotations["Findings"]["expr"]
    assert annotations["Findings"]["enable"]


def test_queries_read_only_metrics_and_labels_lrwatch_exports() -> None:
    names = exported()
    for where, expr in queries(dashboard()):
        unknown = metric_names(expr) - set(names)
        assert not unknown, f"{where} reads {unknown}, which lrwatch does not export"
        for metric, labels in selector_labels(expr):
            allowed = names.get(metric, frozenset()) | TARGET_LABELS
            assert labels <= allowed, f"{where}: {metric} has no label {labels - allowed}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule (it has no bare expression checker)."""
    exe = tool("promtool", "Debian package prometheus")
    found = list(queries(dashboard()))
    rules = [
        {"record": f"dashboard:query:{i}", "expr": as_promql(e)} for i, (_, e) in enumerate(found)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=TOOL_TIMEOUT
    )
    assert result.returncode == 0, "\n".join(
        [result.stdout, result.stderr, *(f"{i}: {w}" for i, (w, _) in enumerate(found))]
    )
