"""The training-side hook: ``attach(optimizer, run_dir)`` -> ``Hook``.

Imports only the standard library, torch, and lrwatch's stdlib-only ``types`` and ``channel``,
so a training job needs none of the daemon's dependencies.
"""

from lrwatch.hook.endpoint import Hook, attach

__all__ = ["Hook", "attach"]
