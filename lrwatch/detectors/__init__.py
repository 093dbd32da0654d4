"""Detectors: pure functions of one series, from values to findings.

Each detector module owns its config model, so a knob is defined in exactly one place;
:class:`DetectorsConfig` only gathers them for the daemon's config file, and
:func:`build_detectors` turns it into fresh runtime objects (Vector's config -> ``build()``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from lrwatch.detectors.base import Detector
from lrwatch.detectors.divergence import DivergenceConfig, DivergenceDetector
from lrwatch.detectors.oscillation import OscillationConfig, OscillationDetector
from lrwatch.detectors.plateau import PlateauConfig, PlateauDetector

__all__ = [
    "Detector",
    "DetectorsConfig",
    "DivergenceConfig",
    "DivergenceDetector",
    "OscillationConfig",
    "OscillationDetector",
    "PlateauConfig",
    "PlateauDetector",
    "build_detectors",
]


class DetectorsConfig(BaseModel):
    """The ``detectors:`` section of the config file: one sub-section per detector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    divergence: DivergenceConfig = DivergenceConfig()
    oscillation: OscillationConfig = OscillationConfig()
    plateau: PlateauConfig = PlateauConfig()


def build_detectors(cfg: DetectorsConfig) -> list[Detector]:
    """Fresh detectors for one series, the enabled ones, always in the same order.

    The order is part of the contract: a series' saved state is a list matched to this one.
    """
    detectors: list[Detector] = []
    if cfg.divergence.enabled:
        detectors.append(DivergenceDetector(cfg.divergence))
    if cfg.oscillation.enabled:
        detectors.append(OscillationDetector(cfg.oscillation))
    if cfg.plateau.enabled:
        detectors.append(PlateauDetector(cfg.plateau))
    return detectors
