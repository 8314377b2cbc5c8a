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


class Landmarks:
    """fit(image uint8 [H, W, 3], box [4]) -> a dlib shape; points(shape) -> float32 [5, 2] (x, y);
    chip(image, shape, size, padding) -> uint8 [size, size, 3], the aligned face."""

    def __init__(self):
        self._dlib = require_dlib()
        self._predictor = self._dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))

    def fit(self, image: np.ndarray, box: np.ndarray):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        return self._predictor(image, self._dlib.rectangle(x0, y0, max(x1 - 1, x0 + 1), max(y1 - 1, y0 + 1)))

    @staticmethod
    def points(shape) -> np.ndarray:
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float32)

    def chip(self, image: np.ndarray, shape, size: int, padding: float) -> np.ndarray:
        return self._dlib.get_face_chip(image, shape, size=size, padding=padding)
