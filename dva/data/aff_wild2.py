"""Find the tracks of an Aff-Wild2-layout dataset, wherever the release put its parts.

A track is a video plus an optional subject (`NAME_left` / `NAME_right` annotate two
people in `NAME.mp4`). `scan` returns one `Track` per usable track and a `Problem` per
track it had to leave out, so a single bad file never hides the rest of the split.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dva.data.annotations import annotated_rows, read_task_annotation, read_test_list
from dva.data.layout import CROPS_FOLDER, child_folder
from dva.data.tasks import SPLIT_DIR_NAMES, TASK_ORDER, TASKS, annotated_tracks, annotation_dirs, split_dir
from dva.data.test_set import LIST_FOLDER, SampleFile, find_task_sample, find_test_list, other_lists, read_sample_file
from dva.data.video import probe_video
from dva.errors import DataError, first_line

SPLITS = ("train", "val", "test")
VIDEO_SUFFIXES = (".mp4", ".avi")
# Where releases have put the videos, relative to DATA (matched case-insensitively).
VIDEO_DIRS = (
    ("videos", "batch1"), ("videos", "batch2"), ("videos", "new_vids"), ("videos",),
    ("batch1",), ("batch2",), ("new_vids",),
)
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
    annotation: str | None  # VA's, relative to DATA (not part of the scan record)
    # every task that names the track: {task: {"split", "annotation" (relative to DATA or None), "rows", "annotated"}}
    tasks: dict = field(default_factory=dict, hash=False, compare=False)
    # an image set's track (s-Aff-Wild2, `dva.data.s_aff_wild2`): the frame numbers (the images' NNNNN) of its rows, ascending;
    # None for a video's track, whose row i is frame i + 1
    images: tuple[int, ...] | None = field(default=None, hash=False, compare=False, repr=False)

    RECORD_KEYS = ("track", "split", "video", "subject", "n_frames", "n_valid", "fps", "has_audio", "frames_dir")

    def record(self) -> dict:
        return {key: getattr(self, key) for key in self.RECORD_KEYS}

    def task_splits(self) -> dict[str, str]:
        """{task: split} of every task that names the track (what the store keeps as its `tasks` attr)."""
        return {task: info["split"] for task, info in self.tasks.items()}


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
    task_tests: dict = field(default_factory=dict)  # {"expr"/"au": TestPhase} of the other challenges that have a test list or sample
    layout: str | None = None  # "s-aff-wild2" for an image set (no video, no sound: `dva.data.s_aff_wild2`)


def scan(data: str | Path, split: str | None = None, progress: bool = False, test_list: str | Path | None = None, sample: str | Path | None = None,
         crops: Path | None = None, tasks: tuple[str, ...] | None = None) -> ScanResult:
    """Scan DATA for the tracks of one split (or all splits when split is None) of every task the release has
    (VA, EXPR, AU; tasks narrows them), each track once, its `split` the store split it lands in (`dva.data.tasks`).

    test_list / sample override the VA test list and the organisers' VA sample file found in DATA; crops: the
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
    selected = tasks or TASK_ORDER
    members, phases = release_tasks(root, test_list, sample, split, selected)
    wanted = [split] if split else list(SPLITS)
    jobs = list(dict.fromkeys(
        (track, track_split(members, track, name)) for name in wanted for task in selected for track in members[task].get(name, {})
    ))
    if not jobs:
        raise DataError(f"{data}: no annotation folders and no test list of {', '.join(selected)} found")
    sample_rows = {task: phase.sample.rows_per_track() for task, phase in phases.items() if phase.sample is not None}
    crops_root = Path(crops) if crops is not None else child_folder(root, CROPS_FOLDER)

    def probe(job):
        track, split_of_track = job
        of_track = {task: task_split_of(members[task], track, split_of_track) for task in TASK_ORDER if splits_of(members[task], track)}
        return _make_track(root, videos, crops_root, track, split_of_track, of_track, {task: rows[track] for task, rows in sample_rows.items() if track in rows})

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = pool.map(probe, jobs)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(jobs), desc="scan", unit="track")
        tracks, problems = [], []
        for result in results:
            (tracks if isinstance(result, Track) else problems).append(result)
    va = phases.get("va", TestPhase(None, None, []))
    others = {task: phase for task, phase in phases.items() if task != "va"}
    warnings = [message for phase in phases.values() for message in phase.warnings]
    return ScanResult(tracks, problems, str(va.test_list) if va.test_list else None, va.sample, warnings, others)


def release_tasks(root: Path, test_list, sample, split: str | None, selected) -> tuple[dict[str, dict], dict[str, TestPhase]]:
    """({task: {split: {track: annotation file or None}}} of every task the release has, in each split's order; {task:
    its TestPhase} of those with a test list or sample file). Raises DataError when a split asked for has nothing of
    the selected tasks."""
    members: dict[str, dict[str, dict]] = {task: {} for task in TASK_ORDER}
    phases: dict[str, TestPhase] = {}
    for task in TASK_ORDER:
        for name in ("train", "val"):
            found = annotated_tracks(root, task, name)
            if found:
                members[task][name] = found
        phase = find_test_phase(root, test_list if task == "va" else None, sample if task == "va" else None, required=False, task=task)
        if phase.test_list is not None or phase.sample is not None:
            phases[task] = phase
            members[task]["test"] = dict.fromkeys(phase.tracks)
    if split in ("train", "val") and not any(split_dir(root, task, split) for task in selected):
        under = ", ".join(f"Annotations/{TASKS[task].title}" for task in selected)
        raise DataError(f"{root}: no {SPLIT_DIR_NAMES[split][0].title()} folder under {under} (or annotations/VA_Set, EXPR_Set, AU_Set)")
    if split == "test" and not any(task in phases for task in selected):
        find_test_phase(root, test_list, sample, required=True, task=selected[0])  # raises, naming what it found
    return members, phases


def track_split(members: dict[str, dict[str, dict]], track: str, split: str) -> str:
    """The store split of a track scanned for split: the split of the first task (TASK_ORDER) that names the track,
    split itself when that task names it there (a release may list one track in two splits of a task)."""
    splits = next(found for task in TASK_ORDER if (found := splits_of(members[task], track)))
    return split if split in splits else splits[0]


def splits_of(member: dict[str, dict], track: str) -> list[str]:
    """The splits (train, val, test order) in which one task names a track."""
    return [name for name in SPLITS if track in member.get(name, {})]


def task_split_of(member: dict[str, dict], track: str, split: str) -> tuple[str, Path | None]:
    """(the task's split of a track stored under split, its annotation file): split itself when the task has the track there."""
    chosen = split if track in member.get(split, {}) else splits_of(member, track)[0]
    return chosen, member[chosen][track]


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


def find_test_phase(root: Path, test_list=None, sample=None, required: bool = True, task: str = "va") -> TestPhase:
    """A task's test list and sample file (given, or found in root); DataError when required and neither exists."""
    for given, flag in ((test_list, "--test-list"), (sample, "--sample")):
        if given is not None and not Path(given).is_file():
            raise DataError(f"{flag} {given}: no such file")
    own = annotation_dirs(root, task)
    list_path = Path(test_list) if test_list else find_test_list(root, task, own)
    sample_path = Path(sample) if sample else find_task_sample(root, task, own)
    sample_file = read_sample_file(sample_path) if sample_path else None
    if list_path is None and sample_file is None:
        if not required:
            return TestPhase(None, None, [])
        others = ", ".join(p.name for p in other_lists(root, own)) or "none"
        raise DataError(
            f"{root}: no {task.upper()} test list ({TASKS[task].test_list} in {LIST_FOLDER}/ or the top folder; "
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


def _make_track(root: Path, videos: dict[str, Path], crops_root: Path | None, track: str, split: str, of_track: dict[str, tuple], sample_rows: dict[str, int]):
    """A Track (or a Problem) stored under split, from the track's task splits (of_track: {task: (split, annotation or
    None)}) and the sample rows each challenge asks of it: T is the most rows any of them gives (lines, sample rows)."""
    video_name, subject = split_subject(track, videos)
    annotation = of_track.get("va", (None, None))[1]
    if video_name is None:
        where = next((path for _, path in of_track.values() if path is not None), track)
        return Problem(track, split, f"{where}: no video named {track}.mp4/.avi (or {track.rsplit('_', 1)[0]}.mp4 for _left/_right) under videos/")
    video = videos[video_name]
    tasks, n_valid = {}, None
    for task, (task_split, path) in of_track.items():
        rows, annotated = sample_rows.get(task) if task_split == "test" else None, None
        if path is not None:
            try:
                labels = read_task_annotation(path, task)
            except DataError as exc:
                return Problem(track, split, str(exc))
            rows, annotated = int(labels.shape[0]), int(annotated_rows(labels, task).sum())
        tasks[task] = {"split": task_split, "annotation": path.relative_to(root).as_posix() if path is not None else None, "rows": rows, "annotated": annotated}
    if "va" in tasks and tasks["va"]["split"] != "test":
        n_valid = tasks["va"]["annotated"]
    known = [info["rows"] for info in tasks.values() if info["rows"] is not None]
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
        n_frames=max(known) if known else None,
        n_valid=n_valid,
        fps=fps,
        has_audio=has_audio,
        frames_dir=crops_dir(root, frames_dir),
        n_video_frames=n_video_frames,
        annotation=annotation.relative_to(root).as_posix() if annotation is not None else None,
        tasks=tasks,
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
