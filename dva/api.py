"""What the commands do, as Python functions: `extract`, `fit`, `predict`, `ablate` and `predict_video`, each from
settings named as the command's flags are (`--seq-len 64` is `seq_len=64`), each returning what the command prints as
plain data. `dva extract`, `dva fit`, `dva predict` and `dva ablate` are thin users of these (parse, call, print).

Settings are applied as on the command line: a recipe (`recipe="seed-code"`, `dva recipes`), then a TOML file
(`config=`), then the keywords given; an unknown name or a bad value is a `dva.DvaError` naming it. A full disk, a
read-only folder or a forbidden one is a `DvaError` naming the folder (what the command prints on one line).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dva.errors import ConfigError, DataError, refusals


def extract(data: str | Path, split: str = "train", out: str | Path | None = None, *, preset: str | None = None, recipe: str | None = None,
            progress: bool = True, **settings) -> dict:
    """Add a visual and an audio feature set of one split to a store, as `dva extract` does (resumable: a rerun does
    only what is not complete; other sets are never touched). Returns what `dva extract --json` prints: {"store",
    "split", "extracted", "skipped", "elsewhere" (done by another process), "failed" ({track: why}: a corrupt video is
    reported and skipped, the rest lands), "warnings", "masked_crops", "sound", "frames", "seconds", "frames_per_second"}.

    settings: any `dva extract` flag by its Python name (`clip_model`, `batch_size`, `device`, `workers`, `only`, ...);
    preset="tiny" puts small random encoders in place (offline), recipe= a recipe's feature sets.

    >>> done = dva.extract("/data/Aff-Wild2", split="train", out="stores")
    >>> len(done["extracted"]), done["failed"]
    (341, {})
    """
    from dva.pipeline.extract import run_extract
    from dva.pipeline.extract_settings import ExtractSettings, extract_settings_from

    _known(settings, ExtractSettings, ("data", "split", "out", "progress"))
    chosen = extract_settings_from(preset, recipe, data=str(data), split=split, out=None if out is None else str(out), progress=progress, **settings)
    return run_extract(chosen).as_dict()


def fit(features: str | None = None, *, recipe: str | None = None, config: str | Path | None = None, track: str | None = None,
        workers: int = 0, scheduler: str | None = None, progress: bool = True, **settings) -> dict:
    """Train as `dva fit` does: select the epoch on val, or `folds=K` folds over train and val, or a final fit
    (`train_splits="train,val"`). Returns the run's figures as `dva fit --json` prints them: {"run": its directory,
    "figure": the task's figure's name, "figures": {name: what it is}, and each figure by name ("best_val",
    "best_val_smoothed", "final", with folds "oof", ...: {"epoch", "ccc_v", "ccc_a", "p_va", ...})}.

    features: the store (default: the config's, else "stores"); settings: any `dva fit` flag by its Python name (`dva.FitSettings` lists them with their defaults). track="mlflow"
    logs the run to MLflow (report["mlflow"]: its run id and tracking URI); workers/scheduler spread folds over Dask.

    >>> report = dva.fit(features="stores", out="runs/gru", epochs=10, seq_len=64)
    >>> report["best_val"]["p_va"], report["run"]
    (0.61..., 'runs/gru')
    """
    from dva.trainer.fit import fit as run_fit
    from dva.trainer.settings import settings_for_store
    from dva.trainer.tasks import fit_folds_spread

    chosen = settings_for_store(_settings(config, recipe, features=features, **settings), "modalities" in settings or config is not None)
    tracking = _tracking(track)
    with refusals(chosen.out):  # the run directory's disk full, read-only or forbidden: one line naming it
        if scheduler or workers > 0:  # with tracking, each fold logs its epochs on the worker that trains it
            tracker = tracking.FoldsTracker(Path(chosen.out)) if tracking is not None else None
            report = fit_folds_spread(chosen, scheduler, workers, progress=progress, tracker=tracker)
            if tracker is not None:
                report["mlflow"] = tracker.finish(Path(report["run"]))
        else:
            report = run_fit(chosen, progress=progress)
            if tracking is not None:
                report["mlflow"] = tracking.log_fit(Path(report["run"]))
    return report


def predict(run: str | Path | list, features: str = "stores", split: str = "test", out: str | Path = "predictions.txt", *,
            format: str = "submission", sample: str | Path | None = None, allow_incomplete: bool = False, smooth=None,
            device: str | None = None) -> dict:
    """Write what `dva predict` writes: the challenge's submission for a store's split (the organisers' sample file's
    rows in its order, checked), per-track files (`format="per-track"`) or a CSV per track (`format="csv"`). run: a
    run or folds directory, or a list of them (an ensemble; with csv, runs of several tasks side by side). Returns
    {"check": the check line, "rows", "tracks", "frames", "runs", "smooth_seconds", "smoothing", "tasks", "missing",
    ...}: what `dva predict --json` prints.

    >>> done = dva.predict("runs/gru", features="stores", split="test", out="predictions.txt")
    >>> done["check"]
    'checked against sample.txt: 96 rows, same order, all values finite in [-1, 1]'
    """
    from dva.trainer.results.predict import predict as run_predict

    runs = [Path(r) for r in run] if isinstance(run, (list, tuple)) else Path(run)
    with refusals(out):
        return run_predict(runs, str(features), split, Path(out), device, fmt=format, sample=sample, allow_incomplete=allow_incomplete, smooth=smooth)


def ablate(features: str = "stores", grid: dict | list[str] | None = None, *, seeds: int = 1, folds: int | None = None,
           baseline: dict | list[str] | None = None, out: str | Path = "runs/ablate", recipe: str | None = None,
           config: str | Path | None = None, track: str | None = None, workers: int = 0, scheduler: str | None = None,
           progress: bool = True, **settings) -> list[dict]:
    """Run a grid of `dva fit` variants x seeds (x folds) as `dva ablate` does, and return its table's rows, best first:
    each a dict with "variant", "figure" (best_val, or oof with folds), the task's figures as the table shows them (VA:
    "ccc_v", "ccc_a", "p_va", each its seed ensemble's; "p_va_seed_mean", "p_va_seed_std", "per_seed"), "baseline",
    "diff", "ci_low", "ci_high" (against the baseline: a paired bootstrap over videos; None on the baseline's row),
    "videos", "few_videos", "note". The returned list's `failed` names the tasks that failed ({task: why}), its
    `mlflow` the tracked run. results.csv, results.md and ablation.png are written under out; a rerun trains only what
    is not there yet.

    grid: {setting: [values]} (or `--grid` strings, "fusion=concat,gated"); settings: fixed for every variant (`--set`);
    baseline: {setting: value} of the row every other is compared with (default: each axis's first value).

    >>> rows = dva.ablate("stores", grid={"fusion": ["concat", "hierarchical"]}, seeds=2, epochs=10)
    >>> [(row["variant"], row["p_va"], row["diff"]) for row in rows]
    [('fusion=hierarchical', 0.62..., 0.03...), ('fusion=concat', 0.59..., None)]
    """
    from dva.trainer.ablate import ablate as run_ablate
    from dva.trainer.ablate import baseline_choice, parse_baseline, parse_grid
    from dva.trainer.settings import settings_for_store
    from dva.trainer.settings import given_values

    config = Path(config) if config is not None else None
    axes = parse_grid(grid) if isinstance(grid, list) else {key: [_typed(key, v) for v in values] for key, values in (grid or {}).items()}
    chosen = parse_baseline(baseline, axes) if isinstance(baseline, list) else baseline_choice(axes, {k: _typed(k, v) for k, v in (baseline or {}).items()})
    values = {**settings, "features": str(features), **({"folds": folds} if folds is not None else {})}
    named = values.pop("recipe", None)  # recipe="NAME" among the settings is recipe=NAME (`--set recipe=NAME`)
    recipe = recipe or named
    base = settings_for_store(_settings(config, recipe, **values), "modalities" in values or "modalities" in axes or config is not None)
    tracking = _tracking(track)
    tracker = tracking.AblationTracker(Path(out), base, axes, seeds, chosen) if tracking is not None else None
    with refusals(out):  # the rows already in results.csv stay: the rerun trains only the rest
        summary = run_ablate(base, axes, seeds, Path(out), workers=workers, progress=progress, scheduler=scheduler, baseline=chosen,
                             given=given_values(config, **values), tracker=tracker)
    if tracker is not None:
        summary.mlflow = {"run_id": tracker.run_id, "tracking_uri": tracker.where["uri"]}
    return summary


def predict_video(video: str | Path, run: str | Path | list, *, out: str | Path | None = None, device: str | None = None,
                  smooth=None, progress: bool = True):
    """VA (and EXPR, AU for runs of those tasks) of every frame of a recording, as `dva predict --video` computes it
    (faces found, the runs' feature sets extracted, predicted): a pandas DataFrame with the CSV's columns (frame, time,
    valence, arousal, ..., face); a recording of two subjects (runs whose crops followed `--subjects 2`) gives both
    tracks' rows, with a first column `track`. Its `attrs` say how it was predicted ("prediction": runs, smoothing, ...;
    "tracks"; with out, "files": each track's CSV and PNG). out: a folder that keeps the CSVs, the PNGs and the work (a
    second call on the same file resumes it); None: a temporary folder, removed. A video that cannot be read is a
    `DvaError` naming it.

    >>> df = dva.predict_video("me.mp4", run="runs/gru")
    >>> df[["time", "valence", "arousal"]].head(2)
         time  valence  arousal
    0  0.0000   0.1032   0.2217
    1  0.0400   0.1040   0.2209
    """
    import tempfile

    from dva.trainer.results.predict_video import predict_videos

    runs = [Path(r) for r in run] if isinstance(run, (list, tuple)) else [Path(run)]
    with tempfile.TemporaryDirectory(prefix="dva-video-") as scratch:
        folder = Path(out) if out is not None else Path(scratch)
        with refusals(folder):
            report = predict_videos([Path(video)], runs, folder, device=device, smooth=smooth, progress=progress)
        if report.failed:
            raise DataError("; ".join(f"{name}: {why}" for name, why in report.failed.items()))
        if not report.tracks:
            raise DataError(f"{video}: no frame of it could be predicted")
        frame = tracks_frame({track: files["csv"] for track, files in report.tracks.items()})
    frame.attrs.update({"video": str(video), "prediction": report.prediction, "framing": report.framing,
                        **({"files": report.tracks} if out is not None else {})})
    return frame


def tracks_frame(csvs: dict):
    """One DataFrame of the per-track CSVs of one recording ({track: path}): the CSV as it is for one track; for a
    recording of two subjects (runs whose crops followed `--subjects 2`: `<name>_left`, `<name>_right`) both, one after
    the other, with a first column `track` saying whose each row is. attrs["tracks"]: the track names."""
    import pandas

    frames = {track: pandas.read_csv(path) for track, path in csvs.items()}
    if len(frames) == 1:
        frame = next(iter(frames.values()))
    else:
        frame = pandas.concat([each.assign(track=track)[["track", *each.columns]] for track, each in frames.items()], ignore_index=True)
    frame.attrs["tracks"] = list(frames)
    return frame


def _settings(config, recipe, **given):
    """FitSettings from a recipe, a TOML file and the keywords given (`settings_from`), an unknown keyword a ConfigError
    that names it (not Python's TypeError)."""
    from dva.trainer.settings import FitSettings, settings_from

    _known(given, FitSettings, ("recipe_sha256",))
    return settings_from(Path(config) if config is not None else None, with_recipe=recipe, **given)


def _known(given: dict, settings_class, not_keywords=()) -> None:
    """A ConfigError naming the keywords that are not a field of settings_class (Python's TypeError would not)."""
    known = {field.name for field in dataclasses.fields(settings_class)} - set(not_keywords)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _typed(key: str, value):
    """A grid value given in Python, checked and typed as the same value typed on the command line would be."""
    from dva.trainer.ablate import parse_value

    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, (tuple, list)):
        value = "|".join(value)  # prompt_templates: several templates
    return parse_value(key, str(value))


def _tracking(track: str | None):
    """dva.trainer.tracking, imported only when track asks for it (checked before any training), else None."""
    if track is None:
        return None
    from dva.trainer import tracking

    tracking.require(track)
    return tracking
