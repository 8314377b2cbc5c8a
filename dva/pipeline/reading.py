"""Reading one track: its plan (rows, frame times, labels), its pictures in batches (JPEG crops decoded on the
CPU or the GPU, or the video's own frames as a player shows them) and its sound (PyAV, through `media`). Nothing here knows of the
store or of claims: these are the reader thread's tools (`stream.read_units`)."""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dva.data.aff_wild2 import Track
from dva.data.annotations import fit_rows, read_annotation, read_task_annotation
from dva.data.s_aff_wild2 import image_labels
from dva.data.video import frame_times, open_frames
from dva.errors import ConfigError, DataError, first_line
from dva.pipeline import media
from dva.stores.attrs import LABEL_ARRAYS

# torchvision 0.29 deprecates its image codecs for TorchCodec's and warns on every call: one line per crop
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated", category=DeprecationWarning)


@dataclass
class TrackPlan:
    """What to read for one track: T rows, their times, VA labels (None for a track VA does not annotate), and the
    other tasks' labels ({store array: values}, e.g. labels_expr [T])."""

    track: Track
    rows: int
    frame_time: np.ndarray
    labels: np.ndarray | None
    task_labels: dict = dataclasses.field(default_factory=dict)
    frame_number: np.ndarray | None = None  # an image set's: each row's frame number (its image NNNNN.jpg)

    def arrays(self) -> dict[str, np.ndarray]:
        """The track's own arrays for the store: frame_time, labels (VA), each other task's labels and an image set's frame_number."""
        own = {"frame_time": self.frame_time, **({"labels": self.labels} if self.labels is not None else {}), **self.task_labels}
        return {**own, "frame_number": self.frame_number} if self.frame_number is not None else own


def plan_track(track: Track, root: Path) -> TrackPlan:
    """T is the most rows any task gives the track (annotation lines, a challenge's sample rows; `scan`), else one row
    per video frame; each task's labels are padded to T with 'not annotated'. An image set's track (s-Aff-Wild2): its
    selected images, each at its own frame number's time, labelled from its split's annotation file."""
    if track.images is not None:
        frames = np.asarray(track.images, dtype=np.int32)
        labels = image_labels(root, track)
        frame_time = ((frames.astype(np.float64) - 1) / track.fps).astype(np.float32)  # the gaps the selection left stay gaps
        others = {LABEL_ARRAYS[task]: values for task, values in labels.items() if task != "va"}
        return TrackPlan(track, int(frames.shape[0]), frame_time, labels.get("va"), others, frames)
    rows = track.n_frames if track.n_frames is not None else track.n_video_frames
    labels, task_labels = None, {}
    for task, info in track.tasks.items():
        if info.get("annotation") is None:
            continue
        values = fit_rows(read_task_annotation(root / info["annotation"], task), rows, task)
        if task == "va":
            labels = values
        else:
            task_labels[LABEL_ARRAYS[task]] = values
    if labels is None and track.annotation is not None:  # a Track made without its tasks (by hand): its VA file alone
        labels = read_annotation(root / track.annotation)
        rows = labels.shape[0]
    # the container's timestamps, not index / fps: some videos have a variable frame rate (sound alone: none, 1/fps apart)
    frame_time = media.times_for_rows(frame_times(root / track.video), rows, 1 / track.fps).astype(np.float32)
    return TrackPlan(track, rows, frame_time, labels, task_labels)


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
        raise ValueError(f"{path}: corrupt JPEG ({first_line(exc, 80)})") from None
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


@functools.cache
def check_nvjpeg(device) -> None:
    """Refuse --jpeg-decoder cuda at the start where nvJPEG cannot decode on device (a torchvision or driver without
    it): otherwise every batch would fall back to the CPU, crop by crop, while the store's record says nvjpeg."""
    import torch
    from torchvision.io import encode_jpeg

    decode_jpeg = _torchvision_decode_jpeg()
    if decode_jpeg is None:
        raise ConfigError("--jpeg-decoder cuda needs torchvision's decode_jpeg, which this torchvision no longer has: use --jpeg-decoder cpu")
    try:
        decode_jpeg([encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8))], device=device)
    except RuntimeError as exc:
        raise ConfigError(f"--jpeg-decoder cuda: nvJPEG cannot decode on {device} here ({first_line(exc, 120)}): use --jpeg-decoder cpu") from None


def decode_on_gpu(blobs: list[bytes], paths: list[Path], device: str, masked: list) -> list:
    """Crops' bytes -> uint8 [3, H, W] tensors on a CUDA device, decoded there in one batch (nvJPEG); None for a
    missing or corrupt crop (named in masked). A batch nvJPEG refuses is decoded crop by crop on the CPU to find the bad
    ones (a run checks first that nvJPEG decodes at all on the device: `check_nvjpeg`)."""
    import torch

    decode_jpeg = _torchvision_decode_jpeg()
    if decode_jpeg is None:
        raise ConfigError("--jpeg-decoder cuda needs torchvision's decode_jpeg, which this torchvision no longer has: use --jpeg-decoder cpu")
    present = [i for i, blob in enumerate(blobs) if blob]
    images: list = [None] * len(blobs)
    if not present:  # a stretch without a face: decode_jpeg([]) raises ValueError, and there is nothing to decode
        return images
    try:
        decoded = decode_jpeg([torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in present], device=device)
        for i, image in zip(present, decoded):
            images[i] = image
    except RuntimeError:
        for i in present:
            try:
                images[i] = decode_crop(blobs[i], paths[i]).to(device, non_blocking=True)
            except ValueError as exc:
                masked.append(str(exc))
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


def visual_batches(plan: TrackPlan, root: Path, source: str, batch_size: int, pool: ThreadPoolExecutor, masked: list, pin: bool = False,
                   jpeg_decoder: str = "cpu", device: str = "cuda") -> Iterator[tuple[np.ndarray, object]]:
    """Yield (row indices, uint8 [B,3,H,W]) for the rows that have a picture; rows not yielded stay masked, and a
    crop that is there but cannot be decoded is named in masked (one message each). A track without crops
    (plan.track.frames_dir None) yields nothing: its caller says so.
    pin: batches in page-locked memory, so that their copy to a CUDA device runs while the next one decodes.
    jpeg_decoder "cuda": the pool only reads the crops' bytes and nvJPEG decodes each batch on device."""
    usable = min(plan.rows, plan.track.n_video_frames)  # rows past the video's end are masked, never invented
    if plan.frame_number is not None:  # an image set: row i is image frame_number[i], wherever it lies in the video
        if plan.track.frames_dir is not None:
            yield from _crop_batches(root / plan.track.frames_dir, plan.frame_number, batch_size, pool, masked, pin, jpeg_decoder, device)
    elif source == "crops":
        if plan.track.frames_dir is not None:
            yield from _crop_batches(root / plan.track.frames_dir, np.arange(1, usable + 1), batch_size, pool, masked, pin, jpeg_decoder, device)
    else:
        yield from _frame_batches(plan, root, usable, batch_size, pin)


def _crop_batches(folder: Path, numbers: np.ndarray, batch_size: int, pool: ThreadPoolExecutor, masked: list, pin: bool,
                  jpeg_decoder: str, device: str) -> Iterator[tuple[np.ndarray, object]]:
    """`visual_batches` from the crops `NNNNN.jpg` in folder, row i's numbered numbers[i] (1-based frame numbers): a
    missing or corrupt crop leaves its row masked."""
    def crop(row) -> Path:
        return folder / f"{int(numbers[row]):05d}.jpg"

    for start in range(0, len(numbers), batch_size):
        rows = np.arange(start, min(start + batch_size, len(numbers)))
        images, kept = [], []

        def load(row):
            try:
                return read_crop(crop(row))
            except ValueError as exc:
                masked.append(str(exc))
                return None

        def read(row):
            path = crop(row)
            return path.read_bytes() if path.is_file() else b""

        if jpeg_decoder == "cuda":
            decoded = decode_on_gpu(list(pool.map(read, rows)), [crop(r) for r in rows], device, masked)
        else:
            decoded = pool.map(load, rows)
        for row, image in zip(rows, decoded):
            if image is not None:
                images.append(image)
                kept.append(row)
        if images:
            batch = _stack(images)
            yield np.asarray(kept), batch.pin_memory() if pin and not batch.is_cuda else batch


def _frame_batches(plan: TrackPlan, root: Path, usable: int, batch_size: int, pin: bool) -> Iterator[tuple[np.ndarray, object]]:
    """`visual_batches` from the video's own frames as a player shows them (`dva.data.video`): row i is the i-th
    shown frame, at frame_time[i]; every usable row has a picture."""
    import torch

    if not usable:  # sound alone, or no rows
        return
    images, start = [], 0
    for row, image in zip(range(usable), open_frames(root / plan.track.video)):
        images.append(image)
        if len(images) == batch_size or row + 1 == usable:
            batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W] uint8
            yield np.arange(start, row + 1), batch.pin_memory() if pin else batch
            start, images = row + 1, []
    if images:  # the decoder ended before the count: the rows it gave, the rest stay masked
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        yield np.arange(start, start + len(images)), batch.pin_memory() if pin else batch


def read_audio(track: Track, root: Path) -> media.Audio:
    """The track's sound: `wave` float32 [N] at 16 kHz mono (empty without an audio stream), `start` on the frame clock."""
    return media.read_audio(root / track.video) if track.has_audio else media.Audio()

