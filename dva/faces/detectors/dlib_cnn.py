"""dlib's CNN face detector (MMOD, `mmod_human_face_detector.dat` of face-recognition-models): finds turned and
small faces HOG misses, about 20x slower than HOG on a CPU (dlib-bin has no CUDA)."""

from __future__ import annotations

import numpy as np

from dva.faces.detectors.base import Detections, FaceDetector, model_file, register_detector, require_dlib


@register_detector("dlib-cnn")
class DlibCnn(FaceDetector):
    min_face = 80  # mmod_human_face_detector was trained on faces of about 80 px and larger

    def __init__(self):
        self._detector = require_dlib().cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))

    def detect(self, image: np.ndarray) -> Detections:
        found = self._detector(np.ascontiguousarray(image), 0)
        if not found:
            return Detections.empty()
        boxes = np.array([[d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1] for d in found], np.float32)
        scores = np.array([d.confidence for d in found], np.float32)
        order = np.argsort(-scores)
        return Detections(boxes[order], scores[order])
