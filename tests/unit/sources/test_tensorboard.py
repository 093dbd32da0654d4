"""The TensorBoard reader on real event files written by torch's SummaryWriter (and, for TF2-style
tensor scalars, by tensorboard's own EventFileWriter): tailing, truncated tails, damaged records,
resync, state round-trip and file churn."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from torch.utils.tensorboard import SummaryWriter

from lrwatch.sources.base import LogReader
from lrwatch.sources.records import masked_crc32c
from lrwatch.sources.tensorboard import TensorBoardReader

Point = tuple[str, int, float]


def points(reader: TensorBoardReader) -> list[Point]:
    return [(s.metric, s.step, s.value) for s in reader.read()]


def read_all(reader: TensorBoardReader) -> list[Point]:
    out: list[Point] = []
    while batch := points(reader):
        out.extend(batch)
    return out


def records(data: bytes) -> Iterator[tuple[int, int, event_pb2.Event]]:
    """(start, end, event) of every record: the test's own, independent reading of the framing."""
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + 16 + length
        yield pos, end, event_pb2.Event.FromString(data[pos + 12 : end - 4])
        pos = end


def record_of(data: bytes, tag: str, step: int) -> tuple[int, int]:
    for start, end, event in records(data):
        if event.step == step and any(v.tag == tag for v in event.summary.value):
            return start, end
    raise AssertionError(f"no record for {tag}@{step}")


def write_torch_log(log_dir: Path, steps: range) -> Path:
    writer = SummaryWriter(log_dir=str(log_dir))
    for step in steps:
        writer.add_scalar("loss", 1.0 / (step + 1), step)
        if step == 2:  # the summaries that must be skipped
            writer.add_histogram("weights", np.arange(100, dtype=np.float32), step)
            writer.add_image("sample", np.zeros((3, 4, 4), dtype=np.float32), step)
            writer.add_text("note", "hello", step)
        writer.add_scalar("lr", 0.5, step, new_style=True)  # a tensor scalar, plugin "scalars"
    writer.close()
    [path] = log_dir.glob("*tfevents*")
    return path


def expected(steps: range) -> list[Point]:
    out: list[Point] = []
    for step in steps:
        out += [("loss", step, float(np.float32(1.0 / (step + 1)))), ("lr", step, 0.5)]
    return out


@pytest.fixture(scope="module")
def canonical(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of one real SummaryWriter file with steps 0..9 (written once per module)."""
    return write_torch_log(tmp_path_factory.mktemp("tb"), range(10)).read_bytes()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "events.out.tfevents.1.host"


def test_reads_scalars_and_skips_other_summaries(tmp_path: Path, canonical: bytes) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(canonical)
    reader = TensorBoardReader(path, "exp")
    assert isinstance(reader, LogReader)
    samples = list(reader.read())
    assert [(s.metric, s.step, s.value) for s in samples] == expected(range(10))
    assert all(s.run == "exp" and s.wall_time and s.wall_time > 1e9 for s in samples)
    assert list(reader.read()) == []
    assert reader.stats == {
        "corrupt_records": 0,
        "truncations": 0,
        "replacements": 0,
        "rewrites": 0,
    }


def test_tails_a_live_writer(tmp_path: Path) -> None:
    writer = SummaryWriter(log_dir=str(tmp_path))
    writer.add_scalar("loss", 1.0, 0)
    writer.flush()
    [path] = tmp_path.glob("*tfevents*")
    reader = TensorBoardReader(path, "exp")
    assert points(reader) == [("loss", 0, 1.0)]
    writer.add_scalar("loss", 2.0, 1)
    writer.add_scalar("loss", float("nan"), 2)
    writer.add_scalar("loss", float("inf"), 3)
    writer.flush()
    new = points(reader)
    assert [p[:2] for p in new] == [("loss", 1), ("loss", 2), ("loss", 3)]
    assert new[0][2] == 2.0 and math.isnan(new[1][2]) and new[2][2] == math.inf
    assert points(reader) == []
    writer.close()


@pytest.mark.parametrize("cut", [1, 3, 4, 8, 11, 12, 13, 20])
def test_truncated_last_record_is_not_yet(log_path: Path, canonical: bytes, cut: int) -> None:
    """Cut the file inside the last record (its header or body): the complete records are read,
    and the last one appears exactly once when the rest is appended."""
    start, end = record_of(canonical, "lr", 9)
    assert end == len(canonical)
    log_path.write_bytes(canonical[: start + cut])
    reader = TensorBoardReader(log_path, "exp")
    assert read_all(reader) == expected(range(10))[:-1]
    assert reader.state_dict()["offset"] == start
    with log_path.open("ab") as f:
        f.write(canonical[start + cut :])
    assert read_all(reader) == [("lr", 9, 0.5)]
    assert reader.stats["corrupt_records"] == 0


def test_data_crc_failure_skips_that_record_only(log_path: Path, canonical: bytes) -> None:
    start, _ = record_of(canonical, "loss", 4)
    damaged = bytearray(canonical)
    damaged[start + 14] ^= 0xFF  # inside the payload: the length still frames it
    log_path.write_bytes(damaged)
    reader = TensorBoardReader(log_path, "exp")
    assert read_all(reader) == [p for p in expected(range(10)) if p[:2] != ("loss", 4)]
    assert reader.stats["corrupt_records"] == 1


def test_length_crc_failure_resyncs_on_the_next_record(log_path: Path, canonical: bytes) -> None:
    start, _ = record_of(canonical, "loss", 4)
    damaged = bytearray(canonical)
    damaged[start] ^= 0x01  # the length itself: this record cannot be framed
    log_path.write_bytes(damaged)
    reader = TensorBoardReader(log_path, "exp")
    assert read_all(reader) == [p for p in expected(range(10)) if p[:2] != ("loss", 4)]
    assert reader.stats["corrupt_records"] == 1


def test_garbage_between_records_is_one_corruption(log_path: Path, canonical: bytes) -> None:
    start, _ = record_of(canonical, "loss", 4)
    garbage = os.urandom(3000) + bytes(5000) + b"\x07" * 100  # random, a zero hole, a fill
    log_path.write_bytes(canonical[:start] + garbage + canonical[start:])
    reader = TensorBoardReader(log_path, "exp", chunk_bytes=1024)
    assert read_all(reader) == expected(range(10))
    assert reader.stats["corrupt_records"] == 1


def test_garbage_at_the_tail_then_more_records(log_path: Path, canonical: bytes) -> None:
    """A damaged stretch at the end is counted once, even across reads and a restart, and the
    records appended after it are found."""
    first, _ = record_of(canonical, "loss", 5)
    log_path.write_bytes(canonical[:first] + os.urandom(500))
    reader = TensorBoardReader(log_path, "exp")
    assert read_all(reader) == expected(range(5))
    assert reader.stats["corrupt_records"] == 1
    assert read_all(reader) == []
    state = json.loads(json.dumps(reader.state_dict()))
    reader = TensorBoardReader(log_path, "exp")
    reader.load_state_dict(state)
    with log_path.open("ab") as f:
        f.write(canonical[first:])
    assert read_all(reader) == expected(range(10))[10:]
    assert reader.stats["corrupt_records"] == 0  # the new reader resumed inside the same stretch


def test_state_dict_round_trip_reads_only_what_is_new(log_path: Path, canonical: bytes) -> None:
    middle, _ = record_of(canonical, "loss", 5)
    log_path.write_bytes(canonical[:middle])
    reader = TensorBoardReader(log_path, "exp")
    assert read_all(reader) == expected(range(5))
    state = json.loads(json.dumps(reader.state_dict()))
    assert state["offset"] == middle and state["inode"] == log_path.stat().st_ino
    with log_path.open("ab") as f:
        f.write(canonical[middle:])
    resumed = TensorBoardReader(log_path, "exp")
    resumed.load_state_dict(state)
    assert read_all(resumed) == expected(range(5, 10))


def test_truncation_restarts_from_zero(log_path: Path, canonical: bytes) -> None:
    log_path.write_bytes(canonical)
    reader = TensorBoardReader(log_path, "exp")
    assert len(read_all(reader)) == 20
    middle, _ = record_of(canonical, "loss", 3)
    with log_path.open("r+b") as f:  # copytruncate, then the writer goes on
        f.truncate(0)
        f.write(canonical[:middle])
    assert read_all(reader) == expected(range(3))
    assert reader.stats["truncations"] == 1


def test_replacement_restarts_from_zero(log_path: Path, canonical: bytes) -> None:
    log_path.write_bytes(canonical)
    reader = TensorBoardReader(log_path, "exp")
    read_all(reader)
    other = log_path.with_name("new")
    other.write_bytes(canonical + canonical)  # longer: not a truncation
    os.replace(other, log_path)
    assert read_all(reader) == expected(range(10)) * 2
    assert reader.stats["replacements"] == 1


def test_vanished_file_reads_nothing(log_path: Path, canonical: bytes) -> None:
    reader = TensorBoardReader(log_path, "exp")
    assert list(reader.read()) == []  # never existed
    log_path.write_bytes(canonical)
    read_all(reader)
    log_path.unlink()
    assert list(reader.read()) == [] and not reader.has_more


def test_small_chunks_spread_a_backlog_over_calls(log_path: Path, canonical: bytes) -> None:
    log_path.write_bytes(canonical)
    reader = TensorBoardReader(log_path, "exp", chunk_bytes=200)
    first = points(reader)
    assert first and reader.has_more
    assert first + read_all(reader) == expected(range(10))
    assert not reader.has_more


def _tensor_event(step: int, tag: str, tensor: tensor_pb2.TensorProto, plugin: str | None) -> Any:
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if plugin is not None:
        value.metadata.plugin_data.plugin_name = plugin
    return event_pb2.Event(step=step, wall_time=1700000000.0 + step, summary={"value": [value]})


def test_tf2_tensor_scalars(tmp_path: Path) -> None:
    scalar = tensor_shape_pb2.TensorShapeProto()
    f32 = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=scalar, float_val=[0.25])
    f64 = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE, tensor_shape=scalar, tensor_content=struct.pack("<d", 0.1)
    )
    vector = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 2}]),
        float_val=[1.0, 2.0],
    )
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=scalar, string_val=[b"x"])
    writer = EventFileWriter(str(tmp_path))
    writer.add_event(_tensor_event(0, "loss", f32, "scalars"))
    writer.add_event(_tensor_event(1, "loss", f32, None))  # TF2: metadata on the first value only
    writer.add_event(_tensor_event(1, "val/loss", f64, "scalars"))
    writer.add_event(_tensor_event(1, "hist", vector, "histograms"))
    writer.add_event(_tensor_event(1, "note", text, "text"))
    writer.add_event(_tensor_event(1, "other", f32, "my_plugin"))
    writer.add_event(_tensor_event(2, "other", f32, None))  # still my_plugin's, not a scalar
    writer.close()
    [path] = tmp_path.glob("*tfevents*")
    reader = TensorBoardReader(path, "exp")
    samples = list(reader.read())
    assert [(s.metric, s.step, s.value) for s in samples] == [
        ("loss", 0, 0.25),
        ("loss", 1, 0.25),
        ("val/loss", 1, 0.1),
    ]
    assert samples[0].wall_time == 1700000000.0
    assert reader.state_dict()["other_tags"] == ["other"]


def test_bad_state_is_refused_by_name(log_path: Path) -> None:
    reader = TensorBoardReader(log_path, "exp")
    with pytest.raises(ValueError, match="offset"):
        reader.load_state_dict({"offset": -1})
    with pytest.raises(ValueError, match="other_tags"):
        reader.load_state_dict({"offset": 0, "other_tags": "x"})


def test_masked_crc_matches_the_writer(canonical: bytes) -> None:
    (crc,) = struct.unpack_from("<I", canonical, 8)
    assert masked_crc32c(canonical[:8]) == crc


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=8),
    chunk=st.sampled_from([16, 100, 4096]),
)
def test_any_split_of_the_stream_reads_the_same(
    tmp_path: Path, canonical: bytes, cuts: list[int], chunk: int
) -> None:
    """However the writer's bytes arrive, every sample is read exactly once, in order."""
    path = tmp_path / f"events.out.tfevents.{len(cuts)}.{chunk}"
    path.unlink(missing_ok=True)
    path.touch()
    reader = TensorBoardReader(path, "exp", chunk_bytes=chunk)
    got: list[Point] = []
    bounds = sorted({c % (len(canonical) + 1) for c in cuts} | {len(canonical)})
    done = 0
    for bound in bounds:
        with path.open("ab") as f:
            f.write(canonical[done:bound])
        done = bound
        got += read_all(reader)
    assert got == expected(range(10))
    assert reader.stats["corrupt_records"] == 0


def test_big_records_are_peeked_at_not_mistaken(tmp_path: Path) -> None:
    """Large records are classified from their first bytes: a graph def is skipped unparsed, a
    large summary (here, a long tag) is still read."""
    long_tag = "x" * 1000
    writer = EventFileWriter(str(tmp_path))
    writer.add_event(event_pb2.Event(step=1, wall_time=1.0, graph_def=b"\x00" * 5000))
    writer.add_event(
        event_pb2.Event(
            step=300,
            wall_time=2.0,
            summary={"value": [{"tag": long_tag, "simple_value": 1.5}]},
        )
    )
    writer.close()
    [path] = tmp_path.glob("*tfevents*")
    reader = TensorBoardReader(path, "exp")
    assert points(reader) == [(long_tag, 300, 1.5)]
    assert reader.stats["corrupt_records"] == 0


def _header(length: int) -> bytes:
    head = struct.pack("<Q", length)
    return head + struct.pack("<I", masked_crc32c(head))


def test_a_huge_claimed_length_is_corrupt_not_awaited(log_path: Path, canonical: bytes) -> None:
    # A header whose CRC holds but which claims 1 GiB: damaged framing, skipped, counted once;
    # the records after it are still read.
    log_path.write_bytes(canonical[:200] + _header(1 << 30) + b"\0" * 64 + canonical[200:])
    reader = TensorBoardReader(log_path, "exp")
    got = read_all(reader)
    assert reader.stats["corrupt_records"] >= 1
    assert got[-1] == expected(range(10))[-1]


def test_an_incomplete_record_is_not_read_again_until_it_can_be_complete(
    log_path: Path, canonical: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    start, end = record_of(canonical, "loss", 9)
    body = canonical[start:end]
    filler = canonical[:start] * 40  # well past one chunk of records before it
    log_path.write_bytes(filler + body[:20])
    reader = TensorBoardReader(log_path, "exp", chunk_bytes=1024)
    read_all(reader)
    reads: list[int] = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: reads.append(n) or real(fd, n, at))
    with log_path.open("ab") as f:
        f.write(body[20:-2])  # still short of the record's end
    assert points(reader) == [] and reads == []  # one stat, no read
    with log_path.open("ab") as f:
        f.write(body[-2:])
    assert points(reader) == [("loss", 9, expected(range(10))[-2][2])]


def test_keras_train_and_validation_folders_are_one_run(tmp_path: Path) -> None:
    from pathlib import PurePath

    from lrwatch.sources.tensorboard import TensorBoardSource

    source = TensorBoardSource()
    for split in ("train", "validation"):
        # TF2 (Keras) names its event files *.v2
        writer = SummaryWriter(log_dir=str(tmp_path / "fit" / split), filename_suffix=".v2")
        writer.add_scalar("epoch_loss", 1.0, 0)
        writer.close()
        [path] = (tmp_path / "fit" / split).glob("*tfevents*")
        assert source.run_dir(PurePath(path)) == PurePath(tmp_path / "fit")
        assert points(TensorBoardReader(path, "fit")) == [(f"{split}/epoch_loss", 0, 1.0)]
    assert source.run_dir(PurePath("runs/a/events.out.tfevents.1")) == PurePath("runs/a")
    # Ultralytics' runs/detect/train/ (torch's SummaryWriter, no .v2): a run of its own
    yolo = PurePath("runs/detect/train/events.out.tfevents.1675348815.host.37247.0")
    assert source.run_dir(yolo) == yolo.parent
