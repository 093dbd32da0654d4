"""Hugging Face: ``Trainer(..., callbacks=[LRWatchCallback()])`` does what ``attach`` does by hand.

Importing this module imports ``transformers``, so ``import lrwatch`` never does; only a job
that names this callback pays for it.

Each Trainer event's method says why that piece goes there.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:  # say which package, not only which module
    raise ImportError(
        f"lrwatch.integrations.transformers needs `pip install transformers`: {exc}"
    ) from exc

import lrwatch
from lrwatch.hook import Hook
from lrwatch.protocol import channel

STATE_FILENAME = "lrwatch_hook.json"
_CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR


class LRWatchCallback(TrainerCallback):
    """Attach lrwatch to the Trainer's optimizer for the duration of each ``train()``.

    ``run_dir`` defaults to ``args.logging_dir`` where the installed transformers has one (4.x,
    where TensorBoard logs go), else ``args.output_dir``. ``attach_kwargs`` go to
    ``lrwatch.attach`` (``secret``, ``min_lr``, ...).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        log_metrics: bool = True,
        **attach_kwargs: Any,
    ) -> None:
        self.run_dir = run_dir
        self.log_metrics = log_metrics
        self.attach_kwargs = attach_kwargs
        self.hook: Hook | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Attach, to the torch optimizer inside Accelerate's wrapper (the wrapper never runs
        optimizer step hooks of its own). The Trainer has created the optimizer and the scheduler
        by then, and under DDP the process group exists. A resumed ``train()`` (global step > 0)
        restores the hook's state from the checkpoint (see ``_restore``)."""
        self._close()
        optimizer = _unwrap(kwargs.get("optimizer"))
        if optimizer is None:
            warnings.warn(
                "lrwatch: the Trainer passed no torch optimizer; not attached", stacklevel=2
            )
            return
        run_dir = self.run_dir or getattr(args, "logging_dir", None) or args.output_dir or "."
        self.hook = lrwatch.attach(optimizer, run_dir, **self.attach_kwargs)
        if state.global_step > 0:
            self._restore(args, state.global_step)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """The Trainer runs ``optimizer.step()`` -> ``lr_scheduler.step()`` -> ``on_step_end``, so a
        command found here takes effect from the next optimizer step on and composes with the
        schedule (the default linear warm-up is a LambdaLR, whose closed form would overwrite an
        LR changed in place). ``global_step`` is already incremented: the step the Trainer logs
        that step's loss under."""
        if self.hook is not None:
            self.hook.step(state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """The Trainer's numeric logs go to ``<run_dir>/metrics.jsonl`` through ``hook.log``:
        with ``report_to="none"`` (the default in transformers 5) the Trainer writes no log the
        daemon could read. ``log_metrics=False`` turns this off."""
        if self.hook is not None and self.log_metrics and logs:
            numbers = {k: v for k, v in logs.items() if _is_number(v)}
            if numbers:
                self.hook.log(state.global_step, **numbers)

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """``TrainerCallback`` has no hook into the checkpoint's contents, so the hook's state is
        written as ``lrwatch_hook.json`` into the checkpoint directory just saved
        (``<output_dir>/checkpoint-<global_step>``)."""
        if self.hook is None or not args.should_save:
            return
        folder = _checkpoint_dir(args.output_dir, state.global_step)
        if not folder.is_dir():  # saved elsewhere (hyperparameter search): do not litter
            warnings.warn(
                f"lrwatch: no checkpoint directory {folder}; state not saved", stacklevel=2
            )
            return
        try:
            data = json.dumps(self.hook.state_dict()).encode()
            channel.atomic_write(folder / STATE_FILENAME, data, durable=True)
        except OSError as exc:
            # A checkpoint without our file still resumes; only the factor would restart at 1.
            warnings.warn(
                f"lrwatch: could not save the hook's state in {folder}: {exc!r}", stacklevel=2
            )

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._close()

    def _restore(self, args: TrainingArguments, step: int) -> None:
        """From ``args.resume_from_checkpoint`` if that names a directory, else from
        ``<output_dir>/checkpoint-<global_step>``, where ``train(resume_from_checkpoint=True)``
        resumes from. Not found: a warning, and the factor restarts at 1 (commands already acked
        are still skipped, not applied twice)."""
        assert self.hook is not None
        candidates = [_checkpoint_dir(args.output_dir, step)]
        resume = getattr(args, "resume_from_checkpoint", None)
        if isinstance(resume, str | os.PathLike):
            candidates.insert(0, Path(resume))
        for folder in candidates:
            path = folder / STATE_FILENAME
            if path.is_file():
                self.hook.load_state_dict(json.loads(path.read_text()))
                return
        warnings.warn(
            f"lrwatch: resumed at step {step} but found no {STATE_FILENAME} in "
            f"{', '.join(map(str, candidates))}; the LR factor restarts at 1",
            stacklevel=3,
        )

    def _close(self) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook.close()


def _unwrap(optimizer: object) -> torch.optim.Optimizer | None:
    """The torch optimizer inside Accelerate's ``AcceleratedOptimizer`` (its ``.optimizer``)."""
    for _ in range(4):  # wrappers of wrappers, but not forever
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer = inner
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _checkpoint_dir(output_dir: str | None, step: int) -> Path:
    return Path(output_dir or ".") / f"{_CHECKPOINT_PREFIX}-{step}"


def _is_number(value: object) -> bool:
    # NaN and infinities are kept: a non-finite loss is the clearest divergence signal there is.
    return isinstance(value, int | float) and not isinstance(value, bool)
