"""Generate the labelled detection corpus: real PyTorch runs on CPU, each a JSONL log + labels.

Run from the repository root (about 4 minutes on one core; deterministic, seeds fixed):

    .venv/bin/python -m benchmarks.detection.corpus            # all runs
    .venv/bin/python -m benchmarks.detection.corpus --only drift  # names containing "drift"

Writes ``benchmarks/detection/corpus/<label>/<name>/metrics.jsonl`` (``step``, ``loss``, and as
the run logs them ``grad_norm``, ``lr``, ``val_loss``) and ``labels.json`` beside it.

Labels
------
``healthy``      nothing to page for: noisy small-batch runs, full-batch runs, SGDR warm
                 restarts, benign spikes of a character LM fed corrupted batches, classifiers
                 fed corrupted batches that recover, regressions whose loss spans decades.
``divergence``   the loss runs away: an LR spike injected at a known step (a factor on the LR
                 from then on, as a bad config edit or a resumed job does), a warm-up to a peak
                 LR far too high, an LR too high from the first step, classifiers that go
                 erratic without ever producing a NaN.
``oscillation``  full-batch gradient descent past the stability edge (lr > 2 / lambda_max) of a
                 non-separable logistic or softmax regression: a lasting period-2 cycle.
``plateau``      the loss stops improving: the LR collapses at a known step (a schedule bug),
                 an LR far too small from the start, a saddle at a small initialisation.
``drift``        a continual-learning model on a fraud-like imbalanced stream whose fraud
                 pattern changes at a known step (concept shift): the loss steps up by about
                 1.2x to 3x and the model slowly adapts.
``overfit``      the validation loss of a big model on a small training set reaches its
                 minimum and rises while the training loss keeps falling.

How each onset is known is in ``labels.json`` (``onset_from``): ``injection`` (the step after
the fault: the first loss it shapes), ``construction`` (from the first step, or the stream's
shift step), or ``hindsight`` (read off the finished curve by a rule stated in
:func:`_hindsight_onset` / :func:`_val_minimum`, never by a detector under test).
Labels are checked against the outcome, and the generator prints every relabel: an injected
LR fault that did not go non-finite and did not end with a mean loss 3x its pre-fault mean is
``transient`` if its 20-step median rose 2x or more (it hurt, then the run recovered by itself:
neither a divergence to catch nor a healthy run to keep quiet on, so it is reported but not
scored) and ``healthy`` otherwise; a warm-up or too-high LR that never went non-finite nor ended
10x above its best level and above where it started is ``healthy``; an "oscillation" whose loss
converged (final swing < 0.5 %) is ``healthy``; an "overfit" run whose validation loss did not
end 5 % above its minimum is ``healthy``; a "drift" stream whose loss, over the 200 steps after
the shift, is not 15 % above the 200 before (geometric means) is ``healthy`` (the shift missed
what the model had learned).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.detection import _data as data
from benchmarks.detection import _models as models
from benchmarks.detection._harness import Batch, Job, run

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

ce = nn.functional.cross_entropy
mse = nn.functional.mse_loss


def bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), y.float())


@dataclass
class Spec:
    """One corpus run: how to build its job, and what is known about it by construction."""

    label: str
    name: str
    description: str
    build: Callable[[], Job]
    facts: dict[str, Any] = field(default_factory=dict)
    injected_at: int | None = None  # the step whose update first uses the fault


# -- building blocks ---------------------------------------------------------------------------


def classifier(
    split: data.Split,
    dims: tuple[int, ...],
    *,
    opt: str,
    lr: float,
    sched: str = "constant",
    batch: int | None = 32,
    steps: int = 1000,
    seed: int = 0,
    act: type[nn.Module] = nn.ReLU,
    init_std: float = 0.0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = ce,
    lr_factor: Callable[[int], float] | None = None,
    corrupt: Callable[[int, Batch], Batch] | None = None,
    grad: bool = True,
    val_every: int = 0,
) -> Callable[[], Job]:
    def build() -> Job:
        x, y, xv, yv = split
        model = models.mlp(dims, seed=seed, act=act, init_std=init_std)
        o = models.optimizer(opt, model.parameters(), lr)
        return Job(
            model,
            loss_fn,
            o,
            models.minibatches(x, y, batch, seed),
            steps,
            models.scheduler(sched, o, steps),
            lr_factor=lr_factor or (lambda s: 1.0),
            corrupt=corrupt,
            val=(xv, yv),
            val_every=val_every,
            log_grad_norm=grad,
        )

    return build


def char_lm(
    *,
    opt: str,
    lr: float,
    sched: str,
    steps: int = 1500,
    seed: int = 0,
    batch: int = 32,
    corrupt_at: tuple[int, ...] = (),
    lr_factor: Callable[[int], float] | None = None,
    grad: bool = True,
) -> Callable[[], Job]:
    """A character LM on generated text; ``corrupt_at`` steps get a batch of random characters
    (a shard of garbage, a broken tokenizer): a benign, LLM-style loss spike."""

    def build() -> Job:
        text = data.text(seed)
        torch.manual_seed(seed)
        model = models.CharLM(len(data.ALPHABET))
        o = models.optimizer(opt, model.parameters(), lr)
        return Job(
            model,
            ce,
            o,
            models.char_batches(text, 12, batch, seed),
            steps,
            models.scheduler(sched, o, steps),
            lr_factor=lr_factor or (lambda s: 1.0),
            corrupt=models.garbage_tokens(corrupt_at, seed),
            log_grad_norm=grad,
        )

    return build


def fraud(
    seed: int,
    *,
    shift_at: int,
    shift: float,
    opt: str = "sgd",
    lr: float = 0.01,
    dims: tuple[int, ...] = (12, 16, 1),
    steps: int = 2000,
    rate: float = 0.03,
    grad: bool = True,
) -> Callable[[], Job]:
    """Online training on the stream, one step per incoming batch; the logged loss is the
    prequential loss (each batch is scored before the model learns from it)."""

    def build() -> Job:
        stream = data.FraudStream(seed, shift_at=shift_at, shift=shift, rate=rate)
        model = models.mlp(dims, seed=seed)
        o = models.optimizer(opt, model.parameters(), lr)
        return Job(model, bce, o, stream, steps, None, log_grad_norm=grad)

    return build


def after(step: int, factor: float) -> Callable[[int], float]:
    return lambda s: factor if s >= step else 1.0


def corrupt_inputs(
    steps: tuple[int, ...], scale: float, seed: int
) -> Callable[[int, Batch], Batch]:
    """A corrupted batch: inputs scaled (a unit bug upstream) and labels shuffled (a broken
    join): the loss spikes on it, and a little after it while the model shakes off the update."""
    gen = torch.Generator().manual_seed(seed + 99)

    def corrupt(step: int, b: Batch) -> Batch:
        if step not in steps:
            return b
        x, y = b
        return x * scale, y[torch.randperm(len(y), generator=gen)]

    return corrupt


def stability_edge(split: data.Split, classes: int) -> float:
    """2 / lambda_max of the mean loss's Hessian at the optimum of a linear model (full batch).

    Past it, gradient descent cannot settle; on a non-separable logistic loss it settles into a
    period-2 cycle instead of diverging (Meng et al. 2024)."""
    x, y, _, _ = split
    return fitted_edge(x, y, bce if classes == 2 else ce, 1 if classes == 2 else classes)


def fitted_edge(
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    outputs: int,
    *,
    max_iter: int = 500,
    rounds: int = 1,
) -> float:
    """2 / lambda_max of ``loss_fn``'s Hessian at the optimum of a linear model with
    ``outputs`` outputs, fitted by L-BFGS (``rounds`` runs of ``max_iter`` iterations)."""
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], outputs)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    for _ in range(rounds):
        opt.step(closure)  # type: ignore[no-untyped-call]
    flat = torch.cat([model.weight.detach().flatten(), model.bias.detach()])
    n_w = model.weight.numel()

    def loss_of(p: torch.Tensor) -> torch.Tensor:
        w = p[:n_w].view_as(model.weight)
        return loss_fn(x @ w.T + p[n_w:], y)

    hessian = torch.autograd.functional.hessian(loss_of, flat)
    return 2.0 / float(torch.linalg.eigvalsh(hessian).max())


def onehot(split: data.Split, classes: int) -> data.Split:
    """The targets as one-hot vectors, for the square loss."""
    x, y, xv, yv = split
    return (
        x,
        nn.functional.one_hot(y, classes).float(),
        xv,
        nn.functional.one_hot(yv, classes).float(),
    )


def columns(split: data.Split, cols: list[int]) -> data.Split:
    x, y, xv, yv = split
    return x[:, cols], y, xv[:, cols], yv


def head(split: data.Split, n: int) -> data.Split:
    x, y, xv, yv = split
    return x[:n], y[:n], xv, yv


# -- the runs ----------------------------------------------------------------------------------


def healthy() -> Iterator[Spec]:
    digits, blobs = data.digits(), data.blobs(0)
    for i, (opt, lr, sched, batch) in enumerate(
        [
            ("sgd", 0.1, "constant", 16),
            ("momentum", 0.05, "step", 32),
            ("momentum", 0.05, "cosine", 16),
            ("adam", 3e-3, "warmup", 32),
            ("adam", 1e-3, "constant", 8),
            ("sgd", 0.3, "cosine", 64),
            ("momentum", 0.02, "warmup", 128),
            ("adam", 3e-3, "step", 16),
        ]
    ):
        yield Spec(
            "healthy",
            f"digits_mlp_{opt}_{sched}_b{batch}_s{i}",
            f"digits MLP, {opt} lr {lr:g}, {sched} schedule, batch {batch}",
            classifier(
                digits,
                (64, 32, 10),
                opt=opt,
                lr=lr,
                sched=sched,
                batch=batch,
                seed=i,
                grad=i % 2 == 0,
                val_every=10 if i % 3 == 0 else 0,
            ),
            {
                "dataset": "digits",
                "model": "mlp",
                "optimizer": opt,
                "schedule": sched,
                "batch": batch,
                "seed": i,
            },
        )
    for i, (opt, lr, batch) in enumerate(
        [("momentum", 0.05, 16), ("adam", 1e-3, 64), ("sgd", 0.1, 32), ("adam", 3e-3, 16)]
    ):
        yield Spec(
            "healthy",
            f"blobs_mlp_{opt}_b{batch}_s{i}",
            f"generated 4-class data with 2 % label noise, MLP, {opt} lr {lr:g}, batch {batch}",
            classifier(
                data.blobs(i),
                (20, 64, 4),
                opt=opt,
                lr=lr,
                batch=batch,
                steps=1500,
                seed=i,
                val_every=10,
                grad=i != 1,
            ),
            {
                "dataset": "blobs",
                "model": "mlp",
                "optimizer": opt,
                "schedule": "constant",
                "batch": batch,
                "seed": i,
            },
        )
    for i, (split, name, dims, batch) in enumerate(
        [
            (data.breast_cancer(), "breast_cancer_logreg", (30, 2), 8),
            (data.breast_cancer(), "breast_cancer_mlp", (30, 16, 2), 16),
            (data.wine(), "wine_mlp", (13, 16, 3), 8),
            (data.wine(), "wine_logreg", (13, 3), 16),
        ]
    ):
        yield Spec(
            "healthy",
            f"{name}_b{batch}",
            f"{name.replace('_', ' ')}, SGD lr 0.05, batch {batch}: a very noisy small-batch run",
            classifier(
                split,
                dims,
                opt="sgd",
                lr=0.05,
                batch=batch,
                steps=800,
                seed=i,
                val_every=10 if i % 2 else 0,
            ),
            {"dataset": name.split("_")[0], "optimizer": "sgd", "batch": batch, "seed": i},
        )
    # Warm restarts: the loss jumps at each restart and must not page.
    for i, (opt, lr) in enumerate([("momentum", 0.2), ("adam", 1e-2), ("sgd", 0.5)]):
        yield Spec(
            "healthy",
            f"char_lm_sgdr_{opt}_s{i}",
            f"character LM, {opt} lr {lr:g} with SGDR warm restarts (T_0 250, T_mult 2)",
            char_lm(opt=opt, lr=lr, sched="sgdr", seed=i, grad=i != 2),
            {
                "dataset": "text",
                "model": "char_lm",
                "optimizer": opt,
                "schedule": "sgdr",
                "batch": 32,
                "seed": i,
                "restarts_at": [250, 750],
            },
        )
    for i, (split, name, dims, lr) in enumerate(
        [(digits, "digits", (64, 32, 10), 0.1), (blobs, "blobs", (20, 64, 4), 0.2)]
    ):
        yield Spec(
            "healthy",
            f"{name}_mlp_sgdr_s{i}",
            f"{name} MLP, momentum lr {lr:g} with SGDR warm restarts, batch 64",
            classifier(
                split,
                dims,
                opt="momentum",
                lr=lr,
                sched="sgdr",
                batch=64,
                steps=1500,
                seed=i,
                val_every=10,
            ),
            {
                "dataset": name,
                "optimizer": "momentum",
                "schedule": "sgdr",
                "batch": 64,
                "seed": i,
                "restarts_at": [250, 750],
            },
        )
    # Benign spikes: a character LM fed a few batches of garbage.
    for i, (opt, lr, sched, at) in enumerate(
        [
            ("adam", 3e-3, "warmup", (300, 301, 700, 1100, 1101, 1102)),
            ("adam", 1e-2, "cosine", (400, 900, 901)),
            ("momentum", 0.1, "cosine", (250, 251, 800, 1300)),
            ("adam", 3e-3, "constant", (500, 501, 502, 1000)),
        ]
    ):
        yield Spec(
            "healthy",
            f"char_lm_spikes_{opt}_{sched}_s{i}",
            f"character LM, {opt} lr {lr:g} {sched}; garbage batches at {list(at)}: benign spikes",
            char_lm(opt=opt, lr=lr, sched=sched, seed=10 + i, corrupt_at=at, grad=i % 2 == 0),
            {
                "dataset": "text",
                "model": "char_lm",
                "optimizer": opt,
                "schedule": sched,
                "batch": 32,
                "seed": 10 + i,
                "spikes_at": list(at),
            },
        )
    # Corrupted batches that recover.
    for i, (split, name, dims, opt, lr, at, scale) in enumerate(
        [
            (digits, "digits", (64, 32, 10), "momentum", 0.05, (300, 301, 650), 1.0),
            (digits, "digits", (64, 32, 10), "adam", 1e-3, (400, 401, 402), 2.0),
            (blobs, "blobs", (20, 64, 4), "sgd", 0.1, (500, 900, 901), 3.0),
            (data.blobs(5), "blobs", (20, 64, 4), "adam", 3e-3, (600, 601), 2.0),
        ]
    ):
        yield Spec(
            "healthy",
            f"{name}_corrupt_batches_{opt}_s{i}",
            f"{name} MLP, {opt} lr {lr:g}; inputs x{scale:g} and labels shuffled in the "
            f"batches of steps {list(at)}, which the run survives",
            classifier(
                split,
                dims,
                opt=opt,
                lr=lr,
                batch=32,
                steps=1000,
                seed=20 + i,
                corrupt=corrupt_inputs(at, scale, i),
                grad=i % 2 == 1,
            ),
            {"dataset": name, "optimizer": opt, "batch": 32, "seed": 20 + i, "spikes_at": list(at)},
        )
    # Losses that span decades.
    for i, (split, name, dims, opt, lr, batch) in enumerate(
        [
            (data.wide_regression(0), "wide_regression_linear", (20, 1), "sgd", 0.02, 32),
            (data.wide_regression(1), "wide_regression_mlp", (20, 32, 1), "adam", 1e-2, 32),
            (data.wide_regression(2), "wide_regression_linear_full", (20, 1), "sgd", 0.05, None),
            (data.diabetes(), "diabetes_linear", (10, 1), "sgd", 0.01, 16),
        ]
    ):
        yield Spec(
            "healthy",
            f"{name}_s{i}",
            f"{name.replace('_', ' ')}, {opt} lr {lr:g}, batch {batch or 'full'}: MSE in raw "
            "units, falling over several decades",
            classifier(
                split,
                dims,
                opt=opt,
                lr=lr,
                batch=batch,
                steps=1000,
                seed=i,
                loss_fn=mse,
                val_every=10 if i % 2 else 0,
            ),
            {"dataset": name.split("_")[0], "optimizer": opt, "batch": batch, "seed": i},
        )
    # Full batch, below the edge: smooth, and for the logistic one a damped alternation.
    bc2 = columns(data.breast_cancer(), [0, 1])
    edge = stability_edge(bc2, 2)
    for i, (split, name, dims, lr, batch) in enumerate(
        [
            (digits, "digits_mlp_full", (64, 32, 10), 0.5, None),
            (data.wine(), "wine_mlp_full", (13, 16, 3), 0.3, None),
            (bc2, "breast_cancer_2f_logreg_0.9edge", (2, 2), 0.9 * edge, None),
            (data.blobs(6), "blobs_mlp_b512", (20, 64, 4), 0.1, 512),
        ]
    ):
        yield Spec(
            "healthy",
            name,
            f"{name.replace('_', ' ')}: gradient descent, lr {lr:.3g}, batch {batch or 'full'}",
            classifier(
                split, dims, opt="sgd", lr=lr, batch=batch, steps=800, seed=30 + i, val_every=10
            ),
            {"optimizer": "sgd", "batch": batch, "seed": 30 + i},
        )


def divergence() -> Iterator[Spec]:
    digits, blobs = data.digits(), data.blobs(0)
    # LR spikes injected at a known step.
    injected = [
        ("digits", digits, (64, 32, 10), "momentum", 0.05, "constant", 32, 500, 30.0, ce),
        ("digits", digits, (64, 32, 10), "momentum", 0.05, "cosine", 16, 400, 100.0, ce),
        ("digits", digits, (64, 32, 10), "sgd", 0.1, "constant", 64, 600, 50.0, ce),
        ("digits", digits, (64, 32, 10), "adam", 3e-3, "constant", 32, 500, 100.0, ce),
        ("digits", digits, (64, 32, 10), "adam", 1e-3, "warmup", 16, 700, 300.0, ce),
        ("blobs", blobs, (20, 64, 4), "momentum", 0.05, "constant", 32, 500, 50.0, ce),
        ("blobs", data.blobs(1), (20, 64, 4), "sgd", 0.1, "step", 16, 800, 100.0, ce),
        ("blobs", data.blobs(2), (20, 64, 4), "adam", 1e-3, "constant", 64, 400, 300.0, ce),
        ("wine", data.wine(), (13, 16, 3), "momentum", 0.05, "constant", 16, 300, 100.0, ce),
        (
            "breast_cancer",
            data.breast_cancer(),
            (30, 16, 2),
            "sgd",
            0.05,
            "constant",
            16,
            400,
            300.0,
            ce,
        ),
        ("diabetes", data.diabetes(), (10, 1), "sgd", 0.01, "constant", 16, 500, 200.0, mse),
        (
            "diabetes",
            data.diabetes(),
            (10, 32, 1),
            "momentum",
            0.01,
            "constant",
            32,
            400,
            50.0,
            mse,
        ),
        (
            "wide_regression",
            data.wide_regression(3),
            (20, 1),
            "sgd",
            0.01,
            "constant",
            32,
            600,
            30.0,
            mse,
        ),
        (
            "wide_regression",
            data.wide_regression(4),
            (20, 32, 1),
            "adam",
            1e-2,
            "constant",
            32,
            700,
            100.0,
            mse,
        ),
        ("digits", digits, (64, 32, 10), "momentum", 0.05, "cosine", 64, 300, 20.0, ce),
        ("digits", digits, (64, 32, 10), "sgd", 0.1, "warmup", 32, 500, 100.0, ce),
        ("blobs", data.blobs(3), (20, 64, 4), "momentum", 0.05, "constant", 16, 700, 30.0, ce),
        ("wine", data.wine(), (13, 16, 3), "sgd", 0.05, "constant", 8, 300, 300.0, ce),
        (
            "breast_cancer",
            data.breast_cancer(),
            (30, 16, 2),
            "momentum",
            0.02,
            "step",
            32,
            500,
            100.0,
            ce,
        ),
        ("diabetes", data.diabetes(), (10, 32, 1), "adam", 1e-3, "constant", 16, 400, 300.0, mse),
        (
            "wide_regression",
            data.wide_regression(8),
            (20, 32, 1),
            "momentum",
            1e-3,
            "constant",
            32,
            500,
            20.0,
            mse,
        ),
    ]
    for i, (name, split, dims, opt, lr, sched, batch, at, k, loss_fn) in enumerate(injected):
        yield Spec(
            "divergence",
            f"{name}_lr_spike_x{k:g}_{opt}_s{i}",
            f"{name} {'linear' if len(dims) == 2 else 'MLP'}, {opt} lr {lr:g} {sched}, batch "
            f"{batch}; from step {at} the LR is {k:g}x what the schedule says",
            classifier(
                split,
                dims,
                opt=opt,
                lr=lr,
                sched=sched,
                batch=batch,
                seed=40 + i,
                loss_fn=loss_fn,
                steps=at + 400,
                lr_factor=after(at, k),
                grad=i % 2 == 0,
                val_every=10 if i % 3 == 0 else 0,
            ),
            {
                "dataset": name,
                "optimizer": opt,
                "schedule": sched,
                "batch": batch,
                "seed": 40 + i,
                "lr_factor": k,
            },
            injected_at=at,
        )
    for i, (opt, lr, sched, at, k) in enumerate(
        [
            ("momentum", 0.1, "cosine", 600, 30.0),
            ("adam", 3e-3, "warmup", 800, 30.0),
            ("adam", 3e-3, "constant", 500, 100.0),
            ("sgd", 0.3, "constant", 700, 30.0),
            ("momentum", 0.1, "step", 900, 50.0),
            ("adam", 1e-3, "cosine", 600, 300.0),
        ]
    ):
        yield Spec(
            "divergence",
            f"char_lm_lr_spike_x{k:g}_{opt}_s{i}",
            f"character LM, {opt} lr {lr:g} {sched}; from step {at} the LR is {k:g}x",
            char_lm(
                opt=opt,
                lr=lr,
                sched=sched,
                seed=50 + i,
                steps=at + 400,
                lr_factor=after(at, k),
                grad=i % 2 == 1,
            ),
            {
                "dataset": "text",
                "model": "char_lm",
                "optimizer": opt,
                "schedule": sched,
                "batch": 32,
                "seed": 50 + i,
                "lr_factor": k,
            },
            injected_at=at,
        )
    # A moderate step up of the LR on a tanh MLP fitted with the square loss on one-hot
    # targets (the rescue benchmark's "LR x8 from step 700"): the loss does not leap, it
    # doubles within a few steps and keeps climbing for tens of steps before it blows up.
    for i, (name, split, dims, classes, opt, lr, at, k) in enumerate(
        [
            ("digits", digits, (64, 64, 10), 10, "momentum", 0.5, 500, 8.0),
            ("blobs", data.blobs(4), (20, 64, 4), 4, "momentum", 0.2, 400, 8.0),
            ("digits", digits, (64, 64, 10), 10, "sgd", 1.0, 600, 8.0),
            ("wine", data.wine(), (13, 16, 3), 3, "momentum", 0.2, 300, 8.0),
        ]
    ):
        yield Spec(
            "divergence",
            f"{name}_tanh_mse_lr_step_x{k:g}_{opt}_s{i}",
            f"{name} tanh MLP, square loss on one-hot targets, {opt} lr {lr:g}, batch 64; "
            f"from step {at} the LR is {k:g}x",
            classifier(
                onehot(split, classes),
                dims,
                opt=opt,
                lr=lr,
                batch=64,
                steps=at + 400,
                seed=90 + i,
                act=nn.Tanh,
                loss_fn=mse,
                lr_factor=after(at, k),
                grad=i % 2 == 0,
            ),
            {
                "dataset": name,
                "optimizer": opt,
                "batch": 64,
                "seed": 90 + i,
                "lr_factor": k,
                "loss": "mse_onehot",
            },
            injected_at=at,
        )
    # A warm-up to a peak LR far too high (the demo's failure, on other models).
    for i, (name, split, dims, act, opt, peak, loss_fn) in enumerate(
        [
            ("digits_tanh_mse", digits, (64, 64, 10), nn.Tanh, "momentum", 3.0, "onehot"),
            ("digits_relu", digits, (64, 32, 10), nn.ReLU, "momentum", 2.0, ce),
            ("blobs_relu", blobs, (20, 64, 4), nn.ReLU, "momentum", 3.0, ce),
            ("wine_tanh", data.wine(), (13, 16, 3), nn.Tanh, "momentum", 30.0, ce),
            ("diabetes_mlp", data.diabetes(), (10, 32, 1), nn.ReLU, "momentum", 0.5, mse),
        ]
    ):
        split_used = split
        fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        if loss_fn == "onehot":
            x, y, xv, yv = split
            split_used = (
                x,
                nn.functional.one_hot(y, 10).float(),
                xv,
                nn.functional.one_hot(yv, 10).float(),
            )
            fn = mse
        else:
            fn = loss_fn  # type: ignore[assignment]
        yield Spec(
            "divergence",
            f"{name}_warmup_too_high_s{i}",
            f"{name.replace('_', ' ')}, {opt}, linear warm-up over 300 steps to lr {peak:g}, "
            "far past the stability edge",
            classifier(
                split_used,
                dims,
                opt=opt,
                lr=peak,
                sched="warmup",
                batch=64,
                steps=3000,
                seed=60 + i,
                act=act,
                loss_fn=fn,
                grad=i % 2 == 0,
                val_every=10 if i == 1 else 0,
            ),
            {
                "dataset": name.split("_")[0],
                "optimizer": opt,
                "schedule": "warmup",
                "batch": 64,
                "seed": 60 + i,
                "peak_lr": peak,
            },
        )
    # Too high from the first step.
    for i, (name, split, dims, opt, lr, loss_fn, batch) in enumerate(
        [
            ("digits_mlp", digits, (64, 32, 10), "sgd", 3.0, ce, 32),
            ("blobs_mlp", blobs, (20, 64, 4), "momentum", 1.0, ce, 32),
            ("wide_regression_linear", data.wide_regression(5), (20, 1), "sgd", 0.5, mse, 32),
            ("diabetes_linear", data.diabetes(), (10, 1), "sgd", 1.5, mse, None),
        ]
    ):
        yield Spec(
            "divergence",
            f"{name}_lr_too_high_s{i}",
            f"{name.replace('_', ' ')}, {opt} lr {lr:g} from the first step, batch "
            f"{batch or 'full'}",
            classifier(
                split,
                dims,
                opt=opt,
                lr=lr,
                batch=batch,
                steps=600,
                seed=70 + i,
                loss_fn=loss_fn,
                grad=i % 2 == 1,
            ),
            {"dataset": name.split("_")[0], "optimizer": opt, "batch": batch, "seed": 70 + i},
        )
    # Classifiers that go erratic: Adam with an LR spike bounces between levels, never NaN.
    for i, (split, name, dims, at, k) in enumerate(
        [
            (digits, "digits", (64, 32, 10), 500, 30.0),
            (blobs, "blobs", (20, 64, 4), 600, 100.0),
            (data.wine(), "wine", (13, 16, 3), 400, 100.0),
            (digits, "digits", (64, 32, 10), 500, 1000.0),
            (blobs, "blobs", (20, 64, 4), 400, 1000.0),
            (data.breast_cancer(), "breast_cancer", (30, 16, 2), 300, 1000.0),
        ]
    ):
        yield Spec(
            "divergence",
            f"{name}_erratic_adam_x{k:g}_s{i}",
            f"{name} MLP, Adam lr 1e-3; from step {at} the LR is {k:g}x: the loss goes erratic",
            classifier(
                split,
                dims,
                opt="adam",
                lr=1e-3,
                batch=32,
                steps=at + 400,
                seed=80 + i,
                lr_factor=after(at, k),
                grad=i != 1,
            ),
            {"dataset": name, "optimizer": "adam", "batch": 32, "seed": 80 + i, "lr_factor": k},
            injected_at=at,
        )


def oscillation() -> Iterator[Spec]:
    sets = [
        ("breast_cancer_2f", columns(data.breast_cancer(), [0, 1]), 2),
        ("breast_cancer_3f", columns(data.breast_cancer(), [0, 1, 4]), 2),
        ("wine_2f", columns(data.wine(), [0, 1]), 3),
        ("blobs_3f", columns(data.blobs(7), [0, 1, 2]), 4),
        ("blobs_20f", data.blobs(8), 4),
        ("diabetes_class", _diabetes_classes(), 2),
    ]
    seed = 90
    for name, split, classes in sets:
        edge = stability_edge(split, classes)
        # Binary: one logit and the logistic loss (a softmax over two classes can cycle between
        # two points of equal loss, which no loss-watcher could see).
        model = "logistic" if classes == 2 else "softmax"
        for k in (1.5, 2.5):
            seed += 1
            dims = (split[0].shape[1], 1 if classes == 2 else classes)
            yield Spec(
                "oscillation",
                f"{name}_{model}_gd_{k:g}edge",
                f"{name.replace('_', ' ')}, {model} regression, full-batch GD at {k:g}x the "
                f"stability edge (lr {k * edge:.3g})",
                classifier(
                    split,
                    dims,
                    opt="sgd",
                    lr=k * edge,
                    batch=None,
                    steps=600,
                    seed=seed,
                    loss_fn=bce if classes == 2 else ce,
                    grad=seed % 2 == 0,
                    val_every=10 if seed % 3 == 0 else 0,
                ),
                {
                    "dataset": name,
                    "optimizer": "sgd",
                    "batch": None,
                    "seed": seed,
                    "edge_lr": edge,
                    "edge_fraction": k,
                },
            )


def _diabetes_classes() -> data.Split:
    """Diabetes progression above/below its median, from 3 features: heavily overlapping."""
    x, y, xv, yv = data.diabetes()
    return x[:, [2, 3, 8]], (y[:, 0] > 0).long(), xv[:, [2, 3, 8]], (yv[:, 0] > 0).long()


def plateau() -> Iterator[Spec]:
    digits = data.digits()
    for i, (split, name, dims, opt, lr, batch, at) in enumerate(
        [
            (digits, "digits_mlp", (64, 32, 10), "momentum", 0.01, 32, 300),
            (digits, "digits_mlp", (64, 32, 10), "adam", 3e-4, 16, 400),
            (data.blobs(9), "blobs_mlp", (20, 64, 4), "sgd", 0.05, 16, 100),
            (data.blobs(10), "blobs_mlp", (20, 64, 4), "sgd", 0.5, None, 60),
            (data.wine(), "wine_mlp", (13, 16, 3), "adam", 1e-3, 16, 250),
            (data.wide_regression(6), "wide_regression_linear", (20, 1), "sgd", 0.003, 32, 60),
            (digits, "digits_mlp", (64, 32, 10), "sgd", 0.3, None, 80),
            (data.breast_cancer(), "breast_cancer_mlp", (30, 16, 2), "sgd", 0.5, None, 40),
        ]
    ):
        yield Spec(
            "plateau",
            f"{name}_lr_collapse_{opt}_b{batch or 'full'}_s{i}",
            f"{name.replace('_', ' ')}, {opt} lr {lr:g}, batch {batch or 'full'}; a schedule bug "
            f"multiplies the LR by 1e-4 from step {at}: the loss stops improving",
            classifier(
                split,
                dims,
                opt=opt,
                lr=lr,
                batch=batch,
                steps=at + 700,
                seed=100 + i,
                lr_factor=after(at, 1e-4),
                loss_fn=mse if "regression" in name else ce,
                grad=i % 2 == 0,
                val_every=10 if i % 3 == 0 else 0,
            ),
            {"dataset": name.split("_")[0], "optimizer": opt, "batch": batch, "seed": 100 + i},
            injected_at=at,
        )
    for i, (split, name, dims, opt, lr, batch) in enumerate(
        [
            (data.blobs(11), "blobs_mlp", (20, 64, 4), "sgd", 1e-5, 32),
            (digits, "digits_mlp", (64, 32, 10), "adam", 1e-7, 64),
        ]
    ):
        yield Spec(
            "plateau",
            f"{name}_lr_too_small_s{i}",
            f"{name.replace('_', ' ')}, {opt} lr {lr:g} (a units slip): flat from the start",
            classifier(split, dims, opt=opt, lr=lr, batch=batch, steps=700, seed=110 + i),
            {"dataset": name.split("_")[0], "optimizer": opt, "batch": batch, "seed": 110 + i},
        )
    for i in range(2):
        yield Spec(
            "plateau",
            f"digits_tanh_saddle_s{i}",
            "3-layer tanh MLP on digits started near zero (std 0.01): it sits on the saddle at "
            "log(10) for hundreds of steps before it escapes",
            classifier(
                digits,
                (64, 32, 32, 10),
                opt="sgd",
                lr=0.05,
                batch=64,
                steps=1000,
                seed=120 + i,
                act=nn.Tanh,
                init_std=0.01,
            ),
            {"dataset": "digits", "optimizer": "sgd", "batch": 64, "seed": 120 + i},
        )


def drift() -> Iterator[Spec]:
    for i, (opt, lr, dims, shift_at, shift, rate) in enumerate(
        [
            ("sgd", 0.01, (12, 16, 1), 1200, 0.6, 0.03),
            ("adam", 3e-4, (12, 16, 1), 1200, 0.9, 0.03),
            ("sgd", 0.02, (12, 1), 1200, 0.7, 0.05),
            ("adam", 1e-3, (12, 1), 1000, 0.5, 0.03),
            ("momentum", 0.005, (12, 32, 1), 1500, 0.5, 0.03),
            ("sgd", 0.005, (12, 16, 1), 1300, 0.8, 0.08),
            ("adam", 3e-4, (12, 32, 1), 1300, 0.4, 0.05),
            ("sgd", 0.01, (12, 1), 1100, 0.7, 0.02),
        ]
    ):
        kind = "logreg" if len(dims) == 2 else "mlp"
        yield Spec(
            "drift",
            f"fraud_stream_{kind}_{opt}_s{i}",
            f"fraud-like stream ({rate:.0%} positives), online {kind}, {opt} lr {lr:g}; the "
            f"fraud pattern moves at step {shift_at}",
            fraud(
                200 + i,
                shift_at=shift_at,
                shift=shift,
                opt=opt,
                lr=lr,
                dims=dims,
                steps=shift_at + 800,
                rate=rate,
                grad=i % 2 == 0,
            ),
            {
                "dataset": "fraud_stream",
                "optimizer": opt,
                "batch": 64,
                "seed": 200 + i,
                "positive_rate": rate,
                "shift": shift,
            },
            injected_at=shift_at,
        )


def overfit() -> Iterator[Spec]:
    for i, (split, name, n, dims, opt, lr, steps) in enumerate(
        [
            (data.digits(), "digits", 120, (64, 256, 10), "adam", 3e-3, 1500),
            (data.digits(), "digits", 200, (64, 256, 256, 10), "adam", 1e-3, 1500),
            (data.blobs(3), "blobs", 200, (20, 256, 256, 4), "adam", 1e-3, 1500),
            (data.blobs(12), "blobs", 150, (20, 128, 4), "momentum", 0.05, 2000),
            (data.breast_cancer(), "breast_cancer", 60, (30, 128, 2), "adam", 3e-3, 1500),
            (data.wine(), "wine", 40, (13, 128, 3), "adam", 3e-3, 1500),
            (data.wide_regression(7), "wide_regression", 40, (20, 128, 1), "adam", 3e-3, 1500),
            (data.diabetes(), "diabetes", 80, (10, 128, 128, 1), "adam", 3e-3, 1500),
        ]
    ):
        regression = name in ("wide_regression", "diabetes")
        yield Spec(
            "overfit",
            f"{name}_{n}_samples_{opt}_s{i}",
            f"{name.replace('_', ' ')}: {n} training samples, MLP {dims}, {opt} lr {lr:g}; "
            "validation loss every 10 steps",
            classifier(
                head(split, n),
                dims,
                opt=opt,
                lr=lr,
                batch=16,
                steps=steps,
                seed=130 + i,
                loss_fn=mse if regression else ce,
                val_every=10,
                grad=i % 2 == 0,
            ),
            {"dataset": name, "optimizer": opt, "batch": 16, "seed": 130 + i, "train_samples": n},
        )


FAMILIES = (healthy, divergence, oscillation, plateau, drift, overfit)


# -- labels from the finished run --------------------------------------------------------------


def _first_nonfinite(losses: list[float]) -> int | None:
    return next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def _hindsight_onset(losses: list[float], end: int) -> int:
    """Where the final departure began: one past the last step before ``end`` whose centred
    5-sample median was within 1.5x of the best 21-sample centred median seen up to then."""
    best = math.inf
    last_ok = 0
    for t in range(end):
        window = [v for v in losses[max(0, t - 10) : t + 11] if math.isfinite(v)]
        if len(window) >= 5:
            best = min(best, _med(window))
        local = [v for v in losses[max(0, t - 2) : t + 3] if math.isfinite(v)]
        if local and _med(local) <= 1.5 * best:
            last_ok = t
    return min(last_ok + 1, end)


def _val_minimum(records: list[dict[str, float]]) -> tuple[int | None, float]:
    """The step of the smoothed validation loss's minimum (centred 5-point mean), and how far
    the last smoothed value ends above it (relative)."""
    val = [(int(r["step"]), r["val_loss"]) for r in records if "val_loss" in r]
    if len(val) < 10:
        return None, 0.0
    smooth = [
        (s, statistics.fmean(v for _, v in val[max(0, i - 2) : i + 3]))
        for i, (s, _) in enumerate(val)
    ]
    step, low = min(smooth, key=lambda p: p[1])
    return step, smooth[-1][1] / low - 1.0 if low > 0 else math.inf


def label(spec: Spec, records: list[dict[str, float]]) -> tuple[str, dict[str, Any]]:
    losses = [r["loss"] for r in records]
    nonfinite = _first_nonfinite(losses)
    facts: dict[str, Any] = {
        "label": spec.label,
        "name": spec.name,
        "description": spec.description,
        "steps": len(records),
        "first_nonfinite_step": nonfinite,
        "metrics": sorted({k for r in records for k in r} - {"step"}),
        "onset_step": None,
        "onset_from": None,
        **spec.facts,
    }
    batch = spec.facts.get("batch", 0)
    facts["noisy"] = batch is not None and 0 < batch <= 32
    val_min, val_rise = _val_minimum(records)
    facts["val_minimum_step"], facts["val_rise"] = val_min, round(val_rise, 4)
    lbl = spec.label
    if lbl == "divergence":
        end = nonfinite if nonfinite is not None else len(losses)
        finite_tail = [v for v in losses[-50:] if math.isfinite(v)]
        if spec.injected_at is not None:
            at = spec.injected_at
            facts["onset_step"], facts["onset_from"] = at + 1, "injection"
            pre = losses[max(0, at - 50) : at]
            facts["pre_mean"], facts["final_mean"] = statistics.fmean(pre), _mean(finite_tail)
            if nonfinite is None and not facts["final_mean"] > 3.0 * facts["pre_mean"]:
                peak = max(_med(losses[t : t + 20]) for t in range(at + 1, len(losses) - 19))
                if peak > 2.0 * _med(pre):
                    lbl = "transient"
                    facts["relabelled"] = (
                        f"the loss rose {peak / _med(pre):.3g}x and came back by itself"
                    )
                else:
                    lbl, facts["relabelled"] = "healthy", "the injected LR was harmless"
        else:
            facts["onset_step"], facts["onset_from"] = _hindsight_onset(losses, end), "hindsight"
            best = min(_med(losses[t : t + 21]) for t in range(max(1, len(losses) - 20)))
            ended = _mean(finite_tail)
            if nonfinite is None and not (ended > 10.0 * best and ended > _med(losses[:20])):
                lbl, facts["relabelled"] = "healthy", "no blow-up"
                facts["onset_step"] = facts["onset_from"] = None
    elif lbl in ("plateau", "drift"):
        facts["onset_step"] = spec.injected_at + 1 if spec.injected_at is not None else 0
        facts["onset_from"] = "injection" if spec.injected_at is not None else "construction"
        if spec.name.startswith("digits_tanh_saddle"):
            facts["plateau_end"] = _saddle_end(losses)
        if lbl == "drift":
            at = spec.injected_at
            assert at is not None
            facts["onset_step"], facts["onset_from"] = at, "construction"
            before, after_ = losses[max(0, at - 200) : at], losses[at : at + 200]
            shift = math.exp(
                statistics.fmean(map(math.log, after_)) - statistics.fmean(map(math.log, before))
            )
            facts["loss_shift"] = round(shift, 4)
            if shift < 1.15:
                lbl = "healthy"
                facts["relabelled"] = f"the shift left the loss as it was ({shift:.2f}x)"
                facts["onset_step"] = facts["onset_from"] = None
    elif lbl == "oscillation":
        facts["onset_step"], facts["onset_from"] = 0, "construction"
        tail = losses[-300:]
        swing = (max(tail) - min(tail)) / _med(tail)
        facts["final_swing"] = round(swing, 4)
        if not swing >= 0.005:
            lbl, facts["relabelled"] = "healthy", f"it converged (final swing {swing:.2%})"
            facts["onset_step"] = facts["onset_from"] = None
    elif lbl == "overfit":
        facts["onset_step"], facts["onset_from"] = val_min, "hindsight"
        if val_rise < 0.05:
            lbl, facts["relabelled"] = "healthy", f"validation loss rose only {val_rise:.1%}"
            facts["onset_step"] = facts["onset_from"] = None
    facts["label"] = lbl
    return lbl, facts


def _saddle_end(losses: list[float]) -> int:
    """The first step at which the 21-sample mean is 5 % below log(10): the escape."""
    for t in range(len(losses) - 21):
        if statistics.fmean(losses[t : t + 21]) < 0.95 * math.log(10):
            return t
    return len(losses)


# -- writing -----------------------------------------------------------------------------------


def write(spec: Spec, out: Path) -> tuple[str, dict[str, Any]]:
    torch.set_num_threads(1)
    records = run(spec.build())
    lbl, facts = label(spec, records)
    directory = out / lbl / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "metrics.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")  # NaN/Infinity as lrwatch reads
    (directory / "labels.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    return lbl, facts


def generate_draw(
    families: tuple[Callable[[int], Iterator[Spec]], ...],
    default_out: Path,
    argv: list[str] | None,
    description: str,
    generator: str,
) -> None:
    """``generate`` for a generator whose families take a seed offset (unseen.py,
    families.py): ``--seed-offset N`` makes a fresh draw (new inits, batches and fault steps),
    stamped with the ``generator`` and offset that made it (``GENERATOR``, read by score.py)."""
    seeds = argparse.ArgumentParser(add_help=False)
    seeds.add_argument(
        "--seed-offset", type=int, default=0,
        help="add this to every run's seed: a fresh draw (new inits, batches and fault steps)",
    )  # fmt: skip
    offset = seeds.parse_known_args(argv)[0].seed_offset
    drawn = tuple(partial(family, offset) for family in families)
    stamp = f"{generator} --seed-offset {offset}"
    generate(drawn, default_out, argv, description, parents=[seeds], stamp=stamp)


def generate(
    families: tuple[Callable[[], Iterator[Spec]], ...],
    default_out: Path,
    argv: list[str] | None = None,
    description: str = "",
    parents: Sequence[argparse.ArgumentParser] = (),
    stamp: str = "",
) -> None:
    """The command line of a corpus generator (this one, unseen.py): write every run of
    ``families`` (``--only``: those whose name contains it) under ``--out``, printing each
    run's label, onset and any relabel as it goes. ``parents``: the caller's own options (read
    by the caller), so ``--help`` lists them too; ``stamp``, if any, goes in ``GENERATOR``."""
    parser = argparse.ArgumentParser(description=description, parents=list(parents))
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--only", default="", help="generate only runs whose name contains this")
    args = parser.parse_args(argv)
    if not args.only and args.out.exists():
        shutil.rmtree(args.out)
    if stamp:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "GENERATOR").write_text(stamp + "\n")
    started = time.perf_counter()
    counts: dict[str, int] = {}
    for family in families:
        for spec in family():
            if args.only not in f"{spec.label}/{spec.name}":
                continue
            t0 = time.perf_counter()
            lbl, facts = write(spec, args.out)
            counts[lbl] = counts.get(lbl, 0) + 1
            note = (
                f"  RELABELLED {spec.label} -> {lbl}: {facts['relabelled']}"
                if ("relabelled" in facts)
                else ""
            )
            print(
                f"{time.perf_counter() - t0:5.1f}s {lbl:11s} {spec.name} onset="
                f"{facts['onset_step']} nonfinite={facts['first_nonfinite_step']}{note}",
                flush=True,
            )
    total = sum(counts.values())
    print(f"{total} runs in {time.perf_counter() - started:.0f}s: {counts}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    generate(FAMILIES, CORPUS, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
