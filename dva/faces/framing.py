"""Crop framing: where the aligned face sits in its crop, and the crop that puts it there.

A framing is a template: five points in crop pixels (the image-left eye's centre, the other eye's centre, the nose
tip, the image-left and image-right mouth corners), and a frame is aligned by the similarity transform (rotation,
scale, shift; least squares, Umeyama) that takes the same five points of its face onto the template. The points
come from dlib's 68-point predictor (eye centres as the mean of each eye's six points, 30 the nose tip, 48 and 54
the mouth corners), on the frame and on the crops a template is learned from alike, so the predictor's own bias
cancels.

- `dlib`: dlib's `get_face_chip` on its 5-point landmarks (its mean-face template, 25 % padding), dva's framing
  before framings existed; it has no points here.
- `arcface`: the published ArcFace template for 112 px (insightface), scaled for 224.
- `release`: the template learned from a release's own crops (dva/faces/template.py), so that dva's crops of a
  video frame its face as the organisers' crops of it do.

Coordinates are dlib's and the templates': pixel (i, j) has its centre at x = i, y = j. PIL's affine warp samples
at pixel centres i + 0.5, hence the half-pixel shifts in `warp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dva.errors import ConfigError

FRAMINGS = ("release", "dlib", "arcface")
ARCFACE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))
PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
MEASURED = slice(17, 68)  # brows, nose, eyes, mouth: the 68 points less the jaw line (often cut off by a tight crop)
_MODELS: dict = {}  # per process: the 68-point predictor and HOG, loaded once (the predictor file is 100 MB)


@dataclass(frozen=True)
class Framing:
    """A crop framing as every faces record and every feature set made from the crops records it."""

    name: str = "dlib"
    points: tuple = ()  # five (x, y) in pixels of a crop of side `size`; () for dlib (get_face_chip)
    size: int = 112
    residual_px: float | None = None  # learned: median over the sampled crops of their points' RMS distance to the template
    crops: int = 0  # learned: the crops it was learned from

    def __post_init__(self):
        object.__setattr__(self, "points", tuple(tuple(round(float(v), 3) for v in p) for p in self.points))

    def validate(self) -> "Framing":
        if self.name not in FRAMINGS:
            raise ConfigError(f"--framing must be one of {', '.join(FRAMINGS)}, not {self.name!r}")
        if self.name != "dlib" and len(self.points) != 5:
            raise ConfigError(f"framing {self.name!r} needs its five template points (a release's crops to learn them from: --framing-from CROPS)")
        return self

    def template(self, size: int) -> np.ndarray:
        """float64 [5, 2]: the template's points in a crop of side size (pixel centres scale about -0.5)."""
        scale = size / self.size
        return (np.asarray(self.points, np.float64) + 0.5) * scale - 0.5

    def record(self) -> dict:
        return {"name": self.name, "points": [list(p) for p in self.points], "size": self.size, "residual_px": self.residual_px, "crops": self.crops}

    @classmethod
    def from_record(cls, record) -> "Framing":
        """A Framing from its record (a dict), its name (a str: a fixed framing), or itself; records of dva before
        framings (no framing) are dlib's."""
        if isinstance(record, Framing):
            return record
        if record is None:
            return DLIB
        if isinstance(record, str):
            return fixed(record)
        return cls(**{k: record[k] for k in ("name", "points", "size", "residual_px", "crops") if k in record})

    def describe(self) -> str:
        if self.name == "release":
            return f"release (learned from {self.crops} of the release's crops, residual {self.residual_px} px at {self.size})"
        return "arcface (the published ArcFace template)" if self.name == "arcface" else "dlib (get_face_chip, 25 % padding)"


DLIB = Framing("dlib")
ARCFACE = Framing("arcface", ARCFACE_112)


def fixed(name: str) -> Framing:
    """The framing called name: dlib's or ArcFace's, or `release` still to be learned (no points)."""
    if name == "release":
        return Framing("release")
    return {"dlib": DLIB, "arcface": ARCFACE}.get(name) or Framing(name).validate()


def five_points(points68: np.ndarray) -> np.ndarray:
    """float64 [5, 2] of dlib's 68 points (x, y): the eyes' centres, the nose tip, the mouth corners."""
    p = np.asarray(points68, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """float64 [2, 3]: the similarity transform (no reflection) that maps source [N, 2] onto target [N, 2] with the
    least squared error (Umeyama 1991)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    ms, mt = source.mean(0), target.mean(0)
    s, t = source - ms, target - mt
    u, sigma, vt = np.linalg.svd(t.T @ s / len(source))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / max(float((s ** 2).sum(1).mean()), 1e-12))
    return np.hstack([scale * rotation, (mt - scale * rotation @ ms)[:, None]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def scale_of(matrix: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: image seen through matrix (image pixels -> crop pixels), bilinear; where the crop
    shrinks the image by 2 or more the image is first reduced by box filtering (no aliasing)."""
    from PIL import Image

    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]  # crop -> image
    corners = apply(inverse, [[-1, -1], [size, -1], [-1, size], [size, size]])
    height, width = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(v)) - 1) for v in corners.min(0))
    x1, y1 = min(width, int(np.ceil(corners[:, 0].max())) + 2), min(height, int(np.ceil(corners[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    region = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    factor = max(1, int(1 / scale_of(matrix)))
    if factor > 1:
        region = region.reduce(factor)
    # crop pixel centre u (PIL: u + 0.5) -> image pixel centre x = inverse(u) -> region x' = (x - x0 + 0.5) / factor
    a = inverse[:, :2] / factor
    offset = (inverse[:, 2] - [x0, y0] + 0.5) / factor - a @ [0.5, 0.5]
    data = (a[0, 0], a[0, 1], offset[0], a[1, 0], a[1, 1], offset[1])
    return np.asarray(region.transform((size, size), Image.AFFINE, data, resample=Image.BILINEAR))


class Points68:
    """dlib's 68-point predictor: on a face box in a frame (the stage's crops) or on a crop itself (learning a
    template, measuring a framing)."""

    def __init__(self):
        if "hog" not in _MODELS:
            from dva.faces.detectors.base import require_dlib

            dlib = require_dlib()
            _MODELS.update(dlib=dlib, hog=dlib.get_frontal_face_detector())
        self._models = _MODELS

    def _predictor(self):
        """Loaded on first use (seconds): a folder whose crops show no face never loads it."""
        if "predictor" not in self._models:
            from dva.faces.detectors.base import model_file

            self._models["predictor"] = self._models["dlib"].shape_predictor(str(model_file(PREDICTOR_68)))
        return self._models["predictor"]

    def on_box(self, image: np.ndarray, box, offset=(0.0, 0.0)) -> np.ndarray:
        """float64 [68, 2] in image pixels plus offset, fitted on box (x0, y0, x1, y1 in image pixels)."""
        predictor = self._predictor()
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = predictor(image, self._models["dlib"].rectangle(x0, y0, max(x1 - 1, x0 + 1), max(y1 - 1, y0 + 1)))
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64) + np.asarray(offset, np.float64)

    def on_crop(self, crop: np.ndarray) -> np.ndarray | None:
        """float64 [68, 2] in crop pixels of the face a crop shows, or None when HOG finds none: the crop is padded by
        a quarter of its side (HOG's window must fit around the face) and seen upsampled once (a 112 px crop's
        face is under HOG's 80 px), the central detection taken."""
        side = crop.shape[0]
        pad = side // 4
        padded = np.pad(crop, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        found = self._models["hog"](padded, 1)
        if not len(found):
            return None
        centre = np.array([pad + side / 2, pad + side / 2])
        best = min(found, key=lambda r: float(np.hypot((r.left() + r.right()) / 2 - centre[0], (r.top() + r.bottom()) / 2 - centre[1])))
        return self.on_box(padded, (best.left(), best.top(), best.right() + 1, best.bottom() + 1), offset=(-pad, -pad))


class Cropper:
    """The stage's crops in a framing: `chip(frame, face, size)` of a followed or detected Face (dva/faces/follow.py)."""

    def __init__(self, framing: Framing, landmarks, padding: float):
        self.framing, self.landmarks, self.padding = framing.validate(), landmarks, padding
        self.points = None if framing.name == "dlib" else Points68()

    def chip(self, frame: np.ndarray, face, size: int) -> np.ndarray:
        if self.points is None:
            return self.landmarks.chip(face.shape, size, self.padding)
        fit = face.shape  # the 68 points are fitted in the region of the frame the 5-point fit used (dlib converts less)
        box = np.asarray(face.box, np.float64) - np.tile(fit.offset, 2)
        points = self.points.on_box(fit.region, box, offset=fit.offset)
        return warp(frame, similarity(five_points(points), self.framing.template(size)), size)
