"""The prompt head: CoOp-style learnable context + region descriptions through CLIP's frozen text tower.

Learnable mode builds, for each of the nine VA regions (order: `dva.trainer.model.soft_labels`),
`[SOS][ctx_1 .. ctx_n][description tokens][EOS][pad...]`, where the ctx vectors are learnable
and shared by all regions, runs it through the frozen text transformer exactly as
`open_clip.CLIP.encode_text` does, and reads the feature at the EOT position. Fixed mode uses the
hand-written prompts "a photo of a person who looks {description}." and caches their features once.
Logits are a learnable scale times the cosine similarity between the projected frame feature and
each region's text feature.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dva.trainer.settings import PROMPTS
from dva.trainer.model.soft_labels import N_REGIONS

# One per region, in REGION_CENTRES order (rows: arousal high -> low; columns: valence - -> +),
# after Russell's circumplex model of affect. Edit freely; each must read after "looks ...".
DEFAULT_DESCRIPTIONS: tuple[str, ...] = (
    "tense and angry",  # 0: negative valence, high arousal
    "alert and astonished",  # 1: neutral valence, high arousal
    "excited and elated",  # 2: positive valence, high arousal
    "miserable and displeased",  # 3: negative valence, neutral arousal
    "neutral",  # 4: centre
    "happy and pleased",  # 5: positive valence, neutral arousal
    "sad and depressed",  # 6: negative valence, low arousal
    "tired and sleepy",  # 7: neutral valence, low arousal
    "calm and content",  # 8: positive valence, low arousal
)
HARD_TEMPLATE = "a photo of a person who looks {}."  # the fixed prompts
PROMPT_MODES = tuple(p for p in PROMPTS if p != "none")
CLIP_VOCAB_SIZE = 49408  # open_clip's default (OpenAI BPE) tokenizer


class TextEncoder(nn.Module):
    """CLIP's text transformer applied to token embeddings instead of token ids (CoOp's TextEncoder).

    forward(embeddings [N, L, width], pool_index [N]) -> [N, embed_dim], the same computation as
    `encode_text` (cast, + positional embedding, transformer with the causal mask, ln_final, pool,
    text projection) once the token embedding has been looked up. Holds (shares) the text-tower
    modules of the given open_clip model, not its image tower.
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        # open_clip.CLIP keeps the text parts on the model itself; CustomTextCLIP in `.text`.
        tower = clip_model.text if hasattr(clip_model, "text") else clip_model
        if not hasattr(tower, "token_embedding") or not hasattr(tower, "transformer"):
            raise ValueError(f"PromptHead needs an open_clip model with its own text transformer, not {type(tower).__name__} (HF text towers are not supported)")
        if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
            raise ValueError("PromptHead does not support text towers with a CLS embedding or a padding mask (CoCa, bidirectional text)")
        self.pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        if self.pool_type not in ("argmax", "eos", "first", "last"):
            raise ValueError(f"PromptHead: text pool type {self.pool_type!r} is not supported")
        self.eos_id = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.transformer = tower.transformer
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)
        self.context_length = tower.positional_embedding.shape[0]
        self.width = tower.positional_embedding.shape[1]

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [N, L] -> [N]: the position open_clip's `text_global_pool` reads the feature from."""
        n, length = tokens.shape
        if self.pool_type == "argmax":  # EOT has the highest id in the OpenAI vocabulary
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        position = 0 if self.pool_type == "first" else length - 1
        return torch.full((n,), position, dtype=torch.long, device=tokens.device)

    def forward(self, embeddings: torch.Tensor, pool_index: torch.Tensor) -> torch.Tensor:
        cast_dtype = self.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + self.positional_embedding.to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)  # Transformer handles batch_first itself
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), pool_index]
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


class PromptHead(nn.Module):
    """Region logits from frame features: forward(features [B, T, feature_dim]) -> logits [B, T, 9].

    clip_model: an open_clip model (`open_clip.create_model(...)`); all its parameters are frozen
    here (requires_grad False), but gradients flow through its text tower to the context vectors.
    Only the text tower is kept. descriptions: nine texts in region order. n_ctx: learnable context
    vectors [n_ctx, text_width], N(0, 0.02) (learnable mode; 0 is allowed and gives plain CLIP prompts).
    tokenizer: callable(list[str]) -> LongTensor [N, context_length]; default open_clip's CLIP BPE
    tokenizer (pass `open_clip.get_tokenizer(model_name)` for models with another vocabulary). template: the fixed
    prompts' sentence; classes: how many descriptions (9 VA regions; 8 for EXPR's classes, see model.heads).
    """

    def __init__(
        self,
        clip_model: nn.Module,
        descriptions: Sequence[str] = DEFAULT_DESCRIPTIONS,
        n_ctx: int = 4,
        mode: str = "learnable",
        feature_dim: int = 128,
        tokenizer: Callable | None = None,
        template: str = HARD_TEMPLATE,
        classes: int = N_REGIONS,
        templates: Sequence[str] | None = None,
        logit_scale: float | None = None,
    ):
        super().__init__()
        if mode not in PROMPT_MODES:
            raise ValueError(f"PromptHead: mode must be one of {', '.join(PROMPT_MODES)}, not {mode!r}")
        if len(descriptions) != classes:
            raise ValueError(f"PromptHead: need {classes} descriptions (one per class), got {len(descriptions)}")
        if n_ctx < 0:
            raise ValueError(f"PromptHead: n_ctx must be >= 0, not {n_ctx}")
        clip_model.requires_grad_(False)
        encoder = TextEncoder(clip_model)
        tokenizer = tokenizer or _default_tokenizer(clip_model, encoder.context_length)
        self.mode, self.n_ctx = mode, n_ctx
        device = encoder.positional_embedding.device

        if mode == "fixed":
            sentences = list(templates or [template])
            tokens = tokenizer([t.format(d) for d in descriptions for t in sentences]).to(device)
            with torch.no_grad():
                features = encoder(encoder.token_embedding(tokens), encoder.pool_index(tokens)).float()
            if templates:  # the released code's region prototypes: mean of normalised features, normalised (model_clip.py:118-127)
                features = F.normalize(F.normalize(features, dim=-1).reshape(len(descriptions), len(sentences), -1).mean(dim=1), dim=-1)
            # Fixed prompts: compute once, keep no tower (nothing of CLIP in the state).
            self.register_buffer("fixed_text_features", features, persistent=False)
            self.text_encoder = None
        else:
            tokens = tokenizer([f"{d}." for d in descriptions]).to(device)
            pool = encoder.pool_index(tokens)
            if encoder.pool_type in ("argmax", "eos"):
                if int(pool.max()) + n_ctx >= encoder.context_length:
                    raise ValueError(f"PromptHead: a description plus {n_ctx} context tokens exceeds CLIP's {encoder.context_length}-token context")
                pool = pool + n_ctx
            # [SOS][n_ctx placeholders][description ... EOT pad] cut back to the context length; the
            # placeholders' embeddings are replaced by ctx in forward, so their id does not matter.
            placeholders = torch.zeros(tokens.shape[0], n_ctx, dtype=tokens.dtype, device=device)
            tokens = torch.cat([tokens[:, :1], placeholders, tokens[:, 1:]], dim=1)[:, : encoder.context_length]
            self.register_buffer("tokens", tokens, persistent=False)
            self.register_buffer("pool_index", pool, persistent=False)
            self.ctx = nn.Parameter(torch.randn(n_ctx, encoder.width, device=device) * 0.02)
            self.text_encoder = encoder
            with torch.no_grad():
                features = self.text_features()
        self.embed_dim = features.shape[-1]
        self.project = nn.Linear(feature_dim, self.embed_dim, device=device) if feature_dim is not None else None
        if logit_scale is None:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), device=device))
        else:  # a fixed number times the cosine (the released code: 10, model_clip.py:510-523); not in the state
            self.register_buffer("fixed_scale", torch.tensor(float(logit_scale), device=device), persistent=False)
            self.logit_scale = None

    def text_features(self) -> torch.Tensor:
        """The nine regions' text features [9, embed_dim] (not normalised)."""
        if self.text_encoder is None:
            return self.fixed_text_features
        embeddings = self.text_encoder.token_embedding(self.tokens)  # [9, L, width]
        ctx = self.ctx.to(embeddings.dtype).unsqueeze(0).expand(embeddings.shape[0], -1, -1)
        embeddings = torch.cat([embeddings[:, :1], ctx, embeddings[:, 1 + self.n_ctx :]], dim=1)
        return self.text_encoder(embeddings, self.pool_index)

    def forward(self, features: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """features [B, T, feature_dim] -> logits [B, T, 9]; text: `text_features()` computed once by the
        caller for many batches (an evaluation pass), or None to run the text tower here."""
        frames = F.normalize(self.project(features) if self.project is not None else features, dim=-1)
        text = F.normalize(self.text_features() if text is None else text, dim=-1).to(frames.dtype)
        scale = self.logit_scale.exp().clamp(max=100.0) if self.logit_scale is not None else self.fixed_scale
        return scale * frames @ text.t()

    def train(self, mode: bool = True):
        # The frozen text tower always runs as in inference (no dropout), whatever the head does.
        super().train(mode)
        if self.text_encoder is not None:
            self.text_encoder.eval()
        return self


def _default_tokenizer(clip_model: nn.Module, context_length: int) -> Callable:
    import open_clip

    vocab = getattr(clip_model, "vocab_size", None) or getattr(getattr(clip_model, "text", None), "vocab_size", None)
    if vocab not in (None, CLIP_VOCAB_SIZE):
        raise ValueError(f"PromptHead: this CLIP model's vocabulary ({vocab}) is not the default one; pass tokenizer=open_clip.get_tokenizer(model_name)")
    return lambda texts: open_clip.tokenize(texts, context_length=context_length)
