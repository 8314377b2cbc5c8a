"""Stores written by dva 0.1 (format 1: one visual and one audio set at each track's root, the encoders in
the root attrs): the two feature sets they hold, and `dva upgrade`, which rewrites one in place as format 2
through the public Store API."""

from __future__ import annotations

from pathlib import Path

from dva.errors import StoreError
from dva.stores.attrs import FORMAT, MODALITIES, SET_ARRAYS, TRACK_BOOKKEEPING, check_set_name, complete_sets
from dva.stores.base import Store
from dva.stores.open import open_store

FORMAT_1_ARRAYS = {"visual": ("visual", "visual_mask"), "audio": ("audio", "audio_time")}  # dva 0.1: one set per modality at the track root
FORMAT_1_NAMES = (*FORMAT_1_ARRAYS["visual"], *FORMAT_1_ARRAYS["audio"])


def format_1_sets(attrs: dict, names: dict[str, str]) -> dict[str, dict]:
    """The two feature sets ({name: info}) of a dva 0.1 store's root attrs (or of a run trained on one)."""
    preprocessing = attrs.get("preprocessing") or {}
    sets = {}
    for modality in MODALITIES:
        encoder = attrs.get(f"{modality}_encoder") or {}
        own = {k: v for k, v in preprocessing.items() if k.startswith(modality)}
        sets[check_set_name(names[modality])] = {"modality": modality, "dim": encoder.get("dim"), "encoder": encoder, "preprocessing": own, "upgraded_from": "format 1"}
    return sets


def upgrade(path: str | Path, names: dict[str, str], progress: bool = True) -> int:
    """Turn a dva 0.1 store (format 1: one visual and one audio set at each track's root) into format 2, in
    place: names maps "visual"/"audio" to the new feature-set names. Resumable: a track already upgraded is
    left alone, and the root attrs change last. Returns the number of tracks upgraded."""
    from tqdm import tqdm

    with open_store(path, "a") as store:
        attrs = store.attrs
        if store.layout != 1:
            raise StoreError(f"{path} is not a dva 0.1 store (format {store.layout}): nothing to upgrade")
        preprocessing = attrs.get("preprocessing") or {}
        sets = format_1_sets(attrs, names)
        jobs = [(split, track, a) for split in store.splits() for track, a in store.track_index(split).items()]
        upgraded = 0
        for split, track, track_attrs in tqdm(jobs, desc="upgrade", unit="track", disable=not progress):
            upgraded += _upgrade_track(store, split, track, track_attrs, sets)
        timeline = {k: v for k, v in preprocessing.items() if not k.startswith(("visual", "audio"))}
        store.set_attrs({"format": FORMAT, "feature_sets": sets, "timeline": timeline})
        store.delete_attrs(("visual_encoder", "audio_encoder", "preprocessing"))
    return upgraded


def _upgrade_track(store: Store, split: str, track: str, track_attrs: dict, sets: dict[str, dict]) -> int:
    """Rewrite one track as format 2 (its arrays into the two sets, or its failure as both sets failed);
    1 when done now, 0 when an earlier upgrade had done it."""
    present = set(store.array_names(split, track))
    leftovers = present & set(FORMAT_1_NAMES)
    if set(sets) <= complete_sets(track_attrs) or (isinstance(track_attrs.get("complete"), dict) and not leftovers):
        for name in leftovers:  # an earlier upgrade stopped after writing the sets
            store.delete_array(split, track, name)
        return 0
    own = {k: v for k, v in track_attrs.items() if k not in TRACK_BOOKKEEPING}
    # stopped inside this track's upgrade (sets begun, "set_rows" written below): its old arrays are all still there
    begun = "set_rows" in track_attrs and leftovers == set(FORMAT_1_NAMES)
    if (track_attrs.get("complete") is True or begun) and "frame_time" in present:
        old = {name: store.read(split, track, name) for name in present}
        # the old arrays go last: a crash before the attrs below leaves the track readable as format 1
        store.set_track_attrs(split, track, {"rows": int(old["frame_time"].shape[0]), "labelled": "labels" in old, "valid_labels": int(track_attrs.get("valid_labels") or 0), "error": {}, "done_at": {}, "set_rows": {}})
        for name, info in sets.items():
            data_key, extra_key = FORMAT_1_ARRAYS[info["modality"]]
            store.write_set(split, track, name, info["modality"], dict(zip(SET_ARRAYS[info["modality"]], (old[data_key], old[extra_key]))))
        for name in FORMAT_1_NAMES:
            store.delete_array(split, track, name)
    else:
        reason = track_attrs.get("error") or "incomplete when dva 0.1 stopped"
        store.set_track_attrs(split, track, {"complete": {}, "error": {}, "done_at": {}})
        if track_attrs.get("error"):
            store.mark_failed(split, track, reason, list(sets), own)
    return 1
