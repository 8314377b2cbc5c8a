"""Find the tracks of an Aff-Wild2-layout dataset, wherever the release put its parts.

A track is a video plus an optional subject (`NAME_left` / `NAME_right` annotate two
people in `NAME.mp4`). `scan` returns one `Track` per usable track and a `Problem` per
track it had to leave out, so a single bad file never hides the rest of the split.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dva.data.annotations import read_annotation, read_test_list
from dva.errors import DataError

SPLITS = ("train", "val", "test")
VIDEO_SUFFIXES = (".mp4", ".avi")
# Where releases have put the videos, relative to DATA (matched case-insensitively).
VIDEO_DIRS = (
    ("videos", "batch1"), ("videos", "batch2"), ("videos", "new_vids"), ("videos",),
    ("batch1",), ("batch2",), ("new_vids",),
)
SPLIT_DIR_NAMES = {"train": ("train_set", "training_set"), "val": ("validation_set", "val_set")}
SUBJECTS = ("left", "right")


@dataclass(frozen=True)
class Track:
    """The manifest record the whole pipeline passes around (`dva scan --json`)."""

    track: str
    split: str
    video: str  # relative to DATA
    subject: str | None
    n_frames: int | None  # annotation lines; None for test tracks
    n_valid: int | None
    fps: float  # from the container
    has_audio: bool
    frames_dir: str | None  # cropped_aligned/<track>, relative to DATA
    n_video_frames: int  # decoded frames in the container (not part of the scan record)
    annotation: str | None  # relative to DATA (not part of the scan record)

    RECORD_KEYS = ("track", "split", "video", "subject", "n_frames", "n_valid", "fps", "has_audio", "frames_dir")

    def record(self) -> dict:
        full = asdict(self)
        return {key: full[key] for key in self.RECORD_KEYS}


@dataclass(frozen=True)
class Problem:
    """A track left out of the scan, and why (one line, naming the file)."""

    track: str
    split: str
    reason: str


@dataclass(frozen=True)
class ScanResult:
    tracks: list[Track]
    problems: list[Problem]


def scan(data: str | Path, split: str | None = None, progress: bool = False) -> ScanResult:
    """Scan DATA for the tracks of one split (or all splits when split is None).

    Raises DataError when DATA is missing or holds nothing usable; single bad tracks
    become `Problem`s.
    """
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{data}: no such dataset folder (expected the Aff-Wild2 layout: videos/, Annotations/, cropped_aligned/)")
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    videos = find_videos(root)
    if not videos:
        raise DataError(f"{data}: no .mp4/.avi videos under videos/batch1, videos/batch2, batch1, batch2 or new_vids")
    wanted = [split] if split else list(SPLITS)

    candidates: list[tuple[str, str, Path | None]] = []  # (track, split, annotation file)
    problems: list[Problem] = []
    for name in wanted:
        if name == "test":
            test_list = find_test_list(root)
            if test_list is None:
                if split == "test":
                    raise DataError(f"{data}: no test list file (a .txt with 'test' in its name next to the VA annotations)")
                continue
            candidates += [(track, "test", None) for track in read_test_list(test_list)]
        else:
            folder = find_annotation_dir(root, name)
            if folder is None:
                if split == name:
                    raise DataError(f"{data}: no {SPLIT_DIR_NAMES[name][0].title()} folder under Annotations/VA_Estimation_Challenge (or annotations/VA_Set)")
                continue
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".txt")
            candidates += [(p.stem, name, p) for p in files]
    if not candidates:
        raise DataError(f"{data}: no VA annotation folders and no test list found")

    crops_root = _child(root, "cropped_aligned")
    jobs = [(track, name, annotation) for track, name, annotation in candidates]

    def probe(job):
        return _make_track(root, videos, crops_root, *job)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = pool.map(probe, jobs)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(jobs), desc="scan", unit="track")
        tracks = []
        for result in results:
            (tracks if isinstance(result, Track) else problems).append(result)
    return ScanResult(tracks=tracks, problems=problems)


def _make_track(root: Path, videos: dict[str, Path], crops_root: Path | None, track: str, split: str, annotation: Path | None):
    video_name, subject = split_subject(track, videos)
    where = annotation if annotation is not None else track
    if video_name is None:
        return Problem(track, split, f"{where}: no video named {track}.mp4/.avi (or {track.rsplit('_', 1)[0]}.mp4 for _left/_right) under videos/")
    video = videos[video_name]
    n_frames = n_valid = None
    if annotation is not None:
        try:
            labels = read_annotation(annotation)
        except DataError as exc:
            return Problem(track, split, str(exc))
        n_frames = int(labels.shape[0])
        n_valid = int((~np.isnan(labels).any(axis=1)).sum())
    try:
        fps, n_video_frames, has_audio = probe_video(video)
    except DataError as exc:
        return Problem(track, split, str(exc))
    frames_dir = crops_root / track if crops_root is not None and (crops_root / track).is_dir() else None
    return Track(
        track=track,
        split=split,
        video=video.relative_to(root).as_posix(),
        subject=subject,
        n_frames=n_frames,
        n_valid=n_valid,
        fps=fps,
        has_audio=has_audio,
        frames_dir=frames_dir.relative_to(root).as_posix() if frames_dir else None,
        n_video_frames=n_video_frames,
        annotation=annotation.relative_to(root).as_posix() if annotation is not None else None,
    )


def split_subject(track: str, videos: dict[str, Path]) -> tuple[str | None, str | None]:
    """(video name, subject) for a track name; the video name is None when no video matches."""
    base, _, suffix = track.rpartition("_")
    if suffix.lower() in SUBJECTS and base in videos:
        return base, suffix.lower()
    if track in videos:
        return track, None
    return None, None


def probe_video(path: Path) -> tuple[float, int, bool]:
    """(fps, decoded frame count, has an audio stream), read from the container, never the name."""
    import av
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        fps, n_video_frames = float(reader.get_avg_fps()), len(reader)
        del reader
    except Exception as exc:  # decord raises its own DECORDError and RuntimeError variants
        raise DataError(f"{path}: video cannot be decoded ({_first_line(exc)})") from None
    if not (fps > 0 and n_video_frames > 0):
        raise DataError(f"{path}: video has no frames or no frame rate")
    try:
        with av.open(str(path)) as container:
            has_audio = len(container.streams.audio) > 0
    except Exception as exc:  # PyAV raises many error types for damaged containers
        raise DataError(f"{path}: container cannot be read ({_first_line(exc)})") from None
    return fps, n_video_frames, has_audio


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def _child(folder: Path, name: str) -> Path | None:
    """The child of folder called name, case-insensitively."""
    exact = folder / name
    if exact.is_dir():
        return exact
    if not folder.is_dir():
        return None
    for child in folder.iterdir():
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def find_videos(root: Path) -> dict[str, Path]:
    """Map video name (file stem) -> path over every folder a release puts videos in."""
    videos: dict[str, Path] = {}
    for parts in VIDEO_DIRS:
        folder: Path | None = root
        for part in parts:
            folder = _child(folder, part) if folder is not None else None
        if folder is None:
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                videos.setdefault(path.stem, path)
    return videos


def _va_dirs(root: Path) -> list[Path]:
    """VA annotation folders: Annotations/VA_Estimation_Challenge, annotations/VA_Set, ..."""
    found = []
    for annotations in (_child(root, "Annotations"), root):
        if annotations is None:
            continue
        for child in sorted(annotations.iterdir()):
            lower = child.name.lower()
            if child.is_dir() and (lower.startswith("va_") or lower.startswith("valence")):
                found.append(child)
        if annotations is not root:
            found.append(annotations)  # Train_Set directly under annotations/
    return found


def find_annotation_dir(root: Path, split: str) -> Path | None:
    for va_dir in _va_dirs(root):
        for name in SPLIT_DIR_NAMES[split]:
            folder = _child(va_dir, name)
            if folder is not None:
                return folder
    return None


def find_test_list(root: Path) -> Path | None:
    """The test-set list: a .txt with 'test' in its name beside the VA annotations or at the top."""
    for folder in [*_va_dirs(root), root]:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() == ".txt" and "test" in path.name.lower():
                return path
    return None
