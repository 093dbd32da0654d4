"""Models, optimizers and samplers of the unseen corpus (unseen.py): families the development
corpus never had (a causal transformer LM, a GRU LM, a small conv net, plain least squares) and
optimizers it never used (RMSprop, Adagrad, AdamW, SGD with Nesterov momentum).

Kept apart from ``_models.py`` so the development corpus's building blocks stay as they were
when it was generated; whatever both corpora share is imported from there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmarks.detection import _data as data
from benchmarks.detection import _models as models
from benchmarks.detection._harness import Batch

VOCAB = len(data.ALPHABET)


class CausalTransformerLM(nn.Module):
    """A tiny GPT: character embedding plus learned positions, pre-norm encoder layers under a
    causal mask, a linear head predicting the next character at every position."""

    def __init__(self, ctx: int, d_model: int = 32, layers: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Parameter(torch.randn(ctx, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, VOCAB)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(ctx))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx) + self.pos[: idx.shape[1]]
        out: torch.Tensor = self.head(self.encoder(h, mask=self.mask, is_causal=True))
        return out


class GRULM(nn.Module):
    """A one-layer GRU over character embeddings, predicting the next character everywhere."""

    def __init__(self, emb: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, emb)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.emb(idx))
        logits: torch.Tensor = self.head(out)
        return logits


class ConvNet(nn.Module):
    """Two 3x3 convolutions on the 8x8 digit images (the flat 64 features, reshaped)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.view(-1, 1, 8, 8))
        return out


def sequence_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every position of every sequence (the LM's mean per-token loss)."""
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def optimizer(name: str, params: object, lr: float) -> torch.optim.Optimizer:
    """The development corpus's optimizers, and rmsprop, adagrad, adamw, nesterov."""
    p = params
    if name == "rmsprop":
        return torch.optim.RMSprop(p, lr=lr)  # type: ignore[arg-type]
    if name == "adagrad":
        return torch.optim.Adagrad(p, lr=lr)  # type: ignore[arg-type]
    if name == "adamw":
        return torch.optim.AdamW(p, lr=lr, weight_decay=0.01)  # type: ignore[arg-type]
    if name == "nesterov":
        return torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True)  # type: ignore[arg-type]
    return models.optimizer(name, params, lr)


def sequence_batches(text: torch.Tensor, ctx: int, batch: int, seed: int) -> Callable[[int], Batch]:
    """Random windows of ``ctx`` characters and the same windows shifted by one (the targets)."""
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(ctx)

    def sample(step: int) -> Batch:
        start = torch.randint(0, len(text) - ctx - 1, (batch,), generator=gen)
        idx = start[:, None] + offsets
        return text[idx], text[idx + 1]

    return sample


def least_squares_edge(split: data.Split) -> float:
    """2 / lambda_max of the mean square loss of a linear model with a bias: its Hessian is
    ``2 X^T X / n`` (X with a column of ones), whatever the weights, so full-batch gradient
    descent past this LR grows the error along the top eigenvector geometrically."""
    x = split[0].double()
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    return 2.0 / float(torch.linalg.eigvalsh(xb.T @ xb / len(x) * 2).max())
