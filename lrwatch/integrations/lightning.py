"""Lightning: ``Trainer(callbacks=[LRWatchCallback()])`` does what ``lrwatch.attach`` does by hand.

Importing this module imports ``lightning`` (the unified package, ``lightning.pytorch``), so
``import lrwatch`` never does; only a job that names this callback pays for it.

Where each piece goes, and why:

- ``on_fit_start``: attach. Lightning has set up the optimizers (and, under DDP, the process
  group) by then, so every rank attaches to a real optimizer and the ranks can coordinate.
- ``on_train_batch_end``: ``hook.step``. Lightning 2.x steps ``interval: "step"`` schedulers
  before this hook, so a command found here takes effect from the next optimizer step on and
  composes with the schedule exactly as in a plain loop. The step passed is the index of the
  optimizer step just taken (``global_step - 1``), the number Lightning's loggers give the
  metrics of that batch, so an ack's step lines up with the log the daemon reads.
- Lightning's callback ``state_dict``/``load_state_dict``: the hook's factor and last command
  travel inside every Lightning checkpoint. A resumed fit restores them before the optimizers
  exist, so the state waits until the hook is attached.
- ``teardown`` and ``on_exception``: close, so the optimizer is left as the job made it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities.types import STEP_OUTPUT
except ImportError as exc:  # say which package, not only which module
    raise ImportError(
        f"lrwatch.integrations.lightning needs `pip install lightning`: {exc}"
    ) from exc

import lrwatch
from lrwatch.hook import Hook


class LRWatchCallback(Callback):
    """Attach lrwatch to the trainer's optimizer for the duration of each ``fit``.

    ``run_dir`` defaults to ``trainer.log_dir`` (the CSV or TensorBoard logger's version
    directory, where the metrics the daemon reads are written; ``default_root_dir`` without a
    logger). ``attach_kwargs`` go to ``lrwatch.attach`` (``secret``, ``min_lr``, ...). With
    several optimizers (manual optimization), only the first is adjusted, and a warning says so:
    one hook per run directory, since two would race for the same commands.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, **attach_kwargs: Any) -> None:
        self.run_dir = run_dir
        self.attach_kwargs = attach_kwargs
        self.hook: Hook | None = None
        self._pending: dict[str, Any] | None = None  # restored before the hook existed
        self._last: dict[str, Any] = {}  # the closed hook's, for a checkpoint saved after fit

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()
        optimizers = trainer.optimizers
        # trainer.log_dir is a collective under DDP: every rank evaluates it, here, together.
        run_dir = self.run_dir if self.run_dir is not None else trainer.log_dir
        if not optimizers:
            warnings.warn("lrwatch: the trainer has no optimizer; not attached", stacklevel=2)
            return
        if len(optimizers) > 1:
            warnings.warn(
                f"lrwatch: {len(optimizers)} optimizers; only the first one's LR is adjusted",
                stacklevel=2,
            )
        self.hook = lrwatch.attach(
            optimizers[0], run_dir or trainer.default_root_dir, **self.attach_kwargs
        )
        if self._pending is not None:
            self.hook.load_state_dict(self._pending)
            self._pending = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: STEP_OUTPUT,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.hook is not None:
            self.hook.step(max(trainer.global_step - 1, 0))

    def state_dict(self) -> dict[str, Any]:
        if self.hook is not None:
            return self.hook.state_dict()
        return dict(self._pending if self._pending is not None else self._last)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return  # a checkpoint saved while the hook was not attached
        if self.hook is not None:  # strategies that restore after setup
            self.hook.load_state_dict(state_dict)
        else:
            self._pending = dict(state_dict)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()

    def _close(self) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            self._last = hook.state_dict()
            hook.close()
