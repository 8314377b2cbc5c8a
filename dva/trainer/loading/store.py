"""Reading the chosen feature sets of a store's splits into `SplitData`.

Every array is allocated once at its final size (from the row counts the store keeps in each track's
attrs) and filled track by track: a load never holds a second copy of the features. Several splits read
together share one allocation, each split a view of it, so the pool of train and val that folds and
final fits train on costs nothing more.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from dva.data.tasks import LABEL_WIDTH, MTL_LABELS, MTL_TASKS
from dva.errors import ConfigError, StoreDamage, StoreError
from dva.stores import why_not_usable
from dva.stores.attrs import LABEL_ARRAYS, mtl_split, track_tasks
from dva.trainer.loading.audio_rows import AudioRows, align_rows
from dva.trainer.loading.windows import SplitData
from dva.trainer.loading.tracks import track_span




def choose_sets(available: dict[str, dict], visual: str | None, audio: str | None, modalities, store_path: str) -> dict[str, list[str]]:
    """The feature sets to train on, per modality: the names given (comma-separated), or the store's only set of
    that modality; none for a modality the model does not use. One-line errors name what the store has."""
    chosen = {}
    for modality, given in (("visual", visual), ("audio", audio)):
        have = [name for name, info in available.items() if info.get("modality") == modality]
        if given:
            names = [n.strip() for n in str(given).replace("+", ",").split(",") if n.strip()]
            for name in names:
                if name not in have:
                    where = f"its {modality} sets are {', '.join(have)}" if have else f"it has no {modality} set"
                    raise ConfigError(f"--{modality}-features {name}: {store_path} has no such {modality} feature set ({where})")
            chosen[modality] = names
        elif modality not in modalities:
            chosen[modality] = []
        elif len(have) == 1:
            chosen[modality] = have
        elif not have:
            raise ConfigError(f"{store_path} has no {modality} feature set: extract one (dva extract --only {modality}), import one (dva import), or train with --modalities {'audio' if modality == 'visual' else 'visual'}")
        else:
            raise ConfigError(f"{store_path} has {len(have)} {modality} feature sets ({', '.join(have)}): choose with --{modality}-features NAME[,NAME]")
    return chosen



def load_split(store, split: str, sets: dict[str, list[str]], audio_align: str = "nearest", tracks: list[str] | None = None, task: str | None = None) -> SplitData:
    """Every track of split whose chosen feature sets (sets: modality -> names, see `choose_sets`) are
    complete (or only these tracks), from an open store into CPU tensors. Several sets of one modality are
    side by side along features (normalisation is per feature, so each keeps its own); a frame is valid for a
    modality when every one of its sets has it. The tracks left out are named in `SplitData.left_out`."""
    return load_splits(store, [split], sets, audio_align, tracks, task)[1][0]


def load_splits(store, splits: list[str], sets: dict[str, list[str]], audio_align: str = "nearest", tracks: list[str] | None = None,
                task: str | tuple[str, ...] | None = None) -> tuple[SplitData, list[SplitData]]:
    """(all the splits' tracks as one SplitData, named like "train+val", whose attrs say each track's split;
    one SplitData per split, each a view of it) — see `load_split`. task None: the store's splits as stored, their
    VA labels; task va|expr|au: each split is that task's (the tracks whose `tasks` attr names it, wherever they are
    stored), with that task's labels (`task_labels`); a track of the task's split without its labels is left out,
    named in `left_out`. task a tuple of tasks (a prediction of them, not training): `predict_tracks` of each split, with
    VA's labels where a track has them."""
    check_split = [s for s in splits if s not in store.splits()] if task is None else []
    if check_split:
        raise StoreError(f"{store.path} has no {check_split[0]!r} split: run `dva extract --split {check_split[0]}` into it first")
    needed = [*sets["visual"], *sets["audio"]]
    chosen = {split: _usable(store, split, needed, tracks, task) for split in splits}
    available = store.feature_sets()
    dims = {name: int(available[name]["dim"]) for name in needed}
    pooled, damaged = _read_intact(store, chosen, sets, dims, audio_align, task if isinstance(task, str) else "va")
    if damaged:  # left out and named as failed ones are
        chosen = {split: ([j for j in names if j[1] not in damaged], {**left_out, **{j[1]: damaged[j[1]] for j in names if j[1] in damaged}})
                  for split, (names, left_out) in chosen.items()}
    pooled.split, pooled.left_out = "+".join(splits), {t: why for _, left_out in chosen.values() for t, why in left_out.items()}
    parts, first = [], 0
    for split, (names, left_out) in chosen.items():
        last = first + len(names)
        parts.append(track_span(pooled, first, last, split, pooled.attrs[first:last], left_out))
        first = last
    for part in parts:  # a split's own attrs do not say which split they are from; the pool's do
        part.attrs = [{k: v for k, v in a.items() if k not in ("split", "stored_split")} for a in part.attrs]
    return pooled, parts


def _usable(store, split: str, needed: list[str], tracks: list[str] | None, task: str | None) -> tuple[list[tuple], dict[str, str]]:
    """(the jobs to read: (stored split, track, attrs, split) each, {track: why not} for the others)."""
    if task is None:
        index = store.track_index(split)  # one listing: the cost per track stays flat at any store size
        candidates = [(split, t, index[t]) for t in (list(index) if tracks is None else [t for t in tracks if t in index])]
    elif isinstance(task, tuple):
        found = predict_tracks(store, split, task)
        candidates = [(found[t][0], t, found[t][1]) for t in (list(found) if tracks is None else [t for t in tracks if t in found])]
    else:
        candidates = _task_candidates(store, task, split, tracks)
    reasons = _reasons(store, candidates, needed, task, split)
    jobs = [(stored, t, attrs, split) for stored, t, attrs in candidates if reasons[t] is None]
    if not jobs:
        what = f"split {split!r}" if task is None else f"{'/'.join(task) if isinstance(task, tuple) else task}'s {split} split"
        raise StoreError(f"{store.path}: no track of {what} has {', '.join(needed) or 'any feature set'} complete{_labels_hint(task, split)}: run `dva extract --split {split}`"
                         + ("" if not isinstance(task, str) else " (with the release's annotations of that challenge), or `dva labels`"))
    return jobs, {t: reason for t, reason in reasons.items() if reason is not None}


def _read_intact(store, chosen: dict, sets, dims, audio_align: str, task: str) -> tuple[SplitData, dict[str, str]]:
    """`_read` of chosen's jobs without the tracks that do not read back as written: (the data, {track: why left out}).
    A damaged track is found by reading it: the read starts again without it (damage is rare, a second read cheap)."""
    damaged: dict[str, str] = {}
    while True:
        jobs = [job for jobs_of_split, _ in chosen.values() for job in jobs_of_split if job[1] not in damaged]
        if not jobs:
            raise StoreError(f"{store.path}: every track it would load is damaged ({'; '.join(f'{t}: {why}' for t, why in list(damaged.items())[:3])}): "
                             "`dva verify` names what, `dva extract` over the same data redoes it")
        try:
            return _read(store, jobs, sets, dims, audio_align, task), damaged
        except _DamagedTrack as exc:
            damaged[exc.track] = exc.reason


class _DamagedTrack(Exception):
    def __init__(self, stored: str, track: str, exc: StoreDamage):
        super().__init__(track)
        self.track, self.reason = track, f"damaged: {exc.problem}; `dva extract --split {stored}` over the same data redoes it"


def _reasons(store, candidates: list[tuple[str, str, dict]], needed: list[str], task, split: str) -> dict[str, str | None]:
    """{track: why it is not loaded, None when it is} of candidates ((stored split, track, attrs) each)."""
    reasons = {t: why_not_usable(attrs, needed) for _, t, attrs in candidates}
    if isinstance(task, str) and split != "test":  # a track of the task's split that has none of its labels teaches and scores nothing
        for stored, t, attrs in candidates:
            if reasons[t] is None and not _has_labels(store, stored, t, attrs, task):
                reasons[t] = f"no {task} labels in the store (dva labels --data DATA adds them)"
    return reasons


def task_pool(store_path: str, task: str, splits=("train", "val")) -> list[tuple[str, dict, int]]:
    """(track, attrs, frames) of every track the task puts in these splits, wherever stored and whatever feature sets
    it has complete (failed ones too, frames 0 where the store does not know them): what any load of them draws from."""
    from dva.stores import open_store

    with open_store(store_path, "r") as store:
        indexes = {stored: store.track_index(stored) for stored in store.splits()}
        found = [c for split in splits for c in _task_candidates(store, task, split, None, indexes)]
        return [(track, attrs, _rows(attrs, None) if _rows(attrs, None) is not None else _frames(store, stored, track)) for stored, track, attrs in found]


def _frames(store, stored: str, track: str) -> int:
    """A track's frame count from its frame_time (a store without row counts in its attrs); 0 when it has none (failed)."""
    return int(store.read(stored, track, "frame_time").shape[0]) if store.has_array(stored, track, "frame_time") else 0


def _task_candidates(store, task: str, split: str, tracks: list[str] | None, indexes: dict | None = None) -> list[tuple[str, str, dict]]:
    """(stored split, track, attrs) of every track whose `tasks` attr puts it in task's split, in the store's order (or
    these tracks, in this order); for VA a track written before the store kept `tasks` counts as its stored split's.
    indexes: {stored split: track index} when already listed."""
    indexes = indexes if indexes is not None else {stored: store.track_index(stored) for stored in store.splits()}
    found = {t: (stored, t, attrs) for stored, index in indexes.items() for t, attrs in index.items() if _task_split(attrs, stored, task) == split}
    return list(found.values()) if tracks is None else [found[t] for t in tracks if t in found]


def predict_tracks(store, split: str, tasks: tuple[str, ...]) -> dict[str, tuple[str, dict]]:
    """{track: (stored split, attrs)}, in the store's order, of the tracks a prediction for these tasks takes from split:
    those any of them puts in split, wherever stored, and those of no task stored under it (a folder of videos, a
    store written before tasks). Each stored split is listed once."""
    found = {}
    for stored in store.splits():
        for track, attrs in store.track_index(stored).items():
            if any(_task_split(attrs, stored, task) == split for task in tasks) or (stored == split and not track_tasks(attrs, stored)):
                found.setdefault(track, (stored, attrs))
    return found


def _task_split(attrs: dict, stored: str, task: str) -> str | None:
    """The track's split for task; for VA a track that records no `tasks` (failed before its labels were read, or written
    by an older dva) is its stored split's, as VA always took it (so a failed one is named, not skipped)."""
    if task == "va" and not isinstance(attrs.get("tasks"), dict):
        return stored
    if task == "mtl":
        return mtl_split(attrs, stored)
    return track_tasks(attrs, stored).get(task)


def _labels_hint(task, split: str) -> str:
    return "" if not isinstance(task, str) or split == "test" else f" and {task} labels"


def _has_labels(store, stored: str, track: str, attrs: dict, task: str) -> bool:
    if task == "va":  # VA takes every track of its split, as it always did (an unlabelled one still feeds the normaliser)
        return True
    if task == "mtl":  # a track with any of the three challenges' labels
        return any(_has_labels(store, stored, track, attrs, part) if part != "va" else bool(attrs.get("labelled")) for part in MTL_TASKS)
    annotated = attrs.get("annotated")
    if isinstance(annotated, dict):
        return int(annotated.get(task) or 0) > 0
    return store.has_array(stored, track, LABEL_ARRAYS[task])


def task_labels(task: str, values: np.ndarray) -> np.ndarray:
    """A task's stored labels as the trainer holds them, float32 [T, C] with NaN where not annotated: VA [T, 2] as stored,
    EXPR the class index [T, 1] (-1 -> NaN), AU the 12 bits [T, 12] (-1 -> NaN)."""
    values = np.asarray(values)
    if task == "va":
        return values.astype(np.float32)
    out = values.astype(np.float32).reshape(values.shape[0], -1)
    out[out < 0] = np.nan
    return out


def _read(store, jobs: list[tuple[str, str, dict, str]], sets: dict[str, list[str]], dims: dict[str, int], audio_align: str, task: str = "va") -> SplitData:
    """jobs: (stored split, track, attrs, split) in order -> one SplitData, every array allocated once at its final size."""
    frames = [_rows(attrs, None) if _rows(attrs, None) is not None else _frame_count(store, stored, track) for stored, track, attrs, _ in jobs]
    offsets = np.concatenate([[0], np.cumsum(frames)]).astype(np.int64)
    total = int(offsets[-1])
    visual = torch.empty(total, sum(dims[n] for n in sets["visual"]), dtype=torch.float16)
    masks = {m: torch.full((total,), bool(sets[m])) for m in ("visual", "audio")}
    labels = torch.full((total, LABEL_WIDTH[task]), float("nan"))
    audio = [_audio_rows(store, jobs, name, dims[name], offsets, audio_align, masks["audio"]) for name in sets["audio"]]
    for i, (stored, track, attrs, _) in enumerate(jobs):
        rows = slice(int(offsets[i]), int(offsets[i + 1]))
        column = 0
        with _naming_track(stored, track):
            for name in sets["visual"]:
                arrays = store.read_set(stored, track, name, "visual")
                visual[rows, column : column + dims[name]] = torch.from_numpy(np.asarray(arrays["data"], dtype=np.float16))
                masks["visual"][rows] &= torch.from_numpy(arrays["mask"].astype(bool))
                column += dims[name]
            for part, columns in (MTL_LABELS.items() if task == "mtl" else [(task, slice(None))]):
                if attrs.get("labelled") if part == "va" else store.has_array(stored, track, LABEL_ARRAYS[part]):
                    labels[rows, columns] = torch.from_numpy(task_labels(part, store.read(stored, track, LABEL_ARRAYS[part])))
    # a frame teaches when it has its task's labels; MTL's, when it has any of the three (each loss masks its own)
    label_mask = ~torch.isnan(labels).all(dim=1) if task == "mtl" else ~torch.isnan(labels).any(dim=1)
    return SplitData(
        split="", tracks=[t for _, t, _, _ in jobs], offsets=offsets, visual=visual, visual_mask=masks["visual"], audio=audio,
        audio_mask=masks["audio"], labels=labels, label_mask=label_mask,
        attrs=[{**attrs, "split": split, **({"stored_split": stored} if stored != split else {})} for stored, _, attrs, split in jobs],
    )


def _audio_rows(store, jobs, name: str, dim: int, offsets: np.ndarray, how: str, mask: torch.Tensor) -> AudioRows:
    """One audio set of every job's track at its own rate; mask (per frame) is narrowed to frames with sound."""
    counts = [_rows(attrs, name) for _, _, attrs, *_ in jobs]
    if any(c is None for c in counts):  # a store without row counts in its attrs: read the steps' times
        counts = []
        for split, track, *_ in jobs:
            with _naming_track(split, track):
                counts.append(store.read(split, track, f"{name}/time").shape[0])
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    data = torch.zeros(int(starts[-1]) + 1, dim, dtype=torch.float16)  # the spare last row: see AudioRows
    left, right = torch.empty(int(offsets[-1]), dtype=torch.int64), torch.empty(int(offsets[-1]), dtype=torch.int64) if how == "linear" else None
    weight = torch.empty(int(offsets[-1]), dtype=torch.float32) if how == "linear" else None
    for i, (split, track, *_) in enumerate(jobs):
        with _naming_track(split, track):
            arrays = store.read_set(split, track, name, "audio")
            frame_time = store.read(split, track, "frame_time")
        values = np.asarray(arrays["data"], dtype=np.float16).reshape(-1, dim)
        if values.shape[0] != counts[i]:
            raise StoreError(f"{store.path}: {split}/{track} {name} holds {values.shape[0]} rows where its attrs say {counts[i]}: run `dva info` and re-extract the track")
        data[int(starts[i]) : int(starts[i + 1])] = torch.from_numpy(values)
        rows = slice(int(offsets[i]), int(offsets[i + 1]))
        l, r, w, valid = align_rows(arrays["time"], frame_time, how)
        left[rows] = torch.from_numpy(l + starts[i] if values.shape[0] else np.full_like(l, starts[-1]))
        if r is not None:
            right[rows], weight[rows] = torch.from_numpy(r + starts[i] if values.shape[0] else np.full_like(r, starts[-1])), torch.from_numpy(w)
        mask[rows] &= torch.from_numpy(valid)
    return AudioRows(data, starts, left, right, weight)


@contextlib.contextmanager
def _naming_track(stored: str, track: str):
    """A StoreDamage reading one track becomes `_DamagedTrack`, which `_read_intact` leaves out."""
    try:
        yield
    except StoreDamage as exc:
        raise _DamagedTrack(stored, track, exc) from None


def _frame_count(store, stored: str, track: str) -> int:
    with _naming_track(stored, track):
        return store.read(stored, track, "frame_time").shape[0]


def _rows(attrs: dict, name: str | None) -> int | None:
    """A track's frame count (name None) or a set's row count, as the store's attrs keep them (None if not)."""
    value = attrs.get("rows") if name is None else (attrs.get("set_rows") or {}).get(name)
    return int(value) if value is not None else None


def left_out_message(*splits: SplitData) -> str | None:
    """One line naming every track of these splits that is not loaded (failed or incomplete), with counts;
    None when nothing is left out. Figures on a split with left-out tracks cover only the others."""
    return _left_out_line([(data.split, len(data.tracks), data.left_out) for data in splits])


def left_out_in_store(store_path: str, choices: list[tuple[str | None, str | None, tuple]], splits=("train", "val"), task: str = "va") -> str | None:
    """`left_out_message` for the loads these choices (visual_features, audio_features, modalities) make of the
    task's splits, from the tracks' attrs alone: what a client says before its workers load (and the workers,
    loading, say nothing more)."""
    from dva.stores import open_store

    lines = []
    with open_store(store_path, "r") as store:
        available = store.feature_sets()
        indexes = {stored: store.track_index(stored) for stored in store.splits()}  # each listed once
        candidates = {split: _task_candidates(store, task, split, None, indexes) for split in splits}
        for visual, audio, modalities in dict.fromkeys(choices):
            sets = choose_sets(available, visual, audio, modalities, store_path)
            needed = [*sets["visual"], *sets["audio"]]
            parts = []
            for split, found in candidates.items():
                reasons = {t: why for t, why in _reasons(store, found, needed, task, split).items() if why is not None}
                parts.append((split, len(found) - len(reasons), reasons))
            lines.append(_left_out_line(parts))
    return " | ".join(dict.fromkeys(line for line in lines if line)) or None


def _left_out_line(splits: list[tuple[str, int, dict[str, str]]]) -> str | None:
    """(split, tracks loaded, {track: why left out}) of each split -> one line, or None when none is left out."""
    parts = []
    for split, loaded, left_out in splits:
        if not left_out:
            continue
        failed = sum(reason.startswith(("failed", "damaged")) for reason in left_out.values())
        named = "; ".join(f"{track} ({reason})" for track, reason in left_out.items())
        parts.append(
            f"{split}: {len(left_out)} of {loaded + len(left_out)} tracks left out "
            f"({failed} failed, {len(left_out) - failed} incomplete; figures cover the other {loaded}): {named}"
        )
    return " | ".join(parts) or None



