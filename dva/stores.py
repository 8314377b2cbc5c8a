"""The feature store: one small API over Zarr v3 (a directory or fsspec URL) and HDF5 (one file).

Layout (format 2, DESIGN.md): the root attrs name every **feature set** (what one encoder
configuration produced) with its modality, dim and provenance. `<split>/<track>/` holds the
track's own arrays (`frame_time`, `labels`) and one group per feature set (`<NAME>/data` and
`mask` for a visual set, `time` for an audio set). A set is written whole, then marked complete
for that track in the track's attrs (`complete: {NAME: true}`); a run that dies never leaves a
set marked complete, and adding a set never touches another. Nothing else in dva imports zarr
or h5py.

Opening costs the same per track whatever the split's size: `track_index` lists a split once
and reads each track's attrs once; nothing else lists a split.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from dva.errors import StoreError

FORMAT = 2
MODALITIES = ("visual", "audio")
TRACK_ARRAYS = ("frame_time", "labels")  # the track's own arrays, shared by every feature set
SET_ARRAYS = {"visual": ("data", "mask"), "audio": ("data", "time")}
DTYPES = {"frame_time": np.float32, "labels": np.float32, "data": np.float16, "mask": np.bool_, "time": np.float32}
FORMAT_1_ARRAYS = {"visual": ("visual", "visual_mask"), "audio": ("audio", "audio_time")}  # dva 0.1: one set per modality at the track root
ROWS_PER_CHUNK = 4096
HDF5_SUFFIXES = (".h5", ".hdf5")
SET_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def open_store(path: str | Path, mode: str = "r") -> "Store":
    """Open a store: "r" read-only (must exist), "a" create or append. A .h5/.hdf5 path is HDF5, anything else Zarr."""
    if mode not in ("r", "a"):
        raise ValueError(f"open_store: mode must be 'r' or 'a', not {mode!r}")
    cls = HDF5Store if str(path).lower().endswith(HDF5_SUFFIXES) else ZarrStore
    return cls(str(path), mode)


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


def set_differences(old: dict, new: dict) -> list[str]:
    """What differs between two feature sets' infos (modality, encoder, preprocessing), one "key: a != b" each."""
    differences = []
    for section in ("modality", "encoder", "preprocessing"):
        before, after = old.get(section), new.get(section)
        if not (isinstance(before, dict) or isinstance(after, dict)):
            if _plain(before) != _plain(after):
                differences.append(f"{section}: {before!r} != {after!r}")
            continue
        before, after = before or {}, after or {}
        for key in sorted(set(before) | set(after)):
            if _plain(before.get(key)) != _plain(after.get(key)):
                differences.append(f"{section}.{key}: {before.get(key)!r} != {after.get(key)!r}")
    return differences


def sets_mismatch(wanted: dict[str, dict], found: dict[str, dict], found_where: str) -> str | None:
    """None when found has every set of wanted with the same provenance, else one line saying what differs."""
    for name, info in wanted.items():
        if name not in found:
            return f"{found_where} has no feature set {name!r} (it has {', '.join(found) or 'none'})"
        differences = set_differences(info, found[name])
        if differences:
            return f"feature set {name!r} of {found_where} was made otherwise ({'; '.join(differences[:3])}{'; ...' if len(differences) > 3 else ''})"
    return None


def _plain(value):
    return json.loads(json.dumps(value))


class Store:
    """The API both formats share. Subclasses implement the _underscored primitives."""

    format = ""

    def __init__(self, path: str, mode: str):
        self.path, self.mode = path, mode

    # --- root
    @property
    def attrs(self) -> dict:
        return self._get_attrs(self._root())

    def set_attrs(self, attrs: dict) -> None:
        self._set_attrs(self._root(), attrs)

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

    def track_state(self, split: str, track: str) -> dict:
        """One track's attrs, {} when the track is not in the store; never lists the split."""
        return self.track_attrs(split, track) if self._has(f"{split}/{track}") else {}

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
        self._set_attrs(group, {**attrs, "rows": int(typed["frame_time"].shape[0]), "labelled": "labels" in typed, "valid_labels": valid, "complete": {}, "error": {}, "done_at": {}})

    def replace_track_arrays(self, split: str, track: str, arrays: dict[str, np.ndarray]) -> None:
        """Rewrite a track's own arrays with the same number of rows (new annotations, same video); the sets stay."""
        group = self._group(f"{split}/{track}")
        for name, values in arrays.items():
            if name not in TRACK_ARRAYS:
                raise ValueError(f"replace_track_arrays: unknown array {name!r}")
            self._write_array(group, name, _typed(name, values))
        if "labels" in arrays:
            self._set_attrs(group, {"valid_labels": int((~np.isnan(np.asarray(arrays["labels"], np.float32)).any(axis=1)).sum())})

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
        """One array: "frame_time", "labels", or "<SET>/data", "<SET>/mask", "<SET>/time"."""
        return self._read_array(self._group(f"{split}/{track}"), path)

    def has_array(self, split: str, track: str, name: str) -> bool:
        return name in self._arrays(self._group(f"{split}/{track}"))

    def read_set(self, split: str, track: str, name: str, modality: str) -> dict[str, np.ndarray]:
        group = self._group(f"{split}/{track}/{name}")
        return {key: self._read_array(group, key) for key in SET_ARRAYS[modality]}

    def read_track(self, split: str, track: str, sets=None) -> dict[str, np.ndarray]:
        """The track's own arrays and, for each of sets (default: every complete one), "<SET>/<array>"."""
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
        """What `dva info --json` prints: the feature sets and, per split, tracks, frames and each set's coverage."""
        attrs = self.attrs
        if self.layout == 1:
            return {"path": self.path, "format": self.format, "layout": 1, "dva_version": attrs.get("dva_version"), "feature_sets": {}, "splits": {}, "bytes": self._bytes()}
        sets = self.feature_sets()
        splits = {}
        for split in self.splits():
            index = self.track_index(split)
            part = {"tracks": len(index), "frames": 0, "valid_labels": 0, "sets": {}}
            for name in sets:
                part["sets"][name] = {"complete": 0, "rows": 0, "failed": {}, "incomplete": []}
            for track, track_attrs in index.items():
                part["frames"] += int(track_attrs.get("rows") or 0)
                part["valid_labels"] += int(track_attrs.get("valid_labels") or 0)
                done, errors, set_rows = complete_sets(track_attrs), set_errors(track_attrs), track_attrs.get("set_rows") or {}
                for name, coverage in part["sets"].items():
                    if name in done:
                        coverage["complete"] += 1
                        coverage["rows"] += int(set_rows.get(name, 0))
                    elif name in errors:
                        coverage["failed"][track] = errors[name]
                    else:
                        coverage["incomplete"].append(track)
            recorded = self.split_attrs(split)
            if "sample" in recorded:
                part["sample"] = {k: recorded["sample"][k] for k in ("path", "rows", "sha256")}
            splits[split] = part
        return {
            "path": self.path, "format": self.format, "layout": FORMAT, "dva_version": attrs.get("dva_version"),
            "timeline": attrs.get("timeline"), "feature_sets": sets, "splits": splits, "bytes": self._bytes(),
        }

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _typed(name: str, values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values).astype(DTYPES[name], copy=False))


class ZarrStore(Store):
    format = "zarr"

    def __init__(self, path: str, mode: str):
        super().__init__(path, mode)
        import zarr

        local = "://" not in path
        if mode == "r" and local and not (Path(path) / "zarr.json").is_file():
            raise StoreError(f"{path}: no feature store here; write one with `dva extract --out {path}`")
        try:
            self._zarr_root = zarr.open_group(path, mode="r" if mode == "r" else "a", zarr_format=3)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise StoreError(f"{path}: cannot open the feature store ({exc}); write one with `dva extract --out {path}`") from None

    def _root(self):
        return self._zarr_root

    def _group(self, name: str, create: bool = False):
        if create:
            return self._zarr_root.require_group(name)
        try:
            return self._zarr_root[name]
        except KeyError:
            raise StoreError(f"{self.path}: no {name!r} in the store") from None

    def _children(self, group) -> list[str]:
        return [name for name, _ in group.groups()]

    def _arrays(self, group) -> list[str]:
        return [name for name, _ in group.arrays()]

    def splits(self) -> list[str]:
        if "://" in self.path:
            return super().splits()
        # the file system, not zarr's listing: zarr warns about the claims folder (.claims) it does not know
        return sorted(p.name for p in Path(self.path).iterdir() if not p.name.startswith(".") and (p / "zarr.json").is_file())

    def _has(self, name: str) -> bool:
        if "://" not in self.path:
            return (Path(self.path) / name / "zarr.json").is_file()
        return name in self._zarr_root

    def _track_index(self, split: str) -> dict[str, dict]:
        if "://" in self.path:
            if not self._has(split):
                return {}
            return {name: dict(group.attrs) for name, group in self._zarr_root[split].groups()}
        # a local store: one directory scan and one small JSON read per track, and tolerant of
        # tracks that another process is creating or deleting right now
        folder = Path(self.path) / split
        if not folder.is_dir():
            return {}
        index = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                try:
                    meta = json.loads((Path(entry.path) / "zarr.json").read_bytes())
                except (FileNotFoundError, json.JSONDecodeError):
                    index[entry.name] = {}
                    continue
                if meta.get("node_type") == "group":
                    index[entry.name] = meta.get("attributes") or {}
        return index

    def _get_attrs(self, group) -> dict:
        return dict(group.attrs)

    def _delete_root_attrs(self, keys) -> None:
        attrs = self._zarr_root.attrs
        for key in keys:
            if key in attrs:
                del attrs[key]

    def _set_attrs(self, group, attrs: dict) -> None:
        group.attrs.update(_json_ready(attrs))

    def _write_array(self, group, name: str, values: np.ndarray) -> None:
        from zarr.codecs import BloscCodec

        chunks = (max(1, min(ROWS_PER_CHUNK, values.shape[0])), *values.shape[1:]) if values.ndim else ()
        array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks, compressors=BloscCodec(cname="lz4", clevel=3), overwrite=True)
        if values.size:
            array[...] = values

    def _read_array(self, group, name: str) -> np.ndarray:
        return group[name][...]

    def _shape(self, group, name: str) -> tuple:
        return tuple(group[name].shape)

    def delete_track(self, split: str, track: str) -> None:
        if self._has(f"{split}/{track}"):
            del self._zarr_root[f"{split}/{track}"]

    def _delete(self, group, name: str) -> None:
        if name in group:
            del group[name]

    def _bytes(self) -> int:
        if "://" in self.path:
            return 0
        return sum(f.stat().st_size for f in Path(self.path).rglob("*") if f.is_file())


class HDF5Store(Store):
    """One HDF5 file; a single writer at a time (HDF5 has no concurrent writers)."""

    format = "hdf5"

    def __init__(self, path: str, mode: str):
        super().__init__(path, mode)
        import h5py

        if mode == "r" and not Path(path).is_file():
            raise StoreError(f"{path}: no HDF5 feature store here; make one with `dva convert STORE {path}`")
        try:
            self._file = h5py.File(path, "r" if mode == "r" else "a")
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the HDF5 store ({exc})") from None

    def _root(self):
        return self._file

    def _group(self, name: str, create: bool = False):
        if create:
            return self._file.require_group(name)
        if name not in self._file:
            raise StoreError(f"{self.path}: no {name!r} in the store")
        return self._file[name]

    def _children(self, group) -> list[str]:
        import h5py

        return [name for name, item in group.items() if isinstance(item, h5py.Group)]

    def _arrays(self, group) -> list[str]:
        import h5py

        return [name for name, item in group.items() if isinstance(item, h5py.Dataset)]

    def _has(self, name: str) -> bool:
        return name in self._file

    def _track_index(self, split: str) -> dict[str, dict]:
        import h5py

        if split not in self._file:
            return {}
        return {name: self._get_attrs(item) for name, item in self._file[split].items() if isinstance(item, h5py.Group)}

    def _get_attrs(self, group) -> dict:
        return {key: json.loads(value) for key, value in group.attrs.items()}

    def _delete_root_attrs(self, keys) -> None:
        for key in keys:
            if key in self._file.attrs:
                del self._file.attrs[key]

    def _set_attrs(self, group, attrs: dict) -> None:
        for key, value in _json_ready(attrs).items():
            group.attrs[key] = json.dumps(value)  # nested dicts and None survive as JSON text
        self._file.flush()

    def _write_array(self, group, name: str, values: np.ndarray) -> None:
        self._delete(group, name)
        chunks = (max(1, min(ROWS_PER_CHUNK, values.shape[0])), *values.shape[1:]) if values.size else None
        group.create_dataset(name, data=values, chunks=chunks, compression="lzf" if values.size else None)

    def _read_array(self, group, name: str) -> np.ndarray:
        return group[name][()]

    def _shape(self, group, name: str) -> tuple:
        return tuple(group[name].shape)

    def delete_track(self, split: str, track: str) -> None:
        if split in self._file and track in self._file[split]:
            del self._file[split][track]

    def _delete(self, group, name: str) -> None:
        if name in group:
            del group[name]

    def _bytes(self) -> int:
        return os.path.getsize(self.path)

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _json_ready(value):
    """Attrs as plain JSON types (numpy scalars and tuples included)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else list(v)))


def convert(src: str | Path, dst: str | Path, progress: bool = True) -> None:
    """Copy every split, track, feature set (failed ones as failed) and the root attrs into a new store."""
    from tqdm import tqdm

    if Path(dst).exists():
        raise StoreError(f"{dst} already exists: choose a new path for the converted store")
    with open_store(src, "r") as source, open_store(dst, "a") as target:
        sets = source.feature_sets()
        target.set_attrs(source.attrs)
        jobs = [(split, track, attrs) for split in source.splits() for track, attrs in source.track_index(split).items()]
        for split in source.splits():
            target.ensure_split(split)
            target.set_split_attrs(split, source.split_attrs(split))
        for split, track, attrs in tqdm(jobs, desc="convert", unit="track", disable=not progress):
            own = {k: v for k, v in attrs.items() if k not in TRACK_BOOKKEEPING}
            if source.has_array(split, track, "frame_time"):
                target.create_track(split, track, {n: source.read(split, track, n) for n in TRACK_ARRAYS if source.has_array(split, track, n)}, own)
            for name in sorted(complete_sets(attrs)):
                target.write_set(split, track, name, sets[name]["modality"], source.read_set(split, track, name, sets[name]["modality"]))
            for name, reason in set_errors(attrs).items():
                target.mark_failed(split, track, reason, [name], own)


def format_1_sets(attrs: dict, names: dict[str, str]) -> dict[str, dict]:
    """The two feature sets ({name: info}) of a dva 0.1 store's root attrs (or of a run trained on one)."""
    preprocessing = attrs.get("preprocessing") or {}
    sets = {}
    for modality in MODALITIES:
        encoder = attrs.get(f"{modality}_encoder") or {}
        own = {k: v for k, v in preprocessing.items() if k.startswith(modality)}
        sets[check_set_name(names[modality])] = {"modality": modality, "dim": encoder.get("dim"), "encoder": encoder, "preprocessing": own, "upgraded_from": "format 1"}
    return sets


TRACK_BOOKKEEPING = ("rows", "labelled", "valid_labels", "complete", "error", "done_at", "set_rows")  # what the store keeps itself


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
            group = store._group(f"{split}/{track}")
            present = set(store._arrays(group))
            leftovers = present & {*FORMAT_1_ARRAYS["visual"], *FORMAT_1_ARRAYS["audio"]}
            if set(sets) <= complete_sets(track_attrs) or (isinstance(track_attrs.get("complete"), dict) and not leftovers):
                for name in leftovers:  # an earlier upgrade stopped after writing the sets
                    store._delete(group, name)
                continue
            own = {k: v for k, v in track_attrs.items() if k not in TRACK_BOOKKEEPING}
            # stopped inside this track's upgrade (sets begun, "set_rows" written below): its old arrays are all still there
            begun = "set_rows" in track_attrs and leftovers == {*FORMAT_1_ARRAYS["visual"], *FORMAT_1_ARRAYS["audio"]}
            if (track_attrs.get("complete") is True or begun) and "frame_time" in present:
                old = {name: store._read_array(group, name) for name in present}
                # the old arrays go last: a crash before the attrs below leaves the track readable as format 1
                store._set_attrs(group, {"rows": int(old["frame_time"].shape[0]), "labelled": "labels" in old, "valid_labels": int(track_attrs.get("valid_labels") or 0), "error": {}, "done_at": {}, "set_rows": {}})
                for name, info in sets.items():
                    data_key, extra_key = FORMAT_1_ARRAYS[info["modality"]]
                    store.write_set(split, track, name, info["modality"], dict(zip(SET_ARRAYS[info["modality"]], (old[data_key], old[extra_key]))))
                for name in (*FORMAT_1_ARRAYS["visual"], *FORMAT_1_ARRAYS["audio"]):
                    store._delete(group, name)
            else:
                reason = track_attrs.get("error") or "incomplete when dva 0.1 stopped"
                store._set_attrs(group, {"complete": {}, "error": {}, "done_at": {}})
                if track_attrs.get("error"):
                    store.mark_failed(split, track, reason, list(sets), own)
            upgraded += 1
        timeline = {k: v for k, v in preprocessing.items() if not k.startswith(("visual", "audio"))}
        store.set_attrs({"format": FORMAT, "feature_sets": sets, "timeline": timeline})
        store._delete_root_attrs(("visual_encoder", "audio_encoder", "preprocessing"))
    return upgraded
