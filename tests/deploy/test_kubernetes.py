"""deploy/kubernetes: the built-in kinds pass `kubernetes-validate --strict` for Kubernetes 1.32,
the ServiceMonitor (a CRD kubernetes-validate has no schema for) passes a schema written here for
the fields it uses, and the pieces are wired to each other and to lrwatch's real CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from lrwatch.cli import app
from lrwatch.config import DEFAULT_METRICS_PORT, load_config
from tests.deploy.assets import DEPLOY, TOOL_TIMEOUT, tool

K8S = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.32.0"
BUILT_IN = ["sidecar.yaml", "daemonset.yaml", "service.yaml"]
SERVICE_MONITOR = K8S / "servicemonitor.yaml"

_DURATION = {"type": "string", "pattern": r"^(0|(\d+(ms|s|m|h))+)$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
# The subset of monitoring.coreos.com/v1 ServiceMonitor (prometheus-operator's CRD) that we use,
# strict like kubernetes-validate --strict: an unknown or misspelt field is an error.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": _LABELS,
                "annotations": _LABELS,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}},
                },
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def one(name: str, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in load(name) if d["kind"] == kind]
    found: dict[str, Any] = doc
    return found


def pod_spec(name: str, kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(name, kind)["spec"]["template"]["spec"]
    return spec


def lrwatch_container(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [
        c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "lrwatch"
    ]
    found: dict[str, Any] = container
    return found


def option(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


@pytest.mark.parametrize("name", BUILT_IN)
def test_kubernetes_validate_strict(name: str) -> None:
    exe = tool("kubernetes-validate", "pip install kubernetes-validate")
    result = subprocess.run(
        [exe, "-k", KUBERNETES_VERSION, "--strict", str(K8S / name)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARN" not in output and "ERROR" not in output, output
    assert output.count(" passed for resource ") == len(load(name)), output


def test_kubernetes_validate_has_no_schema_for_the_service_monitor() -> None:
    """Why the ServiceMonitor gets its own schema below: the CLI only warns, with exit 0."""
    exe = tool("kubernetes-validate", "pip install kubernetes-validate")
    result = subprocess.run(
        [exe, "-k", KUBERNETES_VERSION, "--strict", str(SERVICE_MONITOR)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
    )
    assert "Couldn't find schema for kind ServiceMonitor" in result.stdout + result.stderr


def test_service_monitor_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="comes with kubernetes-validate")
    (monitor,) = load("servicemonitor.yaml")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    for endpoint in monitor["spec"]["endpoints"]:
        assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])
    with pytest.raises(jsonschema.ValidationError):
        typo = {**monitor, "spec": {**monitor["spec"], "endpoint": monitor["spec"]["endpoints"]}}
        jsonschema.validate(typo, SERVICE_MONITOR_SCHEMA)


def test_service_monitor_service_and_pods_are_wired_together() -> None:
    (monitor,) = load("servicemonitor.yaml")
    (service,) = load("service.yaml")
    # The Service's name is Prometheus' `job` label, which the daemon alerts select.
    assert service["metadata"]["name"] == "lrwatch"
    assert 'up{job="lrwatch"}' in (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert service["spec"]["clusterIP"] == "None"  # every daemon scraped, none load-balanced
    for name, kind in (("sidecar.yaml", "Job"), ("daemonset.yaml", "DaemonSet")):
        labels = one(name, kind)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        ports = lrwatch_container(pod_spec(name, kind))["ports"]
        for port in service["spec"]["ports"]:
            (target,) = [p for p in ports if p["name"] == port["targetPort"]]
            assert target["containerPort"] == port["port"] == DEFAULT_METRICS_PORT


@pytest.mark.parametrize("name,kind", [("sidecar.yaml", "Job"), ("daemonset.yaml", "DaemonSet")])
def test_lrwatch_container_is_locked_down_and_probed(name: str, kind: str) -> None:
    spec = pod_spec(name, kind)
    container = lrwatch_container(spec)
    security = {**spec.get("securityContext", {}), **container["securityContext"]}
    assert security["runAsNonRoot"] is True and security.get("runAsUser", 1) != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    args = container["args"]
    assert args[0] == "run"
    assert option(args, "--metrics-host") == "0.0.0.0"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert option(args, "--logdir") in mounts


def test_sidecar_shares_the_log_volume_and_lets_the_job_finish() -> None:
    job = one("sidecar.yaml", "Job")
    spec = job["spec"]["template"]["spec"]
    daemon = lrwatch_container(spec)
    assert daemon["restartPolicy"] == "Always"  # native sidecar: stopped when training ends
    assert spec["restartPolicy"] == "Never"
    logdir = option(daemon["args"], "--logdir") or "--logdir missing"
    volume = next(m["name"] for m in daemon["volumeMounts"] if m["mountPath"] == logdir)
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == volume)
    (train,) = spec["containers"]
    assert any(m["name"] == volume for m in train["volumeMounts"])
    assert any(arg.startswith(logdir + "/") for arg in train["command"]), "job logs under /logs"


def test_daemonset_uses_a_host_log_root_and_a_valid_config(tmp_path: Path) -> None:
    spec = pod_spec("daemonset.yaml", "DaemonSet")
    daemon = lrwatch_container(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    logs = volumes[mounts[option(daemon["args"], "--logdir") or ""]]
    assert logs["hostPath"]["path"] == "/var/lib/lrwatch/runs"
    config_map = one("daemonset.yaml", "ConfigMap")
    path = tmp_path / "lrwatch.yaml"
    path.write_text(config_map["data"]["lrwatch.yaml"])
    config = load_config(path)
    state_dir = str(config.state.parent) if config.state else ""
    assert state_dir in mounts and "hostPath" in volumes[mounts[state_dir]]
    assert option(daemon["args"], "--config") == f"/etc/lrwatch/{path.name}"


def test_container_args_are_options_lrwatch_run_accepts() -> None:
    command = typer.main.get_command(app)
    run = command.commands["run"]  # type: ignore[attr-defined]
    known = {opt for param in run.params for opt in param.opts}
    for name, kind in (("sidecar.yaml", "Job"), ("daemonset.yaml", "DaemonSet")):
        flags = {a for a in lrwatch_container(pod_spec(name, kind))["args"] if a.startswith("-")}
        assert flags <= known, f"{name}: lrwatch run has no {flags - known}"
