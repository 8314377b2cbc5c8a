"""Tracks of loaded splits, taken apart and put together: the pool of train and val that folds are cut
from, the held-out part of a fold, and which rows a set of tracks covers.

Generic over `SplitData`'s per-frame tensors (every tensor field whose first dimension is the frame
count), so a split with other feature arrays is handled the same way.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import torch

from dva.trainer.data import SplitData

_SUBJECT = re.compile(r"_(left|right)$")


def _per_frame(data: SplitData) -> list[str]:
    return [f.name for f in dataclasses.fields(data) if isinstance(getattr(data, f.name), torch.Tensor) and getattr(data, f.name).shape[:1] == (data.n_frames,)]


def concat_splits(*splits: SplitData) -> SplitData:
    """One SplitData holding every track of these splits in order (a copy), named like "train+val"; each
    track's attrs gain "split": the split it came from."""
    first = splits[0]
    lengths = np.concatenate([np.diff(s.offsets) for s in splits])
    values = {name: torch.cat([getattr(s, name) for s in splits]) for name in _per_frame(first)}
    left_out = {track: reason for s in splits for track, reason in s.left_out.items()}
    return dataclasses.replace(
        first, split="+".join(s.split for s in splits), tracks=[t for s in splits for t in s.tracks],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), attrs=[{**a, "split": a.get("split", s.split)} for s in splits for a in s.attrs],
        left_out=left_out, **values,
    )


def select_tracks(data: SplitData, chosen: list[int] | np.ndarray, split: str | None = None) -> SplitData:
    """The chosen tracks (indices into data.tracks, in this order) as a SplitData of their own (a copy)."""
    chosen = [int(i) for i in chosen]
    rows = torch.from_numpy(track_rows(data.offsets, chosen, ordered=True))
    lengths = np.diff(data.offsets)[chosen] if chosen else np.zeros(0, np.int64)
    values = {name: getattr(data, name)[rows.to(getattr(data, name).device)] for name in _per_frame(data)}
    return dataclasses.replace(
        data, split=split or data.split, tracks=[data.tracks[i] for i in chosen], attrs=[data.attrs[i] for i in chosen],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), left_out={}, **values,
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


def video_of(track: str, attrs: dict) -> str:
    """The video a track belongs to: `NAME_left` and `NAME_right` share one (the store's `video` attr, or
    the track name without its subject)."""
    return attrs.get("video") or _SUBJECT.sub("", track)
