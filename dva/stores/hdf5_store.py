"""The HDF5 backend: the same layout in one file, attrs kept as JSON text."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dva.errors import StoreError
from dva.stores.attrs import ROWS_PER_CHUNK, json_ready
from dva.stores.base import Store


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
        for key, value in json_ready(attrs).items():
            group.attrs[key] = json.dumps(value)  # nested dicts and None survive as JSON text
        self._file.flush()

    def _write_array(self, group, name: str, values: np.ndarray) -> None:
        self._delete(group, name)
        chunks = (max(1, min(ROWS_PER_CHUNK, values.shape[0])), *values.shape[1:]) if values.size else None
        group.create_dataset(name, data=values, chunks=chunks, compression="lzf" if values.size else None)

    def _read_array(self, group, name: str) -> np.ndarray:
        return group[name][()]

    def delete_track(self, split: str, track: str) -> None:
        if split in self._file and track in self._file[split]:
            del self._file[split][track]

    def _delete(self, group, name: str) -> None:
        if name in group:
            del group[name]

    def size_bytes(self) -> int | None:
        return os.path.getsize(self.path)

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
