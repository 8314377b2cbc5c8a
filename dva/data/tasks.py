"""The release's three challenges on the same videos, as data: VA (valence-arousal), EXPR (eight expressions) and
AU (twelve action units). Each has its own annotation folders with their own Train_Set / Validation_Set, its own
test list and sample file, its own label array in the store. Nothing here opens a video.

Which store split a track lands in: a track is encoded and stored once, under the split of the first task in
`TASKS` order (va, expr, au) whose annotations or test list name it; its `tasks` attr says the split of every task
(`{"va": "train", "expr": "val"}`). A VA track therefore stays where it always was, whatever the other tasks say
(`aff_wild2.track_split`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dva.data.layout import child_folder
from dva.errors import DataError

EXPR_CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
SPLIT_DIR_NAMES = {"train": ("train_set", "training_set"), "val": ("validation_set", "val_set")}


@dataclass(frozen=True)
class Task:
    """One challenge: where its files are, what its labels are, what its submission holds."""

    name: str  # va | expr | au
    title: str  # the challenge, as its annotation folder names it
    folder: re.Pattern  # annotation folder names (lower case) under Annotations/ or the top folder
    named: re.Pattern  # how the challenge is named in test list and sample file names (lower case)
    array: str  # the store array of its labels
    columns: tuple[str, ...]  # the value columns of its submission (after image_location)
    test_list: str  # the organisers' test list of this challenge


TASKS = {
    "va": Task("va", "VA_Estimation_Challenge", re.compile(r"^(va_|valence)"), re.compile(r"valence|arousal|(^|[^a-z])va([^a-z]|$)"),
               "labels", ("valence", "arousal"), "Valence_Arousal_Estimation_Challenge_test_set_release.txt"),
    "expr": Task("expr", "EXPR_Recognition_Challenge", re.compile(r"^expr"), re.compile(r"expression|(^|[^a-z])expr([^a-z]|$)"),
                 "labels_expr", EXPR_CLASSES, "Expression_Classification_Challenge_test_set_release.txt"),
    "au": Task("au", "AU_Detection_Challenge", re.compile(r"^(au_|action_unit)"), re.compile(r"action_unit|(^|[^a-z])au([^a-z]|$)"),
               "labels_au", AU_NAMES, "Action_Unit_Detection_Challenge_test_set_release.txt"),
}
TASK_ORDER = tuple(TASKS)  # also the order that decides a track's store split
LABEL_WIDTH = {"va": 2, "expr": 1, "au": 12, "mtl": 15}  # the columns of each task's labels as the trainer holds them (NaN: not annotated)
MTL_TASKS = ("va", "expr", "au")  # the multi-task challenge's parts: its labels are theirs side by side, in this order
MTL_LABELS = {task: slice(start, start + LABEL_WIDTH[task]) for task, start in zip(MTL_TASKS, (0, 2, 3))}  # each part's label columns
MTL_PRED = {"va": slice(0, 2), "expr": slice(2, 2 + len(EXPR_CLASSES)), "au": slice(2 + len(EXPR_CLASSES), 2 + len(EXPR_CLASSES) + len(AU_NAMES))}  # each part's prediction columns (values, probabilities)
MTL_WIDTH = MTL_PRED["au"].stop  # the columns of an MTL prediction: valence, arousal, 8 class and 12 unit probabilities




def task_of(labels) -> str:
    """The task of labels [N, columns] as the trainer holds them (`LABEL_WIDTH`): VA [N, 2], EXPR [N, 1] (the class
    index), AU [N, 12], MTL [N, 15] (the three side by side, `MTL_LABELS`)."""
    return {width: task for task, width in LABEL_WIDTH.items()}[int(labels.shape[1])]


OTHER_NAMES = re.compile(r"(^|[^a-z])(mtl|ce)([^a-z]|$)")  # the multi-task and compound-expression challenges: no task of dva


def parse_tasks(text: str | None) -> tuple[str, ...] | None:
    """"va,expr" -> ("va", "expr") in TASKS order; None (every task the release has) for None or ""."""
    if not text:
        return None
    names = [part.strip().lower() for part in str(text).replace("+", ",").split(",") if part.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise DataError(f"--task {text}: unknown task {unknown[0]!r} (use va, expr, au, comma-separated)")
    return tuple(name for name in TASK_ORDER if name in names)


def named_other(task: str, name: str) -> bool:
    """Whether a file name (lower case) names another challenge than task."""
    return bool(OTHER_NAMES.search(name)) or any(spec.named.search(name) for key, spec in TASKS.items() if key != task)


def annotation_dirs(root: Path, task: str) -> list[Path]:
    """A task's annotation folders: Annotations/VA_Estimation_Challenge, annotations/EXPR_Set, AU_Set at the top, ...
    For VA also Annotations/ itself (some releases put Train_Set directly there)."""
    found = []
    for annotations in (child_folder(root, "Annotations"), root):
        if annotations is None:
            continue
        for child in sorted(annotations.iterdir()):
            if child.is_dir() and TASKS[task].folder.search(child.name.lower()):
                found.append(child)
        if annotations is not root and task == "va":
            found.append(annotations)
    return found


def split_dir(root: Path, task: str, split: str) -> Path | None:
    """The task's Train_Set / Validation_Set folder, or None."""
    for folder in annotation_dirs(root, task):
        for name in SPLIT_DIR_NAMES[split]:
            found = child_folder(folder, name)
            if found is not None:
                return found
    return None


def annotated_tracks(root: Path, task: str, split: str) -> dict[str, Path] | None:
    """{track: annotation file} of a task's train or val split, in name order; None when the release has no such folder."""
    folder = split_dir(root, task, split)
    if folder is None:
        return None
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() == ".txt"}
