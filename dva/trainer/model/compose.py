"""The model, composed from settings: temporal encoders -> fusion -> the task's heads (VA: regression and prompt heads;
EXPR and AU: model.heads)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from dva.errors import ConfigError
from dva.trainer.model.fusion import Fusion
from dva.trainer.model.heads import EXPR_DESCRIPTIONS, EXPR_TEMPLATE, TASK_WIDTH, ClassHead
from dva.trainer.model.prompts import DEFAULT_DESCRIPTIONS, HARD_TEMPLATE, PromptHead
from dva.trainer.settings import FUSIONS, MODALITIES, PROMPTS, READOUTS, TEMPORALS, FitSettings, temporal_choices
from dva.trainer.model.soft_labels import N_REGIONS, REGION_CENTRES
from dva.trainer.model.temporal import build_temporal


@dataclass(frozen=True)
class ModelSettings:
    """Everything that decides the model's shape; the fields are `dva fit` flags of the same names."""

    modalities: tuple[str, ...] = MODALITIES
    task: str = "va"  # va | expr | au: which heads
    temporal: str = "gru"  # gru | tcn | transformer (model.temporal's registry) | a plugin's name (dva.trainer.plugins)
    seq_len: int = 64  # the training window: a TCN gets as many levels as cover it
    tcn_kernel: int = 3
    temporal_layers: int = 2  # transformer encoder layers
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.1
    fusion: str = "hierarchical"  # concat | xattn | gated | hierarchical (only used with two modalities)
    heads: int = 4
    prompt: str = "learnable"  # none | fixed | learnable
    n_ctx: int = 4
    readout: str = "regression"  # regression | prompt | blend
    descriptions: tuple[str, ...] = DEFAULT_DESCRIPTIONS  # one per region, REGION_CENTRES order (EXPR: one per class)

    @classmethod
    def of(cls, settings: FitSettings) -> ModelSettings:
        """The model part of a fit's settings: its fields of the same names (modalities as a tuple)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dataclasses.asdict(settings).items() if k in fields and k not in ("modalities", "descriptions")}
        values["modalities"] = settings.modality_list
        if settings.descriptions is not None:
            values["descriptions"] = tuple(settings.descriptions)
        elif settings.task == "expr":
            values["descriptions"] = EXPR_DESCRIPTIONS
        return cls(**values)

    def validate(self) -> None:
        if not self.modalities or len(set(self.modalities)) != len(self.modalities) or any(m not in MODALITIES for m in self.modalities):
            raise ConfigError(f"modalities must be visual, audio or both, not {self.modalities!r}")
        if self.temporal not in TEMPORALS and self.temporal not in temporal_choices():
            raise ConfigError(f"temporal must be one of {', '.join(temporal_choices())}, not {self.temporal!r}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}, not {self.fusion!r}")
        if self.prompt not in PROMPTS:
            raise ConfigError(f"prompt must be one of {', '.join(PROMPTS)}, not {self.prompt!r}")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout must be one of {', '.join(READOUTS)}, not {self.readout!r}")
        if self.readout != "regression" and self.prompt == "none":
            raise ConfigError(f"readout {self.readout!r} needs the prompt head (prompt fixed or learnable)")
        if self.hidden < 1 or self.layers < 1 or self.heads < 1 or self.n_ctx < 0:
            raise ConfigError("hidden, layers and heads must be at least 1, n_ctx at least 0")
        if self.temporal == "transformer" and self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}) for the transformer")
        if self.seq_len < 1 or self.temporal_layers < 1 or self.tcn_kernel < 3 or self.tcn_kernel % 2 == 0:
            raise ConfigError("seq_len and temporal_layers must be at least 1, tcn_kernel odd and at least 3")
        if len(self.modalities) == 2 and self.fusion in ("xattn", "hierarchical") and self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}) for {self.fusion} fusion")
        if self.task not in TASK_WIDTH:
            raise ConfigError(f"task must be one of {', '.join(TASK_WIDTH)}, not {self.task!r}")
        if self.task == "au" and (self.prompt != "none" or self.readout != "regression"):
            raise ConfigError("task au has no prompt head: prompt none, readout regression")
        classes = N_REGIONS if self.task == "va" else TASK_WIDTH[self.task]
        if self.task != "au" and len(self.descriptions) != classes:
            raise ConfigError(f"descriptions must hold {classes} texts (one per {'region' if self.task == 'va' else 'class'}), got {len(self.descriptions)}")


class VAModel(nn.Module):
    """Per-frame valence-arousal from visual and/or audio features.

    forward(visual [B, T, Dv] or None, audio [B, T, Da] or None, visual_mask bool [B, T] or None,
    audio_mask bool [B, T] or None, text [9, E] or None) -> {"va": [B, T, 2] in (-1, 1), "logits": [B, T, 9] or None}
    (settings.task expr or au: {"va": None, "logits": the prompt head's [B, T, 8] or None, "scores": [B, T, 8 or 12]}).
    "va" is the readout: the regression head (tanh), the prompt head's expectation of the region
    centres (sum_k softmax(logits)_k c_k), or a learned per-dimension mix of the two (blend).
    text: the prompt head's region text features from `text_features()`, computed once by a caller
    that runs many batches with the same weights (an evaluation pass); None computes them here.
    Masks: True = the frame's feature is valid; masked frames are zeroed before the projection
    and ignored as attention keys. A modality not in settings.modalities is ignored if given.
    clip_model: an open_clip model whose text tower the prompt head uses (needed unless
    settings.prompt == "none"); tokenizer: see `PromptHead`.
    """

    def __init__(self, settings: ModelSettings, visual_dim: int, audio_dim: int, clip_model: nn.Module | None = None, tokenizer=None):
        super().__init__()
        settings.validate()
        self.settings = settings
        dims = {"visual": visual_dim, "audio": audio_dim}
        s = settings
        self.encoders = nn.ModuleDict(
            {m: build_temporal(s.temporal, dims[m], s) for m in s.modalities}
        )
        self.fusion = Fusion(s.fusion, s.hidden, s.heads, s.dropout) if len(s.modalities) == 2 else None
        self.regression = nn.Linear(s.hidden, 2) if s.readout != "prompt" and s.task == "va" else None
        self.head = ClassHead(s.hidden, TASK_WIDTH[s.task], s.readout) if s.task != "va" else None
        # blend: va = g * regression + (1 - g) * prompt readout, g = sigmoid(mix) per dimension, starting at 1/2
        self.mix = nn.Parameter(torch.zeros(2)) if s.readout == "blend" else None
        self.register_buffer("centres", REGION_CENTRES.clone(), persistent=False)
        self.prompt_head = None
        if s.prompt != "none":
            if clip_model is None:
                raise ValueError(f"VAModel: prompt={s.prompt!r} needs a clip_model for its text tower")
            expr = s.task == "expr"
            self.prompt_head = PromptHead(clip_model, s.descriptions, s.n_ctx, s.prompt, s.hidden, tokenizer=tokenizer,
                                          template=EXPR_TEMPLATE if expr else HARD_TEMPLATE, classes=len(s.descriptions))

    def forward(
        self,
        visual: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        visual_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> dict:
        inputs = {"visual": (visual, visual_mask), "audio": (audio, audio_mask)}
        streams, masks = {}, {}
        for name, encoder in self.encoders.items():
            x, mask = inputs[name]
            if x is None:
                raise ValueError(f"VAModel: this model uses {name} features, but {name}=None was given")
            if mask is None:
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            mask = mask.bool()
            # where(), not a product: missing frames may hold NaN, and NaN * 0 is NaN.
            x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
            streams[name], masks[name] = encoder(x, mask), mask
        if self.fusion is not None:
            fused = self.fusion(streams["visual"], streams["audio"], masks["visual"], masks["audio"])
        else:
            (fused,) = streams.values()
        logits = self.prompt_head(fused, text) if self.prompt_head is not None else None
        if self.head is not None:  # EXPR, AU: class scores ("logits" stays the prompt head's, for its loss term)
            return {"va": None, "logits": logits, "scores": self.head(fused, logits)}
        regression = torch.tanh(self.regression(fused)) if self.regression is not None else None
        if self.settings.readout == "regression":
            return {"va": regression, "logits": logits}
        from_prompt = torch.softmax(logits.float(), dim=-1) @ self.centres
        if self.settings.readout == "prompt":
            return {"va": from_prompt, "logits": logits}
        share = torch.sigmoid(self.mix)
        return {"va": share * regression.float() + (1 - share) * from_prompt, "logits": logits}

    def text_features(self) -> torch.Tensor | None:
        """The prompt head's nine region text features [9, E] (None without a prompt head): one pass of the
        text tower, to hand to forward(text=...) for every batch of an evaluation pass."""
        return self.prompt_head.text_features() if self.prompt_head is not None else None
