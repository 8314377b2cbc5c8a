"""Containers opened for extraction: the sound as 16 kHz mono, on the clock of the video's frames
(`dva.data.video.frame_times`: when each shown frame plays).

Everything here goes through PyAV (FFmpeg inside the wheel). decord's AudioReader is not
used: it leaks its decoded buffer on every open, and its resampler delays 44.1/48 kHz
sound by about 1 ms. Times are seconds on one clock, the *frame clock*: 0 is when the first video
frame is shown (of the first sound sample, for sound alone), on the container's timestamps: the first
shown frame's presentation time, or in an AVI, which stores none (a frame's slot is its place in the file:
its decode time), the first frame's slot. FFmpeg guesses an AVI's presentation times from the B-frame
reordering, one frame late for a video with B-frames, which would put its sound a frame early.

The sound keeps its own timestamps: decoded frames are placed where their timestamps say, not end to
end. A gap between them (packets lost by a capture, left out by a screen recorder) becomes silence of its
length; a frame that starts before the previous one ended has its overlapping samples cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dva.errors import DataError, at_most, first_line

SAMPLE_RATE = 16000  # Hz, mono: what every audio family takes (AST, wav2vec2, HuBERT, WavLM)
# Timestamps are rounded to their time base (Matroska's is 1 ms): a frame this close to where the sound so far ends
# is on time; beyond it, the difference is a hole or an overlap.
TOLERANCE = 0.002  # seconds


@dataclass
class Audio:
    """A track's sound: `wave` float32 [N] in [-1, 1] at 16 kHz mono; its first sample plays at `start` s (frame clock)."""

    wave: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    start: float = 0.0
    bad_packets: int = 0  # packets the decoder refused; each became silence of its duration, so what follows stays on time
    bad_seconds: float = 0.0
    holes: list[tuple[float, float]] = field(default_factory=list)  # (where, seconds) on the frame clock: gaps in the timestamps, silence now
    overlaps: list[tuple[float, float]] = field(default_factory=list)  # (where, seconds) on the frame clock: samples cut

    def problems(self) -> str | None:
        """One line of what was done to keep the sound on time (refused packets, holes, overlaps), or None."""
        parts = []
        if self.bad_packets:
            parts.append(f"{self.bad_packets} audio packets ({self.bad_seconds:.2f} s) could not be decoded and are silence")
        for spans, what, done in ((self.holes, "hole", "filled with silence"), (self.overlaps, "overlap", "trimmed")):
            if spans:
                shown = at_most([f"{seconds:.3f} s at {where:.3f} s" for where, seconds in spans], 5, ", ")
                parts.append(f"{len(spans)} {what}{'s' if len(spans) > 1 else ''} in the audio timestamps ({shown}; {sum(s for _, s in spans):.3f} s in all) {done}")
        return "; ".join(parts) or None


def read_audio(path: str | Path) -> Audio:
    """Decode the best audio stream of path to 16 kHz mono, each decoded frame at its own timestamp (`_Timeline`);
    an empty `Audio` when there is none.

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
            slots = "avi" in container.format.name.split(",")  # AVI: a frame plays at its slot (dts), FFmpeg's pts are guesses
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks: list[np.ndarray] = []  # copies (to_ndarray stacks), never the frames themselves
            timeline = _Timeline()
            first_video = None
            packets = bad_packets = 0
            bad_seconds = 0.0
            # One demux pass for both streams: the video packets give the clock's origin for free.
            for packet in container.demux(*(s for s in (sound, video) if s is not None)):
                if packet.stream is video:
                    ticks = packet.dts if slots else packet.pts
                    if ticks is not None and not packet.is_discard:
                        time = float(ticks * packet.time_base)
                        first_video = time if first_video is None else min(first_video, time)
                    continue
                packets += packet.size > 0  # the empty packet at the end only flushes the decoder
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    seconds = float(packet.duration * packet.time_base) if packet.duration and packet.time_base else 0.0
                    bad_packets, bad_seconds = bad_packets + 1, bad_seconds + seconds
                    silence = _silence(sound.codec_context, seconds)
                    if silence is not None and packet.pts is not None:
                        silence.pts, silence.time_base = packet.pts, packet.time_base
                    frames = [silence] if silence is not None else []
                for frame in frames:
                    for placed in timeline.place(frame):  # priming the container marks (mp4 edit list) is already dropped
                        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(placed))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))  # the resampler's tail
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: audio cannot be decoded ({first_line(exc)})") from None
    if bad_packets and bad_packets * 2 > packets:
        raise DataError(f"{path}: audio cannot be decoded ({bad_packets} of {packets} packets refused by the decoder)")
    wave = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, dtype=np.float32)
    first_audio = timeline.first or 0.0
    origin = (first_video if video is not None else first_audio) or 0.0  # the frame clock's 0
    holes, overlaps = ([(where - origin, seconds) for where, seconds in spans] for spans in (timeline.holes, timeline.overlaps))
    return Audio(wave=wave, start=first_audio - origin, bad_packets=bad_packets, bad_seconds=bad_seconds, holes=holes, overlaps=overlaps)


class _Timeline:
    """Decoded frames placed at their timestamps: `place(frame)` gives what to append after the sound so far (silence
    first where the frame starts later than that ends, the frame cut where it starts earlier); `first` is the first
    frame's time, `holes` and `overlaps` (where, seconds) on the file's clock. A frame without a timestamp follows on."""

    def __init__(self):
        self.first: float | None = None
        self.end: float | None = None  # where the sound so far ends, seconds
        self.holes: list[tuple[float, float]] = []
        self.overlaps: list[tuple[float, float]] = []

    def place(self, frame) -> list:
        seconds = frame.samples / frame.sample_rate
        if frame.time is None or self.end is None:
            if self.end is None:
                self.first = self.end = frame.time  # None (no timestamps at all) until a frame has one
            self.end = None if self.end is None else self.end + seconds
            return [frame]
        gap = frame.time - self.end
        if abs(gap) <= TOLERANCE:
            self.end += seconds  # on time: no re-anchoring on rounded timestamps, so rounding never adds up
            return [frame]
        if gap > 0:
            self.holes.append((self.end, gap))
            self.end = frame.time + seconds
            return [_zeros(frame.format.name, frame.layout.name, frame.sample_rate, gap), frame]
        cut = min(frame.samples, round(-gap * frame.sample_rate))
        self.overlaps.append((frame.time, cut / frame.sample_rate))
        if cut == frame.samples:
            return []  # wholly inside the sound so far; the end stays
        self.end = frame.time + seconds
        return [_cut(frame, cut)]


def _cut(frame, samples: int):
    """frame without its first samples, as a new AudioFrame of the same format, layout and rate."""
    import av

    array = frame.to_ndarray()  # planar: [channels, n]; packed: [1, n * channels]
    width = 1 if frame.format.is_planar else len(frame.layout.channels)
    cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(array[:, samples * width :]), format=frame.format.name, layout=frame.layout.name)
    cut.sample_rate = frame.sample_rate
    return cut


def _silence(codec_context, seconds: float):
    """An AudioFrame of zeros lasting seconds, in the decoder's own sample format, layout and rate (what the
    resampler was set up with); None when there is nothing to fill or the decoder has not said its format yet."""
    if seconds <= 0 or codec_context.format is None or codec_context.layout is None or not codec_context.sample_rate:
        return None
    return _zeros(codec_context.format.name, codec_context.layout.name, codec_context.sample_rate, seconds)


def _zeros(format: str, layout: str, rate: int, seconds: float):
    """An AudioFrame of zeros lasting seconds (at least one sample) in format, layout and rate."""
    import av

    frame = av.AudioFrame(format=format, layout=layout, samples=max(1, round(seconds * rate)))
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = rate
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

