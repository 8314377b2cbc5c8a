"""A paired bootstrap over videos: is one variant's figure (VA's P_VA, EXPR's macro F1, AU's mean F1) above
another's on the same held-out videos, or inside the noise of which videos happen to be held out?

Both variants are scored on the same resamples: videos drawn with replacement (a drawn video brings all its
frames, every track of it; frames are never drawn one by one: neighbouring frames are nearly copies of each
other), P_VA over the drawn videos' frames concatenated, as a split is scored (CCC per dimension over every
valid frame, population variances: `dva.metrics`). Each video is reduced once to its sums per dimension
(valid frames, sum p, sum y, sum p^2, sum y^2, sum p*y), so a resample's figure comes from a weighted sum of
them: 2000 resamples of 400 videos is one [2000, 400] x [400, 12] product per variant. EXPR and AU likewise: each
video is reduced to its true positives, false positives and false negatives per class (EXPR: of the argmax; AU: of each
unit at 0.5, as `dva fit` scores them), which add up over the drawn videos into each resample's F1s. MTL: each part
reduced as its own task's, P_MTL of a resample the sum of the three recomputed on the drawn videos. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dva.data.tasks import LABEL_WIDTH, MTL_LABELS, MTL_PRED, task_of
from dva.metrics import ccc, f1_binary, f1_per_class, p_va

RESAMPLES, LEVEL, SEED = 2000, 0.95, 0  # fixed: the same table from the same predictions


@dataclass(frozen=True)
class Paired:
    """The figure of b minus a's on every video, and its percentile interval over the resamples."""

    diff: float
    low: float
    high: float
    videos: int
    resamples: int  # the resamples where both figures exist (a draw without spread in a dimension has no CCC)

    @property
    def holds_zero(self) -> bool:
        return bool(self.low <= 0 <= self.high)


def paired_difference(pred_a, pred_b, labels, videos, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> Paired:
    """pred_a, pred_b: [N, width] over the same frames, labels as the trainer holds them (`task_of`: VA [N, 2] and
    predictions [N, 2]; EXPR [N, 1] class indices and the 8 class probabilities; AU [N, 12] and the 12 units'
    probabilities; NaN where not annotated); videos: [N], the video of each frame (any labels: a video's frames need
    not be contiguous). The difference is b minus a."""
    pred_a, pred_b, labels = (np.asarray(x, dtype=np.float64) for x in (pred_a, pred_b, labels))
    if pred_a.shape != pred_b.shape or labels.ndim != 2 or labels.shape[1] not in LABEL_WIDTH.values() or pred_a.shape[0] != len(labels) or len(videos) != len(labels):
        raise ValueError(f"paired_difference: shapes differ: {pred_a.shape}, {pred_b.shape}, {labels.shape}, {len(videos)} videos")
    task = task_of(labels)
    diff = figure(pred_b, labels) - figure(pred_a, labels)
    names, index = np.unique(np.asarray(videos), return_inverse=True)
    counts = resample_counts(len(names), resamples, seed)
    reduce, resampled = {"va": (video_sums, resampled_p_va), "mtl": (mtl_reduced, resampled_p_mtl)}.get(task, (video_counts, resampled_f1))
    draws = resampled(reduce(pred_b, labels, index, len(names)), counts) - resampled(reduce(pred_a, labels, index, len(names)), counts)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return Paired(diff, float("nan"), float("nan"), len(names), 0)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Paired(diff, float(low), float(high), len(names), int(draws.size))


def figure(pred: np.ndarray, labels: np.ndarray) -> float:
    """The task's figure of pred against labels over every frame, exactly as a split is scored: P_VA, EXPR's macro F1
    of the argmax, AU's mean F1 at 0.5 (the last of `scores`)."""
    return list(scores(pred, labels).values())[-1]


def scores(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's figures of pred against labels over every frame: VA ccc_v, ccc_a, p_va; EXPR expr_f1; AU au_f1; MTL
    ccc_v, ccc_a, expr_f1, au_f1 and p_mtl (their sum, P_VA counted once)."""
    task = task_of(labels)
    if task == "mtl":
        (va, y_va), (expr, y_expr), (au, y_au) = mtl_parts(pred, labels)
        parts = {**scores(va, y_va), **scores(expr, y_expr), **scores(au, y_au)}
        return {**{k: parts[k] for k in ("ccc_v", "ccc_a", "expr_f1", "au_f1")}, "p_mtl": parts["p_va"] + parts["expr_f1"] + parts["au_f1"]}
    if task == "expr":
        return {"expr_f1": float(np.mean(f1_per_class(np.argmax(pred, axis=1), labels[:, 0], pred.shape[1])))}
    if task == "au":
        return {"au_f1": float(np.mean([f1_binary(pred[:, unit] >= 0.5, labels[:, unit]) for unit in range(labels.shape[1])]))}
    v, a = ccc(pred[:, 0], labels[:, 0]), ccc(pred[:, 1], labels[:, 1])
    return {"ccc_v": v, "ccc_a": a, "p_va": p_va(v, a)}


def mtl_parts(pred: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """An MTL prediction [N, 22] and labels [N, 15] as its three tasks' (pred, labels): VA, EXPR, AU."""

    return [(pred[:, MTL_PRED[task]], labels[:, MTL_LABELS[task]]) for task in ("va", "expr", "au")]


def mtl_reduced(pred: np.ndarray, labels: np.ndarray, index: np.ndarray, videos: int) -> tuple[np.ndarray, ...]:
    """MTL's per-video statistics: VA's `video_sums`, EXPR's and AU's `video_counts`."""
    (va, y_va), (expr, y_expr), (au, y_au) = mtl_parts(pred, labels)
    return video_sums(va, y_va, index, videos), video_counts(expr, y_expr, index, videos), video_counts(au, y_au, index, videos)


def resampled_p_mtl(reduced: tuple[np.ndarray, ...], counts: np.ndarray) -> np.ndarray:
    """float64 [resamples]: P_MTL of each resample, the sum of its P_VA, EXPR F1 and AU F1 on the drawn videos."""
    sums, expr, au = reduced
    return resampled_p_va(sums, counts) + resampled_f1(expr, counts) + resampled_f1(au, counts)


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


def video_counts(pred: np.ndarray, labels: np.ndarray, index: np.ndarray, videos: int) -> np.ndarray:
    """float64 [videos, classes, 3]: per video (index: each frame's video) and class (EXPR: the argmax of pred
    one-vs-rest; AU: each unit with pred >= 0.5), over the frames whose label is annotated: TP, FP, FN."""
    if task_of(labels) == "expr":
        valid = ~np.isnan(labels[:, 0])
        classes = np.arange(pred.shape[1])
        guess, truth = np.argmax(pred[valid], axis=1)[:, None] == classes, labels[valid, 0][:, None] == classes
    else:
        valid = ~np.isnan(labels).any(axis=1)  # a frame is annotated for every unit or for none
        guess, truth = pred[valid] >= 0.5, labels[valid] > 0.5
    out = np.zeros((videos, guess.shape[1], 3))
    at = index[valid]
    for k, hit in enumerate((guess & truth, guess & ~truth, ~guess & truth)):
        for c in range(hit.shape[1]):
            out[:, c, k] = np.bincount(at, hit[:, c].astype(np.float64), minlength=videos)
    return out


def resampled_f1(counts_per_video: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float64 [resamples]: the mean over classes of F1 = 2 TP / (2 TP + FP + FN) (0 where a class is neither annotated
    nor predicted, as `dva.metrics.f1_binary`) of each resample, from the videos' counts [videos, classes, 3]."""
    tp, fp, fn = np.moveaxis(np.einsum("rv,vck->rck", counts, counts_per_video), -1, 0)
    denominator = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 0.0).mean(axis=1)
