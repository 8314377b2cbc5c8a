"""Which feature sets are CLIP, and the names of a dva 0.1 store's two sets: the same rules the encoders use
(`set_name`), applied to recorded provenance, so an upgraded store and a new extraction agree on names."""

from __future__ import annotations

CLIP_FAMILIES = ("clip", "open_clip")  # dva 0.1 recorded the library's name


def is_clip(provenance: dict) -> bool:
    """Whether a set's encoder is a CLIP image tower (whose text tower the prompt head can use)."""
    return provenance.get("family") in CLIP_FAMILIES


def format_1_set_names(attrs: dict) -> dict[str, str]:
    """{"visual": name, "audio": name} for the CLIP and AST encoders of a dva 0.1 store's root attrs (or a run trained on one)."""
    from dva.pipeline.encoders.ast import AstEncoder
    from dva.pipeline.encoders.clip import ClipEncoder

    return {"visual": ClipEncoder.name_for(attrs.get("visual_encoder") or {}), "audio": AstEncoder.name_for(attrs.get("audio_encoder") or {})}
