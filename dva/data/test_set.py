"""The test phase as the organisers release it: one list of videos per challenge, and a sample
submission file whose rows are exactly what must be predicted, in the order it must be written.

- `names_of_videos_in_each_test_set/` (or the top folder) holds
  `Action_Unit_Detection_Challenge_test_set_release.txt`,
  `Expression_Classification_Challenge_test_set_release.txt` and
  `Valence_Arousal_Estimation_Challenge_test_set_release.txt`: VA uses only the last.
- The sample file (e.g. `CVPR_8th_ABAW_VA_test_set_sample.txt`): header
  `image_location,valence,arousal`, then `<track>/<NNNNN>.jpg,,` per frame to predict.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from dva.data.layout import LIST_FOLDER, child_folder
from dva.data.tasks import TASKS, named_other
from dva.errors import DataError

SUBMISSION_HEADER = "image_location,valence,arousal"
LOCATION = re.compile(r"^(?P<track>[^/\\]+)[/\\](?P<frame>\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def submission_header(task: str) -> str:
    """A challenge's submission header: `image_location,valence,arousal`, `image_location,Neutral,...,Other` (EXPR,
    one class index per row) or `image_location,AU1,...,AU26` (AU, 12 bits per row)."""
    return "image_location," + ",".join(TASKS[task].columns)


def task_test_files(root: str | Path, task: str) -> tuple[Path | None, Path | None]:
    """(test list, sample file) of a challenge in a release, found by their names (None where the release has none)."""
    from dva.data.tasks import annotation_dirs

    root = Path(root)
    own = annotation_dirs(root, task)
    return find_test_list(root, task, own), find_task_sample(root, task, own)


def _txt_files(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".txt")


def _folders(root: Path, extra: list[Path]) -> list[Path]:
    found = [child_folder(root, LIST_FOLDER), root, *extra]
    return [folder for folder in dict.fromkeys(found) if folder is not None]


def is_sample_file(path: Path) -> bool:
    """The organisers' sample submission: `..._test_set_sample.txt`, or `..._test_set_example.txt` in some years."""
    name = path.name.lower()
    return ("sample" in name or "example" in name) and "test" in name


def find_test_list(root: Path, task: str, extra: list[Path] = ()) -> Path | None:
    """A challenge's test list, by its name, in names_of_videos_in_each_test_set/, the top folder, then `extra` (the
    task's annotation folders). Never another challenge's list."""
    own_folders = set(extra)
    for folder in _folders(root, list(extra)):
        for path in _txt_files(folder):
            name = path.name.lower()
            named = TASKS[task].named.search(name) or folder in own_folders  # inside the task's own folder the name need not say so
            if "test" in name and not is_sample_file(path) and named and not named_other(task, name):
                return path
    return None


def find_task_sample(root: Path, task: str, extra: list[Path] = ()) -> Path | None:
    """A challenge's sample submission (`*VA*test_set_sample*.txt`, `*Expr*test_set_example*.txt`, any case)."""
    for folder in _folders(root, list(extra)):
        for path in _txt_files(folder):
            name = path.name.lower()
            if is_sample_file(path) and TASKS[task].named.search(name) and not named_other(task, name):
                return path
    return None


def find_va_test_list(root: Path, extra: list[Path] = ()) -> Path | None:
    """The VA challenge's test list (`find_test_list` of va)."""
    return find_test_list(root, "va", extra)


def other_lists(root: Path, extra: list[Path] = ()) -> list[Path]:
    """Test lists that belong to other challenges (named in the error when no VA list exists)."""
    return [p for folder in _folders(root, list(extra)) for p in _txt_files(folder) if "test" in p.name.lower() and not is_sample_file(p)]


def find_sample_file(root: Path, extra: list[Path] = ()) -> Path | None:
    """The organisers' VA sample submission (`find_task_sample` of va)."""
    return find_task_sample(root, "va", extra)


def _is_header(first: str) -> bool:
    """Whether a file's first field is a header's, not an image's: it names no `<track>/<frame>` path."""
    return LOCATION.match(first) is None and "/" not in first and "\\" not in first


@dataclass(frozen=True)
class SampleFile:
    """The rows to predict: `locations[i]` is written back verbatim, `tracks[i]`/`frames[i]` say which
    prediction goes there (frames are 1-based, as in cropped_aligned)."""

    path: str
    sha256: str
    locations: list[str]
    tracks: list[str]
    frames: list[int]

    def track_order(self) -> list[str]:
        return list(dict.fromkeys(self.tracks))

    def rows_per_track(self) -> dict[str, int]:
        """T per track: the highest frame number the sample asks for (frames are 1-based)."""
        rows: dict[str, int] = {}
        for track, frame in zip(self.tracks, self.frames):
            rows[track] = max(rows.get(track, 0), frame)
        return rows


def read_sample_file(path: str | Path) -> SampleFile:
    """Parse the organisers' sample file; a malformed line is a DataError naming the file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the sample file ({exc.strerror or exc})") from None
    try:
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: the sample file is not UTF-8 text") from None
    locations, tracks, frames = [], [], []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        location = text.split(",")[0].strip()
        if number == 1 and _is_header(location):
            continue  # `image_location,...`; the multi-task list's `image` or another wording of it
        match = LOCATION.match(location)
        if match is None or int(match["frame"]) < 1:
            raise DataError(f"{path}:{number}: expected '<track>/<NNNNN>.jpg,,' (a 1-based frame number), got {text[:60]!r}")
        locations.append(location)
        tracks.append(match["track"])
        frames.append(int(match["frame"]))
    if not locations:
        raise DataError(f"{path}: the sample file has no rows")
    return SampleFile(str(path.resolve()), hashlib.sha256(raw).hexdigest(), locations, tracks, frames)
