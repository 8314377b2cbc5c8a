"""The HDF5 backend: the same layout in one file, attrs kept as JSON text."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dva.errors import StoreDamage, StoreError, first_line
from dva.stores.attrs import ROWS_PER_CHUNK, json_ready
from dva.stores.base import Store


class HDF5Store(Store):
    """One HDF5 file; a single writer at a time (HDF5 has no concurrent writers)."""

    format = "hdf5"
    checksum = "fletcher32"  # HDF5's filter: a checksum after each chunk

    def __init__(self, path: str, mode: str):
        super().__init__(path, mode)
        import h5py

        if mode == "r" and not Path(path).is_file():
            raise StoreError(f"{path}: no HDF5 feature store here; make one with `dva convert STORE {path}`")
        try:
            self._file = h5py.File(path, "r" if mode == "r" else "a")
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the HDF5 store ({exc})") from None
        self._record_checksums_if_new()

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

    def _delete_attrs(self, group, keys) -> None:
        for key in keys:
            if key in group.attrs:
                del group.attrs[key]
        self._file.flush()

    def _set_attrs(self, group, attrs: dict) -> None:
        for key, value in json_ready(attrs).items():
            group.attrs[key] = json.dumps(value)  # nested dicts and None survive as JSON text
        self._file.flush()

    def _write_array(self, group, name: str, values: np.ndarray) -> None:
        self._delete(group, name)
        chunks = (max(1, min(ROWS_PER_CHUNK, values.shape[0])), *values.shape[1:]) if values.size else None
        group.create_dataset(name, data=values, chunks=chunks, compression="lzf" if values.size else None, fletcher32=bool(values.size) and self.checksums)

    def _open_array(self, group, name: str):
        try:
            return group[name]
        except KeyError:
            raise StoreDamage(f"{name} missing") from None

    def _read_array(self, group, name: str) -> np.ndarray:
        dataset = self._open_array(group, name)
        try:
            return dataset[()]
        except OSError as exc:  # HDF5 says a filter failed: Fletcher32's mismatch, or lzf on bytes that are not its own
            raise StoreDamage(f"{name}: {_filter_problem(dataset, exc)}") from None

    def _check_array(self, group, name: str) -> list[str]:
        dataset, problems = self._open_array(group, name), []
        for chunk in dataset.iter_chunks() if dataset.chunks and dataset.size else ():
            try:
                dataset[chunk]
            except OSError as exc:
                problems.append(f"{name} chunk {chunk[0].start // dataset.chunks[0]}: {_filter_problem(dataset, exc)}")
        return problems

    def _checksummed_array(self, group, name: str) -> bool:
        dataset = self._open_array(group, name)
        return bool(dataset.fletcher32) or not dataset.size

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


def _filter_problem(dataset, exc: OSError) -> str:
    return "checksum mismatch (Fletcher32)" if dataset.fletcher32 else f"cannot be decoded ({first_line(exc, 80)})"
