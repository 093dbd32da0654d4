"""The JSONL reader: the format's rules, partial and torn lines, any split of the byte stream,
state round-trip and file churn."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrwatch.sources.base import LogReader
from lrwatch.sources.jsonl import JsonlReader

Point = tuple[str, int, float]


def points(reader: JsonlReader) -> list[Point]:
    return [(s.metric, s.step, s.value) for s in reader.read()]


def append(path: Path, data: bytes | str) -> None:
    with path.open("ab") as f:
        f.write(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "metrics.jsonl"


def test_format_rules(path: Path) -> None:
    append(
        path,
        '{"step": 1, "loss": 0.5, "lr": 1, "time": 1700000000.5,'
        ' "train": {"acc": 0.75, "deep": {"x": 2}},'
        ' "done": true, "name": "a", "xs": [1], "n": null}\n',
    )
    reader = JsonlReader(path, "exp")
    assert isinstance(reader, LogReader)
    samples = list(reader.read())
    assert [(s.metric, s.step, s.value) for s in samples] == [
        ("loss", 1, 0.5),
        ("lr", 1, 1.0),
        ("train/acc", 1, 0.75),
        ("train/deep/x", 1, 2.0),
    ]
    assert all(s.run == "exp" and s.wall_time == 1700000000.5 for s in samples)
    assert reader.stats["corrupt_records"] == 0


def test_non_finite_values_are_kept(path: Path) -> None:
    append(path, '{"step": 2, "a": NaN, "b": Infinity, "c": -Infinity, "d": 1.0}\n')
    got = points(JsonlReader(path, "exp"))
    assert [m for m, _, _ in got] == ["a", "b", "c", "d"]
    assert math.isnan(got[0][2]) and got[1][2] == math.inf and got[2][2] == -math.inf


def test_wall_time_is_none_without_time(path: Path) -> None:
    append(path, '{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 1.0, "time": "noon"}\n')
    assert [s.wall_time for s in JsonlReader(path, "exp").read()] == [None, None]


@pytest.mark.parametrize(
    "line",
    [
        '{"step": 3, "lo',  # torn mid-write, then a newline from the next writer
        "not json",
        "[1, 2]",
        '{"loss": 1.0}',  # no step
        '{"step": 1.5, "loss": 1.0}',
        '{"step": "3", "loss": 1.0}',
        '{"step": true, "loss": 1.0}',
        '{"step": 3, "loss": 1.0',
    ],
)
def test_corrupt_lines_are_skipped_and_counted(path: Path, line: str) -> None:
    append(path, '{"step": 1, "loss": 1.0}\n' + line + '\n{"step": 2, "loss": 2.0}\n')
    reader = JsonlReader(path, "exp")
    assert points(reader) == [("loss", 1, 1.0), ("loss", 2, 2.0)]
    assert reader.stats["corrupt_records"] == 1


def test_blank_lines_and_crlf_are_fine(path: Path) -> None:
    append(path, '\n  \n{"step": 1, "loss": 1.0}\r\n\r\n')
    reader = JsonlReader(path, "exp")
    assert points(reader) == [("loss", 1, 1.0)]
    assert reader.stats["corrupt_records"] == 0


def test_hostile_values_do_not_raise(path: Path) -> None:
    too_deep = '{"a":' * 5000 + "1" + "}" * 5000
    deep = '{"a":' * 900 + "1" + "}" * 900
    append(path, f'{{"step": 1, "big": {10**400}, "ok": 1.0}}\n{{"step": 2, "x": {too_deep}}}\n')
    append(path, b'{"step": 3, "\xff\xfe": 1.0}\n')  # not UTF-8
    append(path, f'{{"step": 4, "x": {deep}}}\n')
    reader = JsonlReader(path, "exp")
    got = points(reader)
    assert got[0] == ("ok", 1, 1.0)  # the too-big integer is no metric
    assert got[1] == ("x/" + "a/" * 899 + "a", 4, 1.0)
    assert reader.stats["corrupt_records"] == 2


def test_a_partial_line_waits_for_its_newline(path: Path) -> None:
    append(path, '{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    reader = JsonlReader(path, "exp")
    assert points(reader) == [("loss", 1, 1.0)]
    assert points(reader) == []
    append(path, 'ss": 2.0}')
    assert points(reader) == []
    append(path, "\n")
    assert points(reader) == [("loss", 2, 2.0)]
    assert points(reader) == []
    assert reader.stats["corrupt_records"] == 0


def test_small_chunks_and_long_lines(path: Path) -> None:
    lines: list[dict[str, Any]] = [{"step": i, "loss": float(i)} for i in range(50)]
    lines[10]["blob"] = {f"k{j}": j for j in range(100)}  # one line far longer than a chunk
    append(path, "".join(json.dumps(line) + "\n" for line in lines))
    reader = JsonlReader(path, "exp", chunk_bytes=64)
    first = points(reader)
    assert first and reader.has_more
    got = first
    while batch := points(reader):
        got += batch
    assert [p for p in got if p[0] == "loss"] == [("loss", i, float(i)) for i in range(50)]
    assert len(got) == 150 and not reader.has_more


def test_state_dict_round_trip(path: Path) -> None:
    append(path, '{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    reader = JsonlReader(path, "exp")
    points(reader)
    state = json.loads(json.dumps(reader.state_dict()))
    assert state["offset"] == len('{"step": 1, "loss": 1.0}\n')
    append(path, 'ss": 2.0}\n{"step": 3, "loss": 3.0}\n')
    resumed = JsonlReader(path, "exp")
    resumed.load_state_dict(state)
    assert points(resumed) == [("loss", 2, 2.0), ("loss", 3, 3.0)]


def test_truncation_restarts(path: Path) -> None:
    append(path, '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n')
    reader = JsonlReader(path, "exp")
    points(reader)
    with path.open("r+b") as f:  # logrotate's copytruncate
        f.truncate(0)
    append(path, '{"step": 3, "loss": 3.0}\n')
    assert points(reader) == [("loss", 3, 3.0)]
    assert reader.stats["truncations"] == 1


def test_truncation_that_regrew_is_caught_as_a_rewrite(path: Path) -> None:
    """Truncated and written past our old offset before we looked (say, while the daemon was
    down): the size alone cannot tell, the consumed bytes can."""
    append(path, '{"step": 1, "loss": 1.0}\n')
    reader = JsonlReader(path, "exp")
    points(reader)
    state = reader.state_dict()
    with path.open("r+b") as f:
        f.truncate(0)
    append(path, '{"step": 5, "loss": 5.0}\n{"step": 6, "loss": 6.0}\n')
    resumed = JsonlReader(path, "exp")
    resumed.load_state_dict(state)
    assert points(resumed) == [("loss", 5, 5.0), ("loss", 6, 6.0)]
    assert resumed.stats["rewrites"] == 1


def test_replacement_restarts(path: Path) -> None:
    append(path, '{"step": 1, "loss": 1.0}\n')
    reader = JsonlReader(path, "exp")
    points(reader)
    new = path.with_name("new.jsonl")
    new.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n')
    os.replace(new, path)
    assert points(reader) == [("loss", 1, 1.0), ("loss", 2, 2.0)]
    assert reader.stats["replacements"] == 1


def test_vanished_and_not_regular_files_read_nothing(path: Path) -> None:
    reader = JsonlReader(path, "exp")
    assert list(reader.read()) == []
    os.mkfifo(path)  # opening a FIFO for reading would block without O_NONBLOCK
    assert list(reader.read()) == []


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {"step": st.integers(0, 10**6)},
            optional={
                "loss": st.floats(allow_nan=False),
                "grad": st.dictionaries(st.sampled_from(["a", "b"]), st.floats(allow_nan=False)),
                "note": st.text(max_size=5),
            },
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
    chunk=st.sampled_from([16, 40, 4096]),
)
def test_any_split_of_the_stream_reads_the_same(
    tmp_path: Path, records: list[dict[str, object]], cuts: list[int], chunk: int
) -> None:
    """However the bytes arrive, the samples are those of reading the whole file once: none lost,
    none duplicated, in order."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(data)
    expected = list(JsonlReader(whole, "exp").read())
    split = tmp_path / "split.jsonl"
    split.write_bytes(b"")
    reader = JsonlReader(split, "exp", chunk_bytes=chunk)
    got = []
    done = 0
    for bound in sorted({c % (len(data) + 1) for c in cuts} | {len(data)}):
        append(split, data[done:bound])
        done = bound
        while batch := reader.read():
            got += batch
    assert got == expected
    assert reader.stats["corrupt_records"] == 0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # detectron2 metrics.json (bare NaN as Python's json writes it)
        ('{"data_time": 0.26, "iteration": 19, "lr": 0.00019, "total_loss": NaN}',
         [("data_time", 19), ("lr", 19), ("total_loss", 19)]),
        # LLaMA-Factory trainer_log.jsonl
        ('{"current_steps": 5, "total_steps": 8712, "loss": 1.7484, "eval_loss": null,'
         ' "learning_rate": 4.99e-05, "epoch": 0.0, "elapsed_time": "0:03:29"}',
         [("total_steps", 5), ("loss", 5), ("learning_rate", 5), ("epoch", 5)]),
        # StyleGAN2-ADA stats.jsonl: {"num", "mean", "std"} per statistic
        ('{"Loss/G/loss": {"num": 8, "mean": 6.57, "std": 1.8},'
         ' "Progress/tick": {"num": 1, "mean": 3.0, "std": 0.0}}',
         [("Loss/G/loss", 3)]),
        ('{"epoch": 2, "train_loss": 4.7}', [("train_loss", 2)]),
        ('{"epoch": 0.5, "train_loss": 4.7}', []),  # a fractional epoch is no step
    ],
)  # fmt: skip
def test_step_like_keys_when_step_is_absent(path: Path, line: str, expected: list[Any]) -> None:
    append(path, line + "\n")
    reader = JsonlReader(path, "r")
    assert [(m, s) for m, s, _ in points(reader)] == expected
    assert reader.stats["corrupt_records"] == (0 if expected else 1)
