"""The boundary (boundary.py): names escaped losslessly, steps kept in int64, metric names capped;
and a fuzz of the whole way in (reader -> intake -> monitor -> store -> exporter) with arbitrary
bytes, JSON values and directory names: nothing raises, what reaches SQLite and Prometheus is in
range."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.daemon.runs import role_metrics
from lrwatch.daemon.store import Store
from lrwatch.sinks.prometheus import Metrics
from lrwatch.sources.base import Batch
from lrwatch.sources.boundary import (
    INT64_MAX,
    INT64_MIN,
    METRIC_NAMES_CAPPED,
    STEP_OUT_OF_RANGE,
    Intake,
    escape_name,
    unescape_name,
)
from lrwatch.sources.layout import open_reader

names = st.binary(min_size=1, max_size=24).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


@given(names)
def test_escaped_names_are_printable_encodable_and_lossless(raw: bytes) -> None:
    name = os.fsdecode(raw)
    escaped = escape_name(name)
    escaped.encode("utf-8")  # SQLite, Prometheus and .encode() take it
    assert "\n" not in escaped and "\x00" not in escaped
    assert os.fsencode(unescape_name(escaped)) == raw


@given(st.text())
def test_any_text_round_trips(text: str) -> None:
    assert unescape_name(escape_name(text)) == text


def test_a_plain_name_is_left_as_it_is() -> None:
    assert escape_name("exp1/seed-2") == "exp1/seed-2"
    assert escape_name(os.fsdecode(b"bad\xff")) == "bad\\xff"
    assert escape_name("a\\b\nc") == "a\\\\b\\x0ac"


def _batch(run: str, *records: tuple[int, dict[str, float]]) -> Batch:
    batch = Batch(run)
    for step, values in records:
        batch.add(step, None, values)
    return batch


def test_steps_outside_int64_are_refused_and_counted() -> None:
    intake = Intake()
    batch = _batch(
        "r", (2**64 - 1, {"loss": math.nan}), (5, {"loss": 1.0}), (-(2**63) - 1, {"a": 1.0})
    )
    assert intake.admit(batch) == {STEP_OUT_OF_RANGE: 2}
    assert batch.steps == [5] and batch.values == [{"loss": 1.0}]


def test_metric_names_are_capped_per_run_and_in_total() -> None:
    intake = Intake(max_per_run=3, max_total=4)
    batch = _batch("a", (1, {f"m{i}": 1.0 for i in range(5)}))
    assert intake.admit(batch) == {METRIC_NAMES_CAPPED: 2}
    assert intake.newly_capped == ["a"]
    assert batch.values == [{"m0": 1.0, "m1": 1.0, "m2": 1.0}]
    other = _batch("b", (1, {"x": 1.0, "y": 2.0}))
    assert intake.admit(other) == {METRIC_NAMES_CAPPED: 1}  # the total cap
    again = _batch("a", (2, {"m0": 2.0, "m4": 1.0}))
    assert intake.admit(again) == {METRIC_NAMES_CAPPED: 1} and intake.newly_capped == []
    intake.forget("a")
    assert intake.total == 1 and intake.admit(_batch("c", (1, {"z": 1.0}))) == {}


def test_a_record_left_without_names_is_dropped() -> None:
    intake = Intake(max_per_run=1)
    batch = _batch("a", (1, {"m0": 1.0}), (2, {"m1": 1.0}))
    intake.admit(batch)
    assert batch.steps == [1]


# --- the fuzz -----------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**80),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
steps = st.one_of(
    st.integers(min_value=-5, max_value=1000),
    st.integers(min_value=2**63 - 2, max_value=2**64),
    st.integers(min_value=-(2**64), max_value=-(2**63) + 1),
    st.just(10**400),
    st.floats(allow_nan=True),
    st.text(max_size=3),
)
records = st.builds(
    lambda step, rest: {"step": step, **rest},
    steps,
    st.dictionaries(st.text(max_size=8), json_values, max_size=6),
)
jsonl_lines = st.one_of(
    records.map(lambda r: json.dumps(r).encode()),  # json.dumps writes NaN and "\udcff" escapes
    st.binary(max_size=40),
)
csv_cells = st.one_of(
    st.sampled_from(["1e300", "-1e300", "nan", "inf", "9223372036854775808", "12.0", "", "x"]),
    st.integers().map(str),
    st.floats(allow_nan=True).map(repr),
    st.text(max_size=6),
)


class World:
    """One daemon's insides, without the daemon: the stages a sample crosses, in order."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "runs"
        self.root.mkdir()
        self.store = Store(tmp / "state.sqlite")
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.intake = Intake(max_per_run=20, max_total=200)
        self.config = Config()
        self.monitors: dict[str, RunMonitor] = {}
        self.count = 0

    def feed(self, name: bytes, filename: str, data: bytes) -> None:
        self.count += 1
        folder = self.root / str(self.count) / os.fsdecode(name)
        folder.mkdir(parents=True)
        path = folder / filename
        path.write_bytes(data)
        reader = open_reader(self.root, path)
        while batch := reader.read():
            self.intake.admit(batch)
            if not batch:
                continue
            run = batch.run
            monitor = self.monitors.setdefault(run, RunMonitor(run, self.config.for_run(run)))
            outcome = monitor.observe(batch, can_act=None, source=str(path))
            with self.store.transaction():
                self.store.save_run(run, monitor.state_dict(), {"last_sample_at": 1.0})
                for finding in outcome.findings:
                    self.store.add_finding(finding)
                self.store.save_reader(str(path), run, reader.state_dict())
            roles = role_metrics(monitor)
            self.metrics.export_batch(run, batch, roles, monitor.last_step(), 1.0)
        self.check()

    def check(self) -> None:
        text = generate_latest(self.registry).decode("utf-8")  # encodable, every label
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if family.name == "lrwatch_run_last_step":
                    # (as a float, INT64_MAX rounds up to 2**63)
                    assert math.isfinite(sample.value) and -(2.0**63) <= sample.value <= 2.0**63
                for label in sample.labels.values():
                    assert label.isprintable() or label == ""
        with contextlib.closing(sqlite3.connect(self.store.path)) as db:
            for step, onset in db.execute("SELECT step, onset_step FROM findings"):
                assert INT64_MIN <= step <= INT64_MAX
                assert onset is None or INT64_MIN <= onset <= INT64_MAX
            for (state,) in db.execute("SELECT state FROM runs"):
                json.loads(state)
        assert set(self.store.run_states()) <= set(self.monitors)
        assert all(Path(p).exists() for p in self.store.reader_states())


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", *header])
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogateescape")


_fuzz = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_fuzz
@given(names, st.lists(jsonl_lines, max_size=12))
def test_fuzz_jsonl_lines_and_run_names(
    tmp_path_factory: Any, name: bytes, lines: list[bytes]
) -> None:
    world = _world(tmp_path_factory)
    world.feed(name, "metrics.jsonl", b"\n".join(lines) + b"\n")


@_fuzz
@given(
    names,
    st.lists(st.text(max_size=6), max_size=4),
    st.lists(st.lists(csv_cells, min_size=1, max_size=5), max_size=8),
)
def test_fuzz_csv_rows_and_run_names(
    tmp_path_factory: Any, name: bytes, header: list[str], rows: list[list[str]]
) -> None:
    world = _world(tmp_path_factory)
    world.feed(name, "metrics.csv", _csv(header, rows))


_worlds: dict[int, World] = {}


def _world(factory: Any) -> World:
    """One World per test session (hypothesis runs a test's examples in one process): each
    example adds its own run, so they also meet each other's names and the caps."""
    key = id(factory)
    if key not in _worlds:
        _worlds[key] = World(factory.mktemp("fuzz"))
    return _worlds[key]
