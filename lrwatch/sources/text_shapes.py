"""The shapes of the lines of a plain-text training log (``text.py`` reads them): the regexes
that find a step, an epoch and its iteration, a progress bar, a table or a dict in a line, and
the pure functions that read the metrics off it. Each shape's source and details:
docs/formats.md.
"""

from __future__ import annotations

import re

_NUM = (
    r"[-+]?(?:(?:nan|inf(?:inity)?)(?![A-Za-z])"
    r"|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
)
_KEY = r"[A-Za-z_][\w./\-]*"
# An epoch and the iteration within it, tried before the markers below: mmdetection's
# "Epoch [1][50/7330]", mmengine's "Epoch(train) [1][ 50/7330]", fairseq's "epoch 001:  100 / 1000",
# Ignite's "Epoch[1] Iteration[5/1000]", PyTorch's ImageNet example "Epoch: [0][ 10/5005]", its
# MNIST example "Train Epoch: 1 [640/60000 (1%)]" (samples, not iterations), its language model
# "| epoch   1 |   200/ 2983 batches |", timm's "Train: 0 [  50/1251 (  4%)]", and a progress bar
# whose description names the epoch: tqdm's "Epoch 3/10:  45%|####5     | 450/1000 [...]"
# (Lightning's TQDMProgressBar), rich's "Epoch 0/9  ━━━━━━ 450/1000"; and a word for the
# iteration between them, as tutorials print it: "Epoch [1/5], Step [100/600], Loss: 0.21",
# "Epoch: 1, Batch: 100/600". The step counts iterations (in the log's own unit) across epochs.
EPOCH_ITER = re.compile(
    r"(?:\bepoch\b(?:\(train\))?|^\s*train\b)\s*:?\s*\[?\s*(\d+)(?:\s*/\s*\d+)?\s*"
    r"(?:\]\s*(?:iter(?:ation)?\s*)?\[|\[|:\s*\d+%\|[^|]*\||:|\||[━╸╺─]+"
    r"|\]?\s*[,|;]?\s*(?:step|iter|iteration|batch|it)\b\s*:?\s*\[?)"
    r"\s*(\d+)\s*/\s*(\d+)\s*\]?\s*:?",
    re.IGNORECASE,
)
STEP_MARKERS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        # (DeepSpeed's pipeline engine: "steps: 10 loss: 2.3456 iter time (s): ...")
        r"\b(?:step|steps|iter|iters|iteration)\b(?:\(train\))?\s*[=:\[]?\s*(\d+)"
        r"(?:\s*/\s*\d+)?\s*\]?\s*:?",
        r"(?:^|\s)s:(\d+)\b",  # llm.c main.log
        r"^\s*\d+\|(\d+)\|",  # torchtune's progress bar: "<epoch>|<step>|Loss: 1.404: ..."
        # (PaddleOCR: "epoch: [1/500], global_step: 10, ...", the counter taking the step)
        r"\bepoch\b\s*[=:]?\s*\[?\s*(\d+)(?:\s*/\s*\d+)?\s*\]?\s*:?",
        r"^\s*\[\s*(\d+)\s*\]",
    )
)
# key=value (one word) or key: value (up to two words: "Train Loss: 4.05")
_ASSIGNED = re.compile(
    rf"(?<![\w./\-])(?:({_KEY})\s*=\s*|({_KEY}(?:[ \t]{_KEY})?)\s*:\s*)({_NUM})", re.IGNORECASE
)
# key value, at the start of a segment ("train loss 11.0093", "loss     nan (+nanz)")
_SPACED = re.compile(rf"[\s\-]*({_KEY}(?:\s+{_KEY})?)\s+({_NUM})", re.IGNORECASE)
# (a tab: PyTorch's ImageNet example prints "Time  0.512 ( 0.601)\tLoss 6.9e+00 (6.9e+00)\t...")
_SEGMENTS = re.compile(r"[|;\t]|,(?!\d{3}(?!\d))")
# a quoted value is a number too: transformers 5 prints {'loss': '319.2', 'epoch': '1'}
DICT_PAIR = re.compile(rf"""['"]([^'"]+)['"]\s*:\s*(['"]?)({_NUM})\2""", re.IGNORECASE)
INT = re.compile(r"[-+]?\d+")
DICT_STEP_KEYS = ("step", "global_step", "iteration", "iter", "epoch")
SPLIT_LINE = re.compile(rf"(\d+)\s+([A-Za-z]\w*)\s+({_NUM})\s*")  # build-nanogpt
SPLIT_LOSSES = {"train": "train_loss", "val": "val_loss"}
SUMMARY_KEY = "train_runtime"
# A dict after a logging prefix ending in "| ": fairseq's --log-format json,
# "2024-05-01 10:00:00 | INFO | train_inner | {"epoch": 1, "loss": "9.71", "num_updates": "100"}".
LOGGED_DICT = re.compile(r"\|\s*$")
# fairseq's simple format prints a validation's metrics under the training's names:
# "epoch 001 | valid on 'valid' subset | loss 9.56 | ... | num_updates 1000".
_SUBSET = re.compile(r"\bvalid on '(\w+)' subset\b")
# Megatron-LM's validation: " validation loss at iteration 1000 on validation set | lm loss value:
# 5.37E+00 | lm loss PPL: 2.15E+02 |", named as its TensorBoard tags name them ("lm loss
# validation": lm_loss_validation), so they do not land in the training loss.
MEGATRON_VALID = re.compile(r"validation loss at iteration\s+(\d+)")
MEGATRON_VALUE = re.compile(rf"({_KEY}(?: {_KEY}){{0,3}}) value:\s*({_NUM})", re.IGNORECASE)
# Keras' progress bar under its "Epoch 3/10" line: "6/6 ━━━━━━ 0s 7ms/step - loss: 0.68 - ..."
# (Keras 3), "6/6 [======] - 0s 7ms/step - loss: 0.68" (tf.keras). Only the finished bar (6/6)
# holds the epoch's metrics; a running one holds the mean of its first batches.
PROGRESS = re.compile(r"(\d+)/(\d+)\s+(?:━|\[[=>.]|-\s)")
# Terminal control in a captured stdout: colours (ESC [ ... m) and the backspaces a progress bar
# redraws itself with.
TERMINAL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x08+")
# A progress bar (tqdm's "45%|####5  |", rich's "━━━") redraws as it advances, its metrics (the
# postfix) still the last batch's until the job sets the new ones: a draw that repeats the last
# draw's metrics at a new count is stale, not a record.
BAR = re.compile(r"\d%\||━")
# A table printed row by row under a header line (fastai's "epoch  train_loss  valid_loss  time"
# then "0  0.523419  0.391521  00:05"): the header names the columns, the first one the step.
HEADER = re.compile(
    r"\s*(?:epoch|step|iter|iteration)(?:\s+[A-Za-z_][\w./\-]*){2,}\s*", re.IGNORECASE
)
CELL = re.compile(rf"{_NUM}|#na#|\d+:\d\d(?::\d\d)?", re.IGNORECASE)


def update_counter(values: dict[str, float]) -> int | None:
    """The step a line's own update counter gives (fairseq's ``num_updates``, ``global_step``),
    taken out of its metrics: a count of updates is finer than an epoch and exact."""
    for key in list(values):
        if key == "global_step" or key.endswith("num_updates"):
            value = values.pop(key)
            if value.is_integer() and value >= 0:
                return int(value)
    return None


def same_draw(values: dict[str, float], drawn: dict[str, float] | None) -> bool:
    """Whether a bar's metrics are the last draw's (NaN the same as NaN)."""
    return (
        drawn is not None
        and values.keys() == drawn.keys()
        and all(v == drawn[k] or (v != v and drawn[k] != drawn[k]) for k, v in values.items())
    )


def to_float(text: str) -> float:
    return float(text.replace(",", ""))


def metric_name(key: str) -> str:
    words = key.split()
    return key if len(words) == 1 else "_".join(words).lower()


def read_pairs(text: str, *, spaced: bool = True) -> dict[str, float]:
    """The metrics in what follows a step marker (see the module docstring)."""
    found: dict[str, float] = {}
    prefix, subset = "", _SUBSET.search(text)
    if subset is not None:  # fairseq's validation: named as its JSON format names them
        prefix, text = f"{subset[1]}_", text[subset.end() :]
    for segment in _SEGMENTS.split(text):
        assigned = False
        for match in _ASSIGNED.finditer(segment):
            assigned = True
            found[prefix + metric_name(match.group(1) or match.group(2))] = to_float(match[3])
        if not assigned and spaced:
            spaced_pair = _SPACED.match(segment)
            if spaced_pair is not None:
                found[prefix + metric_name(spaced_pair[1])] = to_float(spaced_pair[2])
    return found
