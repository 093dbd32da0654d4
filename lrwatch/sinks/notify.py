"""Notifiers: findings and actions pushed out to people and systems (chat, paging, webhooks).

A notifier is a plugin of the ``lrwatch.notifiers`` group, configured under ``notifiers``, one
entry per instance (two Slack channels are two instances of one plugin)::

    notifiers:
      oncall:                      # the instance's name, in logs and metrics
        plugin: webhook            # the registered name (default: the instance's name)
        min_severity: warning      # lrwatch's own options: which notices it gets ...
        events: [finding, action]
        url: https://hooks.example/T000/B000   # ... the rest is the plugin's own config
        format: slack

The daemon's loop never waits for a notifier: each instance has a thread and a bounded queue.
``notify`` may block (an HTTP POST with retries) and raises when it gives up; a full queue drops
the notice. Both are counted in ``lrwatch_notifications_total{notifier,outcome}`` and logged
once per instance, so a dead endpoint costs a counter, never the daemon.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from lrwatch import plugins
from lrwatch.plugins import Group, PluginProblem
from lrwatch.protocol.types import Severity

__all__ = ["Notice", "Notifier", "NotifierPlugin"]  # the plugin API (docs/plugins.md)

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
CLOSE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing worth telling: a finding, or an action sent to a job.

    ``kind`` is the finding's kind, or for an action the reason label it counts under in
    ``lrwatch_adjustments_total`` (the kind of the finding that caused it). ``detail`` is the
    finding's evidence, or for an action ``{"action": {...}, "seq": n}``. ``to_json`` is the
    generic JSON body a webhook posts.
    """

    event: Literal["finding", "action"]
    run: str
    step: int
    kind: str
    severity: Severity
    reason: str
    time: float
    metric: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "run": self.run,
            "metric": self.metric,
            "step": self.step,
            "kind": self.kind,
            "severity": self.severity.value,
            "reason": self.reason,
            "time": self.time,
            "detail": dict(self.detail),
        }


@runtime_checkable
class Notifier(Protocol):
    def notify(self, notice: Notice) -> None:
        """Deliver one notice; may block (a worker thread calls it); raise if it gave up."""
        ...

    def close(self) -> None:
        """Release what it holds (sessions, sockets); called once, at the daemon's stop."""
        ...


@runtime_checkable
class NotifierPlugin(Protocol):
    """What an entry point of ``lrwatch.notifiers`` names: usually the notifier class, built as
    ``plugin(config)`` with the instance's own options validated by ``config_model``."""

    config_model: ClassVar[type[BaseModel]]

    def __call__(self, config: Any) -> Notifier: ...


NOTIFIERS: Group[NotifierPlugin, Notifier] = Group("notifiers")


class NotifierSettings(BaseModel):
    """One ``notifiers.NAME`` entry: lrwatch's options; any other key is the plugin's."""

    model_config = ConfigDict(extra="allow", frozen=True)

    plugin: str | None = Field(default=None, description="registered name; default: NAME")
    min_severity: Severity = Field(
        default=Severity.WARNING, description="findings below this are not sent"
    )
    events: tuple[Literal["finding", "action"], ...] = ("finding", "action")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def wants(self, notice: Notice) -> bool:
        if notice.event not in self.events:
            return False
        return notice.event == "action" or notice.severity.rank >= self.min_severity.rank


class Outlet:
    """One notifier instance behind its queue and thread."""

    def __init__(
        self,
        name: str,
        settings: NotifierSettings,
        notifier: Notifier,
        count: Any,  # Callable[[str, str], None]: (instance, outcome) -> counter increment
    ) -> None:
        self.name, self.settings, self.notifier, self._count = name, settings, notifier, count
        self.queue: queue.Queue[Notice | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._failed_once = False
        self._closing = threading.Event()
        self.thread = threading.Thread(target=self._work, name=f"notify-{name}", daemon=True)
        self.thread.start()

    def offer(self, notice: Notice) -> None:
        if not self.settings.wants(notice):
            return
        try:
            self.queue.put_nowait(notice)
        except queue.Full:
            self._count(self.name, "dropped")

    def close(self, wait: float = 0.0, *, drain: bool = False) -> None:
        """Stop taking notices. The thread delivers the one in hand and, with ``drain`` (a
        shutdown), the ones queued; else (a config reload) counts those dropped. It then closes
        the notifier itself — never while a ``notify`` runs — and ends. Waits at most ``wait``
        seconds for that: the daemon's loop never waits on a slow endpoint."""
        if not drain:
            self._closing.set()
        try:
            self.queue.put_nowait(None)  # the end mark, behind what is queued
        except queue.Full:
            self._closing.set()  # no room for it: stop after the notice in hand
        self.thread.join(wait)

    def _work(self) -> None:
        try:
            while not self._closing.is_set():
                notice = self.queue.get()
                if notice is None:
                    break
                self._deliver(notice)
            while True:  # closing: what is still queued will not be sent
                try:
                    if self.queue.get_nowait() is not None:
                        self._count(self.name, "dropped")
                except queue.Empty:
                    break
        finally:
            try:
                self.notifier.close()
            except Exception:
                log.exception("notifier %s: close() failed", self.name)

    def _deliver(self, notice: Notice) -> None:
        try:
            self.notifier.notify(notice)
        except Exception as exc:
            self._count(self.name, "failed")
            level = logging.DEBUG if self._failed_once else logging.ERROR
            self._failed_once = True
            log.log(
                level,
                "notifier %s: could not deliver a %s notice of %s (%s: %s); later failures "
                "are only counted in lrwatch_notifications_total",
                self.name,
                notice.event,
                notice.run,
                type(exc).__name__,
                exc,
            )
        else:
            self._count(self.name, "sent")


def build_outlets(
    configs: Mapping[str, NotifierSettings], count: Any
) -> tuple[list[Outlet], list[PluginProblem]]:
    """An outlet per configured instance that loads, validates and builds; the others are
    problems (the daemon logs and counts them and goes on without)."""
    outlets: list[Outlet] = []
    problems: list[PluginProblem] = []
    for name, settings in configs.items():
        plugin_name = settings.plugin or name
        try:
            notifier = plugins.build(NOTIFIERS, plugin_name, settings.options())
        except plugins.PluginError as exc:
            problems.append(exc.problem)
            continue
        outlets.append(Outlet(name, settings, notifier, count))
    return outlets, problems
