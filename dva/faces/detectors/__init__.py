"""Face detectors by name: importing this package registers every module below it."""

from __future__ import annotations

from dva.faces.detectors import dlib_cnn, dlib_hog  # noqa: F401  (registration)
from dva.faces.detectors.base import DEFAULT_DETECTOR, Detections, FaceDetector, detector_class, detector_names, model_file, register_detector, require_dlib

__all__ = ["DEFAULT_DETECTOR", "Detections", "FaceDetector", "build_detector", "detector_names", "model_file", "register_detector", "require_dlib"]


def build_detector(name: str = DEFAULT_DETECTOR) -> FaceDetector:
    """An instance of the detector registered as name (ConfigError when unknown, DvaError when dlib is missing)."""
    return detector_class(name)()
