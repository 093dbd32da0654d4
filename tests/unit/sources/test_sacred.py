"""Sacred's metrics.json: rewritten whole at each heartbeat, read whole, only the new entries
yielded; and told apart from detectron2's JSON lines of the same name."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from lrwatch.sources.base import LogReader
from lrwatch.sources.jsonl import JsonlReader, JsonlSource
from lrwatch.sources.sacred import MetricsJsonReader, SacredReader, is_sacred


def save(path: Path, metrics: dict[str, list[tuple[int, float]]]) -> None:
    """As Sacred's FileStorageObserver saves it: the whole file, indented, sorted keys."""
    body = {
        name: {
            "steps": [s for s, _ in points],
            "timestamps": ["2024-05-01T10:00:00.000000"] * len(points),
            "values": [v for _, v in points],
        }
        for name, points in metrics.items()
    }
    path.write_text(json.dumps(body, sort_keys=True, indent=2))
    st = path.stat()  # (a rewrite within one mtime tick still reads as a change)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def rows(reader: LogReader) -> list[tuple[int, dict[str, float]]]:
    batch = reader.read()
    return list(zip(batch.steps, batch.values, strict=True))


def test_each_heartbeat_yields_only_the_new_entries_a_step_a_record(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    loss = [(0, 2.0), (1, 1.5)]
    save(path, {"training.loss": loss, "validation.loss": [(0, 2.2)]})
    reader = SacredReader(path, "r")
    assert isinstance(reader, LogReader)
    assert rows(reader) == [
        (0, {"training.loss": 2.0, "validation.loss": 2.2}),
        (1, {"training.loss": 1.5}),
    ]
    assert rows(reader) == []  # unchanged: nothing
    save(path, {"training.loss": [*loss, (2, math.nan)], "validation.loss": [(0, 2.2)]})
    [(step, values)] = rows(reader)
    assert step == 2 and math.isnan(values["training.loss"])


def test_a_half_written_file_is_not_yet_and_a_restart_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    save(path, {"loss": [(0, 2.0), (1, 1.5), (2, 1.2)]})
    reader = SacredReader(path, "r")
    rows(reader)
    path.write_text('{\n  "loss": {\n    "steps": [0, 1')  # caught mid-rewrite
    assert rows(reader) == [] and reader.stats["corrupt_records"] == 0
    save(path, {"loss": [(0, 2.1), (1, 1.6)]})  # the run restarted into the same directory
    assert rows(reader) == [(0, {"loss": 2.1}), (1, {"loss": 1.6})]
    assert reader.rereading and reader.stats["rewrites"] == 1


@pytest.mark.parametrize(
    "body",
    [
        "[1, 2]",
        '{"loss": [1, 2]}',
        '{"loss": {"steps": [0, 1], "values": [1.0]}}',
        '{"loss": {"steps": ["0"], "values": [1.0]}}',
    ],
)
def test_a_file_of_another_shape_is_counted_not_read(tmp_path: Path, body: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(body)
    reader = SacredReader(path, "r")
    assert rows(reader) == [] and reader.stats["corrupt_records"] == 1


def test_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    save(path, {"loss": [(0, 2.0), (1, 1.5)]})
    reader = SacredReader(path, "r")
    rows(reader)
    resumed = SacredReader(path, "r")
    resumed.load_state_dict(json.loads(json.dumps(reader.state_dict())))
    save(path, {"loss": [(0, 2.0), (1, 1.5), (2, 1.4)]})
    assert rows(resumed) == [(2, {"loss": 1.4})]
    with pytest.raises(ValueError, match="emitted"):
        resumed.load_state_dict({"emitted": {"loss": -1}, "last": {}})


def test_metrics_json_is_told_by_its_first_line(tmp_path: Path) -> None:
    assert is_sacred(b"") is None and is_sacred(b'{"iteration": 19') is None  # not yet
    assert is_sacred(b'{\n  "loss": {') is True  # indented: Sacred's
    assert is_sacred(b'{"loss": {"steps": [0], "values": [1.0]}}\n') is True  # compact
    assert is_sacred(b'{"iteration": 19, "total_loss": 2.1}\n') is False  # detectron2's
    detectron2 = tmp_path / "d2" / "metrics.json"
    detectron2.parent.mkdir()
    detectron2.write_text(
        '{"iteration": 19, "total_loss": 2.1}\n{"iteration": 39, "total_loss": 1.9}\n'
    )
    reader = JsonlSource().open(detectron2, "d2")
    assert rows(reader) == [(19, {"total_loss": 2.1}), (39, {"total_loss": 1.9})]
    assert reader.format == "jsonl"
    sacred = tmp_path / "s" / "metrics.json"
    sacred.parent.mkdir()
    sacred.write_text("")
    reader = JsonlSource().open(sacred, "s")
    assert rows(reader) == [] and reader.state_dict() == {}  # empty: undecided
    save(sacred, {"loss": [(0, 2.0)]})
    assert rows(reader) == [(0, {"loss": 2.0})] and reader.format == "sacred"


def test_a_state_saved_when_metrics_json_was_always_jsonl_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 19, "total_loss": 2.1}\n')
    old = JsonlReader(path, "r")
    old.read()
    reader = MetricsJsonReader(path, "r", JsonlReader)
    reader.load_state_dict(old.state_dict())  # as lrwatch saved it before
    with path.open("a") as f:
        f.write('{"iteration": 39, "total_loss": 1.9}\n')
    assert rows(reader) == [(39, {"total_loss": 1.9})]
    again = MetricsJsonReader(path, "r", JsonlReader)
    again.load_state_dict(reader.state_dict())
    assert rows(again) == []
    with pytest.raises(ValueError, match="kind"):
        again.load_state_dict({"kind": "csv", "inner": {}})
