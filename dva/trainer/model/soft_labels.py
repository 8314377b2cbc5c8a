"""The nine regions of the valence-arousal plane and the labels the prompt head is trained against.

Region order (index k = 3 * row + column), read like the circumplex drawn with arousal up:
rows go from high arousal to low (a = +c, 0, -c), columns from negative valence to
positive (v = -c, 0, +c), c the grid's outer centre (2/3 by default: the centres of a 3x3 grid over [-1, 1]^2;
the authors' released code uses 0.66, dataset.py:64)::

    0 (-,+)  1 (0,+)  2 (+,+)        high arousal
    3 (-,0)  4 (0,0)  5 (+,0)
    6 (-,-)  7 (0,-)  8 (+,-)        low arousal
    negative  ...     positive valence

`dva.trainer.model.prompts.DEFAULT_DESCRIPTIONS` follows the same order.
"""

from __future__ import annotations

import torch

DEFAULT_CENTRE = 2 / 3


def region_centres(centre: float = DEFAULT_CENTRE) -> torch.Tensor:
    """[9, 2] (valence, arousal): the grid's centres (-centre, 0, +centre) on each axis, in the order above."""
    steps = (-centre, 0.0, centre)
    return torch.tensor([[v, a] for a in reversed(steps) for v in steps], dtype=torch.float32)


REGION_CENTRES = region_centres()
N_REGIONS = REGION_CENTRES.shape[0]


def _squared_distances(y: torch.Tensor, centre: float = DEFAULT_CENTRE) -> torch.Tensor:
    """[..., 2] -> [..., 9]: squared Euclidean distance from each point to each region centre."""
    centres = region_centres(centre).to(device=y.device, dtype=y.dtype)
    return ((y.unsqueeze(-2) - centres) ** 2).sum(-1)


def soft_labels(y: torch.Tensor, sigma: float, centre: float = DEFAULT_CENTRE) -> torch.Tensor:
    """Distance-aware soft labels: y [..., 2] (valence, arousal) -> q [..., 9], each row summing to 1.

    q_k is proportional to exp(-||y - c_k||^2 / (2 sigma^2)); computed as a softmax of the scaled
    negative distances, so a small sigma gives a (numerically exact) one-hot, not 0/0.
    Callers replace invalid (NaN) labels first; NaN rows stay NaN.
    """
    if sigma <= 0:
        raise ValueError(f"soft_labels: sigma must be positive, not {sigma}")
    return torch.softmax(-_squared_distances(y, centre) / (2 * sigma * sigma), dim=-1)


def hard_labels(y: torch.Tensor, centre: float = DEFAULT_CENTRE) -> torch.Tensor:
    """One-hot of the nearest region centre: y [..., 2] -> [..., 9] in y's dtype."""
    nearest = _squared_distances(y, centre).argmin(dim=-1)
    return torch.nn.functional.one_hot(nearest, N_REGIONS).to(y.dtype)
