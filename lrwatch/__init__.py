"""lrwatch: watch live training runs from their logs and adjust the learning rate of the job.

Two very different programs import this package: the daemon (pydantic, prometheus, watchdog, no
torch) and the training job (torch, none of the daemon's dependencies). So importing
``lrwatch`` itself imports neither side: ``attach`` and ``Hook`` are resolved on first use
(PEP 562 module ``__getattr__``), and only then is torch imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["Hook", "__version__", "attach"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from lrwatch.hook import Hook, attach

_LAZY = frozenset({"attach", "Hook"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lrwatch import hook

        return getattr(hook, name)
    raise AttributeError(f"module 'lrwatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
