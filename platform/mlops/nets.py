"""PyTorch modules of the model zoo. Imports torch at module level: import it lazily."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class Normalize(nn.Module):
    """Flattens the input and standardises it with the training split's statistics."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.mean.numel()).to(torch.float32)
        return (x - self.mean) / self.std


def mlp(
    mean: list[float],
    std: list[float],
    n_classes: int,
    hidden_sizes: list[int],
    activation: str,
    dropout: float,
    batch_norm: bool,
) -> nn.Sequential:
    """Normalize → [Linear → (BatchNorm) → activation → (Dropout)]* → Linear (logits)."""
    layers: list[nn.Module] = [Normalize(mean, std)]
    width = len(mean)
    for size in hidden_sizes:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)
