"""The aggregation module (paper appendix A.2).

Concatenate the N path embeddings, ``Linear(N*d, d) -> SiLU -> Linear(d, N) -> softmax``, and
take the weighted average of the paths. It is used in training (the aggregate InfoNCE term) and
for the optional aggregate inference mode; single-path inference bypasses it.
"""

from __future__ import annotations

import torch
from torch import nn


class Aggregator(nn.Module):
    def __init__(self, dim: int, num_paths: int) -> None:
        super().__init__()
        self.num_paths = num_paths
        self.mlp = nn.Sequential(nn.Linear(num_paths * dim, dim), nn.SiLU(), nn.Linear(dim, num_paths))

    def forward(self, paths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``paths`` [B, N, d] -> (aggregate [B, d], weights [B, N])."""
        if paths.shape[1] != self.num_paths:
            raise ValueError(f"aggregator built for {self.num_paths} paths, got {paths.shape[1]}")
        dtype = self.mlp[0].weight.dtype
        weights = torch.softmax(self.mlp(paths.flatten(1).to(dtype)).float(), dim=-1)
        aggregate = (weights.unsqueeze(-1).to(paths.dtype) * paths).sum(dim=1)
        return aggregate, weights
