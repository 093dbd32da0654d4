"""Moved to ``lrwatch.sinks.notify``: this path works until lrwatch 0.3."""

from typing import TYPE_CHECKING

from lrwatch._moved import alias

if TYPE_CHECKING:
    from lrwatch.sinks.notify import *  # noqa: F403

alias(__name__, "lrwatch.sinks.notify")
