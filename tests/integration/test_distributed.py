"""Two real ranks (a gloo group on CPU, DistributedDataParallel) apply a command at the same step.

This file is also the ranks' program: the test runs it twice as a script (``__main__``), each
process one rank meeting the other through a ``file://`` store. Rank 0 writes a command into the
channel, as the daemon would, just before ``hook.step(K)``; with a short ``check_interval`` the
hook checks every few steps, so the step it lands at is rank 0's cadence, which rank 1 must
share (a test of private state: the cadence, to show that it was not trivially 1). Each rank
records the LR every optimizer step ran with (an optimizer pre-hook
registered after ``attach``) and its parameters, and the test compares the two ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import lrwatch
from lrwatch.protocol import channel
from lrwatch.protocol.types import Action, ActionType, Command

STEPS, K, F, BASE_LR = 60, 20, 0.25, 0.1
ROOT = Path(__file__).resolve().parents[2]


def schedule(step: int) -> float:
    """The job's own LambdaLR: closed-form, so an LR multiplied in place would be overwritten."""
    return BASE_LR * min(1.0, (step + 1) / 10) * 0.98**step


def send(run_dir: Path, seq: int, factor: float) -> None:
    cid = channel.channel_id(run_dir)
    assert cid is not None
    command = Command("ddp", seq, Action(ActionType.SCALE_LR, factor), "test", 0.0)
    channel.write_command(run_dir, command, channel=cid, key=None)


def rank_main(rank: int, world: int, store: str, run_dir: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    )
    opt = torch.optim.SGD(model.parameters(), lr=BASE_LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s) / BASE_LR)
    hook = lrwatch.attach(opt, run_dir, check_interval=0.01)
    used: list[float] = []
    cadence: list[int] = []  # calls until the next check, as the hook has it after each call
    opt.register_step_pre_hook(lambda o, *_: used.append(float(o.param_groups[0]["lr"])))
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    for step in range(STEPS):
        x = torch.randn(32, 8, generator=data)
        opt.zero_grad()
        (model(x) - x.sum(1, keepdim=True)).pow(2).mean().backward()
        opt.step()
        sched.step()
        if rank == 0 and step == K:
            send(run_dir, 1, F)
        hook.step(step)
        cadence.append(hook._check_every)
    params = [float(p.detach().double().sum()) for p in model.parameters()]
    scale = hook.lr_scale

    # A broken process group must not break the loop: warned about once, nothing applied.
    dist.destroy_process_group()
    if rank == 0:
        send(run_dir, 2, 0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(STEPS, STEPS + 3000):
            hook.step(step)
    messages = [str(w.message) for w in caught]
    result = {"used": used, "params": params, "scale": scale, "pid": os.getpid()}
    result |= {"cadence": cadence, "warnings": messages, "scale_after": hook.lr_scale}
    out.write_text(json.dumps(result))


def run_ranks(tmp_path: Path, world: int = 2) -> list[dict[str, Any]]:
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo"}
    for name in (channel.SECRET_ENV, channel.SECRET_FILE_ENV):
        env.pop(name, None)
    procs = []
    for rank in range(world):
        args = [str(rank), str(world), str(tmp_path / "store"), str(run_dir)]
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, *args, str(tmp_path / f"rank{rank}.json")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=45)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow
def test_every_rank_applies_the_command_at_the_same_step(tmp_path: Path) -> None:
    rank0, rank1 = run_ranks(tmp_path)
    run_dir = tmp_path / "run"

    assert len(rank0["used"]) == len(rank1["used"]) == STEPS
    assert rank0["used"] == rank1["used"]  # the same LR on both ranks at every step
    assert rank0["params"] == rank1["params"]  # hence the same replicas
    assert rank0["cadence"] == rank1["cadence"]  # rank 0's, broadcast
    assert max(rank0["cadence"]) > 1  # so the check after K is not simply the next call
    acks = sorted(os.listdir(channel.channel_dir(run_dir) / "acks"))
    assert acks == [channel.ack_path(run_dir, 1).name]  # one ack, from rank 0 alone
    ack = channel.load_ack(run_dir, 1)
    assert ack is not None and ack.lr_scale == F
    assert ack.lrs == pytest.approx((F * schedule(ack.step + 1),), rel=1e-12)
    assert K <= ack.step < K + 20  # picked up within a few checks of being written
    expected = [schedule(s) * (F if s > ack.step else 1.0) for s in range(STEPS)]
    assert rank0["used"] == pytest.approx(expected, rel=1e-12)  # F x the schedule after the ack
    assert rank0["scale"] == rank1["scale"] == F

    beat = channel.read_heartbeat(run_dir)
    assert beat is not None and beat.world_size == 2 and beat.pid == rank0["pid"]
    assert not (run_dir / "metrics.jsonl").exists()

    # After the group is gone: one warning per rank, the second command neither applied nor acked.
    for rank in (rank0, rank1):
        assert rank["scale_after"] == F
        assert len(rank["warnings"]) == 1 and "agreeing with the other ranks" in rank["warnings"][0]
    assert channel.load_ack(run_dir, 2) is None


def test_ranks_that_cannot_be_coordinated_refuse_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process group that says it is there but cannot be used: refuse, so no rank diverges."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=BASE_LR)
    with pytest.warns(RuntimeWarning, match="cannot coordinate"):
        hook = lrwatch.attach(opt, tmp_path)
    send(tmp_path, 1, F)
    hook.step(0)
    ack = channel.load_ack(tmp_path, 1)
    assert ack is not None and ack.status.value == "rejected" and "2 ranks" in ack.reason
    assert hook.lr_scale == 1.0


if __name__ == "__main__":
    rank_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))
