"""The policy: defaults, cooldown, rate limit, bounds, and why it holds back."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lrwatch.analysis.controller import Controller
from lrwatch.analysis.monitor import RunMonitor
from lrwatch.analysis.policy import ControlState, PolicyConfig
from lrwatch.config import Config
from lrwatch.protocol.types import ActionType, Finding, Sample, Severity

SEVERITY = {
    "divergence": Severity.CRITICAL,
    "spike": Severity.WARNING,
    "oscillation": Severity.WARNING,
    "plateau": Severity.INFO,
}


def finding(kind: str, step: int) -> Finding:
    return Finding(kind, SEVERITY[kind], step, "test", run="r", metric="loss")


def act(controller: Controller, state: ControlState, kind: str, step: int) -> float | None:
    """Decide, and if an action comes out, apply it as the hook would (the ack's factor)."""
    decision = controller.decide(finding(kind, step), state, can_act=None)
    controller.record(state, decision)
    if decision.action is None:
        return None
    assert decision.action.type is ActionType.SCALE_LR
    assert decision.action.factor is not None
    state.lr_scale *= decision.action.factor
    return decision.action.factor


def test_default_factors() -> None:
    controller = Controller(PolicyConfig())
    assert act(controller, ControlState(), "divergence", 10) == pytest.approx(0.1)
    assert act(controller, ControlState(), "oscillation", 10) == pytest.approx(0.5)
    assert act(controller, ControlState(), "plateau", 10) == pytest.approx(0.5)
    assert act(controller, ControlState(), "spike", 10) is None


def test_cooldown_counts_steps() -> None:
    controller = Controller(PolicyConfig(cooldown_steps=50))
    state = ControlState()
    assert act(controller, state, "divergence", 100) is not None
    decision = controller.decide(finding("divergence", 149), state, can_act=None)
    assert decision.action is None
    assert "cooldown" in decision.reason
    assert act(controller, state, "divergence", 150) is not None


def test_a_mild_action_does_not_hold_back_a_critical_one() -> None:
    controller = Controller(PolicyConfig(cooldown_steps=50))
    state = ControlState()
    assert act(controller, state, "plateau", 700) == pytest.approx(0.5)
    # A divergence 5 steps after a plateau cut is still answered ...
    assert act(controller, state, "divergence", 705) == pytest.approx(0.1)
    # ... and starts a cooldown that holds back everything after it.
    for kind in ("plateau", "oscillation", "divergence"):
        decision = controller.decide(finding(kind, 720), state, can_act=None)
        assert decision.action is None and "cooldown" in decision.reason


def test_rate_limit() -> None:
    controller = Controller(
        PolicyConfig(cooldown_steps=0, max_adjustments=2, rate_window_steps=100, min_lr_scale=1e-9)
    )
    state = ControlState()
    assert act(controller, state, "plateau", 0) is not None
    assert act(controller, state, "plateau", 10) is not None
    decision = controller.decide(finding("plateau", 20), state, can_act=None)
    assert decision.action is None and "rate limit" in decision.reason
    assert act(controller, state, "plateau", 100) is not None  # the first left the window


def test_factor_stops_at_min_scale() -> None:
    controller = Controller(PolicyConfig(cooldown_steps=0, min_lr_scale=0.05))
    state = ControlState()
    assert act(controller, state, "divergence", 0) == pytest.approx(0.1)
    assert act(controller, state, "divergence", 1) == pytest.approx(0.5)  # 0.01 clipped to 0.05
    assert state.lr_scale == pytest.approx(0.05)
    decision = controller.decide(finding("divergence", 2), state, can_act=None)
    assert decision.action is None and "bound" in decision.reason


def test_cannot_act_still_explains_what_it_would_do() -> None:
    controller = Controller(PolicyConfig())
    state = ControlState()
    decision = controller.decide(finding("divergence", 5), state, can_act="observe mode")
    assert decision.action is None
    assert "x0.1" in decision.reason and "observe mode" in decision.reason
    controller.record(state, decision)
    assert state.actions == []  # nothing sent, no cooldown started


def test_paused_run_is_only_observed() -> None:
    decision = Controller(PolicyConfig()).decide(
        finding("divergence", 5), ControlState(paused=True), can_act=None
    )
    assert decision.action is None and "paused" in decision.reason


def test_invalid_policy_names_the_field() -> None:
    with pytest.raises(ValidationError, match="min_lr_scale"):
        PolicyConfig(min_lr_scale=2.0, max_lr_scale=1.0)
    with pytest.raises(ValidationError, match=r"factors\.divergence"):
        PolicyConfig(factors={"divergence": -1.0})
    with pytest.raises(ValidationError, match="cooldown"):
        PolicyConfig(cooldown=3)  # type: ignore[call-arg]


def test_state_round_trip() -> None:
    state = ControlState(
        lr_scale=0.25, actions=[(3, Severity.INFO), (40, Severity.CRITICAL)], paused=True
    )
    restored = ControlState()
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored == state


@given(
    kinds=st.lists(st.sampled_from(["divergence", "oscillation", "plateau", "spike"]), max_size=60),
    min_scale=st.floats(1e-6, 1.0),
    max_change=st.floats(1.0, 100.0),
)
def test_scale_never_leaves_bounds_and_change_is_limited(
    kinds: list[str], min_scale: float, max_change: float
) -> None:
    policy = PolicyConfig(
        cooldown_steps=0, max_adjustments=1000, min_lr_scale=min_scale, max_change=max_change
    )
    controller = Controller(policy)
    state = ControlState()
    for step, kind in enumerate(kinds):
        factor = act(controller, state, kind, step)
        if factor is not None:
            assert 1 / max_change - 1e-9 <= factor <= max_change + 1e-9
        assert min_scale * (1 - 1e-9) <= state.lr_scale <= 1.0 + 1e-9


def test_requests_go_with_the_adjustment_only() -> None:
    controller = Controller(PolicyConfig(requests={"divergence": ActionType.ROLLBACK}))
    state = ControlState()
    decision = controller.decide(finding("divergence", 10), state, can_act=None)
    assert decision.action is not None and decision.action.factor == pytest.approx(0.1)
    assert [r.type for r in decision.requests] == [ActionType.ROLLBACK]
    assert "rollback" in decision.reason
    assert controller.decide(finding("plateau", 10), state, can_act=None).requests == ()
    controller.record(state, decision)
    held = controller.decide(finding("divergence", 11), state, can_act=None)
    assert held.action is None and held.requests == ()  # cooldown holds both back
    with pytest.raises(ValidationError, match="scale_lr"):
        PolicyConfig(requests={"divergence": ActionType.SCALE_LR})


def test_replay_takes_each_cut_as_landed_so_the_bounds_bite_as_they_would_live() -> None:
    """Replay has no hook to ack a cut: it assumes each lands (the daemon learns the factor from
    acks instead), so a run cut again and again meets ``min_lr_scale`` in replay as it would."""
    rng = random.Random(0)
    values: list[float] = []
    for _ in range(3):  # three episodes: a healthy stretch, then the loss goes non-finite
        values += [0.3 * (1 + 0.05 * rng.uniform(-1, 1)) for _ in range(300)] + [math.nan]
    flat = [Sample("r", "loss", s, v) for s, v in enumerate(values)]
    raw = {"policy": {"min_lr_scale": 0.02}, "detectors": {"plateau": {"enabled": False}}}
    settings = Config.model_validate(raw).for_run("r")
    replayed, live = RunMonitor("r", settings, assume_landed=True), RunMonitor("r", settings)
    cuts = [
        d.action.factor
        for d in replayed.observe(flat, can_act=None).decisions
        if d.action is not None and d.action.factor is not None
    ]
    assert cuts[:1] == [0.1] and cuts[1] == pytest.approx(0.2)  # 0.01 -> the 0.02 floor
    assert len(cuts) == 2  # the third finds the factor at its bound
    assert replayed.control.lr_scale == pytest.approx(0.02)
    assert live.observe(flat, can_act=None).decisions  # without acks the factor stays put
    assert live.control.lr_scale == 1.0
