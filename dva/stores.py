"""The feature store: one small API over Zarr v3 (a directory or fsspec URL) and HDF5 (one file).

Layout (DESIGN.md): root attrs hold the encoders' provenance; `<split>/<track>/` holds the
arrays of one track and its attrs. A track's arrays are written first and `complete` is set
last, so a run that dies never leaves a track marked complete. Nothing else in dva imports
zarr or h5py.
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
        return sorted(self._children(self._root()))

    def ensure_split(self, split: str) -> None:
        """Create the split group up front, before concurrent writers add tracks to it."""
        self._group(split, create=True)

    # --- tracks
    def tracks(self, split: str) -> list[str]:
        if split not in self.splits():
            return []
        return sorted(self._children(self._group(split)))

    def track_attrs(self, split: str, track: str) -> dict:
        return self._get_attrs(self._group(f"{split}/{track}"))

    def is_complete(self, split: str, track: str) -> bool:
        if track not in self.tracks(split):
            return False
        return bool(self.track_attrs(split, track).get("complete", False))

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
        self._set_attrs(group, {"complete": True})

    def mark_failed(self, split: str, track: str, reason: str, attrs: dict | None = None) -> None:
        self.delete_track(split, track)
        group = self._group(f"{split}/{track}", create=True)
        self._set_attrs(group, {**(attrs or {}), "complete": False, "error": reason})

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
            for track in self.tracks(split):
                part["tracks"] += 1
                track_attrs = self.track_attrs(split, track)
                if track_attrs.get("complete"):
                    part["complete"] += 1
                    group = self._group(f"{split}/{track}")
                    part["frames"] += self._shape(group, "visual")[0]
                    part["audio_rows"] += self._shape(group, "audio")[0]
                    if "labels" in self._arrays(group):
                        labels = self._read_array(group, "labels")
                        part["valid_labels"] += int((~np.isnan(labels).any(axis=1)).sum())
                elif "error" in track_attrs:
                    part["failed"][track] = track_attrs["error"]
                else:
                    part["incomplete"].append(track)
            splits[split] = part
        return {
            "path": self.path,
            "format": self.format,
            **{k: attrs.get(k) for k in ("dva_version", "visual_encoder", "audio_encoder", "preprocessing")},
            "splits": splits,
            "bytes": self._bytes(),
        }

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
        if split in self._children(self._zarr_root) and track in self._children(self._zarr_root[split]):
            del self._zarr_root[split][track]

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
        jobs = [(split, track) for split in source.splits() for track in source.tracks(split)]
        for split in source.splits():
            target.ensure_split(split)
        for split, track in tqdm(jobs, desc="convert", unit="track", disable=not progress):
            attrs = source.track_attrs(split, track)
            if attrs.get("complete"):
                target.write_track(split, track, source.read_track(split, track), {k: v for k, v in attrs.items() if k != "complete"})
            elif "error" in attrs:
                target.mark_failed(split, track, attrs["error"], {k: v for k, v in attrs.items() if k not in ("complete", "error")})
