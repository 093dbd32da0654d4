"""TensorBoard event files for the speed benchmarks, written once and kept for the next runs.

Writing 200,000 events with torch's SummaryWriter takes minutes, far longer than reading them,
so each file is written by a child process (a ``-c`` script: no torch in the measuring process)
into ``data/<kind>/`` only when that folder holds no event file yet.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


def event_files(data: Path, writer: str, count: int, kinds: Iterable[str]) -> dict[str, Path]:
    """{kind: its event file}; ``writer`` is run as ``python -c writer FOLDER COUNT KIND``."""
    files = {}
    for kind in kinds:
        folder = data / kind
        found = glob.glob(str(folder / "*tfevents*"))
        if not found:
            shutil.rmtree(folder, ignore_errors=True)
            print(f"writing the {kind} TensorBoard file ...", flush=True)
            argv = [sys.executable, "-c", writer, str(folder), str(count), kind]
            subprocess.run(argv, check=True)
            found = glob.glob(str(folder / "*tfevents*"))
        files[kind] = Path(found[0])
    return files
