"""What the training-side hook costs a training loop, and how soon a command takes effect.

Run: ``python -m benchmarks.hook_overhead`` (about a minute on 2 CPU cores).
Writes ``benchmarks/results/hook_overhead.md`` (a table) and ``hook_overhead.png`` (two plots).

Everything is measured in one run, side by side, so the ratios compare like with like:

- a bare training step of a small MLP (forward, backward, SGD step; batch 64): the yardstick;
- ``hook.step()`` with nothing pending, the common call (a counter), and a call that checks the
  channel (one failed ``open()``), each timed call by call, less the timer's own cost;
- the job's own LR schedulers for scale: ``StepLR.step()`` and ``ReduceLROnPlateau.step(loss)``;
- the optimizer pre/post hooks that carry a factor != 1, as extra time per training step;
- command latency: a writer thread drops commands into the channel at random moments, as the
  daemon would, while the loop runs at about 1 ms per step with the default ``check_interval``;
  latency is the ack's time (the hook takes it right after applying) minus the moment the
  write began, in milliseconds and in training steps.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

import lrwatch
from lrwatch.protocol import channel
from lrwatch.protocol.types import Action, ActionType, Command

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BATCH, STEP_PERIOD, LATENCY_SECONDS = 64, 1e-3, 20.0
MLP = (64, 128, 128, 10)  # small enough that a step fits well inside the 1 ms of the latency loop


def make_job() -> tuple[torch.nn.Module, torch.optim.Optimizer, Callable[[], None]]:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for n_in, n_out in itertools.pairwise(MLP):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(BATCH, MLP[0]), torch.randint(0, MLP[-1], (BATCH,))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return model, opt, train_step


# --- timing helpers -----------------------------------------------------------------------------


def timer_overhead_ns(n: int = 200_000) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        samples.append(clock() - t0)
    return statistics.median(samples)


def per_call_ns(fn: Callable[[], object], n: int, overhead: float) -> list[float]:
    """Each call timed on its own, so that the tail (p99) is seen, not averaged away."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0 - overhead)
    return [max(s, 0.0) for s in samples]


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def interleaved_ns(
    fn: Callable[[], object],
    setups: dict[str, Callable[[], None]],
    rounds: int,
    block: int,
) -> dict[str, list[float]]:
    """Per-call samples of ``fn`` under each setup, in blocks of shuffled order.

    One and the same model and optimizer for every variant (only the setup differs), and the
    order reshuffled each round, so neither memory layout nor drift favours a variant.
    """
    out: dict[str, list[float]] = {name: [] for name in setups}
    clock = time.perf_counter_ns
    order = list(setups)
    rng = random.Random(2)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            setups[name]()
            fn()  # the first call after a switch pays for the switch; not timed
            for _ in range(block):
                t0 = clock()
                fn()
                out[name].append(clock() - t0)
    return out


# --- the measurements ---------------------------------------------------------------------------


def measure_costs(tmp: Path, overhead: float) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}
    _, opt, train_step = make_job()
    for _ in range(50):
        train_step()  # warm-up: allocator, autograd graph caches
    rows["bare"] = per_call_ns(train_step, 600, overhead)

    # partial() rather than a lambda: a C-level call, so the timings are the callee's own.
    hook = lrwatch.attach(opt, tmp / "idle")
    rows["hook_idle"] = per_call_ns(partial(hook.step, 7), 300_000, overhead)
    hook.close()
    checking = lrwatch.attach(opt, tmp / "checking", check_interval=1e-9)  # every call checks
    rows["hook_check"] = per_call_ns(partial(checking.step, 7), 20_000, overhead)
    checking.close()

    # Timed alone, so torch's "scheduler stepped before the optimizer" warning does not apply.
    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
    step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=10**9)
    rows["steplr"] = per_call_ns(step_lr.step, 50_000, overhead)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=10**9)
    rows["plateau"] = per_call_ns(partial(plateau.step, 0.5), 50_000, overhead)
    return rows


class HookSwitch:
    """Attaches lrwatch to one optimizer at a given factor, or detaches it, between blocks."""

    def __init__(self, optimizer: torch.optim.Optimizer, run_dir: Path) -> None:
        self.optimizer, self.run_dir = optimizer, run_dir
        self.hook: lrwatch.Hook | None = None

    def detach(self) -> None:
        if self.hook is not None:
            self.hook.close()
            self.hook = None

    def attach(self, factor: float) -> None:
        self.detach()
        self.hook = lrwatch.attach(self.optimizer, self.run_dir)
        self.hook.load_state_dict({"lr_scale": factor, "last_seq": 0})

    def setups(self) -> dict[str, Callable[[], None]]:
        return {
            "none": self.detach,
            "one": partial(self.attach, 1.0),
            "half": partial(self.attach, 0.5),
        }


def measure_factor(tmp: Path) -> dict[str, list[float]]:
    """Training steps with no hook, the hook at factor 1, the hook at factor 0.5, interleaved.

    The pre/post hooks cost about a microsecond, below what a shared machine lets a step's
    median resolve; so they are also timed on ``optimizer.step()`` of a one-element SGD, where
    the optimizer's own work is a few microseconds and the hooks' share stands out.
    """
    _, opt, train_step = make_job()
    tiny = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    tiny.param_groups[0]["params"][0].grad = torch.ones(1)
    out: dict[str, list[float]] = {}
    for prefix, optimizer, fn, rounds, block in (
        ("step", opt, train_step, 30, 50),
        ("opt", tiny, tiny.step, 60, 500),
    ):
        switch = HookSwitch(optimizer, tmp / f"factor-{prefix}")
        for _ in range(50):
            fn()  # warm-up
        samples = interleaved_ns(fn, switch.setups(), rounds, block)
        switch.detach()
        out |= {f"{prefix}_{name}": values for name, values in samples.items()}
    return out


def measure_latency(tmp: Path) -> tuple[list[float], list[int], float]:  # see Latency
    """Commands written at random moments into a loop paced at ~1 ms per step."""
    run_dir = tmp / "latency"
    _, opt, train_step = make_job()
    hook = lrwatch.attach(opt, run_dir)  # the defaults: check_interval 0.1 s
    cid = channel.channel_id(run_dir)
    assert cid is not None
    current = {"step": 0}
    written: dict[int, tuple[float, int]] = {}  # seq -> (wall time in place, loop step then)
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random(1)
        seq = 0
        while not stop.wait(rng.uniform(0.03, 0.17)):
            seq += 1
            factor = 0.5 if seq % 2 else 2.0  # down, then back up: the LR stays near the schedule
            command = Command("bench", seq, Action(ActionType.SCALE_LR, factor), "bench", 0.0)
            # From the start of the write: the file appears (a rename) before the write returns
            # (an fsync of the directory), and the hook may apply it in between.
            written[seq] = (time.time(), current["step"])
            channel.write_command(run_dir, command, channel=cid, key=None)

    thread = threading.Thread(target=writer, name="command-writer")
    thread.start()
    step, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < LATENCY_SECONDS:
            t0 = time.perf_counter()
            train_step()
            current["step"] = step
            hook.step(step)
            step += 1
            # Spin out the rest of the period: on a busy machine a sleeping process is woken
            # late (milliseconds), which would stretch the period well past 1 ms.
            while time.perf_counter() - t0 < STEP_PERIOD:
                pass
    finally:
        stop.set()
        thread.join()
    achieved = (time.perf_counter() - start) / step
    deadline = time.perf_counter() + 5.0
    while time.perf_counter() < deadline:  # let the last command land, so none counts as lost
        if channel.ack_exists(run_dir, max(written, default=0)):
            break
        train_step()
        step += 1
        hook.step(step)
        time.sleep(STEP_PERIOD)
    hook.close()
    ms, steps = [], []
    for seq, (t_written, step_written) in written.items():
        ack = channel.load_ack(run_dir, seq)
        if ack is None:
            raise SystemExit(f"command {seq} was never acknowledged")
        ms.append((ack.acked_at - t_written) * 1e3)
        steps.append(ack.step - step_written)
    return ms, steps, achieved


# --- the report ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op thread), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; 1-minute load average {load} at the end"
    )


def fmt_ns(ns: float) -> str:
    if abs(ns) >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if abs(ns) >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


Samples = dict[str, list[float]]
Latency = tuple[list[float], list[int], float]


def report(costs: Samples, factor: Samples, latency: Latency) -> str:
    bare = statistics.median(costs["bare"])
    lines = [
        "| measurement | median | p99 | median ÷ bare step |",
        "| --- | ---: | ---: | ---: |",
    ]

    def row(label: str, samples: list[float]) -> None:
        med = statistics.median(samples)
        p99 = quantile(samples, 0.99)
        lines.append(f"| {label} | {fmt_ns(med)} | {fmt_ns(p99)} | {med / bare:.2g} |")

    mlp = "-".join(map(str, MLP))
    row(f"bare training step (MLP {mlp}, batch {BATCH}, fwd+bwd+SGD)", costs["bare"])
    row("`hook.step()`, nothing pending (the common call)", costs["hook_idle"])
    row("`hook.step()` that checks the channel, nothing pending", costs["hook_check"])
    row("`StepLR.step()`", costs["steplr"])
    row("`ReduceLROnPlateau.step(loss)`", costs["plateau"])
    row("training step, hook attached, factor 1", factor["step_one"])
    row("training step, hook attached, factor 0.5", factor["step_half"])
    row("training step, no hook (interleaved with the two above)", factor["step_none"])
    step_none = statistics.median(factor["step_none"])
    extra_one = statistics.median(factor["step_one"]) - step_none
    extra_half = statistics.median(factor["step_half"]) - step_none
    opt_none, opt_one, opt_half = (
        statistics.median(factor[f"opt_{k}"]) for k in ("none", "one", "half")
    )
    ms, steps, achieved = latency
    idle = statistics.median(costs["hook_idle"])
    check = statistics.median(costs["hook_check"])
    amortised = idle + check * STEP_PERIOD / 0.1  # one check per 0.1 s at 1 ms per step
    lines += [
        "",
        "| derived | value | ÷ bare step |",
        "| --- | ---: | ---: |",
        f"| `hook.step()` per step at 1 ms/step, checks included | {fmt_ns(amortised)} "
        f"| {amortised / bare:.2g} |",
        f"| whole training step, hook at factor 1 / 0.5, minus no hook (within noise) | "
        f"{fmt_ns(extra_one)} / {fmt_ns(extra_half)} | {extra_half / bare:.2g} (0.5) |",
        f"| `optimizer.step()` of a one-element SGD: no hook / factor 1 / factor 0.5 | "
        f"{fmt_ns(opt_none)} / {fmt_ns(opt_one)} / {fmt_ns(opt_half)} | |",
        f"| hence the pre/post hooks: at factor 1 / at factor 0.5 | {fmt_ns(opt_one - opt_none)}"
        f" / {fmt_ns(opt_half - opt_none)} | {(opt_half - opt_none) / bare:.2g} (0.5) |",
        "",
        f"Command latency, {len(ms)} commands written at random moments by a thread while the "
        f"loop ran at {achieved * 1e3:.2f} ms/step (default `check_interval` 0.1 s):",
        "",
        "| command latency (write begun → applied) | p50 | p99 | max |",
        "| --- | ---: | ---: | ---: |",
        f"| milliseconds | {quantile(ms, 0.5):.1f} | {quantile(ms, 0.99):.1f} | {max(ms):.1f} |",
        f"| training steps | {quantile(steps, 0.5):.0f} | {quantile(steps, 0.99):.0f} "
        f"| {max(steps)} |",
    ]
    return "\n".join(lines)


def plot(costs: Samples, factor: Samples, latency: Latency) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "bare": "bare training step",
        "hook_idle": "hook.step(), idle",
        "hook_check": "hook.step(), checking",
        "steplr": "StepLR.step()",
        "plateau": "ReduceLROnPlateau.step()",
    }
    names = list(labels)
    med = [statistics.median(costs[n]) / 1e3 for n in names]
    p99 = [quantile(costs[n], 0.99) / 1e3 for n in names]
    extra = (statistics.median(factor["opt_half"]) - statistics.median(factor["opt_none"])) / 1e3
    names.append("pre/post hooks, factor 0.5")
    med.append(max(extra, 1e-3))
    p99.append(float("nan"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ys = range(len(names))
    left.barh(ys, med, color="#4c72b0", label="median")
    left.scatter(p99, ys, color="#c44e52", marker="|", s=200, label="p99", zorder=3)
    left.set_yticks(list(ys), [labels.get(n, n) for n in names])
    left.set_xscale("log")
    left.set_xlabel("µs per call (log scale)")
    left.set_title("Cost per call")
    left.invert_yaxis()
    left.legend(loc="lower right")
    ms = sorted(latency[0])
    right.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], color="#4c72b0")
    right.set_xlabel("command latency, write begun → applied (ms)")
    right.set_ylabel("fraction of commands")
    right.set_title(f"Command latency at ~{latency[2] * 1e3:.1f} ms/step, check_interval 0.1 s")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "hook_overhead.png", dpi=120)
    plt.close(fig)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    began = time.perf_counter()
    # One intra-op thread: a small MLP gains little from two, and on a shared machine OpenMP
    # threads waiting for a busy core turn a sub-millisecond step into tens of milliseconds.
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lrwatch-bench-") as name:
        tmp = Path(name)
        overhead = timer_overhead_ns()
        costs = measure_costs(tmp, overhead)
        factor = measure_factor(tmp)
        latency = measure_latency(tmp)
    table = report(costs, factor, latency)
    text = (
        "# Hook overhead\n\n"
        f"Machine: {machine()}.\n\n"
        "Produced by `python -m benchmarks.hook_overhead`; per-call times are single calls "
        f"timed with `perf_counter_ns`, less the timer's own median ({overhead:.0f} ns). "
        "Channel files live on the local disk (a temporary directory).\n\n"
        f"{table}\n"
    )
    (RESULTS / "hook_overhead.md").write_text(text)
    plot(costs, factor, latency)
    print(text)
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
