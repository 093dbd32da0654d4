"""Old import paths kept for one release after the layout change (docs/architecture.md).

Each old module is a file of two lines that makes its name an alias of the new module, so
``lrwatch.types.Finding is lrwatch.protocol.types.Finding`` and private names keep working too.
"""

from __future__ import annotations

import importlib
import sys
import warnings

REMOVED_IN = "0.3"


def alias(old: str, new: str) -> None:
    """Make ``old`` the module ``new`` (called from ``old`` while it is being imported)."""
    warnings.warn(
        f"{old} moved to {new}; the old path goes in lrwatch {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=3,
    )
    sys.modules[old] = importlib.import_module(new)
