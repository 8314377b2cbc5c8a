"""dlib's HOG + linear SVM frontal face detector: CPU only, no model file, the default."""

from __future__ import annotations

import numpy as np

from dva.faces.detectors.base import Detections, FaceDetector, register_detector, require_dlib


@register_detector("dlib-hog")
class DlibHog(FaceDetector):
    min_face = 80  # the detector's window is 80x80 px
    # aligned crops of real faces score 0.59 and up (carphone, 180 frames); HOG's false detections on bikes 0.11
    check_score = 0.3

    def __init__(self):
        self._detector = require_dlib().get_frontal_face_detector()

    def detect(self, image: np.ndarray) -> Detections:
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), 0, 0.0)  # no upsampling: the stage scales
        if not rects:
            return Detections.empty()
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
        order = np.argsort(-np.asarray(scores))
        return Detections(boxes[order], np.asarray(scores, np.float32)[order])
