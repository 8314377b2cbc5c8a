"""`dva predict`: the ABAW submission from one or more run directories (an ensemble) and a store.

The runs' per-frame predictions are averaged (a folds directory stands for its fold runs), then smoothed
by a centred Gaussian along each track (the widths `dva fit` chose on held-out tracks for valence and arousal
separately, or --smooth),
then clipped to [-1, 1]. The runs may use different feature sets of one store (an AST model and a
wav2vec2 model, say), but a set they share must have been made the same way, and the store must
hold every set with that provenance.

The test split of the store remembers the organisers' files it was extracted with (the VA test
list and the sample submission); the submission has exactly the sample's rows in its order. A
listed track that is missing, failed or incomplete refuses the submission unless
`allow_incomplete`, and is named either way.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from dva.data.test_set import SampleFile, read_sample_file
from dva.data.tasks import TASKS
from dva.errors import ConfigError, DataError, DvaWarning, RunError, StoreError, at_most
from dva.trainer.loading.windows import SplitData
from dva.trainer.results.run_dir import check_compatible, load_run, read_checkpoint, recorded_smoothing, run_dirs, run_provenance, widths_text
from dva.trainer.results.submission import FORMATS, build_submission, build_task_submission, write_csv, write_per_track


def resolve_sample(store, split: str, sample: str | Path | None, task: str = "va") -> SampleFile | None:
    """The sample file: given, or the one the split was extracted with (it must still be there, unchanged); for
    task expr or au that challenge's own (the split's `task_tests[task]["sample"]`, recorded by extract or labels)."""
    if sample is not None:
        return read_sample_file(sample)
    attrs = store.split_attrs(split)
    recorded = attrs.get("sample") if task == "va" else ((attrs.get("task_tests") or {}).get(task) or {}).get("sample")
    if not recorded:
        return None
    path = Path(recorded["path"])
    if not path.is_file():
        raise DataError(f"{path}: the sample file {split} was extracted with is gone; pass --sample FILE")
    found = read_sample_file(path)
    if found.sha256 != recorded["sha256"]:
        raise DataError(f"{path} changed since {split} was extracted (sha256 differs): re-extract {split}, or pass --sample FILE to use it as it is now")
    return found


def predict(run: Path | list[Path], features: str, split: str, out: Path, device=None, fmt: str = "submission", sample: str | Path | None = None,
            allow_incomplete: bool = False, smooth=None) -> dict:
    """Predict every listed track of split with the ensemble of run (one path or several: run or folds
    directories) and write `out` (a file, or a folder for per-track); smooth: seconds of Gaussian smoothing, one
    width or (valence, arousal) (None: what `dva fit` recorded, per dimension). fmt csv takes runs of several tasks:
    each task's runs form an ensemble, every task's columns land side by side in one `<track>.csv` of the tracks stored
    under split, and smooth is VA's (every task's when no VA run is given; EXPR and AU otherwise smooth with the width
    `dva fit` chose). Returns {"tracks", "frames", "rows", "out", "check", "missing", "runs", "smooth_seconds",
    "smoothing", "tasks": {task: {"runs", "smooth_seconds", "smoothing"[, "thresholds"]}}} (smooth_seconds and smoothing
    those of the one task, None for several). Raises DataError naming the tracks a submission would miss, unless
    allow_incomplete; RunError when the runs were trained on different kinds of features."""
    from dva.trainer.evaluate import smooth as smooth_frames

    given = _check_request(run, out, fmt)
    checkpoints = {path: read_checkpoint(path) for path in given for path in run_dirs(path)}  # read once here; load_run builds each model later
    groups = task_groups(given, checkpoints) if fmt == "csv" else {run_task(checkpoints): given}
    task = next(iter(groups))
    if task != "va" and fmt == "per-track":
        raise ConfigError(f"--format {fmt} writes VA values; an {task} run writes the challenge's submission (leave --format out) or --format csv")
    provenance = check_compatible(checkpoints)
    tasks = {name: {"runs": sum(len(run_dirs(path)) for path in group), **_task_smoothing(name, group, smooth if name == "va" or "va" not in groups else None)}
             for name, group in groups.items()}
    if "au" in groups and fmt == "csv":
        tasks["au"]["thresholds"] = au_thresholds(groups["au"])
    inputs = {path: data_key(checkpoint) for path, checkpoint in checkpoints.items()}  # what each run reads: its sets and audio alignment
    listed, unusable, sample_file, data_by_key, columns = _read_store(features, split, sample, provenance["feature_sets"], set(inputs.values()),
                                                                      allow_incomplete, tuple(groups) if fmt == "csv" else task, fmt == "csv", given[0])
    preds = {}
    for name, group in groups.items():  # after each ensemble, before clipping
        mean, data = ensemble_frames([path for each in group for path in run_dirs(each)], inputs, data_by_key, device)
        preds[name] = smooth_frames(mean, data, tasks[name].pop("seconds"))
    one = tasks[task] if len(tasks) == 1 else {}
    done = {"tracks": len(data.tracks), "frames": data.n_frames, "rows": data.n_frames, "out": str(out), "check": None, "missing": list(unusable),
            "runs": sum(each["runs"] for each in tasks.values()), "smooth_seconds": one.get("smooth_seconds"), "smoothing": one.get("smoothing"), "tasks": tasks}
    if fmt == "csv":
        write_csv(out, data.tracks, data.offsets, preds, *columns, thresholds=tasks.get("au", {}).get("thresholds"))
    elif fmt == "per-track":
        write_per_track(out, data.tracks, data.offsets, preds[task])
    elif task != "va":
        done["rows"], done["check"], tasks[task]["thresholds"] = _write_task_submission(task, given, out, data, preds[task], sample_file, listed)
        done["thresholds"] = tasks[task]["thresholds"]
    else:
        done["rows"], done["check"] = _write_submission(out, data, preds[task], sample_file, listed, split)
    return done


def _read_store(features: str, split: str, sample, feature_sets: dict, keys: set, allow_incomplete: bool, task: str | tuple[str, ...], with_columns: bool,
                source: Path):
    """(listed tracks, {track: why not usable}, the sample file, {data key: SplitData}, frame columns or None) of split
    for task's listing (va: the tracks stored under split; expr, au: that task's split, wherever stored; a tuple of tasks,
    for per-frame CSVs: `predict_tracks`, no sample file), after checking the store holds the runs' sets."""
    from dva.stores import framing_mismatches, open_store, sets_mismatch
    from dva.trainer.loading.store import load_split, predict_tracks

    store = open_store(features, mode="r")
    try:
        mismatch = sets_mismatch(feature_sets, store.feature_sets(), features)
        if mismatch:
            raise ConfigError(f"{source} was trained on other features: {mismatch}; extract {split} with the same encoder flags")
        for line in framing_mismatches(feature_sets, store.feature_sets(), features):
            warnings.warn(DvaWarning(line), stacklevel=3)
        if split not in store.splits() and task == "va":
            raise StoreError(f"{features} has no {split!r} split: run `dva extract --split {split}` into it first")
        found = predict_tracks(store, split, task) if isinstance(task, tuple) else None
        sample_file = resolve_sample(store, split, sample, task) if found is None else None
        listed, unusable = _listed_tracks(store, split, sample_file, list(feature_sets), allow_incomplete, task, found)
        usable = [t for t in listed if t not in unusable]
        data_by_key = {key: load_split(store, split, json.loads(key[1]), key[0], tracks=usable, task=None if task == "va" else task) for key in sorted(keys)}
        damaged = {t: why for data in data_by_key.values() for t, why in data.left_out.items() if t in usable}
        if damaged:  # found only by reading them: refused (or left out) as the tracks above, and every run reads the same tracks
            _refuse_unusable(damaged, listed, split, allow_incomplete)
            unusable = {**unusable, **damaged}
            usable = [t for t in usable if t not in damaged]
            data_by_key = {key: load_split(store, split, json.loads(key[1]), key[0], tracks=usable, task=None if task == "va" else task) for key in sorted(keys)}
        tracks = next(iter(data_by_key.values())).tracks
        where = {t: found[t][0] for t in tracks} if found is not None else {t: split for t in tracks}
        columns = frame_columns(store, where, feature_sets) if with_columns else None
    finally:
        store.close()
    return listed, unusable, sample_file, data_by_key, columns


def run_task(checkpoints: dict[Path, dict]) -> str:
    """The task every run was trained for (va for a run of a dva before tasks); RunError when they differ: an ensemble
    averages one kind of prediction."""
    tasks = {path: checkpoint["settings"].get("task", "va") for path, checkpoint in checkpoints.items()}
    if len(set(tasks.values())) > 1:
        shown = ", ".join(f"{path} ({task})" for path, task in tasks.items())
        raise RunError(f"an ensemble averages the runs of one task; these were trained for different tasks: {shown}")
    return next(iter(tasks.values()))


def task_groups(given: list[Path], checkpoints: dict[Path, dict]) -> dict[str, list[Path]]:
    """{task: the given run or folds directories trained for it}, in va, expr, au order (a run of a dva before tasks is
    VA's); RunError when one folds directory holds runs of different tasks."""
    groups: dict[str, list[Path]] = {}
    for path in given:
        groups.setdefault(run_task({run: checkpoints[run] for run in run_dirs(path)}), []).append(path)
    return {task: groups[task] for task in TASKS if task in groups}


def _task_smoothing(task: str, given: list[Path], smooth) -> dict:
    """{"seconds": the widths to smooth with, "smooth_seconds": as reported (VA per dimension, EXPR and AU one width),
    "smoothing": where they came from} of one task's runs (`smoothing_width`)."""
    from dva.trainer.evaluate import DIMENSIONS

    seconds, smoothing = smoothing_width(given, smooth)
    if task != "va" and seconds[0] != seconds[1]:
        raise ConfigError(f"--smooth {smooth}: {task} smooths its probabilities with one width, not one per dimension (V,A is VA's)")
    return {"seconds": seconds, "smooth_seconds": dict(zip(DIMENSIONS, seconds)) if task == "va" else seconds[0], "smoothing": smoothing}


def recorded_thresholds(given: list[Path]) -> list[float] | None:
    """AU: the per-unit thresholds `dva fit` chose on held-out tracks for each given run or folds directory, their mean
    per unit when there are several; None when none recorded any (final fits)."""
    found = []
    for path in given:
        metrics = Path(path) / "metrics.json"
        recorded = json.loads(metrics.read_text()).get("thresholds") if metrics.is_file() else None
        if recorded:
            found.append([float(recorded[name]) for name in TASKS["au"].columns])
    return [float(v) for v in np.mean(found, axis=0)] if found else None


def au_thresholds(given: list[Path]) -> list[float]:
    """The per-unit AU thresholds to apply (`recorded_thresholds`), 0.5 for every unit, with a warning, when no run chose any."""
    thresholds = recorded_thresholds(given)
    if thresholds is None:
        warnings.warn(DvaWarning("no run chose AU thresholds (a final fit holds nothing out to choose on): using 0.5 for every unit"), stacklevel=4)
        thresholds = [0.5] * len(TASKS["au"].columns)
    return thresholds


def _write_task_submission(task: str, given: list[Path], out: Path, data, pred: np.ndarray, sample_file, listed: list[str]) -> tuple[int, str, list | None]:
    """EXPR (the most probable class per row) or AU (12 bits, each unit's probability at its threshold): written after
    its check against the challenge's sample file; (rows, the check, the AU thresholds used)."""
    thresholds = None
    if task == "expr":
        values = np.argmax(pred, axis=1)
    else:
        thresholds = au_thresholds(given)
        values = (pred >= np.asarray(thresholds)[None, :]).astype(np.int64)
    submission = build_task_submission(task, data.tracks, data.offsets, values, sample_file, listed)
    check = submission.check(sample_file)
    submission.write(out)
    return len(submission.locations), check, thresholds


def _check_request(run, out: Path, fmt: str) -> list[Path]:
    """The run paths given, after the checks that need nothing read."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "submission" and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder: the submission is one file (e.g. {Path(out) / 'predictions.txt'}), or use --format per-track")
    given = [Path(run)] if isinstance(run, (str, Path)) else [Path(r) for r in run]
    if not given:
        raise ConfigError("pass at least one --run")
    return given


def _listed_tracks(store, split: str, sample_file, needed: list[str], allow_incomplete: bool, task: str | tuple = "va",
                   found: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """(the tracks to predict, in the submission's order; {track: why} for those that cannot be): a DataError
    naming them unless allow_incomplete, then a warning. EXPR, AU: the tracks of that task's split, wherever stored;
    found: the tracks `predict_tracks` chose (per-frame CSVs), in the store's order."""
    from dva.stores import why_not_usable
    from dva.stores.attrs import track_tasks

    if found is not None:
        index, test_list = {t: attrs for t, (_, attrs) in found.items()}, None
    elif task == "va":
        index = store.track_index(split)
        test_list = store.split_attrs(split).get("test_list", {}).get("tracks")
    else:
        index = {t: a for stored in store.splits() for t, a in store.track_index(stored).items() if track_tasks(a, stored).get(task) == split}
        recorded = ((store.split_attrs(split).get("task_tests") or {}).get(task) or {}) if split in store.splits() else {}
        test_list = (recorded.get("test_list") or {}).get("tracks")
    listed = sample_file.track_order() if sample_file else test_list or list(index)
    unusable = {t: why for t in listed if (why := why_not_usable(index.get(t), needed)) is not None}
    if unusable:
        _refuse_unusable(unusable, listed, split, allow_incomplete)
    return listed, unusable


def _refuse_unusable(unusable: dict[str, str], listed: list[str], split: str, allow_incomplete: bool) -> None:
    """A DataError naming the tracks that cannot be predicted, unless allow_incomplete: then a warning."""
    named = at_most([f"{t} ({why})" for t, why in unusable.items()], 10)
    if not allow_incomplete:
        raise DataError(f"{len(unusable)} of {len(listed)} {split} tracks cannot be predicted, so the submission would miss them: {named}. Extract them (dva extract --split {split}), or pass --allow-incomplete")
    warnings.warn(DvaWarning(f"writing without {len(unusable)} of {len(listed)} {split} tracks: {named}"), stacklevel=4)


def ensemble_frames(runs: list[Path], inputs: dict, data_by_key: dict, device) -> tuple[np.ndarray, SplitData]:
    """The mean per-frame (valence, arousal) float32 [N, 2] of the runs, each on the data it reads (inputs: run ->
    data key), one model in memory at a time; and the split it covers."""
    from dva.trainer.evaluate import predict_frames, resolve_device

    total = None
    for path in runs:
        settings, model, normaliser, _ = load_run(path, device)
        data = data_by_key[inputs[path]].to(resolve_device(device))
        pred = predict_frames(model, settings, data, normaliser=normaliser).astype(np.float64)
        total = pred if total is None else total + pred
        del model
    return (total / len(runs)).astype(np.float32), data


def _write_submission(out: Path, data, pred: np.ndarray, sample_file, listed: list[str], split: str) -> tuple[int, object]:
    """Write the one-file submission; (its rows, its check against the sample file)."""
    submission = build_submission(data.tracks, data.offsets, pred, sample_file, listed)
    check = submission.check(sample_file)
    if submission.filled:
        warnings.warn(DvaWarning(
            f"{sum(submission.filled.values())} sample rows lie past the stored frames of {len(submission.filled)} tracks and repeat each track's last "
            f"prediction ({', '.join(list(submission.filled)[:5])}): extract {split} with the sample file so its rows decide each track's length"
        ), stacklevel=3)
    submission.write(out)
    return len(submission.locations), check


def frame_columns(store, where: dict[str, str], feature_sets: dict[str, dict]) -> tuple[np.ndarray, np.ndarray | None]:
    """(frame times in seconds float64 [N], whether a face crop was there bool [N] or None) of the tracks of where
    ({track: its stored split}, in order), concatenated: the face is the mask of the first visual set the runs read
    (None when they read none)."""
    visual = next((name for name, info in feature_sets.items() if info.get("modality") == "visual"), None)
    times = [np.asarray(store.read(stored, track, "frame_time"), np.float64) for track, stored in where.items()]
    faces = None if visual is None else [np.asarray(store.read(stored, track, f"{visual}/mask"), bool) for track, stored in where.items()]
    return np.concatenate(times), None if faces is None else np.concatenate(faces)


def smoothing_width(given: list[Path], smooth=None) -> tuple[tuple[float, float], str]:
    """((valence, arousal) seconds, where the widths came from): smooth when given (one width or V,A), else the
    widths `dva fit` recorded for the given run or folds directories (per dimension their median, with a warning,
    when they recorded different widths; a run of an older dva recorded one width for both)."""
    from dva.trainer.evaluate import smooth_widths

    if smooth is not None:
        return smooth_widths(smooth), "--smooth"
    recorded = [width for width in (recorded_smoothing(path) for path in given) if width is not None]  # final fits choose none
    if not recorded:
        warnings.warn(DvaWarning("no run chose a smoothing width (a final fit holds nothing out to choose on): not smoothing; pass --smooth SECONDS"), stacklevel=3)
        return (0.0, 0.0), "none chosen (final fits): no smoothing"
    if len(set(recorded)) == 1:
        return recorded[0], "chosen by dva fit on held-out tracks"
    median = tuple(float(np.median([pair[d] for pair in recorded])) for d in range(2))
    shown = "; ".join(widths_text(pair) for pair in recorded)
    warnings.warn(DvaWarning(f"the runs recorded different smoothing widths ({shown}): using their median per dimension, {widths_text(median)}; pass --smooth to choose"), stacklevel=3)
    return median, "median of the widths dva fit chose"


def data_key(checkpoint: dict) -> tuple[str, str]:
    """(audio_align, the feature sets as JSON) a run's checkpoint reads: runs with the same key share one load."""
    return checkpoint["settings"].get("audio_align", "nearest"), json.dumps(run_provenance(checkpoint["provenance"])["sets"], sort_keys=True)
