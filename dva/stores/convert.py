"""`dva convert`: the same store between Zarr and HDF5, through the public API of both."""

from __future__ import annotations

from pathlib import Path

from dva.errors import StoreError
from dva.stores.attrs import TRACK_ARRAYS, TRACK_BOOKKEEPING, complete_sets, set_errors
from dva.stores.open import open_store


def convert(src: str | Path, dst: str | Path, progress: bool = True) -> None:
    """Copy every split, track, feature set (failed ones as failed) and the root attrs into a new store."""
    from tqdm import tqdm

    if Path(dst).exists():
        raise StoreError(f"{dst} already exists: choose a new path for the converted store")
    with open_store(src, "r") as source, open_store(dst, "a") as target:
        sets = source.feature_sets()
        target.set_attrs({k: v for k, v in source.attrs.items() if k != "checksums"})  # the target records its own
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
