"""`dva fit`: train on the store's train split and select the epoch on val; or K folds over train and
val together (out-of-fold figures); or a fixed number of epochs on chosen splits (a final fit).

Plain PyTorch, one loop you can read: batches are index gathers into tensors that already
live on the training device; the model never sees an encoder.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dva.errors import DvaWarning, StoreError
from dva.trainer.loading.windows import Normaliser, SplitData, past_windows, window_index
from dva.trainer.loading.store import choose_sets, left_out_message, load_splits
from dva.trainer.evaluate import (
    FIGURE_NAMES, autocast, batch_bar, build_model, choose_smoothing, clip_text_towers, evaluate, evaluate_frames, gather_windows, model_inputs, normalise_batch,
    normaliser_on, predict_frames, resolve_device, smooth_choices, task_figure,
)
from dva.trainer.model.heads import TASK_WIDTH
from dva.trainer.plugins import importable
from dva.trainer.results.run_dir import load_state_strictly, run_summary, trainable_state, write_folds, write_run
from dva.trainer.settings import MODALITIES, TEMPORALS, FitSettings, settings_from  # noqa: F401  (settings_from: the door for callers of fit)
from dva.trainer.loading.tracks import select_tracks, track_rows, track_span


@dataclass
class Features:
    """The store's train and val splits on the CPU, read once (ablations share them): train and val are
    views of `pool`, their tracks in one allocation (train's first), so pooling them costs nothing."""

    store_path: str
    provenance: dict  # dva_version, timeline, feature_sets {name: info} of the chosen sets, sets {modality: [names]}, text_towers
    train: SplitData
    val: SplitData
    pool: SplitData  # train and val, every track; its attrs say each track's split

    def pooled(self) -> SplitData:
        """train and val as one SplitData (train's tracks first)."""
        return self.pool

    def to(self, device) -> "Features":
        """A Features on device (copied there unless it is there already); self is left as it is."""
        pool = on_device(self.pool, device)
        if pool is self.pool:
            return self
        n = len(self.train.tracks)
        train = track_span(pool, 0, n, "train", self.train.attrs, self.train.left_out)
        val = track_span(pool, n, n + len(self.val.tracks), "val", self.val.attrs, self.val.left_out)
        return dataclasses.replace(self, train=train, val=val, pool=pool)


def load_features(store_path: str, audio_align: str = "nearest", visual_features: str | None = None, audio_features: str | None = None,
                  task: str = "va", modalities=MODALITIES) -> Features:
    """The task's train and val from the chosen feature sets of the store (see `choose_sets`): the tracks whose `tasks`
    attr puts them in the task's train or val, wherever they are stored, with the task's labels; one DvaWarning names
    every failed or incomplete track left out, and every track of the task's splits without its labels."""
    from dva.stores import open_store

    store = open_store(store_path, mode="r")
    try:
        available = store.feature_sets()
        sets = choose_sets(available, visual_features, audio_features, modalities, store_path)
        provenance = {
            "dva_version": store.attrs.get("dva_version"), "timeline": store.attrs.get("timeline"),
            "feature_sets": {name: available[name] for names in sets.values() for name in names}, "sets": sets,
            "text_towers": clip_text_towers(available, sets), "task": task,
        }
        pool, (train, val) = load_splits(store, ["train", "val"], sets, audio_align, task=task)
        features = Features(str(store_path), provenance, train, val, pool)
    finally:
        store.close()
    message = left_out_message(features.train, features.val)
    if message:
        warnings.warn(DvaWarning(message), stacklevel=2)
    return features


def features_for(settings: FitSettings) -> Features:
    """The features a fit with these settings trains on."""
    return load_features(settings.features, settings.audio_align, settings.visual_features, settings.audio_features, settings.task, settings.modality_list)


@dataclass
class FitResult:
    """One trained model and what it scored. Figures are named by what they are: `best` was selected on the
    held-out tracks (best_val), `final` is the last epoch (not selected); both None without held-out tracks."""

    settings: FitSettings
    best: dict | None  # epoch and the task's scores (VA: ccc_v, ccc_a, p_va) at the epoch kept (selected on the held-out tracks)
    history: list[dict]
    val_pred: np.ndarray | None  # [held-out frames, 2] of the model kept
    per_track: dict
    model: torch.nn.Module | None  # None where only its trainable state came back (a fold trained on a Dask worker)
    normaliser: Normaliser
    seconds: float
    final: dict | None = None  # epoch, ccc_v, ccc_a, p_va of the last epoch (no selection)
    last_pred: np.ndarray | None = None  # [held-out frames, 2] of the last epoch
    smoothing: dict | None = None  # choose_smoothing on the held-out tracks, with "selected_on"
    held: SplitData | None = None  # the held-out tracks val_pred covers (None: none held out)
    train_tracks: list[str] = dataclasses.field(default_factory=list)
    held_name: str | None = None  # what the held-out tracks are ("val", "fold 2 of 5")
    epoch_preds: list[np.ndarray] | None = None  # a fold's held-out predictions after every epoch (its oof epoch is chosen on the other folds)
    state: dict | None = None  # the model's `trainable_state` (CPU tensors), when model is None
    weights: list[float] | None = None  # EXPR's class weights or AU's positive weights in the loss (from the trained frames)
    loss_terms: dict | None = None  # {term: trainable parameter tensors its gradient reaches on the first batch} (`term_reach`)


def train(settings: FitSettings, features: Features, progress: bool = True) -> FitResult:
    """Train one model on the splits of settings.train_splits; with val held out, keep the epoch with the
    best val P_VA, otherwise the last epoch."""
    splits = settings.train_split_list
    parts = {"train": features.train, "val": features.val}
    data = parts[splits[0]] if len(splits) == 1 else features.pooled()
    held = parts[settings.held_out] if settings.held_out else None
    return train_on(settings, features.provenance, data, None, held, progress=progress, held_name=settings.held_out)


def train_on(settings: FitSettings, provenance: dict, data: SplitData, train_tracks, held: SplitData | None,
             progress: bool = True, held_name: str | None = None, keep_epochs: bool = False) -> FitResult:
    """Train one model on the tracks train_tracks (indices into data.tracks; None: all) of data. With held
    (other tracks, never trained on) the epoch with the best held-out P_VA is kept and the smoothing width
    chosen on it; without, every epoch runs and the last is kept. data and held may already be on the
    training device (then nothing is copied); the features are normalised per batch. keep_epochs: also keep the held-out
    predictions of every epoch (a fold's: epochs x held-out frames x the task's width, float32)."""
    from tqdm import tqdm

    settings.validate()
    device = resolve_device(settings.device)
    chosen = list(range(len(data.tracks))) if train_tracks is None else [int(i) for i in train_tracks]
    rows = torch.from_numpy(track_rows(data.offsets, chosen))
    on_data = rows.to(data.visual.device)
    normaliser = Normaliser.fit(dataclasses.replace(data, visual_mask=data.visual_mask & on_data, audio_mask=data.audio_mask & on_data))
    train_data = on_device(data, device)
    held_data = on_device(held, device) if held is not None else None
    with MODEL_INIT:  # threads of one ablation worker share torch's global RNG: seed and build as one step
        torch.manual_seed(settings.seed)
        np.random.seed(settings.seed)
        model = build_model(settings, provenance, train_data.visual_dim, train_data.audio_dim, device)
    index, inside, target = _train_windows(train_data, rows, settings, device)
    weights = label_weights(settings.task, data.labels[on_data])
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = -(-index.shape[0] // settings.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_factor(settings.schedule, settings.warmup, settings.epochs * steps_per_epoch))
    generator = torch.Generator().manual_seed(settings.seed)
    step_normaliser = normaliser_on(normaliser, device)
    reach = term_reach(model, settings, train_data, index, inside, target, step_normaliser, weights)
    if untrained := [name for name, count in reach.items() if count == 0]:
        warnings.warn(DvaWarning(untrained_message(untrained)), stacklevel=2)
    history, best, best_state, best_pred, last_pred, stale = [], None, None, None, None, 0
    epoch_preds = [] if keep_epochs and held is not None else None
    started = time.perf_counter()
    bar = tqdm(range(1, settings.epochs + 1), desc=f"fit {settings.fusion}/{settings.prompt}", unit="epoch", disable=not progress)
    for epoch in bar:
        epoch_start = time.perf_counter()
        order = torch.randperm(index.shape[0], generator=generator).to(device)
        loss = _train_epoch(model, optimiser, scheduler, settings, train_data, index[order], inside[order], step_normaliser, device,
                            batch_bar(index.shape[0] * index.shape[1], f"epoch {epoch}", progress), weights, None if target is None else target[order])
        row = {"epoch": epoch, "loss": loss, "lr": scheduler.get_last_lr()[0]}
        if held_data is not None:
            evaluated = time.perf_counter()
            last_pred = predict_frames(model, settings, held_data, normaliser=normaliser, progress=progress)
            if epoch_preds is not None:
                epoch_preds.append(last_pred)
            row["eval_seconds"] = time.perf_counter() - evaluated
            row.update({k: v for k, v in evaluate_frames(last_pred, held_data).items()})
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        figure = FIGURE_NAMES[settings.task]
        bar.set_postfix(loss=f"{row['loss']:.3f}", **({figure: f"{row[figure]:.3f}"} if figure in row else {}))
        if held_data is None:
            continue
        if best is None or _better(task_figure(row), task_figure(best)):
            best, best_state, best_pred, stale = {k: v for k, v in row.items() if k not in NOT_FIGURES}, trainable_state(model), last_pred, 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    final, smoothing, per_track = None, None, {}
    if held_data is not None:
        final = {k: v for k, v in history[-1].items() if k not in NOT_FIGURES}
        load_state_strictly(model, best_state, "the best epoch's state")
        per_track = evaluate(best_pred, held_data)["per_track"]
        smoothing = {**choose_smoothing(best_pred, held_data, smooth_choices(settings)), "selected_on": held_name or "held-out tracks"}
    return FitResult(
        settings, best, history, best_pred, per_track, model, normaliser, time.perf_counter() - started,
        final=final, last_pred=last_pred, smoothing=smoothing, held=held, train_tracks=[data.tracks[i] for i in chosen], held_name=held_name,
        weights=None if weights is None else [float(w) for w in weights], loss_terms=reach, epoch_preds=epoch_preds,
    )


def term_reach(model, settings: FitSettings, data: SplitData, index: torch.Tensor, inside: torch.Tensor, target: torch.Tensor | None, normaliser,
               weights) -> dict[str, int]:
    """{loss term: how many trainable parameter tensors its gradient reaches, nonzero, on the first training batch}:
    before the first step, what each term can train (0: nothing). In eval mode (no dropout: the random stream
    training draws from is untouched; cuDNN off, whose RNNs go backwards only in training mode); the model is left
    as it was."""
    from dva.trainer.model.losses import loss_terms

    if index.shape[0] == 0:
        return {}
    parameters = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    try:
        with torch.backends.cudnn.flags(enabled=False):
            first = slice(0, settings.batch_size)
            batch = normalise_batch(gather_windows(data, index[first], inside[first], None if target is None else target[first]), normaliser)
            out = model(**model_inputs(settings, batch))
            terms = loss_terms(settings.task, {k: (v.float() if v is not None else None) for k, v in out.items()}, batch["labels"], batch["label_mask"], settings, weights)
            reach = {}
            for name, term in terms.items():
                grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True) if term.requires_grad and parameters else []
                reach[name] = sum(1 for g in grads if g is not None and bool(g.ne(0).any()))
    finally:
        model.train(was)
    return reach


def untrained_message(terms: list[str]) -> str:
    """The one warning line for loss terms whose gradient reaches no trainable parameter."""
    names = " and ".join(f"the {t} term" for t in terms)
    return f"{names} of the loss reach{'es' if len(terms) == 1 else ''} no trainable parameter: {'it trains' if len(terms) == 1 else 'they train'} nothing (it only adds to the loss's value)"


def label_weights(task: str, labels: torch.Tensor) -> torch.Tensor | None:
    """The loss's weights from the training frames' labels: EXPR's class weights, AU's positive weights (MTL: both, [20]);
    None for VA."""
    from dva.data.tasks import MTL_LABELS
    from dva.trainer.model.losses import class_weights, pos_weights

    if task == "va":
        return None
    if task == "mtl":  # EXPR's class weights, then AU's positive weights, from the frames that have each
        return torch.cat([class_weights(labels[:, MTL_LABELS["expr"]].cpu()), pos_weights(labels[:, MTL_LABELS["au"]].cpu())])
    return class_weights(labels.cpu()) if task == "expr" else pos_weights(labels.cpu())


def _train_windows(data: SplitData, rows: torch.Tensor, settings: FitSettings, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training windows on device (global frame indices [W, L], in-track mask, and with --target last each window's
    target frame [W], else None): those of the chosen tracks (rows: a bool mask of their frames) with at least one valid
    label (--target last: a valid label at the target)."""
    if settings.target == "last":
        index, target = past_windows(data, settings.window_seconds, settings.window_frames, settings.train_stride_seconds, "visual" in settings.modality_list)
        keep = torch.from_numpy(rows.numpy()[target.numpy()])
        index, target = index[keep].to(device), target[keep].to(device)
        return index, torch.ones_like(index, dtype=torch.bool), target
    index, inside = window_index(data.offsets, settings.seq_len, settings.stride)
    keep = torch.from_numpy(rows.numpy()[index[:, 0].numpy()])  # windows never cross tracks: the first frame says whose it is
    index, inside = index[keep].to(device), inside[keep].to(device)
    keep = (data.label_mask[index] & inside).any(dim=1)  # windows with no valid label teach nothing
    return index[keep], inside[keep], None


def _train_epoch(model, optimiser, scheduler, settings: FitSettings, data: SplitData, index: torch.Tensor, inside: torch.Tensor,
                 normaliser, device, bar, weights: torch.Tensor | None = None, target: torch.Tensor | None = None) -> float:
    """One pass over the windows (already in this epoch's order), a batch at a time; the mean loss. bar: the
    epoch's batch bar, closed at the end; weights: `label_weights` (EXPR, AU)."""
    from dva.trainer.model.losses import task_loss

    model.train()
    parameters = [p for group in optimiser.param_groups for p in group["params"]]
    losses = []
    for step, start in enumerate(range(0, index.shape[0], settings.batch_size)):
        part = slice(start, start + settings.batch_size)
        batch = normalise_batch(gather_windows(data, index[part], inside[part], None if target is None else target[part]), normaliser)
        with autocast(device):
            out = model(**model_inputs(settings, batch))
        value = task_loss(settings.task, {k: (v.float() if v is not None else None) for k, v in out.items()}, batch["labels"], batch["label_mask"], settings, weights)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        scheduler.step()
        losses.append(value.detach())
        bar.update(index[part].numel())
        if step % 20 == 0 and not bar.disable:  # .item() waits for the device: not on every step
            bar.set_postfix(loss=f"{value.item():.3f}", refresh=False)
    bar.close()
    return float(torch.stack(losses).mean()) if losses else float("nan")


NOT_FIGURES = ("loss", "lr", "eval_seconds", "seconds")  # what an epoch's history row holds besides the epoch and its scores
MODEL_INIT = threading.Lock()


@dataclass
class FoldsResult:
    """K fold runs over the tracks of train and val together, and their out-of-fold predictions."""

    settings: FitSettings
    pooled: SplitData  # train and val, every track (on the CPU)
    fold_of: list[int]  # the fold of each pooled track
    runs: list[FitResult]  # fold k: trained on the other folds, its epoch selected on fold k
    oof_pred: np.ndarray  # [pooled frames, width]: each track predicted by the run that did not train on it, at the epoch chosen on the other folds
    oof_selected: np.ndarray  # the same at each fold's epoch selected on its own held-out fold (its best.pt)
    oof_last: np.ndarray  # the same from each fold's last epoch (no selection)
    oof_epochs: list[int]  # the epoch of each fold's oof_pred (`dva.trainer.folds.unselected_epochs`)
    plain: FitResult | None = None  # the plain fit (train -> select on val), for comparison
    seconds: float = 0.0


def train_folds(settings: FitSettings, features: Features, progress: bool = True, plain: bool = True) -> FoldsResult:
    """settings.folds runs over train+val cut by video (see `dva.trainer.folds.assign_folds`), each with its
    epoch and smoothing selected on its own held-out fold, and every epoch's held-out predictions kept for the
    out-of-fold figure that selects nothing on its own fold; plain: also the plain fit (train, select on val)."""
    from tqdm import tqdm

    started = time.perf_counter()
    k = settings.folds
    pooled = features.pooled()
    fold_of = fold_plan(settings, pooled)
    on = features.to(resolve_device(settings.device))  # one copy on the device for every fold
    runs = [train_fold(settings, on, fold, fold_of) for fold in tqdm(range(k), desc=f"{k} folds", unit="fold", disable=not progress)]
    plain_result = train(dataclasses.replace(settings, folds=0), features, progress=False) if plain else None
    parts = [{"val_pred": r.val_pred, "last_pred": r.last_pred, "epoch_preds": r.epoch_preds, "history": r.history} for r in runs]
    return FoldsResult(settings, pooled, fold_of, runs, *out_of_fold(settings, pooled, fold_of, parts), plain_result, time.perf_counter() - started)


def out_of_fold(settings: FitSettings, pooled: SplitData, fold_of: list[int], parts: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(oof, oof_selected, oof_last, the epoch of each fold's oof) over pooled's frames from each fold's val_pred (its
    selected epoch), last_pred, epoch_preds (every epoch's) and history (each epoch's figure on its own fold)."""
    from dva.trainer.folds import unselected_epochs

    epochs = unselected_epochs([[task_figure(row) for row in part["history"]] for part in parts])
    oof = np.full((pooled.n_frames, TASK_WIDTH[settings.task]), np.nan, dtype=np.float32)
    selected, last = oof.copy(), oof.copy()
    for fold, (part, epoch) in enumerate(zip(parts, epochs)):
        rows = fold_rows(pooled, fold_of, fold)
        oof[rows], selected[rows], last[rows] = part["epoch_preds"][epoch - 1], part["val_pred"], part["last_pred"]
    return oof, selected, last, epochs


def store_fold_plan(settings: FitSettings) -> dict[str, int]:
    """{track: fold}: settings.folds folds for settings.seed over every track the task puts in train or val, whatever
    feature sets are complete (the union of the tracks any variant on the store loads), so every variant of an
    ablation, whichever sets leave which tracks out, is cut alike; a `dva fit --folds` on the same store too."""
    from dva.trainer.folds import assign_folds
    from dva.trainer.loading.store import task_pool

    pool = task_pool(settings.features, settings.task)
    tracks = [track for track, _, _ in pool]
    return dict(zip(tracks, assign_folds(tracks, [attrs for _, attrs, _ in pool], [frames for *_, frames in pool], settings.folds, settings.seed)))


def fold_plan(settings: FitSettings, pooled: SplitData, plan: dict[str, int] | None = None) -> list[int]:
    """The fold of every pooled track: from plan (`store_fold_plan`, made once by whoever sends the folds out), or made
    here from the store (the same wherever it is computed)."""
    plan = store_fold_plan(settings) if plan is None else plan
    missing = [t for t in pooled.tracks if t not in plan]
    if missing:
        raise StoreError(f"{settings.features}: {missing[0]} is not in the fold plan (the store changed while the folds ran): run again")
    return [plan[t] for t in pooled.tracks]


def fold_rows(pooled: SplitData, fold_of: list[int], fold: int) -> np.ndarray:
    """The pooled rows (int64, in track order) of fold's tracks: where its held-out predictions go."""
    from dva.trainer.folds import fold_tracks

    return track_rows(pooled.offsets, fold_tracks(fold_of, fold), ordered=True)


def fold_held(pooled: SplitData, fold_of: list[int], fold: int) -> SplitData:
    """The tracks of fold (the ones its run holds out) as a SplitData of their own, on pooled's device."""
    from dva.trainer.folds import fold_tracks

    return select_tracks(pooled, fold_tracks(fold_of, fold), split=f"fold-{fold}")


def train_fold(settings: FitSettings, features: Features, fold: int, fold_of: list[int] | None = None) -> FitResult:
    """Fold `fold` of settings.folds: trained on the other folds of train+val, its epoch and smoothing selected
    on its own tracks (held, on the CPU), every epoch's held-out predictions kept (`out_of_fold`). features may be on
    the training device already (then nothing is copied)."""
    from dva.trainer.folds import fold_members

    k, pooled = settings.folds, features.pooled()
    fold_of = fold_of if fold_of is not None else fold_plan(settings, pooled)
    members = fold_members(fold_of, k)
    held = fold_held(pooled, fold_of, fold)
    trained_on = [i for f in range(k) if f != fold for i in members[f]]
    result = train_on(settings, features.provenance, pooled, trained_on, held, progress=False, held_name=f"fold {fold} of {k}", keep_epochs=True)
    result.held = on_device(held, "cpu")  # what the run directory is written from stays off the device
    return result


def lr_factor(schedule: str, warmup: float, total_steps: int):
    """step -> learning-rate factor: linear from 0 over the first `warmup` fraction of the steps, then 1
    (constant) or half a cosine down to 0 at the last step (cosine)."""
    warmup_steps = int(round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def on_device(data: SplitData, device) -> SplitData:
    """data on device: itself when it is there already, else a copy (the caller's data is left where it is)."""
    if data.visual.device == actual_device(device):
        return data
    return dataclasses.replace(data).to(device)


def actual_device(device) -> torch.device:
    """The device tensors sent to `device` land on ("cuda" -> cuda:0, the current one)."""
    return torch.empty(0, device=device).device


def _better(new: float, old: float) -> bool:
    if np.isnan(old):
        return not np.isnan(new)
    return bool(new > old)


def fit(settings: FitSettings, progress: bool = True) -> dict:
    """Load the store, train (one run, or settings.folds folds), write the run directory; returns its summary:
    {"run", "figures": {name: what it is}, and each figure by name (best_val, final, oof, ...)}."""
    importable([settings.temporal], TEMPORALS)  # a plugin that cannot be imported: said before the store is read
    features = features_for(settings)
    if settings.folds:
        return run_summary(write_folds(train_folds(settings, features, progress=progress), features, Path(settings.out)))
    result = train(settings, features, progress=progress)
    out = write_run(result, features, Path(settings.out))
    return run_summary(out)
