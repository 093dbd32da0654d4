"""How a factor reaches the optimizer (scaling.py): on top of every kind of LR schedule,
never seen by the scheduler, never compounded; one test also checks it through the SGD update
``-lr * grad``. And the one place that enforces the per-command limit and the LR bounds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import lrwatch
from lrwatch.hook.scaling import Bounds, bounded_lr, judge_scale
from lrwatch.protocol import channel
from lrwatch.protocol.types import AckStatus
from tests.unit.hook.job import (
    LRS,
    F,
    ack,
    attach,
    make_model,
    record_used,
    rejected,
    send,
    train_step,
)

STEPS = 30
K = 9  # the command arrives just before hook.step(K): used from optimizer step K + 1 on

Sched = torch.optim.lr_scheduler.LRScheduler


SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Sched | None]] = {
    "none": lambda opt: None,
    "StepLR": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5),
    "CosineAnnealingLR": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20),
    "LambdaLR-warmup": lambda opt: torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 15)
    ),
    "OneCycleLR": lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[0.2, 0.05], total_steps=STEPS + 1, cycle_momentum=False
    ),
    "SequentialLR": lambda opt: torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=6),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS),
        ],
        milestones=[6],
    ),
}


def run_job(
    make_sched: Callable[[torch.optim.Optimizer], Sched | None],
    run_dir: Path | None,
    commands: dict[int, float],
) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]], lrwatch.Hook | None]:
    """Train STEPS steps; with a run_dir, with the hook, sending ``commands`` {step: factor}."""
    model, opt = make_model()
    sched = make_sched(opt)
    hook = attach(opt, run_dir) if run_dir is not None else None
    used = record_used(opt)
    scheduled = []
    for step in range(STEPS):
        train_step(model, opt)
        if sched is not None:
            sched.step()
        scheduled.append(tuple(float(g["lr"]) for g in opt.param_groups))
        if hook is not None and run_dir is not None:
            if step in commands:
                send(run_dir, channel.highest_command_seq(run_dir) + 1, commands[step])
            hook.step(step)
    return used, scheduled, hook


def scaled(rows: list[tuple[float, ...]], factor: float) -> list[tuple[float, ...]]:
    return [tuple(lr * factor for lr in row) for row in rows]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_used_lr_is_factor_times_schedule(tmp_path: Path, name: str) -> None:
    twin_used, twin_sched, _ = run_job(SCHEDULERS[name], None, {})
    used, sched, hook = run_job(SCHEDULERS[name], tmp_path, {K: F})
    assert hook is not None and hook.lr_scale == F
    assert sched == twin_sched  # the scheduler never saw the factor
    assert used[: K + 1] == twin_used[: K + 1]
    assert used[K + 1 :] == scaled(twin_used[K + 1 :], F)
    assert len(set(twin_used)) > 1 or name == "none"  # the schedule did move


def test_two_commands_compose_and_undo_to_exactly_the_schedule(tmp_path: Path) -> None:
    twin_used, _, _ = run_job(SCHEDULERS["StepLR"], None, {})
    used, _, hook = run_job(SCHEDULERS["StepLR"], tmp_path, {5: 0.5, 12: 0.25, 20: 8.0})
    assert used[6:13] == scaled(twin_used[6:13], 0.5)
    assert used[13:21] == scaled(twin_used[13:21], 0.125)
    assert hook is not None and hook.lr_scale == 1.0
    assert used[21:] == twin_used[21:]


def test_sgd_update_uses_the_scaled_lr(tmp_path: Path) -> None:
    model, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, F)
    hook.step(0)
    before = [p.detach().clone() for p in model.parameters()]
    train_step(model, opt)
    for p, old, lr in zip(model.parameters(), before, LRS, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(old - p.detach(), F * lr * p.grad)


def test_group_ratios_and_lrs_property(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, 4.0)
    hook.step(3)
    assert hook.lrs == (0.4, 0.08)
    assert [g["lr"] for g in opt.param_groups] == list(LRS)  # between steps: the schedule's


def test_tensor_lr_is_scaled_and_bounded_in_place(tmp_path: Path) -> None:
    lrs = (torch.tensor(0.01), torch.tensor(1.0))
    model, opt = make_model(lrs, foreach=False)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    hook = attach(opt, tmp_path, min_lr=0.004)
    used = record_used(opt)
    ids = [id(g["lr"]) for g in opt.param_groups]
    send(tmp_path, 1, 0.1)
    for step in range(6):
        hook.step(step)
        train_step(model, opt)
        sched.step()
    assert [id(g["lr"]) for g in opt.param_groups] == ids
    assert ack(tmp_path, 1).status is AckStatus.APPLIED
    # min_lr holds group 0 (0.01 * 0.1 would be 0.001); the schedule halves at step 3
    expected = [0.004, 0.1] * 3 + [0.004, 0.05] * 3
    assert [lr for row in used for lr in row] == pytest.approx(expected)
    assert [float(g["lr"]) for g in opt.param_groups] == pytest.approx([0.0025, 0.25])


def test_step_that_raised_does_not_compound_the_factor(tmp_path: Path) -> None:
    model, opt = make_model()
    hook = attach(opt, tmp_path)
    used = record_used(opt)
    send(tmp_path, 1, 0.5)
    hook.step(0)

    def failing_closure() -> float:
        raise RuntimeError("bad batch")

    with pytest.raises(RuntimeError):
        opt.step(failing_closure)  # our pre-hook ran, our post-hook did not
    train_step(model, opt)
    assert used[-1] == scaled([LRS], 0.5)[0]


def test_factor_one_leaves_the_lr_object_untouched(tmp_path: Path) -> None:
    class MarkedLR(float):
        pass

    marker = MarkedLR(0.1)
    model, opt = make_model((marker, 0.02))
    hook = attach(opt, tmp_path)
    seen: list[object] = []
    opt.register_step_pre_hook(lambda o, *_: seen.append(o.param_groups[0]["lr"]))
    train_step(model, opt)
    hook.step(0)
    assert seen == [marker] and seen[0] is marker


def test_per_command_change_limit(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path, max_change=4.0)
    send(tmp_path, 1, 4.5)
    rejected(tmp_path, 1, hook, "per-command limit")
    send(tmp_path, 2, 0.2)
    rejected(tmp_path, 2, hook, "per-command limit")
    send(tmp_path, 3, 0.25)  # exactly at the limit
    hook.step(3)
    assert hook.lr_scale == 0.25


def test_bounds_reject_when_no_group_can_follow(tmp_path: Path) -> None:
    _, opt = make_model((0.1,) * 2)
    hook = attach(opt, tmp_path, min_lr=0.02, max_lr=0.3)
    send(tmp_path, 1, 0.1)
    rejected(tmp_path, 1, hook, "every param group past min_lr=0.02")
    send(tmp_path, 2, 5.0)
    rejected(tmp_path, 2, hook, "every param group past")


def test_bounds_clamp_groups_that_cannot_follow(tmp_path: Path) -> None:
    model, opt = make_model((0.1, 1.0))
    hook = attach(opt, tmp_path, min_lr=0.02, max_lr=3.0)
    used = record_used(opt)
    send(tmp_path, 1, 0.1)
    hook.step(0)
    got = ack(tmp_path, 1)
    assert got.status is AckStatus.APPLIED and "param groups [0] held" in got.reason
    assert got.lrs == pytest.approx((0.02, 0.1)) and hook.lr_scale == 0.1
    send(tmp_path, 2, 10.0)  # inward for group 0, and group 1 goes back to 1.0
    send(tmp_path, 3, 5.0)  # group 1 would reach 5.0: held at max_lr
    hook.step(1)
    train_step(model, opt)
    assert ack(tmp_path, 3).status is AckStatus.APPLIED
    assert used[-1] == pytest.approx((0.5, 3.0))


def test_bounded_lr_never_drags_against_the_schedule() -> None:
    bounds = Bounds(min_lr=0.01, max_lr=1.0)
    assert bounded_lr(0.1, 0.5, bounds) == 0.05
    assert bounded_lr(0.1, 0.05, bounds) == 0.01  # clamped
    assert bounded_lr(0.001, 0.5, bounds) == 0.001  # warmup below min_lr: not pushed lower...
    assert bounded_lr(0.001, 2.0, bounds) == 0.002  # ...nor lifted to min_lr
    assert bounded_lr(2.0, 2.0, bounds) == 2.0  # a schedule above max_lr is not raised more
    assert bounded_lr(2.0, 0.25, bounds) == 0.5
    assert bounded_lr(0.001, 1.0, bounds) == 0.001


def test_judge_scale_snaps_back_to_exactly_one() -> None:
    verdict = judge_scale(1 / 0.3, 0.3, [0.1], Bounds())
    assert verdict.accepted and verdict.factor == 1.0
