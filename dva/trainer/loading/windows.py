"""Features from the store as contiguous tensors on the training device, and windows as index gathers.

A split is held as one tensor per array, all tracks concatenated, plus per-track offsets, in the form the
store holds them: float16, each audio set at its own rate (aligned to frames when a batch is gathered).
Arrays are allocated once at their final size and filled track by track, so loading never holds a second
copy. A window is a row of global frame indices; a batch is `tensor[indices]`, no per-sample Python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from dva.errors import ConfigError
from dva.trainer.loading.audio_rows import AudioRows, align_rows

CHUNK = 16384  # rows per step when computing statistics: bounds the float64 temporaries (about 200 MB for 768-d audio)


@dataclass
class SplitData:
    """One split, every track concatenated along time (N frames in all): what `dva.read_split` returns and the trainer
    trains on. Track i's frames are rows offsets[i]:offsets[i + 1] (`track_slice(i)`) of every per-frame tensor.

    >>> val = dva.read_split("stores", "val")
    >>> val.tracks[:2], val.visual.shape, val.labels[val.track_slice(0)][:2]
    (['video3', 'video7'], torch.Size([300, 32]), tensor([[ 0.1200, -0.3400], [ 0.1300, -0.3300]]))
    """

    split: str
    tracks: list[str]
    offsets: np.ndarray  # int64 [n_tracks + 1]
    visual: torch.Tensor  # float16 [N, Dv] (as stored: Aff-Wild2's 2.8M frames stay within one GPU)
    visual_mask: torch.Tensor  # bool [N]
    audio: list[AudioRows]  # one per chosen audio set, at its own rate (a per-frame tensor [N, Da] is taken as one set)
    audio_mask: torch.Tensor  # bool [N]
    labels: torch.Tensor  # float32 [N, 2], NaN where invalid or unlabelled
    label_mask: torch.Tensor  # bool [N]
    attrs: list[dict]  # per-track store attrs
    left_out: dict[str, str] = dataclasses.field(default_factory=dict)  # track -> why it is not here (failed: ..., incomplete)
    source: dict = dataclasses.field(default_factory=dict)  # where `read_split` read it: store, split, task, sets, audio_align

    def __post_init__(self):
        if isinstance(self.audio, torch.Tensor):
            self.audio = [AudioRows.per_frame(self.audio, self.offsets)] if self.audio.shape[1] else []

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    @property
    def visual_dim(self) -> int:
        return int(self.visual.shape[1])

    @property
    def audio_dim(self) -> int:
        return sum(a.dim for a in self.audio)

    def audio_at(self, index: torch.Tensor) -> torch.Tensor:
        """float32 [*index.shape, Da]: every audio set's values at these frames, concatenated."""
        if not self.audio:
            return torch.zeros(*index.shape, 0, device=index.device)
        parts = [a.at(index) for a in self.audio]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def to(self, device) -> "SplitData":
        for name in ("visual", "visual_mask", "audio_mask", "labels", "label_mask"):
            setattr(self, name, getattr(self, name).to(device))
        self.audio = [a.to(device) for a in self.audio]
        return self

    def track_slice(self, index: int) -> slice:
        return slice(int(self.offsets[index]), int(self.offsets[index + 1]))


def align_audio(audio: np.ndarray, audio_time: np.ndarray, frame_time: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Audio rows [K, Da] at audio_time -> float32 [T, Da] at frame_time, and a mask of frames that have sound
    (see `align_rows`; the trainer gathers the same values per batch instead of holding them)."""
    left, right, weight, mask = align_rows(audio_time, frame_time, how)
    if audio.shape[0] == 0:
        return np.zeros((frame_time.shape[0], audio.shape[1]), dtype=np.float32), mask
    audio = audio.astype(np.float32)
    if weight is None:
        return audio[left], mask
    return (1 - weight)[:, None] * audio[left] + weight[:, None] * audio[right], mask


@dataclass
class Normaliser:
    """Per-feature mean/std from the train split's valid rows; applied to every split (as `dva fit` does).

    >>> normaliser = dva.Normaliser.fit(dva.read_split("stores", "train"))
    >>> windows = dva.WindowDataset(dva.read_split("stores", "val"), normaliser=normaliser)
    """

    visual_mean: torch.Tensor
    visual_std: torch.Tensor
    audio_mean: torch.Tensor
    audio_std: torch.Tensor

    @classmethod
    def fit(cls, data: SplitData) -> "Normaliser":
        def stats(rows_of, mask):
            """Mean and std over the valid rows, accumulated in float64 chunks (no float32 copy of the split), on
            the device the features are on; the result is on the CPU."""
            total, squares, count = None, None, 0
            for start in range(0, data.n_frames, CHUNK):
                rows = rows_of(start, min(start + CHUNK, data.n_frames))[mask[start : start + CHUNK]].double()
                total = rows.sum(0) if total is None else total + rows.sum(0)
                squares = (rows * rows).sum(0) if squares is None else squares + (rows * rows).sum(0)
                count += rows.shape[0]
            dim = rows_of(0, 0).shape[1]
            if count < 2:
                return torch.zeros(dim), torch.ones(dim)
            mean = total / count
            return mean.float().cpu(), (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-4).float().cpu()

        frames = lambda start, end: torch.arange(start, end, device=data.visual.device)  # noqa: E731
        visual_mean, visual_std = stats(lambda start, end: data.visual[start:end], data.visual_mask)
        audio_mean, audio_std = stats(lambda start, end: data.audio_at(frames(start, end)), data.audio_mask)
        return cls(visual_mean, visual_std, audio_mean, audio_std)

    @classmethod
    def from_state(cls, state: dict) -> "Normaliser":
        return cls(**state)

    def state(self) -> dict:
        return {k: v.cpu() for k, v in vars(self).items()}


def window_index(offsets: np.ndarray, seq_len: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows over every track: (global frame indices int64 [W, seq_len], in-track mask bool [W, seq_len]).

    Windows start every `stride` frames; the last one is aligned to the track's end so every
    frame is covered; a track shorter than seq_len gets one window padded past its end
    (padding indices repeat the last frame and are masked).
    """
    if seq_len < 1 or stride < 1:
        raise ConfigError("--seq-len and --stride must be at least 1")
    starts, ends = [], []
    for begin, end in zip(offsets[:-1], offsets[1:]):
        length = int(end - begin)
        if length == 0:
            continue
        track_starts = list(range(0, max(length - seq_len, 0) + 1, stride))
        if track_starts[-1] + seq_len < length:
            track_starts.append(length - seq_len)
        starts += [begin + s for s in track_starts]
        ends += [end] * len(track_starts)
    starts_t = torch.tensor(starts, dtype=torch.int64)[:, None]
    ends_t = torch.tensor(ends, dtype=torch.int64)[:, None]
    index = starts_t + torch.arange(seq_len)[None, :]
    inside = index < ends_t
    return torch.minimum(index, ends_t - 1), inside


def gather(data: SplitData, index: torch.Tensor, inside: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch from window indices: every array as [B, L, ...]; masks also false outside the track."""
    return {
        "visual": data.visual[index].float(),
        "visual_mask": data.visual_mask[index] & inside,
        "audio": data.audio_at(index),
        "audio_mask": data.audio_mask[index] & inside,
        "labels": data.labels[index],
        "label_mask": data.label_mask[index] & inside,
    }


class FrameStitcher:
    """Per-window predictions back to per-frame ones: each frame's weighted mean over the windows that cover it (weight:
    position [L] along the window, `evaluate.stitch_weights`, times the in-track mask); a frame no window covers is 0.
    Fed a batch of windows at a time (`add`), so a pass over a split never holds every window's predictions."""

    def __init__(self, n_frames: int, width: int, position: torch.Tensor):
        self.position = position
        self.total = torch.zeros(n_frames, width, device=position.device)
        self.count = torch.zeros(n_frames, 1, device=position.device)

    def add(self, rows: torch.Tensor, valid: torch.Tensor, values: torch.Tensor) -> None:
        """rows: global frame indices [B, L], valid: bool [B, L], values: float [B, L, width] (L may be 1: one frame each)."""
        weights = (valid.float() * self.position)[..., None]
        self.total.index_add_(0, rows.reshape(-1), (values * weights).reshape(-1, self.total.shape[1]))
        self.count.index_add_(0, rows.reshape(-1), weights.reshape(-1, 1))

    def frames(self) -> np.ndarray:
        """float32 [n_frames, width] on the CPU (hann weights sum to < 1 at a track's ends: a mean, not a sum)."""
        return (self.total / torch.where(self.count > 0, self.count, torch.ones_like(self.count))).cpu().numpy()


def past_windows(data: SplitData, seconds: float, frames: int, stride_seconds: float | None = None,
                 crops: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One window per target frame, from the past only, as the authors' released code builds them: (global frame indices
    int64 [W, frames], the target frame of each [W]). Times are frame / fps (dataset.py:296), a window is the frames of
    the last `seconds` up to the target, (t - seconds, t] (dataset.py:308-310), and `frames` are sampled evenly among
    the ones with a face (crops; visual_mask), the k-th at round(k (n - 1) / (frames - 1)) (dataset.py:366-368).

    stride_seconds None (evaluation): every frame a target (inference_test.py:206-212); fewer than `frames` crops so far:
    all of them, the first repeated in front (inference_test.py:244-248); fewer in the window: the window's, padded
    likewise (inference_test.py:261-264); no crop in the window: those up to the target (inference_test.py:258-259); none at all so far (or crops False): the window's frames themselves, the visual
    stream masked, the audio stream read. Otherwise (training): targets from the first time >= seconds on, the next
    one stride_seconds later (dataset.py:296-305), only windows with a crop (dataset.py:324) when crops is True.
    """
    indices, targets = [], []
    steps = np.arange(frames, dtype=np.float64)
    for i in range(len(data.tracks)):
        begin, end = int(data.offsets[i]), int(data.offsets[i + 1])
        length = end - begin
        if length == 0:
            continue
        fps = float(data.attrs[i].get("fps") or 0) or 30.0
        span = int(round(seconds * fps))  # frames in a window (dataset.py:308)
        position = np.arange(length)
        has_crop = data.visual_mask[begin:end].cpu().numpy() if crops else np.zeros(length, dtype=bool)
        crop_at = np.flatnonzero(has_crop)
        chosen = position
        if stride_seconds is not None:
            # candidates: annotated frames whose window starts at or after the track's start (dataset.py:296-301, 312)
            # and, with crops, holds one (dataset.py:324); then one every stride_seconds (dataset.py:303-305, 327)
            labelled = data.label_mask[begin:end].cpu().numpy()
            candidate = position[(position / fps >= seconds) & (position >= span - 1) & labelled]
            if crops:
                within = np.searchsorted(crop_at, candidate, side="right") - np.searchsorted(crop_at, candidate - span + 1)
                candidate = candidate[within > 0]
            kept, last = [], -1e9
            for t in candidate:
                if t / fps - last >= stride_seconds:
                    kept.append(t)
                    last = t / fps
            chosen = np.asarray(kept, dtype=np.int64)
        start = np.maximum(chosen - span + 1, 0)
        lo, hi = np.searchsorted(crop_at, start), np.searchsorted(crop_at, chosen, side="right")
        lo = np.where(hi > lo, lo, 0)  # no crop in the window (evaluation): the crops up to the target
        if stride_seconds is None:
            lo = np.where(hi < frames, 0, lo)  # fewer than `frames` crops so far: all of them (inference_test.py:244-248)
        n = hi - lo
        fallback = n == 0  # no crop at all yet: sample the window's frames themselves
        pool_lo = np.where(fallback, start, lo)
        pool_n = np.where(fallback, chosen - start + 1, n)
        pick = np.rint(steps[None, :] * ((pool_n - 1) / max(frames - 1, 1))[:, None]).astype(np.int64)
        if frames > 1:
            pick[:, -1] = pool_n - 1  # np.linspace ends exactly at n - 1
        if stride_seconds is None:  # fewer than `frames`: every one, the first repeated in front
            short = pool_n < frames
            padded = np.maximum(steps[None, :].astype(np.int64) - (frames - pool_n)[:, None], 0)
            pick = np.where(short[:, None], padded, pick)
        source = np.where(fallback[:, None], pool_lo[:, None] + pick, crop_at[np.minimum(pool_lo[:, None] + pick, max(len(crop_at) - 1, 0))] if len(crop_at) else pool_lo[:, None] + pick)
        indices.append(begin + source)
        targets.append(begin + chosen)
    if not indices:
        return torch.zeros(0, frames, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.from_numpy(np.concatenate(indices)).long(), torch.from_numpy(np.concatenate(targets)).long()
