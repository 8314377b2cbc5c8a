"""Find the tracks of an Aff-Wild2-layout dataset, wherever the release put its parts.

A track is a video plus an optional subject (`NAME_left` / `NAME_right` annotate two
people in `NAME.mp4`). `scan` returns one `Track` per usable track and a `Problem` per
track it had to leave out, so a single bad file never hides the rest of the split.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dva.data.annotations import read_annotation, read_test_list
from dva.data.layout import CROPS_FOLDER, child_folder
from dva.data.test_set import LIST_FOLDER, SampleFile, find_sample_file, find_va_test_list, other_lists, read_sample_file
from dva.data.video import probe_video
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
    n_frames: int | None  # annotation lines; for test tracks the sample file's rows, else None
    n_valid: int | None
    fps: float  # from the container
    has_audio: bool
    frames_dir: str | None  # cropped_aligned/<track>, relative to DATA (absolute when read from --crops elsewhere)
    n_video_frames: int  # frames a player shows (dva.data.video; 0 for sound alone; not part of the scan record)
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
    test_list: str | None = None  # the VA test list that named the test tracks
    sample: SampleFile | None = None  # the organisers' sample submission: T and order of the test tracks
    warnings: list[str] = field(default_factory=list)


def scan(data: str | Path, split: str | None = None, progress: bool = False, test_list: str | Path | None = None, sample: str | Path | None = None,
         crops: Path | None = None) -> ScanResult:
    """Scan DATA for the tracks of one split (or all splits when split is None).

    test_list / sample override the VA test list and the organisers' sample file found in DATA; crops: the
    cropped_aligned folder to take the faces from (default: DATA's).
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
    test_phase = TestPhase(None, None, [])
    for name in wanted:
        if name == "test":
            test_phase = find_test_phase(root, test_list, sample, required=split == "test")
            candidates += [(track, "test", None) for track in test_phase.tracks]
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

    crops_root = Path(crops) if crops is not None else child_folder(root, CROPS_FOLDER)
    jobs = [(track, name, annotation) for track, name, annotation in candidates]
    sample_rows = test_phase.sample.rows_per_track() if test_phase.sample else {}

    def probe(job):
        return _make_track(root, videos, crops_root, *job, sample_rows=sample_rows.get(job[0]) if job[1] == "test" else None)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = pool.map(probe, jobs)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(jobs), desc="scan", unit="track")
        tracks = []
        for result in results:
            (tracks if isinstance(result, Track) else problems).append(result)
    sample_file = test_phase.sample
    return ScanResult(tracks, problems, str(test_phase.test_list) if test_phase.test_list else None, sample_file, test_phase.warnings)


@dataclass(frozen=True)
class TestPhase:
    test_list: Path | None
    sample: SampleFile | None
    warnings: list[str]

    @property
    def tracks(self) -> list[str]:
        """The list's tracks in its order; tracks only the sample names come after (the sample is what is scored)."""
        listed = read_test_list(self.test_list) if self.test_list else []
        extra = [t for t in self.sample.track_order() if t not in set(listed)] if self.sample else []
        return listed + extra


def find_test_phase(root: Path, test_list=None, sample=None, required: bool = True) -> TestPhase:
    """The VA test list and sample file (given, or found in root); DataError when required and neither exists."""
    for given, flag in ((test_list, "--test-list"), (sample, "--sample")):
        if given is not None and not Path(given).is_file():
            raise DataError(f"{flag} {given}: no such file")
    list_path = Path(test_list) if test_list else find_va_test_list(root, _va_dirs(root))
    sample_path = Path(sample) if sample else find_sample_file(root, _va_dirs(root))
    sample_file = read_sample_file(sample_path) if sample_path else None
    if list_path is None and sample_file is None:
        if not required:
            return TestPhase(None, None, [])
        others = ", ".join(p.name for p in other_lists(root, _va_dirs(root))) or "none"
        raise DataError(
            f"{root}: no VA test list (Valence_Arousal_Estimation_Challenge_test_set_release.txt in {LIST_FOLDER}/ or the top folder; "
            f"other test lists found: {others}); pass --test-list FILE"
        )
    warnings = []
    if list_path is not None and sample_file is not None:
        listed, sampled = read_test_list(list_path), set(sample_file.tracks)
        missing = [t for t in listed if t not in sampled]
        extra = [t for t in sample_file.track_order() if t not in set(listed)]
        if missing:
            warnings.append(f"{len(missing)} tracks of {list_path.name} are not in {sample_path.name} (extracted, not submitted): {', '.join(missing[:10])}")
        if extra:
            warnings.append(f"{len(extra)} tracks of {sample_path.name} are not in {list_path.name} (added: the sample decides the submission): {', '.join(extra[:10])}")
    return TestPhase(list_path, sample_file, warnings)


def _make_track(root: Path, videos: dict[str, Path], crops_root: Path | None, track: str, split: str, annotation: Path | None, sample_rows: int | None = None):
    video_name, subject = split_subject(track, videos)
    where = annotation if annotation is not None else track
    if video_name is None:
        return Problem(track, split, f"{where}: no video named {track}.mp4/.avi (or {track.rsplit('_', 1)[0]}.mp4 for _left/_right) under videos/")
    video = videos[video_name]
    n_frames, n_valid = sample_rows, None  # a test track's T comes from the sample file, when there is one
    if annotation is not None:
        try:
            labels = read_annotation(annotation)
        except DataError as exc:
            return Problem(track, split, str(exc))
        n_frames = int(labels.shape[0])
        n_valid = int((~np.isnan(labels).any(axis=1)).sum())
    try:
        probe = probe_video(video)
    except DataError as exc:
        return Problem(track, split, str(exc))
    if not probe.has_video:
        return Problem(track, split, f"{video}: the container has no video stream")
    fps, n_video_frames, has_audio = probe.fps, probe.n_frames, probe.has_audio
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
        frames_dir=crops_dir(root, frames_dir),
        n_video_frames=n_video_frames,
        annotation=annotation.relative_to(root).as_posix() if annotation is not None else None,
    )


def crops_dir(root: Path, folder: Path | None) -> str | None:
    """A track's crop folder as its record keeps it: relative to DATA, or absolute when it lies elsewhere (--crops)."""
    if folder is None:
        return None
    return folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder.resolve())


def split_subject(track: str, videos: dict[str, Path]) -> tuple[str | None, str | None]:
    """(video name, subject) for a track name; the video name is None when no video matches."""
    base, _, suffix = track.rpartition("_")
    if suffix.lower() in SUBJECTS and base in videos:
        return base, suffix.lower()
    if track in videos:
        return track, None
    return None, None


def find_videos(root: Path) -> dict[str, Path]:
    """Map video name (file stem) -> path over every folder a release puts videos in."""
    videos: dict[str, Path] = {}
    for parts in VIDEO_DIRS:
        folder: Path | None = root
        for part in parts:
            folder = child_folder(folder, part) if folder is not None else None
        if folder is None:
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                videos.setdefault(path.stem, path)
    return videos


def _va_dirs(root: Path) -> list[Path]:
    """VA annotation folders: Annotations/VA_Estimation_Challenge, annotations/VA_Set, ..."""
    found = []
    for annotations in (child_folder(root, "Annotations"), root):
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
            folder = child_folder(va_dir, name)
            if folder is not None:
                return folder
    return None
