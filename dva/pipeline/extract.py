"""`dva extract`: decode -> encode -> write, streamed, resumable, on one machine or a Dask cluster.

Stages overlap: a background thread reads a track (JPEG crops or decord frames, and the
16 kHz audio and frame times through PyAV in `media`) into bounded queues while the
caller's thread encodes, and another thread writes finished tracks to the store. Batches
never span two tracks, so a track's arrays do not depend on which other tracks ran with it
(a resumed store equals a clean one).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dva import __version__
from dva.data.aff_wild2 import Problem, Track, scan
from dva.data.annotations import read_annotation
from dva.errors import ConfigError, DataError, StoreError
from dva.pipeline import media

VISUAL_SOURCES = ("auto", "crops", "video")
AUDIO_MODES = ("window", "tokens")


@dataclass(frozen=True)
class ExtractSettings:
    """Every `dva extract` flag; the encoder ones decide the store's identity."""

    data: str
    split: str
    out: str = "stores"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    ast_model: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    audio_mode: str = "window"
    audio_window: float = 1.0
    audio_hop: float = 0.1
    visual_source: str = "auto"
    batch_size: int = 64
    device: str | None = None
    workers: int = 0
    scheduler: str | None = None
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.visual_source not in VISUAL_SOURCES:
            raise ConfigError(f"--visual-source must be one of {', '.join(VISUAL_SOURCES)}, not {self.visual_source!r}")
        if self.audio_mode not in AUDIO_MODES:
            raise ConfigError(f"--audio-mode must be one of {', '.join(AUDIO_MODES)}, not {self.audio_mode!r}")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if not (self.audio_hop > 0 and self.audio_window > 0):
            raise ConfigError("--audio-hop and --audio-window must be positive")
        if (self.workers or self.scheduler) and str(self.out).lower().endswith((".h5", ".hdf5")):
            raise ConfigError("HDF5 has no concurrent writers: extract into a Zarr store with --workers/--scheduler, then `dva convert` it")


@dataclass
class ExtractReport:
    """What one `dva extract` run did; `failed` maps track -> one-line reason."""

    store: str
    split: str
    extracted: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "frames_per_second": self.frames_per_second}


# --------------------------------------------------------------------------- settings -> encoders


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_encoders(settings: ExtractSettings, device: str):
    """(visual encoder, audio encoder) for these settings on device."""
    from dva.pipeline.encoders import build_audio, build_visual

    visual = build_visual(settings.clip_model, settings.clip_pretrained, device)
    audio = build_audio(settings.ast_model, device, settings.audio_mode, settings.audio_window, settings.audio_hop)
    return visual, audio


def resolve_visual_source(settings: ExtractSettings) -> str:
    if settings.visual_source != "auto":
        return settings.visual_source
    return "crops" if (Path(settings.data) / "cropped_aligned").is_dir() else "video"


def store_identity(settings: ExtractSettings, visual, audio) -> dict:
    """Root attrs that decide whether a store can take more tracks from these settings."""
    return {
        "dva_version": __version__,
        "visual_encoder": visual.provenance(),
        "audio_encoder": audio.provenance(),
        "preprocessing": {
            "visual_source": resolve_visual_source(settings),
            "frame_time": "line index / container fps",
            "audio_sample_rate": 16000,
            "audio_channels": "mono",
        },
    }


def check_compatible(existing: dict, wanted: dict, store_path: str) -> None:
    """Refuse to mix encoder settings in one store; say exactly what differs."""
    differences = []
    for section in ("visual_encoder", "audio_encoder", "preprocessing"):
        old, new = existing.get(section) or {}, wanted[section]
        for key in sorted(set(old) | set(new)):
            if _jsonable(old.get(key)) != _jsonable(new.get(key)):
                differences.append(f"{section}.{key}: store has {old.get(key)!r}, this run has {new.get(key)!r}")
    if differences:
        shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
        raise StoreError(f"{store_path} was made with other encoder settings ({shown}): pass the same flags, or --out a new store")


def _jsonable(value):
    import json

    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------- reading one track


@dataclass
class TrackPlan:
    """What to read for one track: T rows, their times, labels (None for test)."""

    track: Track
    rows: int
    frame_time: np.ndarray
    labels: np.ndarray | None


def plan_track(track: Track, root: Path) -> TrackPlan:
    if track.annotation is not None:
        labels = read_annotation(root / track.annotation)
        rows = labels.shape[0]
    else:
        labels, rows = None, track.n_video_frames  # test: one row per video frame
    # the container's timestamps, not index / fps: some videos have a variable frame rate
    frame_time = media.times_for_rows(media.frame_times(root / track.video), rows, 1 / track.fps).astype(np.float32)
    return TrackPlan(track, rows, frame_time, labels)


def read_crop(path: Path):
    """uint8 [3, H, W] or None when the crop is missing; raises ValueError when it is corrupt."""
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"))  # a writable copy for torch
    except FileNotFoundError:
        return None
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:  # PIL's ways of saying "corrupt"
        raise ValueError(f"{path}: corrupt JPEG ({str(exc).splitlines()[0][:80]})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1)


def _stack(images: list):
    """Stack images of possibly different sizes into one uint8 batch (resized to the first one's size)."""
    import torch
    from torchvision.transforms.functional import resize

    size = images[0].shape[-2:]
    return torch.stack([img if img.shape[-2:] == size else resize(img, list(size), antialias=True) for img in images])


def visual_batches(plan: TrackPlan, root: Path, source: str, batch_size: int, pool: ThreadPoolExecutor, warnings: list) -> Iterator[tuple[np.ndarray, object]]:
    """Yield (row indices, uint8 [B,3,H,W]) for the rows that have a picture; rows not yielded stay masked."""
    usable = min(plan.rows, plan.track.n_video_frames)  # rows past the video's end are masked, never invented
    if source == "crops":
        if plan.track.frames_dir is None:
            warnings.append(f"{plan.track.track}: no cropped_aligned folder, every visual row masked")
            return
        folder = root / plan.track.frames_dir
        for start in range(0, usable, batch_size):
            rows = np.arange(start, min(start + batch_size, usable))
            images, kept = [], []

            def load(row):
                try:
                    return read_crop(folder / f"{row + 1:05d}.jpg")
                except ValueError as exc:
                    warnings.append(str(exc))
                    return None

            for row, image in zip(rows, pool.map(load, rows)):
                if image is not None:
                    images.append(image)
                    kept.append(row)
            if images:
                yield np.asarray(kept), _stack(images)
    else:
        import decord
        import torch

        try:
            reader = decord.VideoReader(str(root / plan.track.video), ctx=decord.cpu(0))
            for start in range(0, usable, batch_size):
                rows = np.arange(start, min(start + batch_size, usable))
                frames = reader.get_batch(rows.tolist()).asnumpy()  # [B, H, W, 3] uint8
                yield rows, torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        except decord.DECORDError as exc:
            raise DataError(f"{plan.track.video}: frames cannot be decoded ({str(exc).splitlines()[0][:120]})") from None


def read_audio(track: Track, root: Path) -> media.Audio:
    """The track's sound: `wave` float32 [N] at 16 kHz mono (empty without an audio stream), `start` on the frame clock."""
    return media.read_audio(root / track.video) if track.has_audio else media.Audio()


# --------------------------------------------------------------------------- the streamed pipeline

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


def _read_tracks(tracks: list[Track], root: Path, source: str, batch_size: int, warnings: list) -> Iterator[tuple]:
    """Events for the encoder stage: ("start", plan), ("visual", rows, batch), ("audio", media.Audio), ("end",) or ("failed", track, reason)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        for track in tracks:
            try:
                plan = plan_track(track, root)
                yield ("start", plan)
                for rows, batch in visual_batches(plan, root, source, batch_size, pool, warnings):
                    yield ("visual", rows, batch)
                yield ("audio", read_audio(track, root))
                yield ("end",)
            except DataError as exc:
                yield ("failed", track, str(exc))


def extract_tracks(tracks: list[Track], root: Path, store, settings: ExtractSettings, visual, audio, report: ExtractReport, frames_bar=None, tracks_bar=None) -> None:
    """Read, encode and write these tracks into store (split settings.split), overlapping the three stages."""
    import torch

    source = resolve_visual_source(settings)
    to_write: queue.Queue = queue.Queue(maxsize=2)
    write_errors: list[BaseException] = []

    def writer():
        while (job := to_write.get()) is not None:
            kind, track, payload = job
            try:
                if kind == "write":
                    arrays, attrs = payload
                    store.write_track(settings.split, track.track, arrays, attrs)
                    report.extracted.append(track.track)
                    report.frames += arrays["visual"].shape[0]
                else:
                    store.mark_failed(settings.split, track.track, payload, track_attrs(track))
                    report.failed[track.track] = payload
            except BaseException as exc:  # re-raised by the main thread: a store that cannot be written is a real error
                write_errors.append(exc)
            if tracks_bar is not None:
                tracks_bar.update(1)

    writer_thread = threading.Thread(target=writer, daemon=True)
    writer_thread.start()
    plan = visual_rows = None
    try:
        with torch.inference_mode():
            for event in _prefetch(_read_tracks(tracks, root, source, settings.batch_size, report.warnings), depth=4):
                if write_errors:
                    raise write_errors[0]
                kind = event[0]
                if kind == "start":
                    plan = event[1]
                    visual_rows = np.zeros((plan.rows, visual.dim), dtype=np.float16)
                    visual_mask = np.zeros(plan.rows, dtype=bool)
                elif kind == "visual":
                    rows, batch = event[1], event[2]
                    features = visual.encode(visual.preprocess(batch))
                    visual_rows[rows] = features.float().cpu().numpy().astype(np.float16)
                    visual_mask[rows] = True
                    if frames_bar is not None:
                        frames_bar.update(len(rows))
                elif kind == "audio":
                    sound = event[1]
                    if sound.wave.size == 0:
                        report.warnings.append(f"{plan.track.track}: {plan.track.video} has no audio stream, 0 audio rows")
                    audio_rows, audio_time = audio.encode_waveform(sound.wave, batch_size=settings.batch_size)
                    audio_time = np.asarray(audio_time, dtype=np.float64) + sound.start  # onto the frame clock
                elif kind == "end":
                    arrays = {
                        "visual": visual_rows,
                        "visual_mask": visual_mask,
                        "frame_time": plan.frame_time,
                        "audio": np.asarray(audio_rows, dtype=np.float16).reshape(-1, audio.dim),
                        "audio_time": np.asarray(audio_time, dtype=np.float32),
                    }
                    if plan.labels is not None:
                        arrays["labels"] = plan.labels
                    to_write.put(("write", plan.track, (arrays, {**track_attrs(plan.track), "n_frames": plan.rows})))
                    if frames_bar is not None:
                        frames_bar.update(plan.rows - int(visual_mask.sum()))
                    plan = None
                elif kind == "failed":
                    to_write.put(("failed", event[1], event[2]))
                    plan = None
    finally:
        to_write.put(None)
        writer_thread.join()
    if write_errors:
        raise write_errors[0]


def track_attrs(track: Track) -> dict:
    return {"video": track.video, "subject": track.subject, "fps": track.fps, "n_frames": track.n_frames, "has_audio": track.has_audio}


# --------------------------------------------------------------------------- one run


def run_extract(settings: ExtractSettings) -> ExtractReport:
    """Extract one split into the store; returns what happened (never raises for a single bad track)."""
    from dva.stores import open_store

    settings.validate()
    root = Path(settings.data)
    result = scan(root, split=settings.split, progress=settings.progress)
    device = settings.device or default_device()
    visual, audio = build_encoders(settings, device if not (settings.workers or settings.scheduler) else "cpu")
    identity = store_identity(settings, visual, audio)
    store = open_store(settings.out, mode="a")
    try:
        if store.attrs.get("visual_encoder"):
            check_compatible(store.attrs, identity, settings.out)
        else:
            store.set_attrs(identity)
        store.ensure_split(settings.split)
        report = ExtractReport(store=str(settings.out), split=settings.split)
        for problem in result.problems:
            _record_problem(store, settings.split, problem, report)
        todo = []
        for track in result.tracks:
            if not settings.overwrite and store.is_complete(settings.split, track.track):
                report.skipped.append(track.track)
            else:
                todo.append(track)
        started = time.perf_counter()
        if settings.workers or settings.scheduler:
            from dva.pipeline.distributed import extract_distributed

            del visual, audio  # the workers build their own
            extract_distributed(todo, settings, report)
        else:
            _extract_here(todo, root, store, settings, visual, audio, report)
        report.seconds = time.perf_counter() - started
    finally:
        store.close()
    return report


def _extract_here(todo, root, store, settings, visual, audio, report) -> None:
    from tqdm import tqdm

    total_frames = sum(track.n_frames if track.n_frames is not None else track.n_video_frames for track in todo)
    with tqdm(total=len(todo), desc=f"extract {settings.split}", unit="track", disable=not settings.progress, position=0) as tracks_bar, tqdm(
        total=total_frames, desc="frames", unit="frame", disable=not settings.progress, position=1, leave=False
    ) as frames_bar:
        extract_tracks(todo, root, store, settings, visual, audio, report, frames_bar, tracks_bar)


def _record_problem(store, split: str, problem: Problem, report: ExtractReport) -> None:
    store.mark_failed(split, problem.track, problem.reason)
    report.failed[problem.track] = problem.reason
