"""The API both backends share (`Store`); a backend implements only the _underscored primitives on its groups."""

from __future__ import annotations

import contextlib
import time

import numpy as np

from dva.errors import StoreDamage, StoreError
from dva.stores.attrs import (
    DTYPES, FORMAT, LABEL_ARRAYS, MODALITIES, SET_ARRAYS, TRACK_ARRAYS, check_set_name, complete_sets, count_annotated, set_errors, track_tasks, why_not_usable,
)
from dva.stores.summary import describe_set, split_summary, task_summary


class Store:
    """A feature store, Zarr or HDF5 (`dva.open_store`). What a reader uses: `feature_sets()`, `splits()`,
    `tracks(split)`, `track_attrs(split, track)`, `read_track(split, track)` (numpy arrays: `frame_time`, `labels`,
    and per set `<SET>/data` with `<SET>/mask` or `<SET>/time`), `read(split, track, path)` (one array), `summary()`
    (what `dva info --json` prints).

    >>> store = dva.open_store("stores")
    >>> arrays = store.read_track("val", store.tracks("val")[0])
    >>> sorted(arrays)[:3]
    ['ast-dva-tiny-ast-window/data', 'ast-dva-tiny-ast-window/time', 'clip-dva-tiny-clip-random/data']

    A backend implements: _root, _group(name, create), _children, _arrays, _has,
    _track_index, _get_attrs, _set_attrs, _delete_attrs, _write_array, _read_array, _delete, delete_track, size_bytes;
    and for `verify`: _check_array, _checksummed_array."""

    format = ""
    checksum = ""  # what checksums every chunk this backend writes: the name recorded in the root attrs' "checksums"

    def __init__(self, path: str, mode: str):
        self.path, self.mode = path, mode
        self.checksums = True  # write every array checksummed (False only for benchmarks/checksums.py's side-by-side)

    def _record_checksums_if_new(self) -> None:
        """A store begun by this dva checksums every chunk: say so in its root attrs (a store written before keeps
        none, and reads as it is, until `dva upgrade` rewrites its arrays)."""
        if self.mode != "r" and not self.attrs and not self.splits():
            self.set_attrs({"checksums": self.checksum})

    @property
    def checksummed(self) -> bool:
        """Whether every chunk of the store carries a checksum (written since dva checksums, or upgraded)."""
        return self.attrs.get("checksums") == self.checksum

    # --- root
    @property
    def attrs(self) -> dict:
        return self._get_attrs(self._root())

    def set_attrs(self, attrs: dict) -> None:
        self._set_attrs(self._root(), attrs)

    def delete_attrs(self, keys) -> None:
        """Remove these keys from the root attrs (absent ones are fine)."""
        self._delete_attrs(self._root(), keys)

    @property
    def layout(self) -> int | None:
        """2 for this layout, 1 for a store written by dva 0.1, None for an empty store."""
        attrs = self.attrs
        if "format" in attrs:
            return int(attrs["format"])
        return 1 if "visual_encoder" in attrs else None

    def feature_sets(self) -> dict[str, dict]:
        """{name: {"modality", "dim", "encoder", "preprocessing", ...}} of every feature set, in name order."""
        self.require_layout()
        return dict(sorted((self.attrs.get("feature_sets") or {}).items()))

    def require_layout(self) -> None:
        if self.layout == 1:
            raise StoreError(f"{self.path} was written by dva 0.1 (store format 1): run `dva upgrade {self.path}` once to turn it into feature sets")
        if self.layout not in (None, FORMAT):
            raise StoreError(f"{self.path} has store format {self.layout}, newer than this dva reads ({FORMAT}): upgrade dva")

    def add_feature_set(self, name: str, info: dict) -> None:
        """Record a feature set in the root attrs. Call it under the store's metadata claim."""
        check_set_name(name)
        if info.get("modality") not in MODALITIES:
            raise ValueError(f"add_feature_set: modality must be one of {MODALITIES}, not {info.get('modality')!r}")
        sets = self.feature_sets()
        sets[name] = info
        self.set_attrs({"format": FORMAT, "feature_sets": sets})

    def splits(self) -> list[str]:
        return sorted(name for name in self._children(self._root()) if not name.startswith("."))

    def ensure_split(self, split: str) -> None:
        """Create the split group up front, before concurrent writers add tracks to it."""
        self._group(split, create=True)

    def split_attrs(self, split: str) -> dict:
        """A split's own attrs (the test split records its track list and the organisers' sample file)."""
        return self._get_attrs(self._group(split)) if self._has(split) else {}

    def set_split_attrs(self, split: str, attrs: dict) -> None:
        if attrs:
            self._set_attrs(self._group(split, create=True), attrs)

    # --- tracks
    def track_index(self, split: str) -> dict[str, dict]:
        """{track: attrs} for every track of split, sorted by name, from one listing of the split.
        A track whose metadata is being written by another process shows as {} (nothing complete)."""
        return dict(sorted(self._track_index(split).items()))

    def tracks(self, split: str) -> list[str]:
        return list(self.track_index(split))

    def track_attrs(self, split: str, track: str) -> dict:
        return self._get_attrs(self._group(f"{split}/{track}"))

    def set_track_attrs(self, split: str, track: str, attrs: dict) -> None:
        """Update (not replace) a track's attrs; the track must exist."""
        self._set_attrs(self._group(f"{split}/{track}"), attrs)

    def track_state(self, split: str, track: str) -> dict:
        """One track's attrs, {} when the track is not in the store (or its metadata cannot be read: it is made anew);
        never lists the split."""
        try:
            return self.track_attrs(split, track) if self._has(f"{split}/{track}") else {}
        except StoreDamage:
            return {}

    def is_complete(self, split: str, track: str, sets=None) -> bool:
        """Whether these feature sets (default: every set of the store) are complete for the track."""
        sets = list(self.feature_sets()) if sets is None else sets
        state = self.track_state(split, track)
        return bool(state) and why_not_usable(state, sets) is None

    def create_track(self, split: str, track: str, arrays: dict[str, np.ndarray], attrs: dict) -> None:
        """(Re)create a track with its own arrays (frame_time, labels for train/val) and attrs, no feature set yet."""
        unknown = set(arrays) - set(TRACK_ARRAYS)
        if unknown:
            raise ValueError(f"create_track: unknown arrays {sorted(unknown)}")
        typed = {name: _typed(name, values) for name, values in arrays.items()}
        self.delete_track(split, track)
        group = self._group(f"{split}/{track}", create=True)
        for name, values in typed.items():
            self._write_array(group, name, values)
        # what `dva info` reports, kept in the attrs so that it never has to open an array
        valid = int((~np.isnan(typed["labels"]).any(axis=1)).sum()) if "labels" in typed else 0
        annotated = _annotated(typed)
        self._set_attrs(group, {**attrs, "rows": int(typed["frame_time"].shape[0]), "labelled": "labels" in typed, "valid_labels": valid,
                                **({"annotated": annotated} if set(annotated) - {"va"} else {}), "complete": {}, "error": {}, "done_at": {}})

    def replace_track_arrays(self, split: str, track: str, arrays: dict[str, np.ndarray]) -> None:
        """Rewrite a track's own arrays with the same number of rows (new annotations, same video); the sets stay."""
        group = self._group(f"{split}/{track}")
        for name, values in arrays.items():
            if name not in TRACK_ARRAYS:
                raise ValueError(f"replace_track_arrays: unknown array {name!r}")
            self._write_array(group, name, _typed(name, values))
        if "labels" in arrays:
            self._set_attrs(group, {"valid_labels": int((~np.isnan(np.asarray(arrays["labels"], np.float32)).any(axis=1)).sum())})

    def write_labels(self, split: str, track: str, labels: dict[str, np.ndarray], tasks: dict[str, str]) -> None:
        """Write a track's labels of some tasks ({task: array}, each with the track's rows) without touching its feature
        sets, and record every task's split of it (`tasks`: {task: split}) and each task's annotated frames."""
        state = self.track_attrs(split, track)
        rows = int(state["rows"])
        typed = {LABEL_ARRAYS[task]: _typed(LABEL_ARRAYS[task], values) for task, values in labels.items()}
        for name, values in typed.items():
            if values.shape[0] != rows:
                raise ValueError(f"write_labels: {name} has {values.shape[0]} rows, {split}/{track} has {rows}")
        group = self._group(f"{split}/{track}")
        for name, values in typed.items():
            self._write_array(group, name, values)
        annotated = {**(state.get("annotated") or {}), **_annotated(typed)}
        update = {"tasks": dict(tasks), "annotated": annotated}
        if "va" in labels:
            update.update(labelled=True, valid_labels=annotated["va"])
        self._set_attrs(group, update)
    def write_set(self, split: str, track: str, name: str, modality: str, arrays: dict[str, np.ndarray]) -> None:
        """Write one feature set of a track (replacing it), then mark it complete; the track must exist."""
        expected = SET_ARRAYS[modality]
        if set(arrays) != set(expected):
            raise ValueError(f"write_set: a {modality} set has arrays {expected}, not {sorted(arrays)}")
        typed = {key: _typed(key, values) for key, values in arrays.items()}
        group = self._group(f"{split}/{track}")
        self._edit_track(group, name, complete=False)
        self._delete(group, name)
        set_group = self._group(f"{split}/{track}/{name}", create=True)
        for key in expected:
            self._write_array(set_group, key, typed[key])
        self._edit_track(group, name, complete=True, rows=int(typed["data"].shape[0]))

    def mark_failed(self, split: str, track: str, reason: str, sets, attrs: dict | None = None) -> None:
        """Record that these feature sets could not be made for the track (its other sets stay)."""
        if not self._has(f"{split}/{track}"):
            group = self._group(f"{split}/{track}", create=True)
            self._set_attrs(group, {**(attrs or {}), "complete": {}, "error": {}, "done_at": {}})
        group = self._group(f"{split}/{track}")
        for name in sets:
            self._delete(group, name)
            self._edit_track(group, name, complete=False, error=reason)

    def mark_damaged(self, split: str, track: str, sets, own: list[str]) -> None:
        """Record what of a track does not read back (`verify.check_track`), so that `dva extract` redoes exactly that:
        each of sets no longer complete, and the own arrays named in the track's `damaged` attr."""
        group = self._group(f"{split}/{track}")
        for name in sets:
            self._edit_track(group, name, complete=False)
        if own:
            self._set_attrs(group, {"damaged": sorted(own)})

    def repair_track_arrays(self, split: str, track: str, arrays: dict[str, np.ndarray]) -> None:
        """Rewrite a track's own arrays that were found damaged (`mark_damaged`), and forget that they were."""
        self.replace_track_arrays(split, track, arrays)
        self._delete_attrs(self._group(f"{split}/{track}"), ["damaged"])

    def _edit_track(self, group, name: str, complete: bool, rows: int | None = None, error: str | None = None) -> None:
        """One read-modify-write of a track's per-set attrs (one writer per track: the claim holder)."""
        attrs = self._get_attrs(group)
        done = attrs.get("complete") if isinstance(attrs.get("complete"), dict) else {}
        errors, done_at, set_rows = set_errors(attrs), dict(attrs.get("done_at") or {}), dict(attrs.get("set_rows") or {})
        done.pop(name, None)
        errors.pop(name, None)
        if complete:
            done[name] = True
            done_at[name] = time.time()
        if error is not None:
            errors[name] = error
            done_at[name] = time.time()
        if rows is not None:
            set_rows[name] = rows
        self._set_attrs(group, {"complete": done, "error": errors, "done_at": done_at, "set_rows": set_rows})

    def read(self, split: str, track: str, path: str) -> np.ndarray:
        """One array: "frame_time", "labels", or "<SET>/data", "<SET>/mask", "<SET>/time". A StoreDamage names the
        split, track and array when it does not read back as written."""
        with self._naming_damage(split, track):
            return self._read_array(self._group(f"{split}/{track}"), path)

    def check_array(self, split: str, track: str, path: str) -> list[str]:
        """Every problem of one array (path as for `read`), reading each of its chunks: [] when it reads back as written."""
        try:
            return self._check_array(self._group(f"{split}/{track}"), path)
        except StoreDamage as exc:
            return [exc.problem]

    def is_checksummed(self, split: str, track: str, path: str) -> bool:
        """Whether one array carries checksums (`checksummed` says it of the whole store)."""
        with self._naming_damage(split, track):
            return self._checksummed_array(self._group(f"{split}/{track}"), path)

    @contextlib.contextmanager
    def _naming_damage(self, split: str, track: str):
        """A backend's StoreDamage (it knows the array) gains the store, split and track."""
        try:
            yield
        except StoreDamage as exc:
            if exc.where:
                raise
            raise StoreDamage(exc.problem, f"{self.path}: {split}/{track}") from None

    def has_array(self, split: str, track: str, name: str) -> bool:
        return name in self._arrays(self._group(f"{split}/{track}"))

    def array_names(self, split: str, track: str) -> list[str]:
        """The arrays at the track's root (its own ones; a dva 0.1 track also has its sets' arrays there)."""
        return list(self._arrays(self._group(f"{split}/{track}")))

    def delete_array(self, split: str, track: str, name: str) -> None:
        """Remove one array (or one set's group) at the track's root; absent is fine."""
        self._delete(self._group(f"{split}/{track}"), name)

    def read_set(self, split: str, track: str, name: str, modality: str) -> dict[str, np.ndarray]:
        with self._naming_damage(split, track):
            group = self._group(f"{split}/{track}")
            return {key: self._read_array(group, f"{name}/{key}") for key in SET_ARRAYS[modality]}

    def read_track(self, split: str, track: str, sets=None) -> dict[str, np.ndarray]:
        """The track's own arrays and, for each of sets (default: every complete one), "<SET>/<array>"."""
        with self._naming_damage(split, track):
            group = self._group(f"{split}/{track}")
            present = set(self._arrays(group))
            arrays = {name: self._read_array(group, name) for name in TRACK_ARRAYS if name in present}
        known = self.feature_sets()
        names = sorted(complete_sets(self.track_attrs(split, track))) if sets is None else sets
        for name in names:
            for key, values in self.read_set(split, track, name, known[name]["modality"]).items():
                arrays[f"{name}/{key}"] = values
        return arrays

    def summary(self) -> dict:
        """What `dva info --json` prints: the feature sets, what each one's provenance means (`describe_set`),
        per split its tracks, frames and each set's coverage (`split_summary`), and bytes (None when unknown)."""
        attrs = self.attrs
        head = {"path": self.path, "format": self.format}
        if self.layout == 1:
            return {**head, "layout": 1, "dva_version": attrs.get("dva_version"), "feature_sets": {}, "provenance": {}, "splits": {}, "bytes": self.size_bytes()}
        sets = self.feature_sets()
        indexes = {split: self.track_index(split) for split in self.splits()}
        splits = {split: split_summary(index, sets, self.split_attrs(split)) for split, index in indexes.items()}
        return {
            **head, "layout": FORMAT, "dva_version": attrs.get("dva_version"), "checksums": attrs.get("checksums"), "timeline": attrs.get("timeline"),
            "dataset": attrs.get("dataset"), "has_audio": attrs.get("has_audio"), "feature_sets": sets,
            "provenance": {name: describe_set(info) for name, info in sets.items()}, "splits": splits, "tasks": task_summary(indexes), "bytes": self.size_bytes(),
        }

    def task_tracks(self, task: str, split: str) -> list[tuple[str, str]]:
        """(store split, track) of every track of a task's split ("va", "expr", "au"; "train", "val", "test"), in store
        split then name order: where a trainer of that task reads its tracks (a task's split may span store splits)."""
        return [(stored, track) for stored in self.splits() for track, attrs in self.track_index(stored).items() if track_tasks(attrs, stored).get(task) == split]

    def size_bytes(self) -> int | None:
        """The store's size on disk or object storage; None when it cannot be measured."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _annotated(typed: dict[str, np.ndarray]) -> dict[str, int]:
    """{task: annotated frames} of the label arrays among typed."""
    return {task: count_annotated(task, typed[name]) for task, name in LABEL_ARRAYS.items() if name in typed}


def _typed(name: str, values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values).astype(DTYPES[name], copy=False))
