"""deploy/systemd: `systemd-analyze verify` accepts the unit without a word (it only warns, with
exit status 0, about unknown keys and bad values, so any output at all is a failure), the
sandbox scores as well as it does today, and the example config is one lrwatch accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lrwatch.config import load_config
from tests.deploy.assets import DEPLOY, TOOL_TIMEOUT, tool

SYSTEMD = DEPLOY / "systemd"
UNIT = SYSTEMD / "lrwatch.service"
INSTALLED_BINARY = "/usr/local/bin/lrwatch"
MAX_EXPOSURE = 2.0  # `systemd-analyze security`: 1.2 when written; 0 is best, 10 worst


def directives(text: str) -> dict[str, list[str]]:
    """Key -> values (systemd allows a key several times), comments and sections dropped."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's lrwatch: verify needs an executable."""
    script = Path(sys.executable).parent / "lrwatch"
    command = str(script) if script.exists() else f"{sys.executable} -m lrwatch"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_BINARY} " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={command} "))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    exe = tool("systemd-analyze", "Debian package systemd")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd="/"
    )


def test_unit_verifies_without_any_output(tmp_path: Path) -> None:
    result = analyze("verify", "--man=no", str(runnable_copy(tmp_path)))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_does_report_a_bad_unit(tmp_path: Path) -> None:
    """The check above is only worth something if verify speaks up about mistakes."""
    unit = runnable_copy(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    result = analyze("verify", "--man=no", str(unit))
    assert "ProtectSystm" in result.stdout + result.stderr


def test_sandbox_exposure_score(tmp_path: Path) -> None:
    result = analyze("security", "--offline=yes", "--no-pager", str(runnable_copy(tmp_path)))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_contents() -> None:
    unit = directives(UNIT.read_text())
    assert unit["ExecStart"] == [
        f"{INSTALLED_BINARY} run --logdir /var/lib/lrwatch/runs --config /etc/lrwatch/lrwatch.yaml"
    ]
    expected = {
        "User": "lrwatch",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "10",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "ReadWritePaths": "/var/lib/lrwatch/runs",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert "@system-service" in unit["SystemCallFilter"]


def test_example_config_is_valid_and_keeps_state_in_the_state_directory() -> None:
    config = load_config(SYSTEMD / "lrwatch.yaml")
    state_dir = directives(UNIT.read_text())["StateDirectory"][0]
    assert config.state == Path("/var/lib") / state_dir / "lrwatch.sqlite"
    assert config.metrics_port == 9708


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-sysusers/tmpfiles --root need root")
def test_sysusers_and_tmpfiles_create_the_user_and_the_shared_log_root(tmp_path: Path) -> None:
    sysusers = tool("systemd-sysusers", "Debian package systemd")
    tmpfiles = tool("systemd-tmpfiles", "Debian package systemd")
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc" / name).touch()
    for exe, conf in ((sysusers, "lrwatch.sysusers"), (tmpfiles, "lrwatch.tmpfiles")):
        args = [exe, f"--root={tmp_path}"] + (["--create"] if exe == tmpfiles else [])
        result = subprocess.run(
            [*args, str(SYSTEMD / conf)], capture_output=True, text=True, timeout=TOOL_TIMEOUT
        )
        assert result.returncode == 0, result.stderr
    assert "lrwatch:" in (tmp_path / "etc" / "passwd").read_text()
    runs = tmp_path / "var" / "lib" / "lrwatch" / "runs"
    assert runs.stat().st_mode & 0o7777 == 0o2775
