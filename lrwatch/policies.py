"""Moved to ``lrwatch.analysis.policies``: this path works until lrwatch 0.3."""

from typing import TYPE_CHECKING

from lrwatch._moved import alias

if TYPE_CHECKING:
    from lrwatch.analysis.policies import *  # noqa: F403

alias(__name__, "lrwatch.analysis.policies")
