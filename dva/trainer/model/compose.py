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
from dva.trainer.settings import FUSIONS, GATE_PARTNERS, HEADS, MODALITIES, PROMPT_INPUTS, PROMPTS, READOUTS, TARGETS, TEMPORALS, FitSettings, temporal_choices
from dva.trainer.model.soft_labels import DEFAULT_CENTRE, N_REGIONS, region_centres
from dva.trainer.model.temporal import build_temporal


@dataclass(frozen=True)
class ModelSettings:
    """Everything that decides the model's shape; the fields are `dva fit` flags of the same names."""

    modalities: tuple[str, ...] = MODALITIES
    task: str = "va"  # va | expr | au | mtl: which heads (mtl: VA's, then EXPR's and AU's linear heads on the same fused features)
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
    region_centre: float = DEFAULT_CENTRE  # the grid's outer centre coordinate (the prompt readout's centres)
    prompt_templates: tuple[str, ...] | None = None  # fixed prompts: several templates, averaged per region
    logit_scale: float | None = None  # None: learnable; else fixed
    prompt_input: str = "fused"  # fused | visual (the visual features as given, no projection)
    head: str = "linear"  # linear (tanh) | mlp
    gate_partner: str = "audio"  # audio | visual (hierarchical fusion)
    causal: bool = False  # temporal models and the fusion's attention see only the past
    tcn_levels: int = 0  # 0: as many as cover seq_len
    target: str = "frame"  # frame | last (the window averaged over time before the heads: one output per window)
    task_weighting: str = "fixed"  # mtl: uncertainty adds the learned log-variances of the three losses (`task_log_vars`)

    @classmethod
    def of(cls, settings: FitSettings) -> ModelSettings:
        """The model part of a fit's settings: its fields of the same names (modalities as a tuple)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dataclasses.asdict(settings).items() if k in fields and k not in ("modalities", "descriptions", "logit_scale")}
        values["modalities"] = settings.modality_list
        values["logit_scale"] = settings.fixed_logit_scale
        values["seq_len"] = settings.window_length
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
        if self.seq_len < 1 or self.temporal_layers < 1 or self.tcn_kernel < 2 or (not self.causal and self.tcn_kernel % 2 == 0) or self.tcn_levels < 0:
            raise ConfigError("seq_len and temporal_layers must be at least 1, tcn_kernel odd and at least 3 (at least 2 when causal), tcn_levels 0 or more")
        if self.causal and self.bidirectional:
            raise ConfigError("causal: a bidirectional GRU reads the future")
        if self.gate_partner not in GATE_PARTNERS or self.head not in HEADS or self.prompt_input not in PROMPT_INPUTS or self.target not in TARGETS:
            raise ConfigError("gate_partner, head, prompt_input or target is not one of its choices")
        if self.prompt_input == "visual" and ("visual" not in self.modalities or self.prompt == "none"):
            raise ConfigError("prompt_input visual reads the visual features into the prompt head: needs visual in modalities and a prompt head")
        if len(self.modalities) == 2 and self.fusion in ("xattn", "hierarchical") and self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}) for {self.fusion} fusion")
        if self.task not in TASK_WIDTH:
            raise ConfigError(f"task must be one of {', '.join(TASK_WIDTH)}, not {self.task!r}")
        if self.task == "au" and (self.prompt != "none" or self.readout != "regression"):
            raise ConfigError("task au has no prompt head: prompt none, readout regression")
        classes = N_REGIONS if self.task in ("va", "mtl") else TASK_WIDTH[self.task]
        if self.task != "au" and len(self.descriptions) != classes:
            raise ConfigError(f"descriptions must hold {classes} texts (one per {'class' if self.task == 'expr' else 'region'}), got {len(self.descriptions)}")


class VAModel(nn.Module):
    """Per-frame valence-arousal from visual and/or audio features.

    forward(visual [B, T, Dv] or None, audio [B, T, Da] or None, visual_mask bool [B, T] or None,
    audio_mask bool [B, T] or None, text [9, E] or None) -> {"va": [B, T, 2] in (-1, 1), "logits": [B, T, 9] or None}
    (settings.task expr or au: {"va": None, "logits": the prompt head's [B, T, 8] or None, "scores": [B, T, 8 or 12]};
    mtl: VA's, and "scores_expr" [B, T, 8], "scores_au" [B, T, 12], "task_log_vars" [3] with uncertainty weighting).
    "va" is the readout: the regression head (tanh), the prompt head's expectation of the region
    centres (sum_k softmax(logits)_k c_k), or a learned per-dimension mix of the two (blend).
    settings.target last: every output is one per window, [B, 1, ...]. prompt_visual [B, T, Dv]: the visual
    features as stored (settings.prompt_input visual reads them instead of the fused stream).
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
        self.fusion = Fusion(s.fusion, s.hidden, s.heads, s.dropout, s.gate_partner, s.causal) if len(s.modalities) == 2 else None
        self.regression = regression_head(s.head, s.hidden) if s.readout != "prompt" and s.task in ("va", "mtl") else None
        self.head = ClassHead(s.hidden, TASK_WIDTH[s.task], s.readout) if s.task in ("expr", "au") else None
        if s.task == "mtl":  # EXPR and AU beside VA's heads; the prompt head is VA's (nine regions)
            self.expr_head, self.au_head = ClassHead(s.hidden, TASK_WIDTH["expr"]), ClassHead(s.hidden, TASK_WIDTH["au"])
        # uncertainty weighting (Kendall et al.): s_k = log sigma_k^2 per loss, learned with the model, saved with it
        self.task_log_vars = nn.Parameter(torch.zeros(3)) if s.task == "mtl" and s.task_weighting == "uncertainty" else None
        # blend: va = g * regression + (1 - g) * prompt readout, g = sigmoid(mix) per dimension, starting at 1/2
        self.mix = nn.Parameter(torch.zeros(2)) if s.readout == "blend" else None
        self.register_buffer("centres", region_centres(s.region_centre), persistent=False)
        self.prompt_head = None
        if s.prompt != "none":
            if clip_model is None:
                raise ValueError(f"VAModel: prompt={s.prompt!r} needs a clip_model for its text tower")
            expr = s.task == "expr"
            feature_dim = None if s.prompt_input == "visual" else s.hidden
            self.prompt_head = PromptHead(clip_model, s.descriptions, s.n_ctx, s.prompt, feature_dim, tokenizer=tokenizer,
                                          template=EXPR_TEMPLATE if expr else HARD_TEMPLATE, classes=len(s.descriptions),
                                          templates=s.prompt_templates, logit_scale=s.logit_scale)
            if feature_dim is None and visual_dim != self.prompt_head.embed_dim:
                raise ConfigError(f"--prompt-input visual compares the visual features as stored ({visual_dim}-d) with the text tower's "
                                  f"{self.prompt_head.embed_dim}-d embeddings: choose one CLIP visual set of the text tower's model")

    def forward(
        self,
        visual: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        visual_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        prompt_visual: torch.Tensor | None = None,
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
        prompt_in = fused
        if self.settings.prompt_input == "visual":  # the stored features of the frames with a face (zero elsewhere)
            if prompt_visual is None:
                raise ValueError("VAModel: prompt_input visual needs prompt_visual, the visual features as stored")
            prompt_in = torch.where(masks["visual"][..., None], prompt_visual.float(), torch.zeros((), device=prompt_visual.device))
        if self.settings.target == "last":
            # one output per window: the fused stream's mean over the window (model_clip.py:541-543), and the prompt
            # input's (model_clip.py:518-521; the visual features over the frames that have them)
            fused = fused.mean(dim=1, keepdim=True)
            if self.settings.prompt_input == "visual":
                prompt_in = prompt_in.sum(dim=1, keepdim=True) / masks["visual"].sum(dim=1).clamp_min(1)[:, None, None]
            else:
                prompt_in = fused
        logits = self.prompt_head(prompt_in, text) if self.prompt_head is not None else None
        if self.head is not None:  # EXPR, AU: class scores ("logits" stays the prompt head's, for its loss term)
            return {"va": None, "logits": logits, "scores": self.head(fused, logits)}
        out = {"va": self._va(fused, logits), "logits": logits}
        if self.settings.task == "mtl":
            out.update(scores_expr=self.expr_head(fused, None), scores_au=self.au_head(fused, None))
            if self.task_log_vars is not None:
                out["task_log_vars"] = self.task_log_vars
        return out

    def _va(self, fused: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        """The VA readout: the regression head, the prompt head's expectation of the region centres, or their blend."""
        regression = None
        if self.regression is not None:
            regression = torch.tanh(self.regression(fused)) if self.settings.head == "linear" else self.regression(fused)
        if self.settings.readout == "regression":
            return regression
        from_prompt = torch.softmax(logits.float(), dim=-1) @ self.centres
        if self.settings.readout == "prompt":
            return from_prompt
        share = torch.sigmoid(self.mix)
        return share * regression.float() + (1 - share) * from_prompt

    def text_features(self) -> torch.Tensor | None:
        """The prompt head's nine region text features [9, E] (None without a prompt head): one pass of the
        text tower, to hand to forward(text=...) for every batch of an evaluation pass."""
        return self.prompt_head.text_features() if self.prompt_head is not None else None


def regression_head(kind: str, hidden: int) -> nn.Module:
    """VA's regression head: linear (a tanh follows in forward) or mlp, the released VAHead (model_clip.py:530-539):
    Linear(hidden, 128), ReLU, Dropout(0.2), Linear(128, 2), no tanh."""
    if kind == "linear":
        return nn.Linear(hidden, 2)
    return nn.Sequential(nn.Linear(hidden, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 2))
