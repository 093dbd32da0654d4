from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lrwatch.detectors import (
    Detector,
    DetectorsConfig,
    DriftDetector,
    OverfitConfig,
    OverfitDetector,
    build_detectors,
)
from lrwatch.detectors.overfit import RISES
from lrwatch.protocol.types import Role, Severity
from tests.unit import curves
from tests.unit.curves import feed, resumed_trace, trace

# -- real curves ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_a_validation_loss_that_climbs_back_is_overfitting(seed: int) -> None:
    train, val = curves.overfitting(seed)
    detector = OverfitDetector()
    found = feed(detector, val)  # one sample per evaluation

    assert len(found) == 1
    (finding,) = found
    assert (finding.kind, finding.severity) == ("overfit", Severity.WARNING)
    best = min(range(len(val)), key=val.__getitem__)
    # Dated from the best (smoothed) validation loss: the checkpoint to keep.
    assert finding.onset_step is not None and abs(finding.onset_step - best) <= 5
    assert finding.step > finding.onset_step + OverfitConfig().patience
    assert finding.detail["rise"] > 0.05
    assert "best checkpoint" in finding.reason
    assert detector.active == "overfit"
    json.dumps(finding.detail, allow_nan=False)
    # Meanwhile the training loss kept falling: this is not a training divergence.
    assert sum(train[-100:]) < sum(train[500:600])


@pytest.mark.parametrize("seed", [0, 1])
def test_a_validation_loss_that_flattens_is_not(seed: int) -> None:
    assert feed(OverfitDetector(), curves.healthy_validation(seed)) == []


def test_a_new_best_ends_the_episode() -> None:
    _, val = curves.overfitting(0)
    detector = OverfitDetector()
    assert feed(detector, val)
    assert detector.active == "overfit"
    detector.update(len(val), min(val) / 2)
    assert detector.active is None


# -- config --------------------------------------------------------------------------------


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="patience"):
        OverfitConfig(patience=0)
    with pytest.raises(ValidationError, match="threshold"):
        OverfitConfig(threshold=-0.1)
    with pytest.raises(ValidationError, match="min_delta"):
        OverfitConfig.model_validate({"min_delta": 0.1})


def test_it_keeps_the_detector_contract() -> None:
    assert isinstance(OverfitDetector(), Detector)
    assert OverfitDetector.kinds == ("overfit",)


def test_the_validation_loss_gets_it_and_nothing_that_pages() -> None:
    cfg = DetectorsConfig()
    (only,) = build_detectors(cfg, Role.VAL_LOSS).values()
    assert isinstance(only, OverfitDetector)
    assert not any(isinstance(d, OverfitDetector) for d in build_detectors(cfg, Role.LOSS).values())
    off = DetectorsConfig.model_validate({"overfit": {"enabled": False}})
    assert build_detectors(off, Role.VAL_LOSS) == {}


def test_a_state_of_another_detector_is_refused() -> None:
    with pytest.raises(ValueError, match="not an overfit detector state"):
        OverfitDetector().load_state_dict(DriftDetector().state_dict())


# -- properties ----------------------------------------------------------------------------

any_float = st.floats(allow_nan=True, allow_infinity=True)
u_shaped = st.lists(st.floats(0.0, 0.2), min_size=1, max_size=60).map(
    lambda xs: [1.0 + (i - 20) ** 2 / 100.0 + x for i, x in enumerate(xs)]
)
values = st.one_of(st.lists(any_float, max_size=80), u_shaped)
small = OverfitConfig(patience=3, smoothing=2, min_history=2)


@settings(max_examples=200, deadline=None)
@given(values)
def test_update_never_raises_and_details_are_strict_json(xs: list[float]) -> None:
    for f in feed(OverfitDetector(small), xs):
        json.dumps(f.detail, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(1, 20), st.integers(1, 20))
def test_no_finding_before_min_history_and_patience(
    xs: list[float], min_history: int, patience: int
) -> None:
    cfg = OverfitConfig(min_history=min_history, patience=patience, threshold=0.0, noise_z=0.0)
    early = xs[: max(min_history, patience + 1) - 1]
    # Only the few-evaluations rule speaks sooner: RISES rises in a row from the lowest so far.
    for f in feed(OverfitDetector(cfg), early):
        assert f.detail["trigger"] == "climb"
        rising = [v for v in early[: f.step + 1] if math.isfinite(v)][-RISES - 1 :]
        assert len(rising) == RISES + 1 and all(a < b for a, b in itertools.pairwise(rising))


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_state_round_trips_through_json(xs: list[float], data: st.DataObject) -> None:
    split = data.draw(st.integers(0, len(xs)))
    expected = trace(OverfitDetector(small), xs)
    assert resumed_trace(lambda: OverfitDetector(small), xs, split) == expected
