"""The learning problems of the rescue benchmark: small, real, generated on the spot.

Every dataset comes from scikit-learn's generators (nothing is downloaded) with a fixed
``random_state``, so all methods and seeds see the same data; a job's seed only changes its
initialisation and its batch order. Each task builds its model, draws batches, and evaluates on
a held-out set; it is shared by many job threads, so nothing here is mutated after construction.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import make_classification, make_friedman1
from sklearn.metrics import roc_auc_score
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Task:
    """What a job needs from its problem; the fields are plain functions so tasks stay data."""

    name: str
    score_name: str  # what ``evaluate`` reports beside the validation loss
    model: Callable[[], nn.Module]
    batch: Callable[[int, np.random.Generator], Batch]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    evaluate: Callable[[nn.Module, int], tuple[float, float]]  # (val loss, score) at a step
    prequential: bool = False  # a stream: no fixed validation set to schedule on


def _standardise(x: np.ndarray) -> torch.Tensor:
    return torch.tensor((x - x.mean(0)) / (x.std(0) + 1e-8), dtype=torch.float32)


def _mlp(sizes: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes[:-1]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def _eval(model: nn.Module, fn: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        result = fn()
    model.train()
    return result


def classification() -> Task:
    """Four classes, 32 features (16 informative), 2 % label noise; 20k train, 4k validation.

    A tanh MLP fitted with the square loss on one-hot targets (as ``lrwatch.demo.train`` does):
    a loss with real curvature, so an LR past the stability edge grows the loss geometrically
    over tens of steps — the failure lrwatch is built to catch — rather than saturating.
    """
    x, y = make_classification(
        n_samples=24_000,
        n_features=32,
        n_informative=16,
        n_redundant=8,
        n_classes=4,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.02,
        random_state=0,
    )
    xs, labels = _standardise(x), torch.tensor(y)
    onehot = nn.functional.one_hot(labels, 4).float()
    xt, yt, xv, yv, lv = xs[:20_000], onehot[:20_000], xs[20_000:], onehot[20_000:], labels[20_000:]

    def batch(step: int, gen: np.random.Generator) -> Batch:
        idx = torch.from_numpy(gen.integers(0, len(xt), 64))
        return xt[idx], yt[idx]

    def evaluate(model: nn.Module, step: int) -> tuple[float, float]:
        def run() -> tuple[float, float]:
            out = model(xv)
            loss = nn.functional.mse_loss(out, yv).item()
            return loss, (out.argmax(1) == lv).float().mean().item()

        return _eval(model, run)

    return Task(
        "classification",
        "accuracy",
        lambda: _mlp([32, 64, 4]),
        batch,
        nn.functional.mse_loss,
        evaluate,
    )


def regression() -> Task:
    """Friedman #1 with unit noise (standardised target): 10k train, 2k validation.

    Its noise floor is what the plateau scenario is about: at a constant LR, SGD hovers above
    the floor by an amount that shrinks with the LR, so a lower LR later on pays.
    """
    x, y = make_friedman1(n_samples=12_000, n_features=10, noise=1.0, random_state=0)
    xs = _standardise(x)
    ys = _standardise(y[:, None])
    xt, yt, xv, yv = xs[:10_000], ys[:10_000], xs[10_000:], ys[10_000:]
    variance = float(yv.var())

    def batch(step: int, gen: np.random.Generator) -> Batch:
        idx = torch.from_numpy(gen.integers(0, len(xt), 32))
        return xt[idx], yt[idx]

    def evaluate(model: nn.Module, step: int) -> tuple[float, float]:
        def run() -> tuple[float, float]:
            loss = nn.functional.mse_loss(model(xv), yv).item()
            return loss, 1.0 - loss / variance  # R^2

        return _eval(model, run)

    return Task(
        "regression", "R²", lambda: _mlp([10, 64, 64, 1]), batch, nn.functional.mse_loss, evaluate
    )


FRAUD_FEATURES = 20
FRAUD_RATE = 0.03


@dataclass(frozen=True)
class Concept:
    """One fraud pattern: which features make a transaction suspicious, and the base rate."""

    weights: np.ndarray
    bias: float

    def draw(self, n: int, gen: np.random.Generator) -> Batch:
        x = gen.normal(size=(n, FRAUD_FEATURES)).astype(np.float32)
        p = 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))
        y = (gen.random(n) < p).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y)[:, None]


def _concept(weights: np.ndarray) -> Concept:
    """Solve for the bias that makes ``FRAUD_RATE`` of transactions fraudulent (bisection)."""
    x = np.random.default_rng(1).normal(size=(100_000, FRAUD_FEATURES))
    score = x @ weights
    lo, hi = -30.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(score + mid)))))
        lo, hi = (mid, hi) if rate < FRAUD_RATE else (lo, mid)
    return Concept(weights, (lo + hi) / 2)


def fraud_stream(drift_step: int) -> Task:
    """An imbalanced (3 % positive) transaction stream whose fraud pattern changes at
    ``drift_step``: half of the telling features flip sign and a few new ones start to matter,
    the base rate stays. Batches of 128 come fresh from the current concept (no epochs: a
    stream); validation is 20k held-out transactions of the concept in force at that step, so
    the loss after the drift measures adaptation to the new pattern. Score: ROC AUC.
    """
    rng = np.random.default_rng(0)
    before = rng.normal(size=FRAUD_FEATURES) * (rng.random(FRAUD_FEATURES) < 0.5) * 1.5
    after = before.copy()
    telling = np.flatnonzero(after)
    after[telling[: len(telling) // 2]] *= -1
    after += rng.normal(size=FRAUD_FEATURES) * (rng.random(FRAUD_FEATURES) < 0.3) * 1.5
    concepts = (_concept(before), _concept(after))
    held_out = tuple(c.draw(20_000, np.random.default_rng(999 + i)) for i, c in enumerate(concepts))

    def batch(step: int, gen: np.random.Generator) -> Batch:
        return concepts[step >= drift_step].draw(128, gen)

    def evaluate(model: nn.Module, step: int) -> tuple[float, float]:
        xv, yv = held_out[step >= drift_step]

        def run() -> tuple[float, float]:
            logits = model(xv)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, yv).item()
            if not math.isfinite(loss):
                return loss, math.nan
            return loss, float(roc_auc_score(yv.numpy().ravel(), logits.numpy().ravel()))

        return _eval(model, run)

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(FRAUD_FEATURES, 32), nn.ReLU(), nn.Linear(32, 1))

    return Task(
        "fraud-stream",
        "AUC",
        model,
        batch,
        nn.functional.binary_cross_entropy_with_logits,
        evaluate,
        prequential=True,
    )


@functools.cache
def task(name: str, drift_step: int = 0) -> Task:
    """One instance per process: the datasets are built once and shared by the job threads."""
    if name == "classification":
        return classification()
    if name == "regression":
        return regression()
    if name == "fraud-stream":
        return fraud_stream(drift_step)
    raise ValueError(f"unknown task {name!r}")
