"""A release's layout: its folders (releases differ in the case of their names, `Annotations`, `annotations`,
so every part of dva that looks for one asks here), and which video a track belongs to."""

from __future__ import annotations

import json
import re
from pathlib import Path

CROPS_FOLDER = "cropped_aligned"  # the release's faces, and where `dva faces` writes its own
LIST_FOLDER = "names_of_videos_in_each_test_set"  # the organisers' test lists


def child_folder(folder: Path, name: str) -> Path | None:
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


def release_marker(root: Path) -> Path | None:
    """The folder that makes root an Aff-Wild2 release (its annotations, or its test lists), or None: a folder
    without either is a folder of plain videos (`dva.data.plain`)."""
    return child_folder(root, "Annotations") or child_folder(root, LIST_FOLDER)


_SUBJECT = re.compile(r"_(left|right)$")


def video_of(track: str, video: str | None) -> str:
    """The video a track belongs to: its `video` (the path scan found, as the store's attrs keep it), or the
    track's name without its subject when that is not known (`NAME_left` and `NAME_right` share `NAME`). A path named
    after the track itself is its image folder (s-Aff-Wild2 has no videos: `cropped_aligned/video12_left`), which says
    nothing of the video: the name without its subject then too, so a video's two subjects stay together."""
    if video and Path(video).name != track:
        return video
    return _SUBJECT.sub("", track)


def claim_key(track: str, video: str | None) -> str:
    """The claim every process takes before it writes a track (extract and import alike): its video's name, so
    that one process at a time writes a `_left`/`_right` pair and its shared sound."""
    return Path(video_of(track, video)).stem


FACES_RECORD_FORMAT = "dva-faces-1"  # what `dva faces` writes beside its crops (dva/faces/stage.py writes it)


def record_path(crops_root: Path, name: str) -> Path:
    """Where `dva faces` keeps the record of video name in a crops folder: which tracks it made, and their faces."""
    return Path(crops_root) / f"{name}.faces.json"


def read_record(path: Path) -> dict | None:
    """A video's face record, or None when it is absent or not one dva wrote (then the video is redone)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FACES_RECORD_FORMAT else None
