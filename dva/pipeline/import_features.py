"""`dva import`: a feature set computed elsewhere, one `<track>.npy` or `<track>.npz` per track, into the store.

Every file is read and checked against the store's track before anything is written (rows, times,
feature width, values), so a bad folder never leaves a half-imported set. Then the set's info (its
provenance: the folder, file count and a digest of the files) goes into the root attrs under the
store's metadata claim, and each track is written under the claim of its video, the same claim
`dva extract` takes, so an extract on the same split never edits the same track's attrs at once.
No torch here: an import runs wherever numpy and zarr do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dva import __version__
from dva.errors import ConfigError, DataError, StoreError
from dva.stores import MODALITIES, SET_ARRAYS, check_set_name, complete_sets, set_differences

SUFFIXES = (".npy", ".npz")
AUDIO_SLACK = 1.0  # seconds an audio row may lie past the track's last frame (an encoder's last window)
FLOAT16_MAX = float(np.finfo(np.float16).max)  # the store keeps features as float16
SHOWN = 10  # names listed in one warning line before "and N more"


@dataclass(frozen=True)
class ImportSettings:
    """Every `dva import` flag."""

    store: str
    split: str
    name: str
    modality: str
    folder: str
    rate: float | None = None  # audio: rows per second; None: each .npz carries a time array
    overwrite: bool = False
    progress: bool = True
    claim_timeout: float = 600.0

    def validate(self) -> None:
        if self.modality not in MODALITIES:
            raise ConfigError(f"--modality must be visual or audio, not {self.modality!r}")
        try:
            check_set_name(self.name)
        except StoreError as exc:
            raise ConfigError(f"--name {exc}") from None
        if self.rate is not None:
            if self.modality == "visual":
                raise ConfigError("--rate is for audio sets: a visual set has one row per annotation line")
            if not (np.isfinite(self.rate) and self.rate > 0):
                raise ConfigError(f"--rate must be a positive number of rows per second, not {self.rate}")
        if not Path(self.folder).is_dir():
            raise DataError(f"{self.folder}: no such folder of feature files")
        if self.claim_timeout <= 0:
            raise ConfigError("--claim-timeout must be positive")


@dataclass
class ImportReport:
    """What one `dva import` run did; every list names tracks (files for `unknown_files`)."""

    store: str
    split: str
    name: str
    imported: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # complete for the set before this run
    held: list[str] = dataclasses.field(default_factory=list)  # another process held the track: re-run to add it
    without_file: list[str] = dataclasses.field(default_factory=list)  # the set stays incomplete for these
    unknown_files: list[str] = dataclasses.field(default_factory=list)  # no such track in the split: skipped
    not_extracted: dict[str, str] = dataclasses.field(default_factory=dict)  # track -> why extract could not make it (no frame times): skipped
    warnings: list[str] = dataclasses.field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Problem(Exception):
    """One file that cannot be imported; gathered, then raised together as one DataError."""


# --------------------------------------------------------------------------- one file


def feature_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """({track: file} of the .npy/.npz files in folder, names of the other files there). Two files for one
    track (a.npy and a.npz) are refused."""
    files, others, twice = {}, [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in SUFFIXES:
            others.append(path.name)
        elif path.stem in files:
            twice.append(path.stem)
        else:
            files[path.stem] = path
    if twice:
        raise DataError(f"{folder}: two files for track {twice[0]} ({twice[0]}.npy and {twice[0]}.npz){_more(twice[1:])}: keep one per track")
    return files, others


def read_file(path: Path, modality: str, rate: float | None, raw: bytes | None = None) -> dict[str, np.ndarray]:
    """A feature file as the set stores it. Visual: {"data" float16 [T, D], "mask" bool [T]} (all-NaN rows masked,
    masked rows' NaN stored as 0); audio: {"data" float16 [K, D], "time" float32 [K]} (row k at k / rate s,
    or the .npz's time array). raw: the file's bytes when already read. Raises _Problem naming the file."""
    try:
        loaded = np.load(io.BytesIO(raw) if raw is not None else path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
        else:
            arrays = {"data": loaded}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _Problem(f"{path}: not a readable {path.suffix} file ({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})") from None
    allowed = SET_ARRAYS[modality]  # what a .npz may hold: the arrays of a set
    if "data" not in arrays or set(arrays) - set(allowed):
        raise _Problem(f"{path}: a {modality} .npz holds data and optionally {allowed[1]}, not {', '.join(sorted(arrays)) or 'nothing'}")
    data = arrays["data"]
    if data.ndim != 2 or not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise _Problem(f"{path}: data must be numbers [rows, features], not {data.dtype} {list(data.shape)}")
    if data.shape[1] == 0:
        raise _Problem(f"{path}: data has 0 features per row")
    data = data.astype(np.float32)
    return _visual(path, data, arrays.get("mask")) if modality == "visual" else _audio(path, data, arrays.get("time"), rate)


def _visual(path: Path, data: np.ndarray, mask: np.ndarray | None) -> dict[str, np.ndarray]:
    rows = data.shape[0]
    if mask is not None and (mask.dtype != np.bool_ or mask.shape != (rows,)):
        raise _Problem(f"{path}: mask must be bool [{rows}] (one per row of data), not {mask.dtype} {list(mask.shape)}")
    nan = np.isnan(data)
    valid = ~nan.all(axis=1) & (mask if mask is not None else True)
    partly = int((nan.any(axis=1) & valid).sum())
    if partly:
        raise _Problem(f"{path}: {partly} rows have NaN in some features but not all (mask them, or make the whole row NaN)")
    data[~valid] = np.nan_to_num(data[~valid], nan=0.0, posinf=0.0, neginf=0.0)  # a masked row's values are never read
    _check_range(path, data)
    return {"data": data.astype(np.float16), "mask": valid}


def _audio(path: Path, data: np.ndarray, times: np.ndarray | None, rate: float | None) -> dict[str, np.ndarray]:
    rows = data.shape[0]
    if rate is not None and times is not None:
        raise _Problem(f"{path}: has a time array and --rate {rate:g} was given: drop --rate to use the files' times")
    if rate is None and times is None:
        raise _Problem(f"{path}: no times for its rows: give --rate HZ (row k at k / HZ s), or a time array in the .npz")
    if times is None:
        times = np.arange(rows, dtype=np.float64) / rate
    if times.shape != (rows,) or not np.issubdtype(times.dtype, np.number):
        raise _Problem(f"{path}: time must be numbers [{rows}] (one per row of data), not {times.dtype} {list(times.shape)}")
    times = times.astype(np.float64)
    if not np.isfinite(times).all() or (np.diff(times) <= 0).any():
        raise _Problem(f"{path}: times must be finite and increase from row to row")
    if np.isnan(data).any():
        raise _Problem(f"{path}: {int(np.isnan(data).any(axis=1).sum())} audio rows have NaN (an audio set has no mask: leave such rows out)")
    _check_range(path, data)
    return {"data": data.astype(np.float16), "time": times.astype(np.float32)}


def _check_range(path: Path, data: np.ndarray) -> None:
    if data.size and not (np.abs(data) <= FLOAT16_MAX).all():
        raise _Problem(f"{path}: values beyond float16's range (±{FLOAT16_MAX:g}) or infinite: the store keeps features as float16; scale them first")


def check_against_track(path: Path, arrays: dict[str, np.ndarray], track: str, attrs: dict, last_frame: float | None) -> None:
    """Raise _Problem when a file's rows do not fit the store's track (attrs as `track_index` gives them;
    last_frame: the track's last frame time in seconds, for audio)."""
    rows = int(arrays["data"].shape[0])
    if "mask" in arrays and rows != attrs["rows"]:
        raise _Problem(f"{path}: {rows} rows, the store's track {track} has {attrs['rows']} (one per annotation line)")
    if "time" in arrays and rows and last_frame is not None and float(arrays["time"][-1]) > last_frame + AUDIO_SLACK:
        raise _Problem(
            f"{path}: its last row is at {float(arrays['time'][-1]):.2f} s, more than {AUDIO_SLACK:g} s past the last frame of "
            f"track {track} ({last_frame:.2f} s, {attrs['rows']} rows): check --rate or the time array"
        )


# --------------------------------------------------------------------------- the set's info


def set_info(settings: ImportSettings, dim: int, files: int, digest: str) -> dict:
    """The imported set's entry in the root attrs: modality, dim, encoder {"family": "imported"}, preprocessing
    (how rows are timed), rate (audio with --rate) and sources {split: {path, files, sha256}}."""
    if settings.modality == "visual":
        preprocessing = {"rate": "per frame"}
    else:
        preprocessing = {"rate": settings.rate if settings.rate is not None else "time arrays"}
    info = {"modality": settings.modality, "dim": int(dim), "encoder": {"family": "imported"}, "preprocessing": preprocessing}
    if settings.rate is not None:
        info["rate"] = settings.rate
    source = {"path": str(Path(settings.folder).resolve()), "files": files, "sha256": digest}
    return {**info, "sources": {settings.split: source}, "dva_version": __version__}


def differences(old: dict, new: dict) -> list[str]:
    """What differs between a store's set and this import: dim, then modality, encoder, preprocessing."""
    found = [] if old.get("dim") == new.get("dim") else [f"dim: {old.get('dim')!r} != {new.get('dim')!r}"]
    return found + set_differences(old, new)


def merged_info(existing: dict[str, dict], settings: ImportSettings, info: dict, index: dict[str, dict]) -> dict:
    """The set's info once this import is recorded: a new set, or the store's set with this split's source added.
    Refused in one line when the store's set was made otherwise, or when this split's tracks came from other files."""
    old = existing.get(settings.name)
    if old is None:
        return info
    found = differences(old, info)
    if found:
        shown = "; ".join(found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
        raise StoreError(f"{settings.store} already has a feature set {settings.name!r} made otherwise (store != this import: {shown}): import under another --name")
    before = (old.get("sources") or {}).get(settings.split)
    source = info["sources"][settings.split]
    done = [t for t, attrs in index.items() if settings.name in complete_sets(attrs)]
    if before and before.get("sha256") != source["sha256"] and done and not settings.overwrite:
        raise StoreError(
            f"{settings.name!r} holds {len(done)} tracks of {settings.split} imported from other files ({before.get('path')}, "
            f"{before.get('files')} files, sha256 {str(before.get('sha256'))[:12]}...): re-import with --overwrite to replace them all, or choose another --name"
        )
    return {**old, **info, "sources": {**(old.get("sources") or {}), **info["sources"]}}


# --------------------------------------------------------------------------- one run


def run_import(settings: ImportSettings) -> ImportReport:
    """Import settings.folder into feature set settings.name of settings.split; returns what happened.
    Raises DataError/ConfigError/StoreError (nothing written) when any file does not fit."""
    from tqdm import tqdm

    from dva.pipeline.claims import claims_for
    from dva.stores import open_store

    settings.validate()
    started = time.perf_counter()
    folder = Path(settings.folder)
    report = ImportReport(store=str(settings.store), split=settings.split, name=settings.name)
    files, others = feature_files(folder)
    if not files:
        raise DataError(f"{folder}: no .npy or .npz files (one <track>.npy or <track>.npz per track)")
    if others:
        report.warnings.append(f"{folder}: {len(others)} files that are not .npy/.npz ignored: {_names(others)}")
    if settings.modality == "audio" and settings.rate is None:
        plain = [p.name for p in files.values() if p.suffix.lower() == ".npy"]
        if plain:
            raise ConfigError(f"{folder / plain[0]}: a .npy audio file has no times: give --rate HZ (row k at k / HZ s on the frame clock){_more(plain[1:], 'files')}")

    # --- every check, before anything is written
    with open_store(settings.store, mode="r") as store:
        existing = store.feature_sets()  # refuses a dva 0.1 store, naming `dva upgrade`
        if settings.split not in store.splits():
            raise StoreError(f"{settings.store} has no {settings.split!r} split: `dva extract --split {settings.split}` it first (an import adds a set to the tracks extract made)")
        index = store.track_index(settings.split)
        report.unknown_files = [files[t].name for t in files if t not in index]
        report.without_file = [t for t in index if t not in files]
        busy = [t for t in files if t in index and not index[t]]  # being created by another process right now
        report.not_extracted = {t: _failure(index[t]) for t in files if t in index and index[t] and "rows" not in index[t]}
        matched = [t for t in files if t in index and t not in busy and t not in report.not_extracted]
        if not matched and not busy and not report.not_extracted:
            raise DataError(f"{folder}: none of its {len(files)} files names a track of split {settings.split} (files {_names(list(files), 3)}; tracks {_names(list(index), 3)})")
        problems: list[str] = []
        dims: dict[str, int] = {}
        digest = hashlib.sha256()
        for track in tqdm([t for t in files if t in index], desc="check", unit="file", disable=not settings.progress):
            path = files[track]
            raw = path.read_bytes()
            digest.update(raw)  # every file of the split's tracks, in name order: a resumed import has the same digest
            if track in busy or track in report.not_extracted:
                continue
            try:
                arrays = read_file(path, settings.modality, settings.rate, raw)
                last = None
                if settings.modality == "audio" and index[track]["rows"]:
                    last = float(store.read(settings.split, track, "frame_time")[-1])
                check_against_track(path, arrays, track, index[track], last)
                dims[track] = int(arrays["data"].shape[1])
            except _Problem as exc:
                problems.append(str(exc))
        if dims:
            dim, _ = Counter(dims.values()).most_common(1)[0]
            for track, width in dims.items():
                if width != dim:
                    problems.append(f"{files[track]}: {width} features per row, the other files have {dim}")
        if problems:
            raise DataError(problems[0] + _more(problems[1:], "problems"))
        info = set_info(settings, dim, len(matched) + len(busy) + len(report.not_extracted), digest.hexdigest()) if dims else None
        if info is not None:
            merged_info(existing, settings, info, index)

    if report.unknown_files:
        report.warnings.append(f"{len(report.unknown_files)} files name no track of split {settings.split} in the store, skipped: {_names(report.unknown_files)}")
    if report.without_file:
        report.warnings.append(f"{len(report.without_file)} of {len(index)} tracks of {settings.split} have no file in {folder}, {settings.name} stays incomplete for them: {_names(report.without_file)}")
    if report.not_extracted:
        shown = [f"{t} ({reason})" for t, reason in report.not_extracted.items()]
        report.warnings.append(f"{len(shown)} files are for tracks `dva extract` could not make (the store has no frame times for them), skipped: {_names(shown)}")
    report.held += busy
    if info is None:  # no file's track can take a set now: nothing to write
        return _finish(report, started)

    # --- the writes: the set's info, then track by track, each under its video's claim
    store = open_store(settings.store, mode="a")
    claims = claims_for(store, settings.split, settings.claim_timeout)
    try:
        with claims_for(store, "store", settings.claim_timeout).hold("metadata"):
            store.add_feature_set(settings.name, merged_info(store.feature_sets(), settings, info, store.track_index(settings.split)))
        videos: dict[str, list[str]] = {}
        for track in matched:
            videos.setdefault(Path(index[track]["video"]).stem if index[track].get("video") else track, []).append(track)
        with tqdm(total=len(matched), desc=f"import {settings.split}", unit="track", disable=not settings.progress) as bar:
            for key, tracks in videos.items():
                if not claims.try_claim(key):
                    report.held += tracks
                    bar.update(len(tracks))
                    continue
                try:
                    for track in tracks:
                        _write_track(store, settings, track, files[track], index[track], report)
                        bar.update(1)
                finally:
                    claims.release(key)
    finally:
        claims.release_all()
        store.close()
    return _finish(report, started)


def _finish(report: ImportReport, started: float) -> ImportReport:
    if report.held:
        report.warnings.append(f"{len(report.held)} tracks were being written by another process and are not imported yet: {_names(report.held)}; re-run `dva import` to add them")
    report.seconds = time.perf_counter() - started
    return report


def _write_track(store, settings: ImportSettings, track: str, path: Path, checked: dict, report: ImportReport) -> None:
    """One track, under its video's claim: look again at its attrs (another process may have changed it since the check)."""
    state = store.track_state(settings.split, track)
    if settings.name in complete_sets(state) and not settings.overwrite:
        report.skipped.append(track)
        return
    if state.get("rows") != checked["rows"]:  # re-made by `dva extract` since the check
        report.held.append(track)
        return
    try:
        arrays = read_file(path, settings.modality, settings.rate)
        check_against_track(path, arrays, track, state, None)
    except _Problem as exc:  # the file changed since the check
        raise DataError(f"{exc} (changed during the import; tracks before it are imported, re-run to finish)") from None
    store.write_set(settings.split, track, settings.name, settings.modality, arrays)
    report.imported.append(track)
    report.rows += int(arrays["data"].shape[0])


def _failure(attrs: dict) -> str:
    errors = attrs.get("error")
    return "; ".join(sorted(set(errors.values()))) if isinstance(errors, dict) and errors else "no frame times"


def _names(names: list[str], limit: int = SHOWN) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _more(rest: list[str], what: str = "") -> str:
    """'; and N more (a, b, ...)' after the first of several problems, naming the files of the rest."""
    if not rest:
        return ""
    files = [item.split(":")[0] for item in rest]
    return f"; and {len(rest)} more{' ' + what if what else ''} ({_names([Path(f).name for f in files], 5)})"
