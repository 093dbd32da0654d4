"""The training loop every corpus run goes through: real torch training, logged like a job would.

Kept apart from the run families (``corpus.py``) so that what is *measured* (one loop, one log
format) is visibly the same for every label; only the data, the model, the optimizer, the
schedule and the injected fault differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Job:
    """One training run. ``batches(step)`` returns the batch of that step (the stream)."""

    model: nn.Module
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], Batch]
    steps: int
    scheduler: object | None = None  # any torch LR scheduler, stepped once per step
    lr_factor: Callable[[int], float] = lambda step: 1.0  # injected fault: factor on the LR
    corrupt: Callable[[int, Batch], Batch] | None = None  # injected fault: a bad batch
    val: Batch | None = None
    val_every: int = 0
    log_grad_norm: bool = False
    log_lr: bool = True
    tail_after_nonfinite: int = 5  # a dead job logs a few NaNs before someone kills it
    records: list[dict[str, float]] = field(default_factory=list)


def _sig(x: float) -> float:
    """Six significant digits, as most loggers print: keeps the corpus a few MB."""
    return float(f"{x:.6g}") if math.isfinite(x) else x


def run(job: Job) -> list[dict[str, float]]:
    """Train and return the log records (``step``, ``loss``, ``grad_norm``, ``lr``, ``val_loss``).

    The logged loss of step t is computed on step t's batch before its update, the grad norm is
    that batch's gradient, the LR is the one its update uses (schedule x injected factor).
    """
    model, opt = job.model, job.optimizer
    nonfinite_left: int | None = None
    for step in range(job.steps):
        xb, yb = job.batches(step)
        if job.corrupt is not None:
            xb, yb = job.corrupt(step, (xb, yb))
        model.train()
        loss = job.loss_fn(model(xb), yb)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        record: dict[str, float] = {"step": step, "loss": _sig(loss.item())}
        if job.log_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
            record["grad_norm"] = _sig(float(norm))
        factor = job.lr_factor(step)
        base = [g["lr"] for g in opt.param_groups]
        for g in opt.param_groups:
            g["lr"] = g["lr"] * factor
        if job.log_lr:
            record["lr"] = _sig(opt.param_groups[0]["lr"])
        opt.step()
        for g, lr in zip(opt.param_groups, base, strict=True):
            g["lr"] = lr  # the schedule never sees the fault, as with lrwatch's own hook
        if job.scheduler is not None:
            job.scheduler.step()  # type: ignore[attr-defined]
        if job.val is not None and job.val_every and step % job.val_every == 0:
            model.eval()
            with torch.no_grad():
                record["val_loss"] = _sig(job.loss_fn(model(job.val[0]), job.val[1]).item())
        job.records.append(record)
        if nonfinite_left is None and not math.isfinite(record["loss"]):
            nonfinite_left = job.tail_after_nonfinite
        if nonfinite_left is not None:
            if nonfinite_left == 0:
                break
            nonfinite_left -= 1
    return job.records
