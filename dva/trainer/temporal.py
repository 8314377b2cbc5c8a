"""Per-modality temporal encoder: a frame-wise projection, then a GRU over the window."""

from __future__ import annotations

import torch
from torch import nn


class TemporalEncoder(nn.Module):
    """[B, T, in_dim] -> [B, T, hidden].

    Linear(in_dim, hidden) + LayerNorm + GELU + dropout per frame, then an `nn.GRU` (batch first).
    A bidirectional GRU's two directions [B, T, 2 * hidden] are merged back to `hidden` by a linear
    layer, so everything downstream sees the same width either way.
    """

    def __init__(self, in_dim: int, hidden: int, layers: int = 1, bidirectional: bool = False, dropout: float = 0.1):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
        # nn.GRU warns when given dropout with a single layer: it only acts between layers.
        self.gru = nn.GRU(
            hidden, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.merge = nn.Linear(2 * hidden, hidden) if bidirectional else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, in_dim] -> [B, T, hidden]."""
        hidden = self.project(x)
        # The GRU runs in float32 under autocast: bf16 RNN kernels are missing from older cuDNN
        # builds, and this small GRU costs little next to attention.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out, _ = self.gru(hidden.float())
        return self.merge(out)
