"""`dva fit` settings and the one definition of every list of choices the trainer offers.

Light on purpose (no torch): the CLI, ablation keys and TOML configs read it without the model.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dva.errors import ConfigError

MODALITIES = ("visual", "audio")
FUSIONS = ("concat", "xattn", "gated", "hierarchical")
PROMPTS = ("none", "hard", "soft")


@dataclass(frozen=True)
class FitSettings:
    """Every `dva fit` flag (and `--config` TOML key); written whole to config.json."""

    features: str = "stores"
    out: str = "runs/fit"
    modalities: str = "visual,audio"
    fusion: str = "hierarchical"
    prompt: str = "soft"
    n_ctx: int = 4
    sigma: float = 0.35
    lambda_prompt: float = 0.5
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.1
    heads: int = 4
    seq_len: int = 64
    stride: int = 32
    batch_size: int = 32
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    seed: int = 0
    device: str | None = None
    audio_align: str = "nearest"
    descriptions: tuple[str, ...] | None = None  # nine region texts; None = the circumplex defaults

    def validate(self) -> None:
        chosen = self.modality_list
        if not chosen or any(m not in MODALITIES for m in chosen):
            raise ConfigError(f"--modalities must be visual, audio or visual,audio, not {self.modalities!r}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"--fusion must be one of {', '.join(FUSIONS)}, not {self.fusion!r}")
        if self.prompt not in PROMPTS:
            raise ConfigError(f"--prompt must be one of {', '.join(PROMPTS)}, not {self.prompt!r}")
        if self.descriptions is not None and len(self.descriptions) != 9:
            raise ConfigError(f"descriptions must hold nine texts (one per region), got {len(self.descriptions)}")
        for name in ("epochs", "batch_size", "hidden", "layers", "seq_len", "stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.sigma <= 0 or self.lr <= 0:
            raise ConfigError("--sigma and --lr must be positive")

    @property
    def modality_list(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.modalities.split(",") if m.strip())

    def model_settings(self):
        from dva.trainer.model import ModelSettings

        fields = {f.name for f in dataclasses.fields(ModelSettings)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in fields and k not in ("modalities", "descriptions")}
        values["modalities"] = self.modality_list
        if self.descriptions is not None:
            values["descriptions"] = tuple(self.descriptions)
        return ModelSettings(**values)


def settings_from(config: Path | None = None, **flags) -> FitSettings:
    """FitSettings from an optional TOML file, overridden by the flags that were given (not None)."""
    values: dict = {}
    if config is not None:
        try:
            values = tomllib.loads(Path(config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{config}: cannot read the TOML config ({exc})") from None
        values = values.get("fit", values)
        known = {f.name for f in dataclasses.fields(FitSettings)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{config}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values.update({k: v for k, v in flags.items() if v is not None})
    if isinstance(values.get("descriptions"), list):
        values["descriptions"] = tuple(values["descriptions"])
    settings = FitSettings(**values)
    settings.validate()
    return settings
