"""K folds over the tracks of train and val together, cut by video (a video's `_left`/`_right` tracks stay
in one fold), the same for the same seed; the epoch of each fold's out-of-fold predictions chosen without that
fold; and the out-of-fold predictions put back together.

Pure functions: `dva.trainer.fit.train_folds` trains the folds, `dva.trainer.results.run_dir.write_folds` writes them.
"""

from __future__ import annotations

import numpy as np

from dva.errors import ConfigError
from dva.data.layout import video_of

FOLDS_FILE = "folds.json"


def assign_folds(tracks: list[str], attrs: list[dict], lengths, k: int, seed: int) -> list[int]:
    """The fold (0..k-1) of every track. Videos are shuffled by the seed, then each goes, with all its
    tracks, to the fold holding the fewest frames so far (ties: the lowest fold), so folds are balanced
    in frames as well as deterministic."""
    if k < 2:
        raise ConfigError(f"--folds must be at least 2, not {k}")
    videos: dict[str, list[int]] = {}
    for i, (track, track_attrs) in enumerate(zip(tracks, attrs)):
        videos.setdefault(video_of(track, track_attrs.get("video")), []).append(i)
    if k > len(videos):
        raise ConfigError(f"--folds {k}: train and val hold only {len(videos)} videos; use at most {len(videos)} folds")
    names = sorted(videos)
    order = np.random.default_rng(seed).permutation(len(names))
    load = np.zeros(k, dtype=np.int64)
    fold_of = [-1] * len(tracks)
    for position in order:
        members = videos[names[position]]
        fold = int(np.argmin(load))
        load[fold] += int(sum(int(lengths[i]) for i in members))
        for i in members:
            fold_of[i] = fold
    return fold_of


def fold_members(fold_of: list[int], k: int) -> list[list[int]]:
    """Track indices of each fold, in track order."""
    return [fold_tracks(fold_of, fold) for fold in range(k)]


def fold_tracks(fold_of: list[int], fold: int) -> list[int]:
    """Track indices of one fold, in track order."""
    return [i for i, f in enumerate(fold_of) if f == fold]


def unselected_epochs(scores: list[list[float]]) -> list[int]:
    """The epoch (1-based) each fold's out-of-fold predictions come from, chosen without that fold: scores[j][e - 1] is
    fold j's figure on its own held-out tracks after epoch e. Fold k takes the epoch whose mean figure over the other
    folds is best (NaN counts as worst; ties: the earliest), among the epochs every other fold reached; a fold that
    stopped earlier (patience) takes its last. Only where it stopped rests on the fold's own tracks."""
    chosen = []
    for k, own in enumerate(scores):
        others = [s for j, s in enumerate(scores) if j != k]
        reached = min(len(s) for s in others)
        mean = np.array([np.mean([s[e] for s in others]) for e in range(reached)], dtype=np.float64)
        best = int(np.argmax(np.where(np.isnan(mean), -np.inf, mean))) + 1 if reached else 1
        chosen.append(min(best, len(own)))
    return chosen
