"""Five landmarks on a face box and the aligned crop they give, both by dlib.

The landmarks are dlib's 5-point shape predictor (the two corners of each eye and the base of the nose), the
same for every detector. Alignment is dlib's `get_face_chip`: a similarity transform (rotation, scale,
shift) that puts the five points on dlib's mean-face template, the template the predictor was trained
against, so no second template has to be kept in step with it; `padding` is the margin around the
template as a fraction of its size (0.25: the crop shows forehead and chin, as the release's do).
"""

from __future__ import annotations

import numpy as np

from dva.faces.detectors.base import model_file, require_dlib


class Fit:
    """Landmarks fitted in a region of a frame: `shape` is dlib's, in the coordinates of `region` (a view of the
    frame around the face, from `offset`), so that dlib converts the region, not the whole frame, per call."""

    def __init__(self, region: np.ndarray, offset: np.ndarray, shape):
        self.region, self.offset, self.shape = region, offset, shape

    @property
    def points(self) -> np.ndarray:
        """float32 [5, 2] (x, y) in the frame's pixels."""
        parts = self.shape
        return np.array([[parts.part(i).x, parts.part(i).y] for i in range(parts.num_parts)], np.float32) + self.offset


class Landmarks:
    """fit(image uint8 [H, W, 3], box [4]) -> Fit; chip(fit, size, padding) -> uint8 [size, size, 3], the aligned face."""

    def __init__(self):
        self._dlib = require_dlib()
        self._predictor = self._dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))

    def fit(self, image: np.ndarray, box: np.ndarray) -> Fit:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        margin = max(x1 - x0, y1 - y0)  # the aligned crop with its padding lies well inside the box grown by its size
        left, top = max(0, x0 - margin), max(0, y0 - margin)
        region = np.ascontiguousarray(image[top : max(top + 1, y1 + margin), left : max(left + 1, x1 + margin)])
        rect = self._dlib.rectangle(x0 - left, y0 - top, max(x1 - 1, x0 + 1) - left, max(y1 - 1, y0 + 1) - top)
        return Fit(region, np.array([left, top], np.float32), self._predictor(region, rect))

    def chip(self, fit: Fit, size: int, padding: float) -> np.ndarray:
        return self._dlib.get_face_chip(fit.region, fit.shape, size=size, padding=padding)
