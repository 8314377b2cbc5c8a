"""Scale-out of `dva extract` on dask.distributed: a LocalCluster (`--workers N`) or a running
cluster (`--scheduler tcp://HOST:PORT`). One task per track; each worker builds its encoders
once and writes its tracks straight into the shared store (tracks never share a Zarr node)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dva.errors import DvaError

_ENCODERS: dict = {}  # per worker process: settings key -> (visual, audio)


def _worker_device() -> str:
    """One GPU per worker: LocalCluster names its workers 0..N-1."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    from dask.distributed import get_worker

    try:
        index = int(get_worker().name)
    except (ValueError, TypeError):
        index = 0
    return f"cuda:{index % torch.cuda.device_count()}"


def extract_track_task(track, settings) -> dict:
    """Runs on a worker: extract one track into the store; returns an ExtractReport dict."""
    from dva.pipeline.extract import ExtractReport, build_encoders, extract_tracks
    from dva.stores import open_store

    device = settings.device or _worker_device()
    key = (settings.clip_model, settings.clip_pretrained, settings.ast_model, settings.audio_mode, settings.audio_window, settings.audio_hop, device)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoders(settings, device)
    visual, audio = _ENCODERS[key]
    report = ExtractReport(store=settings.out, split=settings.split)
    store = open_store(settings.out, mode="a")
    try:
        extract_tracks([track], Path(settings.data), store, settings, visual, audio, report)
    finally:
        store.close()
    return report.as_dict()


def extract_distributed(todo: list, settings, report) -> None:
    """Spread the tracks over Dask workers and merge their reports into report."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    show_progress = settings.progress
    settings = dataclasses.replace(settings, progress=False, data=str(Path(settings.data).resolve()), out=_absolute(settings.out))
    cluster = None
    try:
        if settings.scheduler:
            client = Client(settings.scheduler, timeout="20s")
        else:
            cluster = LocalCluster(n_workers=_local_workers(settings.workers), threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
    except (OSError, TimeoutError) as exc:
        raise DvaError(f"cannot reach the Dask scheduler at {settings.scheduler or 'a local cluster'} ({exc}); start one with `dask scheduler` and `dask worker`") from None
    try:
        futures = client.map(extract_track_task, todo, settings=settings, pure=False)
        tracks_by_key = {future.key: track for future, track in zip(futures, todo)}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"extract {settings.split}", unit="track", disable=not show_progress):
            try:
                part = future.result()
            except Exception as exc:  # a worker died or a bug on a worker: that track fails alone
                track = tracks_by_key[future.key]
                reason = f"worker error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                _mark_failed(settings, track, reason)
                report.failed[track.track] = reason
                continue
            report.extracted += part["extracted"]
            report.failed.update(part["failed"])
            report.warnings += part["warnings"]
            report.frames += part["frames"]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _local_workers(requested: int) -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else max(1, requested)


def _mark_failed(settings, track, reason: str) -> None:
    from dva.pipeline.extract import track_attrs
    from dva.stores import open_store

    store = open_store(settings.out, mode="a")
    try:
        store.mark_failed(settings.split, track.track, reason, track_attrs(track))
    finally:
        store.close()


def _absolute(path: str) -> str:
    return path if "://" in str(path) else str(Path(path).resolve())
