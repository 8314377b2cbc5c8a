"""A paired bootstrap over videos: is one variant's P_VA above another's on the same held-out videos, or
inside the noise of which videos happen to be held out?

Both variants are scored on the same resamples: videos drawn with replacement (a drawn video brings all its
frames, every track of it; frames are never drawn one by one: neighbouring frames are nearly copies of each
other), P_VA over the drawn videos' frames concatenated, as a split is scored (CCC per dimension over every
valid frame, population variances: `dva.metrics`). Each video is reduced once to its sums per dimension
(valid frames, sum p, sum y, sum p^2, sum y^2, sum p*y), so a resample's figure comes from a weighted sum of
them: 2000 resamples of 400 videos is one [2000, 400] x [400, 12] product per variant. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dva.metrics import ccc, p_va

RESAMPLES, LEVEL, SEED = 2000, 0.95, 0  # fixed: the same table from the same predictions


@dataclass(frozen=True)
class Paired:
    """P_VA(b) - P_VA(a) on every video, and its percentile interval over the resamples."""

    diff: float
    low: float
    high: float
    videos: int
    resamples: int  # the resamples where both figures exist (a draw without spread in a dimension has no CCC)

    @property
    def holds_zero(self) -> bool:
        return bool(self.low <= 0 <= self.high)


def paired_difference(pred_a, pred_b, labels, videos, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> Paired:
    """pred_a, pred_b, labels: [N, 2] over the same frames (labels NaN where invalid); videos: [N], the video of
    each frame (any labels: a video's frames need not be contiguous). The difference is b minus a."""
    pred_a, pred_b, labels = (np.asarray(x, dtype=np.float64) for x in (pred_a, pred_b, labels))
    if not (pred_a.shape == pred_b.shape == labels.shape) or labels.ndim != 2 or labels.shape[1] != 2 or len(videos) != len(labels):
        raise ValueError(f"paired_difference: shapes differ: {pred_a.shape}, {pred_b.shape}, {labels.shape}, {len(videos)} videos")
    diff = figure(pred_b, labels) - figure(pred_a, labels)
    names, index = np.unique(np.asarray(videos), return_inverse=True)
    counts = resample_counts(len(names), resamples, seed)
    draws = resampled_p_va(video_sums(pred_b, labels, index, len(names)), counts) - resampled_p_va(video_sums(pred_a, labels, index, len(names)), counts)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return Paired(diff, float("nan"), float("nan"), len(names), 0)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Paired(diff, float(low), float(high), len(names), int(draws.size))


def figure(pred: np.ndarray, labels: np.ndarray) -> float:
    """P_VA of pred against labels over every frame, exactly as a split is scored."""
    return p_va(ccc(pred[:, 0], labels[:, 0]), ccc(pred[:, 1], labels[:, 1]))


def resample_counts(videos: int, resamples: int, seed: int = SEED) -> np.ndarray:
    """float64 [resamples, videos]: how often each video is drawn in each resample (videos draws with replacement)."""
    draws = np.random.default_rng(seed).integers(0, videos, size=(resamples, videos))
    flat = (draws + videos * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * videos).reshape(resamples, videos).astype(np.float64)


def video_sums(pred: np.ndarray, labels: np.ndarray, index: np.ndarray, videos: int) -> np.ndarray:
    """float64 [videos, 2, 6]: per video (index: each frame's video, 0..videos-1) and dimension, over the frames whose
    label is valid: count, sum p, sum y, sum p^2, sum y^2, sum p*y. Both series are shifted by the labels' mean first
    (CCC does not change when both move together; the sums of squares then stay small)."""
    out = np.zeros((videos, 2, 6))
    for d in range(2):
        valid = ~np.isnan(labels[:, d])
        shift = labels[valid, d].mean() if valid.any() else 0.0
        p, y, at = pred[valid, d] - shift, labels[valid, d] - shift, index[valid]
        for k, weights in enumerate((None, p, y, p * p, y * y, p * y)):
            out[:, d, k] = np.bincount(at, weights, minlength=videos)
    return out


def resampled_p_va(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float64 [resamples]: P_VA of each resample (counts [resamples, videos]) from the videos' sums [videos, 2, 6];
    NaN where a dimension has fewer than two frames or no spread, as `dva.metrics.ccc` gives."""
    totals = np.einsum("rv,vdk->rdk", counts, sums)
    n, sp, sy, spp, syy, spy = np.moveaxis(totals, -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mp, my = sp / n, sy / n
        covariance = spy / n - mp * my
        denominator = (spp / n - mp * mp) + (syy / n - my * my) + (mp - my) ** 2
        values = np.where((n >= 2) & (denominator > 0), 2 * covariance / denominator, np.nan)
    return values.mean(axis=1)
