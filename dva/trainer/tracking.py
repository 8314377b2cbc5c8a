"""`--track mlflow`: `dva fit` and `dva ablate` runs in MLflow (the optional extra `dva[mlflow]`, mlflow-skinny).

Imported only when a command asks for tracking. The tracking URI is `MLFLOW_TRACKING_URI`, else a local file store
beside the run directories (`<out>/../mlruns`; MLflow 3 keeps its file store in maintenance mode and refuses it unless
`MLFLOW_ALLOW_FILE_STORE=true`, which dva sets for the store it chose itself); the experiment is
`MLFLOW_EXPERIMENT_NAME`, else "dva". Everything goes through `MlflowClient` with explicit run ids (no active-run
state), so threads and Dask workers log side by side.

What a run holds: every fit setting as a param; per epoch (step = the epoch) `train_loss`, `lr`, `epoch_seconds` and
each held-out score as `val_<score>` (`val_p_va`, `val_ccc_v`, ..., `val_expr_f1`); the figures of metrics.json as
`<figure>_<score>` (`best_val_p_va`, `final_p_va`, `oof_p_va`, ...); config.json, metrics.json and the plots as
artifacts. `dva fit --folds K` is a parent run (the out-of-fold figures) with a child per fold and the plain fit (on a
Dask cluster each fit logs its epochs where it trains, `FoldsTracker`).
`dva ablate` is a parent run (base settings, grid, results.md, results.csv, ablation.png) with a child per variant x
seed (its settings, its row's figures, and its difference to the baseline with the paired interval: `diff`,
`ci_low`, `ci_high`) and, with folds, a grandchild per fold; each task logs its own run where it trains (this process
or a Dask worker: `log_task`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from dva.errors import ConfigError, DvaError, first_line

TRACKERS = ("mlflow",)
EXPERIMENT = "dva"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under this one
BATCH = 100  # MLflow's limit of params per log_batch call


def require(track: str | None) -> None:
    """Nothing, or a one-line error (exit 2) when --track names no tracker or its package is not installed; checked
    before any training, so a run never trains for nothing."""
    if track is None:
        return
    if track not in TRACKERS:
        raise ConfigError(f"--track must be one of {', '.join(TRACKERS)}, not {track!r}")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise DvaError("--track mlflow needs MLflow: pip install 'dva[mlflow]'") from None


def target(out: Path) -> dict:
    """Where runs go: {"uri", "file_store"} (file_store: the local store dva chose, beside the run directory out)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return {"uri": uri, "file_store": False}
    return {"uri": (Path(out).resolve().parent / "mlruns").as_uri(), "file_store": True}


def client(where: dict):
    """An MlflowClient of where (`target`), its failures to open as one-line DvaErrors."""
    if where.get("file_store"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    with mlflow_errors(where["uri"]):
        made = MlflowClient(tracking_uri=where["uri"])
        made.search_experiments(max_results=1)  # opens the store now: a bad URI is said here, not in the middle of a run
    return made


class mlflow_errors:
    """MLflow's exceptions as a DvaError naming the tracking URI, in one line."""

    def __init__(self, uri: str):
        self.uri = uri

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from mlflow.exceptions import MlflowException

        if exc is not None and isinstance(exc, (MlflowException, OSError)):
            raise DvaError(f"MLflow at {self.uri}: {first_line(exc)}") from None
        return False


def experiment_id(mlflow_client) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    found = mlflow_client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else mlflow_client.create_experiment(name)


def start(mlflow_client, experiment: str, name: str, parent: str | None = None, tags: dict | None = None) -> str:
    """A new run's id (a child of parent when given)."""
    all_tags = {**(tags or {}), **({PARENT_TAG: parent} if parent else {})}
    return mlflow_client.create_run(experiment, run_name=name, tags={k: str(v) for k, v in all_tags.items()}).info.run_id


def log_params(mlflow_client, run_id: str, values: dict) -> None:
    from mlflow.entities import Param

    params = [Param(k, json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)) for k, v in values.items()]
    for first in range(0, len(params), BATCH):
        mlflow_client.log_batch(run_id, params=params[first : first + BATCH])


def log_metrics(mlflow_client, run_id: str, values: dict, step: int = 0) -> None:
    """The numbers of values (None, NaN and anything not a number left out: MLflow has no missing value)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v in values.items() if _number(v)]
    for first in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[first : first + 1000])


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


EPOCH_NAMES = {"loss": "train_loss", "lr": "lr", "seconds": "epoch_seconds", "eval_seconds": "eval_seconds"}


def epoch_metrics(row: dict) -> dict:
    """An epoch's history row as metric names: train_loss, lr, epoch_seconds, eval_seconds, val_<score>."""
    return {EPOCH_NAMES.get(k, f"val_{k}"): v for k, v in row.items() if k != "epoch"}


def figure_metrics(figures: dict) -> dict:
    """{figure: {score: value}} -> {<figure>_<score>: value}."""
    return {f"{name}_{k}": v for name, figure in figures.items() if isinstance(figure, dict) for k, v in figure.items()}


def log_history(mlflow_client, run_id: str, history: list[dict]) -> None:
    for row in history:
        log_metrics(mlflow_client, run_id, epoch_metrics(row), step=int(row["epoch"]))


FIGURES = ("best_val", "final", "best_val_smoothed", "oof", "oof_last", "oof_smoothed", "oof_val", "plain_best_val")


def log_run_dir(mlflow_client, experiment: str, run: Path, name: str, parent: str | None = None, run_id: str | None = None,
                logged: dict[str, str] | None = None) -> str:
    """One run directory (`dva fit`) or folds directory (`dva fit --folds`, its fold runs and plain fit as children) as a
    run; returns its id. run_id: a run started already (`FoldsTracker`); logged: {child directory name: its run, whose
    epochs a Dask worker logged where it trained} (their epochs are not logged again)."""
    from dva.trainer.folds import FOLDS_FILE

    run, logged = Path(run), logged or {}
    metrics = json.loads((run / "metrics.json").read_text())
    folds = (run / FOLDS_FILE).is_file()
    child_dirs = []
    if folds:
        child_dirs = [run / d for d in json.loads((run / FOLDS_FILE).read_text())["runs"]] + ([run / "plain"] if (run / "plain").is_dir() else [])
    config_dir = child_dirs[0] if folds else run
    config = json.loads((config_dir / "config.json").read_text())
    settings = {**config["settings"], **({"folds": metrics["folds"]} if folds else {})}
    tags = {"dva.run_dir": str(run.resolve()), "dva.task": metrics.get("task", "va")}
    epochs_logged = run_id is not None and not folds
    if run_id is None:
        run_id = start(mlflow_client, experiment, name, parent, tags=tags)
    else:
        for key, value in tags.items():
            mlflow_client.set_tag(run_id, key, value)
    status = "FAILED"
    try:
        log_params(mlflow_client, run_id, settings)
        if config.get("temporal_plugin"):
            log_params(mlflow_client, run_id, {f"temporal_plugin.{k}": v for k, v in config["temporal_plugin"].items()})
        if not epochs_logged:
            log_history(mlflow_client, run_id, metrics.get("epochs", []))
        log_metrics(mlflow_client, run_id, figure_metrics({k: metrics.get(k) for k in FIGURES}))
        for file in [run / "config.json", run / "metrics.json", run / FOLDS_FILE, *sorted(run.glob("*.png"))]:
            if file.is_file():
                mlflow_client.log_artifact(run_id, str(file))
        for child in child_dirs:
            log_run_dir(mlflow_client, experiment, child, child.name, parent=run_id, run_id=logged.get(child.name))
        status = "FINISHED"
    finally:
        mlflow_client.set_terminated(run_id, status)
    return run_id


def log_fit(out: Path) -> dict:
    """`dva fit --track mlflow`: the run (or folds) directory out, written; returns {"tracking_uri", "experiment_id", "run_id"}."""
    where = target(out)
    made = client(where)
    with mlflow_errors(where["uri"]):
        experiment = experiment_id(made)
        run_id = log_run_dir(made, experiment, Path(out), Path(out).name)
    return {"tracking_uri": where["uri"], "experiment_id": experiment, "run_id": run_id}


class FoldsTracker:
    """`dva fit --folds K --track mlflow` on a Dask cluster: the folds run and a child per fold and the plain fit,
    started here; each fit logs its epochs where it trains (`log_task`), and `finish` adds what the folds directory
    holds once it is written (settings, figures, artifacts)."""

    def __init__(self, out: Path):
        self.where = target(out)
        self.client = client(self.where)
        self.out = Path(out)
        with mlflow_errors(self.where["uri"]):
            self.experiment = experiment_id(self.client)
        self.run_id: str | None = None
        self.children: dict = {}  # task.fold (None: the plain fit) -> its run

    def start(self, tasks) -> None:
        with mlflow_errors(self.where["uri"]):
            self.run_id = start(self.client, self.experiment, self.out.name)
            for task in tasks:
                name = "plain" if task.fold is None else f"fold-{task.fold}"
                self.children[task.fold] = start(self.client, self.experiment, name, self.run_id)

    def task_tracking(self, task) -> dict:
        return {**self.where, "experiment_id": self.experiment, "run_id": self.children[task.fold], "figures": False}

    def finish(self, out: Path) -> dict:
        logged = {("plain" if fold is None else f"fold-{fold}"): run for fold, run in self.children.items()}
        with mlflow_errors(self.where["uri"]):
            log_run_dir(self.client, self.experiment, Path(out), self.out.name, run_id=self.run_id, logged=logged)
        return {"tracking_uri": self.where["uri"], "experiment_id": self.experiment, "run_id": self.run_id}

    def fail(self) -> None:
        for run_id in [*self.children.values(), *([self.run_id] if self.run_id else [])]:
            self.client.set_terminated(run_id, "FAILED")


class AblationTracker:
    """`dva ablate --track mlflow`: the parent run of one ablation and a child per job (variant x seed), made here;
    each task logs its own run (`log_task`), wherever it trains, from what `task_tracking` gives it."""

    def __init__(self, out: Path, base, grid: dict, seeds: int, baseline: dict):
        self.where = target(out)
        self.client = client(self.where)
        self.out = Path(out)
        self.params = {**dataclasses.asdict(base), "seeds": seeds, **{f"grid.{k}": ",".join(map(str, v)) for k, v in grid.items()},
                       **{f"baseline.{k}": v for k, v in baseline.items()}}
        with mlflow_errors(self.where["uri"]):
            self.experiment = experiment_id(self.client)
        self.run_id: str | None = None  # the ablation's run, started once its plan is made (a bad plan leaves no run behind)
        self.jobs: dict[str, str] = {}  # job key -> its child run

    def start_jobs(self, jobs) -> None:
        """The ablation's run, and a child run per job about to train with its settings."""
        with mlflow_errors(self.where["uri"]):
            self.run_id = start(self.client, self.experiment, f"ablate {self.out.name}", tags={"dva.ablation": str(self.out.resolve())})
            log_params(self.client, self.run_id, self.params)
            for job in jobs:
                self.jobs[job.key] = start(self.client, self.experiment, f"{job.variant} seed {job.seed}", self.run_id,
                                           tags={"dva.variant": job.variant, "dva.seed": job.seed, "dva.key": job.key})
                log_params(self.client, self.jobs[job.key], dataclasses.asdict(job.settings))

    def task_tracking(self, task) -> dict:
        """What a task needs to log itself: its job's run (no folds), or that run as the parent of its fold's run."""
        job_run = self.jobs[task.key]
        where = {**self.where, "experiment_id": self.experiment}
        return {**where, "run_id": job_run} if task.fold is None else {**where, "parent": job_run, "name": f"fold {task.fold}", "fold": task.fold}

    def job_done(self, key: str, row: dict, figure_names: tuple[str, ...]) -> None:
        with mlflow_errors(self.where["uri"]):
            log_metrics(self.client, self.jobs[key], {f"{row['figure']}_{k}": _float(row.get(k)) for k in figure_names})
            self.client.set_tag(self.jobs[key], "dva.figure", row["figure"])

    def finish(self, summary, failed_keys: set[str], landed: dict[str, dict]) -> None:
        """Each job's run gets its variant's difference to the baseline (diff, ci_low, ci_high) and ends (FAILED when a
        task of it failed); the parent gets the results table and chart and ends."""
        with mlflow_errors(self.where["uri"]):
            for key, run_id in self.jobs.items():
                entry = landed.get(key)
                if entry is not None:
                    log_metrics(self.client, run_id, {k: entry.get(k) for k in ("diff", "ci_low", "ci_high")})
                    self.client.set_tag(run_id, "dva.baseline", str(bool(entry.get("baseline"))))
                self.client.set_terminated(run_id, "FAILED" if key in failed_keys else "FINISHED")
            for name in ("results.md", "results.csv", "ablation.png"):
                if (self.out / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.out / name))
            self.client.set_terminated(self.run_id, "FAILED" if failed_keys else "FINISHED")

    def fail(self) -> None:
        """The ablation stopped (an error): every run still open ends FAILED."""
        for run_id in [*self.jobs.values(), *([self.run_id] if self.run_id else [])]:
            self.client.set_terminated(run_id, "FAILED")


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def log_task(tracking: dict, result: dict) -> str:
    """Runs where the task trained (this process or a Dask worker): its per-epoch figures, best and final into its
    job's run (tracking["run_id"]) or into a new child of it for a fold (tracking["parent"]); returns that run's id."""
    import socket

    made = client(tracking)
    where = f"{socket.gethostname()}:{os.getpid()}"  # the process that trained it (a Dask worker's, on a cluster)
    with mlflow_errors(tracking["uri"]):
        if "run_id" in tracking:
            run_id = tracking["run_id"]
            made.set_tag(run_id, "dva.trained_in", where)
        else:
            run_id = start(made, tracking["experiment_id"], tracking["name"], tracking["parent"], tags={"dva.fold": tracking["fold"], "dva.trained_in": where})
        log_history(made, run_id, result["history"])
        if tracking.get("figures", True):  # a fold of `dva fit --folds` gets its figures from its run directory (`FoldsTracker.finish`)
            log_metrics(made, run_id, figure_metrics({"best_val": result["best"], "final": result["final"]}))
        if "parent" in tracking:
            made.set_terminated(run_id, "FINISHED")
    return run_id
