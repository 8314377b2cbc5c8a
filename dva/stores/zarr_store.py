"""The Zarr v3 backend: a directory, or any fsspec URL (s3://, gs://, memory://, ...) the workers share."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from dva.errors import StoreDamage, StoreError, first_line
from dva.stores.attrs import ROWS_PER_CHUNK, UNREADABLE, json_ready
from dva.stores.base import Store


def is_remote(path: str) -> bool:
    """Whether a store path is an fsspec URL rather than a local directory."""
    return "://" in str(path)


def store_bytes(path: str) -> int | None:
    """The bytes under a store: the local directory's files, or fsspec's `du` for a URL; None when object
    storage does not answer (permissions), so that `dva info` says unknown rather than 0."""
    if not is_remote(path):
        return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(path)
        return int(fs.du(root))
    except OSError:
        return None


class ZarrStore(Store):
    format = "zarr"
    checksum = "crc32c"  # Zarr v3's codec: 4 bytes after each compressed chunk

    def __init__(self, path: str, mode: str):
        super().__init__(path, mode)
        import zarr

        if mode == "r" and not is_remote(path) and not (Path(path) / "zarr.json").is_file():
            raise StoreError(f"{path}: no feature store here; write one with `dva extract --out {path}`")
        try:
            self._zarr_root = zarr.open_group(path, mode="r" if mode == "r" else "a", zarr_format=3)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise StoreError(f"{path}: cannot open the feature store ({exc}); write one with `dva extract --out {path}`") from None
        self._record_checksums_if_new()

    def _root(self):
        return self._zarr_root

    def _group(self, name: str, create: bool = False):
        if create:
            return self._zarr_root.require_group(name)
        try:
            return self._zarr_root[name]
        except KeyError:
            raise StoreError(f"{self.path}: no {name!r} in the store") from None
        except ValueError as exc:  # json's errors among them: a zarr.json overwritten or cut short
            raise StoreDamage(f"unreadable metadata ({first_line(exc, 80)})", f"{self.path}: {name}") from None

    def _children(self, group) -> list[str]:
        return [name for name, _ in group.groups()]

    def _arrays(self, group) -> list[str]:
        return [name for name, _ in group.arrays()]

    def splits(self) -> list[str]:
        if is_remote(self.path):
            with warnings.catch_warnings():  # zarr warns about the claims folder (.claims) it does not know
                warnings.filterwarnings("ignore", message="Object at .claims is not recognized")
                return super().splits()
        # the file system, not zarr's listing: zarr warns about the claims folder (.claims) it does not know
        return sorted(p.name for p in Path(self.path).iterdir() if not p.name.startswith(".") and (p / "zarr.json").is_file())

    def _has(self, name: str) -> bool:
        if not is_remote(self.path):
            return (Path(self.path) / name / "zarr.json").is_file()
        return name in self._zarr_root

    def _track_index(self, split: str) -> dict[str, dict]:
        if is_remote(self.path):
            if not self._has(split):
                return {}
            try:
                return {name: dict(group.attrs) for name, group in self._zarr_root[split].groups()}
            except ValueError as exc:  # one track's zarr.json cannot be read: zarr's listing reads them all
                raise StoreDamage(f"unreadable metadata of a track ({first_line(exc, 80)})", f"{self.path}: {split}") from None
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
                except FileNotFoundError:
                    index[entry.name] = {}
                    continue
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # damaged (or being written this very moment)
                    index[entry.name] = {UNREADABLE: f"zarr.json: {first_line(exc, 60)}"}
                    continue
                if meta.get("node_type") == "group":
                    index[entry.name] = meta.get("attributes") or {}
        return index

    def _get_attrs(self, group) -> dict:
        return dict(group.attrs)

    def _delete_attrs(self, group, keys) -> None:
        attrs = group.attrs
        for key in keys:
            if key in attrs:
                del attrs[key]

    def _set_attrs(self, group, attrs: dict) -> None:
        group.attrs.update(json_ready(attrs))

    def _write_array(self, group, name: str, values: np.ndarray) -> None:
        from zarr.codecs import BloscCodec, Crc32cCodec

        chunks = (max(1, min(ROWS_PER_CHUNK, values.shape[0])), *values.shape[1:]) if values.ndim else ()
        # every chunk checksummed, and every chunk stored (zarr leaves out one equal to the fill value by default), so
        # that a chunk absent from storage is one lost, never one that was all zeros
        compressors = (BloscCodec(cname="lz4", clevel=3), *((Crc32cCodec(),) if self.checksums else ()))
        array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks, compressors=compressors, overwrite=True,
                                   config={"write_empty_chunks": self.checksums})
        if values.size:
            array[...] = values

    def _open_array(self, group, name: str):
        try:
            return group[name]
        except KeyError:
            raise StoreDamage(f"{name} missing") from None
        except ValueError as exc:
            raise StoreDamage(f"{name}: unreadable metadata ({first_line(exc, 80)})") from None

    def _read_array(self, group, name: str) -> np.ndarray:
        array = self._open_array(group, name)
        try:
            values = array[...]
        except (ValueError, RuntimeError) as exc:  # the crc32c codec's ValueError, blosc's RuntimeError, a chunk of the wrong size
            raise StoreDamage(f"{name}: {_decode_problem(exc)}") from None
        if _checksummed(array) and (stored := self._stored_chunks(array)) < array.nchunks:  # zarr reads a missing chunk as fill values
            raise StoreDamage(f"{name}: {array.nchunks - stored} of {array.nchunks} chunks missing")
        return values

    def _stored_chunks(self, array) -> int:
        """How many chunks of an array storage holds: on a local disk a walk of its folder (zarr's own count lists the
        store asynchronously, several times slower per small array), elsewhere zarr's."""
        if is_remote(self.path):
            return array.nchunks_initialized
        chunks = Path(self.path) / array.path / "c"
        return 1 if chunks.is_file() else sum(len(files) for _, _, files in os.walk(chunks))  # a file: a 0-d array's one chunk

    def _check_array(self, group, name: str) -> list[str]:
        """Every problem of one array, chunk by chunk: missing (where every chunk was stored), truncated (shorter than
        its blosc header says), checksum mismatch, or not decodable."""
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        array = self._open_array(group, name)
        checked, problems = _checksummed(array), []
        blosc = any(codec.to_dict().get("name") == "blosc" for codec in array.metadata.codecs)
        for coords in array._iter_chunk_coords():
            key = array.metadata.encode_chunk_key(coords)
            buffer = sync((array.store_path / key).get(prototype=default_buffer_prototype()))
            where = f"{name} chunk {'.'.join(map(str, coords))}"
            if buffer is None:
                if checked:
                    problems.append(f"{where} missing")
                continue
            raw = buffer.to_bytes()
            expected = int.from_bytes(raw[12:16], "little") + (4 if checked else 0) if len(raw) >= 16 else None  # blosc's header: cbytes
            if blosc and (expected is None or len(raw) < expected):
                problems.append(f"{where} truncated ({len(raw)} of {expected if expected else 'at least 16'} bytes)")
                continue
            try:
                array.blocks[coords]
            except (ValueError, RuntimeError) as exc:
                problems.append(f"{where}: {_decode_problem(exc)}")
        return problems

    def _checksummed_array(self, group, name: str) -> bool:
        return _checksummed(self._open_array(group, name))

    def delete_track(self, split: str, track: str) -> None:
        if self._has(f"{split}/{track}"):
            del self._zarr_root[f"{split}/{track}"]

    def _delete(self, group, name: str) -> None:
        if name in group:
            del group[name]

    def size_bytes(self) -> int | None:
        return store_bytes(self.path)


def _checksummed(array) -> bool:
    """Whether an array was written with the crc32c codec (and so with every chunk stored)."""
    return any(codec.to_dict().get("name") == "crc32c" for codec in array.metadata.codecs)


def _decode_problem(exc: BaseException) -> str:
    return "checksum mismatch" if "checksum" in str(exc).lower() else f"cannot be decoded ({first_line(exc, 80)})"
