"""`dva extract`: decode -> encode -> write, streamed, resumable, on one machine or a Dask cluster.

Stages overlap: a background thread reads a track (JPEG crops or decord frames, and the
16 kHz audio and frame times through PyAV in `media`) into bounded queues while the
caller's thread encodes, and another thread writes finished tracks to the store. Batches
never span two tracks, so a track's arrays do not depend on which other tracks ran with it
(a resumed store equals a clean one).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import queue
import sys
import threading
import time
import warnings
import zlib
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
from dva.stores import MODALITIES, check_set_name, complete_sets, set_differences, set_errors

# torchvision 0.29 deprecates its image codecs for TorchCodec's and warns on every call: one line per crop
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated", category=DeprecationWarning)

VISUAL_SOURCES = ("auto", "crops", "video")
JPEG_DECODERS = ("cpu", "cuda")
# how frame times are made: shared by every feature set of a store, so a store never mixes two clocks
TIMELINE = {"frame_time": "container timestamps (video packet pts), 0 at the first frame", "audio_start": "PyAV, start offset applied on the frame clock"}


@dataclass(frozen=True)
class ExtractSettings:
    """Every `dva extract` flag; the encoder ones decide the store's identity."""

    data: str
    split: str
    out: str = "stores"
    visual_encoder: str = "clip"  # a family of dva.pipeline.encoders.VISUAL_FAMILIES
    audio_encoder: str = "ast"  # a family of AUDIO_FAMILIES
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    hf_model: str = "google/vit-base-patch16-224-in21k"
    ast_model: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    wav2vec2_model: str = "facebook/wav2vec2-base"
    audio_layer: str = "mean"  # wav2vec2: a hidden-state index, or "mean" of them all
    audio_mode: str = "window"
    audio_window: float = 1.0
    audio_hop: float = 0.1
    audio_pad: bool = False  # window mode: pad each window to the AST's max_length instead of running it at its own length
    visual_source: str = "auto"
    batch_size: int = 64
    device: str | None = None
    workers: int = 0
    scheduler: str | None = None
    overwrite: bool = False
    progress: bool = True
    test_list: str | None = None  # override the VA test list found in data
    sample: str | None = None  # override the organisers' sample file found in data
    shard: str | None = None  # "I/N": this process takes videos I, I+N, I+2N, ... (0-based)
    claim_timeout: float = 600.0  # seconds without a heartbeat before another process takes a claim over
    jpeg_decoder: str = "cpu"  # "cuda": crops decoded on the GPU by nvJPEG (batched); "cpu": libjpeg-turbo in a thread pool
    only: str | None = None  # "visual" or "audio": make one feature set, not both
    name: str | None = None  # the feature set's name (with --only); default: derived from the encoder

    @property
    def modalities(self) -> tuple[str, ...]:
        return (self.only,) if self.only else MODALITIES

    def validate(self) -> None:
        from dva.pipeline.encoders import AUDIO_FAMILIES, VISUAL_FAMILIES
        from dva.pipeline.encoders.ast import MODES as AUDIO_MODES

        if self.visual_encoder not in VISUAL_FAMILIES:
            raise ConfigError(f"--visual-encoder must be one of {', '.join(VISUAL_FAMILIES)}, not {self.visual_encoder!r}")
        if self.audio_encoder not in AUDIO_FAMILIES:
            raise ConfigError(f"--audio-encoder must be one of {', '.join(AUDIO_FAMILIES)}, not {self.audio_encoder!r}")
        if not (str(self.audio_layer) == "mean" or str(self.audio_layer).isdigit()):
            raise ConfigError(f"--audio-layer must be 'mean' or a hidden-state index 0, 1, 2, ..., not {self.audio_layer!r}")
        if self.jpeg_decoder not in JPEG_DECODERS:
            raise ConfigError(f"--jpeg-decoder must be one of {', '.join(JPEG_DECODERS)}, not {self.jpeg_decoder!r}")
        if self.jpeg_decoder == "cuda":
            import torch

            if not torch.cuda.is_available() or str(self.device or "cuda").startswith("cpu"):
                raise ConfigError("--jpeg-decoder cuda decodes on the GPU the encoders run on: there is none here (use --jpeg-decoder cpu)")
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
        if self.shard is not None:
            parse_shard(self.shard)
        if self.claim_timeout <= 0:
            raise ConfigError("--claim-timeout must be positive")
        if self.only is not None and self.only not in MODALITIES:
            raise ConfigError(f"--only must be visual or audio, not {self.only!r}")
        if self.name is not None:
            if self.only is None:
                raise ConfigError("--name names one feature set: use it with --only visual or --only audio")
            try:
                check_set_name(self.name)
            except StoreError as exc:
                raise ConfigError(f"--name {exc}") from None


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N) with 0 <= I < N."""
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 (the first of four shares)")
    return i, n


@dataclass
class ExtractReport:
    """What one `dva extract` run did; `failed` maps track -> one-line reason."""

    store: str
    split: str
    extracted: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # complete before this run
    elsewhere: list[str] = dataclasses.field(default_factory=list)  # done (or failed) by another process meanwhile
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
    """(visual encoder, audio encoder) of the settings' families on device, each family reading its own model
    field; None for a modality left out by --only."""
    from dva.pipeline.encoders import build_audio, build_visual

    visual_model = {"clip": settings.clip_model, "hf": settings.hf_model}
    audio_model = {"ast": settings.ast_model, "wav2vec2": settings.wav2vec2_model}
    visual = audio = None
    if "visual" in settings.modalities:
        visual = build_visual(settings.visual_encoder, visual_model.get(settings.visual_encoder, ""), settings.clip_pretrained, device)
    if "audio" in settings.modalities:
        audio = build_audio(
            settings.audio_encoder, audio_model.get(settings.audio_encoder, ""), device,
            mode=settings.audio_mode, window=settings.audio_window, hop=settings.audio_hop, pad=settings.audio_pad, layer=settings.audio_layer,
        )
    return visual, audio


ENCODER_FIELDS = (
    "only", "name", "visual_encoder", "audio_encoder", "clip_model", "clip_pretrained", "hf_model", "ast_model", "wav2vec2_model",
    "audio_mode", "audio_window", "audio_hop", "audio_pad", "audio_layer",
)


def encoder_key(settings: ExtractSettings) -> tuple:
    """The settings that decide which encoders `build_encoders` makes (a Dask worker builds them once per key)."""
    return tuple(getattr(settings, name) for name in ENCODER_FIELDS)


def resolve_visual_source(settings: ExtractSettings) -> str:
    if settings.visual_source != "auto":
        return settings.visual_source
    from dva.data.aff_wild2 import child_folder

    return "crops" if child_folder(Path(settings.data), "cropped_aligned") is not None else "video"  # any case, as scan finds it


def feature_sets(settings: ExtractSettings, visual, audio) -> dict[str, dict]:
    """{name: info} of the feature sets this run makes: what decides whether a store's set can take more tracks."""
    sets = {}
    for modality, encoder in (("visual", visual), ("audio", audio)):
        if encoder is None:
            continue
        if modality == "visual":
            preprocessing = {"visual_source": resolve_visual_source(settings)}
            if settings.jpeg_decoder == "cuda":  # nvJPEG's pixels may differ from libjpeg-turbo's by a level or two
                preprocessing["jpeg_decoder"] = "nvjpeg"
        else:
            preprocessing = {"audio_decoder": "PyAV", "audio_sample_rate": 16000, "audio_channels": "mono"}
        provenance = encoder.provenance()
        name = settings.name or encoder.set_name()
        sets[name] = {"modality": modality, "dim": int(encoder.dim), "encoder": provenance, "preprocessing": preprocessing, "dva_version": __version__}
    return sets


def check_compatible(existing: dict[str, dict], wanted: dict[str, dict], store_path: str) -> None:
    """A set name already in the store must mean the same encoder settings: refuse otherwise, saying exactly what differs."""
    for name, info in wanted.items():
        differences = set_differences(existing[name], info) if name in existing else []
        if differences:
            shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
            raise StoreError(f"{store_path} already has a feature set {name!r} made with other settings (store != this run: {shown}): pass the same flags, or --name another set")


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
    else:  # test: the sample file's rows when the organisers gave one, else one row per video frame
        labels, rows = None, track.n_frames if track.n_frames is not None else track.n_video_frames
    # the container's timestamps, not index / fps: some videos have a variable frame rate
    frame_time = media.times_for_rows(media.frame_times(root / track.video), rows, 1 / track.fps).astype(np.float32)
    return TrackPlan(track, rows, frame_time, labels)


def read_crop(path: Path):
    """uint8 [3, H, W] or None when the crop is missing; raises ValueError when it is corrupt."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode_crop(data, path)


def decode_crop(data: bytes, path: Path):
    """One crop's bytes -> uint8 [3, H, W] RGB. libjpeg-turbo through torchvision: the same pixels as PIL, about
    1.8x faster on 112 px crops (BENCHMARKS.md); PIL reads what libjpeg-turbo does not (a PNG named .jpg, say)."""
    import torch
    from PIL import Image, UnidentifiedImageError

    decode_jpeg = _torchvision_decode_jpeg()
    if data and decode_jpeg is not None:
        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        except RuntimeError:
            pass
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.array(image.convert("RGB"))  # a writable copy for torch
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:  # PIL's ways of saying "corrupt"
        raise ValueError(f"{path}: corrupt JPEG ({str(exc).splitlines()[0][:80]})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1)


@functools.cache
def _torchvision_decode_jpeg():
    """torchvision's decode_jpeg (RGB out), or None where a later torchvision has dropped it (PIL then decodes the
    same pixels, only slower)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def decode_on_gpu(blobs: list[bytes], paths: list[Path], device: str, warnings: list) -> list:
    """Crops' bytes -> uint8 [3, H, W] tensors on a CUDA device, decoded there in one batch (nvJPEG); None for a
    missing or corrupt crop. A batch nvJPEG refuses is decoded crop by crop on the CPU to find the bad ones."""
    import torch

    decode_jpeg = _torchvision_decode_jpeg()
    if decode_jpeg is None:
        raise ConfigError("--jpeg-decoder cuda needs torchvision's decode_jpeg, which this torchvision no longer has: use --jpeg-decoder cpu")
    present = [i for i, blob in enumerate(blobs) if blob]
    images: list = [None] * len(blobs)
    try:
        decoded = decode_jpeg([torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in present], device=device)
        for i, image in zip(present, decoded):
            images[i] = image
    except RuntimeError:
        for i in present:
            try:
                images[i] = decode_crop(blobs[i], paths[i]).to(device, non_blocking=True)
            except ValueError as exc:
                warnings.append(str(exc))
    return images


def decode_workers() -> int:
    """Threads decoding JPEG crops: one per usable core (libjpeg-turbo lets go of the GIL while it decodes), 2 to 16."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, min(16, cores or 1))


def _stack(images: list):
    """Stack images of possibly different sizes into one uint8 batch (resized to the first one's size)."""
    import torch
    from torchvision.transforms.functional import resize

    size = images[0].shape[-2:]
    return torch.stack([img if img.shape[-2:] == size else resize(img, list(size), antialias=True) for img in images])


def visual_batches(plan: TrackPlan, root: Path, source: str, batch_size: int, pool: ThreadPoolExecutor, warnings: list, pin: bool = False,
                   jpeg_decoder: str = "cpu", device: str = "cuda") -> Iterator[tuple[np.ndarray, object]]:
    """Yield (row indices, uint8 [B,3,H,W]) for the rows that have a picture; rows not yielded stay masked.
    pin: batches in page-locked memory, so that their copy to a CUDA device runs while the next one decodes.
    jpeg_decoder "cuda": the pool only reads the crops' bytes and nvJPEG decodes each batch on device."""
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

            def read(row):
                path = folder / f"{row + 1:05d}.jpg"
                return path.read_bytes() if path.is_file() else b""

            if jpeg_decoder == "cuda":
                decoded = decode_on_gpu(list(pool.map(read, rows)), [folder / f"{r + 1:05d}.jpg" for r in rows], device, warnings)
            else:
                decoded = pool.map(load, rows)
            for row, image in zip(rows, decoded):
                if image is not None:
                    images.append(image)
                    kept.append(row)
            if images:
                batch = _stack(images)
                yield np.asarray(kept), batch.pin_memory() if pin and not batch.is_cuda else batch
    else:
        import decord
        import torch

        try:
            reader = decord.VideoReader(str(root / plan.track.video), ctx=decord.cpu(0))
            for start in range(0, usable, batch_size):
                rows = np.arange(start, min(start + batch_size, usable))
                frames = reader.get_batch(rows.tolist()).asnumpy()  # [B, H, W, 3] uint8
                batch = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
                yield rows, batch.pin_memory() if pin else batch
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


SAME_AUDIO = object()  # the audio event of a track that shares its video's sound with the track before it


def video_units(tracks: list[Track]) -> list[list[Track]]:
    """Tracks grouped by video, in first-seen order: a `_left`/`_right` pair is one unit of work, so
    its shared sound is decoded and encoded once and one process claims both."""
    units: dict[str, list[Track]] = {}
    for track in tracks:
        units.setdefault(track.video, []).append(track)
    return list(units.values())


def unit_key(unit: list[Track]) -> str:
    return Path(unit[0].video).stem


def settled(attrs: dict, sets, since: float, overwrite: bool) -> bool:
    """Whether a track needs no more work for these feature sets: each complete (since this run began, with
    --overwrite), or failed since then."""
    done, errors, done_at = complete_sets(attrs), set_errors(attrs), attrs.get("done_at") or {}
    for name in sets:
        fresh = done_at.get(name, 0.0) >= since
        if not ((name in done and (fresh or not overwrite)) or (name in errors and fresh)):
            return False
    return True


def _read_units(units: list[list[Track]], root: Path, store, settings: "ExtractSettings", sets: dict[str, str], claims, since: float, report: "ExtractReport", deferred: list) -> Iterator[tuple]:
    """Events for the encoder stage, unit by unit: ("start", plan), ("visual", rows, batch), ("audio", wave or SAME_AUDIO),
    ("end",) or ("failed", track, reason), then ("release", key). A unit another process holds goes to deferred.
    sets maps each modality this run makes to its feature-set name; the other modality is not read."""
    import torch

    source = resolve_visual_source(settings)
    pin = torch.cuda.is_available() and not str(settings.device or "cuda").startswith("cpu")  # the encoders run on a GPU
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        for unit in units:
            key = unit_key(unit)
            if not claims.try_claim(key):
                deferred.append(unit)
                continue
            todo = []
            for track in unit:  # look again now that the unit is ours: another process may have finished it
                if settled(store.track_state(settings.split, track.track), sets.values(), since, settings.overwrite):
                    report.elsewhere.append(track.track)
                else:
                    todo.append(track)
            audio_video = None
            for track in todo:
                try:
                    plan = plan_track(track, root)
                    yield ("start", plan)
                    if "visual" in sets:
                        for rows, batch in visual_batches(plan, root, source, settings.batch_size, pool, report.warnings, pin, settings.jpeg_decoder, settings.device or "cuda"):
                            yield ("visual", rows, batch)
                    if "audio" not in sets:
                        pass
                    elif audio_video == track.video:
                        yield ("audio", SAME_AUDIO)
                    else:
                        yield ("audio", read_audio(track, root))
                        audio_video = track.video
                    yield ("end",)
                except DataError as exc:
                    audio_video = None
                    yield ("failed", track, str(exc))
            yield ("release", key)


def extract_units(units: list[list[Track]], root: Path, store, settings: ExtractSettings, sets: dict[str, str], visual, audio, report: ExtractReport, claims=None, since: float | None = None, frames_bar=None, tracks_bar=None) -> list[list[Track]]:
    """Claim, read, encode and write these units (see `video_units`) into store (split settings.split), overlapping
    the three stages; sets maps each modality to make to its feature-set name (its encoder is visual or audio).
    Returns the units another process holds (not done here)."""
    import torch

    from dva.pipeline.claims import NoClaims

    claims = claims if claims is not None else NoClaims()
    since = since if since is not None else time.time()
    to_write: queue.Queue = queue.Queue(maxsize=2)
    write_errors: list[BaseException] = []
    deferred: list[list[Track]] = []

    def writer():
        while (job := to_write.get()) is not None:
            kind, track, payload = job
            try:
                if kind == "write":
                    own, made, attrs = payload
                    reason = write_track_sets(store, settings.split, track.track, own, made, attrs, settings.overwrite)
                    if reason is None:
                        report.extracted.append(track.track)
                        report.frames += own["frame_time"].shape[0]
                    else:
                        store.mark_failed(settings.split, track.track, reason, list(sets.values()), track_attrs(track))
                        report.failed[track.track] = reason
                elif kind == "failed":
                    store.mark_failed(settings.split, track.track, payload, list(sets.values()), track_attrs(track))
                    report.failed[track.track] = payload
                else:  # "release": every track of the unit is written
                    claims.release(payload)
                    continue
            except BaseException as exc:  # re-raised by the main thread: a store that cannot be written is a real error
                write_errors.append(exc)
            if tracks_bar is not None:
                tracks_bar.update(1)

    writer_thread = threading.Thread(target=writer, daemon=True)
    writer_thread.start()
    plan = None
    try:
        with torch.inference_mode():
            for event in _prefetch(_read_units(units, root, store, settings, sets, claims, since, report, deferred), depth=4):
                if write_errors:
                    raise write_errors[0]
                kind = event[0]
                if kind == "start":
                    plan, made = event[1], {}
                    if visual is not None:
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
                    if event[1] is not SAME_AUDIO:  # a pair's second track reuses the first one's sound
                        sound = event[1]
                        if sound.wave.size == 0:
                            report.warnings.append(f"{plan.track.video} has no audio stream, 0 audio rows")
                        if sound.bad_packets:
                            report.warnings.append(f"{plan.track.video}: {sound.bad_packets} audio packets ({sound.bad_seconds:.2f} s) could not be decoded and are silence")
                        features, steps = audio.encode_waveform(sound.wave, batch_size=settings.batch_size)
                        shared_audio = np.asarray(features, dtype=np.float16).reshape(-1, audio.dim), (np.asarray(steps, dtype=np.float64) + sound.start).astype(np.float32)
                    made[sets["audio"]] = ("audio", dict(zip(("data", "time"), shared_audio)))  # onto the frame clock
                elif kind == "end":
                    if visual is not None:
                        made[sets["visual"]] = ("visual", {"data": visual_rows, "mask": visual_mask})
                    own = {"frame_time": plan.frame_time, **({"labels": plan.labels} if plan.labels is not None else {})}
                    to_write.put(("write", plan.track, (own, made, {**track_attrs(plan.track), "n_frames": plan.rows})))
                    if frames_bar is not None:
                        frames_bar.update(plan.rows - (int(visual_mask.sum()) if visual is not None else 0))
                    plan = None
                elif kind == "failed":
                    to_write.put(("failed", event[1], event[2]))
                    plan = None
                elif kind == "release":
                    to_write.put(("release", None, event[1]))
    finally:
        to_write.put(None)
        writer_thread.join()
    if write_errors:
        raise write_errors[0]
    return deferred


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
    for name, (modality, arrays) in made.items():
        store.write_set(split, track, name, modality, arrays)
    return None


def track_attrs(track: Track) -> dict:
    return {"video": track.video, "subject": track.subject, "fps": track.fps, "n_frames": track.n_frames, "has_audio": track.has_audio}


def test_phase_attrs(result) -> dict:
    """What the test split records of the organisers' files, so `dva predict` can write the submission from the store."""
    attrs = {}
    if result.test_list is not None:
        attrs["test_list"] = {"path": str(Path(result.test_list).resolve()), "tracks": [t.track for t in result.tracks] + [p.track for p in result.problems]}
    if result.sample is not None:
        attrs["sample"] = {"path": result.sample.path, "sha256": result.sample.sha256, "rows": len(result.sample.locations), "tracks": result.sample.track_order()}
    return attrs


# --------------------------------------------------------------------------- one run


def run_extract(settings: ExtractSettings) -> ExtractReport:
    """Extract one split into the store; returns what happened (never raises for a single bad track).

    Several processes may run this on one store and split at once: each claims a video before
    reading it, skips videos another process holds, then waits until every track of its share is
    complete or failed (taking over the claims of processes that died)."""
    from dva.pipeline.claims import POLL, claims_for
    from dva.stores import open_store

    settings.validate()
    root = Path(settings.data)
    result = scan(root, split=settings.split, progress=settings.progress, test_list=settings.test_list, sample=settings.sample)
    device = settings.device or default_device()
    visual, audio = build_encoders(settings, device if not (settings.workers or settings.scheduler) else "cpu")
    made = feature_sets(settings, visual, audio)
    sets = {info["modality"]: name for name, info in made.items()}
    store = open_store(settings.out, mode="a")
    claims = claims_for(store, settings.split, settings.claim_timeout)
    try:
        with claims_for(store, "store", settings.claim_timeout).hold("metadata"):  # metadata edits by one process at a time
            existing = store.feature_sets()  # refuses a dva 0.1 store, naming `dva upgrade`
            check_compatible(existing, made, settings.out)
            timeline = store.attrs.get("timeline")
            if timeline is not None and timeline.get("frame_time") != TIMELINE["frame_time"]:
                raise StoreError(f"{settings.out} was made with another frame clock ({timeline}): extract into a new --out")
            if timeline is None:
                store.set_attrs({"dva_version": __version__, "format": 2, "timeline": TIMELINE})
            for name, info in made.items():
                if name not in existing:
                    store.add_feature_set(name, info)
            store.ensure_split(settings.split)
            wanted = test_phase_attrs(result) if settings.split == "test" else {}
            if any(store.split_attrs(settings.split).get(k) != v for k, v in wanted.items()):
                store.set_split_attrs(settings.split, wanted)
        report = ExtractReport(store=str(settings.out), split=settings.split, warnings=list(result.warnings))
        since = time.time()
        units = video_units(result.tracks)
        if settings.shard is not None:
            index, count = parse_shard(settings.shard)
            units = sorted(units, key=unit_key)[index::count]
            # tracks the scan left out have no video to share by: a stable hash of the name gives each one shard
            result = dataclasses.replace(result, problems=[p for p in result.problems if zlib.crc32(p.track.encode()) % count == index])
        for problem in result.problems:
            _record_problem(store, settings.split, problem, list(made), report, claims)
        known = store.track_index(settings.split)  # one listing for the whole resume check
        todo = []
        for unit in units:
            if not settings.overwrite and all(set(made) <= complete_sets(known.get(t.track, {})) for t in unit):
                report.skipped += [t.track for t in unit]
            else:
                todo.append(unit)
        started = time.perf_counter()
        pending, waiting = todo, False
        while pending:
            runnable = [u for u in pending if claims.available(unit_key(u))]  # held by a live process: wait, do not retry
            deferred = [u for u in pending if u not in runnable]
            if runnable and (settings.workers or settings.scheduler):
                from dva.pipeline.distributed import extract_distributed

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
        report.seconds = time.perf_counter() - started
    finally:
        claims.release_all()
        store.close()
    return report


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
