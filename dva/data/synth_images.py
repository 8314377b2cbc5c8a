"""A synthetic s-Aff-Wild2 (`dva synth --layout s-aff-wild2`): the multi-task challenge's layout (`dva.data.s_aff_wild2`),
images only, with VA, EXPR and AU planted in the pictures.

Each track is a video that is never written: VA is a smooth trajectory over its frames (`synth.trajectory`), EXPR and
AU are drawn from it as the synthetic release draws them (`synth_tasks.expression`, `action_units`), and the face's
colour follows valence and its brightness arousal (`synth.face`), so a model that reads VA from a picture can learn all
three. Only a sparse, irregular selection of the frames is written (runs of selected frames between gaps), as
`cropped_aligned/<track>/<NNNNN>.jpg`. Labels come in runs of rows that carry some of the three tasks, about a third
of them all three; the rest coded as the release codes them (VA -5, EXPR -1, all twelve AUs -1). Track names as the
release has them: `426`, `video12_left` and `video12_right` (no video of either name exists). The test list names its
tracks in an order of its own (not the name order), after a header line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dva.data.s_aff_wild2 import DEFAULT_FPS, TEST_LIST_NAME
from dva.data.synth import check_request, face, trajectory
from dva.data.synth_tasks import action_units, expression

ANNOTATION_NAMES = {"train": "training_set_annotations.txt", "val": "validation_set_annotations.txt"}
HEADER = "image,valence,arousal,expression,aus"
TEST_HEADER = "image"
SELECTED = 0.4  # about this share of a video's frames is selected
ALL_THREE = 1 / 3  # about this share of rows carries all three labels


def track_names(tracks: int) -> list[tuple[str, str]]:
    """(track, split) of each track: train about 60 %, val and test about 20 % each, at least one each."""
    n_test = max(1, round(tracks * 0.2))
    n_val = max(1, round(tracks * 0.2))
    names = ["426", "video12_left", "video12_right"] + [f"{i + 5:d}-30-640x360" if i % 2 else f"video{i + 20}" for i in range(tracks - 3)]
    splits = ["train"] * (tracks - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    return list(zip(names, splits))


def selection(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """int [n] ascending 1-based frame numbers: runs of 3-40 selected frames (at most an eighth of the video, so there
    are several) between gaps of about 1.5 runs, about SELECTED of the frames."""
    chosen, frame = [], int(rng.integers(1, 20))
    while frame <= n_frames:
        run = int(rng.integers(3, max(4, min(41, n_frames // 8))))
        chosen.extend(range(frame, min(n_frames, frame + run - 1) + 1))
        frame += run + int(rng.integers(1, max(2, int(run * (1 - SELECTED) / SELECTED * 2))))
    return np.asarray(chosen, dtype=np.int64)


def label_pattern(rows: int, rng: np.random.Generator) -> np.ndarray:
    """bool [rows, 3]: which of VA, EXPR, AU each row carries, in runs of 4-15 rows; one run of every three (in a
    shuffled order) carries all three, so about ALL_THREE of the rows do; every row at least one."""
    pattern = np.zeros((rows, 3), dtype=bool)
    start, deck = 0, []
    while start < rows:
        stop = min(rows, start + int(rng.integers(4, 16)))
        if not deck:
            deck = list(rng.permutation(round(1 / ALL_THREE)) == 0)
        if deck.pop():
            pattern[start:stop] = True
        else:
            some = rng.random(3) < 0.45
            some[rng.integers(0, 3)] |= not some.any()
            if some.all():
                some[rng.integers(0, 3)] = False
            pattern[start:stop] = some
        start = stop
    return pattern


def synth_image_set(out: Path, tracks: int = 8, seconds: float = 12.0, seed: int = 0, fps: float = DEFAULT_FPS, progress: bool = True) -> dict:
    """Write the set under out; returns {"out", "layout", "tracks": [{track, split, images, n_video_frames, fps}]}."""
    from PIL import Image
    from tqdm import tqdm

    out = check_request(out, tracks, seconds, "426 and video12's two people")
    rng = np.random.default_rng([seed, 2])
    lines: dict[str, list[str]] = {"train": [], "val": []}
    tests: list[list[str]] = []
    summary = []
    for track, split in tqdm(track_names(tracks), desc="synth", unit="track", disable=not progress):
        n_frames = int(round(seconds * fps))
        valence, arousal = trajectory(rng, seconds, fps)[:n_frames], trajectory(rng, seconds, fps)[:n_frames]
        frames = selection(n_frames, rng)
        v, a = valence[frames - 1], arousal[frames - 1]
        pictures = face(v + rng.normal(0, 0.05, v.shape[0]), a, rng)
        folder = out / "cropped_aligned" / track
        folder.mkdir(parents=True, exist_ok=True)
        for frame, picture in zip(frames, pictures):
            Image.fromarray(picture).save(folder / f"{frame:05d}.jpg", quality=90)
        names = [f"{track}/{frame:05d}.jpg" for frame in frames]
        if split == "test":
            tests.append(names)
        else:
            pattern = label_pattern(frames.shape[0], rng)
            classes, units = expression(v, a, rng), action_units(v, a, rng)
            for k, name in enumerate(names):
                va = f"{v[k]:.3f},{a[k]:.3f}" if pattern[k, 0] else "-5,-5"
                expr = str(int(classes[k])) if pattern[k, 1] else "-1"
                au = ",".join(str(int(b)) for b in units[k]) if pattern[k, 2] else ",".join(["-1"] * len(units[k]))
                lines[split].append(f"{name},{va},{expr},{au}")
        summary.append({"track": track, "split": split, "images": int(frames.shape[0]), "n_video_frames": n_frames, "fps": fps})
    for split, name in ANNOTATION_NAMES.items():
        (out / name).write_text("\n".join([HEADER, *lines[split]]) + "\n")
    order = list(reversed(tests))  # the list's own order, not the tracks' name order
    (out / TEST_LIST_NAME).write_text("\n".join([TEST_HEADER, *(name for names in order for name in names)]) + "\n")
    return {"out": str(out), "layout": "s-aff-wild2", "tracks": summary}
