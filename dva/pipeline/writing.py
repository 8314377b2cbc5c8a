"""Writing to the store: a track's feature sets (created with its frame times and labels when new), the attrs a
track and the test split record, and the writer stage (`TrackWriter`), the thread that writes finished tracks
while the next ones are read and encoded."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from dva.data.aff_wild2 import Track
from dva.data.annotations import read_test_list
from dva.pipeline.extract_settings import ExtractReport, ExtractSettings
from dva.stores import complete_sets


class TrackWriter:
    """The writer stage: a thread that writes each finished track (at most two waiting), records it in report
    (extracted, or failed with its reason) and releases a unit's claim once every track of it is written.
    An error writing the store is a real error: `check` (and leaving the `with`) re-raises it in the caller's thread."""

    def __init__(self, store, settings: ExtractSettings, sets: dict[str, str], report: ExtractReport, claims, tracks_bar=None):
        self.store, self.split, self.overwrite, self.report, self.claims, self.tracks_bar = store, settings.split, settings.overwrite, report, claims, tracks_bar
        self.names = list(sets.values())
        self.jobs: queue.Queue = queue.Queue(maxsize=2)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TrackWriter:
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.jobs.put(None)
        self.thread.join()
        if exc_type is None:
            self.check()

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def write(self, track: Track, own: dict, made: dict[str, tuple], attrs: dict) -> None:
        """own: the track's frame_time [T] (and labels [T, 2]); made: set name -> (modality, arrays)."""
        self.jobs.put((self._write, (track, own, made, attrs), True))

    def fail(self, track: Track, reason: str) -> None:
        self.jobs.put((self._fail, (track, reason), True))

    def release(self, key: str) -> None:
        """Every track of the unit claimed as key is queued before this: release the claim after they are written."""
        self.jobs.put((self.claims.release, (key,), False))

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            work, args, is_track = job
            try:
                work(*args)
            except BaseException as exc:  # re-raised by the main thread: a store that cannot be written is a real error
                self.errors.append(exc)
            if is_track and self.tracks_bar is not None:
                self.tracks_bar.update(1)

    def _write(self, track: Track, own: dict, made: dict[str, tuple], attrs: dict) -> None:
        reason = write_track_sets(self.store, self.split, track.track, own, made, attrs, self.overwrite)
        if reason is None:
            self.report.extracted.append(track.track)
            self.report.frames += own["frame_time"].shape[0]
        else:
            self._fail(track, reason)

    def _fail(self, track: Track, reason: str) -> None:
        self.store.mark_failed(self.split, track.track, reason, self.names, track_attrs(track))
        self.report.failed[track.track] = reason


def write_track_sets(store, split: str, track: str, own: dict, made: dict[str, tuple], attrs: dict, overwrite: bool) -> str | None:
    """Write a track's feature sets (made: name -> (modality, arrays)), creating the track (its frame times and
    labels) when it is new. Returns None, or why the track cannot take them: its other sets were made for
    another number of rows (the annotation or sample file changed since)."""
    rows = int(own["frame_time"].shape[0])
    state = store.track_state(split, track)
    if state.get("rows") != rows:
        others = sorted(complete_sets(state) - set(made))
        if others and not overwrite:
            return (f"the store holds {state.get('rows')} rows for {track} ({', '.join(others)}), this run has {rows} "
                    f"(its annotation or the sample file changed): re-extract with --overwrite, which drops {', '.join(others)}")
        store.create_track(split, track, own, attrs)
    elif overwrite:
        store.replace_track_arrays(split, track, own)
    elif state.get("damaged"):  # its own arrays did not read back (`mark_damaged`): rewritten, its sets kept
        store.repair_track_arrays(split, track, own)
    for name, (modality, arrays) in made.items():
        store.write_set(split, track, name, modality, arrays)
    return None


def track_attrs(track: Track) -> dict:
    """A track's attrs from its scan record; `tasks` ({task: split}) for a release's track (a plain video has none)."""
    attrs = {"video": track.video, "subject": track.subject, "fps": track.fps, "n_frames": track.n_frames, "has_audio": track.has_audio}
    return {**attrs, "tasks": track.task_splits()} if track.tasks else attrs


def test_phase_attrs(result) -> dict:
    """What the test split records of the organisers' files, so `dva predict` can write the submission from the store:
    VA's `test_list` and `sample`, and for each other challenge with a test phase `task_tests` {task: {test_list, sample}}."""
    va = set(read_test_list(result.test_list)) if result.test_list else set()
    va |= set(result.sample.tracks) if result.sample is not None else set()
    attrs = phase_attrs(result.test_list, result.sample, _named(result, va))
    others = {}
    for task, phase in result.task_tests.items():
        scanned = {t.track for t in result.tracks} | {p.track for p in result.problems}
        others[task] = phase_attrs(str(phase.test_list) if phase.test_list else None, phase.sample, [t for t in phase.tracks if t in scanned])
    if others:
        attrs["task_tests"] = others
    return attrs


def _named(result, names: set[str]) -> list[str]:
    """The scan's tracks, then its problems, that a challenge's test phase names."""
    return [t.track for t in result.tracks if t.track in names] + [p.track for p in result.problems if p.track in names]


def phase_attrs(test_list: str | None, sample, tracks: list[str]) -> dict:
    attrs = {}
    if test_list is not None:
        attrs["test_list"] = {"path": str(Path(test_list).resolve()), "tracks": tracks}
    if sample is not None:
        attrs["sample"] = {"path": sample.path, "sha256": sample.sha256, "rows": len(sample.locations), "tracks": sample.track_order()}
    return attrs
