"""The layout's promises, checked on the source: the folders are the flow (docs/architecture.md).

Imports are read from the syntax tree, TYPE_CHECKING blocks and function-level imports included,
so a cycle hidden from the interpreter is still a cycle here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lrwatch"
PLUGINS = PACKAGE.parent / "plugins"
MAX_MODULE_LINES = 450
MAX_MODULE_DOCSTRING_LINES = 20

# Old paths third-party plugins import, kept one release (lrwatch/_moved.py).
MOVED = {
    "lrwatch.types": "lrwatch.protocol.types",
    "lrwatch.controller": "lrwatch.analysis.controller",
    "lrwatch.policies": "lrwatch.analysis.policies",
    "lrwatch.notify": "lrwatch.sinks.notify",
    "lrwatch.registry": "lrwatch.plugins",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The lrwatch modules ``name`` imports, resolved to modules (not packages) where possible."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.startswith("lrwatch")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lrwatch"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in modules else node.module)
    return {target for target in out if target in modules and target != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# What each stage may import (docs/architecture.md, "may import"): the flow goes one way.
# "lrwatch" is the package itself (its __version__); config (with roles) and plugins are read by
# every stage.
LAYERS = {
    "protocol": set(),
    "sources": {"protocol", "plugins"},
    "detectors": {"protocol", "plugins"},
    "analysis": {"protocol", "detectors", "plugins", "config", "roles"},
    "sinks": {"protocol", "analysis", "sources", "plugins", "lrwatch"},
    "offline": {"protocol", "sources", "detectors", "analysis", "plugins", "config"},
    "daemon": {
        "protocol",
        "sources",
        "detectors",
        "analysis",
        "sinks",
        "plugins",
        "config",
        "logs",
    },
    "hook": {"protocol"},
    "integrations": {"protocol", "hook", "lrwatch"},
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lrwatch"


def test_each_stage_imports_only_what_comes_before_it() -> None:
    crossings = {
        (name, target)
        for name, targets in _graph().items()
        for target in targets
        if _package(name) in LAYERS
        and _package(target) != _package(name)
        and _package(target) not in LAYERS[_package(name)]
    }
    assert crossings == set()


def test_the_hook_side_needs_nothing_of_the_daemon() -> None:
    """The training job imports hook/, integrations/ and protocol/: standard library and torch,
    none of the daemon's dependencies (pydantic, prometheus, watchdog)."""
    graph = _graph()
    allowed = ("lrwatch.hook", "lrwatch.integrations", "lrwatch.protocol")
    seen, todo = set(), ["lrwatch.hook", "lrwatch.integrations.lightning"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph[name]
    assert {name for name in seen if name != "lrwatch" and not name.startswith(allowed)} == set()


def test_every_module_is_small() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_module_docstrings_say_what_and_why_briefly() -> None:
    long = {}
    for name, path in _modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if len(doc.splitlines()) > MAX_MODULE_DOCSTRING_LINES:
            long[name] = len(doc.splitlines())
    assert long == {}


def test_old_import_paths_keep_working_for_one_release() -> None:
    """What a plugin written against 0.1 imports still resolves, to the very same objects, with a
    DeprecationWarning naming the new path (in a fresh interpreter: it warns on first import)."""
    lines = [
        "import importlib, warnings",
        "warnings.simplefilter('always')",
        "for old, new in MOVED.items():",
        "    with warnings.catch_warnings(record=True) as caught:",
        "        module = importlib.import_module(old)",
        "    assert module is importlib.import_module(new), old",
        "    assert any(new in str(w.message) and w.category is DeprecationWarning"
        " for w in caught), old",
        "from lrwatch.types import Finding, Severity",
        "from lrwatch.protocol.types import Finding as F",
        "assert Finding is F",
        "from lrwatch.controller import ControlState",
        "from lrwatch.policies import Proposal",
        "from lrwatch.notify import Notice",
        "from lrwatch.registry import load",
        "print('ok')",
    ]
    code = f"MOVED = {MOVED!r}\n" + "\n".join(lines)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _plugin_imports() -> list[tuple[Path, str, str]]:
    found = []
    for path in sorted(PLUGINS.glob("*/src/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lrwatch."):
                found += [(path, node.module or "", alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path,module,name", _plugin_imports())
def test_plugins_import_only_the_declared_plugin_api(path: Path, module: str, name: str) -> None:
    """A plugin may import what a module lists in ``__all__`` (docs/plugins.md), nothing else:
    what is not listed can change in any release."""
    source = _modules()[module]
    declared = None
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            declared = ast.literal_eval(node.value)
    assert declared is not None, f"{module} declares no __all__ but {path.name} imports it"
    assert name in declared, f"{path.name} imports {module}.{name}, not in its __all__"
