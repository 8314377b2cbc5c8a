"""`dva predict`: ABAW-format prediction files from a run directory and a store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dva.errors import ConfigError
from dva.trainer.data import SplitData


def write_predictions(out: Path, data: SplitData, pred: np.ndarray) -> list[Path]:
    """One `<track>.txt` per track: header `valence,arousal`, one line per row, values in [-1, 1]."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, track in enumerate(data.tracks):
        rows = np.clip(pred[data.track_slice(i)], -1.0, 1.0)
        path = out / f"{track}.txt"
        lines = ["valence,arousal"] + [f"{v:.6f},{a:.6f}" for v, a in rows]
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


def load_run(run: Path, device=None):
    """(settings, model, normaliser, provenance) from a run directory written by `dva fit`."""
    from dva.trainer.data import Normaliser
    from dva.trainer.fit import build_model, resolve_device, settings_from

    checkpoint_path = Path(run) / "best.pt"
    if not checkpoint_path.is_file():
        raise ConfigError(f"{run}: no best.pt here; pass a run directory written by `dva fit`")
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    settings = settings_from(**{**checkpoint["settings"], "device": device})
    device = resolve_device(device)
    model = build_model(settings, checkpoint["provenance"], checkpoint["visual_dim"], checkpoint["audio_dim"], device)
    model.load_state_dict(checkpoint["state"], strict=False)
    return settings, model, Normaliser.from_state(checkpoint["normaliser"]), checkpoint["provenance"]


def predict(run: Path, features: str, split: str, out: Path, device=None) -> dict:
    """Predict every frame of every complete track of split; returns {"tracks", "frames", "out"}."""
    from dva.stores import open_store
    from dva.trainer.data import load_split
    from dva.trainer.fit import predict_frames

    settings, model, normaliser, provenance = load_run(run, device)
    store = open_store(features, mode="r")
    try:
        wanted = provenance.get("visual_encoder"), provenance.get("audio_encoder")
        have = store.attrs.get("visual_encoder"), store.attrs.get("audio_encoder")
        if have != wanted:
            raise ConfigError(f"{features} was extracted with other encoders than the store {run} was trained on; extract with the same flags")
        data = load_split(store, split, settings.audio_align)
    finally:
        store.close()
    data = normaliser.apply(data).to(next(model.parameters()).device)
    pred = predict_frames(model, settings, data)
    write_predictions(out, data, pred)
    return {"tracks": len(data.tracks), "frames": data.n_frames, "out": str(out)}
