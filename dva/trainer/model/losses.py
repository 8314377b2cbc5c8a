"""Training losses: (1 - CCC) per VA dimension, and KL from the region soft labels to the prompt logits."""

from __future__ import annotations

import torch

from dva.metrics import masked_ccc  # the one differentiable CCC; re-exported for the trainer
from dva.trainer.model.soft_labels import hard_labels, soft_labels

__all__ = ["masked_ccc", "va_loss", "prompt_kl", "loss"]


def va_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1 - CCC_v) + (1 - CCC_a) over the frames where mask is True.

    pred, y [B, T, 2] (valence, arousal; y may be NaN where invalid), mask bool [B, T].
    Frames of the whole batch are pooled into one series per dimension. Returns a 0-d tensor.
    """
    return (1 - masked_ccc(pred[..., 0], y[..., 0], mask)) + (1 - masked_ccc(pred[..., 1], y[..., 1], mask))


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
) -> torch.Tensor:
    """The training objective: (1 - CCC_v) + (1 - CCC_a) + lambda * KL(q || softmax(logits)).

    out: `VAModel` output, {"va": [B, T, 2], "logits": [B, T, 9] or None}; y [B, T, 2] labels
    (NaN where invalid); label_mask bool [B, T]. The prompt term is there when the model made
    logits (it has a prompt head) and lambda_prompt > 0. labels: "soft" (q = Gaussian soft labels
    with this sigma) or "hard" (q = one-hot of the nearest region).
    """
    label_mask = label_mask.bool()
    y = torch.nan_to_num(y.to(out["va"].dtype))  # invalid frames are masked out; keep them finite
    value = va_loss(out["va"], y, label_mask)
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
