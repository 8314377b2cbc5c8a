"""The store's constants and the pure rules on attrs: what a feature set may be called, which sets a
track has complete, why a track cannot be used, how two sets' provenance differ. Nothing here opens a
store, so every other module may import it."""

from __future__ import annotations

import json

import numpy as np

from dva.errors import StoreError

FORMAT = 2
MODALITIES = ("visual", "audio")
# the track's own arrays, shared by every feature set: frame_time [T]; labels [T, 2] (VA, NaN where invalid);
# labels_expr [T] (class 0-7, -1 where not annotated); labels_au [T, 12] (0/1, -1 where not annotated); frame_number [T]
# (an image set's track, s-Aff-Wild2: the 1-based frame number, the image's NNNNN, of each row; absent: row i is frame i + 1)
TRACK_ARRAYS = ("frame_time", "labels", "labels_expr", "labels_au", "frame_number")
LABEL_ARRAYS = {"va": "labels", "expr": "labels_expr", "au": "labels_au"}  # each task's labels (dva.data.tasks names the same)
SET_ARRAYS = {"visual": ("data", "mask"), "audio": ("data", "time")}
DTYPES = {"frame_time": np.float32, "labels": np.float32, "labels_expr": np.int8, "labels_au": np.int8, "frame_number": np.int32, "data": np.float16, "mask": np.bool_, "time": np.float32}
ROWS_PER_CHUNK = 4096
HDF5_SUFFIXES = (".h5", ".hdf5")
SET_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
TRACK_BOOKKEEPING = ("rows", "labelled", "valid_labels", "annotated", "complete", "error", "done_at", "set_rows")  # what the store keeps itself


def check_set_name(name: str) -> str:
    """A feature-set name is a group name in every backend: letters, digits, '.', '_', '-', not starting with '.'."""
    if not name or name.startswith(".") or set(name) - SET_NAME_CHARACTERS or name in TRACK_ARRAYS:
        raise StoreError(f"feature-set name {name!r}: use letters, digits, '.', '_' and '-' (not starting with '.', not {' or '.join(TRACK_ARRAYS)})")
    return name


# --- a track's attrs, read without opening anything


def complete_sets(attrs: dict) -> set[str]:
    """The feature sets complete for a track (its attrs as `track_index` gives them)."""
    done = attrs.get("complete")
    return {name for name, ok in done.items() if ok} if isinstance(done, dict) else set()


def set_errors(attrs: dict) -> dict[str, str]:
    errors = attrs.get("error")
    return dict(errors) if isinstance(errors, dict) else {}


def why_not_usable(attrs: dict | None, sets) -> str | None:
    """None when every one of sets is complete for the track, else one line: missing from the store, failed: ..., or incomplete."""
    if attrs is None:
        return "missing from the store"
    done, errors = complete_sets(attrs), set_errors(attrs)
    for name in sets:
        if name in errors:
            return f"failed: {errors[name]}"
    missing = [name for name in sets if name not in done]
    return f"incomplete ({', '.join(missing)})" if missing else None


def track_tasks(attrs: dict, split: str) -> dict[str, str]:
    """{task: split} of a track stored under split: its `tasks` attr, or, for a track written before the store kept
    one (VA only), {"va": split} when it has VA labels or is a test track (a plain video's track has no task)."""
    tasks = attrs.get("tasks")
    if isinstance(tasks, dict):
        return dict(tasks)
    return {"va": split} if attrs.get("labelled") or split == "test" else {}


def mtl_split(attrs: dict, split: str) -> str | None:
    """The track's split for the multi-task challenge: its `tasks` attr's "mtl" when it has one (a store of s-Aff-Wild2,
    whose one annotation file decides every task's split), else derived from the three challenges' splits (a full
    Aff-Wild2 store): val when any of them holds it out (no task's held-out labels are ever trained on), else train
    when any trains on it; None for a track of none of them, or only of a test split."""
    tasks = track_tasks(attrs, split)
    if "mtl" in tasks:
        return tasks["mtl"]
    chosen = set(tasks.values())
    return "val" if "val" in chosen else "train" if "train" in chosen else None


def count_annotated(task: str, labels: np.ndarray) -> int:
    """Frames a task's labels annotate: VA without NaN, EXPR not -1, AU with none of the 12 at -1."""
    if task == "va":
        return int((~np.isnan(labels).any(axis=1)).sum())
    return int((labels >= 0).sum()) if labels.ndim == 1 else int((labels >= 0).all(axis=1).sum())


# --- feature sets' provenance


# how a set was computed (preprocessing keys); a set recorded without them was computed on the CPU in float32, as every
# set before dva recorded them was
COMPUTE_DEFAULTS = {"device": "cpu", "compute_dtype": "float32"}
# compared only where both sets record them: a crops framing is unknown to a set made before dva recorded it, or
# without dlib to learn it, and unknown is not another framing
ONE_SIDED = ("framing",)


def set_differences(old: dict, new: dict, compute: bool = True, framing: bool = True) -> list[str]:
    """What differs between two feature sets' infos (modality, encoder, preprocessing), one "key: a != b" each.
    compute False: the device and compute dtype (`COMPUTE_DEFAULTS`' keys) are not compared; nor is the crops' framing
    where one side lacks it (`ONE_SIDED`), or with framing False. Where crops read with --crops lie is not compared
    (the same faces settings in another folder make the same kind of set)."""
    differences = []
    for section in ("modality", "encoder", "preprocessing"):
        before, after = _without_location(old.get(section)), _without_location(new.get(section))
        if section == "preprocessing" and (isinstance(before, dict) or isinstance(after, dict)):
            before, after = (_with_compute(part or {}, compute) for part in (before, after))
        if not (isinstance(before, dict) or isinstance(after, dict)):
            if _plain(before) != _plain(after):
                differences.append(f"{section}: {before!r} != {after!r}")
            continue
        before, after = before or {}, after or {}
        for key in sorted(set(before) | set(after)):
            if key in ONE_SIDED and (before.get(key) is None or after.get(key) is None or not framing):
                continue
            if _plain(before.get(key)) != _plain(after.get(key)):
                differences.append(f"{section}.{key}: {before.get(key)!r} != {after.get(key)!r}")
    return differences


def _without_location(section):
    crops = section.get("crops") if isinstance(section, dict) else None
    return {**section, "crops": {k: v for k, v in crops.items() if k != "folder"}} if isinstance(crops, dict) else section


def sets_mismatch(wanted: dict[str, dict], found: dict[str, dict], found_where: str) -> str | None:
    """None when found has every set of wanted with the same provenance, else one line saying what differs. The
    device a set was computed on is not compared: a run trained on one machine's features predicts from another's."""
    for name, info in wanted.items():
        if name not in found:
            return f"{found_where} has no feature set {name!r} (it has {', '.join(found) or 'none'})"
        differences = set_differences(info, found[name], compute=False, framing=False)
        if differences:
            return f"feature set {name!r} of {found_where} was made otherwise ({'; '.join(differences[:3])}{'; ...' if len(differences) > 3 else ''})"
    return None


def framing_mismatches(wanted: dict[str, dict], found: dict[str, dict], found_where: str) -> list[str]:
    """One line per set of wanted whose crops found frames otherwise (both recorded a framing): features of the same
    encoder on faces placed otherwise in the crop, which a model reads worse, not wrongly (`sets_mismatch` lets them by)."""
    lines = []
    for name in wanted:
        mine, theirs = ((sets.get(name) or {}).get("preprocessing") or {} for sets in (wanted, found))
        if mine.get("framing") and theirs.get("framing") and _plain(mine["framing"]) != _plain(theirs["framing"]):
            a, b = mine["framing"].get("name"), theirs["framing"].get("name")
            shown = f"{a}, {found_where}'s {b}" if a != b else f"{a}, {found_where}'s another {b} template"
            lines.append(f"feature set {name!r}: the run was trained on crops framed {shown}; make the crops with dva faces --framing-from "
                         "the run's release (or dva predict --video) to frame them alike")
    return lines


def _with_compute(preprocessing: dict, compute: bool) -> dict:
    if compute:
        return {**COMPUTE_DEFAULTS, **preprocessing}
    return {key: value for key, value in preprocessing.items() if key not in COMPUTE_DEFAULTS}


def _plain(value):
    return json.loads(json.dumps(value))


def json_ready(value):
    """Attrs as plain JSON types (numpy scalars and tuples included)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else list(v)))
