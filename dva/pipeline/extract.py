"""`dva extract`: decode -> encode -> write, streamed, resumable, on one machine or a Dask cluster.

The run: scan the split, build the encoders (`provenance`), record the feature sets in the store, skip what is
complete, then extract the rest here (`stream`) or on Dask workers (`distributed`, which this module alone
calls), and wait for the tracks other processes hold (`claims`). Where the rest lives:
`extract_settings` (flags and report), `reading` (a track's frames, crops and sound), `stream` (the
overlapped read -> encode -> write stage), `writing` (the store side), `media` (PyAV).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import zlib
from pathlib import Path

from dva import __version__
from dva.data.aff_wild2 import Problem, ScanResult
from dva.data.dataset import scan
from dva.data.s_aff_wild2 import LAYOUT as IMAGE_SET
from dva.errors import ConfigError, StoreError, refusals
from dva.pipeline.claims import POLL, claims_for
from dva.pipeline.distributed import extract_distributed
from dva.pipeline.extract_settings import TIMELINE, ExtractReport, ExtractSettings, parse_shard
from dva.pipeline.provenance import build_encoders, check_compatible, default_device, feature_sets
from dva.pipeline.reading import check_nvjpeg
from dva.pipeline.stream import extract_units, settled, unit_key, video_units
from dva.pipeline.writing import test_phase_attrs
from dva.stores import TRACK_ARRAYS, check_track, complete_sets, open_store, set_errors

__all__ = ["ExtractReport", "ExtractSettings", "run_extract"]  # the settings and report travel with the run: callers take all three here


def run_extract(settings: ExtractSettings) -> ExtractReport:
    """Extract one split into the store; returns what happened (never raises for a single bad track).

    The split's tracks of every task the release has (settings.tasks narrows them) are taken, each written under the
    store split the scan gives it (the first task's, `dva.data.tasks`): most under settings.split, a few perhaps under
    another. Several processes may run this on one store and split at once: each claims a video before
    reading it, skips videos another process holds, then waits until every track of its share is
    complete or failed (taking over the claims of processes that died). A full, read-only or forbidden store
    (or one on object storage gone away) stops the run as one FileSystemError naming it: the tracks written so
    far are complete and kept, a track cut off is not marked, so the same command then does exactly the rest."""
    settings.validate()
    with refusals(settings.out):
        return _run_extract(settings)


def _run_extract(settings: ExtractSettings) -> ExtractReport:
    settings = settings.resolved(default_device())  # Dask workers take this device's kind, so the sets record what computed them
    root = Path(settings.data)
    result = scan(root, split=settings.split, progress=settings.progress, test_list=settings.test_list, sample=settings.sample, crops=settings.crops,
                  tasks=settings.tasks, fps=settings.fps)
    settings, skipped = _images_only(settings, result)
    distributed = bool(settings.workers or settings.scheduler)
    visual, audio = build_encoders(settings, "cpu" if distributed else settings.device)
    if settings.jpeg_decoder == "cuda" and not distributed:
        check_nvjpeg(visual.device if visual is not None else settings.device)
    made = feature_sets(settings, visual, audio)
    sets = {info["modality"]: name for name, info in made.items()}
    store = open_store(settings.out, mode="a")
    groups = _store_splits(result, settings.split)
    try:
        warnings = _record_sets(store, settings, made, result, list(groups))
        report = ExtractReport(store=str(settings.out), split=settings.split, warnings=[*skipped, *warnings, *result.warnings])
        started = time.perf_counter()
        for group, (tracks, problems) in groups.items():
            _extract_split(dataclasses.replace(settings, split=group), tracks, problems, store, sets, made, visual, audio, report)
        report.seconds = time.perf_counter() - started
    finally:
        store.close()
    return report


def _images_only(settings: ExtractSettings, result: ScanResult) -> tuple[ExtractSettings, list[str]]:
    """An image set (s-Aff-Wild2) has no sound and no video: its visual set only, read from its images. Returns the
    settings to run and the line saying the audio encoder was skipped; ConfigError for what cannot be done."""
    if result.layout != IMAGE_SET:
        return settings, []
    if settings.only == "audio":
        raise ConfigError(f"--only audio: {settings.data} is an s-Aff-Wild2 set, images without sound: it has no audio to encode")
    if settings.visual_source == "video":
        raise ConfigError(f"--visual-source video: {settings.data} is an s-Aff-Wild2 set, images without a video: use --visual-source crops (or auto)")
    if settings.only == "visual":
        return settings, []
    note = f"{settings.data} is an s-Aff-Wild2 set (images only, no sound): the audio encoder ({settings.audio_encoder}) is skipped"
    return dataclasses.replace(settings, only="visual"), [note]


def _store_splits(result: ScanResult, split: str) -> dict[str, tuple[list, list]]:
    """{store split: (its tracks, its problems)} of a scan, split itself first."""
    groups: dict[str, tuple[list, list]] = {split: ([], [])}
    for track in result.tracks:
        groups.setdefault(track.split, ([], []))[0].append(track)
    for problem in result.problems:
        groups.setdefault(problem.split, ([], []))[1].append(problem)
    return groups


def _extract_split(settings: ExtractSettings, tracks: list, problems: list, store, sets, made, visual, audio, report: ExtractReport) -> None:
    """Extract the scan's tracks of one store split (settings.split), skipping what is complete."""
    claims = claims_for(store, settings.split, settings.claim_timeout)
    try:
        since = time.time()
        units = video_units(tracks)
        if settings.shard is not None:
            index, count = parse_shard(settings.shard)
            units = sorted(units, key=unit_key)[index::count]
            # tracks the scan left out have no video to share by: a stable hash of the name gives each one shard
            problems = [p for p in problems if zlib.crc32(p.track.encode()) % count == index]
        for problem in problems:
            _record_problem(store, settings.split, problem, list(made), report, claims)
        known = store.track_index(settings.split)  # one listing for the whole resume check
        todo, complete = [], []
        for unit in units:
            if not settings.overwrite and all(set(made) <= complete_sets(known.get(t.track, {})) for t in unit):
                complete.append(unit)
            else:
                todo.append(unit)
        damaged = _damaged_units(store, settings, complete, known, list(made), report, claims)
        report.skipped += [t.track for unit in complete if unit not in damaged for t in unit]
        _extract_until_settled(todo + damaged, Path(settings.data), store, settings, sets, made, visual, audio, report, claims, since)
    finally:
        claims.release_all()


def _damaged_units(store, settings: ExtractSettings, units: list, known: dict, sets: list[str], report: ExtractReport, claims) -> list:
    """The units among those complete whose sets or own arrays do not read back as written (every chunk read: a
    fraction of what encoding them cost), each damaged part marked (`Store.mark_damaged`) so that exactly it is redone,
    and named in a warning. A unit another process holds is left to it."""
    from tqdm import tqdm

    damaged = []
    for unit in tqdm(units, desc=f"check {settings.split}", unit="video", disable=not settings.progress or not units):
        found = {t.track: check_track(store, settings.split, t.track, known.get(t.track, {}), sets) for t in unit}
        if not any(found.values()) or not claims.try_claim(unit_key(unit)):
            continue
        try:
            for track, findings in found.items():
                for finding in findings:
                    report.warnings.append(f"damaged in the store: {finding.line()}: extracted again")
                if findings:  # an own array's problem begins with its name
                    own = sorted({f.problem.split()[0].rstrip(":") for f in findings if f.set is None} & set(TRACK_ARRAYS))
                    store.mark_damaged(settings.split, track, sorted({f.set for f in findings if f.set is not None}), own)
        finally:
            claims.release(unit_key(unit))
        damaged.append(unit)
    return damaged


def _record_sets(store, settings: ExtractSettings, made: dict[str, dict], result: ScanResult, splits: list[str]) -> list[str]:
    """Refuse a store whose sets or frame clock differ from this run's; else record this run's sets, the split and
    (for test) the organisers' files, one process at a time. Returns warnings (sets continued on another device)."""
    with claims_for(store, "store", settings.claim_timeout).hold("metadata"):  # metadata edits by one process at a time
        existing = store.feature_sets()  # refuses a dva 0.1 store, naming `dva upgrade`
        warnings = check_compatible(existing, made, settings.out, settings.allow_other_device)
        timeline = store.attrs.get("timeline")
        if timeline is not None and timeline.get("frame_time") != TIMELINE["frame_time"]:
            raise StoreError(f"{settings.out} was made with another frame clock ({timeline}): extract into a new --out")
        if timeline is None:
            store.set_attrs({"dva_version": __version__, "format": 2, "timeline": TIMELINE})
        _record_dataset(store, settings, result, existing)
        for name, info in made.items():
            if name not in existing:
                store.add_feature_set(name, info)
        for split in splits:
            store.ensure_split(split)
        wanted = test_phase_attrs(result) if settings.split == "test" else {}
        if any(store.split_attrs(settings.split).get(k) != v for k, v in wanted.items()):
            store.set_split_attrs(settings.split, wanted)
    return warnings


def _record_dataset(store, settings: ExtractSettings, result: ScanResult, existing: dict) -> None:
    """An s-Aff-Wild2 store says so (`dataset`, `has_audio` false: `dva info` shows it); a store of one kind of data
    never takes the other's tracks (an image set's rows are its selected frames, a video's every frame)."""
    kind = store.attrs.get("dataset")
    if existing and kind != result.layout:
        this = "an s-Aff-Wild2 set (images only)" if result.layout == IMAGE_SET else "videos"
        held = "an s-Aff-Wild2 set's tracks" if kind == IMAGE_SET else "tracks of videos"
        raise StoreError(f"{settings.out} holds {held}, {settings.data} is {this}: extract into a new --out")
    if result.layout == IMAGE_SET and kind is None:
        store.set_attrs({"dataset": IMAGE_SET, "has_audio": False})


def _extract_until_settled(pending: list, root, store, settings, sets, made, visual, audio, report, claims, since) -> None:
    """Extract the units nobody holds (here or on Dask), then wait for those another process holds until each of
    their tracks is complete or failed; a unit whose process died is taken over (its claim expires)."""
    waiting = False
    while pending:
        runnable = [u for u in pending if claims.available(unit_key(u))]  # held by a live process: wait, do not retry
        deferred = [u for u in pending if u not in runnable]
        if runnable and (settings.workers or settings.scheduler):
            deferred += extract_distributed(runnable, settings, list(made), report, since)
        elif runnable:
            deferred += _extract_here(runnable, root, store, settings, sets, visual, audio, report, claims, since)
        pending = [u for u in deferred if not all(settled(store.track_state(settings.split, t.track), made, since, settings.overwrite) for t in u)]
        report.elsewhere += [t.track for u in deferred if u not in pending for t in u]
        if pending:
            if not waiting and settings.progress:
                print(f"waiting for {sum(len(u) for u in pending)} tracks another process is extracting", file=sys.stderr)
            waiting = True
            time.sleep(POLL)


def _extract_here(units, root, store, settings, sets, visual, audio, report, claims, since) -> list:
    from tqdm import tqdm

    tracks = [t for unit in units for t in unit]
    total_frames = sum(track.n_frames if track.n_frames is not None else track.n_video_frames for track in tracks)
    with tqdm(total=len(tracks), desc=f"extract {settings.split}", unit="track", disable=not settings.progress, position=0) as tracks_bar, tqdm(
        total=total_frames, desc="frames", unit="frame", disable=not settings.progress, position=1, leave=False
    ) as frames_bar:
        return extract_units(units, root, store, settings, sets, visual, audio, report, claims, since, frames_bar, tracks_bar)


def _record_problem(store, split: str, problem: Problem, sets: list[str], report: ExtractReport, claims) -> None:
    """Record a track the scan left out as failed (once, by whichever process claims it)."""
    report.failed[problem.track] = problem.reason
    if not claims.try_claim(problem.track):
        return
    try:
        errors = set_errors(store.track_state(split, problem.track))
        if any(errors.get(name) != problem.reason for name in sets):
            store.mark_failed(split, problem.track, problem.reason, sets)
    finally:
        claims.release(problem.track)
