"""The continual policy, always through lrwatch's registry and controller (``policy.plugins``),
as the daemon runs it: the boost after a drift, its return, and what it must never do."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from lrwatch_continual import RETURN_LABEL, ContinualConfig, ContinualPolicy
from typer.testing import CliRunner

from lrwatch import cli, plugins
from lrwatch.analysis.controller import Controller
from lrwatch.analysis.monitor import RunMonitor
from lrwatch.analysis.policy import ControlState, PolicyConfig
from lrwatch.config import Config
from lrwatch.protocol.types import ActionType, Decision, Finding, Sample, Severity

SEVERITY = {
    "drift": Severity.INFO,
    "plateau": Severity.INFO,
    "oscillation": Severity.WARNING,
    "divergence": Severity.CRITICAL,
}


def policy(*, cooldown: int = 50, max_scale: float = 4.0, **options: object) -> PolicyConfig:
    return PolicyConfig(
        cooldown_steps=cooldown,
        max_lr_scale=max_scale,
        max_adjustments=20,
        plugins={"continual": dict(options)},
    )


@dataclass
class Job:
    """A controller and a run's state, driven step by step; each action lands at once, as the
    hook's ack would set it (the daemon takes the factor from the ack)."""

    controller: Controller
    state: ControlState = field(default_factory=ControlState)
    can_act: str | None = None
    scales: list[float] = field(default_factory=list)  # the factor after each step
    decisions: list[Decision] = field(default_factory=list)

    @classmethod
    def of(cls, config: PolicyConfig, can_act: str | None = None) -> Job:
        controller = Controller(config)
        assert not controller.problems, controller.problems
        assert isinstance(controller.policies["continual"], ContinualPolicy)  # via the registry
        return cls(controller, can_act=can_act)

    def step(self, step: int, *kinds: str) -> None:
        due = self.controller.on_step("r", step, self.state, can_act=self.can_act)
        if due is not None:
            self._apply(due)
        for kind in kinds:
            found = Finding(kind, SEVERITY[kind], step, "test", run="r", metric="loss")
            self._apply(self.controller.decide(found, self.state, can_act=self.can_act))
        self.scales.append(self.state.lr_scale)

    def run(self, steps: range, events: dict[int, tuple[str, ...]] | None = None) -> None:
        for step in steps:
            self.step(step, *(events or {}).get(step, ()))

    def _apply(self, decision: Decision) -> None:
        self.controller.record(self.state, decision)
        self.decisions.append(decision)
        if decision.action is not None:
            assert decision.action.type is ActionType.SCALE_LR
            assert decision.action.factor is not None
            self.state.lr_scale *= decision.action.factor

    def sent(self) -> list[tuple[int, str, float]]:
        return [
            (d.step, d.label, d.action.factor or math.nan)
            for d in self.decisions
            if d.action is not None
        ]


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field_name"),
    [
        ({"boost": 1.0}, "boost"),
        ({"boost": math.inf}, "boost"),
        ({"hold_steps": 0}, "hold_steps"),
        ({"decay_stages": 0}, "decay_stages"),
        ({"decay_every": 0}, "decay_every"),
        ({"hold": 300}, "hold"),  # a typo is an error, not a silent default
    ],
)
def test_a_bad_option_is_refused_naming_the_field(raw: dict[str, object], field_name: str) -> None:
    problem = plugins.check("policies", "continual", raw)
    assert problem is not None and problem.stage == "config"
    assert problem.message.startswith(field_name)


def test_the_defaults_validate_and_are_described() -> None:
    assert plugins.check("policies", "continual", {}) is None
    for name, info in ContinualConfig.model_fields.items():
        assert info.description, name


# --- the episode -----------------------------------------------------------------------------


def test_a_drift_boosts_the_lr_and_the_boost_is_handed_back_after_the_hold() -> None:
    job = Job.of(policy(boost=3.0, hold_steps=300))
    job.run(range(1000), {400: ("drift",)})
    assert job.sent() == [
        (400, "drift", pytest.approx(3.0)),
        (700, RETURN_LABEL, pytest.approx(1 / 3)),
    ]
    assert job.scales[399] == 1.0
    assert job.scales[400] == job.scales[699] == pytest.approx(3.0)
    assert job.scales[700] == job.scales[-1] == pytest.approx(1.0)
    assert job.state.memory["continual"] == {}  # the episode is over


def test_the_return_in_stages_is_geometric() -> None:
    job = Job.of(policy(max_scale=8.0, boost=8.0, hold_steps=100, decay_stages=3, decay_every=60))
    job.run(range(500), {10: ("drift",)})
    assert [(s, round(f, 9)) for s, _, f in job.sent()] == [
        (10, 8.0),
        (110, 0.5),
        (170, 0.5),
        (230, 0.5),
    ]
    assert job.scales[-1] == pytest.approx(1.0)


def test_earlier_cuts_are_given_back_unless_told_not_to() -> None:
    for restore, boosted, after in ((True, 3.0, 1.0), (False, 1.5, 0.5)):
        job = Job.of(policy(boost=3.0, hold_steps=200, restore_cuts=restore))
        job.run(range(600), {100: ("plateau",), 200: ("drift",)})
        assert job.scales[150] == pytest.approx(0.5)
        assert job.scales[200] == pytest.approx(boosted)
        assert job.scales[-1] == pytest.approx(after)


def test_a_drift_during_the_boost_is_ignored() -> None:
    job = Job.of(policy(boost=3.0, hold_steps=300))
    job.run(range(800), {100: ("drift",), 250: ("drift",)})
    assert [label for _, label, _ in job.sent()] == ["drift", RETURN_LABEL]
    later = next(d for d in job.decisions if d.step == 250)
    assert later.action is None and "reported only" in later.reason


def test_a_divergence_during_the_boost_is_still_cut_and_the_cut_is_kept() -> None:
    job = Job.of(policy(boost=3.0, hold_steps=300, cooldown=50))
    job.run(range(800), {100: ("drift",), 110: ("divergence",)})
    assert job.sent() == [
        (100, "drift", pytest.approx(3.0)),
        (110, "divergence", pytest.approx(0.1)),
    ]
    assert job.scales[-1] == pytest.approx(0.3)  # the return never raises a cut factor


def test_a_boost_held_back_gives_way_to_a_divergence_cut_meanwhile() -> None:
    job = Job.of(policy(boost=3.0, hold_steps=300, cooldown=50))
    # The plateau cut's cooldown holds the boost back; the divergence cut passes it.
    job.run(range(800), {90: ("plateau",), 100: ("drift",), 105: ("divergence",)})
    assert [(s, label) for s, label, _ in job.sent()] == [(90, "plateau"), (105, "divergence")]
    assert job.scales[-1] == pytest.approx(0.05)
    assert job.state.memory["continual"] == {}


def test_a_boost_held_back_by_a_cooldown_is_asked_again_and_held_from_then() -> None:
    job = Job.of(policy(boost=3.0, hold_steps=300, cooldown=50, retry_steps=20))
    job.run(range(900), {90: ("plateau",), 100: ("drift",)})
    asks = [(d.step, d.action is not None) for d in job.decisions if d.label == "drift"]
    assert asks == [(100, False), (120, False), (140, True)]  # the cooldown ends at 140
    assert job.sent()[-1] == (440, RETURN_LABEL, pytest.approx(1 / 3))
    assert job.scales[-1] == pytest.approx(1.0)


def test_without_a_raised_max_lr_scale_the_boost_only_gives_back_cuts() -> None:
    job = Job.of(policy(max_scale=1.0, boost=3.0, hold_steps=200))
    job.run(range(600), {100: ("plateau",), 200: ("drift",)})
    assert [(s, f) for s, _, f in job.sent()] == [(100, 0.5), (200, pytest.approx(2.0))]
    assert job.scales[-1] == pytest.approx(1.0)


def test_a_return_held_back_by_a_cooldown_is_asked_again_later_not_every_step() -> None:
    job = Job.of(policy(boost=4.0, hold_steps=200, cooldown=50, retry_steps=30))
    job.run(range(600), {100: ("drift",), 270: ("oscillation",)})  # x0.5 at 270: 4 -> 2
    returns = [d for d in job.decisions if d.label == RETURN_LABEL]
    assert [(d.step, d.action is not None) for d in returns] == [(300, False), (330, True)]
    assert "cooldown" in returns[0].reason
    assert job.scales[-1] == pytest.approx(1.0)


def test_in_observe_mode_it_says_what_it_would_do_a_few_times_then_gives_up() -> None:
    job = Job.of(policy(boost=3.0, hold_steps=100), can_act="observe mode")
    job.run(range(400), {50: ("drift",)})
    asks = [d for d in job.decisions if d.label == "drift"]
    assert len(job.decisions) == len(asks) == 1 + ContinualConfig().retries
    assert all("not sent: observe mode" in d.reason for d in asks)
    assert job.scales[-1] == 1.0


def test_a_job_that_went_back_to_before_the_drift_ends_the_episode() -> None:
    job = Job.of(policy(boost=3.0, hold_steps=300))
    job.run(range(200), {150: ("drift",)})
    assert job.state.memory["continual"]
    job.state.lr_scale = 1.0  # the restored checkpoint carries the factor of its own time
    job.state.forget_from(100)  # as RunMonitor does on a rewind
    job.step(100)
    assert job.state.memory["continual"] == {}
    job.run(range(101, 200), {160: ("drift",)})  # the drift, met again, is answered again
    assert job.sent()[-1] == (160, "drift", pytest.approx(3.0))


def test_the_episode_survives_a_daemon_restart_mid_boost() -> None:
    config = policy(boost=3.0, hold_steps=300)
    job = Job.of(config)
    job.run(range(300), {100: ("drift",)})
    saved = json.loads(json.dumps(job.state.state_dict()))  # what the store keeps
    restarted = Job.of(config)
    restarted.state.load_state_dict(saved)
    restarted.run(range(300, 600))
    assert restarted.sent() == [(400, RETURN_LABEL, pytest.approx(1 / 3))]


def test_only_drift_is_answered() -> None:
    state, memory = ControlState(), {}
    continual = ContinualPolicy()
    for kind in ("divergence", "plateau", "oscillation", "spike"):
        found = Finding(kind, Severity.WARNING, 10, "test")
        assert continual.propose(found, state, memory) is None
    assert memory == {}


# --- the bounds hold whatever happens ---------------------------------------------------------

KINDS = st.sampled_from(["drift", "drift", "plateau", "oscillation", "divergence"])


@settings(max_examples=150, deadline=None)
@given(
    boost=st.floats(1.01, 20.0),
    max_scale=st.floats(1.0, 10.0),
    hold=st.integers(1, 200),
    stages=st.integers(1, 4),
    every=st.integers(1, 80),
    cooldown=st.integers(0, 60),
    restore=st.booleans(),
    events=st.dictionaries(st.integers(0, 400), st.tuples(KINDS), max_size=8),
)
def test_the_factor_stays_in_bounds_and_every_boost_is_handed_back(
    boost: float,
    max_scale: float,
    hold: int,
    stages: int,
    every: int,
    cooldown: int,
    restore: bool,
    events: dict[int, tuple[str]],
) -> None:
    config = PolicyConfig(
        cooldown_steps=cooldown,
        max_lr_scale=max_scale,
        min_lr_scale=1e-6,
        max_adjustments=1000,
        plugins={
            "continual": {
                "boost": boost,
                "hold_steps": hold,
                "decay_stages": stages,
                "decay_every": every,
                "restore_cuts": restore,
            }
        },
    )
    job = Job.of(config)
    end = 400 + hold + stages * every + 4 * (cooldown + 50)  # the last episode, and its retries
    job.run(range(end), events)
    assert all(1e-6 * (1 - 1e-9) <= s <= max_scale * (1 + 1e-9) for s in job.scales)
    assert job.state.memory["continual"] == {}
    # Without cuts the job is back on its own schedule; cuts may leave it lower, never higher.
    assert job.scales[-1] <= 1.0 + 1e-9
    if not {k for (k,) in events.values()} - {"drift"}:
        assert job.scales[-1] == pytest.approx(1.0)


# --- end to end: a config file, the registry, the pipeline the daemon runs --------------------

CONFIG = """
overrides:
  - glob: "stream/*"
    policy:
      factors: {divergence: 0.1, oscillation: 0.5}  # a stream: no plateau cuts
      max_lr_scale: 3.0
      plugins:
        continual: {boost: 3.0, hold_steps: 300}
"""


def drifting_losses(steps: int, drift_at: int, seed: int = 0) -> list[float]:
    """A loss falling to a noise floor, which steps up x3 at ``drift_at`` and decays back."""
    rng = random.Random(seed)
    out = []
    for step in range(steps):
        level = 0.05 + 0.5 * math.exp(-step / 150)
        if step >= drift_at:
            level *= 1 + 2.0 * math.exp(-(step - drift_at) / 400)
        out.append(level * math.exp(rng.gauss(0.0, 0.25)))
    return out


def test_a_drifting_run_configured_for_it_gets_the_boost_and_its_return() -> None:
    config = Config.model_validate(yaml.safe_load(CONFIG))
    monitors = {run: RunMonitor(run, config.for_run(run)) for run in ("stream/a", "batch/a")}
    sent: dict[str, list[Decision]] = {run: [] for run in monitors}
    scales: dict[str, list[float]] = {run: [] for run in monitors}
    for run, monitor in monitors.items():
        for step, loss in enumerate(drifting_losses(2000, 1000)):
            outcome = monitor.observe([Sample(run, "loss", step, loss)], can_act=None)
            assert not outcome.problems
            for decision in outcome.decisions:
                if decision.action is not None:  # as the hook's ack tells the daemon
                    assert decision.action.factor is not None
                    monitor.control.lr_scale *= decision.action.factor
                    sent[run].append(decision)
            scales[run].append(monitor.control.lr_scale)

    boost, back = sent["stream/a"]
    assert boost.label == "drift" and boost.finding is not None
    assert 1000 <= boost.step < 1060
    assert boost.action is not None and boost.action.factor == pytest.approx(3.0)
    assert back.label == RETURN_LABEL and back.step == boost.step + 300
    assert max(scales["stream/a"]) == pytest.approx(3.0)
    assert scales["stream/a"][-1] == pytest.approx(1.0)
    # A run the override does not name: the default policy (plateau cuts), never a boost.
    assert {d.label for d in sent["batch/a"]} == {"plateau"}
    assert max(scales["batch/a"]) == 1.0


def test_lrwatch_replay_with_the_config_file_shows_the_boost(tmp_path: Path) -> None:
    """The real command line over a finished log. Replay answers per finding, so it shows the
    boost (the drift's action), not the step-driven return (the test above follows that)."""
    run = tmp_path / "logs" / "stream" / "a"
    run.mkdir(parents=True)
    lines = (json.dumps({"step": s, "loss": v}) for s, v in enumerate(drifting_losses(1500, 1000)))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "lrwatch.yaml"
    config.write_text(CONFIG)
    args = ["replay", str(tmp_path / "logs"), "--config", str(config), "--format", "jsonl"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    drifts = [f for f in found if f["kind"] == "drift"]
    assert drifts and drifts[0]["run"] == "stream/a"
    assert drifts[0]["action"] == {"type": "scale_lr", "factor": pytest.approx(3.0)}
