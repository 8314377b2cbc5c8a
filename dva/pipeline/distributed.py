"""Scale-out of `dva extract` on dask.distributed: a LocalCluster (`--workers N`) or a running
cluster (`--scheduler tcp://HOST:PORT`, or `tls://HOST:PORT` with Dask's own TLS settings: the
address goes to Dask unchanged). One task per video (a `_left`/`_right` pair is one task: its sound
is encoded once); each worker builds its encoders once, claims the video like any other process,
and writes its tracks straight into the shared store (tracks never share a Zarr node)."""

from __future__ import annotations

import dataclasses
import os
import zlib
from pathlib import Path

from dva.cluster import scheduler_errors
from dva.errors import first_line
from dva.pipeline.extract_settings import ExtractReport
from dva.pipeline.provenance import build_encoders, encoder_key, feature_sets
from dva.pipeline.reading import check_nvjpeg
from dva.stores import is_remote
from dva.pipeline.stream import extract_units
from dva.pipeline.writing import track_attrs

_ENCODERS: dict = {}  # per worker process: settings key -> (visual, audio)


def worker_device(requested: str | None, cuda_count: int, name, address: str, visible: str | None, local: bool = False) -> str:
    """The device one Dask worker's encoders (and nvJPEG) run on. requested: --device; cpu or an explicit index
    (cuda:1) is taken as it is. None (with a GPU) or a bare "cuda": one GPU per worker, chosen in this order:
    worker i of the LocalCluster this run started (local; named 0..N-1) -> cuda:i mod cuda_count; else
    CUDA_VISIBLE_DEVICES set for the worker (visible; dask-cuda lists each worker's own GPU first) -> cuda:0; else an
    integer worker name -> cuda:name mod cuda_count; else crc32 of the worker's address mod cuda_count (stable, but
    two workers of one machine may share a GPU: name them 0, 1, ... or give each its CUDA_VISIBLE_DEVICES)."""
    if requested is not None and requested != "cuda":
        return requested
    if cuda_count < 1:
        return requested or "cpu"  # a bare "cuda" without a GPU fails where torch first uses it, naming the device
    number = str(name).isdigit()
    if local and number:
        index = int(name)
    elif visible:
        index = 0
    else:
        index = int(name) if number else zlib.crc32(str(address).encode())
    return f"cuda:{index % cuda_count}"


def _this_worker_device(requested: str | None, local: bool) -> str:
    import torch
    from dask.distributed import get_worker

    worker = get_worker()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return worker_device(requested, count, worker.name, worker.address, os.environ.get("CUDA_VISIBLE_DEVICES"), local)


def extract_unit_task(unit, settings, since: float, local: bool = False) -> dict:
    """Runs on a worker: extract one video's tracks into the store; returns an ExtractReport dict
    plus "deferred": whether another process holds the video. local: the worker is one of the LocalCluster
    this run started (named 0..N-1: its index chooses its GPU)."""
    from dva.pipeline.claims import claims_for
    from dva.stores import open_store

    device = _this_worker_device(settings.device, local)
    key = (encoder_key(settings), device)
    if key not in _ENCODERS:
        if settings.jpeg_decoder == "cuda":
            check_nvjpeg(device)
        _ENCODERS[key] = build_encoders(settings, device)
    visual, audio = _ENCODERS[key]
    sets = {info["modality"]: name for name, info in feature_sets(settings, visual, audio).items()}
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
    from dask.distributed import Client, LocalCluster, as_completed
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
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"extract {settings.split}", unit="video", disable=not show_progress):
            try:
                part = future.result()
            except Exception as exc:  # a worker died or a bug on a worker: that video fails alone
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
