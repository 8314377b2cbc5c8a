"""Training losses: (1 - CCC) per VA dimension (optionally weighted, plus a weighted MSE), and KL from the region
soft labels to the prompt logits."""

from __future__ import annotations

import torch

from dva.metrics import masked_ccc  # the one differentiable CCC; re-exported for the trainer
from dva.trainer.model.soft_labels import hard_labels, soft_labels

__all__ = ["masked_ccc", "masked_mse", "va_loss", "prompt_kl", "loss"]


def va_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, weights: tuple[float, float] = (1.0, 1.0), mse_weight: float = 0.0) -> torch.Tensor:
    """w_v (1 - CCC_v) + w_a (1 - CCC_a) + mse_weight (w_v MSE_v + w_a MSE_a) over the frames where mask is True.

    pred, y [B, T, 2] (valence, arousal; y may be NaN where invalid), mask bool [B, T]; weights (w_v, w_a).
    Frames of the whole batch are pooled into one series per dimension; MSE_d is the mean squared error over
    them (0 when none is valid). Returns a 0-d tensor. With the defaults it is the paper's loss, computed
    exactly as before the weights existed (the extra terms are not computed at all).
    """
    ccc_v, ccc_a = masked_ccc(pred[..., 0], y[..., 0], mask), masked_ccc(pred[..., 1], y[..., 1], mask)
    w_v, w_a = (float(w) for w in weights)
    if (w_v, w_a) == (1.0, 1.0):
        value = (1 - ccc_v) + (1 - ccc_a)
    else:
        value = w_v * (1 - ccc_v) + w_a * (1 - ccc_a)
    if mse_weight == 0:
        return value
    return value + mse_weight * (w_v * masked_mse(pred[..., 0], y[..., 0], mask) + w_a * masked_mse(pred[..., 1], y[..., 1], mask))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (pred - target)^2 over the positions where mask is True (one shape); 0 when none is."""
    mask = mask.bool()
    # where(), not a product: an invalid target may be NaN, and NaN * 0 is NaN (in the gradient too)
    error = torch.where(mask, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (error * error).sum() / mask.sum().clamp_min(1)


def prompt_kl(logits: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked-in frames of KL(q || softmax(logits)).

    logits, q [B, T, 9] (q rows sum to 1, may be NaN where invalid), mask bool [B, T].
    Returns a 0-d tensor; 0 (with zero gradient) when no frame is valid.
    """
    mask = mask.bool()
    # Zero q where masked *before* the product: NaN * 0 would still poison the gradient.
    q = torch.where(mask[..., None], q, torch.zeros_like(q))
    kl = (torch.special.xlogy(q, q) - q * torch.log_softmax(logits, dim=-1)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def loss(
    out: dict,
    y: torch.Tensor,
    label_mask: torch.Tensor,
    sigma: float,
    lambda_prompt: float,
    labels: str = "soft",
    va_weights: tuple[float, float] = (1.0, 1.0),
    mse_weight: float = 0.0,
) -> torch.Tensor:
    """The training objective: (1 - CCC_v) + (1 - CCC_a) + lambda * KL(q || softmax(logits)); the VA terms
    weighted and with an MSE term as `va_loss` says (va_weights, mse_weight).

    out: `VAModel` output, {"va": [B, T, 2], "logits": [B, T, 9] or None}; y [B, T, 2] labels
    (NaN where invalid); label_mask bool [B, T]. The prompt term is there when the model made
    logits (it has a prompt head) and lambda_prompt > 0. labels: "soft" (q = Gaussian soft labels
    with this sigma) or "hard" (q = one-hot of the nearest region).
    """
    label_mask = label_mask.bool()
    y = torch.nan_to_num(y.to(out["va"].dtype))  # invalid frames are masked out; keep them finite
    value = va_loss(out["va"], y, label_mask, va_weights, mse_weight)
    logits = out.get("logits")
    if logits is None or lambda_prompt == 0:
        return value
    if labels == "soft":
        q = soft_labels(y, sigma)
    elif labels == "hard":
        q = hard_labels(y)
    else:
        raise ValueError(f"loss: labels must be soft or hard, not {labels!r}")
    return value + lambda_prompt * prompt_kl(logits, q.to(logits.dtype), label_mask)
