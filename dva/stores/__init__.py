"""The feature store: one small API over Zarr v3 (a directory or fsspec URL) and HDF5 (one file).

Layout (format 2, DESIGN.md): the root attrs name every **feature set** (what one encoder
configuration produced) with its modality, dim and provenance. `<split>/<track>/` holds the
track's own arrays (`frame_time`, `labels`; `labels_expr`, `labels_au` for the other challenges, with the track's
`tasks` attr {task: split}) and one group per feature set (`<NAME>/data` and
`mask` for a visual set, `time` for an audio set). A set is written whole, then marked complete
for that track in the track's attrs (`complete: {NAME: true}`); a run that dies never leaves a
set marked complete, and adding a set never touches another. Nothing else in dva imports zarr
or h5py.

Opening costs the same per track whatever the split's size: `track_index` lists a split once
and reads each track's attrs once; nothing else lists a split.

Modules, each importing only those above it: `attrs` (constants and the pure rules on attrs),
`summary` (what `dva info` says, as data), `base` (the `Store` API), `zarr_store` and `hdf5_store`
(the backends), `open` (`open_store`), `convert` (Zarr <-> HDF5), `format1` (dva 0.1 stores and
`upgrade`), `verify` (every chunk read back: `dva verify`, extract's check of what it skips, and the checksums
`dva upgrade` gives a store written before them).
"""

from dva.stores.attrs import (
    DTYPES,
    FORMAT,
    HDF5_SUFFIXES,
    LABEL_ARRAYS,
    MODALITIES,
    ROWS_PER_CHUNK,
    SET_ARRAYS,
    TRACK_ARRAYS,
    TRACK_BOOKKEEPING,
    check_set_name,
    complete_sets,
    framing_mismatches,
    set_differences,
    set_errors,
    sets_mismatch,
    track_tasks,
    why_not_usable,
)
from dva.stores.base import Store
from dva.stores.convert import convert
from dva.stores.format1 import FORMAT_1_ARRAYS, format_1_sets, upgrade
from dva.stores.hdf5_store import HDF5Store
from dva.stores.open import open_store
from dva.stores.summary import describe_set
from dva.stores.verify import Finding, VerifyReport, add_checksums, check_track, verify
from dva.stores.zarr_store import ZarrStore, is_remote, store_bytes

__all__ = [
    "DTYPES", "FORMAT", "is_remote", "FORMAT_1_ARRAYS", "HDF5_SUFFIXES", "LABEL_ARRAYS", "MODALITIES", "ROWS_PER_CHUNK", "SET_ARRAYS", "TRACK_ARRAYS", "TRACK_BOOKKEEPING",
    "Finding", "HDF5Store", "Store", "VerifyReport", "add_checksums", "check_track", "verify", "ZarrStore", "check_set_name", "complete_sets", "convert", "framing_mismatches", "describe_set", "format_1_sets", "open_store",
    "set_differences", "set_errors", "sets_mismatch", "store_bytes", "track_tasks", "upgrade", "why_not_usable",
]
