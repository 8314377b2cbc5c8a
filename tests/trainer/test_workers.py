"""`dva ablate --workers N`: one process per GPU, extra workers as threads sharing that GPU's copy of the features."""

import pytest

from dva.trainer import workers
from dva.trainer.workers import features_on, plan_workers, worker_device


@pytest.mark.parametrize("n, device, gpus, expected", [
    (4, None, 2, (2, 2, ["cuda:0", "cuda:1"])),  # spread over both GPUs, two threads each
    (8, "cuda", 4, (4, 2, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"])),
    (1, None, 4, (1, 1, ["cuda:0"])),
    (3, None, 0, (3, 1, ["cpu"])),  # no GPU: processes on the CPU
    (2, "cuda:1", 4, (2, 1, ["cuda:1"])),  # a device asked for is kept
    (2, "cpu", 2, (2, 1, ["cpu"])),
])
def test_workers_spread_over_the_gpus_one_process_each(n, device, gpus, expected):
    assert plan_workers(n, device, gpus) == expected


def test_a_worker_takes_the_gpu_of_its_index(monkeypatch):
    import dask.distributed

    class Worker:
        name = 3

    monkeypatch.setattr(dask.distributed, "get_worker", lambda: Worker())
    assert worker_device(["cuda:0", "cuda:1"]) == "cuda:1"


def test_features_go_to_a_device_once_per_process(tiny_store, monkeypatch):
    from dva.trainer.fit import load_features

    features = load_features(str(tiny_store))
    moves = []
    real = type(features).to
    monkeypatch.setattr(type(features), "to", lambda self, device: moves.append(device) or real(self, device))
    first = features_on(features, "cpu")
    assert features_on(features, "cpu") is first and moves == ["cpu"]
    assert first.train.visual is features.train.visual  # already on the CPU: nothing copied
    assert first.pooled() is first.pooled()  # folds of every variant share one pooled train+val
    workers.forget_features()
    features_on(features, "cpu")
    assert moves == ["cpu", "cpu"]
    workers.forget_features()
