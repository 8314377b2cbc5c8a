"""An audio feature set held at its own rate, aligned to frames by index when a batch is gathered.

Expanding 10 Hz audio to 30 fps frames triples its memory; instead each frame keeps the row (nearest) or
the two rows and a weight (linear) it reads, and `at` makes the frame-rate values of a batch only. The
values equal `align_audio`'s, rounded to float16 as they were when the expanded copy was stored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from dva.trainer.settings import check_choice


def align_rows(audio_time: np.ndarray, frame_time: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """For each frame, the audio rows it reads: (left int64 [T], right int64 [T] or None, weight float32 [T]
    or None, mask bool [T]). nearest: left is the nearest row; linear: the value is (1 - w) * left + w * right.
    Frames before the first or after the last audio step by more than one step are masked; without
    audio rows every frame is masked (left 0)."""
    check_choice("audio_align", how)
    frames = frame_time.shape[0]
    if audio_time.shape[0] == 0:
        zeros = np.zeros(frames, dtype=np.int64)
        return zeros, (zeros if how == "linear" else None), (np.zeros(frames, np.float32) if how == "linear" else None), np.zeros(frames, dtype=bool)
    step = float(np.median(np.diff(audio_time))) if audio_time.shape[0] > 1 else 1.0
    mask = (frame_time >= audio_time[0] - step) & (frame_time <= audio_time[-1] + step)
    right = np.clip(np.searchsorted(audio_time, frame_time), 0, audio_time.shape[0] - 1)
    left = np.clip(right - 1, 0, audio_time.shape[0] - 1)
    if how == "nearest":
        pick = np.where(np.abs(audio_time[left] - frame_time) <= np.abs(audio_time[right] - frame_time), left, right)
        return pick.astype(np.int64), None, None, mask
    span = audio_time[right] - audio_time[left]
    weight = np.where(span > 0, (frame_time - audio_time[left]) / np.where(span > 0, span, 1), 0.0).clip(0, 1)
    return left.astype(np.int64), right.astype(np.int64), weight.astype(np.float32), mask


@dataclass
class AudioRows:
    """One audio feature set of a split: every track's rows, and which rows each frame reads.

    `data` has one spare row past the last track's (never read unmasked) so that a split whose tracks
    have no sound still indexes; `left`/`right` are global row indices into `data`."""

    data: torch.Tensor  # float16 [K + 1, D]
    offsets: np.ndarray  # int64 [n_tracks + 1]: the rows of track i are data[offsets[i]:offsets[i + 1]]
    left: torch.Tensor  # int64 [N]
    right: torch.Tensor | None = None  # int64 [N], linear only
    weight: torch.Tensor | None = None  # float32 [N], linear only

    @classmethod
    def per_frame(cls, values: torch.Tensor, offsets: np.ndarray) -> "AudioRows":
        """Audio already at the frame rate ([N, D]): frame i reads row i."""
        data = torch.cat([values.half(), torch.zeros(1, values.shape[1], dtype=torch.float16)])
        return cls(data, np.asarray(offsets, dtype=np.int64).copy(), torch.arange(values.shape[0]))

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    def at(self, index: torch.Tensor) -> torch.Tensor:
        """float32 [*index.shape, D]: the values of the frames at index (global frame indices)."""
        if self.weight is None:
            return self.data[self.left[index]].float()
        weight = self.weight[index][..., None]
        # float16 in between: the values a stored frame-rate copy held, so figures do not move
        return ((1 - weight) * self.data[self.left[index]].float() + weight * self.data[self.right[index]].float()).half().float()

    def to(self, device) -> "AudioRows":
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return dataclasses.replace(self, data=move(self.data), left=move(self.left), right=move(self.right), weight=move(self.weight))
