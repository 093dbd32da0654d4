"""A small real PyTorch job with the lrwatch hook, for the actuation tests.

A linear model fits random data with plain SGD at a constant LR (no schedule, so the LR the job
uses is exactly ``--lr`` times the hook's factor). Each step logs ``step``, ``loss``, ``lr``
(``hook.lrs[0]``, the LR the next step uses) and ``lr_scale`` to ``RUN_DIR/metrics.jsonl``.

    python tests/integration/actuation_job.py RUN_DIR [--steps N] [--step-time T]
        [--lr 0.1] [--check-interval S] [--state-in F] [--state-out F]
        [--exit-after-scale K] [--start-step S] [--on rollback ...]

``--exit-after-scale K``: once the hook's factor differs from the one it started with, run K more
steps, write ``hook.state_dict()`` to ``--state-out`` and exit 0 (a job that checkpoints and
ends). ``--state-in`` restores a checkpoint written so (the hook's state as JSON, the model and
optimizer beside it as ``.pt``). ``--diverge-when F``: once file F exists, the job's own
schedule sets the LR to 20x ``--lr`` (a job that is fine, then diverges when a test says so).
``--on EVENT`` registers a handler that appends ``{"event", "step", "seq"}`` to
``RUN_DIR/handled.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lrwatch
from lrwatch.protocol import channel
from lrwatch.protocol.types import Command

JOB = Path(__file__)


def start(run_dir: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """This job as a subprocess (the tests' side)."""
    out = (log or run_dir.parent / f"{run_dir.name}.job.log").open("ab")
    with out:
        return subprocess.Popen(
            [sys.executable, str(JOB), str(run_dir), *args], stdout=out, stderr=subprocess.STDOUT
        )


def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``lrwatch`` command line, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "LRWATCH_API_TOKEN"}
    if token is not None:
        env["LRWATCH_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "lrwatch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def channel_files(run_dir: Path, kind: str) -> list[str]:
    """The files of one part of a run's channel ("commands" or "acks"), by name."""
    directory = channel.channel_dir(run_dir) / kind
    return sorted(p.name for p in directory.glob("*.json")) if directory.is_dir() else []


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def plateau_reported_only(tmp: Path) -> tuple[str, str]:
    """``--config`` for a daemon whose policy reports plateaus without cutting. The actuation
    job fits random data at a constant LR, so it sits at its noise floor — a plateau, which
    the default policy answers with LR x0.5 — and tests that count the commands a manual
    override or a divergence makes must not see that cut among them."""
    config = tmp / "plateau-reported-only.yaml"
    config.write_text("policy:\n  factors: {divergence: 0.1, oscillation: 0.5}\n")
    return "--config", str(config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--step-time", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--check-interval", type=float, default=0.1)
    parser.add_argument("--state-in", type=Path)
    parser.add_argument("--state-out", type=Path)
    parser.add_argument("--exit-after-scale", type=int)
    parser.add_argument("--start-step", type=int, default=0)
    parser.add_argument("--diverge-when", type=Path)
    parser.add_argument("--on", action="append", default=[])
    args = parser.parse_args()

    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    hook = lrwatch.attach(optimizer, run_dir, check_interval=args.check_interval)
    if args.state_in is not None:
        hook.load_state_dict(json.loads(args.state_in.read_text()))
        weights = args.state_in.with_suffix(".pt")
        if weights.exists():  # the rest of a real checkpoint, so the loss goes on where it was
            saved = torch.load(weights)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])

    def handler(event: str) -> Callable[[int, Command], None]:
        def record(step: int, command: Command) -> None:
            with (run_dir / "handled.jsonl").open("a") as out:
                out.write(json.dumps({"event": event, "step": step, "seq": command.seq}) + "\n")

        return record

    for event in args.on:
        hook.on(event, handler(event))

    initial_scale = hook.lr_scale
    countdown = None
    with (run_dir / "metrics.jsonl").open("a") as log:
        for step in range(args.start_step, args.start_step + args.steps):
            if args.diverge_when is not None and args.diverge_when.exists():
                args.diverge_when = None  # the schedule's own change; the hook's factor on top
                for group in optimizer.param_groups:
                    group["lr"] = args.lr * 20
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            hook.step(step)
            record = {"step": step, "loss": loss.item(), "lr": hook.lrs[0]}
            record["lr_scale"] = hook.lr_scale
            log.write(json.dumps(record) + "\n")
            log.flush()
            if args.exit_after_scale is not None:
                if countdown is None and hook.lr_scale != initial_scale:
                    countdown = args.exit_after_scale
                if countdown is not None:
                    countdown -= 1
                    if countdown <= 0:
                        break
            time.sleep(args.step_time)
    if args.state_out is not None:
        saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        torch.save(saved, args.state_out.with_suffix(".pt"))
        args.state_out.write_text(json.dumps(hook.state_dict()))
    hook.close()


if __name__ == "__main__":
    main()
