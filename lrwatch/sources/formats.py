"""Which log formats a daemon or a replay reads, and in which order they are asked.

Each daemon and each replay builds its own ``Formats`` from its config's ``sources:`` section
(``build_formats``), so one's section never changes another's; a caller that names none (a test,
a tool) gets every installed source with its default options (``installed_formats``). Where the
logs lie under the watched root, and which run each belongs to, is ``layout.py``'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import PurePath
from typing import Any

from lrwatch import plugins
from lrwatch.plugins import PluginProblem
from lrwatch.sources.base import SOURCES, Source


class Formats:
    """The log formats a daemon (or a replay) reads, in the order they are asked: the source
    plugins by name, then the built-ins. Each daemon and each replay holds its own (built by
    ``build_formats`` from its config), so one's ``sources:`` section never changes another's.
    A source whose ``claims`` raises is dropped from it (said by ``take_problems``)."""

    def __init__(self, entries: list[tuple[str, Source]]) -> None:
        self.entries = tuple(entries)
        self._problems: list[PluginProblem] = []

    def claim(self, pure: PurePath) -> tuple[str, Source] | None:
        """The source that claims ``pure``, if any."""
        for entry in self.entries:
            try:
                if entry[1].claims(pure):
                    return entry
            except Exception as exc:
                # Replaced, not changed in place: the watcher's thread may be iterating it.
                self.entries = tuple(e for e in self.entries if e is not entry)
                message = f"claims({str(pure)!r}) raised {type(exc).__name__}: {exc}; dropped"
                self._problems.append(PluginProblem("sources", entry[0], "run", message))
                return self.claim(pure)
        return None

    def take_problems(self) -> list[PluginProblem]:
        """The sources dropped since the last call."""
        taken, self._problems = self._problems, []
        return taken


def build_formats(
    sections: Mapping[str, Mapping[str, Any]],
) -> tuple[Formats, list[PluginProblem]]:
    """Every installed source (plugins.py) but those whose ``sources.NAME`` section says
    ``enabled: false``, each built with the rest of its section; the ones that cannot be built
    are left out and returned."""
    problems: list[PluginProblem] = []
    installed: list[tuple[str, Source]] = []
    builtins: list[tuple[str, Source]] = []
    for info in plugins.available("sources"):
        section = dict(sections.get(info.name, {}))
        if not section.pop("enabled", True):
            continue
        try:
            source = plugins.build(SOURCES, info.name, section)
        except plugins.PluginError as exc:
            problems.append(exc.problem)
            continue
        (builtins if info.builtin else installed).append((info.name, source))
    known = {info.name for info in plugins.available("sources")}
    for name in sorted(sections.keys() - known):
        problems.append(PluginProblem("sources", name, "load", "not installed"))
    return Formats(installed + builtins), problems


@cache
def installed_formats() -> Formats:
    """Every installed source with its default options: what a caller that names no
    ``Formats`` gets (a test, a tool); the daemon and replay build their own from config."""
    return build_formats({})[0]
