"""`dva import`: a feature set computed elsewhere, one `<track>.npy` or `<track>.npz` per track, into the store.

The files of split S name the tracks any challenge (or those of --task) puts in S, wherever each is stored: a track
is stored once, under the first of its tasks' splits (VA's val and EXPR's train: stored under val), and EXPR's
train list names it all the same. Each track is written where it is stored, under that stored split's claims.
Every file is read and checked against the store's track before anything is written (`import_files`),
so a bad folder never leaves a half-imported set. Then the set's info (its provenance: the folder, file
count and a digest of the files) goes into the root attrs under the store's metadata claim, and each
track is written under the claim of its video, the same claim `dva extract` takes, so an extract on the
same split never edits the same track's attrs at once. No torch here: an import runs wherever numpy and
zarr do.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dva import __version__
from dva.data.layout import claim_key
from dva.data.tasks import parse_tasks
from dva.errors import ConfigError, DataError, StoreError, at_most, refusals
from dva.pipeline.claims import claims_for
from dva.pipeline.import_files import FileProblem, check_against_track, check_files, folder_files, names, read_file
from dva.stores.attrs import MODALITIES, check_set_name, complete_sets, set_differences, track_tasks
from dva.stores.open import open_store


@dataclass(frozen=True)
class ImportSettings:
    """Every `dva import` flag."""

    store: str
    split: str
    name: str
    modality: str
    folder: str
    rate: float | None = None  # audio: rows per second; None: each .npz carries a time array
    tasks: str | tuple[str, ...] | None = None  # "va,expr": the tasks whose split it is; None: every task's (and tracks of none)
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
        self.chosen_tasks()  # an unknown --task is refused before the folder is read

    def chosen_tasks(self) -> tuple[str, ...] | None:
        return parse_tasks(",".join(self.tasks) if isinstance(self.tasks, (tuple, list)) else self.tasks)

    def source_key(self) -> str:
        """The set's `sources` key of this import: the split, with the tasks when --task narrows it ("train/expr"),
        so that imports of one split for other tasks keep their own records (and digests)."""
        tasks = self.chosen_tasks()
        return self.split if tasks is None else f"{self.split}/{'+'.join(tasks)}"

    def described(self) -> str:
        """'train', or 'train (expr, au)' with --task: which tracks the import takes, for its messages."""
        tasks = self.chosen_tasks()
        return self.split if tasks is None else f"{self.split} ({', '.join(tasks)})"


@dataclass
class ImportReport:
    """What one `dva import` run did; every list names tracks (files for `unknown_files`)."""

    store: str
    split: str
    name: str
    tasks: list[str] | None = None  # --task; None: every task's split
    stored: dict[str, int] = dataclasses.field(default_factory=dict)  # stored split -> tracks imported there
    imported: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # complete for the set before this run
    held: list[str] = dataclasses.field(default_factory=list)  # another process held the track: re-run to add it
    without_file: list[str] = dataclasses.field(default_factory=list)  # the set stays incomplete for these
    unknown_files: list[str] = dataclasses.field(default_factory=list)  # no track of the split (of the tasks): skipped
    not_extracted: dict[str, str] = dataclasses.field(default_factory=dict)  # track -> why extract could not make it (no frame times): skipped
    warnings: list[str] = dataclasses.field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    if settings.chosen_tasks() is not None:
        source["tasks"] = list(settings.chosen_tasks())
    return {**info, "sources": {settings.source_key(): source}, "dva_version": __version__}


def differences(old: dict, new: dict) -> list[str]:
    """What differs between a store's set and this import: dim, then modality, encoder, preprocessing."""
    found = [] if old.get("dim") == new.get("dim") else [f"dim: {old.get('dim')!r} != {new.get('dim')!r}"]
    return found + set_differences(old, new)


def merged_info(existing: dict[str, dict], settings: ImportSettings, info: dict, index: Callable[[], dict[str, dict]]) -> dict:
    """The set's info once this import is recorded: a new set, or the store's set with this split's source added.
    Refused in one line when the store's set was made otherwise, or when this split's tracks came from other files.
    index: the import's tracks ({track: attrs}), asked for only when the files differ from the ones recorded."""
    old = existing.get(settings.name)
    if old is None:
        return info
    found = differences(old, info)
    if found:
        shown = at_most(found, 3)
        raise StoreError(f"{settings.store} already has a feature set {settings.name!r} made otherwise (store != this import: {shown}): import under another --name")
    before = (old.get("sources") or {}).get(settings.source_key())
    source = info["sources"][settings.source_key()]
    other_files = before and before.get("sha256") != source["sha256"] and not settings.overwrite
    done = [t for t, attrs in index().items() if settings.name in complete_sets(attrs)] if other_files else []
    if done:
        raise StoreError(
            f"{settings.name!r} holds {len(done)} tracks of {settings.described()} imported from other files ({before.get('path')}, "
            f"{before.get('files')} files, sha256 {str(before.get('sha256'))[:12]}...): re-import with --overwrite to replace them all, or choose another --name"
        )
    return {**old, **info, "sources": {**(old.get("sources") or {}), **info["sources"]}}


# --------------------------------------------------------------------------- one run


def selected_tracks(store, settings: ImportSettings, named: set[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """({track: attrs}, {track: its stored split}) of the tracks an import of settings.split takes: those that any of
    its tasks puts in the split (`track_tasks`), wherever stored, and, without --task, every track stored under the
    split (a store made before tasks, a plain video's track). A track another process is creating (attrs {}) counts
    when stored under the split or named by a file (named). Each stored split is listed once."""
    split, tasks = settings.split, settings.chosen_tasks()
    index: dict[str, dict] = {}
    where: dict[str, str] = {}
    for stored in store.splits():
        for track, attrs in store.track_index(stored).items():
            splits = track_tasks(attrs, stored)
            if not attrs:
                taken = stored == split or track in named
            else:
                taken = any(splits.get(task) == split for task in (tasks or splits)) or (tasks is None and stored == split)
            if not taken:
                continue
            if track in where:
                raise StoreError(f"{settings.store}: track {track} is stored under both {where[track]} and {stored}: remove one (`dva extract` stores a track once)")
            index[track], where[track] = attrs, stored
    return dict(sorted(index.items())), where


def run_import(settings: ImportSettings) -> ImportReport:
    """Import settings.folder into feature set settings.name of settings.split's tracks; returns what happened.
    Raises DataError/ConfigError/StoreError (nothing written) when any file does not fit, FileSystemError when the
    store refuses the writes (full, read-only, forbidden: the tracks imported so far are kept)."""
    settings.validate()
    with refusals(settings.store):
        return _run_import(settings)


def _run_import(settings: ImportSettings) -> ImportReport:
    tasks = settings.chosen_tasks()
    started = time.perf_counter()
    folder = Path(settings.folder)
    report = ImportReport(store=str(settings.store), split=settings.split, name=settings.name, tasks=list(tasks) if tasks else None)
    files, others = folder_files(folder, settings.modality, settings.rate)
    if others:
        report.warnings.append(f"{folder}: {len(others)} files that are not .npy/.npz ignored: {names(others)}")
    index, where, matched, info = _check(settings, files, report)
    _warn_skipped(settings, index, report)
    if info is not None:  # else no file's track can take a set now: nothing to write
        _write(settings, files, index, where, matched, info, report)
    if report.held:
        report.warnings.append(f"{len(report.held)} tracks were being written by another process and are not imported yet: {names(report.held)}; re-run `dva import` to add them")
    report.seconds = time.perf_counter() - started
    return report


def _check(settings: ImportSettings, files: dict[str, Path], report: ImportReport) -> tuple[dict[str, dict], dict[str, str], list[str], dict | None]:
    """Every check, before anything is written: the store and split, which files name which tracks (noted in the
    report), each file against its track, the set's info against the store's. Returns (the selected tracks' index,
    each one's stored split, the tracks to write, the set's info; None when no file's track can take a set now)."""
    folder = Path(settings.folder)
    with open_store(settings.store, mode="r") as store:
        existing = store.feature_sets()  # refuses a dva 0.1 store, naming `dva upgrade`
        index, where = selected_tracks(store, settings, set(files))
        if not index and settings.split not in store.splits():
            raise StoreError(f"{settings.store} has no {settings.split!r} split: `dva extract --split {settings.split}` it first (an import adds a set to the tracks extract made)")
        report.unknown_files = [files[t].name for t in files if t not in index]
        report.without_file = [t for t in index if t not in files]
        busy = [t for t in files if t in index and not index[t]]  # being created by another process right now
        report.not_extracted = {t: _failure(index[t]) for t in files if t in index and index[t] and "rows" not in index[t]}
        matched = [t for t in files if t in index and t not in busy and t not in report.not_extracted]
        if not matched and not busy and not report.not_extracted:
            raise DataError(f"{folder}: none of its {len(files)} files names a track of split {settings.described()} (files {names(list(files), 3)}; tracks {names(list(index), 3)})")
        dim, digest = check_files(store, where, files, index, settings.modality, settings.rate, {*busy, *report.not_extracted}, settings.progress)
        info = set_info(settings, dim, len(matched) + len(busy) + len(report.not_extracted), digest) if dim is not None else None
        if info is not None:
            merged_info(existing, settings, info, lambda: index)
    report.held += busy
    return index, where, matched, info


def _warn_skipped(settings: ImportSettings, index: dict[str, dict], report: ImportReport) -> None:
    """One warning each for files without a track, tracks without a file, and files for tracks extract could not make."""
    split = settings.described()
    if report.unknown_files:
        report.warnings.append(f"{len(report.unknown_files)} files name no track of split {split} in the store, skipped: {names(report.unknown_files)}")
    if report.without_file:
        report.warnings.append(f"{len(report.without_file)} of {len(index)} tracks of {split} have no file in {settings.folder}, {settings.name} stays incomplete for them: {names(report.without_file)}")
    if report.not_extracted:
        shown = [f"{t} ({reason})" for t, reason in report.not_extracted.items()]
        report.warnings.append(f"{len(shown)} files are for tracks `dva extract` could not make (the store has no frame times for them), skipped: {names(shown)}")


def _write(settings: ImportSettings, files: dict[str, Path], index: dict[str, dict], where: dict[str, str], matched: list[str], info: dict, report: ImportReport) -> None:
    """The writes: the set's info under the store's metadata claim, then stored split by stored split, each track
    under its video's claim in that split's claims (the ones `dva extract` takes for it)."""
    from tqdm import tqdm

    store = open_store(settings.store, mode="a")
    try:
        with claims_for(store, "store", settings.claim_timeout).hold("metadata"):
            # the tracks are listed again only when this import's record differs from the store's (another import's files)
            store.add_feature_set(settings.name, merged_info(store.feature_sets(), settings, info, lambda: selected_tracks(store, settings, set())[0]))
        groups: dict[str, dict[str, list[str]]] = {}  # stored split -> claim key -> tracks
        for track in matched:
            groups.setdefault(where[track], {}).setdefault(claim_key(track, index[track].get("video")), []).append(track)
        with tqdm(total=len(matched), desc=f"import {settings.split}", unit="track", disable=not settings.progress) as bar:
            for stored, videos in groups.items():
                _write_split(store, settings, stored, videos, files, index, report, bar)
    finally:
        store.close()
    report.stored = {stored: count for stored in sorted(set(where.values())) if (count := sum(where[t] == stored for t in report.imported))}


def _write_split(store, settings: ImportSettings, stored: str, videos: dict[str, list[str]], files, index, report: ImportReport, bar) -> None:
    """The tracks stored under one split, video by video under that split's claims."""
    claims = claims_for(store, stored, settings.claim_timeout)
    try:
        for key, tracks in videos.items():
            if not claims.try_claim(key):
                report.held += tracks
                bar.update(len(tracks))
                continue
            try:
                for track in tracks:
                    _write_track(store, settings, stored, track, files[track], index[track], report)
                    bar.update(1)
            finally:
                claims.release(key)
    finally:
        claims.release_all()


def _write_track(store, settings: ImportSettings, stored: str, track: str, path: Path, checked: dict, report: ImportReport) -> None:
    """One track, under its video's claim: look again at its attrs (another process may have changed it since the check)."""
    state = store.track_state(stored, track)
    if settings.name in complete_sets(state) and not settings.overwrite:
        report.skipped.append(track)
        return
    if state.get("rows") != checked["rows"]:  # re-made by `dva extract` since the check
        report.held.append(track)
        return
    try:
        arrays = read_file(path, settings.modality, settings.rate)
        check_against_track(path, arrays, track, state, None)
    except FileProblem as exc:  # the file changed since the check
        raise DataError(f"{exc} (changed during the import; tracks before it are imported, re-run to finish)") from None
    store.write_set(stored, track, settings.name, settings.modality, arrays)
    report.imported.append(track)
    report.rows += int(arrays["data"].shape[0])


def _failure(attrs: dict) -> str:
    errors = attrs.get("error")
    return "; ".join(sorted(set(errors.values()))) if isinstance(errors, dict) and errors else "no frame times"
