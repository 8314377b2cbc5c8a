"""One video through the face stage: its frames followed, aligned crops written in the release's layout, and a
record of every face found.

Layout under a crops folder `OUT/cropped_aligned/`:
  <track>/NNNNN.jpg       the aligned face of frame N (1-based, five digits), absent where none was found
  <name>.faces.json       the video's record, written last: a video whose record is there is complete
where <name> is the video's file name without extension and <track> is <name>, or <name>_left and
<name>_right with two subjects. Crops are written into `.<track>.partial/` and renamed into place, then the
record is written by rename as well, so a run killed at any point leaves either a complete video or one
the next run redoes from the start (and then equals a clean run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dva.data import layout
from dva.data.layout import FACES_RECORD_FORMAT, record_path
from dva.errors import ConfigError
from dva.faces.detectors.base import DEFAULT_DETECTOR
from dva.faces.framing import DLIB, Cropper, Framing

SIZES = (112, 224)
SIDES = ("left", "right")
_MODELS: dict = {}  # per process: detector name -> (detector, landmarks), built once


@dataclass(frozen=True)
class FaceSettings:
    """What decides the crops (all of it is written into each record)."""

    size: int = 112  # crop side in pixels: the release's 112, or 224 for CLIP's input
    subjects: int = 1  # 1: the main face; 2: the left and the right person
    detector: str = DEFAULT_DETECTOR
    detect_every: int = 10  # frames between full-frame detections while every subject is followed
    detect_side: int = 640  # the detector sees frames scaled to this longest side
    padding: float = 0.25  # margin around dlib's face template, as a fraction of its size
    carry: int = 12  # the longest gap (frames) between two sightings of a subject that is bridged with carried faces
    quality: int = 95  # JPEG quality of the crops
    framing: Framing = DLIB  # where the face sits in the crop (dva/faces/framing.py); a record or a name is taken too

    def __post_init__(self):
        object.__setattr__(self, "framing", Framing.from_record(self.framing))

    def validate(self) -> "FaceSettings":
        from dva.faces.detectors import detector_class

        if self.size not in SIZES:
            raise ConfigError(f"--size must be one of {', '.join(map(str, SIZES))}, not {self.size}")
        if self.subjects not in (1, 2):
            raise ConfigError(f"--subjects must be 1 or 2, not {self.subjects}")
        if self.detect_every < 1:
            raise ConfigError(f"--detect-every must be 1 or more, not {self.detect_every}")
        if self.carry < 0:
            raise ConfigError(f"--carry must be 0 or more, not {self.carry}")
        if not 160 <= self.detect_side <= 4096:
            raise ConfigError(f"--detect-side must be between 160 and 4096 px, not {self.detect_side}")
        detector_class(self.detector)
        self.framing.validate()
        return self

    def tracks(self, name: str) -> list[str]:
        return [name] if self.subjects == 1 else [f"{name}_{side}" for side in SIDES]


@dataclass
class FaceRecord:
    """What faces_for_video did with one video: its tracks and how many crops each got."""

    video: str
    record: str  # the .faces.json path
    crops: dict[str, int] = field(default_factory=dict)  # track -> crops written
    frames: int = 0
    detections: int = 0  # frames the full-frame detector ran on
    seconds: float = 0.0
    skipped: bool = False  # complete before this run

    @property
    def has_face(self) -> bool:
        return any(self.crops.values())

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_record(path: Path) -> dict | None:
    """`dva.data.layout.read_record`, with a record of dva before framings read as made in dlib's framing (get_face_chip)."""
    record = layout.read_record(path)
    if record is not None and isinstance(record.get("settings"), dict):
        record["settings"].setdefault("framing", DLIB.record())
    return record


def crops_settings(crops_root: Path) -> dict | None:
    """The settings the crops under crops_root were made with (their records', `settings_record`), or None when no
    record of dva's is there (crops made another way); the first record's when they differ."""
    for path in sorted(Path(crops_root).glob("*.faces.json")):
        record = read_record(path)
        if record is not None:
            return record["settings"]
    return None


def faces_for_video(video: Path, crops_root: Path, settings: FaceSettings, name: str | None = None,
                    progress: bool = False, label: str | None = None) -> FaceRecord:
    """Crops and record of video under crops_root (the `cropped_aligned` folder); skipped when its record with these
    settings is there. name: the video's name in the layout (default: its file stem); label: the video as the
    record names it (default: its path). Raises DataError when the video cannot be read."""
    from tqdm import tqdm

    from dva.data.video import open_frames
    from dva.faces.follow import Follower

    video, crops_root = Path(video), Path(crops_root)
    name = name or video.stem
    label = label or str(video)
    path = record_path(crops_root, name)
    done = read_record(path)
    if done is not None and done.get("settings") == settings_record(settings):
        return FaceRecord(label, str(path), {t: info["crops"] for t, info in done["tracks"].items()}, done["n_frames"], skipped=True)
    started = time.perf_counter()
    frames = open_frames(video)
    detector, landmarks = models(settings.detector)
    follower = Follower(detector, landmarks, settings.subjects, settings.detect_every, settings.detect_side, settings.padding,
                        settings.carry)
    cropper = Cropper(settings.framing, landmarks, settings.padding)
    tracks = settings.tracks(name)
    partial = _fresh_folders(crops_root, tracks, path)
    columns = {track: {"frame": [], "source": [], "score": [], "box": [], "landmarks": [], "kept": []} for track in tracks}
    for current, frame in enumerate(tqdm(frames, total=frames.n_frames, desc=name, unit="frame", disable=not progress, leave=False)):
        faces = [(current, track, face) for track, face in zip(tracks, follower.step(frame))]
        faces += [(index, tracks[slot], face) for index, slot, face in follower.carried()]  # a short gap's frames, once seen again
        for index, track, face in faces:
            if face is None:
                continue
            _write_crop(cropper.chip(frame, face, settings.size), partial[track] / f"{index + 1:05d}.jpg", settings.quality)
            _add(columns[track], index + 1, face)
    for track in tracks:
        partial[track].rename(crops_root / track)
        columns[track] = _by_frame(columns[track])
    record = {
        "format": FACES_RECORD_FORMAT, "video": label, "n_frames": frames.n_frames, "fps": frames.fps, "width": frames.width, "height": frames.height,
        "rotation": frames.rotation, "settings": settings_record(settings), "detections": follower.detections,
        "cuts": [index + 1 for index in follower.cuts],
        "tracks": {track: {"subject": None if settings.subjects == 1 else SIDES[i], "crops": len(columns[track]["frame"]), **columns[track]}
                   for i, track in enumerate(tracks)},
    }
    _write_atomically(path, json.dumps(record, separators=(",", ":")))
    return FaceRecord(label, str(path), {t: len(c["frame"]) for t, c in columns.items()}, frames.n_frames, follower.detections,
                      time.perf_counter() - started)


def models(detector_name: str):
    """(detector, landmarks), built once per process."""
    from dva.faces.detectors import build_detector
    from dva.faces.landmarks import Landmarks

    if detector_name not in _MODELS:
        _MODELS[detector_name] = (build_detector(detector_name), Landmarks())
    return _MODELS[detector_name]


def settings_record(settings: FaceSettings) -> dict:
    if settings.framing.name == "dlib":
        how = {"landmarks": "dlib shape_predictor_5_face_landmarks", "alignment": "dlib get_face_chip"}
    else:  # the follower still fits the 5 points; the crop is aligned by the 68 points' five (dva/faces/framing.py)
        how = {"landmarks": "dlib shape_predictor_5_face_landmarks", "alignment": "similarity of dlib shape_predictor_68's five points onto the framing's template"}
    return {**dataclasses.asdict(settings), "framing": settings.framing.record(), **how}


def _fresh_folders(crops_root: Path, tracks: list[str], path: Path) -> dict[str, Path]:
    """Empty `.<track>.partial/` folders, with whatever an earlier (killed or other-settings) run left removed."""
    path.unlink(missing_ok=True)
    folders = {}
    for track in tracks:
        for stale in (crops_root / track, crops_root / f".{track}.partial"):
            if stale.exists():
                shutil.rmtree(stale)
        folders[track] = crops_root / f".{track}.partial"
        folders[track].mkdir(parents=True)
    return folders


def _write_crop(chip: np.ndarray, path: Path, quality: int) -> None:
    from PIL import Image

    Image.fromarray(chip).save(path, format="JPEG", quality=quality)


def _add(column: dict, frame: int, face) -> None:
    column["frame"].append(frame)
    column["source"].append(face.source)
    column["kept"].append(face.kept)
    column["score"].append(round(face.score, 4))
    column["box"].append([round(float(v), 1) for v in face.box])
    column["landmarks"].append([[round(float(x), 1), round(float(y), 1)] for x, y in face.points])


def _by_frame(column: dict) -> dict:
    """column's entries in frame order (carried faces are added when their gap closes, after later frames)."""
    order = np.argsort(column["frame"], kind="stable")
    return {key: [values[i] for i in order] for key, values in column.items()}


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def failure_reason(exc: BaseException, video: Path) -> str:
    """A video's error message without the video's path in front (the report names the video)."""
    text = str(exc)
    return text[len(str(video)) + 2:] if text.startswith(f"{video}: ") else text
