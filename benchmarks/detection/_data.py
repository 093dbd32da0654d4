"""Datasets for the corpus: scikit-learn's bundled ones and generated ones, nothing downloaded."""

from __future__ import annotations

import functools
import random

import numpy as np
import torch
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_wine,
    make_classification,
    make_regression,
)

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x, y, x_val, y_val


def _standardise(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x - x.mean(0)) / (x.std(0) + 1e-8)
    return out


def _split(x: np.ndarray, y: np.ndarray, *, classes: bool, seed: int = 0) -> Split:
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = _standardise(x)[order], y[order]
    cut = int(0.8 * len(x))
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long if classes else torch.float32)
    return xt[:cut], yt[:cut], xt[cut:], yt[cut:]


@functools.cache
def digits() -> Split:
    ds = load_digits()
    return _split(ds.data, ds.target, classes=True)


@functools.cache
def breast_cancer() -> Split:
    ds = load_breast_cancer()
    return _split(ds.data, ds.target, classes=True)


@functools.cache
def wine() -> Split:
    ds = load_wine()
    return _split(ds.data, ds.target, classes=True)


@functools.cache
def blobs(seed: int = 0) -> Split:
    x, y = make_classification(
        n_samples=3000,
        n_features=20,
        n_informative=10,
        n_classes=4,
        n_clusters_per_class=2,
        flip_y=0.02,
        random_state=seed,
    )
    return _split(x, y, classes=True, seed=seed)


@functools.cache
def diabetes() -> Split:
    ds = load_diabetes()
    x, y, xv, yv = _split(ds.data, ds.target, classes=False)
    mu, sd = y.mean(), y.std()
    return x, ((y - mu) / sd)[:, None], xv, ((yv - mu) / sd)[:, None]


@functools.cache
def wide_regression(seed: int = 0, scale: float = 100.0) -> Split:
    """A nearly noiseless linear target in raw units: the MSE falls over several decades."""
    x, y = make_regression(n_samples=2000, n_features=20, noise=0.05, random_state=seed)
    y = y / y.std() * scale
    x, yt, xv, yv = _split(x, y, classes=False, seed=seed)
    return x, yt[:, None], xv, yv[:, None]


# -- a tiny language for the character model -------------------------------------------------

_WORDS = [
    "the",
    "a",
    "model",
    "loss",
    "step",
    "learning",
    "rate",
    "batch",
    "data",
    "token",
    "layer",
    "weight",
    "gradient",
    "warm",
    "up",
    "decay",
    "train",
    "valid",
    "test",
    "run",
    "job",
    "node",
    "watch",
    "spike",
    "plateau",
    "drift",
    "fast",
    "slow",
    "small",
    "large",
    "good",
    "bad",
    "and",
    "or",
    "of",
    "to",
    "in",
    "on",
    "is",
    "was",
    "will",
    "be",
    "not",
    "very",
    "more",
    "less",
]
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,"


@functools.cache
def text(seed: int = 0, n_chars: int = 60_000) -> torch.Tensor:
    """Sentences from a fixed bigram chain over a small vocabulary, as character codes."""
    rng = random.Random(seed)
    nxt = {w: rng.sample(_WORDS, 6) for w in _WORDS}
    out: list[str] = []
    word = rng.choice(_WORDS)
    size = 0
    while size < n_chars:
        sentence = []
        for _ in range(rng.randint(4, 12)):
            sentence.append(word)
            word = rng.choice(nxt[word])
        s = " ".join(sentence) + rng.choice([". ", ", "])
        out.append(s)
        size += len(s)
    joined = "".join(out)[:n_chars]
    return torch.tensor([ALPHABET.index(c) for c in joined], dtype=torch.long)


# -- a fraud-like imbalanced stream with a concept shift --------------------------------------


class FraudStream:
    """Transactions arrive in batches; about 3 % are fraud. At ``shift_at`` the fraudsters change
    pattern, which is the concept shift a continual-learning model meets in production."""

    def __init__(
        self,
        seed: int,
        *,
        shift_at: int,
        batch: int = 64,
        rate: float = 0.03,
        dims: int = 12,
        shift: float = 1.0,
    ) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        g = torch.Generator().manual_seed(seed + 1000)
        self.dims, self.batch, self.rate, self.shift_at = dims, batch, rate, shift_at
        self.fraud_mu = torch.randn(dims, generator=g) * 1.2
        # The new pattern lies towards the mirror image of the old one, where the model has
        # learned to be confident a transaction is legitimate: ``shift`` 1 mirrors it fully.
        self.new_mu = (1.0 - 2.0 * shift) * self.fraud_mu + 0.3 * torch.randn(dims, generator=g)
        self.legit_mu = torch.zeros(dims)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, g = self.batch, self.gen
        y = (torch.rand(n, generator=g) < self.rate).float()
        mu = self.new_mu if step >= self.shift_at else self.fraud_mu
        centre = torch.where(y[:, None] > 0, mu, self.legit_mu)
        x = centre + torch.randn(n, self.dims, generator=g)
        return x, y
