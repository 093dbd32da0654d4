"""Real loss curves for the detector tests: tiny models really trained by torch on CPU.

Synthetic curves test what their author imagined; these test what SGD does. Each curve is
deterministic (seeded, one thread), takes well under a second, and is cached for the session.
The datasets are scikit-learn's bundled ones, so nothing is downloaded. ``feed`` and
``first_nonfinite`` are the two ways the tests look at a curve through a detector.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression
from torch import nn

from lrwatch.detectors.base import Detector
from lrwatch.protocol.types import Finding

Curve = tuple[float, ...]


def feed(detector: Detector, values: Sequence[float], start: int = 0) -> list[Finding]:
    """Every finding ``detector`` makes on ``values``, logged at steps ``start``, ``start+1``..."""
    found = (detector.update(start + i, v) for i, v in enumerate(values))
    return [f for f in found if f is not None]


def first_nonfinite(values: Sequence[float]) -> int | None:
    return next((i for i, v in enumerate(values) if not math.isfinite(v)), None)


Trace = list[tuple[Finding | None, str | None]]


def trace(detector: Detector, values: Sequence[float], start: int = 0, every: int = 1) -> Trace:
    """What ``detector`` says after each value, logged at steps ``start``, ``start+every``..:
    (finding or None, active kind)."""
    return [(detector.update(start + every * i, v), detector.active) for i, v in enumerate(values)]


def resumed_trace(
    make: Callable[[], Detector],
    values: Sequence[float],
    split: int,
    start: int = 0,
    every: int = 1,
) -> Trace:
    """The trace of a detector saved after ``split`` values, through JSON as the daemon's store
    keeps it, and loaded into a fresh one that sees the rest."""
    first = make()
    head = trace(first, values[:split], start, every)
    state = json.loads(json.dumps(first.state_dict()))
    second = make()
    second.load_state_dict(state)
    return head + trace(second, values[split:], start + every * split, every)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest (and bit-for-bit repeatably) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _standardise(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x - x.mean(0)) / (x.std(0) + 1e-8)
    return out


@functools.cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_digits()
    return torch.tensor(_standardise(ds.data), dtype=torch.float32), torch.tensor(ds.target)


def _train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch: int | None,
    seed: int,
    lr_at: Callable[[int], float] | None = None,
    grad_norms: list[float] | None = None,
    bad_batches: tuple[int, ...] = (),
) -> Curve:
    """The per-step training loss, as a logger would record it (``loss.item()``); the gradient
    norm of each step is appended to ``grad_norms`` if given. At ``bad_batches`` steps the
    batch's labels are shuffled (a broken join upstream)."""
    gen = torch.Generator().manual_seed(seed)
    losses = []
    with _one_thread():
        for step in range(steps):
            if lr_at is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
            if batch is None:
                xb, yb = x, y
            else:
                idx = torch.randint(0, len(x), (batch,), generator=gen)
                xb, yb = x[idx], y[idx]
            if step in bad_batches:
                yb = yb[torch.randperm(len(yb), generator=gen)]
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            if grad_norms is not None:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
                grad_norms.append(float(norm))
            optimizer.step()
            losses.append(loss.item())
    return tuple(losses)


def _digits_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@functools.cache
def healthy(seed: int = 0, steps: int = 600, batch: int = 16) -> Curve:
    """An MLP on digits, SGD lr 0.05, small batches: falls from 2.3 to ~0.1, noisily."""
    x, y = _digits()
    model = _digits_mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return _train(
        model, x, y, nn.functional.cross_entropy, opt, steps=steps, batch=batch, seed=seed
    )


@functools.cache
def blowup(seed: int = 0, peak_lr: float = 5.0, warmup: int = 300) -> Curve:
    """The same MLP with SGD momentum 0.9 and a linear LR warm-up to a peak that is far too
    high — the classic way large runs diverge: fine at first, then once the LR crosses the
    stability edge the loss grows geometrically to inf and NaN."""
    x, y = _digits()
    model = _digits_mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    return _train(
        model,
        x,
        y,
        nn.functional.cross_entropy,
        opt,
        steps=warmup,
        batch=32,
        seed=seed,
        lr_at=lambda step: peak_lr * (step + 1) / warmup,
    )


@functools.cache
def lr_jump(seed: int = 0, at: int = 150, lr: float = 3.0, steps: int = 300) -> Curve:
    """The MLP trained well (SGD lr 0.05, momentum 0.9) until step ``at``, where the LR jumps
    to ``lr`` (a bad schedule edit, a resumed job with the wrong config): the onset is known."""
    x, y = _digits()
    model = _digits_mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return _train(
        model,
        x,
        y,
        nn.functional.cross_entropy,
        opt,
        steps=steps,
        batch=32,
        seed=seed,
        lr_at=lambda step: 0.05 if step < at else lr,
    )


def with_spike(curve: Sequence[float], at: int, factor: float = 5.0, length: int = 2) -> Curve:
    """A benign spike: ``length`` samples at ``factor`` times the local level, then back.

    Scaling the local median rather than the sample itself keeps the spike the size it says:
    a noisy minibatch loss can be 10x below its neighbours, and 5x of that is no spike.
    """
    out = list(curve)
    level = float(np.median(out[max(0, at - 25) : at]))
    for i in range(at, at + length):
        out[i] = factor * level
    return tuple(out)


@functools.cache
def _two_feature_logreg() -> tuple[torch.Tensor, torch.Tensor, float]:
    """Breast cancer on its first two features (radius, texture): not separable, so the
    logistic loss has a finite minimum whose curvature sets the stability edge 2/lambda_max."""
    ds = load_breast_cancer()
    x = _standardise(ds.data[:, :2])
    fit = LogisticRegression(C=1e6, max_iter=10_000).fit(x, ds.target)
    p = fit.predict_proba(x)[:, 1]
    xb = np.hstack([x, np.ones((len(x), 1))])
    hessian = (xb * (p * (1 - p))[:, None]).T @ xb / len(x)
    edge = 2.0 / float(np.linalg.eigvalsh(hessian).max())
    xt = torch.tensor(x, dtype=torch.float32)
    return xt, torch.tensor(ds.target, dtype=torch.float32), edge


@functools.cache
def full_batch_logreg(
    edge_fraction: float, steps: int = 400, cut_at: int | None = None, cut_to: float = 0.5
) -> Curve:
    """Full-batch GD on logistic regression at ``edge_fraction`` x the stability edge.

    Below the edge (e.g. 0.9) it converges, any alternation dying out; above it (e.g. 1.5) it
    settles into a period-2 cycle, the loss alternating between two values well above the
    minimum (Meng et al. 2024, "Gradient descent on logistic regression with non-separable
    data and large step sizes"). With ``cut_at``, the LR drops to ``cut_to`` x the edge there,
    as the controller would make it, and the cycle dies out.
    """
    x, y, edge = _two_feature_logreg()
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=edge_fraction * edge)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), target)

    def lr_at(step: int) -> float:
        return (cut_to if cut_at is not None and step >= cut_at else edge_fraction) * edge

    return _train(model, x, y, loss_fn, opt, steps=steps, batch=None, seed=0, lr_at=lr_at)


@functools.cache
def converging_regression(seed: int = 0, steps: int = 1500) -> Curve:
    """Linear regression on diabetes with SGD, small batches: the MSE falls fast, then
    flattens at the noise floor of the data (R^2 ~ 0.5 is all a linear model gets)."""
    ds = load_diabetes()
    x = torch.tensor(_standardise(ds.data), dtype=torch.float32)
    y = torch.tensor(_standardise(ds.target[:, None]), dtype=torch.float32)
    torch.manual_seed(seed)
    model = nn.Linear(10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return _train(model, x, y, nn.functional.mse_loss, opt, steps=steps, batch=32, seed=seed)


@functools.cache
def saddle(seed: int = 0, steps: int = 1000) -> Curve:
    """A 3-layer tanh net on digits started near zero (weights ~ N(0, 0.01^2)): the loss sits
    at log(10) = 2.303 on the saddle at the origin for ~400 steps, then escapes and falls fast
    (Saxe et al. 2014 describe these plateaus for deep nets with small initialisation)."""
    x, y = _digits()
    torch.manual_seed(seed)
    dims = (64, 32, 32, 10)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(dims):
        linear = nn.Linear(fan_in, fan_out)
        nn.init.normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Tanh()]
    model = nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return _train(model, x, y, nn.functional.cross_entropy, opt, steps=steps, batch=64, seed=seed)


@functools.cache
def lr_jump_grad_norms(seed: int = 0, at: int = 150, lr: float = 3.0) -> Curve:
    """The gradient norms of :func:`lr_jump`'s run (same seed, same batches)."""
    x, y = _digits()
    model = _digits_mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    norms: list[float] = []
    _train(
        model,
        x,
        y,
        nn.functional.cross_entropy,
        opt,
        steps=300,
        batch=32,
        seed=seed,
        lr_at=lambda step: 0.05 if step < at else lr,
        grad_norms=norms,
    )
    return tuple(norms)


@functools.cache
def healthy_grad_norms(seed: int = 0, steps: int = 600, batch: int = 16) -> Curve:
    """The gradient norms of :func:`healthy`'s run."""
    x, y = _digits()
    model = _digits_mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    norms: list[float] = []
    _train(
        model,
        x,
        y,
        nn.functional.cross_entropy,
        opt,
        steps=steps,
        batch=batch,
        seed=seed,
        grad_norms=norms,
    )
    return tuple(norms)


@functools.cache
def bad_batches(seed: int = 0, at: tuple[int, ...] = (300, 301)) -> Curve:
    """:func:`healthy`'s MLP with momentum 0.9 and batch 32, fed batches with shuffled labels at
    ``at``: the loss jumps on them and stays up a few steps while the update is shaken off."""
    x, y = _digits()
    model = _digits_mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return _train(
        model,
        x,
        y,
        nn.functional.cross_entropy,
        opt,
        steps=600,
        batch=32,
        seed=seed,
        bad_batches=at,
    )


@functools.cache
def too_high_from_the_start(seed: int = 0, lr: float = 1.5) -> Curve:
    """Full-batch linear regression on diabetes with an LR far past 2 / lambda_max: the loss
    grows geometrically from the first step and overflows within a few dozen."""
    ds = load_diabetes()
    x = torch.tensor(_standardise(ds.data), dtype=torch.float32)
    y = torch.tensor(_standardise(ds.target[:, None]), dtype=torch.float32)
    torch.manual_seed(seed)
    model = nn.Linear(10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return _train(model, x, y, nn.functional.mse_loss, opt, steps=60, batch=None, seed=seed)


@functools.cache
def period_four(edge_fraction: float = 1.5, steps: int = 400) -> Curve:
    """Full-batch GD on a logistic regression of diabetes progression (above/below the median,
    from 3 heavily overlapping features) at ``edge_fraction`` x the stability edge: past the
    edge the period-2 cycle has doubled, and the loss repeats every 4 steps."""
    ds = load_diabetes()
    x = _standardise(ds.data[:, [2, 3, 8]])
    target = (ds.target > np.median(ds.target)).astype(np.float64)
    fit = LogisticRegression(C=1e6, max_iter=10_000).fit(x, target)
    p = fit.predict_proba(x)[:, 1]
    xb = np.hstack([x, np.ones((len(x), 1))])
    hessian = (xb * (p * (1 - p))[:, None]).T @ xb / len(x)
    edge = 2.0 / float(np.linalg.eigvalsh(hessian).max())
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=edge_fraction * edge)

    def loss_fn(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), t)

    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(target, dtype=torch.float32)
    return _train(model, xt, yt, loss_fn, opt, steps=steps, batch=None, seed=0)


@functools.cache
def fraud_stream(seed: int = 0, shift_at: int = 1200, steps: int = 1800) -> Curve:
    """Online logistic regression (SGD, lr 0.02) on a fraud-like stream, 5 % positives, one
    batch of 64 per step, each scored before it is learned from (prequential loss). At
    ``shift_at`` the fraudsters change pattern — towards where the model has learned to see
    legitimate transactions — and the loss steps up about 2x, then creeps down as it adapts."""
    gen = torch.Generator().manual_seed(seed)
    fraud = torch.randn(12, generator=gen) * 1.2
    moved = -0.4 * fraud + 0.3 * torch.randn(12, generator=gen)
    torch.manual_seed(seed)
    model = nn.Linear(12, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    losses = []
    with _one_thread():
        for step in range(steps):
            y = (torch.rand(64, generator=gen) < 0.05).float()
            centre = torch.where(y[:, None] > 0, moved if step >= shift_at else fraud, 0.0)
            xb = centre + torch.randn(64, 12, generator=gen)
            loss = nn.functional.binary_cross_entropy_with_logits(model(xb).squeeze(1), y)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            losses.append(loss.item())
    return tuple(losses)


@functools.cache
def overfitting(seed: int = 0, train: int = 120, steps: int = 1500) -> tuple[Curve, Curve]:
    """A wide MLP (64-256-10) trained with Adam (lr 3e-3, batch 16) on only ``train`` digits:
    the training loss falls towards zero while the validation loss (the last 297 digits,
    evaluated every 10 steps) bottoms out early and climbs. Returns (train, validation)."""
    x, y = _digits()
    xt, yt, xv, yv = x[:train], y[:train], x[-297:], y[-297:]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    losses, val = [], []
    with _one_thread():
        for step in range(steps):
            idx = torch.randint(0, train, (16,), generator=gen)
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            losses.append(loss.item())
            if step % 10 == 0:
                with torch.no_grad():
                    val.append(nn.functional.cross_entropy(model(xv), yv).item())
    return tuple(losses), tuple(val)


@functools.cache
def healthy_validation(seed: int = 0, steps: int = 1500) -> Curve:
    """:func:`healthy`'s MLP on the first 1,500 digits, validated every 10 steps on the other
    297: the validation loss falls and flattens, with no real rise (enough data)."""
    x, y = _digits()
    xt, yt, xv, yv = x[:1500], y[:1500], x[1500:], y[1500:]
    model = _digits_mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    val = []
    with _one_thread():
        for step in range(steps):
            idx = torch.randint(0, len(xt), (32,), generator=gen)
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            if step % 10 == 0:
                with torch.no_grad():
                    val.append(nn.functional.cross_entropy(model(xv), yv).item())
    return tuple(val)


@functools.cache
def unseen_run(family: str, name: str, offset: int = 0) -> tuple[tuple[int, float], ...]:
    """The run ``name`` of the unseen corpus generator's ``family`` ("healthy",
    "oscillation", ...), drawn with seed ``offset`` (``unseen.py --seed-offset``) and trained
    here (about 2 s): (step, loss) as it logs them."""
    rows = unseen_records(family, name, offset)
    return tuple((int(r["step"]), r["loss"]) for r in rows if "loss" in r)


def unseen_records(family: str, name: str, offset: int = 0) -> list[dict[str, float]]:
    """``unseen_run``'s run, every record it logs (``step``, ``loss``, ``grad_norm``, ``lr``)."""
    from benchmarks.detection import unseen
    from benchmarks.detection._harness import run

    (spec,) = [s for s in getattr(unseen, family)(offset) if s.name == name]
    return run(spec.build())


def tenfold_fall(creep: float, steps: int = 40_000, seed: int = 0) -> list[float]:
    """A long run's loss, simulated: a tenfold fall in its first few thousand steps, then
    ``creep`` (log units per step) down, with 5 % noise per step. ``creep`` 1e-6 is a run
    still learning slowly (2 % per 20,000 steps); 0, one that has stopped."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    fall = 3.0 * (1 + 9 * np.exp(-t / 500))
    return [float(v) for v in fall * np.exp(-creep * t + rng.normal(0, 0.05, steps))]
