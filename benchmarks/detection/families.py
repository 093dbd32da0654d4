"""Generate the families corpus: real PyTorch CPU runs of model families, datasets, optimizers
and fault mechanics that neither the development corpus (corpus.py) nor the unseen corpus
(unseen.py) has, for a held-out test of how lrwatch generalises.

Run from the repository root (about 1.5 minutes on one core; deterministic, seeds fixed):

    python -m benchmarks.detection.families --out /tmp/fam1            # all runs
    python -m benchmarks.detection.families --out /tmp/fam1 --only vae  # names containing "vae"
    python -m benchmarks.detection.families --seed-offset 1000 --out /tmp/fam2  # another draw

Writes ``<out>/<label>/<name>/{metrics.jsonl,labels.json}``, the layout and the label rules of
corpus.py (its ``label()`` and ``write()``: onsets from injection, construction or hindsight,
relabels printed), so ``python -m benchmarks.detection.score --draw <out>`` scores it.

The families (every run logs every step; the harness has no logging interval):

- an LSTM and a 1-D conv net classifying noisy generated sequences by the motif they carry;
- a denoising autoencoder on digits (reconstruction MSE) and a VAE on digits (the negative
  ELBO, a positive loss in nats per image);
- skip-gram word2vec with negative sampling, and a fastText-like EmbeddingBag topic classifier
  with label smoothing, on generated topical documents;
- MLPs with BatchNorm (make_classification with 12 classes) and LayerNorm (moons, circles);
- regression on Friedman #1 with cubic polynomial features (square loss, raw units), pinball
  (quantile) and Huber losses, and a Huber linear regression on heavy-tailed data;
- a label-smoothed softmax regression on make_classification with five classes.

Optimizers: Adam, NAdam, RAdam, Adamax, Adadelta, SGD with and without momentum. The faults,
all through the optimizer or the data, never the logged numbers: an LR jump x10-x300 at a
drawn step; an LR x30-x1000 too high from the first step; a warm-up to a peak LR far too high;
polynomial features raised from degree 1 to 2 or 3 under full-batch gradient descent at the LR
tuned for degree 1 (far past the new stability edge: a geometric climb); full-batch gradient
descent past the edge of the Huber loss and of the label-smoothed softmax (the loss is bounded
there: a lasting cycle); an LR collapsed x1e-4 at a drawn step, or far too small from the
start. Healthy runs get garbage batches, SGDR warm restarts, cosine, step and warm-up
schedules, and some run 1000-3000 steps while they keep improving slowly.

Faults left out on purpose, because corpus.py's ``label()`` would call the outcome healthy
although it is not: an LR too high from the first step (or a warm-up too high) on the ReLU and
LSTM classifiers. Their cross-entropy either leaves its level within the first few steps and
stays 20-400x up without going non-finite (the "best" 21-sample median then already includes
the blow-up, so "no blow-up"), or the net dies at once and sits at chance level for good. The
LR too high and the warm-ups are therefore put on the autoencoder, the word models and the
polynomial regression, which go non-finite.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import (
    load_digits,
    make_circles,
    make_classification,
    make_friedman1,
    make_moons,
)
from sklearn.preprocessing import PolynomialFeatures
from torch import nn

from benchmarks.detection import _data as data
from benchmarks.detection import _models as models
from benchmarks.detection import _unseen_models as um
from benchmarks.detection._harness import Batch, Job
from benchmarks.detection.corpus import Spec, after, corrupt_inputs, fitted_edge, generate_draw

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Corrupt = Callable[[int, Batch], Batch]
F = nn.functional
SEED0 = 700  # every run's seed is SEED0 + offset + its index: apart from unseen.py's 300-480


def drawn(seed: int, lo: int, hi: int) -> int:
    """The step of a fault, drawn with the run's seed (fixed, so the corpus is reproducible)."""
    return random.Random(seed * 7919 + 13).randint(lo, hi)


# -- data --------------------------------------------------------------------------------------


def _tensors(x: np.ndarray, y: np.ndarray, *, classes: bool, seed: int = 0) -> data.Split:
    """An 80/20 split of ``x`` and ``y``, as given (no standardisation)."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    xt = torch.tensor(x[order], dtype=torch.float32)
    yt = torch.tensor(y[order], dtype=torch.long if classes else torch.float32)
    return xt[:cut], yt[:cut], xt[cut:], yt[cut:]


@functools.cache
def motifs(seed: int, n: int = 5000, length: int = 24) -> data.Split:
    """Unit Gaussian noise sequences, each carrying one of four 6-sample motifs (its class) at a
    random position and a random amplitude: a weak signal to find anywhere in the sequence."""
    rng = np.random.default_rng(seed)
    shapes = rng.normal(size=(4, 6))
    shapes *= 5.0 / np.linalg.norm(shapes, axis=1, keepdims=True)
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, length))
    pos = rng.integers(0, length - 6, n)
    amp = rng.uniform(0.7, 1.5, n)
    for i in range(n):
        x[i, pos[i] : pos[i] + 6] += amp[i] * shapes[y[i]]
    return _tensors(x, y, classes=True, seed=seed)


@functools.cache
def pixels() -> data.Split:
    """The digits as intensities in [0, 1], the image itself as the target (for the VAE)."""
    ds = load_digits()
    x = ds.data / 16.0
    xt, _, xv, _ = _tensors(x, ds.target, classes=True)
    return xt, xt, xv, xv


@functools.cache
def documents(seed: int, n: int = 4000, length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Token documents over a 400-word vocabulary: each has a topic (one of 6), and each token is
    drawn from the topic's 50 words (Zipf weights) with probability 0.45, else from a Zipfian
    background over the whole vocabulary. Returns the documents (n, length) and their topics."""
    vocab, topics = 400, 6
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab + 1) ** 1.1
    background = rng.permutation(zipf / zipf.sum())
    word_p = np.zeros((topics, vocab))
    for t in range(topics):
        words = rng.choice(vocab, 50, replace=False)
        w = 1.0 / np.arange(1, 51) ** 0.8
        word_p[t, words] = w / w.sum()
    topic = rng.integers(0, topics, n)
    from_topic = rng.random((n, length)) < 0.45
    docs = np.empty((n, length), dtype=np.int64)
    for i in range(n):
        own = rng.choice(vocab, length, p=word_p[topic[i]])
        other = rng.choice(vocab, length, p=background)
        docs[i] = np.where(from_topic[i], own, other)
    return torch.tensor(docs), torch.tensor(topic)


VOCAB, TOPICS, NEGATIVES, WINDOW = 400, 6, 5, 3


def topics_split(seed: int) -> data.Split:
    docs, topic = documents(seed)
    cut = int(0.8 * len(docs))
    return docs[:cut], topic[:cut], docs[cut:], topic[cut:]


def skipgram_batches(docs: torch.Tensor, batch: int, seed: int) -> Callable[[int], Batch]:
    """(centre, context, 5 negatives) word ids of ``batch`` pairs from a window of 3, and the
    targets (1 for the context, 0 for the negatives), sampled from ``docs``."""
    gen = torch.Generator().manual_seed(seed)
    n, length = docs.shape
    target = torch.zeros(batch, 1 + NEGATIVES)
    target[:, 0] = 1.0

    def sample(step: int) -> Batch:
        d = torch.randint(0, n, (batch,), generator=gen)
        pos = torch.randint(0, length, (batch,), generator=gen)
        off = torch.randint(1, WINDOW + 1, (batch,), generator=gen)
        sign = torch.randint(0, 2, (batch,), generator=gen) * 2 - 1
        ctx = (pos + sign * off).clamp(0, length - 1)
        neg = torch.randint(0, VOCAB, (batch, NEGATIVES), generator=gen)
        ids = torch.cat([docs[d, pos, None], docs[d, ctx, None], neg], dim=1)
        return ids, target

    return sample


@functools.cache
def many_classes() -> data.Split:
    """A covtype-like table: 30 features, 12 classes, 3 % of the labels flipped."""
    x, y = make_classification(
        n_samples=5000, n_features=30, n_informative=18, n_redundant=6, n_classes=12,
        n_clusters_per_class=1, flip_y=0.03, class_sep=1.2, random_state=3,
    )  # fmt: skip
    return data._split(x, y, classes=True, seed=3)


@functools.cache
def moons() -> data.Split:
    x, y = make_moons(n_samples=3000, noise=0.3, random_state=4)
    return data._split(x, y, classes=True, seed=4)


@functools.cache
def circles() -> data.Split:
    x, y = make_circles(n_samples=3000, noise=0.15, factor=0.5, random_state=5)
    return data._split(x, y, classes=True, seed=5)


@functools.cache
def friedman(degree: int) -> data.Split:
    """Friedman #1 (10 features, 5 used, noise 1) in raw target units, the standardised inputs
    expanded to polynomial features of ``degree`` and not rescaled (as a quick pipeline does)."""
    x, y = make_friedman1(n_samples=3000, n_features=10, noise=1.0, random_state=6)
    x = (x - x.mean(0)) / x.std(0)
    feats = PolynomialFeatures(degree, include_bias=False).fit_transform(x)
    xt, yt, xv, yv = _tensors(feats, y, classes=False, seed=6)
    return xt, yt[:, None], xv, yv[:, None]


@functools.cache
def heavy_tailed(seed: int) -> data.Split:
    """A linear target on 8 correlated features with Student-t (2 d.o.f.) noise, the outliers a
    Huber loss is chosen for; the target in units of its spread, around 3 (not centred)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(8, 8)) * 0.5 + np.eye(8)
    x = rng.normal(size=(2000, 8)) @ mix
    y = x @ rng.normal(size=8) + rng.standard_t(2, size=2000)
    x = (x - x.mean(0)) / x.std(0)
    xt, yt, xv, yv = _tensors(x, y / y.std() + 3.0, classes=False, seed=seed)
    return xt, yt[:, None], xv, yv[:, None]


@functools.cache
def five_classes(seed: int) -> data.Split:
    """Five overlapping classes in four features, for a softmax regression."""
    x, y = make_classification(
        n_samples=1500, n_features=4, n_informative=4, n_redundant=0, n_classes=5,
        n_clusters_per_class=1, class_sep=1.0, random_state=seed,
    )  # fmt: skip
    return data._split(x, y, classes=True, seed=seed)


# -- models and losses -------------------------------------------------------------------------


class LSTMClassifier(nn.Module):
    """A one-layer LSTM over the sequence; its last hidden state classifies."""

    def __init__(self, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x[:, :, None])
        out: torch.Tensor = self.head(h[-1])
        return out


class Conv1dClassifier(nn.Module):
    """Two 1-D convolutions, a global max pool, a linear head."""

    def __init__(self, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, 2 * width, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveMaxPool1d(1),
            nn.Flatten(),
            nn.Linear(2 * width, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x[:, None, :])
        return out


class VAE(nn.Module):
    """A Bernoulli-decoder VAE; the output packs the pixel logits, the posterior mean and log
    variance, for :func:`neg_elbo`."""

    def __init__(self, d: int = 64, hidden: int = 128, z: int = 8) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z))
        self.dec = nn.Sequential(nn.Linear(z, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return torch.cat([self.dec(z), mu, logvar], dim=1)


def neg_elbo(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The negative ELBO in nats per image: Bernoulli reconstruction plus KL to N(0, I)."""
    d = x.shape[1]
    mu, logvar = out[:, d:].chunk(2, dim=1)
    rec = F.binary_cross_entropy_with_logits(out[:, :d], x, reduction="none").sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return (rec + kl).mean()


class SkipGram(nn.Module):
    """word2vec's two embedding tables; the output is the (context, negatives) dot products."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.inp = nn.Embedding(VOCAB, dim)
        self.out = nn.Embedding(VOCAB, dim)
        nn.init.uniform_(self.inp.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.out.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        centre = self.inp(ids[:, 0])
        scores: torch.Tensor = (self.out(ids[:, 1:]) @ centre[:, :, None]).squeeze(-1)
        return scores


def sgns(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative-sampling loss: summed over the context and its negatives, mean over pairs."""
    return F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(1).mean()


class BagClassifier(nn.Module):
    """fastText: the mean of the word embeddings, a linear layer."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(VOCAB, dim, mode="mean")
        self.head = nn.Linear(dim, TOPICS)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.bag(ids))
        return out


def norm_mlp(dims: tuple[int, ...], norm: str) -> nn.Module:
    """Linear, then BatchNorm1d (``batch``) or LayerNorm (``layer``), then ReLU, per hidden
    layer; a linear output."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims[:-1]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b) if norm == "batch" else nn.LayerNorm(b)]
        layers.append(nn.ReLU())
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


def smoothed_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, label_smoothing=0.1)


def huber(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.huber_loss(out, y, delta=1.0)


def pinball(out: torch.Tensor, y: torch.Tensor, q: float = 0.9) -> torch.Tensor:
    """The quantile (pinball) loss of the 0.9 quantile."""
    r = y - out
    return torch.maximum(q * r, (q - 1) * r).mean()


_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adadelta": torch.optim.Adadelta,
}


def optimizer(name: str, params: object, lr: float) -> torch.optim.Optimizer:
    """adamax, nadam, radam, adadelta (plain), and the other corpora's optimizers."""
    made = _OPTIMIZERS.get(name)
    if made is None:
        return um.optimizer(name, params, lr)
    return made(params, lr=lr)  # type: ignore[call-arg]


def edge_of(split: data.Split, loss_fn: LossFn, outputs: int) -> float:
    """2 / lambda_max of the full-batch loss's Hessian at the optimum of a linear model: past
    this LR, gradient descent cannot settle there."""
    x, y, _, _ = split
    return fitted_edge(x, y, loss_fn, outputs, max_iter=1000, rounds=3)


# -- the families ------------------------------------------------------------------------------


@dataclass
class Parts:
    """What a run of a family is made of; ``garbage(steps, seed)`` corrupts those batches."""

    dataset: str
    model: Callable[[], nn.Module]
    batches: Callable[[], Callable[[int], Batch]]
    loss_fn: LossFn
    val: Batch | None
    garbage: Callable[[tuple[int, ...], int], Corrupt]


def _noise_batches(x: torch.Tensor, batch: int | None, seed: int, std: float
                   ) -> Callable[[int], Batch]:  # fmt: skip
    """Denoising: each batch's input with fresh Gaussian noise and a fifth of it masked, the
    clean images as the target."""
    gen = torch.Generator().manual_seed(seed)

    def sample(step: int) -> Batch:
        idx = torch.randint(0, len(x), (batch or len(x),), generator=gen)
        clean = x[idx]
        noisy = clean + std * torch.randn(clean.shape, generator=gen)
        keep = torch.rand(clean.shape, generator=gen) > 0.2
        return noisy * keep, clean

    return sample


def _scaled_garbage(scale: float) -> Callable[[tuple[int, ...], int], Corrupt]:
    """Inputs and targets of a bad batch both scaled (a unit bug upstream), for autoencoders."""

    def make(steps: tuple[int, ...], seed: int) -> Corrupt:
        def corrupt(step: int, b: Batch) -> Batch:
            return (b[0] * scale, b[1] * scale) if step in steps else b

        return corrupt

    return make


def _uniform_pixels(steps: tuple[int, ...], seed: int) -> Corrupt:
    """A bad batch of uniform noise images (a corrupt shard), for the VAE."""
    gen = torch.Generator().manual_seed(seed + 5)

    def corrupt(step: int, b: Batch) -> Batch:
        if step not in steps:
            return b
        x = torch.rand(b[0].shape, generator=gen)
        return x, x

    return corrupt


def _random_tokens(relabel: bool) -> Callable[[tuple[int, ...], int], Corrupt]:
    """A bad batch of random token ids (a broken tokenizer), with random labels if asked."""

    def make(steps: tuple[int, ...], seed: int) -> Corrupt:
        gen = torch.Generator().manual_seed(seed + 7)

        def corrupt(step: int, b: Batch) -> Batch:
            if step not in steps:
                return b
            x = torch.randint(0, VOCAB, b[0].shape, generator=gen)
            y = torch.randint(0, TOPICS, b[1].shape, generator=gen) if relabel else b[1]
            return x, y

        return corrupt

    return make


def _shuffled(scale: float) -> Callable[[tuple[int, ...], int], Corrupt]:
    return lambda steps, seed: corrupt_inputs(steps, scale, seed)


def parts(family: str, seed: int, batch: int | None) -> Parts:
    """The data, model, loss and bad-batch maker of ``family`` for a run of ``seed``; a family
    name ``<name>:<k>`` takes its generated dataset of seed ``k`` (else ``seed``'s own)."""
    family, _, k = family.partition(":")
    data_seed = int(k) if k else seed
    if family in ("lstm", "conv1d"):
        x, y, xv, yv = motifs(data_seed % 3)
        net = LSTMClassifier if family == "lstm" else Conv1dClassifier
        return Parts("motifs", net, partial(models.minibatches, x, y, batch, seed),
                     F.cross_entropy, (xv, yv), _shuffled(4.0))  # fmt: skip
    if family == "dae":
        x, _, xv, _ = data.digits()

        def dae() -> nn.Module:
            return models.mlp((64, 128, 32, 128, 64), seed=seed)

        val_noisy = xv + 0.5 * torch.randn(xv.shape, generator=torch.Generator().manual_seed(1))
        return Parts("digits", dae, partial(_noise_batches, x, batch, seed, 0.5), F.mse_loss,
                     (val_noisy, xv), _scaled_garbage(3.0))  # fmt: skip
    if family == "vae":
        x, y, xv, yv = pixels()
        return Parts("digits_pixels", VAE, partial(models.minibatches, x, y, batch, seed),
                     neg_elbo, (xv, yv), lambda steps, s: _uniform_pixels(steps, s))  # fmt: skip
    if family == "skipgram":
        docs, _, dv, _ = topics_split(data_seed % 3)
        assert batch is not None
        val = skipgram_batches(dv, 2000, 1)(0)
        return Parts("topic_docs", SkipGram, partial(skipgram_batches, docs, batch, seed), sgns,
                     val, _random_tokens(relabel=False))  # fmt: skip
    if family == "bag":
        x, y, xv, yv = topics_split(data_seed % 3)
        return Parts("topic_docs", BagClassifier, partial(models.minibatches, x, y, batch, seed),
                     smoothed_ce, (xv, yv), _random_tokens(relabel=True))  # fmt: skip
    if family in ("bn_mlp", "ln_moons", "ln_circles"):
        split, dims, norm = {
            "bn_mlp": (many_classes(), (30, 128, 64, 12), "batch"),
            "ln_moons": (moons(), (2, 64, 64, 2), "layer"),
            "ln_circles": (circles(), (2, 64, 64, 2), "layer"),
        }[family]
        x, y, xv, yv = split
        name = {"bn_mlp": "make_classification_12", "ln_moons": "moons"}.get(family, "circles")
        return Parts(name, partial(norm_mlp, dims, norm),
                     partial(models.minibatches, x, y, batch, seed), F.cross_entropy, (xv, yv),
                     _shuffled(3.0))  # fmt: skip
    if family.startswith("friedman"):  # friedman_<degree>_<loss>
        _, degree, loss = family.split("_")
        x, y, xv, yv = friedman(int(degree))
        losses: dict[str, LossFn] = {"mse": F.mse_loss, "huber": huber, "pinball": pinball}
        loss_fn = losses[loss]
        return Parts(f"friedman1_poly{degree}", partial(nn.Linear, x.shape[1], 1),
                     partial(models.minibatches, x, y, batch, seed), loss_fn, (xv, yv),
                     _shuffled(3.0))  # fmt: skip
    if family == "huber_linear":
        x, y, xv, yv = heavy_tailed(data_seed)
        return Parts("heavy_tailed", partial(nn.Linear, 8, 1),
                     partial(models.minibatches, x, y, batch, seed), huber, (xv, yv),
                     _shuffled(3.0))  # fmt: skip
    if family == "softmax_ls":
        x, y, xv, yv = five_classes(data_seed)
        return Parts("make_classification_5", partial(nn.Linear, 4, 5),
                     partial(models.minibatches, x, y, batch, seed), smoothed_ce, (xv, yv),
                     _shuffled(3.0))  # fmt: skip
    raise ValueError(family)


MODEL = {
    "lstm": "lstm", "conv1d": "conv1d", "dae": "denoising_autoencoder", "vae": "vae",
    "skipgram": "skipgram_sgns", "bag": "embedding_bag", "bn_mlp": "batchnorm_mlp",
    "ln_moons": "layernorm_mlp", "ln_circles": "layernorm_mlp", "huber_linear": "huber_linear",
    "softmax_ls": "softmax_label_smoothing",
}  # fmt: skip


def model_name(family: str) -> str:
    family = family.partition(":")[0]
    return MODEL.get(family, f"linear_{family.split('_')[-1]}")


def job(
    family: str,
    *,
    opt: str,
    lr: float,
    sched: str = "constant",
    batch: int | None,
    steps: int,
    seed: int,
    lr_factor: Callable[[int], float] | None = None,
    garbage_at: tuple[int, ...] = (),
    val_every: int = 0,
    grad: bool = True,
) -> Callable[[], Job]:
    def build() -> Job:
        p = parts(family, seed, batch)
        torch.manual_seed(seed)
        m = p.model()
        o = optimizer(opt, m.parameters(), lr)
        return Job(
            m,
            p.loss_fn,
            o,
            p.batches(),
            steps,
            models.scheduler(sched, o, steps),
            lr_factor=lr_factor or (lambda s: 1.0),
            corrupt=p.garbage(garbage_at, seed) if garbage_at else None,
            val=p.val,
            val_every=val_every,
            log_grad_norm=grad,
        )

    return build


def facts(family: str, opt: str, sched: str, batch: int | None, seed: int, **more: object
          ) -> dict[str, object]:  # fmt: skip
    dataset = parts(family, seed, batch or 1).dataset
    return dict(dataset=dataset, model=model_name(family), optimizer=opt, schedule=sched,
                batch=batch, seed=seed, **more)  # fmt: skip


def full_batch_edge(family: str, seed: int) -> float:
    """The stability edge of full-batch gradient descent on ``family``'s training set."""
    p = parts(family, seed, None)
    x, y = p.batches()(0)
    assert p.val is not None
    return edge_of((x, y, *p.val), p.loss_fn, 1 if family.startswith("huber") else 5)


def at_edge(
    label: str, family: str, frac: float, seed: int, *, steps: int, val_every: int,
    grad: bool = True,
) -> Spec:  # fmt: skip
    """Full-batch gradient descent at ``frac`` times ``family``'s stability edge: below it a
    healthy run, past it (on a loss whose gradient is bounded far out) an oscillation."""
    edge = full_batch_edge(family, seed)
    return Spec(
        label,
        f"{family.replace(':', '_data')}_gd_{frac:g}edge_s{seed}",
        f"{family} {model_name(family)}, full-batch GD at {frac:g}x the stability edge "
        f"(lr {frac * edge:.3g})",
        job(family, opt="sgd", lr=frac * edge, batch=None, steps=steps, seed=seed,
            val_every=val_every, grad=grad),
        facts(family, "sgd", "constant", None, seed, edge_lr=edge, edge_fraction=frac),
    )  # fmt: skip


# -- the runs ----------------------------------------------------------------------------------

# (family, optimizer, lr, schedule, batch, steps, garbage batches)
HEALTHY = [
    ("lstm", "adam", 3e-3, "cosine", 32, 600, 0),
    ("lstm", "nadam", 2e-3, "constant", 32, 600, 3),
    ("lstm", "adamax", 1e-2, "sgdr", 64, 900, 0),
    ("conv1d", "momentum", 0.05, "step", 64, 800, 0),
    ("conv1d", "adamax", 3e-3, "sgdr", 32, 900, 0),
    ("dae", "adam", 1e-3, "warmup", 64, 800, 0),
    ("dae", "momentum", 0.02, "constant", 32, 2000, 0),
    ("dae", "adamax", 2e-3, "constant", 32, 700, 3),
    ("vae", "adam", 1e-3, "constant", 64, 2500, 0),
    ("vae", "radam", 3e-3, "sgdr", 32, 900, 0),
    ("vae", "adam", 2e-3, "cosine", 32, 700, 3),
    ("skipgram", "sgd", 2.0, "constant", 128, 3000, 0),
    ("skipgram", "momentum", 0.3, "cosine", 64, 1200, 4),
    ("bag", "nadam", 3e-3, "warmup", 32, 800, 0),
    ("bag", "adadelta", 1.0, "constant", 32, 1000, 3),
    ("bn_mlp", "radam", 1e-3, "constant", 64, 1000, 0),
    ("bn_mlp", "momentum", 0.05, "sgdr", 128, 1200, 0),
    ("ln_moons", "nadam", 2e-3, "cosine", 32, 600, 3),
    ("ln_circles", "momentum", 0.05, "warmup", 16, 800, 0),
    ("friedman_3_mse", "adam", 1e-3, "constant", 64, 3000, 0),
    ("friedman_2_pinball", "adadelta", 1.0, "constant", 32, 1500, 0),
    ("friedman_2_huber", "adamax", 1e-2, "step", 32, 1000, 3),
    ("conv1d", "sgd", 0.1, "warmup", 16, 1500, 0),
    ("softmax_ls", "adam", 1e-2, "constant", 32, 600, 2),
]


def healthy(offset: int = 0) -> Iterator[Spec]:
    for i, (family, opt, lr, sched, batch, steps, garbage) in enumerate(HEALTHY):
        seed = SEED0 + offset + i
        at = tuple(sorted({drawn(seed + k, 100, steps - 100) for k in range(garbage)}))
        what = f"; bad batches at {list(at)}" if at else ""
        yield Spec(
            "healthy",
            f"{family}_{opt}_{sched}_b{batch}{'_bad' if at else ''}_s{seed}",
            f"{family} {model_name(family)}, {opt} lr {lr:g}, {sched} schedule, batch {batch}"
            f"{what}",
            job(family, opt=opt, lr=lr, sched=sched, batch=batch, steps=steps, seed=seed,
                garbage_at=at, val_every=10 if i % 3 == 0 else 0, grad=i % 2 == 0),
            facts(family, opt, sched, batch, seed, spikes_at=list(at)),
        )  # fmt: skip
    # Full batch below the edge: the counterparts of the oscillating runs.
    for i, (family, frac) in enumerate([("huber_linear:1", 0.8), ("softmax_ls:0", 0.9)]):
        seed = SEED0 + offset + 30 + i
        yield at_edge("healthy", family, frac, seed, steps=500, val_every=10)


# (family, optimizer, lr, schedule, batch, LR factor)
JUMPS = [
    ("lstm", "momentum", 0.5, "constant", 32, 30.0),
    ("lstm", "momentum", 0.5, "cosine", 32, 100.0),
    ("conv1d", "momentum", 0.05, "constant", 64, 30.0),
    ("conv1d", "adamax", 3e-3, "constant", 32, 300.0),
    ("conv1d", "momentum", 0.05, "constant", 32, 10.0),
    ("dae", "momentum", 0.02, "constant", 32, 100.0),
    ("vae", "adam", 1e-3, "constant", 64, 300.0),
    ("vae", "radam", 3e-3, "cosine", 32, 300.0),
    ("skipgram", "sgd", 2.0, "constant", 128, 30.0),
    ("bag", "nadam", 3e-3, "constant", 32, 300.0),
    ("bag", "momentum", 0.5, "constant", 32, 100.0),
    ("bn_mlp", "momentum", 0.05, "constant", 64, 100.0),
    ("bn_mlp", "radam", 1e-3, "constant", 64, 300.0),
    ("ln_circles", "momentum", 0.05, "constant", 32, 30.0),
    ("friedman_3_mse", "momentum", 3e-3, "constant", 64, 30.0),
]
# (family, optimizer, lr, a sane lr, batch)
TOO_HIGH = [
    ("dae", "sgd", 10.0, 0.02, 32),
    ("vae", "adam", 1.0, 1e-3, 64),
    ("bag", "momentum", 50.0, 0.5, 32),
    ("skipgram", "sgd", 200.0, 2.0, 128),
    ("dae", "momentum", 1.0, 0.02, 32),
    ("friedman_3_mse", "sgd", 1.0, 0.01, 64),
]
# (family, optimizer, peak lr, a sane lr, batch): a linear warm-up over 150 steps to the peak
WARMUP_TOO_HIGH = [
    ("dae", "momentum", 3.0, 0.02, 64),
    ("skipgram", "sgd", 60.0, 2.0, 128),
    ("bag", "momentum", 30.0, 0.5, 32),
    ("friedman_3_mse", "momentum", 0.1, 3e-3, 64),
]


def divergence(offset: int = 0) -> Iterator[Spec]:
    for i, (family, opt, lr, sched, batch, k) in enumerate(JUMPS):
        seed = SEED0 + offset + 100 + i
        at = drawn(seed, 150, 400)
        yield Spec(
            "divergence",
            f"{family}_lr_jump_x{k:g}_{opt}_b{batch}_s{seed}",
            f"{family} {model_name(family)}, {opt} lr {lr:g} {sched}, batch {batch}; from step "
            f"{at} the LR is {k:g}x",
            job(family, opt=opt, lr=lr, sched=sched, batch=batch, steps=at + 350, seed=seed,
                lr_factor=after(at, k), val_every=10 if i % 3 == 0 else 0, grad=i % 2 == 0),
            facts(family, opt, sched, batch, seed, lr_factor=k),
            injected_at=at,
        )  # fmt: skip
    for i, (family, opt, lr, sane, batch) in enumerate(TOO_HIGH):
        seed = SEED0 + offset + 130 + i
        yield Spec(
            "divergence",
            f"{family}_lr_too_high_{opt}_b{batch}_s{seed}",
            f"{family} {model_name(family)}, {opt} lr {lr:g} ({lr / sane:.0f}x a sane {sane:g}) "
            f"from the first step, batch {batch}",
            job(family, opt=opt, lr=lr, batch=batch, steps=500, seed=seed, grad=i % 2 == 1),
            facts(family, opt, "constant", batch, seed, sane_lr=sane),
        )  # fmt: skip
    for i, (family, opt, peak, sane, batch) in enumerate(WARMUP_TOO_HIGH):
        seed = SEED0 + offset + 140 + i
        yield Spec(
            "divergence",
            f"{family}_warmup_too_high_{opt}_b{batch}_s{seed}",
            f"{family} {model_name(family)}, {opt}, linear warm-up over 150 steps to lr {peak:g} "
            f"({peak / sane:.0f}x a sane {sane:g}), then cosine; batch {batch}",
            job(family, opt=opt, lr=peak, sched="warmup", batch=batch, steps=1500, seed=seed,
                grad=i % 2 == 0, val_every=10 if i == 0 else 0),
            facts(family, opt, "warmup", batch, seed, peak_lr=peak, sane_lr=sane),
        )  # fmt: skip
    # Polynomial features raised from degree 1 to 2 or 3, full-batch gradient descent kept at
    # the LR that was fine for degree 1 (0.9x its edge): far past the new edge.
    for i, degree in enumerate((3, 2)):
        seed = SEED0 + offset + 145 + i
        edge1 = um.least_squares_edge(friedman(1))
        edge = um.least_squares_edge(friedman(degree))
        yield Spec(
            "divergence",
            f"friedman_poly{degree}_gd_lr_of_degree1_s{seed}",
            f"Friedman #1, least squares on degree-{degree} polynomial features, full-batch GD "
            f"at lr {0.9 * edge1:.3g} (0.9x the degree-1 edge, {0.9 * edge1 / edge:.0f}x the "
            f"degree-{degree} edge): a geometric climb",
            job(f"friedman_{degree}_mse", opt="sgd", lr=0.9 * edge1, batch=None, steps=400,
                seed=seed, grad=i == 0, val_every=10),
            facts(f"friedman_{degree}_mse", "sgd", "constant", None, seed, edge_lr=edge,
                  degree1_edge_lr=edge1),
        )  # fmt: skip


# (family:dataset, multiple of the edge); the datasets whose cycle is not a near-tie of two
# equal losses (a 2-cycle between two points of almost the same loss passes for converged).
OSCILLATING = [
    ("huber_linear:1", 1.5),
    ("huber_linear:1", 2.5),
    ("huber_linear:4", 1.5),
    ("huber_linear:3", 2.5),
    ("softmax_ls:0", 1.3),
    ("softmax_ls:0", 2.0),
    ("softmax_ls:2", 1.3),
    ("softmax_ls:3", 2.0),
]


def oscillation(offset: int = 0) -> Iterator[Spec]:
    """Full-batch GD past the edge of a loss whose gradient is bounded far from the optimum (the
    Huber loss, the label-smoothed softmax): it can neither settle nor run away."""
    for i, (family, frac) in enumerate(OSCILLATING):
        seed = SEED0 + offset + 150 + i
        val_every = 10 if i % 3 == 1 else 0
        yield at_edge("oscillation", family, frac, seed, steps=600, val_every=val_every,
                      grad=i % 2 == 0)  # fmt: skip


# (family, optimizer, lr, batch, steps, earliest and latest collapse step)
COLLAPSES = [
    ("lstm", "adam", 3e-3, 32, 500, 60, 150),
    ("conv1d", "adamax", 3e-3, 32, 600, 50, 150),
    ("dae", "adamax", 2e-3, 32, 700, 60, 200),
    ("vae", "radam", 3e-3, 32, 600, 30, 100),
    ("skipgram", "sgd", 2.0, 128, 900, 250, 450),
    ("bag", "nadam", 3e-3, 32, 600, 40, 120),
    ("bn_mlp", "radam", 1e-3, 64, 700, 60, 200),
    ("friedman_3_mse", "adam", 1e-3, 64, 800, 100, 300),
]
# (family, optimizer, lr, batch)
TOO_SMALL = [
    ("vae", "adam", 1e-7, 64),
    ("bag", "adadelta", 1e-4, 32),
    ("dae", "momentum", 1e-6, 32),
    ("conv1d", "nadam", 1e-7, 32),
]


def plateau(offset: int = 0) -> Iterator[Spec]:
    for i, (family, opt, lr, batch, steps, lo, hi) in enumerate(COLLAPSES):
        seed = SEED0 + offset + 170 + i
        at = drawn(seed, lo, hi)
        yield Spec(
            "plateau",
            f"{family}_lr_collapse_{opt}_b{batch}_s{seed}",
            f"{family} {model_name(family)}, {opt} lr {lr:g}, batch {batch}; a schedule bug "
            f"multiplies the LR by 1e-4 from step {at}: the loss stops improving",
            job(family, opt=opt, lr=lr, batch=batch, steps=steps, seed=seed,
                lr_factor=after(at, 1e-4), grad=i % 2 == 0, val_every=10 if i % 3 == 0 else 0),
            facts(family, opt, "constant", batch, seed),
            injected_at=at,
        )  # fmt: skip
    for i, (family, opt, lr, batch) in enumerate(TOO_SMALL):
        seed = SEED0 + offset + 180 + i
        yield Spec(
            "plateau",
            f"{family}_lr_too_small_{opt}_b{batch}_s{seed}",
            f"{family} {model_name(family)}, {opt} lr {lr:g} (a units slip), batch {batch}: "
            "flat from the start",
            job(family, opt=opt, lr=lr, batch=batch, steps=500, seed=seed, grad=i % 2 == 1),
            facts(family, opt, "constant", batch, seed),
        )  # fmt: skip


FAMILIES = (healthy, divergence, oscillation, plateau)


def main(argv: list[str] | None = None) -> None:
    generate_draw(FAMILIES, Path("/tmp/families"), argv, __doc__.splitlines()[0], "families.py")


if __name__ == "__main__":
    main()
