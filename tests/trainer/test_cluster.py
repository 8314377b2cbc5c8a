"""`dva ablate --scheduler` and `dva fit --folds K --scheduler` on a real Dask cluster on loopback: a `dask scheduler`
and two `dask worker` processes (one thread each), shared by every test here; the lost-worker test runs last."""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dva.cli import app
from dva.trainer import tasks
from dva.trainer.ablate import ablate
from dva.trainer.settings import FitSettings
from tests.pipeline.test_distributed import stop
from tests.pipeline.test_extract import _free_port

TINY = dict(epochs=1, patience=1, hidden=16, prompt="none", seq_len=32, stride=32, batch_size=16)


class Cluster:
    def __init__(self, address: str, scheduler: subprocess.Popen, workers: list[subprocess.Popen]):
        self.address, self.scheduler, self.workers = address, scheduler, workers

    def trained(self) -> dict[str, list[str]]:
        """{worker address: the task names its process trained} (`tasks.TRAINED` read on each live worker)."""
        from dask.distributed import Client

        with Client(self.address, timeout="20s") as client:
            return client.run(lambda: list(tasks.TRAINED))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from dask.distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask_cli = Path(sys.executable).parent / "dask"
    # scheduler and workers unpickle this checkout's dva, not whichever one the environment installed
    here = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    logs = tmp_path_factory.mktemp("dask-logs")
    scheduler = subprocess.Popen([str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=(logs / "scheduler.log").open("w"), env=here)
    workers = [subprocess.Popen([str(dask_cli), "worker", address, "--no-nanny", "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
                                stdout=subprocess.DEVNULL, stderr=(logs / f"w{i}.log").open("w"), env=here) for i in range(2)]
    try:
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield Cluster(address, scheduler, workers)
    finally:
        for process in (*workers, scheduler):
            if process.poll() is None:
                stop(process)


@pytest.fixture
def no_training_here(monkeypatch):
    """Training in this (the client's) process fails the test: the workers are other processes, unpatched."""
    import dva.trainer.fit as fit_module

    def refuse(*args, **kwargs):
        raise AssertionError("trained in the client's process, not on a Dask worker")

    monkeypatch.setattr(fit_module, "train_on", refuse)


def rows(out: Path) -> list[dict]:
    with (out / "results.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


FOLD_FLAGS = ["--folds", "3", "--prompt", "none", "--epochs", "3", "--patience", "3", "--hidden", "16", "--seq-len", "32", "--stride", "16", "--batch-size", "16"]


def test_fit_folds_on_the_cluster_equals_the_same_fit_here(cluster, folds_dir, tiny_store, tmp_path, no_training_here):
    local, _ = folds_dir  # conftest: `dva fit` with FOLD_FLAGS in one process
    out = tmp_path / "folds"
    done = CliRunner().invoke(app, ["fit", "--features", str(tiny_store), "--out", str(out), "--json", *FOLD_FLAGS, "--scheduler", cluster.address])
    assert done.exit_code == 0, done.output
    here, there = (json.loads((d / "metrics.json").read_text()) for d in (local, out))
    for figure in ("oof", "oof_last", "oof_val", "oof_smoothed", "plain_best_val"):
        for metric in ("ccc_v", "ccc_a", "p_va"):
            assert there[figure][metric] == pytest.approx(here[figure][metric], abs=1e-5), (figure, metric)
    assert [f["best_val"]["epoch"] for f in there["per_fold"]] == [f["best_val"]["epoch"] for f in here["per_fold"]]
    assert json.loads((out / "folds.json").read_text()) == json.loads((local / "folds.json").read_text())
    names = sorted(p.name for p in (local / "oof_predictions").iterdir())
    assert names and names == sorted(p.name for p in (out / "oof_predictions").iterdir())
    for name in names:
        a, b = (np.loadtxt(d / "oof_predictions" / name, delimiter=",", skiprows=1) for d in (local, out))
        np.testing.assert_allclose(b, a, atol=1e-5)
    for run in ("fold-0", "fold-1", "fold-2", "plain"):  # each a run directory `dva predict` can read
        assert (out / run / "best.pt").is_file() and (out / run / "val_predictions").is_dir()
    from dva.trainer.results.run_dir import load_run

    load_run(out / "fold-1", device="cpu")  # the state that came back through Dask loads strictly into its model
    trained = [name for names in cluster.trained().values() for name in names]
    assert sorted(trained) == ["fold 0 of 3", "fold 1 of 3", "fold 2 of 3", "plain fit"]


def test_a_store_the_workers_cannot_see_is_refused_in_one_line_before_anything_is_sent(cluster, tiny_store, tmp_path):
    import fsspec

    fsspec.filesystem("memory").put(str(tiny_store), "/only-here", recursive=True)  # a store in this process's memory alone
    before = cluster.trained()
    flags = [f"--set={key}={value}" for key, value in TINY.items()]
    done = CliRunner().invoke(app, ["ablate", "--features", "memory://only-here", "--grid", "fusion=concat,gated", *flags,
                                    "--out", str(tmp_path), "--scheduler", cluster.address])
    assert done.exit_code == 2, done.output
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("dva: error: memory://only-here: the Dask worker tcp://127.0.0.1:") and "cannot use it" in line and "shared file system" in line
    assert cluster.trained() == before


def test_a_task_that_fails_on_a_worker_is_named_and_the_others_land(cluster, tiny_store, tmp_path):
    flags = [f"--set={key}={value}" for key, value in {**TINY, "fusion": "xattn"}.items()]
    done = CliRunner().invoke(app, ["ablate", "--features", str(tiny_store), "--grid", "heads=2,3", *flags, "--out", str(tmp_path), "--scheduler", cluster.address])
    assert done.exit_code == 1, done.output
    failed = [line for line in done.stderr.splitlines() if line.startswith("dva: failed:")]
    assert failed == ["dva: failed: heads=3 seed 0: ConfigError: hidden (16) must be divisible by heads (3) for xattn fusion"]  # the model checks it, on the worker
    assert [row["variant"] for row in rows(tmp_path)] == ["heads=2"]
    assert "| heads=2 |" in done.stdout


def test_workers_n_runs_the_same_tasks_on_a_local_cluster_with_the_same_figures(tiny_store, tmp_path, no_training_here, monkeypatch):
    base = FitSettings(features=str(tiny_store), **TINY)
    spread = ablate(base, {}, seeds=2, out=tmp_path / "spread", progress=False, workers=1)
    monkeypatch.undo()  # now here, in this process
    here = ablate(base, {}, seeds=2, out=tmp_path / "here", progress=False)
    assert [row["p_va"] for row in rows(tmp_path / "spread")] != ["", ""]
    assert {r["key"]: float(r["p_va"]) for r in rows(tmp_path / "spread")} == pytest.approx({r["key"]: float(r["p_va"]) for r in rows(tmp_path / "here")}, abs=1e-5)
    assert spread[0]["p_va"] == pytest.approx(here[0]["p_va"], abs=1e-5)
    refused = CliRunner().invoke(app, ["fit", "--features", str(tiny_store), "--workers", "2", "--out", str(tmp_path / "fit")])
    assert refused.exit_code == 2 and "--folds K" in refused.stderr.strip().splitlines()[-1]


def test_results_are_awaited_on_the_loop_of_the_client_that_sent_the_tasks(cluster):
    """Dask's as_completed waits on the newest Client's loop unless told, and each Client runs its own loop thread:
    closing a newer one (the lost-worker test's own, a notebook's) stopped the waits of a run still going, which then
    never ended. The lost-worker test below makes that order happen on every run."""
    from dask.distributed import Client

    from dva.cluster import completed

    sent = Client(cluster.address, timeout="20s")  # as `dask_client` makes it: no `with`, which would make it this thread's default
    try:
        with Client(cluster.address, timeout="20s") as newer:
            assert newer.loop is not sent.loop
            assert completed(sent, []).loop is sent.loop
    finally:
        sent.close()


def test_a_2x2_ablation_with_2_folds_trains_on_the_workers_and_survives_a_lost_worker(cluster, tiny_store, tmp_path, no_training_here):
    from dask.distributed import Client

    # long enough (about half a second a fold here) for the kill to land while w1 trains
    base = FitSettings(features=str(tiny_store), folds=2, **{**TINY, "epochs": 3, "patience": 3, "stride": 2})
    grid = {"fusion": ["concat", "gated"]}
    finished: list = []

    def client():
        try:
            finished.append(ablate(base, grid, seeds=2, out=tmp_path, progress=False, scheduler=cluster.address))
        except BaseException as exc:  # shown by the assertion below, not lost with the thread
            finished.append(exc)

    run = threading.Thread(target=client)
    run.start()
    # this test's Client made after the ablation's, as a monitor's would be: Dask's default from then on. The ablation
    # waited on the default Client's loop, which closing this one (just after the kill) stopped: it hung for ever
    # whenever the ablation's Client happened to be made first (`dva.cluster.completed`)
    while not _a_client_exists() and run.is_alive():
        time.sleep(0.01)
    lost, in_flight = cluster.workers[1], []
    with Client(cluster.address, timeout="20s") as client:
        w1 = next(address for address, info in client.scheduler_info()["workers"].items() if info["name"] == "w1")
        deadline = time.time() + 120
        while time.time() < deadline and run.is_alive() and not in_flight:  # the first result landed and w1 is training
            time.sleep(0.05)
            if (tmp_path / "results.csv").is_file():
                in_flight = client.processing(workers=[w1])[w1]
        landed = len(rows(tmp_path)) if (tmp_path / "results.csv").is_file() else 0
        lost.send_signal(signal.SIGKILL)  # mid-run: its task is Dask's to run again on w0
        lost.wait(30)
    run.join(240)
    assert not run.is_alive() and finished and not isinstance(finished[0], BaseException), finished or _stuck(cluster, run)
    assert in_flight and landed < 4, (in_flight, landed)
    assert not finished[0].failed
    first = {row["key"]: row for row in rows(tmp_path)}
    assert len(first) == 4 and {(r["variant"], r["seed"], r["figure"]) for r in first.values()} == {
        (f"fusion={f}", str(s), "oof") for f in ("concat", "gated") for s in (0, 1)}
    (survivor,) = cluster.trained().values()
    lost_task = in_flight[0].rsplit(" ", 1)[0].removeprefix("dva ")
    assert lost_task in survivor  # trained again on w0 after w1 died with it

    # a client killed before one variant's row was written: the rerun trains that variant's two folds and nothing else
    written = rows(tmp_path)
    gone = written.pop(2)
    with (tmp_path / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(gone))
        writer.writeheader()
        writer.writerows(written)
    ablate(base, grid, seeds=2, out=tmp_path, progress=False, scheduler=cluster.address)
    (again,) = cluster.trained().values()
    name = f"{gone['variant']} seed {gone['seed']}"
    assert again[len(survivor):] in ([f"{name} fold 0", f"{name} fold 1"], [f"{name} fold 1", f"{name} fold 0"])
    redone = {row["key"]: row for row in rows(tmp_path)}[gone["key"]]
    assert float(redone["p_va"]) == pytest.approx(float(gone["p_va"]), abs=1e-5)  # the same seed, the same figure


def _a_client_exists() -> bool:
    from dask.distributed import default_client

    try:
        return default_client() is not None
    except ValueError:
        return False


def _stuck(cluster: Cluster, run: threading.Thread) -> str:
    """Where a run that did not finish stands: the scheduler's state of each task, and the run's stack."""
    import traceback

    from dask.distributed import Client

    with Client(cluster.address, timeout="20s") as client:
        states = client.run_on_scheduler(lambda dask_scheduler: {str(k): ts.state for k, ts in dask_scheduler.tasks.items()})
    return f"still running; tasks {states}; at {''.join(traceback.format_stack(sys._current_frames()[run.ident]))}"


def test_a_process_loads_the_store_once_for_every_task_on_the_same_sets(tiny_store, monkeypatch):
    from tests.conftest import TINY_VISUAL

    loads, real = [], tasks.load_features
    monkeypatch.setattr(tasks, "load_features", lambda *args, **kwargs: loads.append(args) or real(*args, **kwargs))  # a spy: the real load runs
    settings = FitSettings(features=str(tiny_store), **TINY)
    digest = tasks.identity_digest(tasks.store_identity(str(tiny_store)))
    task = lambda fold=None, store=digest, **changes: tasks.FitTask(  # noqa: E731
        dataclasses.replace(settings, **changes), store, ("audio", "visual"), fold, name="t")
    try:
        for each in (task(), task(seed=1), task(0, folds=2), task(1, folds=2)):  # one choice of sets: one load
            tasks.run_task(each)
        assert len(loads) == 1
        tasks.run_task(task(audio_align="linear"))
        tasks.run_task(task(visual_features=TINY_VISUAL))  # the same set named: another key, a third load drops the first
        tasks.run_task(task(audio_align="linear"))
        assert len(loads) == 3
        tasks.run_task(task())
        tasks.run_task(task(store="another digest"))  # the store changed since: loaded again
        assert len(loads) == 5 and len(tasks._LOADED) == tasks.KEEP
    finally:
        tasks.forget()
