"""A Transformer encoder over the window: pre-norm self-attention layers, sinusoidal positions computed for
whatever length comes (a model trained on 300-frame windows runs on any other length), invalid frames masked
as keys."""

from __future__ import annotations

import math

import torch
from torch import nn

from dva.trainer.model.temporal.base import projection, register_temporal


def sinusoids(length: int, width: int, device=None) -> torch.Tensor:
    """float32 [length, width]: sin/cos of position x 10000^(-2i/width) (Vaswani et al.), for any length."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: width // 2])
    return table


@register_temporal("transformer")
class TransformerEncoder(nn.Module):
    """[B, T, in_dim] -> [B, T, hidden]: `base.projection` per frame plus sinusoidal positions, then
    settings.temporal_layers pre-norm encoder layers (settings.heads heads, a 4 x hidden GELU feed-forward)
    and a final LayerNorm. Frames where mask is False are never attended to; a window without a valid frame
    attends over all of its (zeroed) frames instead, so its outputs stay finite. settings.causal: a causal mask, frame t
    sees frames <= t only."""

    def __init__(self, in_dim: int, settings):
        super().__init__()
        hidden = settings.hidden
        self.project = projection(in_dim, hidden, settings.dropout)
        layer = nn.TransformerEncoderLayer(
            hidden, settings.heads, dim_feedforward=4 * hidden, dropout=settings.dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        # nested tensors would skip padded frames in eval only: the same arithmetic in training and evaluation instead
        self.layers = nn.TransformerEncoder(layer, settings.temporal_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.heads, self.causal = settings.heads, getattr(settings, "causal", False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, in_dim], mask bool [B, T] or None (all valid) -> [B, T, hidden]."""
        h = self.project(x)
        h = h + sinusoids(h.shape[1], h.shape[2], h.device).to(h.dtype)
        if self.causal:  # frame t attends to the valid frames <= t, and always to itself (no row is empty)
            length = h.shape[1]
            blocked = torch.ones(length, length, dtype=torch.bool, device=h.device).triu(1)[None]
            if mask is not None:
                blocked = (blocked | ~mask.bool()[:, None, :]) & ~torch.eye(length, dtype=torch.bool, device=h.device)
                blocked = blocked.repeat_interleave(self.heads, dim=0)
            return self.norm(self.layers(h, mask=blocked if mask is not None else blocked[0]))
        padding = None
        if mask is not None:
            padding = ~mask.bool()
            padding = padding & ~padding.all(dim=1, keepdim=True)  # softmax over no key at all is NaN
        return self.norm(self.layers(h, src_key_padding_mask=padding))
