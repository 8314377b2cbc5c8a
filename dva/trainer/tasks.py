"""Training as tasks: one variant x seed x fold, run from its settings alone by this process or by a Dask worker
(`dva ablate` and `dva fit --folds K`, with `--workers N` or `--scheduler ADDR`).

A task carries settings, never features: the process that runs it opens the store itself (an absolute path or
a URL every worker reaches), loads the sets the task needs once and keeps them, on its device, for the next
task on the same store and sets. It returns figures and held-out predictions, and with keep_model the model's
trainable state (CPU tensors: Dask pickles them back to the client).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import threading
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dva.cluster import completed, dask_client, this_worker_device
from dva.errors import DvaWarning, StoreError, first_line
from dva.stores import is_remote
from dva.trainer.evaluate import resolve_device
from dva.trainer.fit import fold_held, fold_plan, fold_rows, load_features, out_of_fold, store_fold_plan, train, train_fold
from dva.trainer.results.run_dir import trainable_state
from dva.trainer.plugins import importable
from dva.trainer.settings import TEMPORALS, FitSettings
from dva.trainer.workers import (
    features_on,
    forget_features,
    gpu_count,
    plan_workers,
    worker_device,
)

DATA_KEYS = ("audio_align", "visual_features", "audio_features", "task")  # the settings that decide which features are loaded
KEEP = 2  # loads a process keeps, the least recently used dropped first: a grid over feature sets meets a few, in order
RETRIES = 1  # a task that raised (a GPU out of memory on a crowded node) runs once more; a worker that died is Dask's to reschedule
_LOADED: collections.OrderedDict = collections.OrderedDict()  # per process: (store, digest, data key, modalities) -> Features (CPU)
_LOCK = threading.Lock()
TRAINED: list[str] = []  # per process: the tasks it trained, by name (read with `client.run` to see where the work went)


@dataclass(frozen=True)
class FitTask:
    settings: FitSettings  # features: an absolute path or a URL
    store: str  # `identity_digest` of the store the client planned on: a worker's copy of another one is not reused
    modalities: tuple[str, ...]  # the modalities loaded: every task on these sets loads the same, as one local run does
    fold: int | None = None  # a fold of settings.folds; None: a plain fit (train, its epoch selected on val)
    keep_model: bool = False  # also return the model's trainable state and normaliser (to write a run directory)
    key: str = ""  # the ablation result this task is part of
    name: str = ""  # variant, seed and fold, as messages name the task
    tracking: dict | None = None  # --track mlflow: where this task logs its run (`tracking.AblationTracker.task_tracking`)
    plan: tuple[tuple[str, int], ...] | None = None  # a fold task's fold plan, (track, fold) each (`store_fold_plan`, made once by the client)

    def fold_of(self, pooled) -> list[int]:
        """The fold of every pooled track under this task's plan."""
        return fold_plan(self.settings, pooled, dict(self.plan) if self.plan is not None else None)


def store_identity(path: str) -> dict:
    """What decides a store's features: its feature sets' provenance, its frame clock, where it is (resolved),
    and which train/val tracks have which sets complete (finishing a failed track changes the results): those stored
    under train and val, and, under "elsewhere", those stored under another split that a task trains or selects on
    (EXPR's train track in VA's test; absent from a store without such tracks, whose identity stays as it was)."""
    from dva.stores import complete_sets, open_store
    from dva.stores.attrs import track_tasks

    with open_store(path, "r") as store:
        sets, timeline = store.feature_sets(), store.attrs.get("timeline")
        indexes = {split: store.track_index(split) for split in store.splits()}
    complete = {split: {t: sorted(complete_sets(a)) for t, a in indexes.get(split, {}).items() if complete_sets(a)} for split in ("train", "val")}
    elsewhere = {f"{stored}/{t}": sorted(complete_sets(a)) for stored, index in indexes.items() if stored not in ("train", "val")
                 for t, a in index.items() if complete_sets(a) and {"train", "val"} & set(track_tasks(a, stored).values())}
    if elsewhere:
        complete["elsewhere"] = elsewhere
    return {"path": absolute(path), "feature_sets": sets, "timeline": timeline, "complete_sets": complete}


def identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def absolute(path: str) -> str:
    """A local store path resolved (what a worker on another machine opens); a URL as it is."""
    return str(path) if is_remote(path) else str(Path(path).resolve())


def data_key(settings: FitSettings) -> tuple:
    return tuple(getattr(settings, name) for name in DATA_KEYS)


def run_task(task: FitTask, devices: list[str] | None = None) -> dict:
    """Train one task where this runs (devices: those `plan_workers` gave a LocalCluster's workers; None: the
    settings' device, or this worker's GPU); returns `essentials` of the fit."""
    settings = dataclasses.replace(task.settings, device=task_device(task.settings, devices))
    features = features_on(_loaded(task), str(resolve_device(settings.device)))
    result = train(settings, features, progress=False) if task.fold is None else train_fold(settings, features, task.fold, task.fold_of(features.pooled()))
    with _LOCK:
        TRAINED.append(task.name)
    out = essentials(result, task, features)
    if task.tracking is not None:  # logged where it trained: on a Dask worker too
        from dva.trainer.tracking import log_task

        out["mlflow_run"] = log_task(task.tracking, out)
    return out


def task_device(settings: FitSettings, devices: list[str] | None) -> str | None:
    if devices is not None:
        return worker_device(devices)
    if settings.device in (None, "cuda") and gpu_count():  # one GPU per worker, chosen as extract's workers choose theirs
        return this_worker_device(settings.device, local=False)
    return settings.device


def _loaded(task: FitTask):
    settings = task.settings
    key = (settings.features, task.store, data_key(settings), task.modalities)
    with _LOCK:  # threads of one worker share one load
        if key not in _LOADED:
            with warnings.catch_warnings():  # the tracks left out were named by the client (`left_out_in_store`), once
                warnings.simplefilter("ignore", DvaWarning)
                _LOADED[key] = load_features(settings.features, *data_key(settings), modalities=task.modalities)
            while len(_LOADED) > KEEP:
                _LOADED.popitem(last=False)
                forget_features()  # the dropped load's device copy goes with it (the kept ones are copied again when next used)
        _LOADED.move_to_end(key)
        return _LOADED[key]


def forget() -> None:
    """Drop this process's loads and their device copies."""
    with _LOCK:
        _LOADED.clear()
    forget_features()


def essentials(result, task: FitTask, features) -> dict:
    """What the client needs of a FitResult, in plain types: figures, history, smoothing, held-out predictions
    (val_pred [held frames, 2]; last_pred too with keep_model, the only caller that writes it) and labels, the held-out
    tracks (held_tracks, held_offsets, held_videos: what the paired comparison of an ablation resamples); for a fold,
    `rows`, where they go in train+val pooled, and epoch_preds, every epoch's held-out predictions (`out_of_fold`)."""
    from dva.data.layout import video_of

    held = result.held
    out = {
        "best": result.best, "final": result.final, "history": result.history, "smoothing": result.smoothing,
        "per_track": result.per_track, "seconds": result.seconds, "train_tracks": result.train_tracks, "held_name": result.held_name, "weights": result.weights,
        "loss_terms": result.loss_terms,
        "val_pred": result.val_pred, "last_pred": result.last_pred if task.keep_model else None,
        "labels": held.labels.cpu().numpy() if held is not None else None,
        "held_tracks": list(held.tracks) if held is not None else [], "held_offsets": np.asarray(held.offsets) if held is not None else np.zeros(1, np.int64),
        "held_videos": [video_of(t, a.get("video")) for t, a in zip(held.tracks, held.attrs)] if held is not None else [],
        # found damaged only by reading them (the client names the tracks the attrs leave out before the workers load)
        "damaged": {t: why for data in (features.train, features.val) if data is not None for t, why in data.left_out.items() if why.startswith("damaged")},
    }
    if task.fold is not None:
        pooled = features.pooled()
        out["rows"] = fold_rows(pooled, task.fold_of(pooled), task.fold)
        out["epoch_preds"] = result.epoch_preds
    if task.keep_model:
        out["state"], out["normaliser"] = trainable_state(result.model), result.normaliser.state()
    return out


@contextmanager
def running(tasks: list[FitTask], scheduler: str | None = None, workers: int = 0):
    """An iterator of (task, essentials, None) or (task, None, reason) as each task finishes: here, one after the
    other (no scheduler, workers 0; a failure raises), or on a Dask cluster (a failure is its reason, the rest go
    on). On entry a cluster is reached and every worker is checked to see the store the client planned on (a
    StoreError, before anything is sent)."""
    if not scheduler and workers <= 0:
        try:
            yield ((task, run_task(task), None) for task in tasks)
        finally:
            forget()
        return
    processes, threads, devices = (1, 1, None) if scheduler else plan_workers(workers, tasks[0].settings.device, gpu_count())
    with dask_client(scheduler, processes, threads) as client:
        check_store(client, tasks[0].settings.features, tasks[0].store)
        run = uuid.uuid4().hex[:8]  # keys the dashboard shows by name, unique to this run
        futures = {client.submit(run_task, task, devices, key=f"dva {task.name} {run}", retries=RETRIES): task for task in tasks}
        yield _finished(client, futures)


def _finished(client, futures: dict):
    for future in completed(client, list(futures)):
        try:
            done, reason = future.result(), None
        except Exception as exc:  # a bad setting, out of memory, a worker lost too often: this task alone
            done, reason = None, f"{type(exc).__name__}: {first_line(exc)}"
        future.release()  # a result the client holds is not computed again when the worker that kept it dies
        yield futures.pop(future), done, reason


def check_store(client, path: str, digest: str) -> None:
    """StoreError naming the first Dask worker that cannot open the store at path, or sees another one there."""
    for worker, seen in sorted(client.run(store_seen, path).items()):
        if seen != digest:
            why = seen[1:] if seen.startswith("!") else "it holds another store there (other feature sets or tracks than the client sees)"
            raise StoreError(f"{path}: the Dask worker {worker} cannot use it ({why}); the store must be where every worker reads the same one "
                             "(a shared file system at the same path, or an s3://... URL): README, Several machines")


def store_seen(path: str) -> str:
    """Runs on a worker: the digest of the store it sees at path, or "!" and why it cannot open it."""
    try:
        return identity_digest(store_identity(path))
    except Exception as exc:  # whatever stops this worker, the client names it
        return f"!{type(exc).__name__}: {first_line(exc)}"


def best_postfix(best: tuple[float, str] | None) -> str:
    """The progress bar's postfix: the best figure so far and what made it."""
    return f"best {best[0]:.3f} ({best[1]})" if best else ""


def better(best: tuple[float, str] | None, figure, name: str) -> tuple[float, str] | None:
    """best (value, name) after a result whose task's figure (P_VA, EXPR F1, AU F1) is figure (a number or None)."""
    value = float(figure) if figure is not None else float("nan")
    return (value, name) if not np.isnan(value) and (best is None or value > best[0]) else best


def fit_folds_spread(settings: FitSettings, scheduler: str | None = None, workers: int = 0, progress: bool = True, tracker=None) -> dict:
    """`dva fit --folds K` with each fold and the plain fit a task on a Dask cluster (a running scheduler, or a
    LocalCluster of `workers` processes); writes the same folds directory as a local run and returns its summary.
    tracker: a `dva.trainer.tracking.FoldsTracker` (--track mlflow: each fit logs its epochs where it trains) or None."""
    import time

    from tqdm import tqdm

    from dva.errors import ConfigError, DvaError
    from dva.trainer.evaluate import task_figure
    from dva.trainer.fit import FoldsResult, features_for
    from dva.trainer.results.run_dir import run_summary, write_folds

    if not settings.folds:
        raise ConfigError("--scheduler and --workers send the folds of `dva fit --folds K` to a cluster: add --folds K, or leave them out for one fit here")
    started = time.perf_counter()
    importable([settings.temporal], TEMPORALS)  # here, before anything is loaded or sent (the workers import it too)
    features = features_for(settings)  # here too: the run directories are written from the held-out tracks
    path = absolute(settings.features)
    digest, modalities = identity_digest(store_identity(path)), settings.modality_list
    on = dataclasses.replace(settings, features=path)
    plan = tuple(store_fold_plan(on).items())  # made once here: every fold is cut by it
    tasks = [FitTask(on, digest, modalities, fold, keep_model=True, name=f"fold {fold} of {settings.folds}", plan=plan) for fold in range(settings.folds)]
    tasks.append(FitTask(dataclasses.replace(on, folds=0), digest, modalities, None, keep_model=True, name="plain fit"))
    if tracker is not None:
        tracker.start(tasks)
        tasks = [dataclasses.replace(task, tracking=tracker.task_tracking(task)) for task in tasks]
    done, failed, best = {}, [], None
    try:
        with running(tasks, scheduler, workers) as finished, tqdm(total=len(tasks), desc=f"{settings.folds} folds", unit="fit", disable=not progress) as bar:
            for task, result, reason in finished:
                bar.update(1)
                if reason is not None:
                    failed.append(f"{task.name}: {reason}")
                    continue
                done[task.fold] = result
                best = better(best, task_figure(result["best"]), task.name)
                bar.set_postfix_str(best_postfix(best))
    except BaseException:
        if tracker is not None:
            tracker.fail()
        raise
    if failed and tracker is not None:
        tracker.fail()
    if failed:
        raise DvaError(f"dva fit --folds {settings.folds}: {len(failed)} of {len(tasks)} fits failed on the cluster, nothing written: {'; '.join(failed)}")
    pooled = features.pooled()
    fold_of = fold_plan(settings, pooled, dict(plan))
    runs = [fit_result(settings, done[fold], fold_held(pooled, fold_of, fold)) for fold in range(settings.folds)]
    oof = out_of_fold(settings, pooled, fold_of, [done[fold] for fold in range(settings.folds)])
    plain = fit_result(dataclasses.replace(settings, folds=0), done[None], features.val)
    result = FoldsResult(settings, pooled, fold_of, runs, *oof, plain, time.perf_counter() - started)
    return run_summary(write_folds(result, features, Path(settings.out)))


def fit_result(settings: FitSettings, essentials: dict, held):
    """A FitResult from a task's `essentials` (with keep_model) and the held-out tracks it predicted (on the CPU)."""
    from dva.trainer.loading.windows import Normaliser
    from dva.trainer.fit import FitResult

    e = essentials
    return FitResult(
        settings, e["best"], e["history"], e["val_pred"], e["per_track"], None, Normaliser.from_state(e["normaliser"]), e["seconds"],
        final=e["final"], last_pred=e["last_pred"], smoothing=e["smoothing"], held=held, train_tracks=e["train_tracks"],
        held_name=e["held_name"], state=e["state"], weights=e.get("weights"), loss_terms=e.get("loss_terms"),
    )
