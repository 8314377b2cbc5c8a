"""Fusing the visual and audio streams: concat | xattn | gated | hierarchical (the paper's)."""

from __future__ import annotations

import torch
from torch import nn

from dva.trainer.model.attention import CrossModalAttention, OneWayAttention
from dva.trainer.settings import FUSIONS


class Gate(nn.Module):
    """g = sigmoid(W [v; a]) per frame and channel; out = g * v + (1 - g) * a. [B, T, D] x2 -> [B, T, D]."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.linear(torch.cat([v, a], dim=-1)))
        return g * v + (1 - g) * a


class MLPGate(nn.Module):
    """The released GatedFusion (model_clip.py:419-460): x' = W_x x, y' = W_y y, g = sigmoid(MLP([x'; y'])) with
    MLP = Linear(2D, D), ReLU, Dropout, Linear(D, D); out = ReLU(Linear(g x' + (1 - g) y')), then Dropout."""

    def __init__(self, dim: int, dropout: float = 0.1):
        super().__init__()
        self.first, self.second = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.gate = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.Sigmoid())
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self.first(x), self.second(y)
        g = self.gate(torch.cat([x, y], dim=-1))
        return self.out(g * x + (1 - g) * y)


class Fusion(nn.Module):
    """forward(v [B, T, D], a [B, T, D], v_mask=None, a_mask=None) -> [B, T, D].

    - concat: Linear(2D -> D) of [v; a]
    - xattn: cross-modal attention (alignment), then the concat linear
    - gated: the sigmoid gate alone, no attention
    - hierarchical: cross-modal attention (alignment) then the gate (refinement), the paper's method
    Masks (bool [B, T], True = valid) only matter to the attention kinds. partner visual (hierarchical only): the
    released code's fusion (model_clip.py:495-497): the visual stream attends to the audio one way
    (`OneWayAttention`), then `MLPGate`(attended, v). causal: the attention sees frames <= t only.
    """

    def __init__(self, kind: str, dim: int, heads: int = 4, dropout: float = 0.1, partner: str = "audio", causal: bool = False):
        super().__init__()
        if kind not in FUSIONS:
            raise ValueError(f"Fusion: kind must be one of {', '.join(FUSIONS)}, not {kind!r}")
        if partner != "audio" and kind != "hierarchical":
            raise ValueError(f"Fusion: partner {partner!r} is for the hierarchical fusion, not {kind!r}")
        self.kind, self.partner = kind, partner
        self.one_way = OneWayAttention(dim, heads, dropout, causal) if partner == "visual" else None
        self.gate = MLPGate(dim, dropout) if partner == "visual" else Gate(dim) if kind in ("gated", "hierarchical") else None
        self.attention = CrossModalAttention(dim, heads, dropout, causal) if kind in ("xattn", "hierarchical") and partner == "audio" else None
        self.concat = nn.Linear(2 * dim, dim) if kind in ("concat", "xattn") else None

    def forward(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        v_mask: torch.Tensor | None = None,
        a_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.one_way is not None:
            return self.gate(self.one_way(v, a, a_mask), v)
        if self.attention is not None:
            v, a = self.attention(v, a, v_mask, a_mask)
        if self.gate is not None:
            return self.gate(v, a)
        return self.concat(torch.cat([v, a], dim=-1))
