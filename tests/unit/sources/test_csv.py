"""The CSV reader: Lightning's CSVLogger (header rewrites included), cell rules, partial lines,
state round-trip and churn."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

from lrwatch.sources.base import LogReader
from lrwatch.sources.csv import CsvReader

Point = tuple[str, int, float]


def points(reader: CsvReader) -> list[Point]:
    return [(s.metric, s.step, s.value) for s in reader.read()]


def append(path: Path, text: str) -> None:
    with path.open("a", newline="") as f:
        f.write(text)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "metrics.csv"


class LightningLikeWriter:
    """What lightning_fabric's ``_ExperimentWriter.save()`` does, without Lightning: append rows
    under the known header, and rewrite the whole file (in place) when a new key appears."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: list[str] = []

    def save(self, rows: list[dict[str, float]]) -> None:
        new = set().union(*rows) - set(self.keys)
        self.keys = sorted([*self.keys, *new])
        exists = self.path.is_file()
        if new and exists:
            with self.path.open(newline="") as f:
                old = list(csv.DictReader(f))
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.keys)
                writer.writeheader()
                writer.writerows(old)
        with self.path.open("a" if exists else "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys)
            if not exists:
                writer.writeheader()
            writer.writerows(rows)


def test_lightning_header_rewrite_re_reads_from_the_start(path: Path) -> None:
    writer = LightningLikeWriter(path)
    writer.save([{"step": 0, "train_loss": 1.0}, {"step": 1, "train_loss": 0.9}])
    reader = CsvReader(path, "exp")
    assert isinstance(reader, LogReader)
    assert points(reader) == [("train_loss", 0, 1.0), ("train_loss", 1, 0.9)]
    writer.save([{"step": 2, "train_loss": 0.8}])
    assert points(reader) == [("train_loss", 2, 0.8)]
    # A validation metric appears: Lightning rewrites the file with a wider header.
    writer.save([{"step": 2, "val_loss": 0.85, "epoch": 0}, {"step": 3, "train_loss": 0.7}])
    got = points(reader)
    assert reader.header == "epoch,step,train_loss,val_loss"
    assert got == [
        ("train_loss", 0, 1.0),  # re-yielded: the consumer drops steps it has seen
        ("train_loss", 1, 0.9),
        ("train_loss", 2, 0.8),
        ("epoch", 2, 0.0),
        ("val_loss", 2, 0.85),
        ("train_loss", 3, 0.7),
    ]
    assert reader.stats["rewrites"] == 1 and reader.stats["corrupt_records"] == 0
    writer.save([{"step": 4, "train_loss": 0.6}])
    assert points(reader) == [("train_loss", 4, 0.6)]


def test_real_lightning_csv_logger(tmp_path: Path) -> None:
    csv_logs = pytest.importorskip("lightning_fabric.loggers.csv_logs")
    writer = csv_logs._ExperimentWriter(str(tmp_path))
    writer.log_metrics({"train_loss": 1.0}, step=0)
    writer.save()
    reader = CsvReader(tmp_path / "metrics.csv", "exp")
    assert points(reader) == [("train_loss", 0, 1.0)]
    writer.log_metrics({"val_loss": 2.0}, step=1)
    writer.save()
    assert points(reader)[-1] == ("val_loss", 1, 2.0)
    assert reader.stats["rewrites"] == 1


def test_cell_rules(path: Path) -> None:
    append(
        path,
        "\ufeffstep,loss,name,time,acc\n"
        "1,0.5,a,1700000000.5,\n"
        "2,nan,b,,inf\n"
        "3.0,-inf,c,x,1e-3\n"
        "x,1.0,d,,\n"  # no step: corrupt
        "\n"
        "4\n",  # a short row: no metrics
    )
    reader = CsvReader(path, "exp")
    samples = list(reader.read())
    got = [(s.metric, s.step, s.value) for s in samples]
    assert [p[:2] for p in got] == [("loss", 1), ("loss", 2), ("acc", 2), ("loss", 3), ("acc", 3)]
    assert math.isnan(got[1][2]) and got[2][2] == math.inf and got[3][2] == -math.inf
    assert [s.wall_time for s in samples] == [1700000000.5, None, None, None, None]
    assert reader.stats["corrupt_records"] == 1


def test_without_a_step_column_a_step_like_column_is_the_step(path: Path) -> None:
    append(path, "epoch,loss\n1,0.5\n")
    reader = CsvReader(path, "exp")
    assert points(reader) == [("loss", 1, 0.5)]
    assert reader.stats["corrupt_records"] == 0


def test_partial_lines_wait(path: Path) -> None:
    append(path, "step,lo")
    reader = CsvReader(path, "exp")
    assert points(reader) == []
    append(path, "ss\r\n1,0.")
    assert points(reader) == []
    append(path, "5\r\n")
    assert points(reader) == [("loss", 1, 0.5)]


def test_state_dict_round_trip_keeps_the_header(path: Path) -> None:
    append(path, "step,loss\n1,0.5\n")
    reader = CsvReader(path, "exp")
    points(reader)
    state = json.loads(json.dumps(reader.state_dict()))
    assert state["header"] == "step,loss" and state["offset"] == path.stat().st_size
    append(path, "2,0.25\n")
    resumed = CsvReader(path, "exp")
    resumed.load_state_dict(state)
    assert points(resumed) == [("loss", 2, 0.25)]


def test_truncation_and_replacement_restart(path: Path) -> None:
    append(path, "step,loss\n1,0.5\n2,0.4\n")
    reader = CsvReader(path, "exp")
    points(reader)
    with path.open("r+b") as f:
        f.truncate(0)
    append(path, "step,loss\n")
    assert points(reader) == []
    assert reader.stats["truncations"] == 1
    new = path.with_name("new.csv")
    new.write_text("step,acc\n7,0.9\n")
    os.replace(new, path)
    assert points(reader) == [("acc", 7, 0.9)]
    assert reader.stats["replacements"] == 1


def test_vanished_file_reads_nothing(path: Path) -> None:
    reader = CsvReader(path, "exp")
    assert list(reader.read()) == []
    append(path, "step,loss\n1,0.5\n")
    points(reader)
    path.unlink()
    assert list(reader.read()) == []


def test_step_like_columns_and_the_row_number(tmp_path: Path) -> None:
    sb3 = tmp_path / "progress.csv"
    append(sb3, "time/total_timesteps,train/value_loss\n2000,201.6\n4000,133.4\n")
    assert points(CsvReader(sb3, "r")) == [("train/value_loss", 2000, 201.6),
                                           ("train/value_loss", 4000, 133.4)]  # fmt: skip
    gail = tmp_path / "gail.csv"
    append(gail, "agent acc,loss\n0.65,10.5\n1.0,-0.0075\n")
    reader = CsvReader(gail, "r")
    assert points(reader) == [("agent acc", 0, 0.65), ("loss", 0, 10.5),
                              ("agent acc", 1, 1.0), ("loss", 1, -0.0075)]  # fmt: skip
    again = CsvReader(gail, "r")
    again.load_state_dict(reader.state_dict())
    append(gail, "0.5,3.0\n")
    assert points(again) == [("agent acc", 2, 0.5), ("loss", 2, 3.0)]


def test_yolo_padded_headers_and_catboost_tsv(tmp_path: Path) -> None:
    yolo = tmp_path / "results.csv"
    append(yolo, "               epoch,      train/box_loss,      x/lr0\n"
                 "                   0,            0.067453,   0.070081\n"
)  # fmt: skip
    assert points(CsvReader(yolo, "r")) == [("train/box_loss", 0, 0.067453), ("x/lr0", 0, 0.070081)]
    learn = tmp_path / "learn_error.tsv"
    append(learn, "iter\tRMSE\n0\t1.24\n1\t1.22\n")
    assert points(CsvReader(learn, "r")) == [("learn/RMSE", 0, 1.24), ("learn/RMSE", 1, 1.22)]


def test_a_bare_carriage_return_is_one_corrupt_row(path: Path) -> None:
    append(path, "step,loss\n1,0.5\n2,0.\r4\n3,0.3\n")
    reader = CsvReader(path, "r")
    assert points(reader) == [("loss", 1, 0.5), ("loss", 3, 0.3)]
    assert reader.stats["corrupt_records"] == 1
    append(path, "4,0.2\n")  # and the reader is not wedged
    assert points(reader) == [("loss", 4, 0.2)]


def test_an_unbalanced_quote_is_one_corrupt_row(path: Path) -> None:
    append(path, 'step,loss,note\n1,0.5,"ok, quoted"\n2,0.4,"oops\n3,0.3,x\n4,0.2,x\n')
    reader = CsvReader(path, "r")
    assert points(reader) == [("loss", 1, 0.5), ("loss", 3, 0.3), ("loss", 4, 0.2)]
    assert reader.stats["corrupt_records"] == 1


def test_a_cell_over_the_csv_modules_field_limit_is_one_corrupt_row(path: Path) -> None:
    # The csv module raises on a cell over 128 KiB: that raised out of the reader (a traceback
    # from replay, a quarantined run in the daemon) instead of costing one row.
    append(path, "step,loss,note\n1,0.5,x\n2,0.4," + "y" * 200_000 + "\n3,0.3,x\n")
    reader = CsvReader(path, "r")
    assert points(reader) == [("loss", 1, 0.5), ("loss", 3, 0.3)]
    assert reader.stats["corrupt_records"] == 1
