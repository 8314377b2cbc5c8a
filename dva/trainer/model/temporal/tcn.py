"""A temporal convolutional network: residual blocks of dilated 1-D convolutions over the window.

Non-causal by default (each frame sees as far back as ahead, the padding is symmetric), as ABAW's top teams run it on
whole windows; causal (settings.causal) as the authors' released code runs it: each convolution padded by
(kernel - 1) x dilation and that many outputs chomped off its end, so frame t sees frames <= t only
(model_clip.py:294-343). Dilations 1, 2, 4, ... one per level, and as many levels as make the receptive field cover
the training window (`receptive_field`, `levels_for`), or settings.tcn_levels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from dva.trainer.model.temporal.base import projection, register_temporal


def receptive_field(levels: int, kernel: int) -> int:
    """Frames one output sees: two convolutions of `kernel` taps per level, level i dilated 2**i, so
    1 + 2 (kernel - 1) (2**levels - 1); centred, (field - 1) / 2 frames on each side."""
    return 1 + 2 * (kernel - 1) * (2**levels - 1)


def levels_for(seq_len: int, kernel: int) -> int:
    """The fewest levels (at least one) whose receptive field is at least seq_len frames."""
    levels = 1
    while receptive_field(levels, kernel) < seq_len:
        levels += 1
    return levels


class Block(nn.Module):
    """Two weight-normed dilated convolutions (GELU, dropout after each) and a residual connection. Every
    convolution sees zeros at invalid frames, as it sees zeros in the padding past the window's ends."""

    def __init__(self, hidden: int, kernel: int, dilation: int, dropout: float, causal: bool = False):
        super().__init__()
        pad = dilation * (kernel - 1) if causal else dilation * (kernel - 1) // 2
        self.chomp = pad if causal else 0  # causal: padded both ends, the outputs that saw the future cut off
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(hidden, hidden, kernel, dilation=dilation, padding=pad)) for _ in range(2)
        )
        self.act, self.drop = nn.GELU(), nn.Dropout(dropout)

    def conv(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = conv(x)
        return y[..., : y.shape[-1] - self.chomp] if self.chomp else y

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, hidden, T], keep [B, 1, T] (1 = valid frame) -> [B, hidden, T]."""
        x = x * keep
        y = x
        for conv in self.convs:
            y = self.drop(self.act(self.conv(conv, y * keep)))
        return self.act(x + y)


@register_temporal("tcn")
class TCNEncoder(nn.Module):
    """[B, T, in_dim] -> [B, T, hidden]: `base.projection` per frame, then settings.tcn_levels (0: `levels_for(
    settings.seq_len, settings.tcn_kernel)`) residual blocks, dilations 1, 2, 4, ..., causal when settings.causal;
    frames where mask is False are zeroed at every convolution's input, so they never act as features."""

    def __init__(self, in_dim: int, settings):
        super().__init__()
        hidden, kernel = settings.hidden, settings.tcn_kernel
        self.project = projection(in_dim, hidden, settings.dropout)
        causal = getattr(settings, "causal", False)
        self.levels = getattr(settings, "tcn_levels", 0) or levels_for(settings.seq_len, kernel)
        self.field = receptive_field(self.levels, kernel)
        self.blocks = nn.ModuleList(Block(hidden, kernel, 2**level, settings.dropout, causal) for level in range(self.levels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, in_dim], mask bool [B, T] or None (all valid) -> [B, T, hidden]."""
        h = self.project(x).transpose(1, 2)
        keep = (torch.ones_like(h[:, :1]) if mask is None else mask[:, None, :]).to(h.dtype)
        for block in self.blocks:
            h = block(h, keep)
        return h.transpose(1, 2)
