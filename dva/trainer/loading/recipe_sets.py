"""The store's feature sets a recipe expects (dva/recipes): read back from each set's provenance, so `--recipe NAME`
trains on the sets `dva extract --recipe NAME` made, whatever else the store holds."""

from __future__ import annotations

from dva.errors import ConfigError, StoreError


MODEL_KEYS = ("clip_model", "clip_pretrained", "hf_model", "timm_model", "timm_weights", "ast_model", "wav2vec2_model")  # which weights, not how they are fed


def recipe_sets(store_path: str, recipe, modalities, named: dict) -> dict:
    """{"visual_features": NAME, "audio_features": NAME} for each modality of modalities with no set named: the
    store's set that the recipe's [extract] settings make (read back from each set's provenance). A set of the
    same family and preprocessing made by a tiny stand-in (`--preset tiny`) counts when no set of the recipe's own
    weights is there. {} when the store cannot be opened (the fit says why). ConfigError when none fits, or two."""
    import dataclasses

    from dva.pipeline.encoders import PRESETS
    from dva.pipeline.extract_settings import ExtractSettings
    from dva.pipeline.rebuild import FAMILY_FLAGS
    from dva.stores import open_store

    wanted = {f.name: f.default for f in dataclasses.fields(ExtractSettings) if f.default is not dataclasses.MISSING} | recipe.extract
    try:
        with open_store(store_path, mode="r") as store:
            available = store.feature_sets()
    except (StoreError, OSError, FileNotFoundError):
        return {}
    stand_ins = set(PRESETS["tiny"].values())
    chosen = {}
    for modality in modalities:
        if named.get(modality):
            continue
        family_key = f"{modality}_encoder"
        exact, standing = [], []
        for name, info in available.items():
            encoder = info.get("encoder") or {}
            if info.get("modality") != modality or encoder.get("family") not in FAMILY_FLAGS:
                continue
            flags = FAMILY_FLAGS[encoder["family"]](encoder)
            if any(wanted.get(k) != v for k, v in flags.items() if k not in MODEL_KEYS):
                continue
            models = [flags[k] for k in MODEL_KEYS if k in flags]
            if all(wanted.get(k) == flags[k] for k in MODEL_KEYS if k in flags):
                exact.append(name)
            elif any(m in stand_ins for m in models if m is not None):
                standing.append(name)
        found = exact or standing
        if not found:
            prefixes = ("visual_", "clip_", "hf_", "timm_") if modality == "visual" else ("audio_", "ast_", "wav2vec2_")
            shown = ", ".join(f"{k} {v}" for k, v in recipe.extract.items() if k.startswith(prefixes))
            raise ConfigError(f"{store_path} has no {modality} feature set made as recipe {recipe.name} expects ({shown or wanted[family_key]}): "
                              f"add it with dva extract --recipe {recipe.name}, or name one with --{modality}-features")
        if len(found) > 1:
            raise ConfigError(f"{store_path} has {len(found)} {modality} feature sets made as recipe {recipe.name} expects ({', '.join(found)}): choose with --{modality}-features NAME")
        chosen[f"{modality}_features"] = found[0]
    return chosen
