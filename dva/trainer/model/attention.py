"""Cross-modal attention: each stream attends to the other (the alignment step of the fusion); or, as the authors'
released code does, the visual stream alone attends to the audio (`OneWayAttention`)."""

from __future__ import annotations

import torch
from torch import nn


def key_masks(query_length: int, context_mask: torch.Tensor | None, causal: bool, heads: int):
    """(key_padding_mask, attn_mask, empty) for nn.MultiheadAttention from a context mask bool [B, T] (True = valid):
    causal: query i sees keys j <= i only (one [B * heads, T, T] mask). empty bool [B, T] (or [B] without causal, None
    without a mask): queries with no key to see, which are let see every key (softmax over nothing is NaN) and whose
    attention output the caller zeroes."""
    if not causal:
        if context_mask is None:
            return None, None, None
        padding = ~context_mask.bool()  # nn.MultiheadAttention: True = ignore this key
        empty = padding.all(dim=1)
        return padding & ~empty[:, None], None, empty[:, None]
    length = context_mask.shape[1] if context_mask is not None else query_length
    device = context_mask.device if context_mask is not None else None
    future = torch.ones(query_length, length, dtype=torch.bool, device=device).triu(1)
    blocked = future[None] if context_mask is None else future[None] | ~context_mask.bool()[:, None, :]
    empty = blocked.all(dim=-1)  # [B or 1, T]
    blocked = blocked & ~empty[..., None]
    if context_mask is None:
        return None, blocked[0], None
    return None, blocked.repeat_interleave(heads, dim=0), empty


class _Attend(nn.Module):
    """One direction: query stream attends to a context stream; residual + LayerNorm (post-norm)."""

    def __init__(self, dim: int, heads: int, dropout: float, causal: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.heads, self.causal = heads, causal

    def attend(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        padding, blocked, empty = key_masks(query.shape[1], context_mask, self.causal, self.heads)
        attended, _ = self.attn(query, context, context, key_padding_mask=padding, attn_mask=blocked, need_weights=False)
        if empty is not None:
            # A query with nothing to attend to keeps its own features (residual only).
            attended = attended.masked_fill(empty[..., None], 0.0)
        return attended

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        return self.norm(query + self.drop(self.attend(query, context, context_mask)))


class CrossModalAttention(nn.Module):
    """forward(v [B, T, D], a [B, T, D], v_mask, a_mask) -> (v_att [B, T, D], a_att [B, T, D]).

    v_att: the visual stream attending to the audio stream (queries v, keys/values a), and a_att the
    other way round, each with a residual connection and LayerNorm. Masks are bool [B, T],
    True = valid; masked keys get no attention weight. A row whose keys are all masked gets no
    attention update (LayerNorm of its own features), never NaN. causal: frame t attends to frames <= t only.
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1, causal: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"CrossModalAttention: dim {dim} is not divisible by heads {heads}")
        self.visual_to_audio = _Attend(dim, heads, dropout, causal)
        self.audio_to_visual = _Attend(dim, heads, dropout, causal)

    def forward(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        v_mask: torch.Tensor | None = None,
        a_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.visual_to_audio(v, a, a_mask), self.audio_to_visual(a, v, v_mask)


class OneWayAttention(_Attend):
    """The released CrossModalAttention (model_clip.py:382-413): visual queries attend to the audio, then
    x = LayerNorm(v + attended), out = LayerNorm(x + FFN(x)), FFN = Linear(D, 4D), ReLU, Dropout, Linear(4D, D).
    forward(v [B, T, D], a [B, T, D], a_mask) -> [B, T, D]; masks and causal as `CrossModalAttention`."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1, causal: bool = False):
        if dim % heads:
            raise ValueError(f"OneWayAttention: dim {dim} is not divisible by heads {heads}")
        super().__init__(dim, heads, dropout, causal)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(query + self.attend(query, context, context_mask))  # model_clip.py:410 (no dropout on the residual)
        return self.norm2(x + self.ffn(x))
