"""The mlflow source: which files it claims, which run they belong to, and what its reader yields.

The fixtures are files in the exact format MLflow's file store writes (``FileStore._log_run_metric``
in mlflow/store/tracking/file_store.py: ``f"{metric.timestamp} {metric.value} {metric.step}\\n"``,
plus ``dataset_name dataset_digest`` when logged against a dataset; read back by
``_get_metric_from_line``, which also accepts the two-field lines of MLflow < 1.0). The last test
logs a run with the real MLflow client and checks lrwatch reads back what MLflow does.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePath
from typing import Any

import pytest
from lrwatch_mlflow import MlflowConfig, MlflowMetricReader, MlflowSource
from typer.testing import CliRunner

from lrwatch import plugins
from lrwatch.cli import app
from lrwatch.sources import layout
from lrwatch.sources.base import Batch, LogReader, Source
from lrwatch.sources.formats import build_formats

RUN_ID = "3f2a9c7e5b1d4e8f9a0b1c2d3e4f5a6b"
EXP_ID = "0"


def metric_file(root: Path, name: str, lines: str, *, exp: str = EXP_ID, run: str = RUN_ID) -> Path:
    path = root / exp / run / "metrics" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lines)
    return path


def records(batch: Batch) -> list[tuple[int, float | None, dict[str, float]]]:
    return list(batch.records())


def read_all(reader: LogReader) -> list[tuple[int, float | None, dict[str, float]]]:
    out = []
    while batch := reader.read():
        out += records(batch)
    return out


@pytest.fixture
def sources() -> Any:
    """lrwatch.sources.layout (scan, run_name, ...), the installed sources this one among them."""
    return layout


# --- claims and run_dir ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "metric", "run_dir"),
    [
        (f"0/{RUN_ID}/metrics/loss", "loss", f"0/{RUN_ID}"),
        (f"0/{RUN_ID}/metrics/train/loss", "train/loss", f"0/{RUN_ID}"),
        (f"0/{RUN_ID}/metrics/eval/metrics/acc", "eval/metrics/acc", f"0/{RUN_ID}"),
        (f"123456789012345678/{RUN_ID}/metrics/lr", "lr", f"123456789012345678/{RUN_ID}"),
    ],
)
def test_metric_files_are_claimed_and_named_by_their_path_under_metrics(
    relative: str, metric: str, run_dir: str
) -> None:
    source = MlflowSource()
    root = PurePath("/data/metrics/mlruns")  # a root that lies under a "metrics" dir, too
    assert source.claims(root / relative)
    assert source.metric_name(root / relative) == metric
    assert source.run_dir(root / relative) == root / run_dir


@pytest.mark.parametrize(
    "relative",
    [
        f"0/{RUN_ID}/params/lr",  # a run's parameters and tags are single values, not logs
        f"0/{RUN_ID}/tags/mlflow.runName",
        f"0/{RUN_ID}/meta.yaml",
        f"0/{RUN_ID}/artifacts/metrics/loss",
        f"0/{RUN_ID}/metrics",  # the directory's name, were it asked as a file
        f".trash/0/{RUN_ID}/metrics/loss",  # a deleted experiment
        f"0/models/m-{RUN_ID}/metrics/loss",  # an MLflow 3 logged model, not a run
        f"0/{RUN_ID}/metrics/system/cpu_utilization_percentage",  # system metrics: excluded
        "0/not-a-run-id/metrics/loss",
        f"experiment/{RUN_ID}/metrics/loss",
        "0/metrics.jsonl",
    ],
)
def test_other_files_are_not_claimed(relative: str) -> None:
    assert not MlflowSource().claims(PurePath("/mlruns") / relative)


def test_include_exclude_and_id_patterns_are_configurable() -> None:
    config = MlflowConfig(
        include=("loss", "train/*"),
        exclude=("train/acc",),
        experiment_id_pattern="exp-[a-z]+",
        run_id_pattern="run[0-9]+",
    )
    source = MlflowSource(config)
    assert source.claims(PurePath("exp-a/run1/metrics/loss"))
    assert source.claims(PurePath("exp-a/run1/metrics/train/loss"))
    assert not source.claims(PurePath("exp-a/run1/metrics/train/acc"))
    assert not source.claims(PurePath("exp-a/run1/metrics/lr"))
    assert not source.claims(PurePath(f"0/{RUN_ID}/metrics/loss"))


def test_config_is_validated_through_lrwatch_registry() -> None:
    """What ``lrwatch config check`` and the daemon see: bad fields are named."""
    config = plugins.validate_config("sources", "mlflow", {"exclude": [], "step": "line"})
    assert isinstance(config, MlflowConfig)
    assert config.exclude == () and config.step == "line"
    with pytest.raises(plugins.PluginError, match=r"run_id_pattern.*not a regular expression"):
        plugins.validate_config("sources", "mlflow", {"run_id_pattern": "[0-9"})
    with pytest.raises(plugins.PluginError, match="tracking_uri"):
        plugins.validate_config("sources", "mlflow", {"tracking_uri": "file:/x"})
    with pytest.raises(plugins.PluginError, match="step"):
        plugins.validate_config("sources", "mlflow", {"step": "epoch"})


def test_lrwatch_discovery_finds_the_runs_and_names_them_experiment_slash_run(
    tmp_path: Path, sources: Any
) -> None:
    root = tmp_path / "mlruns"
    loss = metric_file(root, "train/loss", "1700000000000 2.5 0\n")
    lr = metric_file(root, "lr", "1700000000000 0.1 0\n")
    (loss.parents[2] / "params").mkdir()
    (loss.parents[2] / "params" / "lr").write_text("0.1")
    (loss.parents[2] / "meta.yaml").write_text("run_id: x\n")
    trashed = metric_file(root / ".trash", "loss", "1700000000000 1.0 0\n", exp="7")
    assert trashed.exists()

    assert sources.scan(root) == sorted([loss, lr])
    assert sources.log_format(loss, root=root) == "mlflow"
    assert sources.run_name(root, loss) == f"0/{RUN_ID}"
    assert sources.run_name(root, lr) == f"0/{RUN_ID}"
    reader = sources.open_reader(root, loss)
    assert reader.format == "mlflow" and reader.run == f"0/{RUN_ID}"
    assert records(reader.read()) == [(0, 1.7e9, {"train/loss": 2.5})]


def test_a_disabled_source_claims_nothing(tmp_path: Path, sources: Any) -> None:
    root = tmp_path / "mlruns"
    metric_file(root, "loss", "1700000000000 2.5 0\n")
    formats, problems = build_formats({"mlflow": {"enabled": False}})
    assert problems == []
    assert sources.scan(root, formats) == []
    assert sources.scan(root) == [root / "0" / RUN_ID / "metrics" / "loss"]  # others unaffected


# --- the reader ------------------------------------------------------------------------------


def test_reader_parses_every_line_shape_mlflow_writes(tmp_path: Path) -> None:
    path = metric_file(
        tmp_path,
        "loss",
        "1700000000000 2.5 0\n"  # timestamp value step
        "1700000001500 1e-05 1\n"  # str(float) may use an exponent
        "1700000002000 nan 2\n"  # str(float("nan")): kept, it is the signal
        "1700000003000 inf 3\n"
        "1700000004000 -inf 4\n"
        "1700000005000 0.75 5 eval-set 1a2b3c\n"  # logged against a dataset (5 fields)
        "1699999999000 3.0\n",  # MLflow < 1.0: no step, read back as 0
    )
    reader = MlflowMetricReader(path, "r", "loss")
    got = read_all(reader)
    assert [step for step, _, _ in got] == [0, 1, 2, 3, 4, 5, 0]
    assert [wall for _, wall, _ in got][:2] == [1.7e9, 1700000001.5]
    values = [v["loss"] for _, _, v in got]
    assert values[0] == 2.5 and values[1] == 1e-05 and values[5] == 0.75 and values[6] == 3.0
    assert math.isnan(values[2]) and values[3] == math.inf and values[4] == -math.inf
    assert reader.stats["corrupt_records"] == 0
    assert isinstance(reader, LogReader) and isinstance(MlflowSource(), Source)


def test_a_torn_last_line_is_not_yet_and_corrupt_lines_are_counted(tmp_path: Path) -> None:
    path = metric_file(tmp_path, "loss", "1700000000000 2.5 0\n1700000001000 2.")
    reader = MlflowMetricReader(path, "r", "loss")
    assert [s for s, _, _ in read_all(reader)] == [0]
    with path.open("a") as out:
        out.write("4 1\n")  # the rest of the line, as a second write() would append it
        out.write("garbage\n1700000002000 x 2\n1 2 3 4\n\n1700000003000 2.3 3\n")
    got = read_all(reader)
    assert got == [(1, 1700000001.0, {"loss": 2.4}), (3, 1700000003.0, {"loss": 2.3})]
    assert reader.stats["corrupt_records"] == 3


def test_state_round_trips_and_a_new_reader_yields_only_new_lines(tmp_path: Path) -> None:
    path = metric_file(tmp_path, "loss", "".join(f"17{i:011d} {i}.5 {i}\n" for i in range(10)))
    first = MlflowMetricReader(path, "r", "loss", chunk_bytes=64)
    assert len(read_all(first)) == 10
    state = first.state_dict()
    with path.open("a") as out:
        out.write("1700000009999 0.25 10\n")
    second = MlflowMetricReader(path, "r", "loss")
    second.load_state_dict(state)
    assert second.state_dict() == state
    assert read_all(second) == [(10, 1700000009.999, {"loss": 0.25})]
    with pytest.raises(ValueError, match="lines"):
        second.load_state_dict({"tail": state["tail"], "lines": -1})
    with pytest.raises(ValueError, match="offset"):
        second.load_state_dict({"tail": {"offset": "x"}})


def test_a_rewritten_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    """A run deleted and logged anew under the same path (``mlflow gc`` then a restart)."""
    path = metric_file(tmp_path, "loss", "1700000000000 2.5 0\n1700000001000 2.4 1\n")
    reader = MlflowMetricReader(path, "r", "loss")
    assert len(read_all(reader)) == 2
    path.unlink()
    metric_file(tmp_path, "loss", "1800000000000 9.0 0\n")
    assert read_all(reader) == [(0, 1.8e9, {"loss": 9.0})]
    assert reader.rereading  # still below where it had been: lrwatch knows it may be old news
    assert reader.stats["replacements"] + reader.stats["truncations"] == 1


def test_line_steps_for_jobs_that_log_without_step(tmp_path: Path) -> None:
    """``mlflow.log_metric("loss", v)`` writes step 0 every time; ``step: line`` numbers the
    lines instead, and the count survives a restart and restarts with the file."""
    path = metric_file(tmp_path, "loss", "1700000000000 2.5 0\n\n1700000001000 2.4 0\n")
    reader = MlflowMetricReader(path, "r", "loss", step="line")
    assert [s for s, _, _ in read_all(reader)] == [0, 1]
    with path.open("a") as out:
        out.write("1700000002000 2.3 0\n")
    resumed = MlflowMetricReader(path, "r", "loss", step="line")
    resumed.load_state_dict(reader.state_dict())
    assert [s for s, _, _ in read_all(resumed)] == [2]
    path.write_text("1700000009000 5.0 0\n")  # shorter: truncated and rewritten
    assert [s for s, _, _ in read_all(resumed)] == [0]


# --- against the real MLflow -----------------------------------------------------------------


def test_reads_back_what_real_mlflow_logged(
    tmp_path: Path, sources: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    # MLflow 3.x refuses the file store unless asked (it is in "maintenance mode").
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    root = tmp_path / "mlruns"
    client = mlflow.MlflowClient(tracking_uri=root.as_uri())
    experiment = client.create_experiment("lrwatch-test")
    run = client.create_run(experiment).info.run_id
    losses = [2.0 / (1 + s) for s in range(20)] + [math.nan, math.inf]
    for step, loss in enumerate(losses):
        client.log_metric(run, "train/loss", loss, step=step, timestamp=1_700_000_000_000 + step)
        client.log_metric(run, "lr", 0.1, step=step)
    client.log_param(run, "batch_size", "32")
    client.set_tag(run, "stage", "test")
    trashed = client.create_run(experiment).info.run_id
    client.log_metric(trashed, "loss", 1.0, step=0)
    other = client.create_experiment("deleted")
    client.log_metric(client.create_run(other).info.run_id, "loss", 1.0, step=0)
    client.delete_experiment(other)  # moved under mlruns/.trash/

    found = sources.scan(root)
    names = {(sources.run_name(root, p), sources.log_format(p, root=root)) for p in found}
    assert names == {(f"{experiment}/{run}", "mlflow"), (f"{experiment}/{trashed}", "mlflow")}
    mine = {p.relative_to(root / experiment / run).as_posix() for p in found if run in p.parts}
    assert mine == {"metrics/train/loss", "metrics/lr"}

    loss_file = root / experiment / run / "metrics" / "train" / "loss"
    got = read_all(sources.open_reader(root, loss_file))
    history = client.get_metric_history(run, "train/loss")
    assert [s for s, _, _ in got] == [m.step for m in history]
    assert [w for _, w, _ in got] == [m.timestamp / 1000 for m in history]
    ours = [v["train/loss"] for _, _, v in got]
    theirs = [m.value for m in history]
    assert ours[:20] == theirs[:20] == losses[:20]
    assert math.isnan(ours[20]) and math.isnan(theirs[20]) and ours[21] == theirs[21] == math.inf
    assert os.stat(loss_file).st_size > 0


@pytest.mark.parametrize("where", ["store", "run", "metric file", "metrics dir"])
def test_lrwatch_replay_reads_a_store_a_run_or_one_metric(tmp_path: Path, where: str) -> None:
    """``lrwatch replay`` over MLflow's files, at any level: the run is named by its directory
    (``<exp>/<run>``, or ``<run>`` when given inside it), its metric by the path under metrics/."""
    losses = [1.0 / (1 + 0.05 * s) for s in range(100)] + [0.3 * 1.5**k for k in range(30)]
    lines = "".join(f"{1_700_000_000_000 + s} {v} {s}\n" for s, v in enumerate(losses))
    path = metric_file(tmp_path, "train/loss", lines)
    run_dir = tmp_path / EXP_ID / RUN_ID
    target = {
        "store": tmp_path,
        "run": run_dir,
        "metric file": path,
        "metrics dir": run_dir / "metrics",
    }[where]
    result = CliRunner().invoke(app, ["replay", str(target), "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.stdout.splitlines()]
    run = f"{EXP_ID}/{RUN_ID}" if where == "store" else RUN_ID
    assert {(f["run"], f["metric"]) for f in found} == {(run, "train/loss")}
    assert "divergence" in {f["kind"] for f in found}
