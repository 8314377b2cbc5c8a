"""Reaching a Dask cluster, for every command that sends it work (`dva extract`, `dva fit --folds`, `dva ablate`).

`--scheduler ADDR` goes to Dask unchanged (a `tls://` address takes Dask's own security settings); what can go
wrong on the way is one line naming the address and what to do.
"""

from __future__ import annotations

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
