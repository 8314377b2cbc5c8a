"""The run directory `dva fit` writes and `dva predict` reads: config.json, metrics.json, best.pt, val
predictions and plots; checkpoints are loaded with strict key checks.

The frozen CLIP text weights are never saved (they are rebuilt from the store's provenance), so
"strict" means: every saved key is a key of the model the settings build, and every key of that
model that is not a frozen weight was saved.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from dva.errors import RunError

CHECKPOINT = "best.pt"


def trainable_state(model: torch.nn.Module) -> dict:
    """The state worth saving: everything but the frozen CLIP weights (rebuilt from the store's provenance)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in frozen}


def load_state_strictly(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load a `trainable_state` into model; RunError naming the keys when it does not match the model."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    keys = set(model.state_dict())
    missing = sorted(keys - frozen - set(state))
    unexpected = sorted(set(state) - keys)
    if missing or unexpected:
        parts = [f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "",
                 f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}" if unexpected else ""]
        raise RunError(f"{source}: the checkpoint does not match the model its settings build ({'; '.join(p for p in parts if p)}); "
                       "it was written by another dva or edited: fit it again")
    try:
        model.load_state_dict(state, strict=False)  # the frozen CLIP weights are absent by design (checked above)
    except RuntimeError as exc:  # shapes differ
        raise RunError(f"{source}: the checkpoint does not match the model its settings build ({str(exc).splitlines()[-1].strip()})") from None


def write_run(result, features, out: Path) -> Path:
    """config.json, metrics.json, best.pt, val predictions (ABAW files) and plots under out.

    result: a `dva.trainer.fit.FitResult`; features: the `dva.trainer.fit.Features` it was trained on."""
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
    (out / "metrics.json").write_text(json.dumps(finite(metrics), indent=2))
    torch.save(
        {
            "settings": dataclasses.asdict(result.settings),
            "state": trainable_state(result.model),
            "normaliser": result.normaliser.state(),
            "visual_dim": features.train.visual.shape[1],
            "audio_dim": features.train.audio.shape[1],
            "provenance": features.provenance,
        },
        out / CHECKPOINT,
    )
    write_per_track(out / "val_predictions", features.val.tracks, features.val.offsets, result.val_pred)
    plot_run(out, result.history, features.val, result.val_pred)
    return out


def finite(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def load_run(run: Path, device=None):
    """(settings, model, normaliser, provenance) from a run directory written by `dva fit`."""
    from dva.trainer.data import Normaliser
    from dva.trainer.evaluate import build_model, resolve_device
    from dva.trainer.settings import settings_from, upgrade_settings

    checkpoint_path = Path(run) / CHECKPOINT
    if not checkpoint_path.is_file():
        raise RunError(f"{run}: no {CHECKPOINT} here; pass a run directory written by `dva fit`")
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    settings = settings_from(**{**upgrade_settings(checkpoint["settings"]), "device": device})
    device = resolve_device(device)
    model = build_model(settings, checkpoint["provenance"], checkpoint["visual_dim"], checkpoint["audio_dim"], device)
    load_state_strictly(model, checkpoint["state"], str(checkpoint_path))
    return settings, model, Normaliser.from_state(checkpoint["normaliser"]), checkpoint["provenance"]
