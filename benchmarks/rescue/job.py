"""One training job of the rescue benchmark, and the worker process that runs many of them.

    python -m benchmarks.rescue.job SPECS.json [--parallel N]

runs every job of SPECS.json (a list of ``JobSpec`` objects), N at a time, as threads of this one
process: the benchmark is allowed two busy processes (this worker and the daemon), and torch
releases the GIL in its kernels and ``time.sleep`` in the paced jobs, so threads share the CPU
well. Each job writes ``metrics.jsonl`` (the log the daemon tails) and ``result.json`` into its
run directory.

The three methods differ only in who may change the LR, always as a factor on top of the job's
own ``LambdaLR`` schedule:

- ``fixed``: nobody;
- ``plateau``: torch's ``ReduceLROnPlateau`` with its defaults (factor 0.1, patience 10,
  threshold 1e-4 rel), stepped every ``EVAL_EVERY`` steps on the validation loss, or, for the
  stream, on the prequential loss (the mean training loss of the last ``EVAL_EVERY`` batches,
  each measured before the model trained on it). It decides on a one-parameter proxy optimizer
  whose LR is the factor, so its reductions compose with the schedule (ReduceLROnPlateau
  writes ``group["lr"]`` itself, which a closed-form ``LambdaLR`` would overwrite);
- ``lrwatch``: ``lrwatch.attach(optimizer, run_dir)`` and ``hook.step(step)``, the README's
  two lines, with a ``lrwatch run`` daemon process watching the log.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.rescue.scenarios import DRIFT_STEP, SCENARIOS
from benchmarks.rescue.tasks import task

EVAL_EVERY = 20
# A stream's recovery after a drift takes tens of steps: its validation loss is measured every 5,
# or the recovery of every method would read as 20 or 40 (ReduceLROnPlateau still steps every 20).
STREAM_EVAL_EVERY = 5
METHODS = ("fixed", "plateau", "lrwatch")
_INIT_LOCK = threading.Lock()  # torch's global RNG seeds the model's initialisation


@dataclass(frozen=True)
class JobSpec:
    scenario: str
    method: str
    seed: int
    run_dir: str
    step_time: float = 0.0  # seconds slept per step: the pace of a real (GPU) training step
    lr: float | None = None  # overrides the scenario's peak LR (the reference sweep)


def run_job(spec: JobSpec) -> dict[str, Any]:
    scenario = SCENARIOS[spec.scenario]
    problem = task(scenario.task, DRIFT_STEP)
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _INIT_LOCK:
        torch.manual_seed(spec.seed)
        model = problem.model()
    lr = spec.lr if spec.lr is not None else scenario.lr
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    proxy = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    plateau = None
    if spec.method == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(proxy)  # torch's defaults
    schedule = scenario.schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: schedule(s) * proxy.param_groups[0]["lr"]
    )
    hook = None
    if spec.method == "lrwatch":
        import lrwatch

        hook = lrwatch.attach(optimizer, run_dir)
    eval_every = STREAM_EVAL_EVERY if problem.prequential else EVAL_EVERY
    gen = np.random.default_rng(1000 + spec.seed)
    recent: list[float] = []
    first_nonfinite: int | None = None
    started = time.monotonic()
    with (run_dir / "metrics.jsonl").open("a", buffering=1) as log:
        for step in range(scenario.steps):
            x, y = problem.batch(step, gen)
            loss = problem.loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf))
            lr_used = hook.lrs[0] if hook is not None else optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            if hook is not None:
                hook.step(step)
            value = loss.item()
            recent.append(value)
            if first_nonfinite is None and not math.isfinite(value):
                first_nonfinite = step
            record: dict[str, float] = {"step": step, "loss": value, "lr": lr_used}
            record["grad_norm"] = grad_norm
            if step % eval_every == eval_every - 1 or step == scenario.steps - 1:
                val_loss, score = problem.evaluate(model, step)
                record.update({"val/loss": val_loss, "val/score": score})
            if step % EVAL_EVERY == EVAL_EVERY - 1:
                if plateau is not None:
                    metric = float(np.mean(recent)) if problem.prequential else val_loss
                    plateau.step(metric)
                recent.clear()
            record["time"] = time.time()
            log.write(json.dumps(record) + "\n")  # NaN/Infinity are written, lrwatch reads them
            if spec.step_time:
                time.sleep(spec.step_time)
    seconds = time.monotonic() - started
    val_loss, score = problem.evaluate(model, scenario.steps - 1)
    result = {
        **asdict(spec),
        "lr": lr,
        "val_loss": val_loss,
        "score": score,
        "score_name": problem.score_name,
        "first_nonfinite": first_nonfinite,
        "steps": scenario.steps,
        "ms_per_step": 1000 * seconds / scenario.steps,
        "lr_factor": hook.lr_scale if hook is not None else proxy.param_groups[0]["lr"],
    }
    if hook is not None:
        hook.close()
    (run_dir / "result.json").write_text(json.dumps(result))
    return result


def _safe(spec: JobSpec) -> dict[str, Any]:
    try:
        return run_job(spec)
    except Exception:  # one broken job must not lose the others' results
        traceback.print_exc()
        return {**asdict(spec), "error": traceback.format_exc(limit=3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", type=Path)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core's worth per job thread; the daemon needs the other
    specs = [JobSpec(**raw) for raw in json.loads(args.specs.read_text())]
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        results = list(pool.map(_safe, specs))
    failed = [r for r in results if "error" in r]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
