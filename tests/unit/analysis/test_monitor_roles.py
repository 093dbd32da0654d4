"""Metric roles: the frameworks' native names, and a role inferred from a name with "loss" in it
when a run logs none of the configured ones (RunMonitor.inferred_roles)."""

from __future__ import annotations

import math

import pytest

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.protocol.types import Role, Sample, Severity
from lrwatch.roles import RolesConfig


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("total_loss", Role.LOSS),  # detectron2
        ("train_loss_step", Role.LOSS),  # Lightning
        ("epoch_loss", Role.LOSS),  # Keras
        ("train/epoch_loss", Role.LOSS),
        ("train/loss", Role.LOSS),  # HF TensorBoard, SB3
        ("trl", Role.LOSS),  # llm.c main.log
        ("train_loss", Role.LOSS),
        ("train/CrossEntropyLoss", Role.LOSS),  # OLMo
        ("eval/loss", Role.VAL_LOSS),
        ("eval_loss", Role.VAL_LOSS),
        ("val_loss", Role.VAL_LOSS),
        ("val/loss", Role.VAL_LOSS),
        ("validation/epoch_loss", Role.VAL_LOSS),
        ("tel", Role.VAL_LOSS),
        ("train/learning_rate", Role.LR),
        ("lr-AdamW", Role.LR),
        ("epoch_learning_rate", Role.LR),
        ("norm", Role.GRAD_NORM),  # llm.c
        ("optim/total_grad_norm", Role.GRAD_NORM),
        ("lm loss", Role.LOSS),  # Megatron-LM's TensorBoard
        ("lm_loss", Role.LOSS),  # ... and its stdout, read
        ("learning-rate", Role.LR),
        ("grad-norm", Role.GRAD_NORM),
        ("lm loss validation", Role.VAL_LOSS),
        ("train/lm_loss", Role.LOSS),  # GPT-NeoX
        ("reduced_train_loss", Role.LOSS),  # NeMo
        ("gnorm", Role.GRAD_NORM),  # fairseq
        ("Loss", Role.LOSS),  # Ignite's examples
        ("accuracy", None),
    ],
)
def test_native_names(name: str, role: Role | None) -> None:
    assert RolesConfig().role_of(name) is role


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("mean_loss", Role.LOSS),
        ("train/nll_loss", Role.LOSS),
        ("Loss/G/loss", Role.LOSS),
        ("Loss/scores/fake", None),  # "loss" only in a group name: a logit, not a loss
        ("val/rmse_loss", Role.VAL_LOSS),
        ("eval_g0_loss", Role.VAL_LOSS),
        ("test_loss", Role.VAL_LOSS),
        ("learn/RMSE", Role.LOSS),  # CatBoost's learn_error.tsv
        ("test/RMSE", Role.VAL_LOSS),
        ("validation_0-logloss", Role.VAL_LOSS),  # XGBoost's evals_result
        ("train_perplexity", Role.LOSS),
        ("accuracy", None),
        ("mse_weight/scale", None),  # an error word only in a group name
        ("msec_per_step", None),  # "mse" inside another word is not one
    ],
)
def test_inference_by_name(name: str, role: Role | None) -> None:
    assert RolesConfig().infer_role(name) is role
    assert RolesConfig(infer=False).infer_role(name) is None


def feed(monitor: RunMonitor, rows: list[tuple[int, dict[str, float]]]) -> list[str]:
    samples = [Sample("r", m, step, v) for step, values in rows for m, v in values.items()]
    outcome = monitor.observe(samples, can_act=None)
    return [f.kind for f in outcome.findings]


def test_an_inferred_loss_is_watched_and_said() -> None:
    monitor = RunMonitor("r", Config().for_run("r"), assume_landed=True)
    rows = [(s, {"acc": 0.5, "mean_loss": 1.0 / (s + 1), "val/rmse_loss": 0.3}) for s in range(50)]
    rows.append((50, {"mean_loss": math.nan}))
    assert "divergence" in feed(monitor, rows)
    assert monitor.inferred_roles == {Role.LOSS: "mean_loss", Role.VAL_LOSS: "val/rmse_loss"}
    assert monitor.role_metric(Role.LOSS) == "mean_loss"
    assert monitor.series["mean_loss"].role is Role.LOSS


def test_a_configured_name_seen_later_takes_the_role_back() -> None:
    monitor = RunMonitor("r", Config().for_run("r"), assume_landed=True)
    feed(monitor, [(0, {"disc_loss": 1.0})])
    assert monitor.inferred_roles == {Role.LOSS: "disc_loss"}
    feed(monitor, [(1, {"loss": 2.0, "disc_loss": 1.0})])
    assert monitor.inferred_roles == {}
    assert monitor.role_metric(Role.LOSS) == "loss"
    assert monitor.series["disc_loss"].role is None and not monitor.series["disc_loss"].detectors


def test_the_first_loss_name_wins_and_a_rewind_keeps_it() -> None:
    monitor = RunMonitor("r", Config().for_run("r"), assume_landed=True)
    feed(monitor, [(s, {"g_loss": 1.0, "d_loss": 2.0}) for s in range(5)])
    assert monitor.inferred_roles == {Role.LOSS: "g_loss"}
    assert monitor.series["d_loss"].role is None
    # a restart appended to the same file: the series is rebuilt, with its inferred role
    monitor.observe([Sample("r", "g_loss", 5, 1.0)], can_act=None, source="f")
    outcome = monitor.observe([Sample("r", "g_loss", 1, 1.0)], can_act=None, source="f")
    assert [r.metric for r in outcome.rewinds] == ["g_loss"]
    assert monitor.series["g_loss"].role is Role.LOSS
    assert monitor.inferred_roles == {Role.LOSS: "g_loss"}


def test_state_round_trip_infers_the_same() -> None:
    monitor = RunMonitor("r", Config().for_run("r"), assume_landed=True)
    feed(monitor, [(s, {"g_loss": 1.0, "d_loss": 2.0}) for s in range(5)])
    again = RunMonitor("r", Config().for_run("r"), assume_landed=True)
    again.load_state_dict(monitor.state_dict())
    assert again.inferred_roles == monitor.inferred_roles


def _rl_rows(losses: list[float]) -> list[tuple[int, dict[str, float]]]:
    """Stable-Baselines3's progress.csv columns: the episode reward climbs, and so does the PPO
    loss (its value part grows with the returns) — a healthy RL run."""
    return [
        (2048 * (i + 1), {"rollout/ep_rew_mean": -100.0 + 10 * i, "train/loss": loss})
        for i, loss in enumerate(losses)
    ]


def _decisions(monitor: RunMonitor, rows: list[tuple[int, dict[str, float]]]) -> list[tuple]:
    samples = [Sample("r", m, step, v) for step, values in rows for m, v in values.items()]
    outcome = monitor.observe(samples, can_act=None)
    return [
        (d.finding.kind, d.finding.severity, d.action, d.reason)
        for d in outcome.decisions
        if d.finding is not None
    ]


def test_an_rl_runs_rising_loss_is_reported_but_never_paged_nor_cut() -> None:
    losses = [1.0 + 0.01 * (i % 3) for i in range(40)] + [1.0 * 1.15**k for k in range(1, 40)]
    monitor = RunMonitor("r", Config().for_run("r"), assume_landed=True)
    found = _decisions(monitor, _rl_rows(losses))
    assert any(kind == "divergence" for kind, *_ in found)
    for kind, severity, action, reason in found:
        assert action is None and severity is not Severity.CRITICAL, (kind, reason)
        assert "RL run" in reason and "rollout/ep_rew_mean" in reason


def test_rl_markers_empty_lets_lrwatch_act_on_an_rl_loss() -> None:
    losses = [1.0 + 0.01 * (i % 3) for i in range(40)] + [1.0 * 1.15**k for k in range(1, 40)]
    settings = Config.model_validate({"roles": {"rl_markers": []}}).for_run("r")
    found = _decisions(RunMonitor("r", settings, assume_landed=True), _rl_rows(losses))
    assert any(kind == "divergence" and action is not None for kind, _, action, _ in found)


def test_a_non_finite_rl_loss_still_pages() -> None:
    losses = [1.0 + 0.01 * (i % 3) for i in range(40)] + [math.nan]
    monitor = RunMonitor("r", Config().for_run("r"), assume_landed=True)
    paged = [f for f in _decisions(monitor, _rl_rows(losses)) if f[0] == "divergence"]
    assert [(kind, severity) for kind, severity, *_ in paged] == [("divergence", Severity.CRITICAL)]
    assert paged[0][2] is not None  # the cut


@pytest.mark.parametrize(
    ("name", "marks"),
    [
        ("rollout/ep_rew_mean", True),  # Stable-Baselines3
        ("charts/episodic_return", True),  # CleanRL
        ("episode_reward", True),
        ("mean 100 episode reward", True),  # baselines' GAIL
        ("train/loss", False),
        ("returned_tokens", False),  # a word, not a part of one
    ],
)
def test_what_marks_an_rl_run(name: str, marks: bool) -> None:
    assert RolesConfig().marks_rl(name) is marks
