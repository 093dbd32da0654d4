"""A real ``lrwatch run`` daemon over an MLflow file store: a run whose loss diverges is found,
named ``<experiment_id>/<run_id>``, and counted under ``format="mlflow"``.

The metric files are appended line by line while the daemon watches, in the exact format of
MLflow's ``FileStore._log_run_metric`` (``f"{timestamp} {value} {step}\\n"``), so the test needs
no MLflow install; test_lrwatch_mlflow_source.py checks that format against the real client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lrwatch.testing import free_port, get, scrape, spawn, stop, wait_for, wait_ready

pytestmark = pytest.mark.slow

EXPERIMENT = "0"
RUN_ID = "5d0c8e1f2a3b4c5d6e7f8091a2b3c4d5"
RUN = f"{EXPERIMENT}/{RUN_ID}"


@contextmanager
def running_daemon(tmp_path: Path, mode: str) -> Iterator[tuple[Path, int, Path]]:
    """A daemon over ``tmp_path/mlruns`` with the mlflow source configured: (root, port, log)."""
    root, log = tmp_path / "mlruns", tmp_path / "daemon.log"
    (root / EXPERIMENT).mkdir(parents=True)
    config = tmp_path / "lrwatch.yaml"
    config.write_text(json.dumps({"mode": mode, "sources": {"mlflow": {"exclude": []}}}))
    port = free_port()
    proc = spawn(root, tmp_path / "state.sqlite", port, log, "--config", str(config))
    try:
        wait_ready(proc, port, log)
        yield root, port, log
    finally:
        stop(proc, log)


def status_row(port: int) -> dict[str, Any] | None:
    runs = json.loads(get(port, "/api/status"))["runs"]
    return next((r for r in runs if r["run"] == RUN), None)


def log_metric(root: Path, name: str, step: int, value: float) -> None:
    """What ``FileStore._log_run_metric`` does: one append of one line."""
    path = root / EXPERIMENT / RUN_ID / "metrics" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(f"{1_700_000_000_000 + 1000 * step} {value} {step}\n")


def test_daemon_finds_the_divergence_of_an_mlflow_run(tmp_path: Path) -> None:
    with running_daemon(tmp_path, "observe") as (root, port, log):
        observe_a_divergence(root, port, log)


def observe_a_divergence(root: Path, port: int, log: Path) -> None:
    run_dir = root / EXPERIMENT / RUN_ID
    (run_dir / "params").mkdir(parents=True)
    (run_dir / "params" / "lr").write_text("0.1")  # not a log: must not become a metric
    (run_dir / "meta.yaml").write_text(f"run_id: {RUN_ID}\nexperiment_id: '0'\n")
    for step in range(60):  # a healthy start ...
        log_metric(root, "train/loss", step, 2.0 / (1 + 0.1 * step))
        log_metric(root, "lr", step, 0.1)
    wait_for(
        lambda: scrape(port).get(f'lrwatch_run_last_step{{run="{RUN}"}}') == 59,
        15,
        "the daemon to read the healthy steps",
        show=lambda: log.read_text()[-2000:],
    )
    assert scrape(port).get(f'lrwatch_findings_total{{kind="divergence",run="{RUN}"}}', 0) == 0
    for step in range(60, 80):  # ... then the loss blows up, and turns NaN
        log_metric(root, "train/loss", step, 0.5 * 2.0 ** (step - 55))
    log_metric(root, "train/loss", 80, float("nan"))

    def diverged() -> bool:
        row = status_row(port)
        return row is not None and "divergence" in row["active_findings"]

    wait_for(diverged, 15, "a divergence finding", show=lambda: get(port, "/api/status"))
    metrics = scrape(port)
    assert metrics[f'lrwatch_findings_total{{kind="divergence",run="{RUN}"}}'] >= 1
    assert metrics['lrwatch_ingested_samples_total{format="mlflow"}'] >= 60 * 2 + 21
    assert metrics[f'lrwatch_run_last_step{{run="{RUN}"}}'] == 80
    row = status_row(port)
    # The NaN, read as the run's loss (role train/loss), spelled "nan" (/api/status is strict JSON).
    assert row is not None and row["loss"] == "nan"
    assert "ERROR" not in log.read_text()


def test_daemon_acts_on_an_mlflow_run_through_a_hook_attached_to_its_directory(
    tmp_path: Path,
) -> None:
    """The run lrwatch names ``<experiment>/<run_id>`` is the directory a job attaches its hook
    to (``<tracking_dir>/<experiment_id>/<run_id>``), so act mode reaches the job."""
    torch = pytest.importorskip("torch")
    import lrwatch

    with running_daemon(tmp_path, "act") as (root, port, log):
        run_dir = root / EXPERIMENT / RUN_ID
        run_dir.mkdir()
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        hook = lrwatch.attach(optimizer, run_dir, check_interval=0.01, heartbeat_interval=0.2)
        for step in range(60):
            hook.step(step)
            log_metric(root, "loss", step, 2.0 / (1 + 0.1 * step))

        def alive() -> bool:
            hook.step(59)
            row = status_row(port)
            return row is not None and row["hook_alive"] and row["last_step"] == 59

        wait_for(alive, 15, "the daemon to see the run and its hook", show=lambda: status_row(port))
        step = 60
        deadline = time.monotonic() + 20
        while hook.lr_scale == 1.0:
            assert time.monotonic() < deadline, (status_row(port), log.read_text()[-2000:])
            hook.step(step)
            log_metric(root, "loss", step, 0.5 * 2.0 ** min(step - 55, 40))
            step += 1
            time.sleep(0.02)
        assert hook.lr_scale < 1.0
        row = status_row(port)
        assert row is not None and row["lr_scale"] == hook.lr_scale
        assert "divergence" in row["active_findings"]
