"""Where ablation variants run: `--workers N` over the GPUs of this machine, one process per GPU.

Each GPU gets one worker process holding one copy of the features on that GPU; with more workers than
GPUs, the extra workers are threads of those processes and share that copy (features are normalised per
batch, so every variant and fold reads the same raw tensors). Without GPUs: N processes on the CPU.
Threads share torch's random state, so variants on a GPU with several threads are reproducible only in
their initial weights (built under a lock); GPU kernels are not bit-reproducible in any case.
"""

from __future__ import annotations

import math
import threading

_ON_DEVICE: dict = {}  # per worker process: (id(features), device) -> (features, features on that device)
_LOCK = threading.Lock()


def plan_workers(workers: int, device: str | None, gpus: int) -> tuple[int, int, list[str]]:
    """(processes, threads per process, the device of process i is devices[i % len(devices)]) for
    `--workers N`: one process per GPU (at most N) when the device is left to dva or is "cuda" and there
    are GPUs; N single-threaded processes otherwise (on the device asked for, or the CPU)."""
    if workers < 1:
        raise ValueError(f"plan_workers: workers must be at least 1, not {workers}")
    if gpus > 0 and device in (None, "cuda"):
        processes = min(workers, gpus)
        return processes, math.ceil(workers / processes), [f"cuda:{i}" for i in range(processes)]
    return workers, 1, [device or "cpu"]


def worker_device(devices: list[str]) -> str:
    """The device of the Dask worker this runs on: LocalCluster names its workers 0..N-1."""
    from dask.distributed import get_worker

    try:
        index = int(get_worker().name)
    except (ValueError, TypeError):
        index = 0
    return devices[index % len(devices)]


def features_on(features, device: str):
    """features (a `dva.trainer.fit.Features`) with train and val on device, moved once per worker process
    and device and then shared by every variant and thread that runs there."""
    from dva.trainer.fit import actual_device

    key = (id(features), str(actual_device(device)))
    with _LOCK:
        if key not in _ON_DEVICE:
            _ON_DEVICE[key] = (features, features.to(device))
        return _ON_DEVICE[key][1]


def forget_features() -> None:
    """Drop this process's device copies (the caller's ablation is over)."""
    with _LOCK:
        _ON_DEVICE.clear()


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
