"""Telling the user about a failure inside the training loop without raising into it."""

from __future__ import annotations

import logging
import warnings

log = logging.getLogger(__name__)


class WarnOnce:
    """Warns about the first failure of each kind (where it happened, exception type) only.

    A failure inside ``hook.step()`` tends to repeat at every check (a deleted or read-only run
    directory); one warning says it, a thousand would bury the job's own output. Kept per hook,
    not per process, so every test and every hook starts with a clean slate.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, type[BaseException]]] = set()

    def __call__(self, where: str, exc: BaseException) -> None:
        key = (where, type(exc))
        if key in self._seen:
            return
        self._seen.add(key)
        message = (
            f"lrwatch hook: {where} failed: {exc!r}. Training continues; further "
            f"{type(exc).__name__} errors while {where} will not be reported."
        )
        try:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        except Exception:  # `python -W error` turns the warning into an exception
            log.warning(message)
