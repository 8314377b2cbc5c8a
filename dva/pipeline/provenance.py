"""The encoders' identity: which encoders a run's settings build, and the feature sets they make as the store
records them (provenance: model, weights, preprocessing), so a store's set is only ever continued by the same."""

from __future__ import annotations

from pathlib import Path

from dva import __version__
from dva.data.layout import CROPS_FOLDER, child_folder
from dva.errors import StoreError, at_most
from dva.pipeline.media import SAMPLE_RATE
from dva.pipeline.extract_settings import ExtractSettings
from dva.stores import set_differences


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_encoders(settings: ExtractSettings, device: str):
    """(visual encoder, audio encoder) of the settings' families on device, each family reading its own model
    field; None for a modality left out by --only."""
    from dva.pipeline.encoders import build_audio, build_visual

    visual_model = {"clip": settings.clip_model, "hf": settings.hf_model, "timm": settings.timm_model}
    visual_weights = {"clip": settings.clip_pretrained, "timm": settings.timm_weights}  # a tag or file, in the families that take one
    audio_model = {"ast": settings.ast_model, "wav2vec2": settings.wav2vec2_model}
    visual = audio = None
    if "visual" in settings.modalities:
        family = settings.visual_encoder
        visual = build_visual(family, visual_model.get(family, ""), visual_weights.get(family), device, norm=settings.clip_norm)
    if "audio" in settings.modalities:
        audio = build_audio(
            settings.audio_encoder, audio_model.get(settings.audio_encoder, ""), device,
            mode=settings.audio_mode, window=settings.audio_window, hop=settings.audio_hop, pad=settings.audio_pad, layer=settings.audio_layer,
            frontend=settings.audio_frontend,
        )
    return visual, audio


ENCODER_FIELDS = (
    "only", "name", "visual_encoder", "audio_encoder", "clip_model", "clip_pretrained", "clip_norm", "hf_model", "timm_model", "timm_weights", "ast_model", "wav2vec2_model",
    "audio_mode", "audio_window", "audio_hop", "audio_pad", "audio_layer", "audio_frontend",
)


def encoder_key(settings: ExtractSettings) -> tuple:
    """The settings that decide which encoders `build_encoders` makes (a Dask worker builds them once per key)."""
    return tuple(getattr(settings, name) for name in ENCODER_FIELDS)


def resolve_visual_source(settings: ExtractSettings) -> str:
    if settings.visual_source != "auto":
        return settings.visual_source
    if settings.crops is not None:
        return "crops"
    return "crops" if child_folder(Path(settings.data), "cropped_aligned") is not None else "video"  # any case, as scan finds it


COMPUTE_DTYPES = {"cpu": "float32", "cuda": "bfloat16"}  # what the encoders compute in on each kind of device


def compute_record(device: str | None) -> dict:
    """{"device": cpu | cuda, "compute_dtype"} of a set computed on device (None: this machine's default)."""
    kind = str(device or default_device()).split(":")[0]
    return {"device": kind, "compute_dtype": COMPUTE_DTYPES.get(kind, "float32")}


def feature_sets(settings: ExtractSettings, visual, audio) -> dict[str, dict]:
    """{name: info} of the feature sets this run makes: what decides whether a store's set can take more tracks.
    The device is settings.device (a run's workers take the kind the run resolved), not the encoders': the run
    itself builds them on the CPU when Dask workers compute."""
    sets = {}
    for modality, encoder in (("visual", visual), ("audio", audio)):
        if encoder is None:
            continue
        if modality == "visual":
            preprocessing = {"visual_source": resolve_visual_source(settings)}
            if settings.crops is not None:  # faces from elsewhere (another size, another aligner): a set of their own
                preprocessing["crops"] = crops_provenance(settings.crops)
            framing = crops_framing(settings) if preprocessing["visual_source"] == "crops" else None
            if framing is not None:  # where the face sits in the crops: what predict --video frames a recording's crops by
                preprocessing["framing"] = framing
            if settings.jpeg_decoder == "cuda":  # nvJPEG's pixels may differ from libjpeg-turbo's by a level or two
                preprocessing["jpeg_decoder"] = "nvjpeg"
        else:
            preprocessing = {"audio_decoder": "PyAV", "audio_sample_rate": SAMPLE_RATE, "audio_channels": "mono"}
        preprocessing.update(compute_record(settings.device))
        provenance = encoder.provenance()
        name = settings.name or encoder.set_name()
        sets[name] = {"modality": modality, "dim": int(encoder.dim), "encoder": provenance, "preprocessing": preprocessing, "dva_version": __version__}
    return sets


def set_names(settings: ExtractSettings, visual, audio) -> dict[str, str]:
    """{modality: set name} of the sets this run makes (what a worker needs, without feature_sets' provenance work)."""
    return {modality: settings.name or encoder.set_name() for modality, encoder in (("visual", visual), ("audio", audio)) if encoder is not None}


def crops_framing(settings: ExtractSettings) -> dict | None:
    """The framing of the crops a visual set reads (--crops CROPS/cropped_aligned or the data's own), as their
    records say or learned from them (dva/faces/template.py); None when it cannot be known (no dlib, no faces)."""
    from dva.faces.template import crops_framing as framing_of

    root = Path(settings.crops).resolve() / CROPS_FOLDER if settings.crops is not None else child_folder(Path(settings.data), CROPS_FOLDER)
    return None if root is None else framing_of(root)


def crops_provenance(crops: str) -> dict:
    """Where a set's faces came from with --crops: the folder, and the `dva faces` settings that made them (None
    when they were made another way)."""
    from dva.faces.stage import crops_settings

    root = Path(crops).resolve() / CROPS_FOLDER
    return {"folder": str(root), "faces": crops_settings(root)}


def check_compatible(existing: dict[str, dict], wanted: dict[str, dict], store_path: str, allow_other_device: bool = False) -> list[str]:
    """A set name already in the store must mean the same encoder settings, computed on the same kind of device:
    refuse otherwise, saying exactly what differs. allow_other_device: another device is allowed; returns one
    warning per set continued so (the store's record keeps the device the set was begun on)."""
    warnings = []
    for name, info in wanted.items():
        if name not in existing:
            continue
        differences = set_differences(existing[name], info, compute=not allow_other_device)
        if differences:
            shown = at_most(differences, 3)
            hint = "pass the same flags, or --name another set" + ("" if allow_other_device or set_differences(existing[name], info, compute=False) else " (or --allow-other-device)")
            raise StoreError(f"{store_path} already has a feature set {name!r} made with other settings (store != this run: {shown}): {hint}")
        other = set_differences(existing[name], info)
        if other:
            warnings.append(f"feature set {name!r} was begun otherwise ({at_most(other, 2)}); this run continues it (--allow-other-device)")
    return warnings
