"""`dva fit`: train on the store's train split, select on val, write the run directory.

Plain PyTorch, one loop you can read: batches are index gathers into tensors that already
live on the training device; the model never sees an encoder.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dva.errors import DvaWarning
from dva.trainer.data import Normaliser, SplitData, gather, left_out_message, load_split, window_index
from dva.trainer.evaluate import autocast, build_model, evaluate, model_inputs, predict_frames, resolve_device
from dva.trainer.run_dir import load_state_strictly, trainable_state, write_run
from dva.trainer.settings import FitSettings, settings_from  # noqa: F401  (settings_from: the door for callers of fit)


@dataclass
class Features:
    """The store's train and val splits on the CPU, read once (ablations share them)."""

    store_path: str
    provenance: dict
    train: SplitData
    val: SplitData


def load_features(store_path: str, audio_align: str = "nearest") -> Features:
    """Train and val from the store; one DvaWarning names every failed or incomplete track left out."""
    from dva.stores import open_store

    store = open_store(store_path, mode="r")
    try:
        provenance = {k: store.attrs.get(k) for k in ("dva_version", "visual_encoder", "audio_encoder", "preprocessing")}
        features = Features(str(store_path), provenance, load_split(store, "train", audio_align), load_split(store, "val", audio_align))
    finally:
        store.close()
    message = left_out_message(features.train, features.val)
    if message:
        warnings.warn(DvaWarning(message), stacklevel=2)
    return features


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
            with autocast(device):
                out = model(**model_inputs(settings, batch))
            value = compute_loss(
                {k: (v.float() if v is not None else None) for k, v in out.items()},
                batch["labels"], batch["label_mask"], settings.sigma, settings.lambda_prompt, settings.labels,
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
    load_state_strictly(model, best_state, "the best epoch's state")
    val_pred = predict_frames(model, settings, val_data)
    final = evaluate(val_pred, val_data)
    return FitResult(settings, best, history, val_pred, final["per_track"], model, normaliser, time.perf_counter() - started)


def _better(new: float, old: float) -> bool:
    if np.isnan(old):
        return not np.isnan(new)
    return bool(new > old)


def fit(settings: FitSettings, progress: bool = True) -> tuple[FitResult, Path]:
    """Load the store, train, write the run directory."""
    features = load_features(settings.features, settings.audio_align)
    result = train(settings, features, progress=progress)
    return result, write_run(result, features, Path(settings.out))
