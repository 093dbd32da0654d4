"""Detectors: pure functions of one series, from values to findings.

Each detector module owns its config model, so a knob is defined in exactly one place;
:class:`DetectorsConfig` only gathers them for the daemon's config file, and
:func:`build_detectors` turns it into fresh runtime objects (Vector's config -> ``build()``)
for a series of a given role:

=============  =========================================================================
role           detectors (in this order)
=============  =========================================================================
``loss``       divergence (and spike), oscillation, plateau, drift
``grad_norm``  divergence, with the ``grad_norm`` knobs: an exploding gradient norm is the
               earliest sign of a step size past the stability edge; its spikes are not
               reported (gradient norms spike all the time)
``val_loss``   overfit: a rising validation loss is overfitting, not a training divergence
``lr``         none (it is exported, not judged)
=============  =========================================================================
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from lrwatch.detectors.base import Detector
from lrwatch.detectors.divergence import DivergenceConfig, DivergenceDetector
from lrwatch.detectors.drift import DriftConfig, DriftDetector
from lrwatch.detectors.oscillation import OscillationConfig, OscillationDetector
from lrwatch.detectors.overfit import OverfitConfig, OverfitDetector
from lrwatch.detectors.plateau import PlateauConfig, PlateauDetector
from lrwatch.types import Role

__all__ = [
    "Detector",
    "DetectorsConfig",
    "DivergenceConfig",
    "DivergenceDetector",
    "DriftConfig",
    "DriftDetector",
    "OscillationConfig",
    "OscillationDetector",
    "OverfitConfig",
    "OverfitDetector",
    "PlateauConfig",
    "PlateauDetector",
    "build_detectors",
]

# Gradient norms are noisier than losses and move a lot early in training (they often grow
# for a while as the loss falls, so no warm-up blow-up test): a longer history, and only big
# sustained jumps, or a creep of 2x before the leap, count. Their spikes are not reported.
GRAD_NORM_DEFAULTS = DivergenceConfig(
    window=100,
    min_history=50,
    big_ratio=10.0,
    creep_ratio=2.0,
    warmup_rises=0,
    report_spikes=False,
)


class DetectorsConfig(BaseModel):
    """The ``detectors:`` section of the config file: one sub-section per detector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    divergence: DivergenceConfig = DivergenceConfig()
    grad_norm: DivergenceConfig = GRAD_NORM_DEFAULTS
    oscillation: OscillationConfig = OscillationConfig()
    plateau: PlateauConfig = PlateauConfig()
    drift: DriftConfig = DriftConfig()
    overfit: OverfitConfig = OverfitConfig()


def build_detectors(cfg: DetectorsConfig, role: Role | None = Role.LOSS) -> list[Detector]:
    """Fresh detectors for one series of ``role``, the enabled ones, always in the same order.

    The order is part of the contract: a series' saved state is a list matched to this one.
    """
    detectors: list[Detector] = []
    if role is Role.LOSS:
        if cfg.divergence.enabled:
            detectors.append(DivergenceDetector(cfg.divergence))
        if cfg.oscillation.enabled:
            detectors.append(OscillationDetector(cfg.oscillation))
        if cfg.plateau.enabled:
            detectors.append(PlateauDetector(cfg.plateau))
        if cfg.drift.enabled:
            detectors.append(DriftDetector(cfg.drift))
    elif role is Role.GRAD_NORM and cfg.grad_norm.enabled:
        detectors.append(DivergenceDetector(cfg.grad_norm))
    elif role is Role.VAL_LOSS and cfg.overfit.enabled:
        detectors.append(OverfitDetector(cfg.overfit))
    return detectors
