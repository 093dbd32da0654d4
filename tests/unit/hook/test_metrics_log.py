"""``hook.log()`` (metrics_log.py): one flushed JSONL line per call, in the format the
daemon's JSONL source reads, non-finite values included, values that are not numbers skipped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.unit.hook.job import (
    attach,
    make_model,
)


def test_log_writes_one_flushed_jsonl_line_per_call(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    path = tmp_path / "metrics.jsonl"
    hook.log(1, loss=0.5, grad_norm=torch.tensor(2.0))
    assert path.read_text().count("\n") == 1  # visible at once, no close needed
    hook.log(2, loss=math.nan, lr=math.inf, neg=-math.inf)
    text = path.read_text()
    assert "NaN" in text and "Infinity" in text and "-Infinity" in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows[0]["step"] == 1 and rows[0]["loss"] == 0.5 and rows[0]["grad_norm"] == 2.0
    assert math.isnan(rows[1]["loss"]) and rows[1]["lr"] == math.inf
    assert all(isinstance(r["time"], float) for r in rows)


def test_log_skips_values_that_are_not_numbers(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    with pytest.warns(RuntimeWarning, match="'phase'"):
        hook.log(3, loss=1.0, phase="train")
        hook.log(4, loss=1.0, phase="eval")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in rows] == [["loss", "step", "time"]] * 2
