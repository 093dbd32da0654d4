"""Native logs, no config: each format, written by the real library where it installs (the
Hugging Face Trainer, Lightning's CSV and TensorBoard loggers, torch's event writer in Keras'
layout) or copied line for line where it does not (formats_jobs.copied_formats), holds a run
that diverges; ``lrwatch replay`` and a live ``lrwatch run`` both find it, on the run's loss.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lrwatch import testing
from lrwatch.testing import free_port
from tests.integration.formats_jobs import STEPS

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("lightning")
pytest.importorskip("sacred")
if importlib.util.find_spec("keras") is None:  # (imported here it would want TensorFlow)
    pytest.skip("keras is not installed", allow_module_level=True)

JOBS = "tests.integration.formats_jobs"
REPO = Path(__file__).resolve().parents[2]


def _keras_history(root: Path) -> Path:
    """Where the Keras job leaves its History: beside the replayed logs, not among them."""
    return root.parent / f"{root.name}_keras_history.json"


def _job(kind: str, where: Path, stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
    """One of formats_jobs' jobs, writing where it is told, its streams where given."""
    argv = [sys.executable, "-m", JOBS, kind, str(where)]
    return subprocess.Popen(argv, cwd=REPO, stdout=stdout, stderr=stderr)


def _tqdm_losses(root: Path) -> Path:
    """Where the tqdm job leaves its losses: beside the replayed logs, not among them."""
    return root.parent / f"{root.name}_tqdm_losses.json"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Every format's diverging run under one directory, and {run: the loss metric}."""
    from tests.integration.formats_jobs import copied_formats

    root = tmp_path_factory.mktemp("native")
    (root / "hf_stdout").mkdir()
    (root / "keras_stdout").mkdir()
    (root / "lightning_stdout").mkdir()
    (root / "tqdm_stdout").mkdir()
    history = _keras_history(root)
    keras_log = (root / "keras_stdout" / "train.log").open("wb")
    lightning_log = (root / "lightning_stdout" / "train.log").open("wb")
    tqdm_log = (root / "tqdm_stdout" / "slurm-4242.out").open("wb")
    with (
        (root / "hf_stdout" / "train.log").open("wb") as stdout,
        keras_log,
        lightning_log,
        tqdm_log,
    ):
        quiet: Any = subprocess.DEVNULL
        jobs = [
            _job("keras_stdout", history, keras_log, quiet),
            _job("hugging_face", root / "hf", stdout, quiet),
            _job("lightning", root / "lightning", lightning_log, quiet),
            _job("tqdm_loop", _tqdm_losses(root), tqdm_log, subprocess.STDOUT),
            _job("sacred", root / "sacred", quiet, quiet),
            _job("keras_layout", root / "keras/fit", quiet, quiet),
        ]
        for job in jobs:
            assert job.wait(timeout=240) == 0, job.args
    [hf_tb] = (root / "hf" / "runs").iterdir()  # the Trainer's logging_dir: runs/<time_host>
    runs = {
        "hf": "loss",  # checkpoint-*/trainer_state.json: one run, the output directory
        f"hf/runs/{hf_tb.name}": "train/loss",  # report_to tensorboard
        "hf_stdout": "loss",  # the printed dicts
        "lightning/csv/version_0": "train_loss_step",
        "lightning/tb/version_0": "train_loss_step",
        "keras/fit": "train/epoch_loss",  # train/ and validation/ are one run
        "keras_stdout": "loss",  # Keras 3's progress bars
        "lightning_stdout": "train_loss_step",  # Lightning's TQDMProgressBar
        "tqdm_stdout": "loss",  # a loop's own tqdm bar, its postfix
        "sacred/1": "training.loss",  # Sacred's metrics.json (FileStorageObserver)
        **copied_formats(root),
    }
    return root, runs


def test_the_library_files_are_where_the_runs_say(made: tuple[Path, dict[str, str]]) -> None:
    root, _ = made
    assert len(list(root.glob("hf/checkpoint-*/trainer_state.json"))) == 4
    assert list(root.glob("hf/runs/*/events.out.tfevents.*"))
    assert "{'loss': " in (root / "hf_stdout" / "train.log").read_text()
    header = (root / "lightning/csv/version_0/metrics.csv").read_text().splitlines()[0]
    assert {"train_loss_step", "train_loss_epoch", "lr-SGD", "step"} <= set(header.split(","))
    assert list(root.glob("lightning/tb/version_0/events.out.tfevents.*"))
    assert list(root.glob("keras/fit/validation/events.out.tfevents.*"))
    sacred = json.loads((root / "sacred/1/metrics.json").read_text())
    assert len(sacred["training.loss"]["values"]) == STEPS  # (Sacred's own file, whole)


def test_keras_stdout_gives_each_epochs_own_metrics(made: tuple[Path, dict[str, str]]) -> None:
    """The finished bar of each epoch, not a running one: the values Keras' History holds."""
    from lrwatch.sources.text import TextReader

    root, _ = made
    history = json.loads(_keras_history(root).read_text())
    batch = TextReader(root / "keras_stdout" / "train.log", "r").read()
    read: dict[str, dict[int, float]] = {}
    for step, values in zip(batch.steps, batch.values, strict=True):
        for name, value in values.items():
            read.setdefault(name, {}).setdefault(step, value)  # a repeat of a step is dropped
    for name in ("loss", "val_loss"):
        epochs = range(1, len(history[name]) + 1)
        assert list(read[name]) == list(epochs)
        for got, want in zip(read[name].values(), history[name], strict=True):
            assert got == pytest.approx(want, rel=1e-4), name  # printed with 4 decimals


def test_a_tqdm_bar_gives_each_batchs_loss_at_its_count(made: tuple[Path, dict[str, str]]) -> None:
    """tqdm draws the bar as it advances with the last batch's postfix, then again with the
    new one: each loss is read once, at the count it was first drawn at, counted across the
    epochs' bars."""
    from lrwatch.sources.text import TextReader

    root, _ = made
    losses = json.loads(_tqdm_losses(root).read_text())
    text = (root / "tqdm_stdout" / "slurm-4242.out").read_text()
    assert "Epoch 1/5:" in text and "%|" in text
    batch = TextReader(root / "tqdm_stdout" / "slurm-4242.out", "r").read()
    read = [(step, values["loss"]) for step, values in zip(batch.steps, batch.values, strict=True)]
    finite = [(b, v) for b, v in enumerate(losses) if math.isfinite(v)]
    # (a value drawn again unchanged, inf after inf, is stale: dropped)
    assert len(finite) > 8
    assert read[: len(finite)] == [(b, pytest.approx(v, rel=5e-3)) for b, v in finite]
    assert "%|" in (root / "lightning_stdout" / "train.log").read_text()


def test_replay_finds_each_divergence_with_no_config(made: tuple[Path, dict[str, str]]) -> None:
    root, runs = made
    out = subprocess.run(
        [sys.executable, "-m", "lrwatch", "replay", str(root), "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    # A page (critical), not a warning: each loss is known by its name, not guessed.
    found = {
        (r["run"], r["metric"])
        for r in rows
        if r["kind"] == "divergence" and r["severity"] == "critical"
    }
    missing = {run: loss for run, loss in runs.items() if (run, loss) not in found}
    assert not missing, f"no divergence on the loss of {missing}; found {sorted(found)}"
    # The validation curve of the Keras run is its own series, a validation loss.
    assert not any(r["metric"] == "epoch_loss" for r in rows)


def test_a_live_daemon_finds_each_divergence_with_no_config(
    made: tuple[Path, dict[str, str]], tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    source, runs = made
    root = tmp_path / "runs"
    root.mkdir()
    port, state, log = free_port(), tmp_path / "state.sqlite", tmp_path / "daemon.log"
    daemon = testing.spawn(root, state, port, log)
    procs.append(daemon)
    testing.wait_ready(daemon, port, log)
    # The logs appear under the watched root while the daemon runs; the Trainer's checkpoints
    # one after the other, as it saves them (each a longer trainer_state.json).
    for item in sorted(source.iterdir()):
        shutil.copytree(item, root / item.name)
        time.sleep(0.2)

    def divergent() -> set[tuple[str, str]]:
        db = sqlite3.connect(state)
        try:
            return set(db.execute("SELECT run, metric FROM findings WHERE kind = 'divergence'"))
        except sqlite3.OperationalError:
            return set()
        finally:
            db.close()

    def missing() -> dict[str, str]:
        found = divergent()
        return {run: loss for run, loss in runs.items() if (run, loss) not in found}

    testing.wait_for(lambda: not missing(), 60, "a divergence on each run's loss", show=missing)
    scraped = testing.scrape(port)
    for run in runs:
        assert scraped[f'lrwatch_findings_total{{kind="divergence",run="{run}"}}'] >= 1
    status = testing.status(port)
    assert status, "no status"
    testing.stop(daemon, log)
