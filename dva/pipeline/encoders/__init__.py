"""Encoders, one module per family, registered by name (see `base.register_encoder`).

An encoder answers four things: how to build it (name, weights or path, device), how to
preprocess a batch, how to encode a batch, and its provenance for the store's attrs.
Visual families: clip (open_clip), hf (transformers image backbones), timm (timm models); audio families: ast,
wav2vec2 (wav2vec2, HuBERT, WavLM). A new family is one new module imported below.
`--preset tiny` is one more named configuration: small random-initialised (seeded)
architectures of every family, built by the same code path as the real ones.

Importing this package does not import torch: the family modules import it when they build.
"""

from __future__ import annotations

from dva.pipeline.encoders import ast, clip, hf, timm, wav2vec2  # noqa: F401  (each registers its family)
from dva.pipeline.encoders.base import (
    AudioEncoder,
    VisualEncoder,
    encoder_class,
    families,
    quiet_logging,
    register_encoder,
    weights_sha256,
)

__all__ = [
    "AUDIO_FAMILIES", "PRESETS", "VISUAL_FAMILIES", "AudioEncoder", "VisualEncoder", "build_audio", "build_visual",
    "quiet_logging", "register_encoder", "weights_sha256",
]

VISUAL_FAMILIES = families("visual")  # ("clip", "hf", "timm")
AUDIO_FAMILIES = families("audio")  # ("ast", "wav2vec2")

PRESETS = {
    "default": {
        "clip_model": clip.DEFAULT_CLIP, "clip_pretrained": clip.DEFAULT_PRETRAINED, "ast_model": ast.DEFAULT_AST,
        "hf_model": hf.DEFAULT_HF, "timm_model": timm.DEFAULT_TIMM, "wav2vec2_model": wav2vec2.DEFAULT_WAV2VEC2,
    },
    "tiny": {
        "clip_model": "dva-tiny-clip", "clip_pretrained": None, "ast_model": ast.TINY_AST,
        "hf_model": hf.TINY_HF, "timm_model": timm.TINY_TIMM, "wav2vec2_model": wav2vec2.TINY_WAV2VEC2,
    },
}


def build_visual(family: str, model: str, pretrained: str | None = None, device: str = "cpu", norm: str = "clip") -> VisualEncoder:
    """A frozen image encoder of a registered family: model is a name, hub id or local path; pretrained a
    tag or checkpoint file where the family has them (clip: None = random init, seeded; timm: a weights file,
    None = timm's pretrained weights), else ignored; norm (clip: "clip" or "imagenet" mean and std) likewise."""
    cls = encoder_class("visual", family)
    return cls(model, pretrained, device, norm=norm) if family == "clip" else cls(model, pretrained, device)


def build_audio(family: str, model: str, device: str = "cpu", *, mode: str = "window", window: float = 1.0, hop: float = 0.1, pad: bool = False, layer: str | int = "mean",
                frontend: str = "kaldi") -> AudioEncoder:
    """A frozen audio encoder of a registered family (model: name, hub id or local directory). Options:
    mode (ast: window | tokens), window and hop in seconds (the audio steps), pad (ast window mode),
    layer (wav2vec2: a hidden-state index or "mean"), frontend (ast: kaldi | mel); each family takes those it names and ignores the rest."""
    cls = encoder_class("audio", family)
    given = {"mode": mode, "window": window, "hop": hop, "pad": pad, "layer": layer, "frontend": frontend}
    return cls(model, device, **{name: value for name, value in given.items() if name in cls.options})
