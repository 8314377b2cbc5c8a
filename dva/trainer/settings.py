"""`dva fit` settings and the one definition of every list of choices the trainer offers.

Light on purpose (no torch): the CLI, ablation keys and TOML configs read it without the model.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dva.errors import ConfigError
from dva.stores.attrs import MODALITIES  # noqa: F401  (the trainer's modalities are the store's)

TASK_NAMES = ("va", "expr", "au")  # the challenges a head is trained for (dva.data.tasks describes each)
TEMPORALS = ("gru", "tcn", "transformer")  # the temporal encoders over each modality's window (model.temporal registers each)
FUSIONS = ("concat", "xattn", "gated", "hierarchical")
PROMPTS = ("none", "fixed", "learnable")  # the text: no prompt head, hand-written prompts, CoOp context vectors
LABELS = ("soft", "hard")  # the prompt head's target: Gaussian over region centres, or one-hot of the nearest
READOUTS = ("regression", "prompt", "blend")  # where the prediction comes from (prompt: sum_k p_k c_k)
STITCHES = ("mean", "hann")  # how overlapping evaluation windows are averaged
SMOOTH_CHOICES = (0.0, 0.1, 0.2, 0.4, 0.8)  # seconds of Gaussian smoothing `dva fit` chooses from on held-out tracks
SCHEDULES = ("constant", "cosine")
AUDIO_ALIGNS = ("nearest", "linear")  # how audio steps are read at frame times: the nearest step, or the two around it
TRAIN_SPLITS = ("train", "val")  # the labelled splits  # the learning rate after --warmup
CHOICES = {"task": TASK_NAMES, "temporal": TEMPORALS, "fusion": FUSIONS, "prompt": PROMPTS, "labels": LABELS, "readout": READOUTS, "stitch": STITCHES, "schedule": SCHEDULES, "audio_align": AUDIO_ALIGNS}
# dva 0.1's --prompt tied text and labels together; runs written then are read as these two settings
OLD_PROMPTS = {"hard": {"prompt": "fixed", "labels": "hard"}, "soft": {"prompt": "learnable", "labels": "soft"}}


@dataclass(frozen=True)
class FitSettings:
    """Every `dva fit` flag (and `--config` TOML key); written whole to config.json."""

    features: str = "stores"
    out: str = "runs/fit"
    modalities: str = "visual,audio"
    task: str = "va"  # va | expr | au: whose labels, splits, head, loss and figure
    temporal: str = "gru"
    tcn_kernel: int = 3  # --temporal tcn: kernel of every dilated convolution (odd: the padding is symmetric)
    temporal_layers: int = 2  # --temporal transformer: encoder layers
    fusion: str = "hierarchical"
    prompt: str = "learnable"
    n_ctx: int = 4
    sigma: float = 0.35
    lambda_prompt: float = 0.5
    mse_weight: float = 0.0  # loss + this x MSE over valid frames (0: the paper's loss; Team RAS used 0.01)
    va_weights: str = "1,1"  # V,A: weights of valence and arousal in the CCC and MSE terms (Team RAS: 0.7,0.3)
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
    descriptions: tuple[str, ...] | None = None  # nine region texts (eight class texts for --task expr); None = the defaults
    labels: str = "soft"
    readout: str = "regression"
    stitch: str = "hann"
    train_splits: str = "train"
    schedule: str = "constant"
    warmup: float = 0.0
    folds: int = 0
    visual_features: str | None = None  # feature-set names, comma-separated; None = the store's only visual set
    audio_features: str | None = None  # likewise for audio
    text_tower: str | None = None  # MODEL/PRETRAINED of the prompt head's CLIP text tower; None = the store's CLIP set

    def validate(self) -> None:
        chosen = self.modality_list
        if not chosen or any(m not in MODALITIES for m in chosen):
            raise ConfigError(f"--modalities must be visual, audio or visual,audio, not {self.modalities!r}")
        for name in CHOICES:
            check_choice(name, getattr(self, name))
        if self.readout != "regression" and self.prompt == "none":
            raise ConfigError(f"--readout {self.readout} reads the prompt head: use --prompt fixed or learnable, or --readout regression")
        self._validate_task()
        for name in ("epochs", "batch_size", "hidden", "layers", "seq_len", "stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        self._validate_temporal()
        if self.sigma <= 0 or self.lr <= 0:
            raise ConfigError("--sigma and --lr must be positive")
        if not 0 <= self.mse_weight < float("inf"):
            raise ConfigError(f"--mse-weight must be 0 or more, not {self.mse_weight}")
        self.va_weight_pair  # ConfigError unless two weights
        splits = self.train_split_list
        if not splits or any(s not in TRAIN_SPLITS for s in splits) or len(set(splits)) != len(splits):
            raise ConfigError(f"--train-splits must be train, val or train,val, not {self.train_splits!r}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"--warmup is a fraction of the training steps in [0, 1), not {self.warmup}")
        if self.folds < 0 or self.folds == 1:
            raise ConfigError(f"--folds must be 0 (no folds) or at least 2, not {self.folds}")
        if self.folds and splits != ("train",):
            raise ConfigError("--folds cuts train and val together into folds; leave --train-splits out")

    def _validate_task(self) -> None:
        wanted = {"va": (9, "one per region"), "expr": (8, "one per expression class")}.get(self.task)
        if self.task == "au" and self.prompt != "none":
            raise ConfigError("--task au has no prompt head (twelve independent action units): pass --prompt none")
        if self.task == "au" and self.readout != "regression":
            raise ConfigError(f"--task au reads its linear head: leave --readout {self.readout} out")
        if self.descriptions is not None and (wanted is None or len(self.descriptions) != wanted[0]):
            count = wanted[0] if wanted else 0
            raise ConfigError(f"descriptions must hold {count} texts ({wanted[1] if wanted else 'no prompt head'}) for --task {self.task}, got {len(self.descriptions)}")

    def _validate_temporal(self) -> None:
        if self.tcn_kernel < 3 or self.tcn_kernel % 2 == 0:
            raise ConfigError(f"--tcn-kernel must be odd and at least 3 (the convolutions are centred), not {self.tcn_kernel}")
        if self.temporal_layers < 1:
            raise ConfigError("--temporal-layers must be at least 1")
        if self.temporal == "transformer" and (self.heads < 1 or self.hidden % self.heads):
            raise ConfigError(f"--temporal transformer: --hidden ({self.hidden}) must be divisible by --heads ({self.heads})")

    @property
    def va_weight_pair(self) -> tuple[float, float]:
        """(w_v, w_a) of --va-weights V,A: finite, 0 or more, not both 0."""
        parts = str(self.va_weights).split(",")
        try:
            pair = tuple(float(p) for p in parts)
        except ValueError:
            pair = ()
        if len(pair) != 2 or not all(0 <= w < float("inf") for w in pair) or pair == (0.0, 0.0):
            raise ConfigError(f"--va-weights must be two weights V,A (0 or more, not both 0), e.g. 0.7,0.3 (0.7+0.3 in dva ablate), not {self.va_weights!r}")
        return pair

    @property
    def train_split_list(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.train_splits.split(",") if s.strip())

    @property
    def held_out(self) -> str | None:
        """The split that selects the epoch: val, unless it is trained on (then none: the last epoch is kept)."""
        return None if "val" in self.train_split_list else "val"

    @property
    def modality_list(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.modalities.split(",") if m.strip())


def check_choice(name: str, value) -> None:
    """ConfigError unless value is one of the choices of setting name (see CHOICES)."""
    if name == "prompt" and value in OLD_PROMPTS:
        new = OLD_PROMPTS[value]
        raise ConfigError(f"--prompt {value} set the text and the labels at once; use --prompt {new['prompt']} --labels {new['labels']}")
    if value in CHOICES[name]:
        return
    choices = temporal_choices() if name == "temporal" else CHOICES[name]  # a plugin's name: read from the installed metadata
    if value not in choices:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, not {value!r}")


def temporal_choices() -> tuple[str, ...]:
    """The temporal encoders --temporal takes: dva's own, then those installed packages register (`dva.trainer.plugins`:
    their names only, nothing of theirs is imported)."""
    from dva.trainer.plugins import plugin_names

    return (*TEMPORALS, *plugin_names(TEMPORALS))


def upgrade_settings(values: dict) -> dict:
    """Settings saved by an older dva, as this one reads them: --prompt hard/soft split into --prompt and
    --labels, and windows stitched as they were then (a plain mean)."""
    values = dict(values)
    if values.get("prompt") in OLD_PROMPTS:
        values.update(OLD_PROMPTS[values["prompt"]])
    values.setdefault("stitch", "mean")
    return values


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
    if isinstance(values.get("va_weights"), list):  # TOML: va_weights = [0.7, 0.3]
        values["va_weights"] = ",".join(str(w) for w in values["va_weights"])
    if isinstance(values.get("descriptions"), list):
        values["descriptions"] = tuple(values["descriptions"])
    settings = FitSettings(**values)
    settings.validate()
    return settings
