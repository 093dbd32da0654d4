"""Hugging Face's ``Trainer.train`` with ``LRWatchCallback``: a command sent mid-training is
applied on top of the default linear warm-up schedule (a LambdaLR), exactly once, and the factor
survives a checkpoint and ``train(resume_from_checkpoint=...)``.

The LRs are read by two optimizer pre-hooks registered by test callbacks around ours: the one
registered before lrwatch's sees the schedule alone, the one after sees what the step ran with.
Nothing is downloaded: the model is a plain ``torch.nn.Module`` defined here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

from lrwatch.integrations.transformers import STATE_FILENAME, LRWatchCallback, _unwrap  # noqa: E402
from lrwatch.protocol import channel  # noqa: E402
from lrwatch.protocol.types import Action, ActionType, Command  # noqa: E402
from tests.integration.trainer_model import Tiny  # noqa: E402

BASE_LR, WARMUP, K, F = 0.05, 5, 12, 0.25


def schedule(step: int, total: int) -> float:
    """transformers' linear schedule with warm-up, as the optimizer sees it at step ``step``."""
    if step < WARMUP:
        return BASE_LR * step / WARMUP
    return BASE_LR * max(0.0, (total - step) / (total - WARMUP))


class Data(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        self.x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.x[i].sum(0, keepdim=True)}


class RecordLR(transformers.TrainerCallback):  # type: ignore[misc]
    """Registers an optimizer pre-hook at train begin: before or after lrwatch's, by list order.

    Two subclasses, since the Trainer warns about two callbacks of one class.
    """

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        opt = _unwrap(kwargs["optimizer"])
        assert opt is not None
        opt.register_step_pre_hook(lambda o, *_: self.lrs.append(float(o.param_groups[0]["lr"])))


class RecordScheduled(RecordLR):
    pass


class RecordUsed(RecordLR):
    pass


class SendAt(transformers.TrainerCallback):  # type: ignore[misc]
    """Writes a command into the channel, as the daemon does, at a chosen global step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            run_dir = Path(args.output_dir)
            cid = channel.channel_id(run_dir)
            assert cid is not None
            command = Command("hf", 1, Action(ActionType.SCALE_LR, F), "test", 0.0)
            channel.write_command(run_dir, command, channel=cid, key=None)


def train(
    out: Path, max_steps: int, send_at: int | None = None, resume: str | None = None, **args: Any
) -> tuple[list[float], list[float]]:
    schedule_alone, used = RecordScheduled(), RecordUsed()
    sender = [] if send_at is None else [SendAt(send_at)]
    training_args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        learning_rate=BASE_LR,
        warmup_steps=WARMUP,
        per_device_train_batch_size=8,
        disable_tqdm=True,
        **{"save_strategy": "no", **args},
    )
    trainer = transformers.Trainer(
        model=Tiny(),
        args=training_args,
        train_dataset=Data(),
        # A tiny check_interval makes every hook.step() a check, so the step an ack names is exact.
        callbacks=[*sender, schedule_alone, LRWatchCallback(check_interval=1e-9), used],
    )
    trainer.train(resume_from_checkpoint=resume)
    return schedule_alone.lrs, used.lrs


def acks(out: Path) -> list[str]:
    return sorted(os.listdir(channel.channel_dir(out) / "acks"))


def test_command_mid_training_scales_the_warmup_schedule_once(tmp_path: Path) -> None:
    scheduled, used = train(tmp_path, max_steps=30, send_at=K)

    assert scheduled == pytest.approx([schedule(s, 30) for s in range(30)], rel=1e-9)
    assert acks(tmp_path) == [channel.ack_path(tmp_path, 1).name]
    ack = channel.load_ack(tmp_path, 1)
    assert ack is not None and ack.step == K and ack.lr_scale == F
    # global_step K ends the K-th step (index K - 1): the factor holds from index K on.
    assert used[:K] == scheduled[:K]
    assert used[K:] == [F * lr for lr in scheduled[K:]]
    assert any(lr > 0 for lr in used[K:])  # the decay is not over before the command

    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "loss" in row] == list(range(1, 31))
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and beat.lr_scale == F and beat.step == 30


def test_checkpoint_carries_the_factor_into_a_resumed_train(tmp_path: Path) -> None:
    _, first = train(tmp_path, max_steps=30, send_at=5, save_strategy="steps", save_steps=10)
    saved = json.loads((tmp_path / "checkpoint-20" / STATE_FILENAME).read_text())
    assert saved == {"lr_scale": F, "last_seq": 1}

    resume = str(tmp_path / "checkpoint-20")  # a job restarted from its second checkpoint
    scheduled, used = train(tmp_path, 30, resume=resume, save_strategy="steps", save_steps=10)
    assert len(used) == 10  # steps 20..29, resumed from checkpoint-20
    assert scheduled == pytest.approx([schedule(s, 30) for s in range(20, 30)], rel=1e-9)
    assert used == [F * lr for lr in scheduled] == first[20:]
    assert acks(tmp_path) == [channel.ack_path(tmp_path, 1).name]  # not applied again
