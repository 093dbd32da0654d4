"""Generate the unseen corpus: real PyTorch CPU runs of model families the development corpus
(corpus.py) never had, to measure how lrwatch generalises to runs it was not tuned on.

Run from the repository root (about 2.5 minutes on one core; deterministic, seeds fixed):

    python -m benchmarks.detection.unseen                 # all runs
    python -m benchmarks.detection.unseen --only gru      # names containing "gru"
    python -m benchmarks.detection.unseen --seed-offset 1000 --out /tmp/draw2   # a fresh draw

Writes ``benchmarks/detection/unseen/<label>/<name>/{metrics.jsonl,labels.json}``, the layout
and the label rules of corpus.py (its ``label()`` and ``write()``: onsets from injection,
construction or hindsight, relabels printed). The families: a tiny causal transformer LM and a
GRU LM on generated text, a conv net on digits, full-batch least squares on diabetes and a
raw-unit regression, logistic regression and small MLPs under RMSprop, Adagrad, AdamW and
Nesterov SGD. The faults: LR jumps x10-x300 at a drawn step, an LR x30-x1000 too high from the
first step, gradient descent past the stability edge (least squares: a geometric climb;
non-separable logistic regression: a period-2 cycle), an LR collapsed x1e-4 at a drawn step or
far too small from the start; healthy runs get garbage batches and SGDR warm restarts too.
splits.py deals the runs into a tune and a frozen test half.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import torch
from torch import nn

from benchmarks.detection import _data as data
from benchmarks.detection import _models as models
from benchmarks.detection import _unseen_models as um
from benchmarks.detection._harness import Batch, Job
from benchmarks.detection.corpus import (
    Spec,
    after,
    bce,
    ce,
    columns,
    corrupt_inputs,
    generate_draw,
    mse,
    stability_edge,
)
from benchmarks.detection.splits import UNSEEN

CTX, LM_BATCH = 24, 16
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def drawn(seed: int, lo: int, hi: int) -> int:
    """The step of a fault, drawn with the run's seed (fixed, so the corpus is reproducible)."""
    return random.Random(seed).randint(lo, hi)


def job(
    model: Callable[[], nn.Module],
    batches: Callable[[], Callable[[int], Batch]],
    loss_fn: LossFn,
    *,
    opt: str,
    lr: float,
    sched: str = "constant",
    steps: int,
    seed: int,
    lr_factor: Callable[[int], float] | None = None,
    corrupt: Callable[[int, Batch], Batch] | None = None,
    val: Batch | None = None,
    val_every: int = 0,
    grad: bool = True,
) -> Callable[[], Job]:
    def build() -> Job:
        torch.manual_seed(seed)
        m = model()
        o = um.optimizer(opt, m.parameters(), lr)
        return Job(
            m,
            loss_fn,
            o,
            batches(),
            steps,
            models.scheduler(sched, o, steps),
            lr_factor=lr_factor or (lambda s: 1.0),
            corrupt=corrupt,
            val=val,
            val_every=val_every,
            log_grad_norm=grad,
        )

    return build


def lm(kind: str, *, seed: int, steps: int, layers: int = 1, **kw: object) -> Callable[[], Job]:
    """A character LM (``tfm``: causal transformer, ``gru``) on the generated text of ``seed``."""

    def model() -> nn.Module:
        return um.CausalTransformerLM(CTX, layers=layers) if kind == "tfm" else um.GRULM()

    def batches() -> Callable[[int], Batch]:
        return um.sequence_batches(data.text(seed % 5), CTX, LM_BATCH, seed)

    return job(model, batches, um.sequence_ce, seed=seed, steps=steps, **kw)  # type: ignore[arg-type]


def tabular(
    split: data.Split, model: str, *, batch: int | None, seed: int, **kw: object
) -> Callable[[], Job]:
    """``model``: ``logistic`` (one logit), ``linear``, ``convnet``, or the MLP's widths
    (``30-16-2``). The loss: BCE for ``logistic``, else the square loss on real targets and
    cross-entropy on classes."""
    x, y, xv, yv = split
    loss_fn: LossFn = bce if model == "logistic" else mse if y.is_floating_point() else ce

    def build_model() -> nn.Module:
        if model == "convnet":
            return um.ConvNet()
        if model in ("logistic", "linear"):
            return nn.Linear(x.shape[1], 1)
        return models.mlp(tuple(int(d) for d in model.split("-")), seed=seed)

    def batches() -> Callable[[int], Batch]:
        return models.minibatches(x, y, batch, seed)

    return job(build_model, batches, loss_fn, seed=seed, val=(xv, yv), **kw)  # type: ignore[arg-type]


def _binary(split: data.Split, cols: list[int], positive: Callable[[torch.Tensor], torch.Tensor]
            ) -> data.Split:  # fmt: skip
    x, y, xv, yv = split
    return x[:, cols], positive(y).long(), xv[:, cols], positive(yv).long()


def datasets() -> dict[str, data.Split]:
    return {
        "digits": data.digits(),
        "breast_cancer": data.breast_cancer(),
        "wine": data.wine(),
        "diabetes": data.diabetes(),
        "wide_regression": data.wide_regression(9),
    }


# -- the runs: (name, dataset, model, optimizer, lr, schedule, batch, steps) -------------------

LM_HEALTHY = [
    ("tfm", "adam", 3e-3, "warmup", 500, ()),
    ("tfm", "adamw", 3e-3, "cosine", 400, ()),
    ("tfm", "adam", 2e-3, "constant", 500, (3,)),  # garbage batches at 3 drawn steps
    ("tfm", "adamw", 5e-3, "sgdr", 600, ()),
    ("gru", "adam", 1e-2, "constant", 500, ()),
    ("gru", "rmsprop", 3e-3, "cosine", 500, ()),
    ("gru", "adam", 1e-2, "sgdr", 600, ()),
    ("gru", "adamw", 1e-2, "warmup", 500, (4,)),
]
TAB_HEALTHY = [
    ("digits", "convnet", "adam", 3e-3, "cosine", 32, 600, False),
    ("digits", "convnet", "nesterov", 0.05, "warmup", 64, 600, False),
    ("digits", "convnet", "rmsprop", 1e-3, "constant", 16, 600, False),
    ("digits", "convnet", "nesterov", 0.05, "sgdr", 128, 800, False),
    ("digits", "convnet", "adamw", 2e-3, "constant", 32, 700, True),  # corrupted batches
    ("breast_cancer", "logistic", "rmsprop", 1e-2, "constant", 16, 600, False),
    ("wine", "13-16-3", "adagrad", 0.05, "constant", 8, 600, False),
    ("breast_cancer", "30-16-2", "adamw", 3e-3, "warmup", 64, 600, False),
    ("wine", "13-3", "nesterov", 0.02, "cosine", 32, 500, False),
    ("breast_cancer", "logistic", "nesterov", 0.05, "constant", 128, 500, False),
    ("breast_cancer", "30-16-2", "rmsprop", 3e-3, "constant", 32, 700, True),
    ("wine", "13-16-3", "adamw", 3e-3, "constant", 16, 700, True),
    ("breast_cancer", "30-16-2", "adamw", 5e-3, "sgdr", 32, 800, False),
]


def healthy(offset: int = 0) -> Iterator[Spec]:
    ds = datasets()
    for i, (kind, opt, lr, sched, steps, garbage) in enumerate(LM_HEALTHY):
        seed = offset + 300 + i
        at = (
            tuple(sorted({drawn(seed + k, 100, steps - 50) for k in range(garbage[0])}))
            if garbage
            else ()
        )
        what = f"garbage batches at {list(at)}" if at else "clean"
        yield Spec(
            "healthy",
            f"{kind}_lm_{opt}_{sched}{'_garbage' if at else ''}_s{seed}",
            f"{kind} character LM, {opt} lr {lr:g}, {sched} schedule, batch {LM_BATCH}; {what}",
            lm(kind, seed=seed, steps=steps, opt=opt, lr=lr, sched=sched,
               corrupt=models.garbage_tokens(at, seed), grad=i % 2 == 0),
            dict(dataset="text", model=f"{kind}_lm", optimizer=opt, schedule=sched,
                 batch=LM_BATCH, seed=seed, spikes_at=list(at)),
        )  # fmt: skip
    for i, (name, model, opt, lr, sched, batch, steps, corrupted) in enumerate(TAB_HEALTHY):
        seed = offset + 320 + i
        at = (
            tuple(sorted({drawn(seed + k, 150, steps - 100) for k in range(3)}))
            if corrupted
            else ()
        )
        what = f"; inputs x3 and labels shuffled in the batches of steps {list(at)}" if at else ""
        bad = "_bad" if at else ""
        yield Spec(
            "healthy",
            f"{name}_{model.replace('-', '_')}_{opt}_{sched}_b{batch}{bad}_s{seed}",
            f"{name} {model}, {opt} lr {lr:g}, {sched} schedule, batch {batch}{what}",
            tabular(ds[name], model, batch=batch, seed=seed, opt=opt, lr=lr, sched=sched,
                    steps=steps, corrupt=corrupt_inputs(at, 3.0, seed) if at else None,
                    val_every=10 if i % 3 == 0 else 0, grad=i % 2 == 1),
            dict(dataset=name, model=model, optimizer=opt, schedule=sched, batch=batch,
                 seed=seed, spikes_at=list(at)),
        )  # fmt: skip
    for i, (name, frac, size) in enumerate(
        [("diabetes", 0.5, None), ("wide_regression", 0.9, None), ("diabetes", 0.2, 16)]
    ):
        seed, edge = offset + 340 + i, um.least_squares_edge(ds[name])
        yield Spec(
            "healthy",
            f"{name}_least_squares_{frac:g}edge_b{size or 'full'}_s{seed}",
            f"{name} least squares, SGD at {frac:g}x the full-batch stability edge "
            f"(lr {frac * edge:.3g}), batch {size or 'full'}",
            tabular(ds[name], "linear", batch=size, seed=seed, opt="sgd", lr=frac * edge,
                    steps=500, val_every=10),
            dict(dataset=name, model="linear", optimizer="sgd", batch=size, seed=seed,
                 edge_lr=edge, edge_fraction=frac),
        )  # fmt: skip
    split = OSCILLATING[0][1]()
    edge, seed = stability_edge(split, 2), offset + 343
    yield Spec(
        "healthy",
        f"{OSCILLATING[0][0]}_logistic_gd_0.9edge",
        f"{OSCILLATING[0][0]} logistic regression, full-batch GD at 0.9x the stability edge",
        tabular(split, "logistic", batch=None, seed=seed, opt="sgd", lr=0.9 * edge, steps=500),
        dict(optimizer="sgd", batch=None, seed=seed, edge_lr=edge, edge_fraction=0.9),
    )


# (kind or dataset, model, optimizer, lr, schedule, batch, LR factor): "lm" runs are LMs.
JUMPS = [
    ("tfm", "lm", "adam", 3e-3, "constant", LM_BATCH, 100.0),
    ("tfm", "lm", "adamw", 3e-3, "cosine", LM_BATCH, 300.0),
    ("gru", "lm", "adam", 1e-2, "constant", LM_BATCH, 100.0),
    ("gru", "lm", "rmsprop", 3e-3, "constant", LM_BATCH, 300.0),
    ("gru", "lm", "nesterov", 0.5, "constant", LM_BATCH, 10.0),
    ("digits", "convnet", "nesterov", 0.05, "constant", 32, 10.0),
    ("digits", "convnet", "adam", 3e-3, "cosine", 32, 100.0),
    ("digits", "convnet", "rmsprop", 1e-3, "constant", 64, 300.0),
    ("digits", "convnet", "adamw", 2e-3, "constant", 32, 30.0),
    ("breast_cancer", "logistic", "rmsprop", 1e-2, "constant", 32, 300.0),
    ("wine", "13-16-3", "nesterov", 0.02, "constant", 16, 100.0),
    ("wide_regression", "linear", "sgd", 1e-2, "constant", 32, 100.0),
    ("diabetes", "10-32-1", "adagrad", 0.05, "constant", 16, 100.0),
    ("diabetes", "10-32-1", "nesterov", 1e-2, "constant", 16, 30.0),
]
EARLY_JUMPS = [  # the LR x300 (x200) from a drawn step among the first few: the loss leaves at once
    ("tfm", "lm", "adam", 3e-3, "constant", LM_BATCH, 300.0),
    ("gru", "lm", "adam", 1e-2, "constant", LM_BATCH, 300.0),
    ("gru", "lm", "rmsprop", 3e-3, "constant", LM_BATCH, 300.0),
    ("digits", "convnet", "nesterov", 0.05, "constant", 32, 200.0),
]
TOO_HIGH = [  # (kind or dataset, model, optimizer, lr, a sane lr, batch)
    ("tfm", "lm", "nesterov", 30.0, 0.1, LM_BATCH),
    ("tfm", "lm", "sgd", 100.0, 0.1, LM_BATCH),
    ("wine", "13-16-3", "nesterov", 30.0, 0.05, 16),
    ("diabetes", "10-32-1", "nesterov", 1.0, 0.01, 16),
]


def model_job(name: str, model: str, batch: int, *, seed: int, **kw: object) -> Callable[[], Job]:
    """An LM (``model`` "lm", ``name`` its kind) or a tabular run on the dataset ``name``."""
    if model == "lm":
        return lm(name, seed=seed, **kw)  # type: ignore[arg-type]
    return tabular(datasets()[name], model, batch=batch, seed=seed, **kw)


def _jumps(table: list[tuple[str, str, str, float, str, int, float]], seed0: int, lo: int,
           hi: int, tag: str) -> Iterator[Spec]:  # fmt: skip
    for i, (name, model, opt, lr, sched, batch, k) in enumerate(table):
        seed = seed0 + i
        at = drawn(seed, lo, hi)
        steps = at + (300 if model == "lm" else 350)
        yield Spec(
            "divergence",
            f"{name}_{model.replace('-', '_')}_lr_{tag}_x{k:g}_{opt}_s{seed}",
            f"{name} {model}, {opt} lr {lr:g} {sched}, batch {batch}; from step {at} the LR "
            f"is {k:g}x",
            model_job(name, model, batch, seed=seed, opt=opt, lr=lr, sched=sched, steps=steps,
                      lr_factor=after(at, k), grad=i % 2 == 0,
                      val_every=10 if i % 3 == 0 and model != "lm" else 0),
            dict(dataset="text" if model == "lm" else name, model=model, optimizer=opt,
                 schedule=sched, batch=batch, seed=seed, lr_factor=k),
            injected_at=at,
        )  # fmt: skip


def divergence(offset: int = 0) -> Iterator[Spec]:
    ds = datasets()
    yield from _jumps(JUMPS, offset + 400, 150, 350, "jump")
    yield from _jumps(EARLY_JUMPS, offset + 420, 2, 8, "early_jump")
    for i, (name, model, opt, lr, sane, batch) in enumerate(TOO_HIGH):
        seed = offset + 430 + i
        yield Spec(
            "divergence",
            f"{name}_{model.replace('-', '_')}_lr_too_high_{opt}_s{seed}",
            f"{name} {model}, {opt} lr {lr:g} ({lr / sane:.0f}x a sane {sane:g}) from the first "
            f"step, batch {batch}",
            model_job(name, model, batch, seed=seed, opt=opt, lr=lr, steps=400,
                      grad=i % 2 == 0),
            dict(dataset="text" if model == "lm" else name, model=model, optimizer=opt,
                 batch=batch, seed=seed, sane_lr=sane),
        )  # fmt: skip
    # Full-batch least squares: an LR jump across the edge mid-run, and runs past it throughout
    # (a geometric climb).
    seed, edge = offset + 439, um.least_squares_edge(ds["diabetes"])
    at = drawn(seed, 100, 300)
    yield Spec(
        "divergence",
        f"diabetes_least_squares_gd_lr_jump_x30_s{seed}",
        f"diabetes least squares, full-batch GD at 0.05x the edge; from step {at} the LR is 30x "
        "(1.5x the edge)",
        tabular(ds["diabetes"], "linear", batch=None, seed=seed, opt="sgd", lr=0.05 * edge,
                steps=at + 300, lr_factor=after(at, 30.0)),
        dict(dataset="diabetes", model="linear", optimizer="sgd", batch=None, seed=seed,
             edge_lr=edge, lr_factor=30.0),
        injected_at=at,
    )  # fmt: skip
    for i, (name, frac, steps) in enumerate(
        [("diabetes", 1.02, 1000), ("diabetes", 1.06, 500), ("diabetes", 1.3, 300),
         ("wide_regression", 1.1, 400), ("wide_regression", 2.0, 200)]
    ):  # fmt: skip
        seed, edge = offset + 440 + i, um.least_squares_edge(ds[name])
        yield Spec(
            "divergence",
            f"{name}_least_squares_gd_{frac:g}edge_s{seed}",
            f"{name} least squares, full-batch GD at {frac:g}x the stability edge "
            f"(lr {frac * edge:.3g}): the loss climbs geometrically",
            tabular(ds[name], "linear", batch=None, seed=seed, opt="sgd", lr=frac * edge,
                    steps=steps, grad=i % 2 == 1),
            dict(dataset=name, model="linear", optimizer="sgd", batch=None, seed=seed,
                 edge_lr=edge, edge_fraction=frac),
        )  # fmt: skip


def _above_median(y: torch.Tensor) -> torch.Tensor:
    return y[:, 0] > 0


OSCILLATING: list[tuple[str, Callable[[], data.Split]]] = [
    ("breast_cancer_cols_2_8", lambda: columns(data.breast_cancer(), [2, 8])),
    ("wine_class0_2f", lambda: _binary(data.wine(), [1, 4], lambda y: y == 0)),
    ("digits_low_high_3f", lambda: _binary(data.digits(), [20, 36, 44], lambda y: y < 5)),
    ("diabetes_binary_4f", lambda: _binary(data.diabetes(), [0, 1, 4, 5], _above_median)),
]


def oscillation(offset: int = 0) -> Iterator[Spec]:
    for i, (name, make) in enumerate(OSCILLATING):
        split = make()
        edge = stability_edge(split, 2)
        for j, k in enumerate((1.4, 2.2)):
            seed = offset + 450 + 2 * i + j
            yield Spec(
                "oscillation",
                f"{name}_logistic_gd_{k:g}edge",
                f"{name.replace('_', ' ')}, logistic regression, full-batch GD at {k:g}x the "
                f"stability edge (lr {k * edge:.3g})",
                tabular(split, "logistic", batch=None, seed=seed, opt="sgd", lr=k * edge,
                        steps=600, grad=j == 0, val_every=10 if i % 2 else 0),
                dict(dataset=name, optimizer="sgd", batch=None, seed=seed, edge_lr=edge,
                     edge_fraction=k),
            )  # fmt: skip


COLLAPSES = [  # (kind or dataset, model, optimizer, lr, batch, steps, earliest, latest)
    ("tfm", "lm", "adam", 3e-3, LM_BATCH, 500, 60, 150),
    ("gru", "lm", "rmsprop", 3e-3, LM_BATCH, 500, 60, 150),
    ("digits", "convnet", "nesterov", 0.02, 32, 600, 30, 100),
    ("breast_cancer", "logistic", "adagrad", 0.02, 16, 500, 10, 40),
    ("wine", "13-16-3", "adamw", 1e-3, 16, 500, 20, 60),
    ("diabetes", "linear", "sgd", 3e-3, 32, 500, 20, 60),
]
TOO_SMALL = [
    ("tfm", "lm", "adamw", 1e-7, LM_BATCH),
    ("gru", "lm", "nesterov", 1e-5, LM_BATCH),
    ("digits", "convnet", "rmsprop", 1e-7, 32),
    ("wine", "13-16-3", "adagrad", 1e-6, 16),
]


def plateau(offset: int = 0) -> Iterator[Spec]:
    for i, (name, model, opt, lr, batch, steps, lo, hi) in enumerate(COLLAPSES):
        seed = offset + 460 + i
        at = drawn(seed, lo, hi)
        build = model_job(name, model, batch, seed=seed, opt=opt, lr=lr, steps=steps,
                          lr_factor=after(at, 1e-4), grad=i % 2 == 0)  # fmt: skip
        yield Spec(
            "plateau",
            f"{name}_{model.replace('-', '_')}_lr_collapse_{opt}_s{seed}",
            f"{name} {model}, {opt} lr {lr:g}, batch {batch}; a schedule bug multiplies the "
            f"LR by 1e-4 from step {at}: the loss stops improving",
            build,
            dict(dataset="text" if model == "lm" else name, model=model, optimizer=opt,
                 batch=batch, seed=seed),
            injected_at=at,
        )  # fmt: skip
    for i, (name, model, opt, lr, batch) in enumerate(TOO_SMALL):
        seed = offset + 470 + i
        build = model_job(name, model, batch, seed=seed, opt=opt, lr=lr, steps=400)
        yield Spec(
            "plateau",
            f"{name}_{model.replace('-', '_')}_lr_too_small_{opt}_s{seed}",
            f"{name} {model}, {opt} lr {lr:g} (a units slip), batch {batch}: flat from the start",
            build,
            dict(dataset="text" if model == "lm" else name, model=model, optimizer=opt,
                 batch=batch, seed=seed),
        )  # fmt: skip


FAMILIES = (healthy, divergence, oscillation, plateau)


def main(argv: list[str] | None = None) -> None:
    generate_draw(FAMILIES, UNSEEN, argv, __doc__.splitlines()[0], "unseen.py")


if __name__ == "__main__":
    main()
