"""The streaming stage of `dva extract`: read -> encode -> write, the three overlapping.

A reader thread (`read_units`) claims a video's tracks, reads each one (`reading`) and sends what it read as
events into a bounded queue; the caller's thread encodes them (`Encoding`, one method per event) and hands
each finished track to the writer thread (`writing.TrackWriter`). Per track the events are `Start`, then
`Pictures` batches, then `Sound` (or `SameSound`), then `End`; or `Failed` at any point. A unit ends with
`Release`; a unit another process holds is one `Held`. Batches never span two tracks, so a track's arrays do not
depend on which other tracks ran with it (a resumed store equals a clean one).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dva.data.aff_wild2 import Track
from dva.data.layout import claim_key
from dva.errors import DataError
from dva.pipeline import media
from dva.pipeline.claims import NoClaims
from dva.pipeline.extract_settings import ExtractReport, ExtractSettings
from dva.pipeline.provenance import resolve_visual_source
from dva.pipeline.reading import TrackPlan, decode_workers, plan_track, read_audio, visual_batches
from dva.pipeline.writing import TrackWriter, track_attrs
from dva.stores import complete_sets, set_errors

# --------------------------------------------------------------------------- units of work


def video_units(tracks: list[Track]) -> list[list[Track]]:
    """Tracks grouped by video, in first-seen order: a `_left`/`_right` pair is one unit of work, so
    its shared sound is decoded and encoded once and one process claims both."""
    units: dict[str, list[Track]] = {}
    for track in tracks:
        units.setdefault(track.video, []).append(track)
    return list(units.values())


def unit_key(unit: list[Track]) -> str:
    """The claim of a unit of work: its video's (`dva.data.layout.claim_key`)."""
    return claim_key(unit[0].track, unit[0].video)


def settled(attrs: dict, sets, since: float, overwrite: bool) -> bool:
    """Whether a track needs no more work for these feature sets: each complete (since this run began, with
    --overwrite), or failed since then."""
    done, errors, done_at = complete_sets(attrs), set_errors(attrs), attrs.get("done_at") or {}
    if attrs.get("damaged"):  # its own arrays found damaged: rewritten from the release, its sets left as they are
        return False
    for name in sets:
        fresh = done_at.get(name, 0.0) >= since
        if not ((name in done and (fresh or not overwrite)) or (name in errors and fresh)):
            return False
    return True


# --------------------------------------------------------------------------- the reader's events


@dataclass
class Start:
    """A track's reading begins: its rows, times and labels, and the modalities whose sets it needs (not those its
    complete sets already have: a set found damaged is redone alone)."""

    plan: TrackPlan
    modalities: tuple[str, ...]


@dataclass
class Pictures:
    """One batch of the track's pictures: uint8 [B, 3, H, W] for these row indices (rows never sent stay masked)."""

    rows: np.ndarray
    batch: object


@dataclass
class Sound:
    """The track's sound, decoded."""

    audio: media.Audio


@dataclass
class SameSound:
    """The track shares the sound of the track before it (a pair's second track): its features are reused."""


@dataclass
class End:
    """The track is read whole."""


@dataclass
class Failed:
    """The track cannot be read: one-line reason. What was sent of it since its Start is dropped."""

    track: Track
    reason: str


@dataclass
class Release:
    """Every track of the unit claimed as key has been sent."""

    key: str


@dataclass
class Held:
    """Another process holds the unit: not done here."""

    unit: list[Track]


def read_units(units: list[list[Track]], root: Path, store, settings: ExtractSettings, sets: dict[str, str], claims, since: float, report: ExtractReport,
               device: str = "cpu") -> Iterator:
    """The events of these units, unit by unit (see the module's docstring). sets maps each modality this run makes
    to its feature-set name; the other modality is not read. device: the encoders' (nvJPEG decodes there; batches
    for a GPU are pinned)."""
    source = resolve_visual_source(settings)
    pin = str(device).startswith("cuda")
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        for unit in units:
            key = unit_key(unit)
            if not claims.try_claim(key):
                yield Held(unit)
                continue
            todo = []
            for track in unit:  # look again now that the unit is ours: another process may have finished it
                state = store.track_state(settings.split, track.track)
                if settled(state, sets.values(), since, settings.overwrite):
                    report.elsewhere.append(track.track)
                else:
                    todo.append((track, state))
            sound_read = False  # the unit's tracks share one video: its sound is read once, unless a track failed since
            for track, state in todo:
                try:
                    plan = plan_track(track, root)
                    # the sets not yet settled; every one when the track is new or its rows changed (it is made anew)
                    modalities = tuple(m for m, name in sets.items() if state.get("rows") != plan.rows or not settled(state, [name], since, settings.overwrite))
                    yield Start(plan, modalities)
                    if "visual" in modalities:
                        if source == "crops" and track.frames_dir is None:
                            report.warnings.append(f"{track.track}: no cropped_aligned folder, every visual row masked")
                        for rows, batch in visual_batches(plan, root, source, settings.batch_size, pool, report.masked_crops, pin, settings.jpeg_decoder, device):
                            yield Pictures(rows, batch)
                    if "audio" in modalities:
                        yield SameSound() if sound_read else Sound(read_audio(track, root))
                        sound_read = True
                    yield End()
                except DataError as exc:
                    sound_read = False
                    yield Failed(track, str(exc))
            yield Release(key)


# --------------------------------------------------------------------------- the encoder stage


class Encoding:
    """The caller's thread: encodes the events of one track at a time into its feature sets and hands the finished
    track to the writer. Holds the track being encoded (its plan, visual rows and mask) and the last sound's
    features, which a `SameSound` track reuses."""

    def __init__(self, visual, audio, sets: dict[str, str], settings: ExtractSettings, report: ExtractReport, writer: TrackWriter, frames_bar=None):
        self.visual, self.audio, self.sets, self.batch_size = visual, audio, sets, settings.batch_size
        self.report, self.writer, self.frames_bar = report, writer, frames_bar
        self.held: list[list[Track]] = []  # units another process holds
        self.plan: TrackPlan | None = None
        self.with_visual = False  # whether the track being encoded needs its visual set
        self.made: dict[str, tuple] = {}
        self.visual_rows = self.visual_mask = None  # float16 [T, D] and bool [T] of the track, with a visual encoder
        self.sound: tuple[np.ndarray, np.ndarray] | None = None  # (data float16 [K, D], time float32 [K]) of the last Sound

    def handle(self, event) -> None:
        match event:
            case Start(plan, modalities):
                self.start(plan, modalities)
            case Pictures(rows, batch):
                self.pictures(rows, batch)
            case Sound(audio):
                self.encode_sound(audio)
                self.add_sound()
            case SameSound():
                self.add_sound()
            case End():
                self.end()
            case Failed(track, reason):
                self.writer.fail(track, reason)
                self.plan = None
            case Release(key):
                self.writer.release(key)
            case Held(unit):
                self.held.append(unit)
            case _:
                raise TypeError(f"not an event of read_units: {event!r}")

    def start(self, plan: TrackPlan, modalities: tuple[str, ...]) -> None:
        self.plan, self.made, self.with_visual = plan, {}, "visual" in modalities
        if self.with_visual:
            self.visual_rows = np.zeros((plan.rows, self.visual.dim), dtype=np.float16)
            self.visual_mask = np.zeros(plan.rows, dtype=bool)

    def pictures(self, rows: np.ndarray, batch) -> None:
        features = self.visual.encode(self.visual.preprocess(batch))
        self.visual_rows[rows] = features.float().cpu().numpy().astype(np.float16)
        self.visual_mask[rows] = True
        if self.frames_bar is not None:
            self.frames_bar.update(len(rows))

    def encode_sound(self, sound: media.Audio) -> None:
        video = self.plan.track.video
        if sound.wave.size == 0:
            self.report.warnings.append(f"{video} has no audio stream, 0 audio rows")
        problems = sound.problems()  # refused packets, holes and overlaps in its timestamps: one line
        if problems:
            self.report.warnings.append(f"{video}: {problems}")
            self.report.sound[video] = problems
        features, steps = self.audio.encode_waveform(sound.wave, batch_size=self.batch_size)
        times = (np.asarray(steps, dtype=np.float64) + sound.start).astype(np.float32)  # onto the frame clock
        self.sound = np.asarray(features, dtype=np.float16).reshape(-1, self.audio.dim), times

    def add_sound(self) -> None:
        self.made[self.sets["audio"]] = ("audio", dict(zip(("data", "time"), self.sound)))

    def end(self) -> None:
        plan = self.plan
        if self.with_visual:
            self.made[self.sets["visual"]] = ("visual", {"data": self.visual_rows, "mask": self.visual_mask})
        self.writer.write(plan.track, plan.arrays(), self.made, {**track_attrs(plan.track), "n_frames": plan.rows})
        if self.frames_bar is not None:
            self.frames_bar.update(plan.rows - (int(self.visual_mask.sum()) if self.with_visual else 0))
        self.plan = None


def extract_units(units: list[list[Track]], root: Path, store, settings: ExtractSettings, sets: dict[str, str], visual, audio, report: ExtractReport, claims=None, since: float | None = None, frames_bar=None, tracks_bar=None) -> list[list[Track]]:
    """Claim, read, encode and write these units (see `video_units`) into store (split settings.split), overlapping
    the three stages; sets maps each modality to make to its feature-set name (its encoder is visual or audio).
    Returns the units another process holds (not done here)."""
    import torch

    claims = claims if claims is not None else NoClaims()
    since = since if since is not None else time.time()
    device = str((visual if visual is not None else audio).device)
    with TrackWriter(store, settings, sets, report, claims, tracks_bar) as writer, torch.inference_mode():
        encoding = Encoding(visual, audio, sets, settings, report, writer, frames_bar)
        for event in _prefetch(read_units(units, root, store, settings, sets, claims, since, report, device), depth=4):
            writer.check()
            encoding.handle(event)
    return encoding.held


_END = object()


def _prefetch(iterator: Iterator, depth: int) -> Iterator:
    """Run iterator in a background thread, at most depth items ahead; re-raise its errors here."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            items.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
