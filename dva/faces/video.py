"""The videos of a folder, and their frames as a viewer shows them (the container's orientation applied).

Phone videos store frames as the sensor saw them and a display matrix saying how to turn them. PyAV reports
it per decoded frame (`VideoFrame.rotation`, degrees counter-clockwise; FFmpeg 7 and later no longer export
a `rotate` metadata tag). decord 0.6.0 as built on PyPI applies it itself; whether the decord at hand does
is checked once per video against PyAV's first frame, and the turn is applied here when it does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dva.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")  # compared lower-case
CHUNK = 16  # frames decoded per call


def find_videos(root: Path, skip: Path | None = None) -> list[Path]:
    """Every video file under root (recursively, sorted), leaving out hidden folders and anything under skip."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).parts
        if any(part.startswith(".") for part in relative[:-1]) or (skip is not None and path.is_relative_to(skip)):
            continue
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            found.append(path)
    return found


def videos_by_name(root: Path, skip: Path | None = None) -> dict[str, Path]:
    """Every video under root (`find_videos`) by its name, the file name without extension (a track's name).
    DataError when there is none, or when two share a name (naming both: their tracks would be one)."""
    root = Path(root)
    named: dict[str, Path] = {}
    for video in find_videos(root, skip=skip):
        if video.stem in named:
            first, second = (v.relative_to(root).as_posix() for v in (named[video.stem], video))
            raise DataError(f"two videos are both called {video.stem!r}: {first} and {second} (a track is named by its file name, so they would be one); rename one")
        named[video.stem] = video
    if not named:
        raise DataError(f"{root}: no videos under it (looked for {', '.join(VIDEO_SUFFIXES)}, any case)")
    return named


@dataclass
class Frames:
    """An opened video: `n_frames` frames of `height` x `width` as displayed; `rotation` is the container's turn
    (degrees counter-clockwise, 0, 90, 180 or 270)."""

    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    rotation: int
    _reader: object
    _turn: int  # quarter turns dva applies to decord's frames (0 when decord already applied the rotation)

    def __iter__(self) -> Iterator[np.ndarray]:
        """uint8 [height, width, 3] per frame, in order."""
        import decord

        for start in range(0, self.n_frames, CHUNK):
            try:
                batch = self._reader.get_batch(list(range(start, min(start + CHUNK, self.n_frames)))).asnumpy()
            except decord.DECORDError as exc:
                raise DataError(f"{self.path}: frame {start + 1} cannot be decoded ({_first_line(exc)})") from None
            for frame in batch:
                yield np.ascontiguousarray(np.rot90(frame, self._turn)) if self._turn else frame


def open_frames(path: Path) -> Frames:
    """Open path for reading its frames as displayed; DataError (one line, naming the file) when it cannot be read."""
    import decord

    rotation, first = _first_frame(path)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        n_frames, fps = len(reader), float(reader.get_avg_fps())
        decoded = reader[0].asnumpy() if n_frames else None
    except (decord.DECORDError, RuntimeError) as exc:
        raise DataError(f"{path}: video cannot be read ({_first_line(exc)})") from None
    if decoded is None:
        raise DataError(f"{path}: the video has no frames")
    turn = _turn_needed(decoded, first, rotation)
    shown = np.rot90(decoded, turn) if turn else decoded
    return Frames(Path(path), n_frames, fps, int(shown.shape[1]), int(shown.shape[0]), rotation, reader, turn)


def _first_frame(path: Path) -> tuple[int, np.ndarray]:
    """(rotation in degrees counter-clockwise, normalised to 0/90/180/270; the first frame as stored, RGB)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            frame = next(container.decode(container.streams.best("video")), None)
            if frame is None:
                raise DataError(f"{path}: the video has no frames")
            return int(round(frame.rotation / 90)) % 4 * 90, frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: video cannot be read ({_first_line(exc)})") from None


def _turn_needed(decoded: np.ndarray, stored: np.ndarray, rotation: int) -> int:
    """Quarter turns still to apply to decord's frame: 0 when it already matches PyAV's frame turned as displayed."""
    if rotation == 0:
        return 0
    turn = rotation // 90
    shown = np.rot90(stored, turn)
    if decoded.shape == shown.shape and (decoded.shape != stored.shape or _distance(decoded, shown) <= _distance(decoded, stored)):
        return 0
    return turn


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__
