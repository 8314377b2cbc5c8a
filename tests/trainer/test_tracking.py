"""`--track mlflow` against a real local MLflow store, read back with MLflow's own client: the same figures dva printed
and wrote to metrics.json and results.csv."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import socket
import sys

import pytest
from typer.testing import CliRunner

from dva.cli import app
from dva.trainer.settings import FitSettings

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="--track mlflow needs dva[mlflow] (the Makefile installs it)")

TINY = {"prompt": "none", "hidden": "16", "seq_len": "32", "stride": "32", "batch_size": "16"}


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(client, **tags) -> list:
    experiment = client.get_experiment_by_name("dva")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    return [run for run in found if all(run.data.tags.get(k) == str(v) for k, v in tags.items())]


@needs_mlflow
def test_fit_tracked_in_mlflow_reads_back_with_its_settings_epochs_figures_and_artifacts(tiny_store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs" / "tracked"
    done = _invoke("fit", "--features", tiny_store, "--out", out, "--epochs", "2", "--patience", "2",
                   *(f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()), "--track", "mlflow", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    uri = (tmp_path / "runs" / "mlruns").as_uri()  # beside the run directory
    assert report["mlflow"]["tracking_uri"] == uri
    client = _client(uri)
    (run,) = _runs(client)
    assert run.info.run_id == report["mlflow"]["run_id"] and run.info.status == "FINISHED"
    config = json.loads((out / "config.json").read_text())
    assert run.data.params == {k: str(v) for k, v in config["settings"].items()}  # every fit setting
    assert set(run.data.params) == {f.name for f in dataclasses.fields(FitSettings)}
    metrics = json.loads((out / "metrics.json").read_text())
    for name, key in (("val_p_va", "p_va"), ("val_ccc_v", "ccc_v"), ("train_loss", "loss")):
        history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(row["epoch"], row[key]) for row in metrics["epochs"]]
    for figure in ("best_val", "final", "best_val_smoothed"):
        for score in ("ccc_v", "ccc_a", "p_va"):
            assert run.data.metrics[f"{figure}_{score}"] == report[figure][score] == metrics[figure][score]  # what dva printed
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "metrics.json", "curves.png", "traces.png", "va_plane.png"} <= artifacts


@needs_mlflow
def test_ablate_tracked_in_mlflow_is_a_parent_with_a_child_per_variant_and_seed_and_a_grandchild_per_fold(tiny_store, tmp_path, monkeypatch):
    """Here, in this process (a Dask worker logs its task's run by the same `log_task`: the folds test below)."""
    uri = (tmp_path / "elsewhere").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the user's store (a file store: MLflow asks to be told it is wanted)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "ablate"
    done = _invoke("ablate", "--features", tiny_store, "--out", out, "--grid", "fusion=concat,gated", "--folds", "2", "--set", "epochs=1",
                   *(f"--set={k}={v}" for k, v in TINY.items()), "--track", "mlflow")
    assert done.exit_code == 0, done.output
    client = _client(uri)
    (parent,) = [run for run in _runs(client) if "mlflow.parentRunId" not in run.data.tags]
    assert f"MLflow run {parent.info.run_id} at {uri}" in done.stderr and parent.info.status == "FINISHED"
    assert parent.data.params["grid.fusion"] == "concat,gated" and parent.data.params["baseline.fusion"] == "concat"
    assert {"results.md", "results.csv", "ablation.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    with (out / "results.csv").open(newline="") as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    jobs = {run.data.tags["dva.variant"]: run for run in _runs(client, **{"mlflow.parentRunId": parent.info.run_id})}
    assert set(jobs) == set(rows) == {"fusion=concat", "fusion=gated"}
    for variant, job in jobs.items():
        row = rows[variant]
        assert job.data.params["fusion"] == variant.split("=")[1] and job.data.params["folds"] == "2"
        assert {k: job.data.metrics[f"oof_{k}"] for k in ("ccc_v", "ccc_a", "p_va")} == {k: float(row[k]) for k in ("ccc_v", "ccc_a", "p_va")}
        folds = _runs(client, **{"mlflow.parentRunId": job.info.run_id})
        assert sorted(run.data.tags["dva.fold"] for run in folds) == ["0", "1"]
        for fold in folds:
            (epoch,) = client.get_metric_history(fold.info.run_id, "val_p_va")
            assert epoch.step == 1 and fold.data.metrics["best_val_p_va"] == epoch.value
            assert fold.data.tags["dva.trained_in"] == f"{socket.gethostname()}:{os.getpid()}"  # trained and logged here
    gated = jobs["fusion=gated"].data.metrics
    assert (gated["diff"], gated["ci_low"], gated["ci_high"]) == tuple(float(rows["fusion=gated"][k]) for k in ("diff", "ci_low", "ci_high"))
    assert "diff" not in jobs["fusion=concat"].data.metrics and jobs["fusion=concat"].data.tags["dva.baseline"] == "True"


@needs_mlflow
def test_fit_folds_on_dask_workers_tracked_in_mlflow_log_each_fold_where_it_trains_and_the_folds_figures_here(tiny_store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs" / "folds"
    done = _invoke("fit", "--features", tiny_store, "--out", out, "--folds", "2", "--workers", "2", "--epochs", "1",
                   *(f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()), "--track", "mlflow", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    client = _client(report["mlflow"]["tracking_uri"])
    (parent,) = [run for run in _runs(client) if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.run_id == report["mlflow"]["run_id"] and parent.data.metrics["oof_p_va"] == report["oof"]["p_va"]
    children = {run.info.run_name: run for run in _runs(client, **{"mlflow.parentRunId": parent.info.run_id})}
    assert set(children) == {"fold-0", "fold-1", "plain"}
    for name, child in children.items():
        metrics = json.loads((out / name / "metrics.json").read_text())
        (epoch,) = client.get_metric_history(child.info.run_id, "val_p_va")  # logged once, by the worker
        assert (epoch.step, epoch.value) == (1, metrics["epochs"][0]["p_va"]) and child.data.metrics["best_val_p_va"] == metrics["best_val"]["p_va"]
        assert child.data.tags["dva.trained_in"] != f"{socket.gethostname()}:{os.getpid()}" and child.info.status == "FINISHED"
        assert {"config.json", "metrics.json", "curves.png"} <= {a.path for a in client.list_artifacts(child.info.run_id)}


def test_track_without_the_extra_or_of_an_unknown_tracker_is_one_line_before_any_training(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # stands in for an environment without dva[mlflow]: `import mlflow` fails
    for command in (["fit", "--out", tmp_path / "run"], ["ablate", "--out", tmp_path / "ablate", "--grid", "fusion=concat,gated"]):
        done = _invoke(*command, "--features", tiny_store, "--track", "mlflow")
        assert done.exit_code == 2 and done.stderr.strip() == "dva: error: --track mlflow needs MLflow: pip install 'dva[mlflow]'", done.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "ablate").exists()
    done = _invoke("fit", "--features", tiny_store, "--out", tmp_path / "run", "--track", "wandb")
    assert done.exit_code == 2 and done.stderr.strip() == "dva: error: --track must be one of mlflow, not 'wandb'"
