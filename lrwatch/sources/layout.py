"""Which files under the watched root are logs, and which run each belongs to.

One predicate, ``log_format``, decides what is a log, for the full ``scan`` and for the watcher
(``watch.py``) alike, so the two can never disagree. Excluded are lrwatch's own files: the
control channel (``<run>/.lrwatch/``) and lrwatch's output (an ``lrwatch/`` directory), which
would otherwise be read back as metrics; and hidden names, the temp files that atomic writers
rename into place (the rename is seen as a move to the final name).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePath

from lrwatch.protocol.channel import CHANNEL_DIRNAME
from lrwatch.sources.base import LogReader, Source
from lrwatch.sources.boundary import escape_name
from lrwatch.sources.formats import Formats, installed_formats

OUTPUT_DIRNAME = "lrwatch"  # lrwatch's own output inside a run directory (sinks/tensorboard.py)
SKIPPED_DIRS = frozenset({CHANNEL_DIRNAME, OUTPUT_DIRNAME})
"""Directory names never descended into: lrwatch's own files, not the job's logs."""


def log_format(
    path: Path | str, *, root: Path | str | None = None, formats: Formats | None = None
) -> str | None:
    """The name of the source (log format) that reads ``path``: "jsonl", "csv", "tensorboard"
    or a plugin's; None if it is no log.

    Only the directories *below* ``root`` are checked for the excluded names when ``root`` is
    given, so a watched root that itself lies under some ``lrwatch/`` directory still works.
    """
    found = _log_source(path, root, formats or installed_formats())
    return None if found is None else found[0]


def _log_source(
    path: Path | str, root: Path | str | None, formats: Formats
) -> tuple[str, Source] | None:
    pure = PurePath(path)
    if pure.name.startswith("."):
        return None
    claimed = formats.claim(pure)
    if claimed is None:
        return None
    parents = pure.parent
    if root is not None:
        with contextlib.suppress(ValueError):  # not below root: check every directory
            parents = parents.relative_to(root)
    return None if SKIPPED_DIRS.intersection(parents.parts) else claimed


def run_dir(path: Path | str, formats: Formats | None = None) -> Path:
    """The directory that is the run of the log at ``path``, as its source says (most formats:
    the file's own directory; an MLflow metric file: the run's, two or more levels up)."""
    full = PurePath(os.path.abspath(path))
    claimed = (formats or installed_formats()).claim(full)
    return Path(claimed[1].run_dir(full) if claimed else full.parent)


def run_name(root: Path | str, path: Path | str, formats: Formats | None = None) -> str:
    """The run a log belongs to: its directory relative to ``root``, ``/``-separated, and "."
    for a log at the root itself (the name the daemon reports and ``set-lr RUN`` takes).

    Except that the nearest directory from the log's own up to ``root`` (both included) holding
    a ``.lrwatch/`` channel is the run: the hook creates ``<run_dir>/.lrwatch/``, so logs that a
    job writes into subdirectories of its run_dir (``tb/``, ``version_0/``) belong to it and can
    be acted on. Raises ValueError if ``path`` is not below ``root``.

    A directory name that is not UTF-8 comes out escaped (``boundary.escape_name``), so that
    the name is the same printable string in SQLite, on /metrics and in ``lrwatch status``.
    """
    base = Path(os.path.abspath(root))
    folder = run_dir(path, formats)
    relative = folder.relative_to(base)  # ValueError if outside: not ours to name
    for candidate in [folder, *folder.parents][: len(relative.parts) + 1]:
        if (candidate / CHANNEL_DIRNAME).is_dir():
            return escape_name(candidate.relative_to(base).as_posix())
    return escape_name(relative.as_posix())


def open_reader(
    root: Path | str,
    path: Path | str,
    *,
    run: str | None = None,
    formats: Formats | None = None,
) -> LogReader:
    """The reader for one log; ValueError if ``path`` is not a log under ``root``.

    ``run`` overrides the name ``run_name`` would give: a restarted daemon keeps the run a file
    was read into, even if a ``.lrwatch/`` channel appeared above it since (which changes the
    name ``run_name`` gives) — else the rest of the file would feed another run's detectors.
    """
    formats = formats or installed_formats()
    claimed = _log_source(path, root, formats)
    if claimed is None:
        raise ValueError(f"not a recognised log file: {path}")
    name = run_name(root, path, formats) if run is None else run
    return claimed[1].open(Path(path), name)


def inside_root(real_root: str, path: str) -> bool:
    """Whether ``path`` resolves to somewhere under ``real_root`` (itself already resolved).
    Guards against a symlink planted in a run directory that points at another user's files."""
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def scan(root: Path | str, formats: Formats | None = None) -> list[Path]:
    """Every log below ``root``, sorted. Symlinked directories are not descended into (no
    loops, no escaping the root); a symlinked file counts only if it resolves inside the root.
    Unreadable directories are skipped; a missing root holds no logs."""
    base = Path(root)
    real_root = os.path.realpath(base)
    claim = (formats or installed_formats()).claim
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        for name in filenames:
            full = os.path.join(folder, name)
            # (the excluded directories were pruned above: only the name and the sources ask)
            if name.startswith(".") or claim(PurePath(full)) is None:
                continue
            if os.path.islink(full) and not inside_root(real_root, full):
                continue
            found.append(Path(full))
    found.sort()
    return found
