"""deploy/Dockerfile, checked without a container engine (there is none in CI to build it): a
slim Python base, the project installed without torch, a non-root user, the daemon's port and
command, a health check; and what the image runs is what lrwatch's CLI accepts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import typer.main

from lrwatch.cli import app
from lrwatch.config import DEFAULT_METRICS_PORT
from tests.deploy.assets import DEPLOY, REPO, TOOL_TIMEOUT

DOCKERFILE = DEPLOY / "Dockerfile"
IGNORE = DEPLOY / "Dockerfile.dockerignore"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            keyword, _, args = pending.partition(" ")
            result.append((keyword.upper(), args.strip()))
            pending = ""
    return result


def final_stage() -> list[tuple[str, str]]:
    found = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(found) if keyword == "FROM")
    return found[last_from:]


def pip_commands() -> list[str]:
    """Each `pip install`/`pip wheel` command of every RUN, as its own &&-separated piece."""
    pieces = [p.strip() for k, a in instructions() if k == "RUN" for p in a.split("&&")]
    return [p for p in pieces if re.search(r"\bpip (install|wheel)\b", p)]


def test_every_stage_is_python_311_slim() -> None:
    bases = [args.split()[0] for keyword, args in instructions() if keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)


def test_installs_the_project_and_never_torch() -> None:
    commands = pip_commands()
    assert commands, "no pip install"
    assert any(re.search(r"\bpip wheel\b.* \.$", c) for c in commands), "builds this project"
    assert any(re.search(r"\bpip install\b.*\blrwatch$", c) for c in commands)
    for command in commands:
        assert "torch" not in command, command
        assert "[" not in command, f"{command}: extras would bring torch"
    # Without extras, pip installs the base dependencies: those must not need torch.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("torch")]


def test_the_daemon_imports_without_torch() -> None:
    """What the image's build step asserts, checked here in the test environment."""
    code = "import sys, lrwatch.cli, lrwatch.daemon.service; assert 'torch' not in sys.modules"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert code.split("; ")[1] in DOCKERFILE.read_text()


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignore = IGNORE.read_text().split()
    for keyword, args in instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert f"!{source.rstrip('/')}" in [p.rstrip("/") for p in ignore], source


def test_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    keywords = [keyword for keyword, _ in final_stage()]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")


def test_port_entrypoint_command_and_health_check() -> None:
    stage = dict(final_stage())
    assert stage["EXPOSE"] == str(DEFAULT_METRICS_PORT)
    assert json.loads(stage["ENTRYPOINT"]) == ["lrwatch"]
    cmd = json.loads(stage["CMD"])
    assert cmd == ["run", "--logdir", "/logs", "--metrics-host", "0.0.0.0"]
    assert f"127.0.0.1:{DEFAULT_METRICS_PORT}/healthz" in stage["HEALTHCHECK"]
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    known = {opt for param in run.params for opt in param.opts}
    assert {a for a in cmd if a.startswith("-")} <= known
