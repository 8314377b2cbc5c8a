"""Feature-set names from an encoder's provenance: one rule, used when extracting and when a dva 0.1 store
(or a run trained on one) is read, so the same encoder always makes the same name."""

from __future__ import annotations

from pathlib import PurePath

DEFAULT_AST = "MIT/ast-finetuned-audioset-10-10-0.4593"
CLIP_FAMILIES = ("clip", "open_clip")  # provenance says open_clip: the library that built it


def is_clip(provenance: dict) -> bool:
    """Whether a set's encoder is a CLIP image tower (whose text tower the prompt head can use)."""
    return provenance.get("family") in CLIP_FAMILIES


def safe_name(text: str) -> str:
    """Only letters, digits, '.', '_' and '-' (a group name in every store backend)."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def set_name(provenance: dict) -> str:
    """clip-ViT-B-32-openai, ast-window, ast-tokens, ast-<model>-window-padded, ..."""
    family, model = provenance.get("family", "encoder"), str(provenance.get("model"))
    if family in CLIP_FAMILIES:
        pretrained = provenance.get("pretrained") or "random"
        return safe_name(f"clip-{model}-{PurePath(str(pretrained)).name}")
    if family == "ast":
        named = "" if model == DEFAULT_AST else f"{PurePath(model).name}-"
        padded = "-padded" if provenance.get("window_input") == "padded" else ""
        return safe_name(f"ast-{named}{provenance.get('mode', 'window')}{padded}")
    return safe_name(f"{family}-{PurePath(model).name}")


def format_1_set_names(attrs: dict) -> dict[str, str]:
    """{"visual": name, "audio": name} for the two encoders of a dva 0.1 store's root attrs (or a run trained on one)."""
    return {"visual": set_name(attrs.get("visual_encoder") or {}), "audio": set_name(attrs.get("audio_encoder") or {})}
