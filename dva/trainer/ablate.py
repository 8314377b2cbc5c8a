"""`dva ablate`: a grid of `dva fit` variants x seeds, each variant x seed x fold one task (`dva.trainer.tasks`)
run here, on a LocalCluster (`--workers N`) or on a running Dask cluster (`--scheduler ADDR`); each process
loads the store once per choice of feature sets.

Results are appended to results.csv as each variant finishes (all its folds), each under a key made of every
setting that produced it and the store it read, so a rerun skips exactly what is done and a
rerun with other settings never reports old numbers as new ones. results.md and ablation.png show, rank by and
compare on one figure per variant of the current plan: its seed ensemble's (its seeds' held-out predictions
averaged, what a submission of it would be), in the task's metrics (`--set task=expr|au`: EXPR's macro F1, AU's
mean F1 at 0.5; one task per plan), with each seed's own figure, their mean and sample std beside it. Each row
says which figure it is: `best_val` (the epoch selected on val and scored on it) or, with `--folds K`, `oof` (out
of fold, each fold's epoch chosen on the other folds; all variants of a seed share one fold plan). Every other
row is compared with a baseline row on the same held-out videos (`dva.trainer.compare`): the difference of
their shown figures with a paired bootstrap interval over videos, in results.md and results.csv (ensemble, diff,
ci_low, ci_high, videos, few_videos: against the baseline of the latest run, on the rows of its plan)"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dva.errors import ConfigError, DvaWarning
from dva.trainer.compare import compare_to_baseline, held_of, keep, variant_helds
from dva.trainer.ablation_table import METRICS, TASK_METRICS, markdown_table, plot_summary, summarise  # noqa: F401  (markdown_table: the CLI reads the table here)
from dva.trainer.loading.store import left_out_in_store
from dva.trainer.plugins import importable
from dva.trainer.settings import CHOICES, TEMPORALS, FitSettings, check_choice, default_prompt, settings_from
from dva.trainer.tasks import FitTask, absolute, best_postfix, better, data_key, identity_digest, running, store_identity

LEDGER_FIELDS = ("key", "variant", "seed", "figure", "epoch", *METRICS, "seconds", "settings", "untrained")  # untrained: loss terms that reach no trainable parameter
DIFF_FIELDS = ("diff", "ci_low", "ci_high")  # the row's variant's figure minus the baseline's (empty on the baseline's rows)
# per variant, on each of its rows: the figure shown and ranked (its seed ensemble's), how many videos the interval rests
# on and whether that is too few (under FEW_VIDEOS)
CSV_FIELDS = (*LEDGER_FIELDS, "ensemble", *DIFF_FIELDS, "videos", "few_videos")
VARIANT_FIELDS = ("ensemble", *DIFF_FIELDS, "videos", "few_videos")  # recomputed on every run, for the rows of its plan
# results.csv headers of earlier dvas whose rows are kept as they are (their per-variant columns are recomputed; a
# row's "oof" then was selected on the frames it scored: it is read as oof_selected)
VA_LEDGER = ("key", "variant", "seed", "figure", "epoch", "ccc_v", "ccc_a", "p_va", "seconds", "settings")
TASKS_LEDGER = (*VA_LEDGER[:-2], "expr_f1", "au_f1", *VA_LEDGER[-2:])  # before MTL's P_MTL
MTL_LEDGER = (*TASKS_LEDGER[:-2], "p_mtl", *TASKS_LEDGER[-2:])  # before the untrained column
EARLIER_HEADERS = (VA_LEDGER, (*VA_LEDGER, "diff_p_va", "ci_low", "ci_high"), TASKS_LEDGER, (*TASKS_LEDGER, "diff", "ci_low", "ci_high"), MTL_LEDGER,
                   (*MTL_LEDGER, "diff", "ci_low", "ci_high"), (*LEDGER_FIELDS, *DIFF_FIELDS))
NOT_IN_KEY = ("features", "out", "device")  # where a result was read, written or run; the store enters by its identity
# Settings added after results were first keyed: at their default they stay out of the key, so a result written
# before they existed (made with that default) keeps its key and is not trained again.
KEYED_WHEN_SET = ("temporal", "tcn_kernel", "temporal_layers", "mse_weight", "va_weights", "task", "region_centre", "prompt_templates",
                  "logit_scale", "prompt_input", "head", "gate_partner", "causal", "tcn_levels", "target", "window_seconds", "window_frames",
                  "train_stride_seconds", "task_weights", "task_weighting", "recipe", "recipe_sha256")


def parse_value(key: str, text: str):
    """A grid/fixed value typed like the FitSettings field it sets."""
    fields = {f.name: f for f in dataclasses.fields(FitSettings)}
    if key not in fields or key in ("features", "out", "descriptions", "recipe_sha256"):
        settable = sorted(set(fields) - {"features", "out", "descriptions", "seed", "recipe_sha256"})
        raise ConfigError(f"--grid/--set: unknown setting {key!r}; use one of {', '.join(settable)}")
    default = getattr(FitSettings(), key)
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"--grid/--set: {key}={text!r} is not a valid {type(default).__name__}") from None
    if key in CHOICES:
        check_choice(key, text)
    if key == "prompt_templates":  # T1|T2|T3 (a grid's values are split on commas first)
        return tuple(t for t in text.split("|") if t) or None
    return text.replace("+", ",") if key in ("modalities", "visual_features", "audio_features", "va_weights", "task_weights") else text  # A+B: both


def parse_grid(items: list[str]) -> dict[str, list]:
    """["fusion=concat,hierarchical", "modalities=visual,audio,visual+audio"] -> {key: [values]}."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,...")
        grid[key] = [parse_value(key, v.strip()) for v in values.split(",") if v.strip()]
    return grid


def parse_fixed(items: list[str]) -> dict:
    fixed = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        fixed[key] = parse_value(key, value.strip())
    return fixed


def parse_baseline(items: list[str], grid: dict[str, list]) -> dict:
    """["fusion=concat"] -> the baseline's grid choice: the named values, the grid's first value on every other axis."""
    named = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not value.strip():
            raise ConfigError(f"--baseline {item!r}: expected KEY=VALUE")
        if key not in grid:
            raise ConfigError(f"--baseline {item}: {key} is not a --grid axis" + (f" (the axes: {', '.join(grid)})" if grid else " (there is no --grid)"))
        named[key] = parse_value(key, value.strip())
    return baseline_choice(grid, named)


def baseline_choice(grid: dict[str, list], named: dict | None) -> dict:
    """The full grid choice of the baseline: named values (each one of its axis's), else the axis's first value."""
    named = dict(named or {})
    for key, value in named.items():
        if key not in grid or value not in grid[key]:
            shown = ", ".join(map(str, grid.get(key, [])))
            raise ConfigError(f"--baseline {key}={value}: not a value of the grid" + (f" ({key}: {shown})" if shown else f" (no --grid {key}=...)"))
    return {key: named.get(key, values[0]) for key, values in grid.items()}


def variant_name(choice: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in choice.items()) or "base"


def result_key(settings: FitSettings, store: dict) -> str:
    """16 hex digits of sha256 over every setting that makes a result (see NOT_IN_KEY), the store's identity and,
    for a plugin's temporal model, its distribution and version."""
    from dva.trainer.results.run_dir import temporal_plugin

    defaults = FitSettings()
    values = {}
    for name, value in dataclasses.asdict(settings).items():
        if name in NOT_IN_KEY or (name in KEYED_WHEN_SET and value == getattr(defaults, name, None)):
            continue
        if isinstance(getattr(defaults, name), float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # sigma = 1 in a TOML file is the same setting as --set sigma=1.0
        values[name] = value
    made = {"settings": values, "store": store}
    plugin = temporal_plugin(settings.temporal)
    if plugin:  # another version of a plugin is another model: its result is not reused
        made["temporal_plugin"] = {k: plugin[k] for k in ("distribution", "version")}
    text = json.dumps(made, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Job:
    variant: str
    seed: int
    settings: FitSettings
    key: str


def plan_jobs(base: FitSettings, grid: dict[str, list], seeds: int, store: dict, given: dict | None = None) -> list[Job]:
    """Every grid choice x seed, keyed by its full settings and the store's identity (from store_identity). A choice
    of recipe starts from that recipe (its settings and feature sets), then the settings the user gave (given:
    `given_values` of the config and --set; None: every setting of base that is not its recipe's or the default)."""
    if len(set(grid.get("task", [base.task]))) > 1:
        raise ConfigError(f"--grid task={','.join(grid['task'])}: one task per ablation (each ranks by its own figure); run dva ablate once per task, e.g. --set task=expr")
    jobs = []
    for values in itertools.product(*grid.values()) if grid else [()]:
        choice = dict(zip(grid, values))
        for seed in range(base.seed, base.seed + seeds):
            if "recipe" in choice:
                others = {k: v for k, v in choice.items() if k != "recipe"}
                settings = settings_from(None, with_recipe=choice["recipe"], **{**given_by(base, given), **others, "seed": seed})
            else:
                task_prompt = {"prompt": default_prompt(choice["task"])} if "task" in choice and "prompt" not in choice and base.prompt == default_prompt(base.task) else {}
                settings = dataclasses.replace(base, **{**task_prompt, **choice}, seed=seed)  # --grid task=au: AU's prompt default
            settings.validate()
            if settings.held_out is None and not settings.folds:
                raise ConfigError("dva ablate ranks variants by a held-out figure: train on train alone (val selects and scores), or use --folds K")
            jobs.append(Job(variant_name(choice), seed, settings, result_key(settings, store)))
    return jobs


def given_by(base: FitSettings, given: dict | None) -> dict:
    """The settings of base a user gave (given, when known), without its recipe: what another recipe must keep."""
    if given is None:
        start = settings_from(None, with_recipe=base.recipe, features=base.features) if base.recipe else FitSettings()
        given = {f.name: getattr(base, f.name) for f in dataclasses.fields(FitSettings) if getattr(base, f.name) != getattr(start, f.name)}
    given = {k: v for k, v in given.items() if k not in ("recipe", "recipe_sha256")}
    return {"features": base.features, **given}


def read_results(path: Path) -> dict[str, dict]:
    """results.csv rows by key (a key written twice: the last row wins)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {row["key"]: row for row in csv.DictReader(handle)}


def set_aside_unkeyed(path: Path) -> None:
    """A results.csv of an older dva (no key column) cannot tell which settings made its rows: move it
    aside, warn in one line, and let every variant train again."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    if tuple(header) == CSV_FIELDS:
        return
    if tuple(header) in EARLIER_HEADERS:  # the same rows before today's columns: kept, the new columns empty
        rewrite_results(path, [{**row, "figure": "oof_selected" if row.get("figure") == "oof" else row.get("figure")} for row in read_results(path).values()])
        return
    aside, number = path.with_name("results.unkeyed.csv"), 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"results.unkeyed{number}.csv")
    path.rename(aside)
    reason = "no key column" if "key" not in header else "other columns"
    warnings.warn(DvaWarning(f"{path} was written by another dva ({reason}): its rows cannot be matched to settings, "
                             f"so every variant trains again (old rows kept in {aside.name})"), stacklevel=3)


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def rewrite_results(path: Path, rows: list[dict]) -> None:
    """results.csv replaced whole by rows (written beside it, then renamed: a crash leaves the old file)."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({k: "" if row.get(k) is None else row[k] for k in CSV_FIELDS} for row in rows)
    os.replace(partial, path)


class Summary(list):
    """`summarise`'s rows, best first; `failed`: {task: reason} of the tasks that failed in this run (their
    variant has no row; a rerun trains it again); `mlflow`: {"run_id", "tracking_uri"} of the ablation's MLflow run."""

    def __init__(self, rows: list[dict], failed: dict[str, str] | None = None):
        super().__init__(rows)
        self.failed = dict(failed or {})
        self.mlflow: dict | None = None


def ablate(base: FitSettings, grid: dict[str, list], seeds: int, out: Path, workers: int = 0, progress: bool = True,
           scheduler: str | None = None, baseline: dict | None = None, given: dict | None = None, tracker=None) -> Summary:
    """Run every variant x seed whose key is not yet in out/results.csv (here, on a LocalCluster of `workers`
    processes, or on the running Dask scheduler at `scheduler`: one task per variant x seed x fold); write the
    summaries of this plan's results (no other rows), every variant against the baseline (a grid choice, see
    `baseline_choice`); return the summary rows. given: the settings the user gave (see `plan_jobs`). tracker: a
    `dva.trainer.tracking.AblationTracker` (--track mlflow) or None."""
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    baseline_name = variant_name(baseline_choice(grid, baseline))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_csv = out / "results.csv"
    identity = store_identity(base.features)
    jobs = list({job.key: job for job in plan_jobs(base, grid, seeds, identity, given)}.values())
    importable([job.settings.temporal for job in jobs], TEMPORALS)  # a plugin that cannot be imported: said before anything trains
    set_aside_unkeyed(results_csv)
    done = read_results(results_csv)
    todo = [job for job in jobs if job.key not in done]
    tasks = job_tasks(todo, identity_digest(identity))
    damaged: dict[str, str] = {}
    if tracker is not None:
        tracker.start_jobs(todo)
        tasks = [dataclasses.replace(task, tracking=tracker.task_tracking(task)) for task in tasks]
    try:
        failed = _train(todo, tasks, results_csv, scheduler, workers, progress, damaged, tracker) if todo else {}
    except BaseException:
        if tracker is not None:
            tracker.fail()
        raise
    message = left_out_in_store(base.features, [(t.settings.visual_features, t.settings.audio_features, t.modalities) for t in tasks],
                                task=plan_task(base, grid)) if tasks else None
    if message:  # named here, once (after the workers could see the store): the workers that load the sets say nothing
        warnings.warn(DvaWarning(message), stacklevel=2)
    if damaged:  # what the workers found damaged reading the sets, left out as failed tracks are
        warnings.warn(DvaWarning(f"{len(damaged)} damaged tracks left out: " + "; ".join(f"{t} ({why})" for t, why in damaged.items())), stacklevel=2)
    summary = write_summaries(out, jobs, plan_task(base, grid), baseline_name, failed)
    if tracker is not None:
        results = read_results(results_csv)
        entries = {e["variant"]: e for e in summary}
        tracker.finish(summary, {t.key for t in tasks if t.name in failed},
                       {job.key: entries[job.variant] for job in jobs if job.key in results and job.variant in entries})
    return summary


def write_summaries(out: Path, jobs: list[Job], task: str, baseline: str, failed: dict[str, str] | None = None) -> Summary:
    """results.md, ablation.png and every row's per-variant columns of results.csv for the plan's jobs with a row in
    out/results.csv (their predictions kept under out/predictions), each variant against the variant named baseline;
    returns the summary rows."""
    results_csv = out / "results.csv"
    results = read_results(results_csv)
    # named by this plan: the same settings may have been a differently named variant of an earlier grid
    rows = [{**results[job.key], "variant": job.variant} for job in jobs if job.key in results]
    landed = [job for job in jobs if job.key in results]
    helds = variant_helds(out, {variant: [j.key for j in landed if j.variant == variant] for variant in dict.fromkeys(j.variant for j in landed)})
    summary = Summary(summarise(rows, task, helds), failed)
    compare_to_baseline(summary, baseline, helds)
    if results:  # every row of this plan gets its variant's columns; rows of other plans, none
        entries = {job.key: next(e for e in summary if e["variant"] == job.variant) for job in landed}
        rewrite_results(results_csv, [{**row, **variant_columns(entries.get(row["key"]), task)} for row in results.values()])
    (out / "results.md").write_text(markdown_table(summary))
    plot_summary(out / "ablation.png", summary)
    return summary


def job_tasks(jobs: list[Job], digest: str) -> list[FitTask]:
    """One task per job and fold (one per job without folds), the jobs on one choice of feature sets together;
    each loads both modalities when any variant on those sets uses both (one load serves them all). One fold plan per
    seed, made once from every track the task puts in train or val (the union of what the variants' feature sets
    load, `store_fold_plan`): every variant of a seed is cut alike."""
    from dva.trainer.fit import store_fold_plan

    used: dict[tuple, set] = {}
    for job in jobs:
        used.setdefault(data_key(job.settings), set()).update(job.settings.modality_list)
    order = list(used)
    tasks, plans = [], {}
    for job in sorted(jobs, key=lambda job: order.index(data_key(job.settings))):
        settings = dataclasses.replace(job.settings, features=absolute(job.settings.features))
        modalities = tuple(sorted(used[data_key(job.settings)]))
        name = f"{job.variant} seed {job.seed}"
        if not settings.folds:
            tasks.append(FitTask(settings, digest, modalities, None, key=job.key, name=name))
            continue
        cut = (settings.features, settings.task, settings.folds, settings.seed)
        if cut not in plans:
            plans[cut] = tuple(store_fold_plan(settings).items())
        tasks += [FitTask(settings, digest, modalities, fold, key=job.key, name=f"{name} fold {fold}", plan=plans[cut]) for fold in range(settings.folds)]
    return tasks


def _train(todo: list[Job], tasks: list[FitTask], results_csv: Path, scheduler: str | None, workers: int, progress: bool,
           damaged: dict[str, str], tracker=None) -> dict[str, str]:
    """Run the tasks, append each job's row as soon as all its tasks landed; returns {task: reason} of those that failed.
    damaged gains the tracks the tasks found damaged, {track: why}."""
    from tqdm import tqdm

    jobs = {job.key: job for job in todo}
    parts: dict[str, dict] = {key: {} for key in jobs}
    failed, best = {}, None
    with running(tasks, scheduler, workers) as finished, tqdm(total=len(tasks), desc="ablate", unit="fit", disable=not progress) as bar:
        for task, result, reason in finished:
            bar.update(1)
            if reason is not None:
                failed[task.name] = reason
                parts.pop(task.key, None)  # the job has no row this time; its other folds are not kept
                continue
            damaged.update(result.get("damaged") or {})
            if task.key not in parts:
                continue
            parts[task.key][task.fold] = result
            job = jobs[task.key]
            if len(parts[task.key]) == max(1, job.settings.folds):
                done = parts.pop(task.key)
                row = job_row(job, done)
                landed = [done[fold] for fold in sorted(done, key=lambda f: -1 if f is None else f)]
                if job.settings.folds:  # the frames the row's oof was scored on: each fold's at the epoch chosen on the others
                    epochs = [int(e) for e in str(row["epoch"]).split("/")]
                    landed = [{**part, "val_pred": part["epoch_preds"][e - 1]} for part, e in zip(landed, epochs)]
                keep(results_csv.parent, job.key, held_of(landed))
                append_row(results_csv, row)
                if tracker is not None:
                    tracker.job_done(job.key, row, TASK_METRICS[job.settings.task])
                best = better(best, row[TASK_METRICS[job.settings.task][-1]], f"{job.variant} seed {job.seed}")
                bar.set_postfix_str(best_postfix(best))
    return failed


def job_row(job: Job, results: dict) -> dict:
    """The results.csv row of a job from its tasks' results ({fold: essentials}; {None: ...} without folds)."""
    from dva.trainer.evaluate import frame_scores

    if job.settings.folds:  # out of fold: every fold's held-out predictions back in train+val's order, scored together
        folds = [results[fold] for fold in sorted(results)]
        pred, labels, epochs = oof_of(folds)
        figure, epoch, scores = "oof", "/".join(map(str, epochs)), frame_scores(pred, labels)
        seconds = sum(r["seconds"] for r in folds)
    else:
        (result,) = results.values()
        figure, epoch, scores, seconds = "best_val", result["best"]["epoch"], result["best"], result["seconds"]
    return {
        "key": job.key, "variant": job.variant, "seed": job.seed, "figure": figure, "epoch": epoch,
        **{k: scores[k] for k in TASK_METRICS[job.settings.task]}, "seconds": round(seconds, 2),
        "settings": json.dumps(dataclasses.asdict(job.settings), sort_keys=True),
        "untrained": "+".join(sorted({t for r in results.values() for t, n in (r.get("loss_terms") or {}).items() if n == 0})),
    }


def oof_of(folds: list[dict]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(pred, labels, each fold's epoch) out of fold over train+val from the folds' essentials, in fold order: each
    fold's predictions at the epoch chosen on the other folds (`unselected_epochs`), nothing selected on its own."""
    from dva.trainer.evaluate import task_figure
    from dva.trainer.folds import unselected_epochs

    epochs = unselected_epochs([[task_figure(row) for row in r["history"]] for r in folds])
    frames = sum(len(r["rows"]) for r in folds)
    pred = np.full((frames, folds[0]["val_pred"].shape[1]), np.nan, dtype=np.float32)  # widths: the task's
    labels = np.full((frames, folds[0]["labels"].shape[1]), np.nan, dtype=np.float32)
    for r, e in zip(folds, epochs):
        pred[r["rows"]], labels[r["rows"]] = r["epoch_preds"][e - 1], r["labels"]
    return pred, labels, epochs


def plan_task(base: FitSettings, grid: dict[str, list]) -> str:
    """The one task of a plan (`plan_jobs` refuses a grid over several)."""
    return grid.get("task", [base.task])[0]


def variant_columns(entry: dict | None, task: str) -> dict:
    """A results.csv row's per-variant columns (VARIANT_FIELDS) from its variant's summary entry (None: a row of another plan)."""
    if entry is None:
        return {f: None for f in VARIANT_FIELDS}
    shown = entry[TASK_METRICS[task][-1]]
    videos = entry.get("videos")
    return {"ensemble": None if math.isnan(shown) else shown, **{f: entry.get(f) for f in DIFF_FIELDS},
            "videos": videos, "few_videos": None if videos is None else ("yes" if entry.get("few_videos") else "no")}
