from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lrwatch.config import Config
from lrwatch.detectors import (
    Detector,
    DetectorsConfig,
    DivergenceConfig,
    DivergenceDetector,
    build_detectors,
)
from lrwatch.detectors._anchor import RATIO as ANCHOR_RATIO
from lrwatch.detectors._robust import run_together
from lrwatch.offline.replay import replay
from lrwatch.protocol.types import Role, Severity
from tests.unit import curves
from tests.unit.curves import feed, first_nonfinite, resumed_trace, trace

# -- real curves ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [16, 32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_healthy_noisy_run_raises_nothing(seed: int, batch: int) -> None:
    detector = DivergenceDetector()
    assert feed(detector, curves.healthy(seed, batch=batch)) == []
    assert detector.active is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_lr_jump_diverges_at_the_jump_long_before_nan(seed: int) -> None:
    curve = curves.lr_jump(seed, at=150, lr=3.0)
    nan_at = first_nonfinite(curve)
    assert nan_at is not None
    detector = DivergenceDetector()
    found = feed(detector, curve)

    # One episode, one finding: the NaN 80 steps later belongs to the same episode.
    assert len(found) == 1
    (finding,) = found
    assert finding.kind == "divergence"
    assert finding.severity is Severity.CRITICAL
    assert finding.detail["nonfinite"] is False
    # The LR applies from the optimizer step at 150, so step 151 is the first loss it shapes.
    assert finding.onset_step is not None and 151 <= finding.onset_step <= 153
    assert finding.step <= 156 < nan_at - 50
    assert detector.active == "divergence"
    assert "above its running median" in finding.reason
    json.dumps(finding.detail, allow_nan=False)


def test_a_blow_up_after_the_loss_underflowed_to_zero_pages_before_the_nan() -> None:
    # A real run (unseen.py's draw 16000): Nesterov at 600x a sane LR on a wine MLP. Its first
    # update makes the logits so confident that the next two batches' cross-entropy is exactly
    # 0; then every step multiplies the loss by ~1000, to NaN at step 15. With 0 for its lowest
    # value the warm-up rule had nothing to measure from, and the loss was paged at the NaN.
    from benchmarks.detection import unseen
    from benchmarks.detection._harness import run

    spec = next(
        s for s in unseen.divergence(16000) if s.name == "wine_13_16_3_lr_too_high_nesterov_s16432"
    )
    with curves._one_thread():
        curve = [row["loss"] for row in run(spec.build())]
    assert curve[1:3] == [0.0, 0.0] and first_nonfinite(curve) == 15
    found = feed(DivergenceDetector(), curve)
    assert found[0].step <= 6 and not found[0].detail["nonfinite"]
    assert "its median" in found[0].reason


def test_a_net_that_an_lr_jump_killed_is_paged_though_its_noise_collapsed() -> None:
    # A real run (families.py's draw 2000, held out): a conv1d classifier under SGD with
    # momentum, LR x10 at step 181. The net dies: every batch's loss is ln 4, chance for four
    # classes, for 350 steps. Before the jump its batches ranged 0.05-0.7 (median 0.33), so
    # the upper quartiles of windows rose only 3.2x; their medians rose 4.6x.
    from benchmarks.detection import families
    from benchmarks.detection._harness import run

    spec = next(
        s for s in families.divergence(2000) if s.name == "conv1d_lr_jump_x10_momentum_b32_s2804"
    )
    with curves._one_thread():
        curve = [row["loss"] for row in run(spec.build())]
    assert statistics.median(curve[100:180]) < 0.4
    assert abs(statistics.median(curve[260:]) - math.log(4)) < 0.05
    assert statistics.pstdev(curve[260:]) < 0.1  # (its noise before: a log-spread of ~0.6)
    found = feed(DivergenceDetector(), curve)
    assert [f.kind for f in found] == ["divergence"]
    (finding,) = found
    assert finding.detail["trigger"] == "held"
    assert 181 <= (finding.onset_step or 0) <= finding.step <= 260
    assert finding.detail["level"] / finding.detail["best"] >= 4  # the medians, not quartiles


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_warmup_to_a_peak_lr_far_too_high_is_caught_as_it_starts(seed: int) -> None:
    curve = curves.blowup(seed, peak_lr=3.0, warmup=300)
    nan_at = first_nonfinite(curve)
    assert nan_at is not None
    found = feed(DivergenceDetector(), curve)

    assert [f.kind for f in found] == ["divergence"]
    finding = found[0]
    assert finding.onset_step is not None
    assert finding.step < nan_at - 100
    # The onset is where the loss has left its recent level for good: from there on its
    # median is many times the median before it.
    before = statistics.median(curve[finding.onset_step - 20 : finding.onset_step])
    after = statistics.median(curve[finding.onset_step : finding.onset_step + 20])
    assert after > 5 * before
    assert finding.step - finding.onset_step <= 4


@pytest.mark.parametrize("at", [300, 450])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_benign_spike_is_a_spike_not_a_divergence(seed: int, at: int) -> None:
    curve = curves.with_spike(curves.healthy(seed), at=at, factor=5.0, length=2)
    detector = DivergenceDetector()
    states = trace(detector, curve)
    found = [f for f, _ in states if f is not None]

    assert len(found) == 1
    (spike,) = found
    assert (spike.kind, spike.severity) == ("spike", Severity.WARNING)
    assert spike.onset_step == at
    assert spike.step == at + 2, "reported on return, when it is known not to be a divergence"
    assert spike.detail["samples"] == 2
    assert spike.detail["ratio"] > 3
    assert all(active is None for _, active in states)
    # The spike's values never entered the running level.
    assert not set(curve[at : at + 2]) & set(detector.state_dict()["window"])


def test_one_high_sample_is_a_bad_batch_not_a_spike() -> None:
    curve = curves.with_spike(curves.healthy(0), at=300, factor=8.0, length=1)
    assert feed(DivergenceDetector(), curve) == []
    # Counting single samples finds it — and the run's own bad batches with it, which is
    # why the default asks for two.
    found = feed(DivergenceDetector(DivergenceConfig(min_spike_length=1)), curve)
    assert ("spike", 300) in [(f.kind, f.onset_step) for f in found]
    assert len(found) > 1
    assert all(f.kind == "spike" for f in found)


def test_a_loss_that_settles_higher_is_one_episode_then_the_new_normal() -> None:
    healthy = curves.healthy(0, batch=32)
    curve = healthy[300:400] + tuple(20.0 * v for v in healthy[400:600])
    detector = DivergenceDetector()
    states = trace(detector, curve)
    found = [f for f, _ in states if f is not None]

    assert [(f.kind, f.onset_step) for f in found] == [("divergence", 100)]
    # After a window's worth of samples at the new level, the episode ends.
    cleared = next(i for i, (_, active) in enumerate(states) if i > 100 and active is None)
    assert cleared <= 100 + DivergenceConfig().window + 10


def test_a_nan_is_a_divergence_at_once_even_before_any_history() -> None:
    detector = DivergenceDetector()
    finding = detector.update(0, math.nan)
    assert finding is not None
    assert (finding.kind, finding.severity, finding.onset_step) == (
        "divergence",
        Severity.CRITICAL,
        0,
    )
    assert finding.detail["nonfinite"] is True
    assert finding.detail["value"] == "nan"
    json.dumps(finding.detail, allow_nan=False)
    assert detector.active == "divergence"
    assert detector.update(1, math.inf) is None, "the same episode"


def test_a_nan_ends_an_excursion_and_is_dated_from_it() -> None:
    healthy = curves.healthy(0, batch=32)[300:400]
    curve = (*healthy, 10 * healthy[-1], 30 * healthy[-1], math.inf)
    (finding,) = feed(DivergenceDetector(DivergenceConfig(patience=5)), curve)
    assert finding.detail == {"nonfinite": True, "value": "inf", "level": finding.detail["level"]}
    assert (finding.step, finding.onset_step) == (102, 100)


def test_after_recovery_a_new_divergence_is_a_new_episode() -> None:
    healthy = curves.healthy(1, batch=32)[300:500]
    cfg = DivergenceConfig(recovery=5)
    detector = DivergenceDetector(cfg)
    assert detector.update(0, math.nan) is not None
    assert feed(detector, healthy[:4], start=1) == []
    assert detector.active == "divergence"
    assert feed(detector, healthy[4:], start=5) == []
    assert detector.active is None
    again = detector.update(300, math.nan)
    assert again is not None and again.onset_step == 300


def test_zero_and_negative_losses_are_handled_in_their_own_units() -> None:
    # A negative log-likelihood of a density can sit below zero; shift a real curve there.
    shifted = [v - 3.0 for v in curves.lr_jump(0, at=150, lr=3.0)[:200]]
    found = feed(DivergenceDetector(), shifted)
    assert [f.kind for f in found] == ["divergence"]
    assert found[0].onset_step is not None and 151 <= found[0].onset_step <= 155
    assert feed(DivergenceDetector(), [0.0] * 300) == []


def test_an_lr_far_too_high_from_the_first_step_is_caught_before_any_level() -> None:
    curve = curves.too_high_from_the_start()
    nan_at = first_nonfinite(curve)
    assert nan_at is not None and nan_at < DivergenceConfig().min_history
    found = feed(DivergenceDetector(), curve)
    assert [f.kind for f in found] == ["divergence"], "one episode, NaN included"
    (finding,) = found
    assert finding.detail["trigger"] in {"warmup", "anchored", "rising"}
    assert finding.step < nan_at - 10
    assert finding.onset_step is not None and finding.onset_step <= 2


@pytest.mark.parametrize("seed", [0, 1])
def test_a_bad_batch_is_at_most_a_spike(seed: int) -> None:
    # Shuffled labels for two steps: the loss jumps ~1000x on them, then comes back.
    found = feed(DivergenceDetector(), curves.bad_batches(seed, at=(300, 301)))
    assert not [f for f in found if f.kind == "divergence" and f.step <= 306]
    assert any(f.kind == "spike" and 300 <= f.onset_step <= 302 for f in found)


def test_a_loss_spanning_decades_is_judged_in_log_space_too() -> None:
    # Late in training the loss sits near 1e-3 with bad batches at 1e-2 to 1e-1; a stretch of
    # such batches is ordinary there. Scaled down 1000x and up 1000x it is the same story.
    curve = curves.healthy(0, batch=16, steps=600)
    for scale in (1e-3, 1.0, 1e3):
        found = feed(DivergenceDetector(), [scale * v for v in curve])
        assert not [f for f in found if f.kind == "divergence"]


def test_a_step_up_that_stays_moderate_is_not_a_divergence_but_a_new_level() -> None:
    # 3x and flat, with no creep before it: a level shift (the drift detector reports it).
    healthy = curves.healthy(0, batch=32)
    curve = healthy[300:400] + tuple(3.0 * v for v in healthy[400:600])
    detector = DivergenceDetector()
    found = feed(detector, curve)
    assert not [f for f in found if f.kind == "divergence"]
    assert detector.active is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_moderate_lr_step_that_keeps_climbing_pages_within_a_few_steps(seed: int) -> None:
    # The rescue benchmark's "LR x8": the loss doubles at once, with no creep before it, and
    # keeps climbing (15 % a step here) toward a blow-up tens of steps later. That is a
    # divergence to cut the LR for now, not a new level to wait out. Noise as in that
    # benchmark's batches of 64 (log-SD ~0.2); a slower climb in noisier losses takes longer
    # to tell from a level shift (8 % a step in twice the noise: ~15 steps).
    rng = random.Random(seed)
    noise = [0.1 * math.exp(rng.gauss(0.0, 0.2)) for _ in range(200)]
    curve = noise[:100] + [2.0 * 1.15**k * v for k, v in enumerate(noise[100:])]
    found = feed(DivergenceDetector(), curve)
    assert [f.kind for f in found][:1] == ["divergence"]
    assert found[0].onset_step is not None and 100 <= found[0].onset_step <= 102
    assert found[0].step <= 110
    assert found[0].detail["trigger"] == "patience"


def test_a_jump_that_decays_after_a_huge_bad_batch_is_not_climbing() -> None:
    # A bad batch throws the loss up 100x, and the model takes a while to shake it off: the
    # later half of the excursion is above its trough, but the peak is behind it.
    healthy = curves.healthy(0, batch=32)
    bump = tuple(3.0 * v for v in healthy[402:430])
    curve = (*healthy[300:400], 100 * healthy[400], 80 * healthy[401], *bump, *healthy[430:])
    found = feed(DivergenceDetector(), curve)
    assert not [f for f in found if f.kind == "divergence"]


# The five non-diverging runs of the scoring corpus (benchmarks/detection) that paged before the
# excursion had to clear what the loss recently came back from: (run, metric, its config).
_CORPUS = Path(__file__).resolve().parents[3] / "benchmarks" / "detection" / "corpus"
_SWINGS = [
    ("drift/fraud_stream_logreg_sgd_s2", "loss"),  # a concept shift: bimodal after it
    ("drift/fraud_stream_mlp_momentum_s4", "loss"),
    ("healthy/wide_regression_linear_lr_too_high_s2", "loss"),  # bursts at the edge
    ("oscillation/breast_cancer_3f_logistic_gd_2.5edge", "grad_norm"),  # ... and periodic
    ("overfit/diabetes_80_samples_adam_s7", "loss"),  # a late Adam run's bumps
]


def _corpus_series(run: str, metric: str) -> list[float]:
    with (_CORPUS / run / "metrics.jsonl").open() as f:
        return [float(r[metric]) for line in f if metric in (r := json.loads(line))]


@pytest.mark.parametrize(("run", "metric"), _SWINGS)
def test_swings_the_loss_came_back_from_before_are_not_paged(run: str, metric: str) -> None:
    from lrwatch.detectors import GradNormConfig

    cfg = GradNormConfig() if metric == "grad_norm" else DivergenceConfig()
    found = feed(DivergenceDetector(cfg), _corpus_series(run, metric))
    # A held level is the monitor's to weigh (it pages only after an LR rise, which none of
    # these runs had, and drops one after garbage): the run replayed through it has none.
    held = [f for f in found if f.detail.get("trigger") == "held"]
    assert [f for f in found if f.kind == "divergence" and f not in held] == []
    replayed = [r.finding for r in replay([_CORPUS / run], Config())]
    assert [f for f in replayed if f.kind == "divergence"] == []


def _ar_noise(seed: int, phi: float, sd: float, n: int = 5000) -> list[float]:
    """A constant loss times exp(AR(1) noise of log-SD ``sd``): a loss that wanders."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_normal(n) * sd * math.sqrt(1 - phi * phi)
    out, acc = [], 0.0
    for shock in shocks:
        acc = phi * acc + shock
        out.append(0.5 * math.exp(acc))
    return out


@pytest.mark.parametrize(("phi", "sd"), [(0.8, 0.2), (0.95, 0.2), (0.8, 0.3), (0.95, 0.3)])
def test_a_loss_that_only_wanders_is_seldom_paged(phi: float, sd: float) -> None:
    """Autocorrelated noise goes up for a while by itself: its values are worth fewer
    independent ones, and the tests count them so. Of 20 such series of 5000 values (log-SD
    0.2), 7 (AR 0.8) and 17 (AR 0.95) were paged, most as steady climbs, when nothing did;
    0 and 2 once the window's memory counted. At log-SD 0.3 that memory, read off a window
    alone, still let 6 and 6 be paged (a 16-value climb or a 4-value stretch reads phi
    anywhere in 0.5-1); read off the values before the stretch too, 0 and 1."""
    paged = sum(
        any(f.kind == "divergence" for f in feed(DivergenceDetector(), _ar_noise(seed, phi, sd)))
        for seed in range(20)
    )
    assert paged <= 2


def test_a_loss_with_a_long_lower_tail_is_not_paged_off_its_lucky_lows() -> None:
    """Values uniform on (0, 1), the loss of the ingest benchmark's file: their log has a long
    lower tail (log-quartile spreads 0.6 up, 1.03 down), so the best stretch sits 20-50x below
    the typical level by chance, and a value near 1 reads "25x the best". Measured against the
    upper spread alone, that file's loss was paged 60 times in 40,000 values (each an LR
    x0.1); the bar now takes the lower spread too, and the best is a median of 16 values, not
    5, and a lucky first value is the best only until the noise says it was luck (of 100
    series of 5000 values logged every 5 steps, 7 are still paged, all within their first 20
    values: docs/detectors.md, "Sparse logs")."""
    rng, detector = random.Random(0), DivergenceDetector()
    found = [detector.update(5 * i, rng.random()) for i in range(40_000)]  # every 5 steps
    assert [f for f in found if f is not None and f.kind == "divergence"] == []


def _lucky_first(seed: int) -> list[float]:
    """A healthy loss, log-normal noise of SD 0.5 around 1, whose first value is 0.2: three SDs
    low, a lucky draw."""
    values = np.exp(0.5 * np.random.default_rng(seed).standard_normal(2000))
    values[0] = 0.2
    return [float(v) for v in values]


def _paged_once_noise_known(seen: curves.Trace) -> bool:
    """Paged after the first 20 values, when the detector knows the noise."""
    return any(f is not None and f.kind == "divergence" for f, _ in seen[20:])


def test_a_resumed_runs_lucky_low_first_value_is_not_its_best_for_good() -> None:
    """A run resumed from a checkpoint at step 50,000 into a new log (or rewound), logged every
    50 steps: its first value is one draw of the noise, here 3 SDs low. Taken as the run's best
    for good, it put every later pair of high values ten times "above the best": 19 of 20 such
    series were paged after their noise was known; none now, across a restart before the
    doubt too."""
    resumed = {"start": 50_000, "every": 50}
    for seed in range(20):
        values = _lucky_first(seed)
        assert not _paged_once_noise_known(trace(DivergenceDetector(), values, **resumed))
        restarted = resumed_trace(DivergenceDetector, values, 10, **resumed)
        assert not _paged_once_noise_known(restarted)


def test_a_runs_first_value_logged_at_its_start_stays_its_best() -> None:
    """Logged from step 0, the first value is the loss at initialisation: an LR too high from
    the start throws the loss to 3x at once (noise SD 0.3, so the start is under 4 SDs below
    it), and when it later climbs to 12x its start and stays, that is still paged."""
    rng = np.random.default_rng(0)
    log = np.full(3000, math.log(6.9))
    log[800:1800] += np.linspace(0.0, math.log(4.0), 1000)
    log[1800:] = math.log(27.6)
    values = np.exp(log + 0.3 * rng.standard_normal(3000))
    values[0] = 2.3
    found = [f.step for f in feed(DivergenceDetector(), list(values)) if f.kind == "divergence"]
    assert found and 800 < found[0] < 1900


def test_run_together_counts_autocorrelated_values_for_less() -> None:
    rng = np.random.default_rng(0)
    white = list(rng.standard_normal(500))
    assert run_together(white) == pytest.approx(1.0, abs=0.15)
    wander = [math.log(v) for v in _ar_noise(0, 0.95, 0.3, 500)]
    assert run_together(wander) > 4.0
    # A smooth trend under independent noise is not a wander.
    curve = [math.log(5 * math.exp(-i / 40) + 0.5) + 0.05 * x for i, x in enumerate(white)]
    assert run_together(curve) < 1.3


def test_a_divergence_soon_after_a_spike_is_still_paged_at_once() -> None:
    curve = curves.lr_jump(0, at=150, lr=3.0)
    plain = [(f.kind, f.step) for f in feed(DivergenceDetector(), curve)]
    after_spike = feed(DivergenceDetector(), curves.with_spike(curve, at=120, length=3))
    assert [(f.kind, f.step) for f in after_spike] == [("spike", 123), *plain]


def test_a_version_2_state_loads_without_the_spike_memory() -> None:
    detector = DivergenceDetector()
    feed(detector, curves.healthy(0)[:100])
    state = detector.state_dict()
    del state["returned"]
    state["version"] = 2
    DivergenceDetector().load_state_dict(state)


def test_gradient_norms_explode_with_the_loss_and_stay_quiet_on_healthy_runs() -> None:
    from lrwatch.detectors import GradNormConfig

    grad_norm_defaults = GradNormConfig()
    found = feed(DivergenceDetector(grad_norm_defaults), curves.lr_jump_grad_norms(0, at=150))
    assert [f.kind for f in found] == ["divergence"]
    assert found[0].onset_step is not None and 151 <= found[0].onset_step <= 153
    assert found[0].step <= 156
    for seed in (0, 1, 2):
        assert feed(DivergenceDetector(grad_norm_defaults), curves.healthy_grad_norms(seed)) == []


def test_the_grad_norm_and_loss_roles_get_it() -> None:
    cfg = DetectorsConfig()
    (grad,) = build_detectors(cfg, Role.GRAD_NORM).values()
    assert isinstance(grad, DivergenceDetector) and grad.config is cfg.grad_norm
    assert not cfg.grad_norm.report_spikes
    assert isinstance(next(iter(build_detectors(cfg, Role.LOSS).values())), DivergenceDetector)
    val = build_detectors(cfg, Role.VAL_LOSS).values()
    assert not any(isinstance(d, DivergenceDetector) for d in val)


# -- config --------------------------------------------------------------------------------


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="z_threshold"):
        DivergenceConfig(z_threshold=0)
    with pytest.raises(ValidationError, match="min_ratio"):
        DivergenceConfig(min_ratio=1.0)
    with pytest.raises(ValidationError, match="min_history 80 must not exceed window 50"):
        DivergenceConfig(min_history=80)
    with pytest.raises(ValidationError, match="pateince"):
        DivergenceConfig.model_validate({"pateince": 3})


def test_it_keeps_the_detector_contract() -> None:
    detector = DivergenceDetector()
    assert isinstance(detector, Detector)
    assert DivergenceDetector.kinds == ("divergence", "spike")


def test_build_detectors_builds_it_fresh_unless_disabled() -> None:
    cfg = DetectorsConfig()
    first, second = build_detectors(cfg), build_detectors(cfg)
    (mine,) = [d for d in first.values() if type(d) is DivergenceDetector]
    assert mine.config is cfg.divergence
    assert not any(d is mine for d in second.values()), "every series gets its own state"
    off = DetectorsConfig.model_validate({"divergence": {"enabled": False}})
    assert not any(type(d) is DivergenceDetector for d in build_detectors(off).values())
    assert len(build_detectors(off)) == len(first) - 1


# -- properties ----------------------------------------------------------------------------

any_float = st.floats(allow_nan=True, allow_infinity=True)
# Loss-like values with the occasional jump, zero, negative, huge or non-finite one.
lossy = st.one_of(
    st.floats(0.05, 3.0),
    st.floats(0.05, 3.0),
    st.floats(0.05, 3.0),
    st.floats(3.0, 1e6),
    st.sampled_from([0.0, -1.0, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf]),
)


def _segment(level: float, length: int, wiggle: float, growth: float) -> list[float]:
    return [level * growth**i * (1.0 + wiggle * (-1) ** i) for i in range(length)]


# Stretches at different levels, some growing geometrically: jumps, returns, long stays and
# blow-ups, so that excursions, spikes, episodes and re-basing all happen.
regimes = st.lists(
    st.builds(
        _segment,
        st.sampled_from([0.3, 1.0, 1.1, 5.0, 50.0, -2.0, math.nan]),
        st.integers(1, 40),
        st.floats(0.0, 0.3),
        st.sampled_from([1.0, 1.0, 1.0, 3.0]),
    ),
    max_size=8,
).map(lambda parts: [v for part in parts for v in part])
series = st.one_of(st.lists(lossy, max_size=150), regimes)


@settings(max_examples=200, deadline=None)
@given(st.lists(any_float, max_size=120))
def test_update_never_raises_and_details_are_strict_json(values: list[float]) -> None:
    for f in feed(DivergenceDetector(DivergenceConfig(min_history=8, window=16)), values):
        json.dumps(f.detail, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(series, st.integers(4, 50))
def test_no_finding_without_history_but_for_nonfinite_values_or_a_blowup(
    values: list[float], min_history: int
) -> None:
    cfg = DivergenceConfig(min_history=min_history, window=max(min_history, 8))
    for f in feed(DivergenceDetector(cfg), values[:min_history]):
        if f.detail["nonfinite"]:
            continue
        # Before a level exists, only a loss that keeps rising far above where it was, or
        # that sits far above the best it had reached (the anchored rules' bar, at least).
        if f.detail["trigger"] in {"anchored", "rising"}:
            assert float(f.detail["ratio"]) >= ANCHOR_RATIO * (1 - 1e-9)
            continue
        assert f.detail["trigger"] == "warmup"
        assert f.step >= cfg.warmup_rises
        assert f.detail["samples"] >= cfg.warmup_rises
        assert float(f.detail["ratio"]) >= cfg.min_ratio**2  # "inf" when the level is ~0


@settings(max_examples=200, deadline=None)
@given(series, st.data())
def test_state_round_trips_through_json(values: list[float], data: st.DataObject) -> None:
    cfg = DivergenceConfig(min_history=8, window=16, patience=3)
    split = data.draw(st.integers(0, len(values)))
    expected = trace(DivergenceDetector(cfg), values)
    assert resumed_trace(lambda: DivergenceDetector(cfg), values, split) == expected


@pytest.mark.parametrize("split", [100, 152, 154, 240, 299])
def test_state_round_trips_mid_episode_on_a_real_blowup(split: int) -> None:
    curve = curves.lr_jump(0, at=150, lr=3.0)
    expected = trace(DivergenceDetector(), curve)
    assert resumed_trace(DivergenceDetector, curve, split) == expected


@pytest.mark.parametrize("split", [2, 3, 4, 20])
def test_state_round_trips_through_a_warmup_blowup(split: int) -> None:
    curve = curves.too_high_from_the_start()
    expected = trace(DivergenceDetector(), curve)
    assert resumed_trace(DivergenceDetector, curve, split) == expected


@pytest.mark.parametrize("split", [280, 301, 302, 303])
def test_state_round_trips_mid_spike(split: int) -> None:
    curve = curves.with_spike(curves.healthy(0), at=300)
    expected = trace(DivergenceDetector(), curve)
    assert any(f is not None for f, _ in expected)
    assert resumed_trace(DivergenceDetector, curve, split) == expected


@pytest.mark.parametrize("split", [100, 205, 215, 219, 400])
def test_state_round_trips_around_a_held_level(split: int) -> None:
    """The held rule's windows (the upper quartiles of the last 256 values) survive a restart:
    a convnet's noisy loss held 4x up after an LR x30 is found at the same step."""
    run = curves.unseen_run("divergence", "digits_convnet_lr_jump_x30_adamw_s3408", 3000)
    curve = [v for _, v in run]
    expected = trace(DivergenceDetector(), curve)
    assert any(f is not None and f.detail.get("trigger") == "held" for f, _ in expected)
    assert resumed_trace(DivergenceDetector, curve, split) == expected


def test_a_held_level_state_saved_before_medians_were_kept_still_loads() -> None:
    """A daemon upgraded mid-run: its saved windows hold (upper quartile, noise) only; their
    upper quartiles stand in for the medians (higher: the median route is slower, not wrong)."""
    from lrwatch.detectors._held import HeldLevel

    fresh = HeldLevel(4.0)
    for i in range(64):
        fresh.update(i, 1.0 + 0.1 * (i % 7))
    state = fresh.state()
    state["wides"] = [w[:2] for w in state["wides"]]  # as lrwatch 0.x saved them
    old = HeldLevel(4.0)
    old.load(state)
    hits = []
    for i in range(64, 64 + 100):
        old.update(i, 8.0)
        hits.append(old.held())
    hit = next(h for h in hits if h is not None)
    assert hit[0] >= 4 and 64 <= hit[1] < 100
    assert old.reference == pytest.approx(max(1.0 + 0.1 * (i % 7) for i in range(32)), rel=0.2)
