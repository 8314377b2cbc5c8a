"""The paper's temporal encoder: a frame-wise projection, then a GRU over the window."""

from __future__ import annotations

import torch
from torch import nn

from dva.trainer.model.temporal.base import projection, register_temporal


@register_temporal("gru")
class GRUEncoder(nn.Module):
    """[B, T, in_dim] -> [B, T, hidden].

    `base.projection` per frame, then an `nn.GRU` (batch first, settings.layers layers). A bidirectional
    GRU's two directions [B, T, 2 * hidden] are merged back to `hidden` by a linear layer, so everything
    downstream sees the same width either way. The mask is not used: masked frames arrive zeroed, as the
    paper's GRU saw them.
    """

    def __init__(self, in_dim: int, settings):
        super().__init__()
        hidden, layers, dropout = settings.hidden, settings.layers, settings.dropout
        self.project = projection(in_dim, hidden, dropout)
        # nn.GRU warns when given dropout with a single layer: it only acts between layers.
        self.gru = nn.GRU(
            hidden, hidden, num_layers=layers, batch_first=True, bidirectional=settings.bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.merge = nn.Linear(2 * hidden, hidden) if settings.bidirectional else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, in_dim] -> [B, T, hidden]."""
        hidden = self.project(x)
        # The GRU runs in float32 under autocast: bf16 RNN kernels are missing from older cuDNN
        # builds, and this small GRU costs little next to attention.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out, _ = self.gru(hidden.float())
        return self.merge(out)
