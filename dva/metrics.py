"""Concordance correlation coefficient (CCC), ABAW's metric, for numpy arrays and torch tensors."""

from __future__ import annotations

import numpy as np


def ccc(pred, target) -> float:
    """CCC of two 1-D series (numpy arrays or torch tensors), ignoring positions where target is NaN.

    Uses population (biased) variances, as ABAW and torchmetrics do. Returns NaN when fewer
    than two valid positions remain.
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
    """ABAW's VA score: the mean of the two CCCs."""
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
