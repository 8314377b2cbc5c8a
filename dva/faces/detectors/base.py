"""What every face detector is: the registry, the interface, and where dlib and its models come from.

A detector module registers its class with `@register_detector(name)`; `build_detector(name)` finds it.
A detector only finds boxes; the five landmarks, alignment and following over time are the same for
every detector (dva/faces/landmarks.py, dva/faces/follow.py), so a GPU detector (RetinaFace, SCRFD from
local weights) is one module that implements `detect`.
"""

from __future__ import annotations

import abc
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dva.errors import ConfigError, DvaError

DEFAULT_DETECTOR = "dlib-hog"
_REGISTRY: dict[str, type] = {}
INSTALL = "pip install 'dva[faces]' (dlib-bin and face-recognition-models)"


def register_detector(name: str):
    """Class decorator: make cls the detector called name and set its `name` attribute."""

    def register(cls: type) -> type:
        if not issubclass(cls, FaceDetector):
            raise TypeError(f"{cls.__name__} must subclass FaceDetector")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"face detector {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def detector_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def detector_class(name: str) -> type:
    """The class registered as name; an unknown name is a ConfigError naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown face detector {name!r}: use one of {', '.join(_REGISTRY) or 'none'}") from None


@dataclass
class Detections:
    """Faces found in one image: boxes float32 [N, 4] (x0, y0, x1, y1 in that image's pixels), scores float32 [N]."""

    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class FaceDetector(abc.ABC):
    """uint8 RGB [H, W, 3] -> Detections. Built as cls() (models are found offline, see `model_file`)."""

    name: str = ""
    min_face: int = 80  # the smallest face side (pixels) found reliably; the stage scales frames so faces reach it
    check_score: float = 0.0  # the least score on a face's aligned crop that confirms it (dva/faces/follow.py)

    @abc.abstractmethod
    def detect(self, image: np.ndarray) -> Detections:
        """Every face in image with a score above the detector's own threshold, best first."""

    def provenance(self) -> dict:
        return {"detector": self.name}


def require_dlib():
    """The dlib module, or a one-line DvaError saying how to install it."""
    try:
        import dlib
    except ImportError:
        raise DvaError(f"the face stage needs dlib: {INSTALL}") from None
    return dlib


def model_file(name: str) -> Path:
    """A model file shipped by face-recognition-models, found by the package's folder: its __init__ imports
    pkg_resources, which setuptools 81 and later no longer ship, so it is located and never imported."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DvaError(f"the face stage needs the dlib models of face-recognition-models: {INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    if not path.is_file():
        raise DvaError(f"{path} is missing: reinstall face-recognition-models ({INSTALL})")
    return path
