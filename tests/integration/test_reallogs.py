"""Every published log in ``shared/reallogs`` is read with no config: each folder gives a run with
a training-loss role (by a configured name, or inferred from a name that says "loss"), or is
listed below with the reason it has none. Skipped when the folder is absent (the repository is
cloned next to ``shared/`` in CI, as on the development machines)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.offline.replay import discover_runs, read_run
from lrwatch.protocol.types import Role
from lrwatch.sources.formats import build_formats

# The repository's sibling ``shared/reallogs`` (a git worktree may sit deeper: the nearest
# ancestor holding one), or $LRWATCH_REALLOGS.
REALLOGS = Path(
    os.environ.get("LRWATCH_REALLOGS")
    or next(
        (
            str(p / "shared" / "reallogs")
            for p in Path(__file__).resolve().parents[2:]
            if (p / "shared" / "reallogs").is_dir()
        ),
        "../shared/reallogs",
    )
)
FOLDERS = sorted(p.name for p in REALLOGS.iterdir() if p.is_dir()) if REALLOGS.is_dir() else []

INFERRED = "inferred"
# Folder -> the training-loss metric of its run, and "inferred" when no configured name matched.
LOSS: dict[str, tuple[str, str]] = {
    "catboost_dsb2019": ("learn/RMSE", INFERRED),  # an error word names it a loss
    "lightning_gan_nan": ("train_disc_loss", INFERRED),
    "lightning_opal_csv": ("train/nll_loss", INFERRED),
    "rl_a2c_flappybird_oscillating": ("train/policy_loss", INFERRED),
    "stylegan2ada_phytoplankton": ("Loss/G/loss", INFERRED),
    "stylegan2ada_sprites_bad_fid": ("Loss/G/loss", INFERRED),
    "yolov5_anpr_results_csv": ("train/box_loss", INFERRED),
    "yolov8_fire_smoke": ("train/box_loss", INFERRED),
    "boolnet_imagenet_basenet_k1": ("train_loss", ""),
    "buildnanogpt_gpt2_2p5epoch": ("train_loss", ""),
    "cs336_tinystories_lr1": ("train_loss", ""),
    "cs336_tinystories_lr1e-1": ("train_loss", ""),
    "cs336_tinystories_lr3e-1": ("train_loss", ""),
    "cs336_tinystories_lr3e-3": ("train_loss", ""),
    "deit_cfvit_log": ("train_loss", ""),
    "transformer_en_de_textlog": ("train_loss", ""),
    "detectron2_orbital_metrics_json": ("total_loss", ""),
    "llmc_gpt2_124m_mainlog": ("trl", ""),
    "llmc_gpt2_nan_from_step1": ("loss", ""),
    "olmo_1b_reproduce": ("train/CrossEntropyLoss", ""),
    "olmo_20m_zero_grad_plateau": ("train/CrossEntropyLoss", ""),
    "rl_ppo_carracing_sb3": ("train/loss", ""),
    **{
        name: ("loss", "")
        for name in (
            "hf_dnabert2_overfit_eval_loss",
            "hf_dpo_trainer_state",
            "hf_gpt2_lora_plateau",
            "hf_lora_no_learning",
            "hf_qwen_sci_cpt_2k",
            "hf_t5_summarization_tfevents",
            "hf_t5family_single_step_spike",
            "hf_tcm_llm_9epoch_staircase",
            "hf_trainer_state_overfit_const_lr",
            "keras_brain_tumor_appended_runs",
            "keras_tomato_csvlogger",
            "llamafactory_7b_cpt_cosine_8k",
            "rl_gail_discriminator_collapse",
            "whisper_braj_high_lr",
            "whisper_flemish_15k",
            "whisper_tiny_nbailab_100k",
        )
    },
}
# Folders read, whose metrics hold no training loss by any name: why.
NO_LOSS: dict[str, str] = {
    "cyclegan_loss_log_restarts": "the losses are named D_A, G_A, cycle_A, idt_A, ...",
    "rl_dqn_atari_assault": "a DQN progress.csv with rewards only (episode_reward, ...)",
    "wandb_export_astroclip": "a W&B export with one column per run (8-dim ... 512-dim)",
}

pytestmark = pytest.mark.skipif(not FOLDERS, reason=f"no real logs at {REALLOGS}")


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_real_log_is_read_with_no_config(folder: str) -> None:
    formats, problems = build_formats({})
    assert not problems
    config = Config()
    runs = discover_runs([REALLOGS / folder], formats)
    assert runs, f"{folder}: no log recognised"
    losses: dict[str, tuple[str, str, int]] = {}
    read = 0
    for run, files in runs.items():
        samples = read_run(run, files, formats)
        read += len(samples)
        monitor = RunMonitor(run, config.for_run(run), assume_landed=True)
        monitor.observe(samples, can_act=None)
        loss = monitor.role_metric(Role.LOSS)
        if loss is not None:
            how = INFERRED if Role.LOSS in monitor.inferred_roles else ""
            losses[run] = (loss, how, sum(s.metric == loss for s in samples))
    assert read, f"{folder}: files recognised but no sample read"
    if folder in NO_LOSS:
        assert not losses, f"{folder}: a loss was found after all: {losses}"
        return
    assert losses, f"{folder}: no loss role (metrics: {sorted({s.metric for s in samples})})"
    expected = LOSS.get(folder)
    if expected is not None:  # a folder added since: any loss will do
        assert {(loss, how) for loss, how, _ in losses.values()} == {expected}
    assert all(points > 0 for _, _, points in losses.values())
