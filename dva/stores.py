"""The feature store: one small API over Zarr v3 (a directory or fsspec URL) and HDF5 (one file).

Layout (DESIGN.md): root attrs hold the encoders' provenance; `<split>/<track>/` holds the
arrays of one track and its attrs. A track's arrays are written first and `complete` is set
last, so a run that dies never leaves a track marked complete. Nothing else in dva imports
zarr or h5py.

Opening costs the same per track whatever the split's size: `track_index` lists a split once
and reads each track's attrs once; nothing else lists a split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dva.errors import StoreError

ARRAYS = ("visual", "visual_mask", "frame_time", "audio", "audio_time", "labels")
DTYPES = {"visual": np.float16, "visual_mask": np.bool_, "frame_time": np.float32, "audio": np.float16, "audio_time": np.float32, "labels": np.float32}
ROWS_PER_CHUNK = 4096
HDF5_SUFFIXES = (".h5", ".hdf5")


def open_store(path: str | Path, mode: str = "r") -> "Store":
    """Open a store: "r" read-only (must exist), "a" create or append. A .h5/.hdf5 path is HDF5, anything else Zarr."""
    if mode not in ("r", "a"):
        raise ValueError(f"open_store: mode must be 'r' or 'a', not {mode!r}")
    cls = HDF5Store if str(path).lower().endswith(HDF5_SUFFIXES) else ZarrStore
    return cls(str(path), mode)


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
        A track whose metadata is being written by another process shows as {} (not complete)."""
        return dict(sorted(self._track_index(split).items()))

    def tracks(self, split: str) -> list[str]:
        return list(self.track_index(split))

    def track_attrs(self, split: str, track: str) -> dict:
        return self._get_attrs(self._group(f"{split}/{track}"))

    def track_state(self, split: str, track: str) -> dict:
        """One track's attrs, {} when the track is not in the store; never lists the split."""
        return self.track_attrs(split, track) if self._has(f"{split}/{track}") else {}

    def is_complete(self, split: str, track: str) -> bool:
        return bool(self.track_state(split, track).get("complete", False))

    def write_track(self, split: str, track: str, arrays: dict[str, np.ndarray], attrs: dict) -> None:
        """Replace the track with these arrays and attrs; `complete` is set last."""
        unknown = set(arrays) - set(ARRAYS)
        if unknown:
            raise ValueError(f"write_track: unknown arrays {sorted(unknown)}")
        typed = {name: np.ascontiguousarray(np.asarray(values).astype(DTYPES[name], copy=False)) for name, values in arrays.items()}
        self.delete_track(split, track)
        group = self._group(f"{split}/{track}", create=True)
        self._set_attrs(group, {**attrs, "complete": False})
        for name, values in typed.items():
            self._write_array(group, name, values)
        # what `dva info` reports, kept in the attrs so that it never has to open an array
        rows = {name: int(values.shape[0]) for name, values in typed.items()}
        valid = int((~np.isnan(typed["labels"]).any(axis=1)).sum()) if "labels" in typed else 0
        self._set_attrs(group, {"rows": rows, "valid_labels": valid, "complete": True})

    def mark_failed(self, split: str, track: str, reason: str, attrs: dict | None = None) -> None:
        import time

        self.delete_track(split, track)
        group = self._group(f"{split}/{track}", create=True)
        self._set_attrs(group, {**(attrs or {}), "complete": False, "error": reason, "failed_at": time.time()})

    def read(self, split: str, track: str, name: str) -> np.ndarray:
        return self._read_array(self._group(f"{split}/{track}"), name)

    def read_track(self, split: str, track: str) -> dict[str, np.ndarray]:
        group = self._group(f"{split}/{track}")
        present = set(self._arrays(group))
        return {name: self._read_array(group, name) for name in ARRAYS if name in present}

    def summary(self) -> dict:
        """What `dva info --json` prints."""
        attrs = self.attrs
        splits = {}
        for split in self.splits():
            part = {"tracks": 0, "complete": 0, "failed": {}, "incomplete": [], "frames": 0, "valid_labels": 0, "audio_rows": 0}
            for track, track_attrs in self.track_index(split).items():
                part["tracks"] += 1
                if track_attrs.get("complete"):
                    part["complete"] += 1
                    rows, valid = track_attrs.get("rows"), track_attrs.get("valid_labels")
                    if rows is None:  # written before the counts were kept in the attrs
                        rows, valid = self._counts(split, track)
                    part["frames"] += rows.get("visual", 0)
                    part["audio_rows"] += rows.get("audio", 0)
                    part["valid_labels"] += valid
                elif "error" in track_attrs:
                    part["failed"][track] = track_attrs["error"]
                else:
                    part["incomplete"].append(track)
            recorded = self.split_attrs(split)
            if "sample" in recorded:
                part["sample"] = {k: recorded["sample"][k] for k in ("path", "rows", "sha256")}
            splits[split] = part
        return {
            "path": self.path,
            "format": self.format,
            **{k: attrs.get(k) for k in ("dva_version", "visual_encoder", "audio_encoder", "preprocessing")},
            "splits": splits,
            "bytes": self._bytes(),
        }

    def _counts(self, split: str, track: str) -> tuple[dict, int]:
        group = self._group(f"{split}/{track}")
        rows = {name: self._shape(group, name)[0] for name in self._arrays(group)}
        valid = 0
        if "labels" in rows:
            valid = int((~np.isnan(self._read_array(group, "labels")).any(axis=1)).sum())
        return rows, valid

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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

    def _set_attrs(self, group, attrs: dict) -> None:
        for key, value in _json_ready(attrs).items():
            group.attrs[key] = json.dumps(value)  # nested dicts and None survive as JSON text
        self._file.flush()

    def _write_array(self, group, name: str, values: np.ndarray) -> None:
        chunks = (max(1, min(ROWS_PER_CHUNK, values.shape[0])), *values.shape[1:]) if values.size else None
        group.create_dataset(name, data=values, chunks=chunks, compression="lzf" if values.size else None)

    def _read_array(self, group, name: str) -> np.ndarray:
        return group[name][()]

    def _shape(self, group, name: str) -> tuple:
        return tuple(group[name].shape)

    def delete_track(self, split: str, track: str) -> None:
        if split in self._file and track in self._file[split]:
            del self._file[split][track]

    def _bytes(self) -> int:
        return os.path.getsize(self.path)

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _json_ready(value):
    """Attrs as plain JSON types (numpy scalars and tuples included)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else list(v)))


def convert(src: str | Path, dst: str | Path, progress: bool = True) -> None:
    """Copy every split and track (failed ones as failed) and the root attrs into a new store."""
    from tqdm import tqdm

    if Path(dst).exists():
        raise StoreError(f"{dst} already exists: choose a new path for the converted store")
    with open_store(src, "r") as source, open_store(dst, "a") as target:
        target.set_attrs(source.attrs)
        jobs = [(split, track, attrs) for split in source.splits() for track, attrs in source.track_index(split).items()]
        for split in source.splits():
            target.ensure_split(split)
            target.set_split_attrs(split, source.split_attrs(split))
        for split, track, attrs in tqdm(jobs, desc="convert", unit="track", disable=not progress):
            attrs = {k: v for k, v in attrs.items() if k not in ("rows", "valid_labels")}
            if attrs.get("complete"):
                target.write_track(split, track, source.read_track(split, track), {k: v for k, v in attrs.items() if k != "complete"})
            elif "error" in attrs:
                target.mark_failed(split, track, attrs["error"], {k: v for k, v in attrs.items() if k not in ("complete", "error")})
