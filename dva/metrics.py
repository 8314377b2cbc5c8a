"""ABAW's metrics: the concordance correlation coefficient (CCC) of VA, for numpy arrays and torch tensors; F1 of EXPR
(macro over eight classes) and AU (per unit, their mean); P_VA and P_MTL. Exported by `dva` (`dva.ccc`, `dva.expr_f1`, ...)."""

from __future__ import annotations

import numpy as np

from dva.data.tasks import EXPR_CLASSES


def ccc(pred, target) -> float:
    """CCC of two 1-D series (numpy arrays or torch tensors), ignoring positions where target is NaN.

    Uses population (biased) variances, as ABAW and audmetric do (torchmetrics' uses sample variances: a
    difference of order 1/N). Returns NaN when fewer than two valid positions remain.

    >>> dva.ccc([0.1, 0.4, 0.3], [0.2, 0.5, 0.2])
    0.7272...
    """
    pred = _to_numpy(pred).astype(np.float64).ravel()
    target = _to_numpy(target).astype(np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"ccc: shapes differ, {pred.shape} vs {target.shape}")
    valid = ~np.isnan(target)
    pred, target = pred[valid], target[valid]
    if pred.size < 2:
        return float("nan")
    mean_p, mean_t = pred.mean(), target.mean()
    covariance = ((pred - mean_p) * (target - mean_t)).mean()
    denominator = pred.var() + target.var() + (mean_p - mean_t) ** 2
    if denominator == 0:
        return float("nan")
    return float(2 * covariance / denominator)


def p_va(ccc_valence: float, ccc_arousal: float) -> float:
    """ABAW's VA score: the mean of the two CCCs.

    >>> dva.p_va(0.5, 0.7)
    0.6
    """
    return (ccc_valence + ccc_arousal) / 2


def masked_ccc(pred, target, mask, eps: float = 1e-8):
    """Differentiable CCC over the positions where mask is True (torch tensors of one shape).

    All masked-in positions are pooled into one series, as ABAW pools all frames.
    Returns a 0-d tensor; 0 when fewer than two positions are valid, decided on the device (no `if` on a tensor:
    that would wait for the device twice per training step).
    """
    import torch

    mask = mask.to(pred.dtype)
    count = mask.sum()
    divisor = count.clamp_min(1)  # with 0 or 1 positions every term below is finite, and the result is replaced by 0
    target = torch.nan_to_num(target)
    mean_p = (pred * mask).sum() / divisor
    mean_t = (target * mask).sum() / divisor
    dp, dt = (pred - mean_p) * mask, (target - mean_t) * mask
    var_p, var_t = (dp * dp).sum() / divisor, (dt * dt).sum() / divisor
    covariance = (dp * dt).sum() / divisor
    value = 2 * covariance / (var_p + var_t + (mean_p - mean_t) ** 2 + eps)
    return torch.where(count >= 2, value, pred.sum() * 0)


def _to_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):
        return values.detach().float().cpu().numpy()
    return np.asarray(values)


def f1_binary(pred, target) -> float:
    """F1 of 0/1 predictions against 0/1 targets (1-D, NaN or -1 in target: not annotated, ignored):
    2 TP / (2 TP + FP + FN); 0 when there is no positive in either (sklearn's zero_division=0)."""
    pred = np.asarray(_to_numpy(pred), dtype=np.float64).ravel()
    target = np.asarray(_to_numpy(target), dtype=np.float64).ravel()
    valid = ~np.isnan(target) & (target >= 0)
    pred, target = pred[valid] > 0.5, target[valid] > 0.5
    tp = float(np.sum(pred & target))
    denominator = 2 * tp + float(np.sum(pred & ~target)) + float(np.sum(~pred & target))
    return 2 * tp / denominator if denominator else 0.0


def f1_per_class(pred, target, n_classes: int) -> list[float]:
    """One-vs-rest F1 of each class 0..n_classes-1 of class indices pred against target (1-D; NaN or -1 in target:
    not annotated, ignored), as ABAW computes EXPR's."""
    pred = np.asarray(_to_numpy(pred), dtype=np.float64).ravel()
    target = np.asarray(_to_numpy(target), dtype=np.float64).ravel()
    valid = ~np.isnan(target) & (target >= 0)
    return [f1_binary((pred[valid] == c).astype(float), (target[valid] == c).astype(float)) for c in range(n_classes)]


def macro_f1(pred, target, n_classes: int) -> float:
    """EXPR's figure: the mean of the per-class F1s over all n_classes classes (a class never annotated nor predicted
    counts 0, so the figure is always over the same classes)."""
    return float(np.mean(f1_per_class(pred, target, n_classes)))


def expr_f1(pred, target) -> float:
    """ABAW's EXPR figure: the macro F1 over the eight expressions of pred (class indices [N], or scores [N, 8]: their
    argmax) against target (class indices [N]; -1 or NaN: not annotated, ignored).

    >>> dva.expr_f1([0, 1, 1, 7], [0, 1, 2, 7])  # classes 0, 1 and 7 right, 2 missed; the four never seen count 0
    0.3333...
    """
    pred = _to_numpy(pred)
    if pred.ndim == 2:
        pred = np.argmax(pred, axis=1)
    return macro_f1(pred, target, len(EXPR_CLASSES))


def au_f1(pred, target, thresholds=None) -> float:
    """ABAW's AU figure: the mean over the twelve action units of each unit's F1, pred [N, 12] (0/1, or probabilities
    cut at thresholds: one per unit or one for all, default 0.5) against target [N, 12] (0/1; -1 or NaN: not annotated).

    >>> dva.au_f1(np.eye(12), np.eye(12))
    1.0
    """
    pred, target = np.asarray(_to_numpy(pred), np.float64), np.asarray(_to_numpy(target), np.float64)
    cut = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, np.float64), (pred.shape[1],))
    return float(np.mean([f1_binary(pred[:, unit] >= cut[unit], target[:, unit]) for unit in range(pred.shape[1])]))


def p_mtl(ccc_valence: float, ccc_arousal: float, expr: float, au: float) -> float:
    """The multi-task challenge's figure: P_MTL = (CCC_V + CCC_A) / 2 + EXPR's macro F1 + AU's mean F1.

    >>> dva.p_mtl(0.6, 0.8, 0.3, 0.5)
    1.5
    """
    return p_va(ccc_valence, ccc_arousal) + expr + au
