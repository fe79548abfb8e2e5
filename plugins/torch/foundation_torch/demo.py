"""The embedded demo model: a 784-256-10 MLP with fixed-seed weights, built in code (nothing downloaded)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SIGNATURE", "DemoMLP", "build_demo"]

SIGNATURE = {"inputs": {"x": "FP32[-1, 784]"}, "outputs": {"y": "FP32[-1, 10]"}}


class DemoMLP(nn.Module):
    """``y = fc2(relu(fc1(x)))``: MNIST-shaped, batchable (rows are independent)."""

    foundation_signature = SIGNATURE

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fc2(torch.relu(self.fc1(x)))
        return y


def build_demo(seed: int = 0, hidden: int = 256) -> DemoMLP:
    """The demo MLP; the same ``seed`` gives the same weights on every machine."""
    gen = torch.Generator().manual_seed(seed)
    model = DemoMLP(hidden)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) / p.shape[-1] ** 0.5)
    return model.eval()
