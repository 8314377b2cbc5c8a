"""Reaching a Dask cluster, for every command that sends it work (`dva extract`, `dva fit --folds`, `dva ablate`),
and which GPU each of its workers takes.

`--scheduler ADDR` goes to Dask unchanged (a `tls://` address takes Dask's own security settings); what can go
wrong on the way is one line naming the address and what to do.
"""

from __future__ import annotations

import os
import zlib
from contextlib import contextmanager

from dva.errors import DvaError

WORKER_WAIT = "60s"  # how long a scheduler may have no worker before a run gives up (a batch queue may be slow to start them)


@contextmanager
def scheduler_errors(where: str):
    """Dask's failures to connect to `where` (an address, or "a local cluster") as one-line DvaErrors."""
    try:
        yield
    except (OSError, TimeoutError) as exc:
        raise DvaError(f"cannot reach the Dask scheduler at {where} ({exc}); start one with `dask scheduler` and `dask worker`") from None
    except (TypeError, RuntimeError) as exc:  # Dask's words for a tls:// address without TLS settings, or tcp:// where they require TLS
        if "TLS" not in str(exc) and "encryption required" not in str(exc):
            raise
        raise DvaError(f"cannot reach the Dask scheduler at {where}: Dask's security settings and the address disagree "
                       "(tls:// needs distributed.comm.tls.ca-file, .client.cert, .client.key; require-encryption refuses tcp://; README, Several machines)") from None


@contextmanager
def dask_client(scheduler: str | None, processes: int = 1, threads: int = 1):
    """A Client of the running scheduler at this address with at least one worker joined, or (scheduler None)
    of a LocalCluster of `processes` worker processes with `threads` threads each; closed on the way out."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    with scheduler_errors(scheduler or "a local cluster"):
        if scheduler:
            client = Client(scheduler, timeout="20s")
        else:
            cluster = LocalCluster(n_workers=processes, threads_per_worker=threads, processes=True, dashboard_address=None)
            client = Client(cluster)
    try:
        if scheduler:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT)
            except TimeoutError:
                raise DvaError(f"no Dask worker joined the scheduler at {scheduler} within {WORKER_WAIT}: start some with `dask worker {scheduler}`") from None
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def completed(client, futures):
    """`as_completed(futures)` waiting on the event loop of the client that made them.

    Without `loop=`, Dask's as_completed waits on the loop of the process's newest Client (`default_client()`), and each
    Client runs its own loop thread: when another Client made after this one (a notebook's, a test's, a monitor's) is
    closed, its loop stops with the waits on it, the futures still running are never yielded, and the iteration never
    ends. That was the lost-worker cluster test's hang: the test's own Client, made just after the ablation's, closed
    right after it killed the worker, while the ablation still had tasks to rerun (it hung whenever the ablation's
    Client happened to be made first)."""
    from dask.distributed import as_completed

    return as_completed(futures, loop=client.loop)


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


def this_worker_device(requested: str | None, local: bool) -> str:
    """`worker_device` for the Dask worker this runs on."""
    import torch
    from dask.distributed import get_worker

    worker = get_worker()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return worker_device(requested, count, worker.name, worker.address, os.environ.get("CUDA_VISIBLE_DEVICES"), local)
