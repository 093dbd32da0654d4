"""Which metric plays which role (training loss, validation loss, gradient norm, LR): the names
frameworks write natively, and what a name alone says (``infer_role``, ``marks_rl``). The
``roles:`` section of the config file (config.py).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from lrwatch.protocol.types import Role


class RolesConfig(BaseModel):
    """Which metric names play which role. The first name present in a run wins.

    The defaults are the names the common frameworks write natively: Hugging Face (``loss``,
    ``eval_loss``, ``train/loss``, ``eval/loss``, ``learning_rate``, ``grad_norm``), Lightning
    (``train_loss_step``, ``lr-AdamW``), Keras (``epoch_loss``, ``train/epoch_loss``,
    ``validation/epoch_loss``, ``epoch_learning_rate``), detectron2 (``total_loss``), llm.c
    (``trl``, ``tel``, ``norm``), nanoGPT and text logs (``train_loss``, ``val_loss``), OLMo
    (``train/CrossEntropyLoss``, ``optim/total_grad_norm``), DeiT (``train_lr``), YOLO
    (``lr/pg0``, ``x/lr0``), Stable-Baselines3 (``train/loss``, ``train/learning_rate``),
    Megatron-LM (``lm loss``, ``learning-rate``, ``grad-norm``, ``lm loss validation``; printed:
    ``lm_loss``, ``lm_loss_validation``), GPT-NeoX (``train/lm_loss``), NeMo
    (``reduced_train_loss``), fairseq (``gnorm``), Ignite's and PyTorch's examples and timm
    (``Loss``, ``LR``), OpenNMT-py (``xent``), LitGPT (``loss train``: ``loss_train``), Sacred's
    docs (``training.loss``, ``validation.loss``).

    ``infer``: when a run logs none of the ``loss`` (or ``val_loss``) names, the first metric
    whose name contains "loss" takes the role (see ``infer_role`` and
    ``RunMonitor.inferred_roles``).

    ``rl_markers``: a run that logs a metric with one of these words in its name (an episode
    reward or return) is a reinforcement-learning run, whose losses are reported but not acted
    on (see ``marks_rl``); ``[]`` lets lrwatch act on them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    loss: tuple[str, ...] = (
        "loss",
        "train/loss",
        "train_loss",
        "Loss/train",
        "loss/train",
        "train_loss_step",
        "training_loss",
        "total_loss",
        "trl",
        "train/epoch_loss",
        "epoch_loss",
        "train/CrossEntropyLoss",
        "Loss",
        "lm loss",
        "lm_loss",
        "train/lm_loss",
        "reduced_train_loss",
        "xent",
        "loss_train",
        "training.loss",
    )
    val_loss: tuple[str, ...] = (
        "val/loss",
        "val_loss",
        "Loss/val",
        "loss/val",
        "eval_loss",
        "eval/loss",
        "validation/epoch_loss",
        "val_loss_epoch",
        "valid_loss",
        "validation_loss",
        "tel",
        "eval/CrossEntropyLoss",
        "lm loss validation",
        "lm_loss_validation",
        "validation/lm_loss",
        "validation.loss",
    )
    grad_norm: tuple[str, ...] = (
        "grad_norm",
        "train/grad_norm",
        "gradient_norm",
        "grad/norm",
        "norm",
        "optim/total_grad_norm",
        "total_grad_norm",
        "grad-norm",
        "gnorm",
    )
    lr: tuple[str, ...] = (
        "lr",
        "train/lr",
        "learning_rate",
        "train/learning_rate",
        "lr-SGD",
        "lr-Adam",
        "lr-AdamW",
        "lr-RMSprop",
        "lr-Adagrad",
        "lr-Adamax",
        "lr-NAdam",
        "lr-RAdam",
        "train/epoch_learning_rate",
        "epoch_learning_rate",
        "train_lr",
        "optim/learning_rate_group0",
        "lr/pg0",
        "x/lr0",
        "learning-rate",
        "LR",
    )
    infer: bool = True
    rl_markers: tuple[str, ...] = ("reward", "rew", "return")

    def role_of(self, metric: str) -> Role | None:
        for role in Role:
            if metric in getattr(self, role.value):
                return role
        return None

    def infer_role(self, metric: str) -> Role | None:
        """The role a metric named nowhere above would take by its name alone: a name that
        says it is a loss (contains "loss", or is an error to minimise: ``rmse``, ``mse``,
        ``mae``, ``nll``, ``logloss``, ``perplexity``, as CatBoost's ``learn/RMSE`` and
        XGBoost's ``validation_0-logloss``) is a validation loss when it also names a held-out
        split (``val``, ``valid``, ``validation``, ``eval``, ``test``), else the training loss.
        Only the last ``/`` part counts: StyleGAN's ``Loss/G/loss`` is one, its
        ``Loss/scores/fake`` (a logit) is not."""
        if not self.infer or loss_word(metric) is None:
            return None
        words = set(_WORDS.split(metric.lower()))
        return Role.VAL_LOSS if words & _HELD_OUT else Role.LOSS

    def marks_rl(self, metric: str) -> bool:
        """Whether ``metric`` is an episode reward or return (SB3's ``rollout/ep_rew_mean``,
        CleanRL's ``charts/episodic_return``, ``episode_reward``): the mark of an RL run. There a
        loss is no objective to minimise: a value loss grows as the returns do, a policy loss
        has no floor, and a cut LR would not help."""
        return bool(self.rl_markers) and not set(_WORDS.split(metric.lower())).isdisjoint(
            self.rl_markers
        )


_WORDS = re.compile(r"[^a-z]+")
_HELD_OUT = frozenset({"val", "valid", "validation", "eval", "test", "dev"})
# Words that name an error to minimise, as gradient-boosting and regression logs write them.
_ERRORS = ("rmse", "mse", "mae", "nll", "logloss", "mlogloss", "perplexity", "ppl")


def loss_word(metric: str) -> str | None:
    """What in the last ``/`` part of ``metric`` says it is a loss: "loss" anywhere in it, or
    one of its words an error to minimise; None when nothing does."""
    last = metric.lower().rpartition("/")[2]
    if "loss" in last:
        return "loss"
    words = set(_WORDS.split(last))
    return next((w for w in _ERRORS if w in words), None)
