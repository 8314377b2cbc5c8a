"""Temporal encoders, one module per kind, registered by name: [B, T, in_dim] -> [B, T, hidden].

The contract every kind keeps: built as cls(in_dim, settings) from `ModelSettings`; a per-frame projection
(`base.projection`) of the features, then the kind's model over the window; `forward(x, mask=None)` with
x [B, T, in_dim] and mask bool [B, T] (True = the frame's feature is valid; None = all valid; masked
frames arrive zeroed); runs under autocast on a GPU. A new kind is one module that registers itself with
`base.register_temporal` and is imported below; another package's kind is an entry point in the group
`dva.temporal` (name = "module:Class", see `dva.trainer.plugins` and examples/dva-mamba), imported when first built.
"""

from __future__ import annotations

from dva.trainer.model.temporal import gru, tcn, transformer  # noqa: F401  (each registers its kind)
from dva.trainer.model.temporal.base import build_temporal, registered

__all__ = ["build_temporal", "registered"]
