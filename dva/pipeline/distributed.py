"""Scale-out of `dva extract` on dask.distributed: a LocalCluster (`--workers N`) or a running
cluster (`--scheduler tcp://HOST:PORT`, or `tls://HOST:PORT` with Dask's own TLS settings: the
address goes to Dask unchanged). One task per video (a `_left`/`_right` pair is one task: its sound
is encoded once); each worker builds its encoders once, claims the video like any other process,
and writes its tracks straight into the shared store (tracks never share a Zarr node)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dva.cluster import completed, scheduler_errors, this_worker_device
from dva.errors import first_line, refusal
from dva.pipeline.extract_settings import ExtractReport
from dva.pipeline.provenance import build_encoders, encoder_key, set_names
from dva.pipeline.reading import check_nvjpeg
from dva.pipeline.stream import extract_units
from dva.pipeline.writing import track_attrs
from dva.stores import is_remote

_ENCODERS: dict = {}  # per worker process: settings key -> (visual, audio)


def extract_unit_task(unit, settings, since: float, local: bool = False) -> dict:
    """Runs on a worker: extract one video's tracks into the store; returns an ExtractReport dict
    plus "deferred": whether another process holds the video. local: the worker is one of the LocalCluster
    this run started (named 0..N-1: its index chooses its GPU)."""
    from dva.pipeline.claims import claims_for
    from dva.stores import open_store

    device = this_worker_device(settings.device, local)
    key = (encoder_key(settings), device)
    if key not in _ENCODERS:
        if settings.jpeg_decoder == "cuda":
            check_nvjpeg(device)
        _ENCODERS[key] = build_encoders(settings, device)
    visual, audio = _ENCODERS[key]
    sets = set_names(settings, visual, audio)
    report = ExtractReport(store=settings.out, split=settings.split)
    store = open_store(settings.out, mode="a")
    claims = claims_for(store, settings.split, settings.claim_timeout)
    try:
        deferred = extract_units([unit], Path(settings.data), store, settings, sets, visual, audio, report, claims, since)
    finally:
        claims.release_all()
        store.close()
    return {**report.as_dict(), "deferred": bool(deferred)}


def extract_distributed(units: list, settings, sets: list[str], report, since: float) -> list:
    """Spread the videos over Dask workers and merge their reports into report; returns the units
    another process held (not done here). sets: the names of the feature sets this run makes."""
    from dask.distributed import Client, LocalCluster
    from tqdm import tqdm

    show_progress = settings.progress
    settings = dataclasses.replace(settings, progress=False, data=str(Path(settings.data).resolve()), out=_absolute(settings.out))
    cluster = None
    with scheduler_errors(settings.scheduler or "a local cluster"):
        if settings.scheduler:
            client = Client(settings.scheduler, timeout="20s")
        else:
            cluster = LocalCluster(n_workers=max(1, settings.workers), threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
    deferred = []
    try:
        futures = client.map(extract_unit_task, units, settings=settings, since=since, local=cluster is not None, pure=False)
        units_by_key = {future.key: unit for future, unit in zip(futures, units)}
        for future in tqdm(completed(client, futures), total=len(futures), desc=f"extract {settings.split}", unit="video", disable=not show_progress):
            try:
                part = future.result()
            except Exception as exc:  # a worker died or a bug on a worker: that video fails alone
                if refusal(exc) is not None:  # the store refused the worker (full, read-only): every video would; not this video's fault
                    raise
                reason = f"worker error: {type(exc).__name__}: {first_line(exc)}"
                for track in units_by_key[future.key]:
                    _mark_failed(settings, track, reason, sets)
                    report.failed[track.track] = reason
                continue
            if part["deferred"]:
                deferred.append(units_by_key[future.key])
            report.extracted += part["extracted"]
            report.elsewhere += part["elsewhere"]
            report.failed.update(part["failed"])
            report.warnings += part["warnings"]
            report.masked_crops += part["masked_crops"]
            report.sound.update(part["sound"])
            report.frames += part["frames"]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return deferred


def _mark_failed(settings, track, reason: str, sets: list[str]) -> None:
    from dva.stores import open_store

    store = open_store(settings.out, mode="a")
    try:
        store.mark_failed(settings.split, track.track, reason, sets, track_attrs(track))
    finally:
        store.close()


def _absolute(path: str) -> str:
    return path if is_remote(path) else str(Path(path).resolve())
