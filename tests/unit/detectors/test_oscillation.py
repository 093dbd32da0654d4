from __future__ import annotations

import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lrwatch.detectors import (
    Detector,
    DetectorsConfig,
    OscillationConfig,
    OscillationDetector,
    build_detectors,
)
from lrwatch.protocol.types import Severity
from tests.unit import curves
from tests.unit.curves import feed, resumed_trace, trace

# -- real curves ---------------------------------------------------------------------------


@pytest.mark.parametrize("edge_fraction", [1.5, 2.0])
def test_gd_past_the_stability_edge_oscillates(edge_fraction: float) -> None:
    curve = curves.full_batch_logreg(edge_fraction)
    detector = OscillationDetector()
    found = feed(detector, curve)

    assert len(found) == 1, "a lasting cycle is one episode"
    (finding,) = found
    assert (finding.kind, finding.severity) == ("oscillation", Severity.WARNING)
    assert finding.step < 100
    assert finding.detail["flip_fraction"] >= 0.9
    assert finding.detail["autocorr"] <= -0.8
    assert finding.detail["amplitude"] >= 0.01
    assert finding.onset_step == finding.step - OscillationConfig().window
    assert "alternates" in finding.reason
    assert detector.active == "oscillation"
    json.dumps(finding.detail, allow_nan=False)


def test_the_onset_is_a_logged_step_when_logs_skip_steps() -> None:
    curve = curves.full_batch_logreg(1.5)
    detector = OscillationDetector()
    found = [f for i, v in enumerate(curve) if (f := detector.update(10 * i, v)) is not None]
    assert len(found) == 1
    assert found[0].onset_step == found[0].step - 10 * OscillationConfig().window


def test_gd_just_below_the_edge_does_not() -> None:
    # It alternates too, but the alternation dies out: the amplitude test rejects it.
    assert feed(OscillationDetector(), curves.full_batch_logreg(0.9)) == []


def test_the_episode_ends_once_the_lr_is_cut() -> None:
    curve = curves.full_batch_logreg(1.5, steps=400, cut_at=200, cut_to=0.5)
    states = trace(OscillationDetector(), curve)
    found = [f for f, _ in states if f is not None]
    assert len(found) == 1 and found[0].step < 200
    assert states[199][1] == "oscillation"
    window = OscillationConfig().window
    assert all(active is None for _, active in states[200 + 2 * window + 32 :])


@pytest.mark.parametrize("batch", [16, 32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minibatch_noise_of_a_healthy_run_is_not_oscillation(seed: int, batch: int) -> None:
    assert feed(OscillationDetector(), curves.healthy(seed, batch=batch)) == []


def test_iid_noise_flips_two_thirds_of_the_time_and_is_not_oscillation() -> None:
    rng = random.Random(0)
    noise = [1.0 + 0.3 * rng.gauss(0.0, 1.0) for _ in range(20_000)]
    diffs = [b - a for a, b in itertools.pairwise(noise)]
    flips = sum(d1 * d0 < 0 for d0, d1 in itertools.pairwise(diffs)) / len(diffs)
    assert flips == pytest.approx(2 / 3, abs=0.01)
    # Measured at 0.15 episodes per 10k samples of Gaussian noise; allow a little luck.
    assert len(feed(OscillationDetector(), noise)) <= 2
    loose = OscillationConfig(window=20, min_flip_fraction=0.7, max_autocorr=-0.6)
    assert len(feed(OscillationDetector(loose), noise)) > 10, "why the defaults are strict"


def test_a_nonfinite_value_restarts_the_detector() -> None:
    curve = curves.full_batch_logreg(1.5)
    detector = OscillationDetector()
    assert len(feed(detector, curve[:150])) == 1
    assert detector.update(150, math.nan) is None
    assert detector.active is None
    assert detector.state_dict()["values"] == []
    # ...and the cycle that goes on is found again once a window has filled.
    again = feed(detector, curve[151:], start=151)
    assert len(again) == 1 and again[0].step == 151 + OscillationConfig().window


def test_a_doubled_cycle_is_found_by_recurrence() -> None:
    # Further past the edge the period-2 cycle has doubled: the loss repeats every 4 steps,
    # its differences flip only half the time, but each value comes back 4 steps later.
    curve = curves.period_four()
    found = feed(OscillationDetector(), curve)
    assert len(found) == 1
    (finding,) = found
    assert finding.detail["period"] == 4
    assert finding.detail["recurrence"] >= OscillationConfig().min_recurring
    assert "4-step cycle" in finding.reason
    assert finding.step < 100


def test_spikes_that_happen_to_recur_are_no_cycle() -> None:
    # A run at ~1e-3 with bad batches: a mean of lagged differences would find "cycles" in
    # pairs of spikes; counting values that recur does not.
    curve = curves.healthy(1, batch=16, steps=600)
    spiky = list(curve)
    for at in range(300, 600, 37):
        spiky[at] = 30 * spiky[at]
    assert feed(OscillationDetector(), spiky) == []


# Full-batch gradient descent at 2.2x the stability edge on a logistic regression of two
# breast-cancer features (the unseen corpus' run): the loss settles at 0.228, bursts to ~2,
# settles again, every 16-26 steps.
_RELAXING = ("oscillation", "breast_cancer_cols_2_8_logistic_gd_2.2edge")


def test_gd_relaxing_past_the_edge_is_found_by_its_regular_bursts() -> None:
    detector = OscillationDetector()
    found = [
        f
        for step, v in curves.unseen_run(*_RELAXING)
        if (f := detector.update(step, v)) is not None
    ]
    assert found and found[0].step < 200
    assert 16 <= found[0].detail["period"] <= 26
    assert found[0].detail["regularity"] <= 2.0
    assert "bursts and settles" in found[0].reason


def test_bursts_with_a_long_decay_between_them_are_a_cycle() -> None:
    # The same relaxation with less time settled (as a fresh draw's seed has it): the loss
    # falls back from each burst over 12 steps and sits 3. Read as noise, the values' own
    # spread hid the bursts for good; their second differences hold none: there is none.
    fall = [max(0.228, 0.52 * 0.925**k) for k in range(12)]
    cycle = fall + [0.228] * 3 + [0.229, 0.242, 0.374, 1.099, 2.268]
    found = feed(OscillationDetector(), [0.6] + cycle * 25)
    assert found and found[0].step < 200
    assert found[0].detail["period"] == len(cycle)


def test_a_bad_batch_each_epoch_is_no_burst() -> None:
    # A smooth loss with one garbage batch (30x) every 20 steps, as a corrupt shard read every
    # epoch gives: each is one value up, which a relaxing step size's bursts are not.
    curve = list(curves.converging_regression(0))
    for at in range(600, len(curve), 20):
        curve[at] *= 30
    assert feed(OscillationDetector(), curve) == []


@pytest.mark.parametrize("split", [120, 147, 148, 300])
def test_state_round_trips_through_bursts(split: int) -> None:
    curve = [v for _, v in curves.unseen_run(*_RELAXING)]
    expected = trace(OscillationDetector(), curve)
    assert resumed_trace(OscillationDetector, curve, split) == expected


# -- config --------------------------------------------------------------------------------


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="min_flip_fraction"):
        OscillationConfig(min_flip_fraction=0.6)  # i.i.d. noise flips 2/3 of the time
    with pytest.raises(ValidationError, match="max_autocorr"):
        OscillationConfig(max_autocorr=-0.4)
    with pytest.raises(ValidationError, match="window"):
        OscillationConfig(window=2)
    with pytest.raises(ValidationError, match="min_recurring"):
        OscillationConfig(min_recurring=0.3)  # noise recurs about a quarter of the time
    with pytest.raises(ValidationError, match="windw"):
        OscillationConfig.model_validate({"windw": 20})


def test_it_keeps_the_detector_contract() -> None:
    assert isinstance(OscillationDetector(), Detector)
    assert OscillationDetector.kinds == ("oscillation",)


def test_build_detectors_builds_it_fresh_unless_disabled() -> None:
    cfg = DetectorsConfig()
    first, second = build_detectors(cfg), build_detectors(cfg)
    (mine,) = [d for d in first.values() if isinstance(d, OscillationDetector)]
    assert mine.config is cfg.oscillation
    assert not any(d is mine for d in second.values()), "every series gets its own state"
    off = DetectorsConfig.model_validate({"oscillation": {"enabled": False}})
    assert not any(isinstance(d, OscillationDetector) for d in build_detectors(off).values())
    assert len(build_detectors(off)) == len(first) - 1


# -- properties ----------------------------------------------------------------------------

any_float = st.floats(allow_nan=True, allow_infinity=True)
# Alternating values, so the sign tests pass and the expensive statistics run too.
zigzag = st.lists(st.floats(0.0, 2.0), max_size=100).map(
    lambda xs: [x + (1.0 if i % 2 else 0.0) for i, x in enumerate(xs)]
)
values = st.one_of(st.lists(any_float, max_size=100), zigzag)


@settings(max_examples=200, deadline=None)
@given(values)
def test_update_never_raises_and_details_are_strict_json(xs: list[float]) -> None:
    for f in feed(OscillationDetector(OscillationConfig(window=8)), xs):
        json.dumps(f.detail, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(6, 40))
def test_no_finding_before_a_full_window(xs: list[float], window: int) -> None:
    cfg = OscillationConfig(window=window, min_amplitude=1e-9)
    assert feed(OscillationDetector(cfg), xs[:window]) == []


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_state_round_trips_through_json(xs: list[float], data: st.DataObject) -> None:
    cfg = OscillationConfig(window=8)
    split = data.draw(st.integers(0, len(xs)))
    expected = trace(OscillationDetector(cfg), xs)
    assert resumed_trace(lambda: OscillationDetector(cfg), xs, split) == expected


@pytest.mark.parametrize("split", [50, 78, 79, 210, 399])
def test_state_round_trips_on_a_real_cycle(split: int) -> None:
    curve = curves.full_batch_logreg(1.5, cut_at=200)
    expected = trace(OscillationDetector(), curve)
    assert resumed_trace(OscillationDetector, curve, split) == expected
