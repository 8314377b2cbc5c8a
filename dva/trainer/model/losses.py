"""Training losses: (1 - CCC) per VA dimension (optionally weighted, plus a weighted MSE), and KL from the region
soft labels to the prompt logits; EXPR's class-weighted cross-entropy, AU's BCE with per-unit positive weights (the
weights from the train split's counts), frames not annotated masked."""

from __future__ import annotations

import torch

from dva.metrics import masked_ccc  # the one differentiable CCC; re-exported for the trainer
from dva.trainer.model.soft_labels import DEFAULT_CENTRE, hard_labels, soft_labels

__all__ = ["masked_ccc", "masked_mse", "va_loss", "prompt_kl", "loss", "class_weights", "pos_weights", "expr_loss", "au_loss", "task_loss", "va_terms", "loss_terms",
           "mtl_parts", "mtl_terms", "mtl_loss"]


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
    centre: float = DEFAULT_CENTRE,
) -> torch.Tensor:
    """The training objective: (1 - CCC_v) + (1 - CCC_a) + lambda * KL(q || softmax(logits)); the VA terms
    weighted and with an MSE term as `va_loss` says (va_weights, mse_weight). The sum of `va_terms`."""
    return sum(va_terms(out, y, label_mask, sigma, lambda_prompt, labels, va_weights, mse_weight, centre).values())


def va_terms(out: dict, y: torch.Tensor, label_mask: torch.Tensor, sigma: float, lambda_prompt: float, labels: str = "soft",
             va_weights: tuple[float, float] = (1.0, 1.0), mse_weight: float = 0.0, centre: float = DEFAULT_CENTRE) -> dict[str, torch.Tensor]:
    """The objective's terms by name, each with its weight: {"va": the CCC (and MSE) term, "prompt": lambda x KL}.

    out: `VAModel` output, {"va": [B, T, 2], "logits": [B, T, 9] or None}; y [B, T, 2] labels
    (NaN where invalid); label_mask bool [B, T]. The prompt term is there when the model made
    logits (it has a prompt head) and lambda_prompt > 0. labels: "soft" (q = Gaussian soft labels
    with this sigma) or "hard" (q = one-hot of the nearest region); centre: the grid's outer centre coordinate.
    """
    label_mask = label_mask.bool()
    y = torch.nan_to_num(y.to(out["va"].dtype))  # invalid frames are masked out; keep them finite
    terms = {"va": va_loss(out["va"], y, label_mask, va_weights, mse_weight)}
    logits = out.get("logits")
    if logits is None or lambda_prompt == 0:
        return terms
    if labels == "soft":
        q = soft_labels(y, sigma, centre)
    elif labels == "hard":
        q = hard_labels(y, centre)
    else:
        raise ValueError(f"loss: labels must be soft or hard, not {labels!r}")
    terms["prompt"] = lambda_prompt * prompt_kl(logits, q.to(logits.dtype), label_mask)
    return terms


def class_weights(labels: torch.Tensor, n_classes: int = 8) -> torch.Tensor:
    """EXPR's class weights from the train frames' labels (class indices, NaN where not annotated; any shape):
    inverse frequency, 1 / n_c, normalised to mean 1 over the classes present; 0 for a class absent from train."""
    labels = labels.reshape(-1)
    labels = labels[~torch.isnan(labels)].long()
    counts = torch.bincount(labels, minlength=n_classes)[:n_classes].double()
    inverse = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    present = int((counts > 0).sum())
    return (inverse * present / inverse.sum()).float() if present else torch.ones(n_classes)


def pos_weights(labels: torch.Tensor) -> torch.Tensor:
    """AU's positive weights from the train frames' labels [N, 12] (0/1, NaN where not annotated): negatives /
    positives of each unit among its annotated frames (1 for a unit with no positive or no negative)."""
    valid = ~torch.isnan(labels)
    positive = ((labels == 1) & valid).sum(0).double()
    negative = ((labels == 0) & valid).sum(0).double()
    return torch.where((positive > 0) & (negative > 0), negative / positive.clamp_min(1), torch.ones_like(positive)).float()


def expr_loss(scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of scores [B, T, 8] against class indices y [B, T, 1] (NaN where not annotated) over the frames
    where mask is True, class-weighted (torch's weighted mean: sum w_y CE / sum w_y); 0 when no frame is."""
    mask = mask.bool() & ~torch.isnan(y[..., 0])
    target = torch.where(mask, torch.nan_to_num(y[..., 0]), torch.zeros_like(y[..., 0])).long()
    per_frame = torch.nn.functional.cross_entropy(scores.float().reshape(-1, scores.shape[-1]), target.reshape(-1), reduction="none")
    w = (weights.to(scores.device)[target] if weights is not None else torch.ones_like(per_frame.reshape(target.shape))) * mask
    return (per_frame.reshape(target.shape) * w).sum() / w.sum().clamp_min(1e-12)


def au_loss(scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """BCE with logits of scores [B, T, 12] against bits y [B, T, 12] (NaN where not annotated), positives weighted per
    unit (weights [12]), the mean over the annotated (frame, unit) pairs of the frames where mask is True."""
    valid = mask.bool()[..., None] & ~torch.isnan(y)
    target = torch.where(valid, torch.nan_to_num(y), torch.zeros_like(y)).float()
    per = torch.nn.functional.binary_cross_entropy_with_logits(scores.float(), target, reduction="none",
                                                               pos_weight=weights.to(scores.device) if weights is not None else None)
    return (per * valid).sum() / valid.sum().clamp_min(1)


def task_loss(task: str, out: dict, y: torch.Tensor, label_mask: torch.Tensor, settings, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The objective of settings.task: the sum of its `loss_terms`."""
    return sum(loss_terms(task, out, y, label_mask, settings, weights).values())


def loss_terms(task: str, out: dict, y: torch.Tensor, label_mask: torch.Tensor, settings, weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The objective of settings.task, term by term (each weighted): VA's `va_terms`; EXPR's weighted cross-entropy
    ("expr", + "prompt": lambda_prompt x the same on the prompt head's logits when it has one); AU's weighted BCE
    ("au"); MTL's `mtl_terms`. weights: `class_weights` or `pos_weights` of train (MTL: the two side by side)."""
    if task == "mtl":
        return mtl_terms(out, y, label_mask, settings, weights)
    if task == "va":
        return va_terms(out, y, label_mask, settings.sigma, settings.lambda_prompt, settings.labels,
                        va_weights=settings.va_weight_pair, mse_weight=settings.mse_weight, centre=settings.region_centre)
    if task == "au":
        return {"au": au_loss(out["scores"], y, label_mask, weights)}
    terms = {"expr": expr_loss(out["scores"], y, label_mask, weights)}
    if out.get("logits") is not None and settings.lambda_prompt > 0 and settings.readout == "regression":
        terms["prompt"] = settings.lambda_prompt * expr_loss(out["logits"], y, label_mask, weights)
    return terms


def _mtl_pieces(out: dict, y: torch.Tensor, label_mask: torch.Tensor, settings, weights: torch.Tensor | None):
    """(VA's `va_terms`, EXPR's loss, AU's loss, [each part's batch has its labels]) of MTL, each over its own frames."""
    from dva.data.tasks import MTL_LABELS

    y_va, y_expr, y_au = (y[..., MTL_LABELS[part]] for part in ("va", "expr", "au"))
    mask = label_mask.bool()
    va_mask = mask & ~torch.isnan(y_va).any(dim=-1)
    expr_mask = mask & ~torch.isnan(y_expr[..., 0])
    au_mask = mask & ~torch.isnan(y_au).all(dim=-1)
    va = va_terms(out, y_va, va_mask, settings.sigma, settings.lambda_prompt, settings.labels, va_weights=settings.va_weight_pair,
                  mse_weight=settings.mse_weight, centre=settings.region_centre)
    expr = expr_loss(out["scores_expr"], y_expr, expr_mask, weights[:8] if weights is not None else None)
    au = au_loss(out["scores_au"], y_au, au_mask, weights[8:] if weights is not None else None)
    present = [m.any() for m in (va_mask, expr_mask, au_mask)]
    # where(), not a product with the count: VA's loss of a batch without VA frames is 2 (1 - CCC of nothing), not 0
    va = {name: torch.where(present[0], term, term * 0) for name, term in va.items()}
    return va, torch.where(present[1], expr, expr * 0), torch.where(present[2], au, au * 0), present


def mtl_parts(out: dict, y: torch.Tensor, label_mask: torch.Tensor, settings, weights: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """MTL's three losses [VA, EXPR, AU], each over the frames with its own labels only (y [B, T, 15]: VA, the class,
    the 12 units, NaN where not annotated): a frame with VA labels alone gives EXPR and AU nothing, not even through the
    shared encoder. A loss without any labelled frame in the batch is 0 with no gradient. weights [20]: EXPR's class
    weights, then AU's positive weights. Returns ([L_va, L_expr, L_au], [1. where the batch has the part's labels, else 0.])."""
    va, expr, au, present = _mtl_pieces(out, y, label_mask, settings, weights)
    return [sum(va.values()), expr, au], [p.float() for p in present]


def mtl_terms(out: dict, y: torch.Tensor, label_mask: torch.Tensor, settings, weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """MTL's objective term by term: w_k L_k of each part (w: --task-weights; VA's split into "va" and "prompt" as
    `va_terms`); with uncertainty weighting (the model's out["task_log_vars"] s, Kendall et al.) w_k (exp(-s_k) L_k + s_k),
    s learned with the model (a loss absent from the batch adds nothing, its s included; s_va rides on the "va" term)."""
    va, expr, au, present = _mtl_pieces(out, y, label_mask, settings, weights)
    log_vars = out.get("task_log_vars")
    terms = {}
    for k, (w, part) in enumerate(zip(settings.task_weight_triple, (va, {"expr": expr}, {"au": au}))):
        if w == 0:
            continue
        for name, value in part.items():
            if log_vars is not None:
                value = torch.exp(-log_vars[k]) * value + (present[k].float() * log_vars[k] if name != "prompt" else 0)
            terms[name] = w * value
    return terms


def mtl_loss(out: dict, y: torch.Tensor, label_mask: torch.Tensor, settings, weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k w_k L_k over MTL's three losses (`mtl_terms` summed)."""
    return sum(mtl_terms(out, y, label_mask, settings, weights).values())
