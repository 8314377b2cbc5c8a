"""Encoders, one module per family, chosen by name.

An encoder answers four things: how to build it (name, weights or path, device), how to
preprocess a batch, how to encode a batch, and its provenance for the store's attrs.
`--preset tiny` is one more named configuration: small random-initialised (seeded)
architectures built by the same code path as the real ones.
"""

from __future__ import annotations

import contextlib
import logging

PRESETS = {
    "default": {"clip_model": "ViT-B-32", "clip_pretrained": "openai", "ast_model": "MIT/ast-finetuned-audioset-10-10-0.4593"},
    "tiny": {"clip_model": "dva-tiny-clip", "clip_pretrained": None, "ast_model": "dva-tiny-ast"},
}


def build_visual(model: str, pretrained: str | None, device: str = "cpu"):
    """An open_clip image encoder: model name, pretrained tag or checkpoint path (None = random init)."""
    from dva.pipeline.encoders.clip import ClipEncoder

    return ClipEncoder(model, pretrained, device)


def build_audio(model: str, device: str = "cpu", mode: str = "window", window: float = 1.0, hop: float = 0.1, pad: bool = False):
    """An AST audio encoder: hub id, local directory or 'dva-tiny-ast'; pad: window mode pads each window to max_length."""
    from dva.pipeline.encoders.ast import AstEncoder

    return AstEncoder(model, device, mode, window, hop, pad)


def weights_sha256(module) -> str:
    """sha256 over every tensor of the state dict, in key order: the identity of the weights."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def quiet_logging():
    """Silence library logging while loading weights: open_clip warns about every random-initialised
    model (the tiny preset's point) and hub clients log each failed download before raising, which
    dva reports itself in one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)
