"""Moved to ``lrwatch.analysis.controller``: this path works until lrwatch 0.3."""

from typing import TYPE_CHECKING

from lrwatch._moved import alias

if TYPE_CHECKING:
    from lrwatch.analysis.controller import *  # noqa: F403

alias(__name__, "lrwatch.analysis.controller")
