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
    """The state worth saving: everything but the frozen CLIP weights (rebuilt from the store's provenance).
    A copy: on the CPU `.cpu()` would share storage with the live weights, which training goes on changing."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k not in frozen}


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
    """config.json, metrics.json, best.pt, held-out predictions (ABAW files) and plots under out.

    result: a `dva.trainer.fit.FitResult`; features: the `dva.trainer.fit.Features` it was trained on."""
    from dva.trainer.plots import plot_run
    from dva.trainer.submission import write_per_track

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    held = result.held
    config = {
        "settings": dataclasses.asdict(result.settings),
        "store": {"path": features.store_path, **features.provenance},
        "train_tracks": result.train_tracks,
        "val_tracks": held.tracks if held is not None else [],
        "held_out": result.held_name,
        "left_out": {"train": features.train.left_out, "val": features.val.left_out},
        "torch": torch.__version__,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "metrics.json").write_text(json.dumps(finite(run_metrics(result, features)), indent=2))
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
    if held is not None:
        write_per_track(out / "val_predictions", held.tracks, held.offsets, result.val_pred)
    plot_run(out, result.history, held, result.val_pred)
    return out


def run_metrics(result, features) -> dict:
    """metrics.json of one run: every figure under the name of what it is, and a line saying so."""
    from dva.trainer.evaluate import evaluate_frames, smooth

    held, name = result.held, result.held_name or "the held-out tracks"
    metrics: dict = {"train_splits": result.settings.train_splits, "held_out": result.held_name}
    if held is None:
        last = result.history[-1]
        metrics["figures"] = {"final": "the last epoch (no selection); nothing was held out, so it has no score"}
        metrics["final"] = {"epoch": last["epoch"], "loss": last["loss"], "ccc_v": None, "ccc_a": None, "p_va": None}
        metrics["smooth_seconds"] = 0.0
        metrics["smoothing"] = {"seconds": 0.0, "selected_on": None, "note": "nothing held out to choose a width on; pass dva predict --smooth"}
    else:
        seconds = result.smoothing["seconds"]
        metrics["figures"] = {
            "best_val": f"the epoch kept, scored on {name}, which also selected it (optimistic)",
            "final": f"the last epoch, scored on {name} (not selected)",
            "best_val_smoothed": f"best_val after {seconds} s of smoothing, the width that scored best on {name} (selected on it too)",
        }
        metrics["best_val"] = result.best
        metrics["final"] = result.final
        metrics["best_val_smoothed"] = {"epoch": result.best["epoch"], **evaluate_frames(smooth(result.val_pred, held, seconds), held), "smooth_seconds": seconds}
        metrics["smooth_seconds"] = seconds
        metrics["smoothing"] = result.smoothing
    metrics.update({
        "epochs": result.history, "per_track": result.per_track, "seconds": result.seconds,
        "val_tracks": len(held.tracks) if held is not None else 0, "val_left_out": features.val.left_out,
    })
    return metrics


SUMMARY = ("figures", "oof", "oof_smoothed", "oof_last", "best_val", "best_val_smoothed", "final", "smooth_seconds", "folds")


def run_summary(out: Path) -> dict:
    """The figures of a run (or folds) directory's metrics.json, and "run": where it is."""
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    return {"run": str(out), **{k: metrics[k] for k in SUMMARY if k in metrics}}


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
