"""Tracks of loaded splits, taken apart and put together: the pool of train and val that folds are cut
from, the held-out part of a fold, views of a range of tracks, and which rows a set of tracks covers.

Generic over `SplitData`'s per-frame tensors (every tensor field whose first dimension is the frame
count), so a split with other feature arrays is handled the same way; audio sets, held at their own
rate, are taken apart by their own row offsets.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dva.trainer.loading.audio_rows import AudioRows
from dva.trainer.loading.windows import SplitData

def _per_frame(data: SplitData) -> list[str]:
    return [f.name for f in dataclasses.fields(data) if isinstance(getattr(data, f.name), torch.Tensor) and getattr(data, f.name).shape[:1] == (data.n_frames,)]


def _offsets(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def concat_splits(*splits: SplitData) -> SplitData:
    """One SplitData holding every track of these splits in order (a copy), named like "train+val"; each
    track's attrs gain "split": the split it came from."""
    first = splits[0]
    lengths = np.concatenate([np.diff(s.offsets) for s in splits])
    values = {name: torch.cat([getattr(s, name) for s in splits]) for name in _per_frame(first)}
    left_out = {track: reason for s in splits for track, reason in s.left_out.items()}
    audio = [_concat_audio([s.audio[i] for s in splits]) for i in range(len(first.audio))]
    return dataclasses.replace(
        first, split="+".join(s.split for s in splits), tracks=[t for s in splits for t in s.tracks],
        offsets=_offsets(lengths), attrs=[{**a, "split": a.get("split", s.split)} for s in splits for a in s.attrs],
        left_out=left_out, audio=audio, **values,
    )


def select_tracks(data: SplitData, chosen: list[int] | np.ndarray, split: str | None = None) -> SplitData:
    """The chosen tracks (indices into data.tracks, in this order) as a SplitData of their own (a copy)."""
    chosen = [int(i) for i in chosen]
    rows = torch.from_numpy(track_rows(data.offsets, chosen, ordered=True))
    lengths = np.diff(data.offsets)[chosen] if chosen else np.zeros(0, np.int64)
    values = {name: getattr(data, name)[rows.to(getattr(data, name).device)] for name in _per_frame(data)}
    return dataclasses.replace(
        data, split=split or data.split, tracks=[data.tracks[i] for i in chosen], attrs=[data.attrs[i] for i in chosen],
        offsets=_offsets(lengths), left_out={}, audio=[_select_audio(a, chosen, data.offsets) for a in data.audio], **values,
    )


def track_span(data: SplitData, first: int, last: int, split: str, attrs: list[dict], left_out: dict) -> SplitData:
    """Tracks first..last-1 of data as a SplitData that shares its memory (views, no copy of the features)."""
    frames = slice(int(data.offsets[first]), int(data.offsets[last]))
    values = {name: getattr(data, name)[frames] for name in _per_frame(data)}
    return dataclasses.replace(
        data, split=split, tracks=data.tracks[first:last], attrs=attrs, offsets=data.offsets[first : last + 1] - data.offsets[first],
        left_out=left_out, audio=[_span_audio(a, first, last, data.offsets) for a in data.audio], **values,
    )


def track_rows(offsets: np.ndarray, chosen, ordered: bool = False) -> np.ndarray:
    """The rows of the chosen tracks: a bool mask [N] or, ordered, their row indices int64 in track order."""
    parts = [np.arange(offsets[i], offsets[i + 1]) for i in chosen]
    rows = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    if ordered:
        return rows
    mask = np.zeros(int(offsets[-1]), dtype=bool)
    mask[rows] = True
    return mask


# Audio sets: the frames' row indices are rebased onto the new rows. A frame of a track without sound points
# at some valid row (clamped): it is masked, so its value is never read.

def _rebased(audio: AudioRows, data: torch.Tensor, frames, shift) -> dict:
    last = data.shape[0] - 1
    rebase = lambda t: None if t is None else (t[frames] + shift).clamp(0, last)  # noqa: E731
    return {"left": rebase(audio.left), "right": rebase(audio.right), "weight": None if audio.weight is None else audio.weight[frames]}


def _select_audio(audio: AudioRows, chosen: list[int], frame_offsets: np.ndarray) -> AudioRows:
    rows = torch.from_numpy(track_rows(audio.offsets, chosen, ordered=True)).to(audio.data.device)
    data = torch.cat([audio.data[rows], audio.data.new_zeros(1, audio.dim)])
    offsets = _offsets(np.diff(audio.offsets)[chosen] if chosen else np.zeros(0, np.int64))
    frames = torch.from_numpy(track_rows(frame_offsets, chosen, ordered=True)).to(audio.left.device)
    shift = np.repeat(offsets[:-1] - audio.offsets[chosen], np.diff(frame_offsets)[chosen]) if chosen else np.zeros(0, np.int64)
    return AudioRows(data, offsets, **_rebased(audio, data, frames, torch.from_numpy(shift).to(audio.left.device)))


def _span_audio(audio: AudioRows, first: int, last: int, frame_offsets: np.ndarray) -> AudioRows:
    begin, end = int(audio.offsets[first]), int(audio.offsets[last])
    data = audio.data[begin : end + 1]  # a view, with the one row past the span that every AudioRows has
    frames = slice(int(frame_offsets[first]), int(frame_offsets[last]))
    return AudioRows(data, audio.offsets[first : last + 1] - begin, **_rebased(audio, data, frames, -begin))


def _concat_audio(parts: list[AudioRows]) -> AudioRows:
    bases = np.cumsum([0] + [int(p.offsets[-1]) for p in parts])[:-1]
    data = torch.cat([p.data[: int(p.offsets[-1])] for p in parts] + [parts[0].data.new_zeros(1, parts[0].dim)])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + base for p, base in zip(parts, bases)]).astype(np.int64)
    moved = [_rebased(p, data, slice(None), int(base)) for p, base in zip(parts, bases)]
    join = lambda name: None if moved[0][name] is None else torch.cat([m[name] for m in moved])  # noqa: E731
    return AudioRows(data, offsets, join("left"), join("right"), join("weight"))
