"""s-Aff-Wild2, the set of ABAW's multi-task challenge, read as released: selected frames of Aff-Wild2's videos as
cropped-aligned images, with no video and no sound (the challenge's rules forbid the audio-visual release).

    DATA/cropped_aligned/<track>/<NNNNN>.jpg      a sparse, irregular subset of each video's frames
    DATA/training_set_annotations.txt            a header line (`image,valence,arousal,expression,aus`), then per image
    DATA/validation_set_annotations.txt          `<track>/<NNNNN>.jpg,valence,arousal,expression,au1,...,au12`; not
                                                 annotated: valence and arousal -5, expression -1, all twelve AUs -1
    DATA/MTL_Challenge_test_set_release.txt      the test images, one name a line (maybe a header): the test rows, in order

A track is an image folder (`426`, `video12_left`: never paired with a video, there is none). Its rows are its selected
images in frame-number order, row i at (frame_i - 1) / fps seconds (fps 30 unless --fps says otherwise), so a temporal
model sees the gaps the selection left. Its labels are the store's three arrays, as a full release's are
(`dva.data.annotations`): VA NaN, EXPR -1, AU -1 where not annotated; the store also keeps each row's frame number
(`frame_number`), which the test list's image names map to.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dva.data.aff_wild2 import Problem, ScanResult, TestPhase, Track, crops_dir, find_videos
from dva.data.annotations import AU_COUNT, EXPR_CLASS_COUNT, INVALID, NOT_ANNOTATED, annotated_rows
from dva.data.layout import CROPS_FOLDER, LIST_FOLDER, child_folder
from dva.data.tasks import TASK_ORDER
from dva.data.test_set import LOCATION, SampleFile, read_sample_file
from dva.errors import DataError, at_most

LAYOUT = "s-aff-wild2"  # ScanResult.layout and the store's `dataset` attr of an image set
DEFAULT_FPS = 30.0  # Aff-Wild2's usual rate: the frame clock of the images unless --fps says otherwise
ANNOTATION_FILES = {"train": re.compile(r"^train(ing)?_set_annotations?\.txt$"), "val": re.compile(r"^(validation|val)_set_annotations?\.txt$")}
TEST_LIST = re.compile(r"^mtl.*test.*\.txt$")  # MTL_Challenge_test_set_release.txt (compared lower case)
TEST_LIST_NAME = "MTL_Challenge_test_set_release.txt"
COLUMNS = 4 + AU_COUNT  # image, valence, arousal, expression, twelve AUs


def image_set_files(root: Path) -> dict[str, Path]:
    """{"train", "val", "test": file} of the multi-task set's files in DATA (or, for the test list, its
    names_of_videos_in_each_test_set/), found by name in any case; absent ones left out."""
    found: dict[str, Path] = {}
    for folder in (root, child_folder(root, LIST_FOLDER)):
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            name = path.name.lower()
            if not path.is_file():
                continue
            for split, pattern in ANNOTATION_FILES.items():
                if folder == root and pattern.match(name):
                    found.setdefault(split, path)
            if TEST_LIST.match(name) and "sample" not in name:
                found.setdefault("test", path)
    return found


def image_set_marker(root: Path) -> Path | None:
    """The file that makes root an s-Aff-Wild2 set (its annotation files or its test list, and no videos), or None."""
    files = image_set_files(root)
    if not files or find_videos(root):
        return None
    return files.get("train") or files.get("val") or files["test"]


@dataclass(frozen=True)
class ImageLabels:
    """One track's rows of an annotation file, in frame-number order: frames int32 [n] (the images' NNNNN), va float32
    [n, 2] (NaN where not annotated), expr int8 [n] (-1), au int8 [n, 12] (-1)."""

    frames: np.ndarray
    va: np.ndarray
    expr: np.ndarray
    au: np.ndarray

    def at(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """{task: labels} at these frame numbers (a track's stored rows): a frame the file does not name is not annotated."""
        frames = np.asarray(frames, dtype=np.int64)
        where = np.clip(np.searchsorted(self.frames, frames), 0, max(0, self.frames.shape[0] - 1))
        found = (self.frames[where] == frames) if self.frames.shape[0] else np.zeros(frames.shape[0], dtype=bool)
        out = {"va": np.full((frames.shape[0], 2), np.nan, np.float32), "expr": np.full(frames.shape[0], NOT_ANNOTATED, np.int8),
               "au": np.full((frames.shape[0], AU_COUNT), NOT_ANNOTATED, np.int8)}
        for task, values in (("va", self.va), ("expr", self.expr), ("au", self.au)):
            out[task][found] = values[where[found]]
        return out


NONE = ImageLabels(np.zeros(0, np.int32), np.zeros((0, 2), np.float32), np.zeros(0, np.int8), np.zeros((0, AU_COUNT), np.int8))  # a track no file names


def read_image_annotation(path: str | Path) -> dict[str, ImageLabels]:
    """{track: its ImageLabels} of an annotation file, tracks in the order the file first names them. A header line (any
    wording) is skipped; a bad line is a DataError naming the file and line. Read once per file version (cached)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the annotation file ({exc.strerror or exc})") from None
    return _read_annotation(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_annotation(path: str, mtime_ns: int, size: int) -> dict[str, ImageLabels]:
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the annotation file ({exc})") from None
    rows: dict[str, list] = {}
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        parts = [p.strip() for p in text.split(",")]
        match = LOCATION.match(parts[0])
        if match is None and number == 1 and "/" not in parts[0]:
            continue  # the header, `image,valence,arousal,expression,aus` or another wording of it
        values = _parse_row(parts, match)
        if values is None:
            raise DataError(f"{path}:{number}: expected '<track>/<NNNNN>.jpg,valence,arousal,expression,au1,...,au12' "
                            f"(-5, -1 and twelve -1 where not annotated), got {text[:60]!r}")
        if parts[0] in seen:
            raise DataError(f"{path}:{number}: {parts[0]} is annotated twice (first on line {seen[parts[0]]})")
        seen[parts[0]] = number
        rows.setdefault(match["track"], []).append((int(match["frame"]), *values))
    return {track: _labels(found) for track, found in rows.items()}


def _parse_row(parts: list[str], match) -> tuple | None:
    """(valence, arousal, expression, au tuple) of one line's fields, or None when they are not as the release codes them."""
    if match is None or int(match["frame"]) < 1 or len(parts) != COLUMNS:
        return None
    try:
        valence, arousal = float(parts[1]), float(parts[2])
        numbers = [float(p) for p in parts[3:]]
    except ValueError:
        return None
    if any(not (v == INVALID or -1.0 <= v <= 1.0) for v in (valence, arousal)):
        return None
    if any(not n.is_integer() for n in numbers):
        return None
    expression, units = int(numbers[0]), tuple(int(n) for n in numbers[1:])
    if not NOT_ANNOTATED <= expression < EXPR_CLASS_COUNT or any(u not in (-1, 0, 1) for u in units):
        return None
    return valence, arousal, expression, units


def _labels(found: list[tuple]) -> ImageLabels:
    found.sort(key=lambda row: row[0])
    frames = np.asarray([row[0] for row in found], dtype=np.int32)
    va = np.asarray([(row[1], row[2]) for row in found], dtype=np.float32).reshape(-1, 2)
    va[(va == INVALID).any(axis=1)] = np.nan  # -5 in either: the pair is not annotated, as the full release's files
    expr = np.asarray([row[3] for row in found], dtype=np.int8)
    au = np.asarray([row[4] for row in found], dtype=np.int8).reshape(-1, AU_COUNT)
    return ImageLabels(frames, va, expr, au)


def read_image_test_list(path: str | Path) -> SampleFile:
    """The test list as the rows to predict, in its order (`<track>/<NNNNN>.jpg` a line, a header line skipped): the
    image set's sample file. DataError naming the file and line for a line that names no image."""
    return read_sample_file(path)


def image_labels(root: Path, track: Track) -> dict[str, np.ndarray]:
    """{task: labels [rows]} of an image set's track at its rows (`Track.images`), from its split's annotation file;
    {} for a test track."""
    annotation = (track.tasks.get("va") or {}).get("annotation")
    if annotation is None or track.images is None:
        return {}
    found = read_image_annotation(Path(root) / annotation).get(track.track, NONE)
    return found.at(np.asarray(track.images, dtype=np.int64))


def scan_image_set(root: Path, split: str | None = None, fps: float | None = None, test_list: str | Path | None = None,
                   sample: str | Path | None = None) -> ScanResult:
    """The tracks of an s-Aff-Wild2 set's split (every split when None): train and val from their annotation files,
    test from the test list (or sample, which then decides the test rows). A track named by a file whose image folder
    is missing is a Problem; images the files name that are missing from their folder stay masked rows (a warning)."""
    root = Path(root)
    rate = DEFAULT_FPS if fps is None else float(fps)
    if not rate > 0:
        raise DataError(f"--fps {fps}: must be positive")
    crops = child_folder(root, CROPS_FOLDER)
    if crops is None:
        raise DataError(f"{root}: an s-Aff-Wild2 set (it has {image_set_marker(root).name}) without a {CROPS_FOLDER}/ folder of images")
    files = image_set_files(root)
    for given, flag in ((test_list, "--test-list"), (sample, "--sample")):
        if given is not None:
            if not Path(given).is_file():
                raise DataError(f"{flag} {given}: no such file")
            files["test"] = Path(given)
    wanted = [split] if split else ["train", "val", "test"]
    for name in wanted:
        if name not in files and split is not None:
            what = f"{TEST_LIST_NAME} (or --test-list FILE)" if name == "test" else ("training_set_annotations.txt" if name == "train" else "validation_set_annotations.txt")
            raise DataError(f"{root}: an s-Aff-Wild2 set without {what}: no {name} split")
    tracks, problems, warnings = [], [], []
    named: dict[str, str] = {}  # track -> the split that first named it
    phase = None
    for name in [s for s in wanted if s in files]:
        if name == "test":
            listed = read_image_test_list(files["test"])
            phase = TestPhase(files["test"], listed, [])
            by_track: dict[str, list[int]] = {}
            for track, frame in zip(listed.tracks, listed.frames):
                by_track.setdefault(track, []).append(frame)
            members = {track: (None, sorted(set(frames))) for track, frames in by_track.items()}
        else:
            found = read_image_annotation(files[name])
            members = {track: (labels, labels.frames.tolist()) for track, labels in found.items()}
        relative = files[name].relative_to(root).as_posix() if files[name].is_relative_to(root) else str(files[name].resolve())
        for track, (labels, frames) in members.items():
            if track in named:
                warnings.append(f"{track} is named by the {named[track]} and the {name} files of {root}: kept in {named[track]}")
                continue
            named[track] = name
            made = _image_track(root, crops, track, name, frames, labels, None if name == "test" else relative, rate)
            (tracks if isinstance(made, Track) else problems).append(made)
    absent = sum(t.n_frames - t.n_video_frames for t in tracks)
    if absent:
        warnings.append(f"{absent} images the annotation files or test list name are not in {CROPS_FOLDER}/ (their rows masked): "
                        + at_most([f"{t.track} ({t.n_frames - t.n_video_frames})" for t in tracks if t.n_frames > t.n_video_frames], 10, ", "))
    tests = {task: phase for task in TASK_ORDER if task != "va"} if phase is not None else {}
    return ScanResult(tracks, problems, str(phase.test_list) if phase else None, phase.sample if phase else None, warnings, tests, layout=LAYOUT)


def _image_track(root: Path, crops: Path, track: str, split: str, frames: list[int], labels: ImageLabels | None, annotation: str | None, fps: float):
    """A Track of an image folder (or a Problem when the folder is missing): its rows the given frames."""
    folder = crops / track
    if not folder.is_dir():
        return Problem(track, split, f"{crops_dir(root, crops)}/{track}: no such image folder (named by the {split} {'list' if split == 'test' else 'annotations'})")
    present = set(os.listdir(folder))
    n_present = sum(f"{frame:05d}.jpg" in present for frame in frames)
    values = labels.at(np.asarray(frames)) if labels is not None else {}
    tasks = {task: {"split": split, "annotation": annotation, "rows": len(frames),
                    "annotated": int(annotated_rows(values[task], task).sum()) if values else None} for task in TASK_ORDER}
    n_valid = tasks["va"]["annotated"]
    where = crops_dir(root, folder)
    return Track(track=track, split=split, video=where, subject=None, n_frames=len(frames), n_valid=n_valid, fps=fps, has_audio=False,
                 frames_dir=where, n_video_frames=n_present, annotation=annotation, tasks=tasks, images=tuple(frames))
