"""The tuning and frozen test halves of the three held-apart corpora: real published logs
(``../shared/reallogs``), the synthetic generator (synthetic.py), and the unseen corpus of real
PyTorch runs of model families the development corpus never had (unseen.py, ``unseen/``).

A detector is tuned on the ``tune`` half only; the ``test`` half is scored beside it and never
looked at while tuning. The test half's run list and a hash of its content were committed in
``frozen_test.json`` before any tuning; ``--check`` fails if either changed since, so a figure
reported on the test half is one the detectors could not have been fitted to.

    python -m benchmarks.detection.splits --check     # exit 1 if the frozen half moved
    python -m benchmarks.detection.splits --freeze    # once, before tuning: writes the file

The real logs are split by hand label (the first, when a log has several), the unseen runs by
their label; each label's runs are ordered by the sha256 of their name and dealt alternately to
tune and test, so both halves hold every label and no one chose which run went where.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from benchmarks.detection import synthetic

HERE = Path(__file__).resolve().parent
FROZEN = HERE / "frozen_test.json"
UNSEEN = HERE / "unseen"


def _reallogs() -> Path:
    """``../shared/reallogs`` beside the checkout, or beside the main checkout when this is a
    git worktree (elsewhere on disk)."""
    beside = HERE.parents[2] / "shared" / "reallogs"
    if beside.is_dir():
        return beside
    common = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Path(common).parents[1] / "shared" / "reallogs" if common else beside


REALLOGS = _reallogs()


def primary_label(folder: Path) -> str:
    label = json.loads((folder / "label.json").read_text())["label"]
    return str(label[0] if isinstance(label, list) else label)


def reallog_split(root: Path = REALLOGS) -> dict[str, list[str]]:
    """``{"tune": [...], "test": [...]}``: folder names of the real logs."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for folder in sorted(p for p in root.iterdir() if (p / "label.json").is_file()):
        by_label[primary_label(folder)].append(folder.name)
    return _deal(by_label)


def unseen_split(root: Path = UNSEEN) -> dict[str, list[str]]:
    """``{"tune": [...], "test": [...]}``: the unseen runs as ``<label>/<name>`` (the names
    ``lrwatch replay`` gives them)."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for folder in sorted(p.parent for p in root.glob("*/*/labels.json")):
        by_label[folder.parent.name].append(f"{folder.parent.name}/{folder.name}")
    return _deal(by_label)


def _deal(by_label: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each label's names ordered by their sha256, dealt alternately to tune and test."""
    split: dict[str, list[str]] = {"tune": [], "test": []}
    for label in sorted(by_label):
        ordered = sorted(by_label[label], key=lambda n: hashlib.sha256(n.encode()).hexdigest())
        for i, name in enumerate(ordered):
            split["tune" if i % 2 == 0 else "test"].append(name)
    return {half: sorted(names) for half, names in split.items()}


def folder_digest(folder: Path) -> str:
    """sha256 over every file of a real log's folder (names and bytes), in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def current(root: Path = REALLOGS, unseen: Path = UNSEEN) -> dict[str, object]:
    """What ``frozen_test.json`` holds, computed afresh."""
    test = reallog_split(root)["test"]
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_hash = synthetic.write("test", Path(tmp))
    return {
        "reallogs_test": {name: folder_digest(root / name) for name in test},
        "synthetic_test": {"runs": synthetic.names("test"), "sha256": synthetic_hash},
        "unseen_test": unseen_digests(unseen),
    }


def unseen_digests(unseen: Path = UNSEEN) -> dict[str, str]:
    """The unseen corpus's test half: ``{<label>/<name>: folder_digest}``."""
    return {name: folder_digest(unseen / name) for name in unseen_split(unseen)["test"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--freeze", action="store_true")
    parser.add_argument("--reallogs", type=Path, default=REALLOGS)
    parser.add_argument("--unseen", type=Path, default=UNSEEN)
    args = parser.parse_args(argv)
    now = current(args.reallogs, args.unseen)
    if args.freeze:
        if FROZEN.exists():
            print(f"{FROZEN} exists: the test half is frozen; delete it only to re-split")
            return 1
        FROZEN.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {FROZEN}")
        return 0
    frozen = json.loads(FROZEN.read_text())
    if frozen != now:
        print("the frozen test half changed since it was committed", file=sys.stderr)
        return 1
    print("frozen test half unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
