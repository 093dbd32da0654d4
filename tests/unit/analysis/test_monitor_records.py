"""``RunMonitor.observe_records`` (replay's path) against ``observe`` fed one ``Sample`` per
scalar (the daemon's): the same findings, decisions, rewinds, problems and state, in the same
order, on real curves with the unwatched metrics, repeats, rewinds and late metrics of real logs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from lrwatch.analysis.monitor import Outcome, Record, RunMonitor
from lrwatch.config import Config, RunSettings
from lrwatch.offline.replay import discover, read_records, read_run, replay, replay_runs
from lrwatch.protocol.types import Sample
from lrwatch.sources.formats import build_formats
from tests.unit import curves


def run_records(t0: float | None = 1e9, start: int = 0, stop: int | None = None) -> list[Record]:
    """A run that diverges (real SGD warm-up past the stability edge), with its LR, grad norm,
    a validation loss every 10 steps, three metrics no detector watches and one that starts
    late; wall times one second a step from ``t0``."""
    loss = curves.blowup()
    grads = curves.healthy_grad_norms()
    records: list[Record] = []
    for step in range(start, len(loss) if stop is None else stop):
        values = {
            "loss": loss[step],
            "lr": 5.0 * (step + 1) / 300,
            "grad_norm": grads[step],
            "acc": 1 - loss[step] / 3,
            "epoch": step / 50,
        }
        if step % 10 == 0:
            values["val_loss"] = loss[step] * 1.1
        if step >= 120:
            values["tokens_per_second"] = 1000.0 + step
        records.append((step, None if t0 is None else t0 + step, values))
    return records


def samples(records: list[Record]) -> list[Sample]:
    return [Sample("r", m, s, v, w) for s, w, values in records for m, v in values.items()]


def same(settings: RunSettings, *feeds: tuple[list[Record], str, bool]) -> list[Outcome]:
    """Feed both paths the same ``(records, source, reread)`` calls; assert they agree."""
    slow = RunMonitor("r", settings, assume_landed=True)
    fast = RunMonitor("r", settings, assume_landed=True)
    outcomes = []
    for records, source, reread in feeds:
        expected = slow.observe(samples(records), can_act=None, source=source, reread=reread)
        got = fast.observe_records(records, can_act=None, source=source, reread=reread)
        assert repr(got) == repr(expected)  # repr: a NaN in a finding's detail is equal to itself
        assert json.dumps(fast.state_dict()) == json.dumps(slow.state_dict())
        assert list(fast.series) == list(slow.series)
        outcomes.append(expected)
    return outcomes


def test_a_diverging_run_gives_the_same_findings_decisions_and_state() -> None:
    (outcome,) = same(Config().for_run("r"), (run_records(), "", False))
    assert outcome.findings and any(d.action for d in outcome.decisions)  # not vacuous


def test_repeats_and_a_restart_from_a_checkpoint_in_a_second_file() -> None:
    first = run_records(stop=200)
    repeated = first[:50] + first[40:]  # a file read again over its first steps
    restarted = run_records(t0=2e9, start=120)  # later wall times: a rewind of every series
    settings = Config().for_run("r")
    outcomes = same(settings, (repeated, "a", False), (restarted, "b", False))
    assert outcomes[1].rewinds and {r.metric for r in outcomes[1].rewinds} >= {"acc", "loss"}


def test_steps_without_wall_times_a_reread_file_and_negative_steps() -> None:
    records = [(-3, None, {"acc": 0.5, "loss": 2.0}), *run_records(t0=None, stop=150)]
    settings = Config().for_run("r")
    same(settings, (records, "a", False), (run_records(t0=None, stop=200), "a", True))


def test_a_role_whose_detectors_are_all_disabled_is_bookkeeping_only() -> None:
    config = Config.model_validate({"detectors": {"overfit": {"enabled": False}}})
    same(config.for_run("r"), (run_records(), "", False))


def test_replay_of_a_tensorboard_file_matches_the_per_sample_path(tmp_path: Path) -> None:
    """End to end over a real SummaryWriter file: ``replay`` (records, the unwatched scalars
    taken in place) finds what ``observe`` over ``read_run``'s samples finds."""
    writer = SummaryWriter(str(tmp_path / "run"))
    for step, _, values in run_records():
        for metric, value in values.items():
            writer.add_scalar(metric, value, step)
    writer.close()
    files = sorted((tmp_path / "run").glob("*tfevents*"))
    config = Config()
    monitor = RunMonitor("run", config.for_run("run"), assume_landed=True)
    expected = monitor.observe(read_run("run", files), can_act=None)
    got = [item.finding for item in replay([tmp_path / "run"], config)]
    assert repr(got) == repr(expected.findings) and got
    assert len(read_run("run", files)) == len(read_records("run", files)[0])


def test_files_out_of_step_order_are_merged_stably(tmp_path: Path) -> None:
    """Two files of one run whose steps interleave (a restart's second file): merged by step,
    file order breaking ties, as a stable sort of all their samples would."""
    run = tmp_path / "run"
    run.mkdir()
    first, second = run / "a.jsonl", run / "b.jsonl"
    first.write_text("".join(f'{{"step": {s}, "loss": {s}.5, "acc": 1}}\n' for s in range(0, 9, 2)))
    second.write_text("".join(f'{{"step": {s}, "loss": {s}.25}}\n' for s in (5, 1, 4, 7)))
    merged = read_run("run", [first, second])
    each = read_run("run", [first]) + read_run("run", [second])
    assert merged == sorted(each, key=lambda s: s.step)
    assert [s.step for s in merged] != [s.step for s in each]  # the merge did something


def test_a_replayed_runs_steps_and_first_nonfinite_value_are_those_of_its_samples(
    tmp_path: Path,
) -> None:
    """``replay_runs`` counts steps and finds the first non-finite value from the records."""
    run = tmp_path / "run"
    run.mkdir()
    log = run / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": v, "acc": 0.5}) for s, _, v in blowup_points()]
    log.write_text("\n".join(lines) + "\n")
    config = Config()
    formats, _ = build_formats(config.sources)
    (replayed,) = replay_runs(discover([run], formats), config, formats)
    samples = read_run("run", [log])
    nonfinite = [(s.metric, s.step, s.value) for s in samples if not math.isfinite(s.value)]
    assert nonfinite and repr(replayed.first_nonfinite) == repr(nonfinite[0])
    assert replayed.steps == len({s.step for s in samples})


def blowup_points() -> list[tuple[int, None, float]]:
    return [(step, None, value) for step, value in enumerate(curves.blowup())]
