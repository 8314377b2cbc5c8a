"""A feature set made again from the provenance a store (or a run trained on it) recorded: its encoder record mapped
back to `dva extract`'s settings, and a check that the set those settings make here is the recorded one.

The encoder record (`provenance()` of each family) names the model id or local path, the pretrained tag or file
(timm: the weights file, or none for timm's own),
and the preprocessing the family decides (AST mode, window, hop, padding; the wav2vec2 layer); the set's
preprocessing names the visual source and, for faces read with --crops, the face stage's settings. A set that was
imported (`dva import`) has no encoder to run again.
"""

from __future__ import annotations

import warnings

from dva.errors import DvaWarning, RunError, at_most
from dva.pipeline.extract_settings import ExtractSettings
from dva.stores import set_differences


def _clip(encoder: dict) -> dict:
    return {"visual_encoder": "clip", "clip_model": encoder["model"], "clip_pretrained": encoder.get("pretrained"), "clip_norm": encoder.get("norm", "clip")}


def _hf(encoder: dict) -> dict:
    return {"visual_encoder": "hf", "hf_model": encoder["model"]}


def _timm(encoder: dict) -> dict:
    return {"visual_encoder": "timm", "timm_model": encoder["model"], "timm_weights": encoder.get("weights_file")}


def _ast(encoder: dict) -> dict:
    flags = {"audio_encoder": "ast", "ast_model": encoder["model"], "audio_mode": encoder.get("mode", "window"), "audio_pad": encoder.get("window_input") == "padded",
             "audio_frontend": encoder.get("frontend", "kaldi")}
    return flags | {key: encoder[field] for key, field in (("audio_window", "window"), ("audio_hop", "hop")) if encoder.get(field) is not None}


def _wav2vec2(encoder: dict) -> dict:
    return {"audio_encoder": "wav2vec2", "wav2vec2_model": encoder["model"], "audio_layer": str(encoder.get("layer", "mean")),
            "audio_window": encoder["window"], "audio_hop": encoder["hop"]}


# encoder family as recorded -> the extract settings that build it ("open_clip": what dva 0.1 recorded for CLIP)
FAMILY_FLAGS = {"clip": _clip, "open_clip": _clip, "hf": _hf, "timm": _timm, "ast": _ast, "wav2vec2": _wav2vec2}


def rebuild_settings(name: str, info: dict, **base) -> ExtractSettings:
    """The settings of `dva extract --only MODALITY --name NAME` that make feature set name (info: its provenance as
    recorded) again; base: data, split, out, crops, device and the other run-only fields. RunError when the set
    cannot be made again (imported, or a family this dva does not have)."""
    import torch

    family = (info.get("encoder") or {}).get("family")
    if family not in FAMILY_FLAGS:
        how = "imported (dva import), not made by an encoder" if family == "imported" else f"made by encoder family {family!r}, which this dva does not have"
        raise RunError(f"feature set {name!r} was {how}: it cannot be rebuilt from a video; train on extracted feature sets to use --video")
    preprocessing = info.get("preprocessing") or {}
    flags = FAMILY_FLAGS[family](info["encoder"])
    if info["modality"] == "visual":
        nvjpeg = preprocessing.get("jpeg_decoder") == "nvjpeg" and torch.cuda.is_available()  # elsewhere: the check names the difference
        flags |= {"visual_source": preprocessing.get("visual_source", "auto"), "jpeg_decoder": "cuda" if nvjpeg else "cpu"}
    settings = ExtractSettings(**{**base, **flags, "only": info["modality"], "name": name})
    settings.validate()
    return settings


def check_rebuilt(name: str, recorded: dict, made: dict, source: str) -> None:
    """RunError naming what differs when the set made here (made: its info, as `provenance.feature_sets` gives it) is
    not the set source (a run directory) recorded. Another kind of device (a run trained on GPU features, predicting
    on a laptop) is allowed with a warning: bf16 and fp32 features differ by rounding, not in kind."""
    differences = set_differences(recorded, made, compute=False)
    if differences:
        raise RunError(f"{source}: feature set {name!r} cannot be made again the same way here (recorded != rebuilt: {at_most(differences, 3)})")
    other = set_differences(recorded, made)
    if other:
        warnings.warn(DvaWarning(f"feature set {name!r} is made here on another kind of device than the run's ({at_most(other, 2)})"), stacklevel=2)
