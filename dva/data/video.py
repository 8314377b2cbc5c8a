"""The recordings of a folder, and their video frames as a player presents them.

What a player shows is the container's decision. An MP4 edit list may start the picture after the first packets
(a clip cut at a frame that is not a key frame keeps the frames before it, marked discard, because the shown ones
are coded against them), and a phone's display matrix says how to turn the stored frames. FFmpeg, through PyAV,
honours both. decord 0.6 counts the hidden packets as frames, makes up the difference at the end (the last frame
again) and times each frame as if the hidden ones were shown: a trimmed clip got more rows than it has times, and crops
of frames that are not in it. So every count, time and frame of a video in dva comes from here, through PyAV:
`probe_video` (how many frames, from the container's index without reading the file when the index is complete),
`frame_times` (when each plays) and `open_frames` (the pictures, turned as displayed); the three agree frame for
frame.

A recording with sound and no video stream (a .wav, an .m4a, an .mp4 of sound alone) presents no frames: its
frame clock is `SOUND_ONLY_FPS` ticks from its first sample, and it is predicted from its sound alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dva.errors import DataError, first_line

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")  # compared lower-case
SOUND_SUFFIXES = (".wav", ".m4a", ".mp3", ".flac", ".aac", ".ogg", ".opus")  # recordings of sound alone
RECORDING_SUFFIXES = VIDEO_SUFFIXES + SOUND_SUFFIXES
SOUND_ONLY_FPS = 30.0  # the frame clock of a recording without pictures: Aff-Wild2's usual rate


def find_videos(root: Path, skip: Path | None = None) -> list[Path]:
    """Every recording (video, or sound alone) under root, recursively, sorted, leaving out hidden folders and
    anything under skip."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).parts
        if any(part.startswith(".") for part in relative[:-1]) or (skip is not None and path.is_relative_to(skip)):
            continue
        if path.suffix.lower() in RECORDING_SUFFIXES and path.is_file():
            found.append(path)
    return found


def videos_by_name(root: Path, skip: Path | None = None) -> dict[str, Path]:
    """Every recording under root (`find_videos`) by its name, the file name without extension (a track's name).
    DataError when there is none, or when two share a name (naming both: their tracks would be one)."""
    root = Path(root)
    named: dict[str, Path] = {}
    for video in find_videos(root, skip=skip):
        if video.stem in named:
            first, second = (v.relative_to(root).as_posix() for v in (named[video.stem], video))
            raise DataError(f"two videos are both called {video.stem!r}: {first} and {second} (a track is named by its file name, so they would be one); rename one")
        named[video.stem] = video
    if not named:
        raise DataError(f"{root}: no videos under it (looked for {', '.join(VIDEO_SUFFIXES)}, and sound alone: {', '.join(SOUND_SUFFIXES)}; any case)")
    return named


@dataclass(frozen=True)
class Probe:
    """What the container says of a recording: `n_frames` frames a player presents at `fps` (0 frames without a
    video stream, then `fps` is SOUND_ONLY_FPS and `seconds` the sound's length)."""

    fps: float
    n_frames: int
    has_audio: bool
    has_video: bool
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        """Frames on the recording's clock: its own, or for sound alone one per 1/SOUND_ONLY_FPS of its sound."""
        return self.n_frames if self.has_video else int(self.seconds * self.fps + 1e-6)


def probe_video(path: Path) -> Probe:
    """The recording's frame count, rate and streams, read from the container (never the name). DataError (one
    line, naming the file) when it cannot be read, has neither pictures nor sound, or a video stream without frames."""
    import av

    try:
        with av.open(str(path)) as container:
            has_audio = bool(container.streams.audio)
            if not container.streams.video:
                if not has_audio:
                    raise DataError(f"{path}: the container has neither a video nor an audio stream")
                return Probe(SOUND_ONLY_FPS, 0, True, False, _sound_seconds(container))
            stream = container.streams.best("video")
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            n_frames = _count(container, stream)
    except DataError:
        raise
    except Exception as exc:  # PyAV raises many error types for damaged containers
        raise DataError(f"{path}: container cannot be read ({first_line(exc)})") from None
    if not (fps > 0 and n_frames > 0):
        raise DataError(f"{path}: video has no frames or no frame rate")
    return Probe(fps, n_frames, has_audio, True)


def frame_times(path: str | Path) -> np.ndarray:
    """Presentation time of every frame a player shows, float64 [n_frames] seconds, ascending, the first at 0;
    empty for a recording of sound alone.

    From the packets' timestamps (demuxed, not decoded; those the container marks discard left out), so variable
    frame rates and trimmed clips come out right. DataError when the file cannot be read or its video packets
    carry no timestamps.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                if container.streams.audio:
                    return np.zeros(0, dtype=np.float64)
                raise DataError(f"{path}: no video stream")
            video = container.streams.best("video")
            ticks, time_base = _ticks(container, video), video.time_base
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: video timestamps cannot be read ({first_line(exc)})") from None
    if not ticks.size:
        raise DataError(f"{path}: the video packets carry no timestamps")
    return (ticks - ticks[0]).astype(np.float64) * float(time_base)


def _ticks(container, stream) -> np.ndarray:
    """The shown frames' pts, int64, in presentation order (B-frames arrive in decode order: sorted)."""
    ticks = [packet.pts for packet in container.demux(stream) if packet.pts is not None and not packet.is_discard]
    return np.sort(np.asarray(ticks, dtype=np.int64))


def _count(container, stream) -> int:
    """Frames shown: from the index when it holds every packet (MP4 and AVI read theirs whole when opened: no need to
    read the file), else by demuxing (Matroska's index has key frames only) as `frame_times` does."""
    entries = stream.index_entries
    if stream.frames and len(entries) == stream.frames:
        return sum(not entry.is_discard for entry in entries)
    return int(_ticks(container, stream).size)


def _sound_seconds(container) -> float:
    sound = container.streams.best("audio")
    if sound.duration and sound.time_base:
        return float(sound.duration * sound.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    ends = [float((p.pts + (p.duration or 0)) * p.time_base) for p in container.demux(sound) if p.pts is not None]
    return max(ends, default=0.0)


@dataclass
class Frames:
    """An opened recording: `n_frames` frames of `height` x `width` as displayed; `rotation` is the container's turn
    (degrees counter-clockwise, 0, 90, 180 or 270). Sound alone: no frames, width and height 0."""

    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    rotation: int

    def __iter__(self) -> Iterator[np.ndarray]:
        """uint8 [height, width, 3] per frame, in presentation order, the `n_frames` a player shows."""
        import av
        from av.video.reformatter import VideoReformatter

        if not self.n_frames:
            return
        turn, shown = self.rotation // 90, 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.best("video")
                stream.thread_type = "AUTO"  # frame and slice threads (PyAV decodes 1.5-2x decord's frames/s: BENCHMARKS.md)
                to_rgb = VideoReformatter()  # one conversion context for the whole video, not one per frame
                for frame in container.decode(stream):
                    image = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                    yield np.ascontiguousarray(np.rot90(image, turn)) if turn else image
                    shown += 1
                    if shown == self.n_frames:
                        return
        except av.error.FFmpegError as exc:
            raise DataError(f"{self.path}: frame {shown + 1} cannot be decoded ({first_line(exc)})") from None


def open_frames(path: Path) -> Frames:
    """Open path for reading its frames as displayed; DataError (one line, naming the file) when it cannot be read."""
    import av

    probe = probe_video(path)
    if not probe.has_video:
        return Frames(Path(path), 0, probe.fps, 0, 0, 0)
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(container.streams.best("video")), None)
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: video cannot be read ({first_line(exc)})") from None
    if frame is None:
        raise DataError(f"{path}: the video has no frames")
    rotation = int(round(frame.rotation / 90)) % 4 * 90  # the display matrix, as PyAV reports it per frame
    width, height = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
    return Frames(Path(path), probe.n_frames, probe.fps, width, height, rotation)
