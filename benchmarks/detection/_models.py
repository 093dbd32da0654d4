"""Models, optimizers, schedules and batch samplers for the corpus runs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.detection import _data as data
from benchmarks.detection._harness import Batch


def mlp(
    dims: tuple[int, ...], *, seed: int, act: type[nn.Module] = nn.ReLU, init_std: float = 0.0
) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        linear = nn.Linear(a, b)
        if init_std:
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(dims) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class CharLM(nn.Module):
    """Next character from the previous ``ctx``: embedding, one hidden layer (Bengio 2003)."""

    def __init__(self, vocab: int, ctx: int = 12, emb: int = 12, hidden: int = 96) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.net = nn.Sequential(nn.Linear(ctx * emb, hidden), nn.Tanh(), nn.Linear(hidden, vocab))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(self.emb(idx).flatten(1))
        return out


def optimizer(name: str, params: object, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)  # type: ignore[arg-type]
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)  # type: ignore[arg-type]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)  # type: ignore[arg-type]
    raise ValueError(name)


def scheduler(name: str, opt: torch.optim.Optimizer, steps: int) -> object | None:
    """constant, step, cosine, warmup (linear warm-up then cosine), sgdr (warm restarts)."""
    sched = torch.optim.lr_scheduler
    if name == "constant":
        return None
    if name == "step":
        return sched.StepLR(opt, step_size=max(1, steps // 3), gamma=0.3)
    if name == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=steps)
    if name == "warmup":
        warm = max(1, steps // 10)

        def factor(s: int) -> float:
            if s < warm:
                return (s + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / (steps - warm))))

        return sched.LambdaLR(opt, factor)
    if name == "sgdr":
        return sched.CosineAnnealingWarmRestarts(opt, T_0=max(1, steps // 6), T_mult=2)
    raise ValueError(name)


def minibatches(
    x: torch.Tensor, y: torch.Tensor, batch: int | None, seed: int
) -> Callable[[int], Batch]:
    if batch is None:
        return lambda step: (x, y)
    gen = torch.Generator().manual_seed(seed)

    def sample(step: int) -> Batch:
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        return x[idx], y[idx]

    return sample


def char_batches(text: torch.Tensor, ctx: int, batch: int, seed: int) -> Callable[[int], Batch]:
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(ctx)

    def sample(step: int) -> Batch:
        start = torch.randint(0, len(text) - ctx - 1, (batch,), generator=gen)
        idx = start[:, None] + offsets
        return text[idx], text[start + ctx]

    return sample


def garbage_tokens(steps: tuple[int, ...], seed: int) -> Callable[[int, Batch], Batch]:
    """The batches of ``steps`` replaced by random characters (a shard of garbage)."""
    gen = torch.Generator().manual_seed(seed + 7)
    vocab = len(data.ALPHABET)

    def corrupt(step: int, b: Batch) -> Batch:
        if step not in steps:
            return b
        x, y = b
        return (
            torch.randint(0, vocab, x.shape, generator=gen),
            torch.randint(0, vocab, y.shape, generator=gen),
        )

    return corrupt
