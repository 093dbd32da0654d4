"""Installed distributions made on the spot: a ``*.dist-info`` with entry points and a module,
on a directory that goes on ``sys.path`` (and on PYTHONPATH for a daemon subprocess). This is
what pip leaves behind, so lrwatch finds these plugins through ``importlib.metadata`` exactly as
it finds a real one; the registry's caches are cleared so each test sees its own set."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from lrwatch import plugins


def install(
    site: Path,
    name: str,
    entry_points: Mapping[str, Mapping[str, str]],
    modules: Mapping[str, str],
    version: str = "1.0",
) -> None:
    """Write distribution ``name`` into ``site``: ``entry_points`` {group: {ep name: value}},
    ``modules`` {module name: source}."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{ep} = {value}\n" for ep, value in eps.items())
            for group, eps in entry_points.items()
        )
    )
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


def clear_caches() -> None:
    from lrwatch.sources.formats import installed_formats

    plugins.forget()
    installed_formats.cache_clear()
    importlib.invalidate_caches()


@contextmanager
def on_path(site: Path) -> Iterator[None]:
    """``site`` importable and its distributions visible, in this process, for the block."""
    sys.path.insert(0, str(site))
    clear_caches()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for module in [m for m, mod in sys.modules.items() if _from(mod, site)]:
            del sys.modules[module]
        clear_caches()


def _from(module: object, site: Path) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and str(file).startswith(str(site))
