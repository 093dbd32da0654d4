"""The smallest model Hugging Face's ``Trainer`` trains: one linear layer over 4 inputs that
returns its own MSE loss, as the Trainer expects of a model given ``labels``. Nothing is
downloaded. Shared by the Trainer tests and the native-formats job (formats_jobs.py)."""

from __future__ import annotations

import torch


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.net(x), labels)}
