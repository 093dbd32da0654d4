"""What lrwatch could not judge, in one wording (coverage.py), as replay gathers it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lrwatch.analysis import coverage
from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.offline.replay import ReplayedRun, discover
from lrwatch.protocol.types import Role, Sample


def monitor_of(metric: str) -> RunMonitor:
    monitor = RunMonitor("r", Config().for_run("r"))
    monitor.observe([Sample("r", metric, i, 1.0 / (i + 1)) for i in range(5)], can_act=None)
    return monitor


def test_the_loss_is_the_configured_name_or_none() -> None:
    assert coverage.loss_of(monitor_of("train/loss")) == ("train/loss", False)
    assert coverage.loss_of(monitor_of("objective")) == (None, False)


def test_an_inferred_loss_is_said_to_be_one() -> None:
    # The ``formats`` readers record a loss inferred from a name containing "loss".
    monitor = monitor_of("my_loss_avg")
    monitor.inferred_roles = {Role.LOSS: "my_loss_avg"}  # type: ignore[attr-defined]
    assert coverage.loss_of(monitor) == ("my_loss_avg", True)
    run = ReplayedRun("r", [], ["my_loss_avg"], 5, "my_loss_avg", True)
    assert run.warnings() == [
        "run r: using `my_loss_avg` as the loss (its name contains 'loss'); "
        "to say so: roles: {loss: [my_loss_avg]} in a config file"
    ]


def test_messages_name_the_metrics_and_how_to_name_the_role() -> None:
    many = [f"m{i}" for i in range(12)]
    said = coverage.no_loss("exp", many)
    assert "run exp: no loss recognised, not judged (metrics found: m0, m1, m10," in said
    assert "and 4 more" in said and "roles: {loss: [NAME, loss]}" in said
    assert coverage.no_loss("exp", []) == "run exp: no metric read from its logs, not judged"
    assert coverage.skipped("f.jsonl", {"corrupt_records": 0}) is None
    said = coverage.skipped("f.jsonl", {"corrupt_records": 2})
    assert said == "f.jsonl: skipped 2 corrupt records"


def test_json_safe_spells_non_finite_values_everywhere() -> None:
    value = {"loss": math.nan, "lrs": [math.inf, 0.1], "nested": {"x": -math.inf}, "n": None}
    safe = coverage.json_safe(value)
    assert safe == {"loss": "nan", "lrs": ["inf", 0.1], "nested": {"x": "-inf"}, "n": None}
    json.dumps(safe, allow_nan=False)


def test_runs_that_would_share_a_name_are_named_from_their_common_parent(tmp_path: Path) -> None:
    for folder in ("x/a/train", "x/b/train", "x/b/test", "y/train"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "m.jsonl").write_text('{"step": 0, "loss": 1}\n')
    found = discover([tmp_path / "x" / "a", tmp_path / "x" / "b", tmp_path / "y"])
    assert sorted(found.runs) == ["test", "x/a/train", "x/b/train", "y/train"]
    # The same directory given twice, or as a file and as its directory, is one run.
    log = tmp_path / "x" / "a" / "train" / "m.jsonl"
    assert discover([log, log.parent, log.parent]).runs == {"train": [log]}
