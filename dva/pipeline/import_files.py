"""`dva import`'s checks: the folder's feature files (one `<track>.npy` or `<track>.npz` per track) read as the
store keeps a set, and checked against the store's tracks (rows, times, feature width, values) before
anything is written. Nothing here writes; no torch."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from dva.errors import ConfigError, DataError, first_line, at_most
from dva.stores.attrs import SET_ARRAYS

SUFFIXES = (".npy", ".npz")
AUDIO_SLACK = 1.0  # seconds an audio row may lie past the track's last frame (an encoder's last window)
FLOAT16_MAX = float(np.finfo(np.float16).max)  # the store keeps features as float16
SHOWN = 10  # names listed in one warning line before "and N more"


class FileProblem(Exception):
    """One file that cannot be imported; gathered, then raised together as one DataError."""


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
        raise DataError(f"{folder}: two files for track {twice[0]} ({twice[0]}.npy and {twice[0]}.npz){more(twice[1:])}: keep one per track")
    return files, others


def folder_files(folder: Path, modality: str, rate: float | None) -> tuple[dict[str, Path], list[str]]:
    """`feature_files`, refusing a folder without any, and .npy audio files when no --rate gives their times."""
    files, others = feature_files(folder)
    if not files:
        raise DataError(f"{folder}: no .npy or .npz files (one <track>.npy or <track>.npz per track)")
    if modality == "audio" and rate is None:
        plain = [p.name for p in files.values() if p.suffix.lower() == ".npy"]
        if plain:
            raise ConfigError(f"{folder / plain[0]}: a .npy audio file has no times: give --rate HZ (row k at k / HZ s on the frame clock){more(plain[1:], 'files')}")
    return files, others


def read_file(path: Path, modality: str, rate: float | None, raw: bytes | None = None) -> dict[str, np.ndarray]:
    """A feature file as the set stores it. Visual: {"data" float16 [T, D], "mask" bool [T]} (all-NaN rows masked,
    masked rows' NaN stored as 0); audio: {"data" float16 [K, D], "time" float32 [K]} (row k at k / rate s,
    or the .npz's time array). raw: the file's bytes when already read. Raises FileProblem naming the file."""
    try:
        loaded = np.load(io.BytesIO(raw) if raw is not None else path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
        else:
            arrays = {"data": loaded}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FileProblem(f"{path}: not a readable {path.suffix} file ({first_line(exc, 80)})") from None
    allowed = SET_ARRAYS[modality]  # what a .npz may hold: the arrays of a set
    if "data" not in arrays or set(arrays) - set(allowed):
        raise FileProblem(f"{path}: a {modality} .npz holds data and optionally {allowed[1]}, not {', '.join(sorted(arrays)) or 'nothing'}")
    data = arrays["data"]
    if data.ndim != 2 or not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise FileProblem(f"{path}: data must be numbers [rows, features], not {data.dtype} {list(data.shape)}")
    if data.shape[1] == 0:
        raise FileProblem(f"{path}: data has 0 features per row")
    data = data.astype(np.float32)
    return _visual(path, data, arrays.get("mask")) if modality == "visual" else _audio(path, data, arrays.get("time"), rate)


def _visual(path: Path, data: np.ndarray, mask: np.ndarray | None) -> dict[str, np.ndarray]:
    rows = data.shape[0]
    if mask is not None and (mask.dtype != np.bool_ or mask.shape != (rows,)):
        raise FileProblem(f"{path}: mask must be bool [{rows}] (one per row of data), not {mask.dtype} {list(mask.shape)}")
    nan = np.isnan(data)
    valid = ~nan.all(axis=1) & (mask if mask is not None else True)
    partly = int((nan.any(axis=1) & valid).sum())
    if partly:
        raise FileProblem(f"{path}: {partly} rows have NaN in some features but not all (mask them, or make the whole row NaN)")
    data[~valid] = np.nan_to_num(data[~valid], nan=0.0, posinf=0.0, neginf=0.0)  # a masked row's values are never read
    _check_range(path, data)
    return {"data": data.astype(np.float16), "mask": valid}


def _audio(path: Path, data: np.ndarray, times: np.ndarray | None, rate: float | None) -> dict[str, np.ndarray]:
    rows = data.shape[0]
    if rate is not None and times is not None:
        raise FileProblem(f"{path}: has a time array and --rate {rate:g} was given: drop --rate to use the files' times")
    if rate is None and times is None:
        raise FileProblem(f"{path}: no times for its rows: give --rate HZ (row k at k / HZ s), or a time array in the .npz")
    if times is None:
        times = np.arange(rows, dtype=np.float64) / rate
    if times.shape != (rows,) or not np.issubdtype(times.dtype, np.number):
        raise FileProblem(f"{path}: time must be numbers [{rows}] (one per row of data), not {times.dtype} {list(times.shape)}")
    times = times.astype(np.float64)
    if not np.isfinite(times).all() or (np.diff(times) <= 0).any():
        raise FileProblem(f"{path}: times must be finite and increase from row to row")
    if np.isnan(data).any():
        raise FileProblem(f"{path}: {int(np.isnan(data).any(axis=1).sum())} audio rows have NaN (an audio set has no mask: leave such rows out)")
    _check_range(path, data)
    return {"data": data.astype(np.float16), "time": times.astype(np.float32)}


def _check_range(path: Path, data: np.ndarray) -> None:
    if data.size and not (np.abs(data) <= FLOAT16_MAX).all():
        raise FileProblem(f"{path}: values beyond float16's range (±{FLOAT16_MAX:g}) or infinite: the store keeps features as float16; scale them first")


def check_against_track(path: Path, arrays: dict[str, np.ndarray], track: str, attrs: dict, last_frame: float | None) -> None:
    """Raise FileProblem when a file's rows do not fit the store's track (attrs as `track_index` gives them;
    last_frame: the track's last frame time in seconds, for audio)."""
    rows = int(arrays["data"].shape[0])
    if "mask" in arrays and rows != attrs["rows"]:
        raise FileProblem(f"{path}: {rows} rows, the store's track {track} has {attrs['rows']} (one per annotation line)")
    if "time" in arrays and rows and last_frame is not None and float(arrays["time"][-1]) > last_frame + AUDIO_SLACK:
        raise FileProblem(
            f"{path}: its last row is at {float(arrays['time'][-1]):.2f} s, more than {AUDIO_SLACK:g} s past the last frame of "
            f"track {track} ({last_frame:.2f} s, {attrs['rows']} rows): check --rate or the time array"
        )


def check_files(store, where: dict[str, str], files: dict[str, Path], index: dict[str, dict], modality: str, rate: float | None, skip, progress: bool) -> tuple[int | None, str]:
    """Read every file whose track is in the index and check it against that track, stored under where[track] (tracks
    in skip are only hashed). Returns (the files' feature width, None when no file was checked; the sha256 of every hashed
    file's bytes in name order, so a resumed import has the same digest). Raises DataError naming the first
    problem and the files of the others."""
    from tqdm import tqdm

    problems: list[str] = []
    dims: dict[str, int] = {}
    digest = hashlib.sha256()
    for track in tqdm([t for t in files if t in index], desc="check", unit="file", disable=not progress):
        path = files[track]
        raw = path.read_bytes()
        digest.update(raw)
        if track in skip:
            continue
        try:
            arrays = read_file(path, modality, rate, raw)
            last = float(store.read(where[track], track, "frame_time")[-1]) if modality == "audio" and index[track]["rows"] else None
            check_against_track(path, arrays, track, index[track], last)
            dims[track] = int(arrays["data"].shape[1])
        except FileProblem as exc:
            problems.append(str(exc))
    dim = Counter(dims.values()).most_common(1)[0][0] if dims else None
    problems += [f"{files[track]}: {width} features per row, the other files have {dim}" for track, width in dims.items() if width != dim]
    if problems:
        raise DataError(problems[0] + more(problems[1:], "problems"))
    return dim, digest.hexdigest()


def names(items: list[str], limit: int = SHOWN) -> str:
    """'a, b, c and N more': at most limit names of a list, for one warning line."""
    return at_most(items, limit, ", ")


def more(rest: list[str], what: str = "") -> str:
    """'; and N more (a, b, ...)' after the first of several problems, naming the files of the rest."""
    if not rest:
        return ""
    files = [item.split(":")[0] for item in rest]
    return f"; and {len(rest)} more{' ' + what if what else ''} ({names([Path(f).name for f in files], 5)})"
