"""The heads of EXPR and AU on the fused features (VA's regression and region heads are in compose.py): per-frame
class scores, and what a prediction averages (probabilities: softmax over EXPR's eight classes, a sigmoid per AU).

EXPR: a linear head, and optionally the prompt head over the eight class texts (CoOp context before each); --readout
regression reads the linear head (the prompt head then only adds its loss term), prompt the prompt head, blend the
mean of both logits. AU: twelve logits of a linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from dva.data.tasks import AU_NAMES, EXPR_CLASSES, MTL_WIDTH

TASK_WIDTH = {"va": 2, "expr": len(EXPR_CLASSES), "au": len(AU_NAMES)}  # the columns of a task's per-frame prediction
TASK_WIDTH["mtl"] = MTL_WIDTH  # MTL: the three side by side, va, expr, au (`MTL_PRED`)
# One per class, EXPR_CLASSES order; each reads after "a photo of a face showing ...".
EXPR_DESCRIPTIONS: tuple[str, ...] = ("no emotion, a neutral expression", "anger", "disgust", "fear", "happiness", "sadness", "surprise",
                                      "some other expression")
EXPR_TEMPLATE = "a photo of a face showing {}."


class ClassHead(nn.Module):
    """Scores [B, T, n] from fused features [B, T, hidden] and, for EXPR with a prompt head, its logits [B, T, n]."""

    def __init__(self, hidden: int, n: int, readout: str = "regression"):
        super().__init__()
        self.readout = readout
        self.linear = nn.Linear(hidden, n) if readout != "prompt" else None

    def forward(self, fused: torch.Tensor, prompt_logits: torch.Tensor | None) -> torch.Tensor:
        if self.readout == "prompt":
            return prompt_logits
        scores = self.linear(fused)
        return scores if self.readout == "regression" else (scores.float() + prompt_logits.float()) / 2


def frame_values(task: str, out: dict) -> torch.Tensor:
    """What a prediction holds per frame (and ensembles average): VA's (valence, arousal), EXPR's class probabilities,
    AU's probabilities, [B, T, TASK_WIDTH[task]]; MTL the three side by side (`MTL_PRED`)."""
    if task == "va":
        return out["va"]
    if task == "mtl":
        return torch.cat([out["va"].float(), torch.softmax(out["scores_expr"].float(), dim=-1), torch.sigmoid(out["scores_au"].float())], dim=-1)
    scores = out["scores"].float()
    return torch.softmax(scores, dim=-1) if task == "expr" else torch.sigmoid(scores)
