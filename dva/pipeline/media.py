"""Containers opened for extraction: the sound as 16 kHz mono, on the clock of the video's frames
(`dva.data.video.frame_times`: when each shown frame plays).

Everything here goes through PyAV (FFmpeg inside the wheel). decord's AudioReader is not
used: it leaks its decoded buffer on every open, and its resampler delays 44.1/48 kHz
sound by about 1 ms. Times are seconds on one clock, the *frame clock*: 0 is the
presentation time of the first video frame (of the first sound sample, for sound alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dva.errors import DataError, first_line

SAMPLE_RATE = 16000  # Hz, mono: what every audio family takes (AST, wav2vec2, HuBERT, WavLM)


@dataclass
class Audio:
    """A track's sound: `wave` float32 [N] in [-1, 1] at 16 kHz mono; its first sample plays at `start` s (frame clock)."""

    wave: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    start: float = 0.0
    bad_packets: int = 0  # packets the decoder refused; each became silence of its duration, so what follows stays on time
    bad_seconds: float = 0.0


def read_audio(path: str | Path) -> Audio:
    """Decode the best audio stream of path to 16 kHz mono; an empty `Audio` when there is none.

    A packet the decoder refuses (a damaged stretch of a file) becomes silence of the packet's duration and is
    counted in `bad_packets`. Raises DataError (one line, naming the file) when the container cannot be read, or
    when most of its sound cannot be decoded.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return Audio()
            sound = container.streams.best("audio")
            video = container.streams.best("video")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks: list[np.ndarray] = []  # copies (to_ndarray stacks), never the frames themselves
            first_audio = first_video = None
            packets = bad_packets = 0
            bad_seconds = 0.0
            # One demux pass for both streams: the video packets give the clock's origin for free.
            for packet in container.demux(*(s for s in (sound, video) if s is not None)):
                if packet.stream is video:
                    if packet.pts is not None and not packet.is_discard:
                        time = float(packet.pts * packet.time_base)
                        first_video = time if first_video is None else min(first_video, time)
                    continue
                packets += packet.size > 0  # the empty packet at the end only flushes the decoder
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    seconds = float(packet.duration * packet.time_base) if packet.duration and packet.time_base else 0.0
                    bad_packets, bad_seconds = bad_packets + 1, bad_seconds + seconds
                    if first_audio is None and packet.pts is not None:
                        first_audio = float(packet.pts * packet.time_base)
                    silence = _silence(sound.codec_context, seconds)
                    frames = [silence] if silence is not None else []
                for frame in frames:
                    if first_audio is None and frame.time is not None:
                        first_audio = frame.time  # priming the container marks (mp4 edit list) is already dropped
                    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))  # the resampler's tail
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: audio cannot be decoded ({first_line(exc)})") from None
    if bad_packets and bad_packets * 2 > packets:
        raise DataError(f"{path}: audio cannot be decoded ({bad_packets} of {packets} packets refused by the decoder)")
    wave = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, dtype=np.float32)
    origin = (first_video if video is not None else first_audio) or 0.0  # the frame clock's 0
    return Audio(wave=wave, start=(first_audio or 0.0) - origin, bad_packets=bad_packets, bad_seconds=bad_seconds)


def _silence(codec_context, seconds: float):
    """An AudioFrame of zeros lasting seconds, in the decoder's own sample format, layout and rate (what the
    resampler was set up with); None when there is nothing to fill or the decoder has not said its format yet."""
    import av

    if seconds <= 0 or codec_context.format is None or codec_context.layout is None or not codec_context.sample_rate:
        return None
    frame = av.AudioFrame(format=codec_context.format.name, layout=codec_context.layout.name, samples=max(1, round(seconds * codec_context.sample_rate)))
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = codec_context.sample_rate
    return frame


def times_for_rows(times: np.ndarray, rows: int, step: float) -> np.ndarray:
    """float64 [rows]: times [n] cut to rows, or extended past the video's end by the median frame duration.

    Annotations may have a few more lines than the video has frames; those rows are masked
    elsewhere and only need increasing times. `step` is used when there are fewer than two frames.
    """
    times = np.asarray(times, dtype=np.float64)
    if rows <= times.shape[0]:
        return times[:rows]
    if times.shape[0] >= 2 and np.median(np.diff(times)) > 0:
        step = float(np.median(np.diff(times)))
    last = times[-1] if times.shape[0] else -step
    extra = last + step * np.arange(1, rows - times.shape[0] + 1)
    return np.concatenate([times, extra])

