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

TASK_NAMES = ("va", "expr", "au", "mtl")  # the challenges a head is trained for (dva.data.tasks describes each; mtl: one model, all three)
TASK_WEIGHTINGS = ("fixed", "uncertainty")  # MTL's losses: --task-weights as given, or those times learned uncertainty (Kendall et al.)
TEMPORALS = ("gru", "tcn", "transformer")  # the temporal encoders over each modality's window (model.temporal registers each)
FUSIONS = ("concat", "xattn", "gated", "hierarchical")
PROMPTS = ("none", "fixed", "learnable")  # the text: no prompt head, hand-written prompts, CoOp context vectors
LABELS = ("soft", "hard")  # the prompt head's target: Gaussian over region centres, or one-hot of the nearest
READOUTS = ("regression", "prompt", "blend")  # where the prediction comes from (prompt: sum_k p_k c_k)
STITCHES = ("mean", "hann")  # how overlapping evaluation windows are averaged
SMOOTH_CHOICES = (0.0, 0.1, 0.2, 0.4, 0.8)  # seconds of Gaussian smoothing `dva fit` chooses from on held-out tracks
SCHEDULES = ("constant", "cosine")
AUDIO_ALIGNS = ("nearest", "linear")  # how audio steps are read at frame times: the nearest step, or the two around it
PROMPT_INPUTS = ("fused", "visual")  # what the prompt head reads: the fused stream (projected), or the visual set as stored
HEADS = ("linear", "mlp")  # VA's regression head: tanh of a linear layer per frame, or the released MLP (256-128-2, no tanh)
GATE_PARTNERS = ("audio", "visual")  # hierarchical fusion: gate(attended visual, attended audio), or one-way attention then gate(attended, visual)
TARGETS = ("frame", "last")  # every frame of a window a target, or one per window (its last frame; past windows of sampled frames)
TRAIN_SPLITS = ("train", "val")  # the labelled splits  # the learning rate after --warmup
CHOICES = {"task": TASK_NAMES, "task_weighting": TASK_WEIGHTINGS, "temporal": TEMPORALS, "fusion": FUSIONS, "prompt": PROMPTS, "labels": LABELS, "readout": READOUTS,
           "stitch": STITCHES, "schedule": SCHEDULES, "audio_align": AUDIO_ALIGNS, "prompt_input": PROMPT_INPUTS, "head": HEADS, "gate_partner": GATE_PARTNERS,
           "target": TARGETS}
# dva 0.1's --prompt tied text and labels together; runs written then are read as these two settings
OLD_PROMPTS = {"hard": {"prompt": "fixed", "labels": "hard"}, "soft": {"prompt": "learnable", "labels": "soft"}}


@dataclass(frozen=True)
class FitSettings:
    """Every `dva fit` flag (and `--config` TOML key) with its default; written whole to config.json. `dva.fit`,
    `dva.ablate` take the same names as keywords.

    >>> dva.FitSettings().seq_len, dva.FitSettings(temporal="tcn", epochs=10).temporal
    (64, 'tcn')
    """

    features: str = "stores"
    out: str = "runs/fit"
    modalities: str = "visual,audio"
    task: str = "va"  # va | expr | au | mtl: whose labels, splits, head, loss and figure (mtl: the three heads on one model)
    temporal: str = "gru"
    tcn_kernel: int = 3  # --temporal tcn: kernel of every dilated convolution (odd: the padding is symmetric)
    temporal_layers: int = 2  # --temporal transformer: encoder layers
    fusion: str = "hierarchical"
    prompt: str | None = None  # None: the task's own (`default_prompt`): learnable, none for AU (it has no prompt head)
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
    # The axes the authors' released code (byeongjin1/abaw10th_imlab-va-) needs; each default is dva's behaviour before them.
    region_centre: float = 2 / 3  # the 3x3 grid's outer centre coordinate (soft and hard labels, prompt readout); released 0.66
    prompt_templates: tuple[str, ...] | None = None  # --prompt fixed: several templates per region, features averaged per region; None: one
    logit_scale: str = "learnable"  # the prompt head's scale: learnable (exp of a parameter, CLIP's init) or a fixed number (released 10)
    prompt_input: str = "fused"  # fused | visual (the visual set as stored, no projection; target last: its mean over the window)
    head: str = "linear"  # linear (tanh) | mlp (Linear-ReLU-Dropout 0.2-Linear to 2, no tanh)
    gate_partner: str = "audio"  # hierarchical fusion: audio (attention both ways, gate(v, a)) | visual (one way, gate(attended, v))
    causal: bool = False  # every temporal model, and the fusion's attention, sees only the past
    tcn_levels: int = 0  # --temporal tcn: levels (dilations 1, 2, 4, ...); 0: as many as cover the window
    target: str = "frame"  # frame | last (one target per window: its last frame, the window averaged over time before the head)
    window_seconds: float = 10.0  # --target last: the past window ending at the target frame
    window_frames: int = 20  # --target last: frames sampled evenly by time among the window's crops
    train_stride_seconds: float = 3.0  # --target last: seconds between training targets (after the first window_seconds)
    task_weights: str = "1,1,1"  # --task mtl: V,E,A, the weights of the VA, EXPR and AU losses
    task_weighting: str = "fixed"  # --task mtl: fixed (task_weights) or uncertainty (each also x exp(-s) + s, s learned)
    recipe: str | None = None  # the recipe (dva/recipes/NAME.toml, or a file) these settings start from; flags override it
    recipe_sha256: str | None = None  # its file's checksum when the run was made

    def __post_init__(self):
        if self.prompt is None:  # frozen: the task's default, written whole to config.json like any setting
            object.__setattr__(self, "prompt", default_prompt(self.task))

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
        self._validate_released()
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
            raise ConfigError(f"--task au has no prompt head (twelve independent action units): leave --prompt {self.prompt} out (its default is none)")
        self.task_weight_triple  # ConfigError unless three weights
        if self.task != "mtl" and (self.task_weights != "1,1,1" or self.task_weighting != "fixed"):
            raise ConfigError(f"--task-weights and --task-weighting weigh the three losses of --task mtl; --task {self.task} has one")
        if self.task == "au" and self.readout != "regression":
            raise ConfigError(f"--task au reads its linear head: leave --readout {self.readout} out")
        if self.descriptions is not None and (wanted is None or len(self.descriptions) != wanted[0]):
            count = wanted[0] if wanted else 0
            raise ConfigError(f"descriptions must hold {count} texts ({wanted[1] if wanted else 'no prompt head'}) for --task {self.task}, got {len(self.descriptions)}")

    def _validate_temporal(self) -> None:
        if self.causal and self.tcn_kernel < 2:
            raise ConfigError(f"--tcn-kernel must be at least 2, not {self.tcn_kernel}")
        if not self.causal and (self.tcn_kernel < 3 or self.tcn_kernel % 2 == 0):
            raise ConfigError(f"--tcn-kernel must be odd and at least 3 (the convolutions are centred), not {self.tcn_kernel}")
        if self.tcn_levels < 0:
            raise ConfigError(f"--tcn-levels must be 0 (as many as cover the window) or more, not {self.tcn_levels}")
        if self.causal and self.bidirectional:
            raise ConfigError("--causal sees only the past: a bidirectional GRU reads the future; use --unidirectional")
        if self.temporal_layers < 1:
            raise ConfigError("--temporal-layers must be at least 1")
        if self.temporal == "transformer" and (self.heads < 1 or self.hidden % self.heads):
            raise ConfigError(f"--temporal transformer: --hidden ({self.hidden}) must be divisible by --heads ({self.heads})")

    def _validate_released(self) -> None:
        if not 0 < self.region_centre <= 1:
            raise ConfigError(f"--region-centre is the grid's outer centre coordinate in (0, 1], not {self.region_centre}")
        self.fixed_logit_scale  # ConfigError unless learnable or a positive number
        if self.prompt_templates is not None:
            if self.prompt != "fixed":
                raise ConfigError("--prompt-templates are the fixed prompts' sentences: pass --prompt fixed (learnable prompts use context vectors)")
            if not self.prompt_templates or any(t.count("{}") != 1 for t in self.prompt_templates):
                raise ConfigError(f"--prompt-templates: each template holds one {{}} where the region's text goes, not {list(self.prompt_templates)!r}")
        if self.prompt_input == "visual" and ("visual" not in self.modality_list or self.prompt == "none" or self.task != "va"):
            raise ConfigError("--prompt-input visual reads the visual features: needs --task va, visual in --modalities and a prompt head")
        if self.head != "linear" and self.task != "va":
            raise ConfigError(f"--head {self.head} is VA's regression head: leave it out for --task {self.task}")
        if self.gate_partner != "audio" and self.fusion != "hierarchical":
            raise ConfigError(f"--gate-partner {self.gate_partner} changes the hierarchical fusion: pass --fusion hierarchical")
        if self.target == "last":
            if self.window_seconds <= 0 or self.window_frames < 1 or self.train_stride_seconds <= 0:
                raise ConfigError("--window-seconds and --train-stride-seconds must be positive, --window-frames at least 1")
            if self.task != "va":
                raise ConfigError(f"--target last is for --task va, not {self.task}")

    @property
    def fixed_logit_scale(self) -> float | None:
        """The prompt head's fixed logit scale, or None when it is learnable (--logit-scale learnable)."""
        if str(self.logit_scale) == "learnable":
            return None
        try:
            value = float(self.logit_scale)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise ConfigError(f"--logit-scale must be learnable or a positive number (the released code: 10), not {self.logit_scale!r}")
        return value

    @property
    def past_only(self) -> bool:
        """Each prediction sees only the past (causal models or one target per past window): no centred smoothing."""
        return self.causal or self.target == "last"

    @property
    def window_length(self) -> int:
        """Frames a model window holds: --seq-len, or --window-frames with --target last."""
        return self.window_frames if self.target == "last" else self.seq_len

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
    def task_weight_triple(self) -> tuple[float, float, float]:
        """(w_va, w_expr, w_au) of --task-weights V,E,A: finite, 0 or more, not all 0."""
        try:
            triple = tuple(float(p) for p in str(self.task_weights).split(","))
        except ValueError:
            triple = ()
        if len(triple) != 3 or not all(0 <= w < float("inf") for w in triple) or not any(triple):
            raise ConfigError(f"--task-weights must be three weights V,E,A (VA, EXPR, AU losses; 0 or more, not all 0), e.g. 1,0.5,0.5 (1+0.5+0.5 in dva ablate), not {self.task_weights!r}")
        return triple

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


def default_prompt(task: str) -> str:
    """The prompt setting a task takes when none is given: none for AU (twelve units, no prompt head), else learnable
    (VA's regions, EXPR's classes; MTL's VA head, as the method has it)."""
    return "none" if task == "au" else "learnable"


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


def settings_from(config: Path | None = None, with_recipe: str | None = None, **flags) -> FitSettings:
    """FitSettings from an optional recipe (its [fit], and the store's sets it expects where no set is named),
    then an optional TOML file, then the flags that were given (not None): each overrides the one before."""
    values: dict = {}
    known = {f.name for f in dataclasses.fields(FitSettings)}
    recipe = None
    if with_recipe is not None:
        from dva import recipes

        recipe = recipes.load(with_recipe)
        recipes.unknown_keys(recipe, "fit", known - {"recipe", "recipe_sha256"})
        values = {**recipe.fit, "recipe": str(with_recipe), "recipe_sha256": recipe.sha256}
    values.update(given_values(config, **flags))
    for name in ("va_weights", "task_weights"):
        if isinstance(values.get(name), list):  # TOML: va_weights = [0.7, 0.3]
            values[name] = ",".join(str(w) for w in values[name])
    for name in ("descriptions", "prompt_templates"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    if isinstance(values.get("prompt_templates"), str):  # the CLI and --set: templates separated by |
        values["prompt_templates"] = tuple(t for t in values["prompt_templates"].split("|") if t)
    if isinstance(values.get("logit_scale"), (int, float)) and not isinstance(values.get("logit_scale"), bool):  # TOML: logit_scale = 10
        values["logit_scale"] = str(values["logit_scale"])
    settings = FitSettings(**values)
    settings.validate()
    if recipe is not None and recipe.extract:
        from dva.trainer.loading.recipe_sets import recipe_sets

        chosen = recipe_sets(settings.features, recipe, settings.modality_list, named={"visual": settings.visual_features, "audio": settings.audio_features})
        settings = dataclasses.replace(settings, **chosen)
    return settings


def given_values(config: Path | None = None, **flags) -> dict:
    """The settings a user gave: a TOML file's (checked), overridden by the flags that are not None."""
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
        if {"recipe", "recipe_sha256"} & set(values):
            raise ConfigError(f"{config}: a recipe is chosen with --recipe NAME (this file's settings then override it), not inside a config")
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def settings_for_store(settings: FitSettings, given_modalities: bool) -> FitSettings:
    """settings with --modalities visual when they were not given, the store has no audio set, and it is a store of
    s-Aff-Wild2 (no sound: the challenge's rules forbid it; any task) or the task is MTL; otherwise settings as they are
    (a full-release store without audio is refused when loaded, naming `dva extract --only audio`)."""
    from dva.data.s_aff_wild2 import LAYOUT as IMAGE_SET
    from dva.stores import open_store

    if given_modalities or "audio" not in settings.modality_list or settings.audio_features:
        return settings
    with open_store(settings.features, "r") as store:
        has_audio = any(info.get("modality") == "audio" for info in store.feature_sets().values())
        images = store.attrs.get("dataset") == IMAGE_SET
    return settings if has_audio or not (images or settings.task == "mtl") else dataclasses.replace(settings, modalities="visual")
