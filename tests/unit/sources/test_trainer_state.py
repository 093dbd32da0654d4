"""Hugging Face's trainer_state.json: rewritten whole at each save, read whole, yielding only
what is new; a half-written file is "not yet"; a shorter history restarts; checkpoint copies
belong to the output directory's run."""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePath
from typing import Any

import pytest

from lrwatch.sources.base import LogReader
from lrwatch.sources.trainer_state import TrainerStateReader, TrainerStateSource

Point = tuple[str, int, float]


def points(reader: TrainerStateReader) -> list[Point]:
    return [(s.metric, s.step, s.value) for s in reader.read()]


def save(path: Path, history: list[dict[str, Any]]) -> None:
    """As the Trainer does: the whole state, rewritten in place (json.dumps, indent 2)."""
    state = {"global_step": history[-1]["step"] if history else 0, "log_history": history}
    path.write_text(json.dumps(state, indent=2) + "\n")


def entry(step: int, loss: float) -> dict[str, Any]:
    return {
        "epoch": step / 10,
        "grad_norm": 1.5,
        "learning_rate": 5e-05,
        "loss": loss,
        "step": step,
    }


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "trainer_state.json"


def test_only_new_entries_are_yielded_after_a_rewrite(path: Path) -> None:
    save(path, [entry(5, 2.0)])
    reader = TrainerStateReader(path, "out")
    assert isinstance(reader, LogReader)
    assert points(reader) == [
        ("epoch", 5, 0.5), ("grad_norm", 5, 1.5), ("learning_rate", 5, 5e-05), ("loss", 5, 2.0)
    ]  # fmt: skip
    assert points(reader) == []  # unchanged
    history = [entry(5, 2.0), entry(10, math.nan), {"eval_loss": 2.5, "epoch": 1.0, "step": 10}]
    save(path, history)
    got = points(reader)
    assert [(m, s) for m, s, _ in got] == [
        ("epoch", 10), ("grad_norm", 10), ("learning_rate", 10), ("loss", 10),
        ("eval_loss", 10), ("epoch", 10),
    ]  # fmt: skip
    assert math.isnan(got[3][2])
    summary = {"train_runtime": 9.0, "train_loss": 2.2, "total_flos": 1.0, "epoch": 1.0, "step": 10}
    save(path, [*history, summary])
    assert points(reader) == []  # the end-of-training average is no point of the curve


def test_a_half_written_file_is_not_yet(path: Path) -> None:
    save(path, [entry(5, 2.0)])
    reader = TrainerStateReader(path, "out")
    reader.read()
    text = json.dumps({"log_history": [entry(5, 2.0), entry(10, 1.0)]})
    path.write_text(text[: len(text) // 2])
    assert points(reader) == []
    path.write_text(text)
    assert [s for _, s, _ in points(reader)] == [10] * 4


def test_a_shorter_history_is_read_again(path: Path) -> None:
    save(path, [entry(5, 2.0), entry(10, 1.0)])
    reader = TrainerStateReader(path, "out")
    reader.read()
    save(path, [entry(5, 2.0), entry(10, 3.0), entry(15, 1.0)][:1])  # resumed from step 5
    assert [s for _, s, _ in points(reader)] == [5] * 4
    assert reader.stats["rewrites"] == 1 and reader.rereading


def test_state_dict_round_trip(path: Path) -> None:
    save(path, [entry(5, 2.0)])
    reader = TrainerStateReader(path, "out")
    reader.read()
    again = TrainerStateReader(path, "out")
    again.load_state_dict(reader.state_dict())
    save(path, [entry(5, 2.0), entry(10, 1.0)])
    assert [s for _, s, _ in points(again)] == [10] * 4
    with pytest.raises(ValueError, match="emitted"):
        again.load_state_dict({"emitted": -1})


def test_not_a_trainer_state_is_counted(path: Path) -> None:
    path.write_text('{"no": "history"}')
    reader = TrainerStateReader(path, "out")
    assert points(reader) == [] and reader.stats["corrupt_records"] == 1


def test_checkpoint_copies_belong_to_the_output_directory() -> None:
    source = TrainerStateSource()
    assert source.claims(PurePath("out/checkpoint-500/trainer_state.json"))
    assert source.run_dir(PurePath("out/checkpoint-500/trainer_state.json")) == PurePath("out")
    assert source.run_dir(PurePath("out/trainer_state.json")) == PurePath("out")
    assert not source.claims(PurePath("out/config.json"))


def test_checkpoint_copies_are_one_run_and_count_each_step_once(tmp_path: Path) -> None:
    from lrwatch.analysis.monitor import RunMonitor
    from lrwatch.config import Config
    from lrwatch.offline.replay import discover_runs, read_run

    out = tmp_path / "out"
    history = [entry(step, 2.0 / step) for step in range(1, 31)]
    for saved in (10, 20, 30):
        (out / f"checkpoint-{saved}").mkdir(parents=True)
        save(out / f"checkpoint-{saved}" / "trainer_state.json", history[:saved])
    runs = discover_runs([tmp_path])
    assert list(runs) == ["out"] and len(runs["out"]) == 3
    monitor = RunMonitor("out", Config().for_run("out"), assume_landed=True)
    monitor.observe(read_run("out", runs["out"]), can_act=None)
    loss = monitor.series["loss"]
    assert loss.last_step == 30
    assert loss.out_of_order == 10 + 20  # the older copies' steps: repeats, skipped
