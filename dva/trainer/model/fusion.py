"""Fusing the visual and audio streams: concat | xattn | gated | hierarchical (the paper's)."""

from __future__ import annotations

import torch
from torch import nn

from dva.trainer.model.attention import CrossModalAttention
from dva.trainer.settings import FUSIONS


class Gate(nn.Module):
    """g = sigmoid(W [v; a]) per frame and channel; out = g * v + (1 - g) * a. [B, T, D] x2 -> [B, T, D]."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.linear(torch.cat([v, a], dim=-1)))
        return g * v + (1 - g) * a


class Fusion(nn.Module):
    """forward(v [B, T, D], a [B, T, D], v_mask=None, a_mask=None) -> [B, T, D].

    - concat: Linear(2D -> D) of [v; a]
    - xattn: cross-modal attention (alignment), then the concat linear
    - gated: the sigmoid gate alone, no attention
    - hierarchical: cross-modal attention (alignment) then the gate (refinement), the paper's method
    Masks (bool [B, T], True = valid) only matter to the attention kinds.
    """

    def __init__(self, kind: str, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if kind not in FUSIONS:
            raise ValueError(f"Fusion: kind must be one of {', '.join(FUSIONS)}, not {kind!r}")
        self.kind = kind
        self.attention = CrossModalAttention(dim, heads, dropout) if kind in ("xattn", "hierarchical") else None
        self.gate = Gate(dim) if kind in ("gated", "hierarchical") else None
        self.concat = nn.Linear(2 * dim, dim) if kind in ("concat", "xattn") else None

    def forward(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        v_mask: torch.Tensor | None = None,
        a_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.attention is not None:
            v, a = self.attention(v, a, v_mask, a_mask)
        if self.gate is not None:
            return self.gate(v, a)
        return self.concat(torch.cat([v, a], dim=-1))
