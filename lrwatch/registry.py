"""Moved to ``lrwatch.plugins``: this path works until lrwatch 0.3."""

from typing import TYPE_CHECKING

from lrwatch._moved import alias

if TYPE_CHECKING:
    from lrwatch.plugins import *  # noqa: F403

alias(__name__, "lrwatch.plugins")
