"""The synthetic release's EXPR and AU challenges (`dva.data.synth`): labels derived from the planted VA, so a model
that reads VA from the pictures and the sound can learn them; splits, test lists and sample files of their own.

Everything here draws from its own random stream: the VA part of the release is the same with or without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dva.data.layout import LIST_FOLDER
from dva.data.tasks import AU_NAMES, EXPR_CLASSES, TASKS

TASK_ANNOTATIONS = {"expr": Path("Annotations") / "EXPR_Recognition_Challenge", "au": Path("Annotations") / "AU_Detection_Challenge"}
TASK_SAMPLES = {"expr": "CVPR_6th_ABAW_Expr_test_set_example.txt", "au": "CVPR_6th_ABAW_AU_test_set_sample.txt"}  # both namings of the years

# EXPR class of each 45-degree sector of the VA plane (counter-clockwise from positive valence), outside the neutral disc
SECTORS = (4, 6, 3, 1, 2, 5, 7, 4)  # Happiness, Surprise, Fear, Anger, Disgust, Sadness, Other, Happiness
NEUTRAL_RADIUS = 0.3
FLIPPED = 0.04  # frames (EXPR) or bits (AU) given a random value: label noise
# AU bit = a threshold of valence (v) or arousal (a)
AU_RULES = {
    "AU1": lambda v, a: a > 0.3, "AU2": lambda v, a: a > 0.5, "AU4": lambda v, a: v < -0.3, "AU6": lambda v, a: v > 0.4,
    "AU7": lambda v, a: (v < -0.2) & (a > 0), "AU10": lambda v, a: v < -0.5, "AU12": lambda v, a: v > 0.2, "AU15": lambda v, a: (v < -0.4) & (a < 0),
    "AU23": lambda v, a: a < -0.3, "AU24": lambda v, a: a < -0.5, "AU25": lambda v, a: a > 0, "AU26": lambda v, a: a > 0.6,
}


def expression(valence: np.ndarray, arousal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """int8 [T]: Neutral near the centre of the VA plane, else the class of the frame's sector (`SECTORS`), a few flipped."""
    angle = np.degrees(np.arctan2(arousal, valence)) % 360
    classes = np.asarray(SECTORS)[np.minimum((angle // 45).astype(int), 7)]
    classes[np.hypot(valence, arousal) < NEUTRAL_RADIUS] = 0
    flip = rng.random(classes.shape[0]) < FLIPPED
    classes[flip] = rng.integers(0, len(EXPR_CLASSES), int(flip.sum()))
    return classes.astype(np.int8)


def action_units(valence: np.ndarray, arousal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """int8 [T, 12]: each AU a threshold of valence or arousal (`AU_RULES`), a few bits flipped."""
    bits = np.stack([AU_RULES[name](valence, arousal) for name in AU_NAMES], axis=1).astype(np.int8)
    flip = rng.random(bits.shape) < FLIPPED
    bits[flip] = 1 - bits[flip]
    return bits


def task_splits(train: list[str], val: list[str], test: list[str]) -> dict[str, dict[str, list[str]]]:
    """{task: {split: tracks}} from VA's splits (train[0:2] is the two-person video, train[2] the video without sound,
    train[3] the one whose name lies about its frame rate). EXPR: VA train tracks in its val and test, a VA val track
    in its test. AU: the video without sound not annotated, a VA train track in its val, a VA val track in its test.
    A VA test track is in no other task's train or val: VA's test split in the store holds VA's test tracks alone."""
    return {
        "expr": {"train": train[:2] + train[4:], "val": train[2:3] + val[1:], "test": train[3:4] + val[:1] + test[1:]},
        "au": {"train": train[:2] + train[4:], "val": train[3:4] + val[1:], "test": val[:1] + test},
    }


def write_tasks(out: Path, planted: dict[str, tuple[np.ndarray, np.ndarray, int]], splits: dict[str, list[str]], seed: int) -> dict:
    """Write EXPR and AU annotations, test lists and sample files under out. planted: {track: (valence, arousal, rows)}
    with rows VA's (annotation lines, or its sample's rows for a test track); splits: VA's {split: tracks}.
    Returns {task: {split: tracks}}."""
    rng = np.random.default_rng([seed, 26])  # the labels' own stream: VA's stays as it was
    chosen = task_splits(splits["train"], splits["val"], splits["test"])
    for task, by_split in chosen.items():
        header = ",".join(EXPR_CLASSES if task == "expr" else AU_NAMES)
        first = True
        for split, folder in (("train", "Train_Set"), ("val", "Validation_Set")):
            for track in by_split[split]:
                valence, arousal, rows = planted[track]
                v, a = _padded(valence, rows), _padded(arousal, rows)
                labels = expression(v, a, rng) if task == "expr" else action_units(v, a, rng)
                text = [str(int(c)) for c in labels] if task == "expr" else [",".join(str(int(b)) for b in row) for row in labels]
                if first:  # runs of -1: frames not annotated
                    for start in rng.integers(0, max(1, rows - 30), 2):
                        for i in range(int(start), min(rows, int(start) + int(rng.integers(8, 30)))):
                            text[i] = "-1" if task == "expr" else ",".join(["-1"] * len(AU_NAMES))
                    first = False
                path = out / TASK_ANNOTATIONS[task] / folder / f"{track}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join([header, *text]) + "\n")
        tests = by_split["test"]
        (out / LIST_FOLDER / TASKS[task].test_list).write_text("\n".join(tests) + "\n")
        empty = "," * len(EXPR_CLASSES if task == "expr" else AU_NAMES)
        rows_of = {track: planted[track][2] - (1 if i % 2 == 0 and track in splits["test"] + splits["val"] else 0) for i, track in enumerate(tests)}
        lines = [f"{track}/{frame:05d}.jpg{empty}" for track in tests for frame in range(1, rows_of[track] + 1)]
        (out / TASK_SAMPLES[task]).write_text("\n".join([f"image_location,{header}", *lines]) + "\n")
    return chosen


def _padded(values: np.ndarray, rows: int) -> np.ndarray:
    """values cut or padded (repeating the last) to rows, as the VA annotation is."""
    return values[:rows] if values.shape[0] >= rows else np.concatenate([values, np.repeat(values[-1:], rows - values.shape[0])])
