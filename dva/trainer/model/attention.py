"""Cross-modal attention: each stream attends to the other (the alignment step of the fusion)."""

from __future__ import annotations

import torch
from torch import nn


class _Attend(nn.Module):
    """One direction: query stream attends to a context stream; residual + LayerNorm (post-norm)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        padding = None
        empty = None
        if context_mask is not None:
            padding = ~context_mask.bool()  # nn.MultiheadAttention: True = ignore this key
            empty = padding.all(dim=1)  # rows with no valid key would softmax over nothing -> NaN
            padding = padding & ~empty[:, None]
        attended, _ = self.attn(query, context, context, key_padding_mask=padding, need_weights=False)
        if empty is not None:
            # A row with nothing to attend to keeps its own features (residual only).
            attended = attended.masked_fill(empty[:, None, None], 0.0)
        return self.norm(query + self.drop(attended))


class CrossModalAttention(nn.Module):
    """forward(v [B, T, D], a [B, T, D], v_mask, a_mask) -> (v_att [B, T, D], a_att [B, T, D]).

    v_att: the visual stream attending to the audio stream (queries v, keys/values a), and a_att the
    other way round, each with a residual connection and LayerNorm. Masks are bool [B, T],
    True = valid; masked keys get no attention weight. A row whose keys are all masked gets no
    attention update (LayerNorm of its own features), never NaN.
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"CrossModalAttention: dim {dim} is not divisible by heads {heads}")
        self.visual_to_audio = _Attend(dim, heads, dropout)
        self.audio_to_visual = _Attend(dim, heads, dropout)

    def forward(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        v_mask: torch.Tensor | None = None,
        a_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.visual_to_audio(v, a, a_mask), self.audio_to_visual(a, v, v_mask)
