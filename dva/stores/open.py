"""Which backend a path opens with: a .h5/.hdf5 path is HDF5, anything else (a directory or a URL) Zarr."""

from __future__ import annotations

from pathlib import Path

from dva.stores.attrs import HDF5_SUFFIXES
from dva.stores.base import Store
from dva.stores.hdf5_store import HDF5Store
from dva.stores.zarr_store import ZarrStore


def open_store(path: str | Path, mode: str = "r") -> Store:
    """Open a store: "r" read-only (must exist), "a" create or append. A .h5/.hdf5 path is HDF5, anything else Zarr
    (a folder, or an fsspec URL such as s3://bucket/stores).

    >>> with dva.open_store("stores") as store:
    ...     store.splits(), list(store.feature_sets())
    (['test', 'train', 'val'], ['ast-...', 'clip-...'])
    """
    if mode not in ("r", "a"):
        raise ValueError(f"open_store: mode must be 'r' or 'a', not {mode!r}")
    cls = HDF5Store if str(path).lower().endswith(HDF5_SUFFIXES) else ZarrStore
    return cls(str(path), mode)
