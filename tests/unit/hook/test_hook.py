"""The training-side hook: the LR it makes the optimizer use, its acks, and its refusals.

The LR "used" at a step is read by an optimizer pre-hook registered after ``attach``, i.e. what
``optimizer.step()`` itself reads; one test also checks it through the SGD update ``-lr * grad``.
Commands are real files written with ``channel.write_command``, as the daemon writes them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrwatch
from lrwatch.hook import metrics_log
from lrwatch.hook.cadence import MAX_CHECK_EVERY, next_check_every
from lrwatch.hook.scaling import Bounds, bounded_lr, judge_scale
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, AckStatus, Action, ActionType, Command

LRS = (0.1, 0.02)
STEPS = 30
K = 9  # the command arrives just before hook.step(K): used from optimizer step K + 1 on
F = 0.3

Sched = torch.optim.lr_scheduler.LRScheduler


class TickClock:
    """A monotonic clock that moves ``tick`` seconds per reading.

    With a tick above ``check_interval`` every ``hook.step()`` checks the channel, which makes
    the step a command takes effect at exact, as the tests need; the real cadence is tested apart.
    """

    def __init__(self, tick: float = 1.0) -> None:
        self.now = 0.0
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def attach(optimizer: torch.optim.Optimizer, run_dir: Path, **kwargs: Any) -> lrwatch.Hook:
    kwargs.setdefault("clock", TickClock())
    return lrwatch.attach(optimizer, run_dir, **kwargs)


def send(
    run_dir: Path,
    seq: int,
    factor: float | None = None,
    kind: ActionType = ActionType.SCALE_LR,
    *,
    key: bytes | None = None,
    channel_id: str | None = None,
) -> Path:
    cid = channel_id or channel.channel_id(run_dir)
    assert cid is not None
    command = Command("exp", seq, Action(kind, factor), "test", 1.0)
    return channel.write_command(run_dir, command, channel=cid, key=key)


def ack(run_dir: Path, seq: int) -> Ack:
    found = channel.read_ack(run_dir, seq)
    assert found is not None, f"no ack for command {seq}"
    return found


def make_model(lrs: tuple[Any, ...] = LRS, **sgd: Any) -> tuple[torch.nn.Module, torch.optim.SGD]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    params = [model.weight, model.bias]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)]
    return model, torch.optim.SGD(groups, lr=0.1, **sgd)


def record_used(optimizer: torch.optim.Optimizer) -> list[tuple[float, ...]]:
    """The LRs each optimizer step runs with (registered after attach, so after its scaling)."""
    used: list[tuple[float, ...]] = []

    def grab(opt: torch.optim.Optimizer, *_: Any) -> None:
        used.append(tuple(float(group["lr"]) for group in opt.param_groups))

    optimizer.register_step_pre_hook(grab)
    return used


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.linspace(-1, 1, 12).reshape(4, 3)).pow(2).mean().backward()
    optimizer.step()


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


# --- composition with the job's own schedule ----------------------------------------------------


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


# --- acks, exactly once, checkpoints ------------------------------------------------------------


def test_ack_reports_the_applied_state(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, F)
    hook.step(17)
    got = ack(tmp_path, 1)
    assert (got.seq, got.status, got.step, got.lr_scale) == (1, AckStatus.APPLIED, 17, F)
    assert got.lrs == pytest.approx((F * 0.1, F * 0.02))
    assert hook.lr_scale == F
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and (beat.last_seq, beat.lr_scale, beat.step) == (1, F, 17)


def test_attach_announces_itself(tmp_path: Path) -> None:
    _, opt = make_model()
    attach(opt, tmp_path / "new" / "run")
    beat = channel.read_heartbeat(tmp_path / "new" / "run")
    assert beat is not None and beat.pid == os.getpid() and beat.lrs == LRS
    assert channel.channel_id(tmp_path / "new" / "run") is not None


def test_several_pending_commands_are_drained_in_order(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    for seq, factor in enumerate((0.5, 0.5, 2.0), start=1):
        send(tmp_path, seq, factor)
    hook.step(0)
    assert hook.lr_scale == 0.5
    assert [ack(tmp_path, s).lr_scale for s in (1, 2, 3)] == [0.5, 0.25, 0.5]


def test_a_command_file_seen_twice_is_applied_once(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, 0.5)
    hook.step(0)
    first = ack(tmp_path, 1)
    send(tmp_path, 1, 0.5)  # the daemon rewrites it, e.g. after a crash
    for step in range(1, 5):
        hook.step(step)
    assert hook.lr_scale == 0.5 and ack(tmp_path, 1) == first
    # A new incarnation of the job on the same run directory finds the ack and skips it.
    _, opt2 = make_model()
    fresh = attach(opt2, tmp_path)
    fresh.step(0)
    assert fresh.lr_scale == 1.0 and ack(tmp_path, 1) == first
    assert fresh.state_dict() == {"lr_scale": 1.0, "last_seq": 1}


def test_restored_checkpoint_skips_commands_handled_since(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, 0.5)
    hook.step(10)
    checkpoint = hook.state_dict()
    send(tmp_path, 2, 0.5)
    hook.step(20)
    assert hook.lr_scale == 0.25
    hook.close()

    _, opt2 = make_model()
    restored = attach(opt2, tmp_path)
    restored.load_state_dict(checkpoint)
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and (beat.lr_scale, beat.last_seq) == (0.5, 1)
    ack2 = ack(tmp_path, 2)
    send(tmp_path, 3, 4.0)
    restored.step(11)
    assert ack(tmp_path, 2) == ack2  # skipped, not re-applied nor re-acked
    assert restored.lr_scale == 2.0 and ack(tmp_path, 3).lr_scale == 2.0


def test_state_dict_round_trip_and_validation(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    hook.load_state_dict({"lr_scale": 0.125, "last_seq": 7})
    assert hook.state_dict() == {"lr_scale": 0.125, "last_seq": 7}
    assert hook.lrs == (0.0125, 0.0025)
    with pytest.raises(ValueError, match="lr_scale"):
        hook.load_state_dict({"lr_scale": math.nan, "last_seq": 1})
    with pytest.raises(ValueError, match="last_seq"):
        hook.load_state_dict({"lr_scale": 1.0, "last_seq": -1})


# --- safety -------------------------------------------------------------------------------------

KEY = b"s3cret"


def rejected(run_dir: Path, seq: int, hook: lrwatch.Hook, match: str) -> None:
    before = hook.lr_scale
    hook.step(seq)
    got = ack(run_dir, seq)
    assert got.status is AckStatus.REJECTED
    assert match in got.reason
    assert hook.lr_scale == before


def test_with_a_secret_only_authentic_commands_apply(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path, secret=KEY)
    send(tmp_path, 1, 0.5)
    rejected(tmp_path, 1, hook, "unsigned")
    send(tmp_path, 2, 0.5, key=b"wrong")
    rejected(tmp_path, 2, hook, "bad signature")
    send(tmp_path, 3, 0.5, key=KEY, channel_id="another-run")
    rejected(tmp_path, 3, hook, "another channel")
    good = send(tmp_path, 4, 0.5, key=KEY)
    hook.step(4)
    assert ack(tmp_path, 4).status is AckStatus.APPLIED and hook.lr_scale == 0.5
    shutil.copy(good, channel.command_path(tmp_path, 5))  # replay under the next number
    rejected(tmp_path, 5, hook, "does not match file number")


def test_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(channel.SECRET_ENV, "from-env")
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, 0.5)
    rejected(tmp_path, 1, hook, "unsigned")
    send(tmp_path, 2, 0.5, key=b"from-env")
    hook.step(2)
    assert hook.lr_scale == 0.5


def test_hostile_files_are_rejected_and_do_not_wedge(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    outside = send(tmp_path / "elsewhere", 1, 0.5, channel_id=channel.channel_id(tmp_path))
    channel.command_path(tmp_path, 1).parent.mkdir(parents=True, exist_ok=True)
    channel.command_path(tmp_path, 1).symlink_to(outside)
    rejected(tmp_path, 1, hook, "cannot open")
    channel.command_path(tmp_path, 2).write_bytes(b" " * (channel.MAX_COMMAND_BYTES + 1))
    rejected(tmp_path, 2, hook, "limit")
    os.mkfifo(channel.command_path(tmp_path, 3))
    rejected(tmp_path, 3, hook, "not a regular file")
    channel.command_path(tmp_path, 4).write_bytes(b"{not json")
    rejected(tmp_path, 4, hook, "not JSON")
    send(tmp_path, 5, 0.5)
    hook.step(5)
    assert ack(tmp_path, 5).status is AckStatus.APPLIED


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


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_lr": -1.0}, "min_lr"),
        ({"max_lr": math.inf}, "max_lr"),
        ({"min_lr": 0.5, "max_lr": 0.1}, "above max_lr"),
        ({"max_change": 1.0}, "max_change"),
        ({"check_interval": 0.0}, "check_interval"),
        ({"heartbeat_interval": math.nan}, "heartbeat_interval"),
        ({"secret": ""}, "secret"),
    ],
)
def test_attach_fails_fast_naming_the_bad_value(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    _, opt = make_model()
    with pytest.raises(ValueError, match=match):
        lrwatch.attach(opt, tmp_path, **kwargs)


def test_attach_refuses_a_planted_channel_id(tmp_path: Path) -> None:
    (tmp_path / "theirs").write_text("attacker-chosen-id")
    channel.channel_dir(tmp_path).mkdir()
    (channel.channel_dir(tmp_path) / "id").symlink_to(tmp_path / "theirs")
    _, opt = make_model()
    with pytest.raises(ValueError, match="not a regular file holding a channel id"):
        lrwatch.attach(opt, tmp_path)


def test_attach_wants_an_optimizer(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        lrwatch.attach(object(), tmp_path)  # type: ignore[arg-type]


# --- random junk --------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
NUMBER = st.floats() | st.integers(min_value=-(10**400), max_value=10**400) | st.booleans()
COMMANDISH = st.fixed_dictionaries(
    {
        "channel": st.sampled_from(["<cid>", "other"]),
        "seq": st.sampled_from([1, 2, 0, True, "1"]),
        "action": st.fixed_dictionaries(
            {
                "type": st.sampled_from([*ActionType, "explode"]) | JSON,
                "factor": st.floats(0.05, 20) | NUMBER | JSON,
            }
        ),
    },
    optional={"reason": JSON, "issued_at": NUMBER, "run": JSON, "signature": JSON},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.binary(max_size=300) | JSON.map(json.dumps) | COMMANDISH.map(json.dumps))
def test_junk_never_raises_escapes_bounds_or_wedges(junk: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        model, opt = make_model((0.1, 0.4))
        hook = attach(opt, run_dir, min_lr=0.05, max_lr=0.5)
        calls: list[int] = []
        hook.on("checkpoint", lambda step, command: calls.append(step))
        used = record_used(opt)
        data = junk.encode() if isinstance(junk, str) else junk
        cid = channel.channel_id(run_dir)
        assert cid is not None
        data = data.replace(b"<cid>", cid.encode())
        channel.atomic_write(channel.command_path(run_dir, 1), data)
        for step in range(3):
            hook.step(step)
            train_step(model, opt)
        assert channel.read_ack(run_dir, 1) is not None
        assert all(0.05 <= lr <= 0.5 for row in used for lr in row)
        send(run_dir, 2, kind=ActionType.CHECKPOINT)
        hook.step(3)
        assert ack(run_dir, 2).status is AckStatus.APPLIED and calls[-1] == 3


def test_distributed_group_it_cannot_coordinate_refuses_commands_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 4)
    _, opt = make_model()
    with pytest.warns(RuntimeWarning, match="world size 4"):
        attach(opt, tmp_path)
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and beat.world_size == 4


# --- handlers -----------------------------------------------------------------------------------


def test_handlers_run_and_unregistered_events_are_unsupported(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    seen: list[tuple[int, Command]] = []
    hook.on("checkpoint", lambda step, command: seen.append((step, command)))
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and beat.handlers == ("checkpoint",)
    send(tmp_path, 1, kind=ActionType.CHECKPOINT)
    send(tmp_path, 2, kind=ActionType.ROLLBACK)
    hook.step(42)
    assert [(s, c.seq, c.action.type) for s, c in seen] == [(42, 1, ActionType.CHECKPOINT)]
    assert ack(tmp_path, 1).status is AckStatus.APPLIED
    assert ack(tmp_path, 2).status is AckStatus.UNSUPPORTED
    assert "rollback" in ack(tmp_path, 2).reason


def test_a_failing_handler_is_acked_rejected(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)

    def broken(step: int, command: Command) -> None:
        raise OSError("disk full")

    hook.on("rollback", broken)
    send(tmp_path, 1, kind=ActionType.ROLLBACK)
    rejected(tmp_path, 1, hook, "disk full")


def test_a_stop_handler_may_exit_the_job(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    hook.on("stop", lambda step, command: sys.exit(3))
    send(tmp_path, 1, kind=ActionType.STOP)
    with pytest.raises(SystemExit):
        hook.step(5)
    assert ack(tmp_path, 1).status is AckStatus.APPLIED


def test_on_validates_the_event(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    with pytest.raises(ValueError, match="'rollback', 'checkpoint', 'stop'"):
        hook.on("scale_lr", lambda step, command: None)
    with pytest.raises(TypeError):
        hook.on("stop", "not callable")  # type: ignore[arg-type]


# --- cadence ------------------------------------------------------------------------------------


def test_next_check_every_grows_slowly_shrinks_at_once_and_is_capped() -> None:
    assert next_check_every(1, calls=1, elapsed=1e-6, interval=0.1) == 2
    assert next_check_every(8, calls=8, elapsed=0.08, interval=0.1) == 10
    assert next_check_every(100, calls=100, elapsed=10.0, interval=0.1) == 1
    assert next_check_every(MAX_CHECK_EVERY, 1000, 1e-4, 0.1) == MAX_CHECK_EVERY
    assert next_check_every(4, calls=4, elapsed=0.0, interval=0.1) == 8


def test_checks_settle_at_check_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = TickClock(tick=0.0)
    _, opt = make_model()
    hook = attach(opt, tmp_path, clock=clock, check_interval=0.1)
    reads: list[int] = []
    real_read = channel.read_regular_file

    def counting_read(path: Path, max_bytes: int) -> bytes:
        reads.append(1)
        return real_read(path, max_bytes)

    monkeypatch.setattr(channel, "read_regular_file", counting_read)
    for step in range(2000):
        clock.now += 0.01  # 10 ms per training step: a check every 10 steps
        hook.step(step)
    reads.clear()
    for step in range(2000, 3000):
        clock.now += 0.01
        hook.step(step)
    assert 95 <= len(reads) <= 105
    send(tmp_path, 1, 0.5)
    for step in range(3000, 3010):
        clock.now += 0.01
        hook.step(step)
    assert hook.lr_scale == 0.5  # picked up within check_interval


# --- log() --------------------------------------------------------------------------------------


def test_log_writes_one_flushed_jsonl_line_per_call(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    path = tmp_path / "metrics.jsonl"
    hook.log(1, loss=0.5, grad_norm=torch.tensor(2.0))
    assert path.read_text().count("\n") == 1  # visible at once, no close needed
    hook.log(2, loss=math.nan, lr=math.inf, neg=-math.inf)
    text = path.read_text()
    assert "NaN" in text and "Infinity" in text and "-Infinity" in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows[0]["step"] == 1 and rows[0]["loss"] == 0.5 and rows[0]["grad_norm"] == 2.0
    assert math.isnan(rows[1]["loss"]) and rows[1]["lr"] == math.inf
    assert all(isinstance(r["time"], float) for r in rows)


def test_log_skips_values_that_are_not_numbers(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    with pytest.warns(RuntimeWarning, match="'phase'"):
        hook.log(3, loss=1.0, phase="train")
        hook.log(4, loss=1.0, phase="eval")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in rows] == [["loss", "step", "time"]] * 2


# --- never raises into the loop, keeps working ------------------------------------------------


def test_deleted_run_dir_never_raises(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    model, opt = make_model()
    hook = attach(opt, run_dir, heartbeat_interval=0.5)
    send(run_dir, 1, 0.5)
    hook.step(0)
    shutil.rmtree(run_dir)
    for step in range(1, 10):
        train_step(model, opt)
        hook.step(step)
        hook.log(step, loss=1.0)
    shutil.rmtree(run_dir)
    run_dir.write_text("now a file")  # every path under it now fails with ENOTDIR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(10, 50):
            train_step(model, opt)
            hook.step(step)
            hook.log(step, loss=1.0)
    messages = [str(w.message) for w in caught]
    assert any("checking the channel" in m for m in messages)
    assert len(messages) == len(set(messages)) <= 3  # reported once per kind, not per step
    assert hook.lr_scale == 0.5 and hook.lrs == (0.05, 0.01)
    run_dir.unlink()
    run_dir.mkdir()
    hook.step(50)  # the directory is back: so is the heartbeat
    beat = channel.read_heartbeat(run_dir)
    assert beat is not None and beat.step == 50


class ReadOnlyOs:
    """``os`` for the channel module as seen on a read-only filesystem (EROFS on every write).

    The tests run as root here, where chmod does not stop writes; this is the same failure
    from the point of view of the code under test.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, *args: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(30, "Read-only file system", str(path))
        return os.open(path, flags, *args)


def _read_only_open(*args: Any, **kwargs: Any) -> Any:
    raise OSError(30, "Read-only file system")


def make_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "os", ReadOnlyOs())
    monkeypatch.setattr(metrics_log, "open", _read_only_open, raising=False)


def test_read_only_run_dir_never_raises_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt = make_model()
    hook = attach(opt, tmp_path, heartbeat_interval=0.5)
    send(tmp_path, 1, 0.5)
    make_read_only(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(20):
            train_step(model, opt)
            hook.step(step)
            hook.log(step, loss=1.0)
    messages = [str(w.message) for w in caught]
    assert any("ack" in m for m in messages) and any("heartbeat" in m for m in messages)
    assert any("metrics" in m for m in messages)
    assert len(messages) == len(set(messages)) == 3
    assert hook.lr_scale == 0.5  # applied even though it could not be acked
    monkeypatch.undo()
    send(tmp_path, 2, 0.5)
    hook.step(20)
    hook.log(20, loss=1.0)
    assert ack(tmp_path, 2).lr_scale == 0.25
    # The ack that could not be written is written once the disk takes writes again; the
    # command itself was applied once (the factor is 0.5 x 0.5, not 0.5 x 0.5 x 0.5).
    assert ack(tmp_path, 1).lr_scale == 0.5
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def chmod_protects() -> bool:
    """False for root (or CAP_DAC_OVERRIDE), who writes into a mode-0555 directory anyway."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o555)
        try:
            Path(tmp, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(tmp, 0o755)
        return False


@pytest.mark.skipif(not chmod_protects(), reason="this user writes through chmod 0555")
def test_chmod_read_only_run_dir_never_raises(tmp_path: Path) -> None:
    model, opt = make_model()
    hook = attach(opt, tmp_path, heartbeat_interval=0.5)
    send(tmp_path, 1, 0.5)
    dirs = [tmp_path, channel.channel_dir(tmp_path), channel.channel_dir(tmp_path) / "commands"]
    for path in dirs:
        path.chmod(0o555)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(20):
                train_step(model, opt)
                hook.step(step)
                hook.log(step, loss=1.0)
    finally:
        for path in dirs:
            path.chmod(0o755)
    messages = [str(w.message) for w in caught]
    assert any("ack" in m for m in messages) and any("metrics" in m for m in messages)
    assert len(messages) == len(set(messages))
    assert hook.lr_scale == 0.5


def test_warnings_as_errors_do_not_reach_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    model, opt = make_model()
    hook = attach(opt, run_dir)
    shutil.rmtree(run_dir)
    run_dir.write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # python -W error
        for step in range(5):
            train_step(model, opt)
            hook.step(step)
            hook.log(step, loss=1.0)
    assert "checking the channel failed" in caplog.text  # said through logging instead


# --- close --------------------------------------------------------------------------------------


def test_close_removes_the_optimizer_hooks_and_says_goodbye(tmp_path: Path) -> None:
    model, opt = make_model()
    hook = attach(opt, tmp_path)
    used = record_used(opt)
    send(tmp_path, 1, 0.5)
    hook.step(7)
    hook.close()
    train_step(model, opt)
    assert used[-1] == LRS
    send(tmp_path, 2, 0.5)
    hook.step(8)
    hook.close()
    assert channel.read_ack(tmp_path, 2) is None
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and beat.step == 7 and beat.last_seq == 1


# --- import isolation ---------------------------------------------------------------------------


def test_import_lrwatch_imports_neither_torch_nor_daemon_deps() -> None:
    code = (
        "import sys, lrwatch\n"
        "assert lrwatch.__version__ == '0.1.0'\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "import lrwatch.hook\n"
        "banned = ('pydantic', 'typer', 'prometheus_client', 'watchdog', 'rich', 'yaml')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))\n"
        "print(lrwatch.attach is lrwatch.hook.attach, lrwatch.Hook is lrwatch.hook.Hook)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[:2] == ["[]", "True True"]
