"""`dva fit --temporal mamba`: a selective state-space (Mamba) encoder over each modality's window, built on transformers'
`MambaModel` (the maintained implementation: mamba-ssm's and causal-conv1d's CUDA kernels when they are installed,
its pure-PyTorch scan otherwise).

dva finds it through the entry point `mamba = "dva_mamba:MambaTemporal"` in the group `dva.temporal` and builds it as
every temporal encoder is built: MambaTemporal(in_dim, settings), settings being dva's model settings.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import MambaConfig, MambaModel

__all__ = ["MambaTemporal"]
__version__ = "0.1.0"

STATE_SIZE, EXPAND, CONV_KERNEL = 16, 2, 4  # the Mamba paper's (and MambaConfig's) defaults


class MambaTemporal(nn.Module):
    """[B, T, in_dim] -> [B, T, hidden].

    A linear projection of each frame (then dropout) gives `MambaModel` its inputs_embeds; settings.temporal_layers
    Mamba blocks of width settings.hidden (state 16, expansion 2, causal convolution of 4 frames) run over the window.
    Causal: frame t sees frames up to t; with settings.bidirectional a second Mamba reads the window backwards and a
    linear layer merges the two directions back to `hidden`, as dva's GRU does. Masked frames (mask False) arrive zeroed
    and are passed as MambaModel's attention_mask, which zeroes them again before each block's projection and scan, so
    they never act as features (the state carries across them).
    """

    def __init__(self, in_dim: int, settings):
        super().__init__()
        hidden = settings.hidden
        config = MambaConfig(
            vocab_size=1,  # the token embedding is never used (inputs_embeds): kept minimal
            hidden_size=hidden, num_hidden_layers=settings.temporal_layers,
            state_size=STATE_SIZE, expand=EXPAND, conv_kernel=CONV_KERNEL, use_cache=False,
        )
        self.project = nn.Sequential(nn.Linear(in_dim, hidden), nn.Dropout(settings.dropout))
        self.forward_mamba = MambaModel(config)
        self.backward_mamba = MambaModel(config) if settings.bidirectional else None
        self.merge = nn.Linear(2 * hidden, hidden) if settings.bidirectional else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, in_dim], mask bool [B, T] or None (all valid) -> [B, T, hidden]."""
        h = self.project(x)
        keep = torch.ones(h.shape[:2], dtype=h.dtype, device=h.device) if mask is None else mask.to(h.dtype)
        out = self._run(self.forward_mamba, h, keep)
        if self.backward_mamba is None:
            return out
        back = self._run(self.backward_mamba, h.flip(1), keep.flip(1)).flip(1)
        return self.merge(torch.cat([out, back], dim=-1))

    @staticmethod
    def _run(mamba: MambaModel, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return mamba(inputs_embeds=h * keep[..., None], attention_mask=keep, use_cache=False, return_dict=True).last_hidden_state
