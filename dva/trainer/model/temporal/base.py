"""The registry of temporal encoders and the per-frame projection every kind starts with."""

from __future__ import annotations

from typing import Callable

from torch import nn

from dva.trainer.plugins import load_temporal, plugin_names

_KINDS: dict[str, Callable[..., nn.Module]] = {}


def register_temporal(name: str):
    """Class decorator: the temporal encoder `--temporal name` builds, as cls(in_dim, settings)."""

    def add(cls):
        _KINDS[name] = cls
        return cls

    return add


def build_temporal(kind: str, in_dim: int, settings) -> nn.Module:
    """The temporal encoder of this kind for features of in_dim, shaped by `ModelSettings`: a kind registered here, or
    one an installed package registers in the entry-point group `dva.temporal` (imported now, on first use)."""
    if kind in _KINDS:
        return _KINDS[kind](in_dim, settings)
    if kind not in plugin_names(tuple(_KINDS)):
        raise ValueError(f"temporal: kind must be one of {', '.join(registered())}, not {kind!r}")
    return load_temporal(kind)(in_dim, settings)


def registered() -> tuple[str, ...]:
    """Every kind --temporal takes: registered here, then those of installed packages (by name; nothing imported)."""
    return (*_KINDS, *plugin_names(tuple(_KINDS)))


def projection(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """Linear(in_dim, hidden) + LayerNorm + GELU + dropout, per frame."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
