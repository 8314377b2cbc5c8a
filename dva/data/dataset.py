"""What a DATA folder is, decided in one place: an Aff-Wild2 release (splits train, val, test; `aff_wild2`), the
multi-task challenge's s-Aff-Wild2 (images only, splits train, val, test; `s_aff_wild2`) or a folder of plain videos
(one unlabelled split, all; `plain`), and where its faces are read from."""

from __future__ import annotations

from pathlib import Path

from dva.data.aff_wild2 import SPLITS, ScanResult
from dva.data.aff_wild2 import scan as scan_release
from dva.data.layout import CROPS_FOLDER, release_marker
from dva.data.plain import PLAIN_SPLIT, scan_plain
from dva.data.s_aff_wild2 import image_set_marker, scan_image_set
from dva.data.tasks import parse_tasks
from dva.data.test_set import find_sample_file, find_va_test_list
from dva.errors import DataError

ALL_SPLITS = (*SPLITS, PLAIN_SPLIT)


def scan(data: str | Path, split: str | None = None, progress: bool = False, test_list: str | Path | None = None, sample: str | Path | None = None,
         crops: str | Path | None = None, tasks: str | tuple[str, ...] | None = None, fps: float | None = None) -> ScanResult:
    """The tracks of DATA's split (every split when None) of every task the release has (tasks: "va,expr" or a tuple
    narrows them; a folder of plain videos has no tasks). crops: a folder whose cropped_aligned/ holds the faces
    to use instead of DATA's (`dva faces --out CROPS`). Raises DataError when DATA or CROPS cannot be used, or
    the split is not one of DATA's kind. fps: the frame rate of an image set's frame numbers (default 30); a video's
    rate is its container's."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{data}: no such dataset folder (expected the Aff-Wild2 layout: videos/, Annotations/, cropped_aligned/, or a folder of videos)")
    if split is not None and split not in ALL_SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)} (an Aff-Wild2 release) or {PLAIN_SPLIT} (a folder of videos)")
    crops_root = None
    if crops is not None:
        crops_root = Path(crops) / CROPS_FOLDER
        if not crops_root.is_dir():
            raise DataError(f"--crops {crops}: no {CROPS_FOLDER}/ in it (make one with dva faces --data {data} --out {crops})")
    marker = image_set_marker(root)
    if marker is not None:
        if split == PLAIN_SPLIT:
            raise DataError(f"{data} is an s-Aff-Wild2 set (it has {marker.name}): its splits are {', '.join(SPLITS)}, not {PLAIN_SPLIT}")
        if crops is not None:
            raise DataError(f"--crops {crops}: {data} is an s-Aff-Wild2 set (it has {marker.name}): its images are the faces, there is no video to make others from")
        return scan_image_set(root, split, fps, test_list, sample)
    if fps is not None:
        raise DataError(f"--fps {fps}: a video's rate is its container's (--fps is the frame clock of an image set, s-Aff-Wild2)")
    release = is_release(root, test_list, sample)
    if release:
        if split == PLAIN_SPLIT:
            raise DataError(f"{data} is an Aff-Wild2 release ({release}): its splits are {', '.join(SPLITS)}, not {PLAIN_SPLIT}")
        return scan_release(root, split, progress, test_list, sample, crops=crops_root, tasks=parse_tasks(tasks) if isinstance(tasks, str) else tasks)
    if split not in (None, PLAIN_SPLIT):
        raise DataError(f"{data} has no Annotations/ or test lists, so it is a folder of plain videos: one unlabelled split, pass --split {PLAIN_SPLIT}")
    return scan_plain(root, crops_root, progress)


def is_release(root: Path, test_list=None, sample=None) -> str | None:
    """Why root is an Aff-Wild2 release (one line), or None when it is a folder of plain videos."""
    marker = release_marker(root)
    if marker is not None:
        return f"it has {marker.name}/"
    if test_list is not None or sample is not None:
        return "--test-list or --sample given"
    found = find_va_test_list(root) or find_sample_file(root)
    return f"it has {found.name}" if found is not None else None
