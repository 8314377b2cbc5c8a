"""`dva fit`: train on the store's train split, select on val, write the run directory.

Plain PyTorch, one loop you can read: batches are index gathers into tensors that already
live on the training device; the model never sees an encoder.
"""

from __future__ import annotations

import dataclasses
import json
import time
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dva.errors import ConfigError, DvaWarning
from dva.metrics import ccc, p_va
from dva.trainer.data import Normaliser, SplitData, choose_sets, gather, left_out_message, load_split, window_index

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
    visual_features: str | None = None  # feature-set names, comma-separated; None = the store's only visual set
    audio_features: str | None = None  # likewise for audio
    text_tower: str | None = None  # MODEL/PRETRAINED of the prompt head's CLIP text tower; None = the store's CLIP set

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


@dataclass
class Features:
    """The store's train and val splits on the CPU, read once (ablations share them), from the chosen feature sets."""

    store_path: str
    provenance: dict  # dva_version, timeline, feature_sets {name: info} of the chosen sets, sets {modality: [names]}, text_towers
    train: SplitData
    val: SplitData


def load_features(store_path: str, audio_align: str = "nearest", visual_features: str | None = None, audio_features: str | None = None, modalities=MODALITIES) -> Features:
    """Train and val from the chosen feature sets of the store (see `choose_sets`); one DvaWarning names every
    failed or incomplete track left out."""
    from dva.stores import open_store

    store = open_store(store_path, mode="r")
    try:
        available = store.feature_sets()
        sets = choose_sets(available, visual_features, audio_features, modalities, store_path)
        provenance = {
            "dva_version": store.attrs.get("dva_version"), "timeline": store.attrs.get("timeline"),
            "feature_sets": {name: available[name] for names in sets.values() for name in names}, "sets": sets,
            "text_towers": clip_text_towers(available, sets),
        }
        features = Features(str(store_path), provenance, load_split(store, "train", sets, audio_align), load_split(store, "val", sets, audio_align))
    finally:
        store.close()
    message = left_out_message(features.train, features.val)
    if message:
        warnings.warn(DvaWarning(message), stacklevel=2)
    return features


def features_for(settings: "FitSettings") -> Features:
    return load_features(settings.features, settings.audio_align, settings.visual_features, settings.audio_features, settings.modality_list)


def clip_text_towers(available: dict, sets: dict) -> list[dict]:
    """The store's CLIP sets as text towers for the prompt head, the chosen visual sets first."""
    from dva.pipeline.encoders.naming import is_clip

    clip_sets = [name for name in sets["visual"] if is_clip(available[name].get("encoder") or {})]
    clip_sets += [name for name, info in available.items() if info.get("modality") == "visual" and is_clip(info.get("encoder") or {}) and name not in clip_sets]
    return [{"model": available[n]["encoder"]["model"], "pretrained": available[n]["encoder"].get("pretrained"), "from_set": n} for n in clip_sets]


def text_tower_for(settings: "FitSettings", provenance: dict) -> dict | None:
    """{"model", "pretrained"} of the CLIP whose text tower the prompt head uses: --text-tower MODEL/PRETRAINED, else the
    one a checkpoint recorded, else the store's CLIP set (the chosen visual one first); None with --prompt none."""
    if settings.prompt == "none":
        return None
    if settings.text_tower:
        model, _, pretrained = str(settings.text_tower).partition("/")
        return {"model": model, "pretrained": pretrained or None}
    if provenance.get("text_tower"):
        return provenance["text_tower"]
    if provenance.get("text_towers"):
        return provenance["text_towers"][0]
    raise ConfigError("the prompt head needs a CLIP text tower and the store has no CLIP feature set: pass --text-tower MODEL/PRETRAINED (e.g. ViT-B-32/openai) or --prompt none")


def resolve_device(requested: str | None) -> torch.device:
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {requested}: no CUDA device here; use --device cpu")
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(settings: FitSettings, provenance: dict, visual_dim: int, audio_dim: int, device):
    """The model for these settings; the prompt head gets the frozen CLIP text tower `text_tower_for` names."""
    from dva.trainer.model import VAModel

    clip_model = None
    if settings.prompt != "none":
        from dva.pipeline.encoders.clip import load_clip

        tower = text_tower_for(settings, provenance)
        clip_model = load_clip(tower["model"], tower.get("pretrained"), device=str(device))
    return VAModel(settings.model_settings(), visual_dim, audio_dim, clip_model=clip_model).to(device)


def trainable_state(model: torch.nn.Module) -> dict:
    """The state worth saving: everything but the frozen CLIP weights (rebuilt from the store's provenance)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in frozen}


def model_inputs(settings: FitSettings, batch: dict) -> dict:
    chosen = settings.modality_list
    return {
        "visual": batch["visual"] if "visual" in chosen else None,
        "audio": batch["audio"] if "audio" in chosen else None,
        "visual_mask": batch["visual_mask"],
        "audio_mask": batch["audio_mask"],
    }


@torch.no_grad()
def predict_frames(model, settings: FitSettings, data: SplitData, batch_size: int = 64) -> np.ndarray:
    """Per-frame (valence, arousal) float32 [N, 2] for every frame of data, overlapping windows averaged."""
    model.eval()
    device = data.visual.device
    index, inside = window_index(data.offsets, settings.seq_len, max(1, settings.seq_len // 2))
    index, inside = index.to(device), inside.to(device)
    total = torch.zeros(data.n_frames, 2, device=device)
    count = torch.zeros(data.n_frames, 1, device=device)
    for start in range(0, index.shape[0], batch_size):
        rows, valid = index[start : start + batch_size], inside[start : start + batch_size]
        with _autocast(device):
            va = model(**model_inputs(settings, gather(data, rows, valid)))["va"].float()
        weights = valid[..., None].float()
        total.index_add_(0, rows.reshape(-1), (va * weights).reshape(-1, 2))
        count.index_add_(0, rows.reshape(-1), weights.reshape(-1, 1))
    return (total / count.clamp_min(1)).cpu().numpy()


def evaluate(pred: np.ndarray, data: SplitData) -> dict:
    """ABAW's CCC over all valid frames concatenated, and per track."""
    labels = data.labels.cpu().numpy()
    result = {"ccc_v": ccc(pred[:, 0], labels[:, 0]), "ccc_a": ccc(pred[:, 1], labels[:, 1])}
    result["p_va"] = p_va(result["ccc_v"], result["ccc_a"])
    result["per_track"] = {}
    for i, track in enumerate(data.tracks):
        part = data.track_slice(i)
        result["per_track"][track] = {
            "frames": int(part.stop - part.start),
            "valid": int(data.label_mask[part].sum()),
            "ccc_v": ccc(pred[part, 0], labels[part, 0]),
            "ccc_a": ccc(pred[part, 1], labels[part, 1]),
        }
    return result


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@dataclass
class FitResult:
    settings: FitSettings
    best: dict  # epoch, ccc_v, ccc_a, p_va
    history: list[dict]
    val_pred: np.ndarray
    per_track: dict
    model: torch.nn.Module
    normaliser: Normaliser
    seconds: float


def train(settings: FitSettings, features: Features, progress: bool = True) -> FitResult:
    """Train one model on features.train, keep the epoch with the best val P_VA."""
    from tqdm import tqdm

    from dva.trainer.losses import loss as compute_loss

    settings.validate()
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    device = resolve_device(settings.device)
    normaliser = Normaliser.fit(features.train)
    train_data = normaliser.apply(features.train).to(device)
    val_data = normaliser.apply(features.val).to(device)
    model = build_model(settings, features.provenance, train_data.visual.shape[1], train_data.audio.shape[1], device)
    index, inside = window_index(train_data.offsets, settings.seq_len, settings.stride)
    index, inside = index.to(device), inside.to(device)
    keep = (train_data.label_mask[index] & inside).any(dim=1)  # windows with no valid label teach nothing
    index, inside = index[keep], inside[keep]
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    history, best, best_state, stale = [], None, None, 0
    started = time.perf_counter()
    bar = tqdm(range(1, settings.epochs + 1), desc=f"fit {settings.fusion}/{settings.prompt}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        epoch_start, losses = time.perf_counter(), []
        order = torch.randperm(index.shape[0], generator=generator).to(device)
        for start in range(0, order.shape[0], settings.batch_size):
            chosen = order[start : start + settings.batch_size]
            batch = gather(train_data, index[chosen], inside[chosen])
            with _autocast(device):
                out = model(**model_inputs(settings, batch))
            value = compute_loss(
                {k: (v.float() if v is not None else None) for k, v in out.items()},
                batch["labels"], batch["label_mask"], settings.sigma, settings.lambda_prompt, settings.prompt,
            )
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimiser.step()
            losses.append(value.detach())
        scores = evaluate(predict_frames(model, settings, val_data), val_data)
        row = {
            "epoch": epoch,
            "loss": float(torch.stack(losses).mean()) if losses else float("nan"),
            "ccc_v": scores["ccc_v"], "ccc_a": scores["ccc_a"], "p_va": scores["p_va"],
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", p_va=f"{row['p_va']:.3f}")
        if best is None or _better(row["p_va"], best["p_va"]):
            best, best_state, stale = {k: row[k] for k in ("epoch", "ccc_v", "ccc_a", "p_va")}, trainable_state(model), 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    model.load_state_dict(best_state, strict=False)
    val_pred = predict_frames(model, settings, val_data)
    final = evaluate(val_pred, val_data)
    return FitResult(settings, best, history, val_pred, final["per_track"], model, normaliser, time.perf_counter() - started)


def _better(new: float, old: float) -> bool:
    if np.isnan(old):
        return not np.isnan(new)
    return bool(new > old)


def write_run(result: FitResult, features: Features, out: Path) -> Path:
    """config.json, metrics.json, best.pt, val predictions (ABAW files) and plots under out."""
    from dva.trainer.plots import plot_run
    from dva.trainer.submission import write_per_track

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "settings": dataclasses.asdict(result.settings),
        "store": {"path": features.store_path, **features.provenance},
        "train_tracks": features.train.tracks,
        "val_tracks": features.val.tracks,
        "left_out": {"train": features.train.left_out, "val": features.val.left_out},
        "torch": torch.__version__,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    metrics = {
        "best": result.best, "epochs": result.history, "per_track": result.per_track, "seconds": result.seconds,
        "val_tracks": len(features.val.tracks), "val_left_out": features.val.left_out,
    }
    (out / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2))
    torch.save(
        {
            "settings": dataclasses.asdict(result.settings),
            "state": trainable_state(result.model),
            "normaliser": result.normaliser.state(),
            "visual_dim": features.train.visual.shape[1],
            "audio_dim": features.train.audio.shape[1],
            "provenance": {**features.provenance, "text_tower": text_tower_for(result.settings, features.provenance)},
        },
        out / "best.pt",
    )
    write_per_track(out / "val_predictions", features.val.tracks, features.val.offsets, result.val_pred)
    plot_run(out, result.history, features.val, result.val_pred)
    return out


def _finite(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def fit(settings: FitSettings, progress: bool = True) -> tuple[FitResult, Path]:
    """Load the store, train, write the run directory."""
    features = features_for(settings)
    result = train(settings, features, progress=progress)
    return result, write_run(result, features, Path(settings.out))
