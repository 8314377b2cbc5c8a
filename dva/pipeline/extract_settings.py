"""What one `dva extract` run is asked (`ExtractSettings`, every flag) and what it answers (`ExtractReport`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dva.data.tasks import parse_tasks
from dva.errors import ConfigError, DataError, StoreError
from dva.pipeline.encoders import PRESETS
from dva.stores import HDF5_SUFFIXES, MODALITIES, check_set_name

DEFAULT = PRESETS["default"]  # the encoder families' own default ids, not retyped here

VISUAL_SOURCES = ("auto", "crops", "video")
JPEG_DECODERS = ("cpu", "cuda")
BATCH_SIZES = {"cpu": 64, "cuda": 256}  # --batch-size's default by device kind: a GPU runs ViT-B-32 on 256 crops at once with room to spare
# how frame times are made: shared by every feature set of a store, so a store never mixes two clocks
TIMELINE = {"frame_time": "container timestamps (video packet pts), 0 at the first frame", "audio_start": "PyAV, start offset applied on the frame clock"}


@dataclass(frozen=True)
class ExtractSettings:
    """Every `dva extract` flag; the encoder ones decide the store's identity."""

    data: str
    split: str
    out: str = "stores"
    visual_encoder: str = "clip"  # a family of dva.pipeline.encoders.VISUAL_FAMILIES
    audio_encoder: str = "ast"  # a family of AUDIO_FAMILIES
    clip_model: str = DEFAULT["clip_model"]
    clip_pretrained: str | None = DEFAULT["clip_pretrained"]
    clip_norm: str = "clip"  # the pixels' mean and std: CLIP's own, or ImageNet's (what the seed paper's released code feeds CLIP)
    hf_model: str = DEFAULT["hf_model"]
    timm_model: str = DEFAULT["timm_model"]
    timm_weights: str | None = None  # a local weights file (safetensors or a torch state dict); None: timm's pretrained weights
    ast_model: str = DEFAULT["ast_model"]
    wav2vec2_model: str = DEFAULT["wav2vec2_model"]
    audio_layer: str = "mean"  # wav2vec2: a hidden-state index, or "mean" of them all
    audio_mode: str = "window"
    audio_window: float = 1.0
    audio_hop: float = 0.1
    audio_pad: bool = False  # window mode: pad each window to the AST's max_length instead of running it at its own length
    audio_frontend: str = "kaldi"  # AST's input: kaldi (ASTFeatureExtractor's fbank) or mel (torchaudio mel in dB, the seed code's)
    visual_source: str = "auto"
    crops: str | None = None  # a folder whose cropped_aligned/ holds the faces to read instead of DATA's (`dva faces --out`)
    batch_size: int | None = None  # None: BATCH_SIZES of the device (`resolved`)
    device: str | None = None
    workers: int = 0
    scheduler: str | None = None
    overwrite: bool = False
    progress: bool = True
    test_list: str | None = None  # override the VA test list found in data
    sample: str | None = None  # override the organisers' sample file found in data
    shard: str | None = None  # "I/N": this process takes videos I, I+N, I+2N, ... (0-based)
    claim_timeout: float = 600.0  # seconds without a heartbeat before another process takes a claim over
    jpeg_decoder: str = "cpu"  # "cuda": crops decoded on the GPU by nvJPEG (batched); "cpu": libjpeg-turbo in a thread pool
    only: str | None = None  # "visual" or "audio": make one feature set, not both
    name: str | None = None  # the feature set's name (with --only); default: derived from the encoder
    allow_other_device: bool = False  # continue a set made on another kind of device (cpu/cuda), with a warning
    tasks: str | None = None  # "va,expr,au": whose split's tracks to take (default: every task the release has)
    fps: float | None = None  # an image set's (s-Aff-Wild2) frame clock: its frame numbers' rate (default 30)

    def resolved(self, default_device: str) -> ExtractSettings:
        """These settings with the device (default_device when not given) and the batch size (`BATCH_SIZES` of the
        device's kind when not given) decided: what a run, and every Dask worker of it, works with."""
        device = self.device or default_device
        batch = self.batch_size if self.batch_size is not None else BATCH_SIZES.get(str(device).split(":")[0], BATCH_SIZES["cpu"])
        return dataclasses.replace(self, device=device, batch_size=batch)

    @property
    def modalities(self) -> tuple[str, ...]:
        return (self.only,) if self.only else MODALITIES

    def validate(self) -> None:
        from dva.pipeline.encoders import AUDIO_FAMILIES, VISUAL_FAMILIES
        from dva.pipeline.encoders.ast import MODES as AUDIO_MODES

        if self.visual_encoder not in VISUAL_FAMILIES:
            raise ConfigError(f"--visual-encoder must be one of {', '.join(VISUAL_FAMILIES)}, not {self.visual_encoder!r}")
        if self.timm_weights is not None and self.visual_encoder != "timm":
            raise ConfigError(f"--timm-weights loads into the timm family: add --visual-encoder timm (this run's is {self.visual_encoder})")
        if self.audio_encoder not in AUDIO_FAMILIES:
            raise ConfigError(f"--audio-encoder must be one of {', '.join(AUDIO_FAMILIES)}, not {self.audio_encoder!r}")
        if not (str(self.audio_layer) == "mean" or str(self.audio_layer).isdigit()):
            raise ConfigError(f"--audio-layer must be 'mean' or a hidden-state index 0, 1, 2, ..., not {self.audio_layer!r}")
        if self.jpeg_decoder not in JPEG_DECODERS:
            raise ConfigError(f"--jpeg-decoder must be one of {', '.join(JPEG_DECODERS)}, not {self.jpeg_decoder!r}")
        if self.jpeg_decoder == "cuda":
            import torch

            if not torch.cuda.is_available() or str(self.device or "cuda").startswith("cpu"):
                raise ConfigError("--jpeg-decoder cuda decodes on the GPU the encoders run on: there is none here (use --jpeg-decoder cpu)")
        if self.visual_source not in VISUAL_SOURCES:
            raise ConfigError(f"--visual-source must be one of {', '.join(VISUAL_SOURCES)}, not {self.visual_source!r}")
        if self.crops is not None and self.visual_source == "video":
            raise ConfigError("--crops names the faces to read: it cannot go with --visual-source video")
        from dva.pipeline.encoders.ast import FRONTENDS
        from dva.pipeline.encoders.clip import NORMS

        if self.clip_norm not in NORMS:
            raise ConfigError(f"--clip-norm must be one of {', '.join(NORMS)}, not {self.clip_norm!r}")
        if self.audio_frontend not in FRONTENDS:
            raise ConfigError(f"--audio-frontend must be one of {', '.join(FRONTENDS)}, not {self.audio_frontend!r}")
        if self.audio_mode not in AUDIO_MODES:
            raise ConfigError(f"--audio-mode must be one of {', '.join(AUDIO_MODES)}, not {self.audio_mode!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if not (self.audio_hop > 0 and self.audio_window > 0):
            raise ConfigError("--audio-hop and --audio-window must be positive")
        if (self.workers or self.scheduler) and str(self.out).lower().endswith(HDF5_SUFFIXES):
            raise ConfigError("HDF5 has no concurrent writers: extract into a Zarr store with --workers/--scheduler, then `dva convert` it")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.tasks is not None:
            try:
                parse_tasks(self.tasks)
            except DataError as exc:
                raise ConfigError(str(exc)) from None
        if self.fps is not None and not self.fps > 0:
            raise ConfigError(f"--fps must be positive, not {self.fps}")
        if self.claim_timeout <= 0:
            raise ConfigError("--claim-timeout must be positive")
        if self.only is not None and self.only not in MODALITIES:
            raise ConfigError(f"--only must be visual or audio, not {self.only!r}")
        if self.name is not None:
            if self.only is None:
                raise ConfigError("--name names one feature set: use it with --only visual or --only audio")
            try:
                check_set_name(self.name)
            except StoreError as exc:
                raise ConfigError(f"--name {exc}") from None


def extract_settings_from(preset: str | None = None, recipe: str | None = None, **flags) -> ExtractSettings:
    """ExtractSettings from a recipe's [extract] (the feature sets it expects; dva/recipes), then a named encoder
    configuration (`PRESETS`: "tiny" puts small random encoders in the recipe's families, for tests and the demo;
    "default" the families' own ids, which a recipe's models override), then the flags that were given (not None);
    validated."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}: use one of {', '.join(PRESETS)}")
    values = dict(PRESETS["default"])
    if recipe is not None:
        from dva import recipes

        chosen = recipes.load(recipe)
        recipes.unknown_keys(chosen, "extract", {f.name for f in dataclasses.fields(ExtractSettings)})
        values.update(chosen.extract)
    if preset not in (None, "default") or recipe is None:
        values.update(PRESETS[preset or "default"])
    settings = ExtractSettings(**{**values, **{k: v for k, v in flags.items() if v is not None}})
    settings.validate()
    return settings


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N) with 0 <= I < N."""
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 (the first of four shares)")
    return i, n


@dataclass
class ExtractReport:
    """What one `dva extract` run did; `failed` maps track -> one-line reason."""

    store: str
    split: str
    extracted: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # complete before this run
    elsewhere: list[str] = dataclasses.field(default_factory=list)  # done (or failed) by another process meanwhile
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    masked_crops: list[str] = dataclasses.field(default_factory=list)  # crops there but undecodable, one message each (their rows masked)
    sound: dict[str, str] = dataclasses.field(default_factory=dict)  # video -> what keeping its sound on time took (also among warnings)
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "frames_per_second": self.frames_per_second}
