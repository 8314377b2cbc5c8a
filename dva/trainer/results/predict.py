"""`dva predict`: the ABAW submission from one or more run directories (an ensemble) and a store.

The runs' per-frame predictions are averaged (a folds directory stands for its fold runs), then smoothed
by a centred Gaussian along each track (the widths `dva fit` chose on held-out tracks for valence and arousal
separately, or --smooth),
then clipped to [-1, 1]. The runs may use different feature sets of one store (an AST model and a
wav2vec2 model, say), but a set they share must have been made the same way, and the store must
hold every set with that provenance.

The test split of the store remembers the organisers' files it was extracted with (the VA test
list and the sample submission); the submission has exactly the sample's rows in its order, written by
`dva.trainer.results.write` (the one writer, also `dva.write_submission`'s): a listed track that is missing, failed or
incomplete refuses it unless `allow_incomplete`, and is named either way.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from dva.data.tasks import MTL_PRED, MTL_TASKS, TASKS
from dva.errors import ConfigError, DataError, DvaWarning, RunError, StoreError
from dva.trainer.loading.windows import SplitData
from dva.trainer.results.run_dir import check_compatible, load_run, read_checkpoint, recorded_smoothing, run_dirs, run_provenance, widths_text
from dva.trainer.results.submission import FORMATS, write_csv, write_per_track
from dva.trainer.results.write import (fill_or_refuse, frame_numbers, listed_tracks, resolve_sample, stored_where, submission_values, write_mtl, write_task,
                                       write_va)


def predict(run: Path | list[Path], features: str, split: str, out: Path, device=None, fmt: str = "submission", sample: str | Path | None = None,
            allow_incomplete: bool = False, smooth=None) -> dict:
    """Predict every listed track of split with the ensemble of run (one path or several: run or folds
    directories) and write `out` (a file, or a folder for per-track); smooth: seconds of Gaussian smoothing, one
    width or (valence, arousal) (None: what `dva fit` recorded, per dimension). fmt csv takes runs of several tasks:
    each task's runs form an ensemble, every task's columns land side by side in one `<track>.csv` of the tracks stored
    under split, and smooth is VA's (every task's when no VA run is given; EXPR and AU otherwise smooth with the width
    `dva fit` chose). Returns {"tracks", "frames", "rows", "out", "check", "missing", "missing_rows" ({track: rows filled},
    submissions only), "runs", "smooth_seconds",
    "smoothing", "tasks": {task: {"runs", "smooth_seconds", "smoothing"[, "thresholds"]}}} (smooth_seconds and smoothing
    those of the one task, None for several). Raises DataError naming the tracks a submission would miss, unless
    allow_incomplete; RunError when the runs were trained on different kinds of features."""
    from dva.trainer.evaluate import smooth as smooth_frames

    given = _check_request(run, out, fmt)
    checkpoints = {path: read_checkpoint(path) for path in given for path in run_dirs(path)}  # read once here; load_run builds each model later
    _refuse_looking_ahead(checkpoints, smooth)
    groups = task_groups(given, checkpoints) if fmt == "csv" else {run_task(checkpoints): given}
    task = next(iter(groups))
    if "mtl" in groups and len(groups) > 1:
        raise ConfigError(f"an MTL run gives all three tasks' columns: predict it without runs of {', '.join(t for t in groups if t != 'mtl')} (or those without it)")
    if task != "va" and fmt == "per-track":
        raise ConfigError(f"--format {fmt} writes VA values; an {task} run writes the challenge's submission (leave --format out) or --format csv")
    provenance = check_compatible(checkpoints)
    tasks = {name: {"runs": sum(len(run_dirs(path)) for path in group), **_task_smoothing(name, group, smooth if name == "va" or "va" not in groups else None)}
             for name, group in groups.items()}
    if "au" in groups and fmt == "csv":
        tasks["au"]["thresholds"] = au_thresholds(groups["au"])
    if task == "mtl":  # its AU bits, in the submission and the CSV alike
        tasks["mtl"]["thresholds"] = au_thresholds(groups["mtl"])
    inputs = {path: data_key(checkpoint) for path, checkpoint in checkpoints.items()}  # what each run reads: its sets and audio alignment
    listing = (MTL_TASKS if task == "mtl" else tuple(groups)) if fmt == "csv" else task
    listed, unusable, lengths, sample_file, data_by_key, columns, numbers = _read_store(features, split, sample, provenance["feature_sets"], set(inputs.values()),
                                                                               allow_incomplete, listing, fmt == "csv", given[0])
    preds = {}
    for name, group in groups.items():  # after each ensemble, before clipping
        mean, data = ensemble_frames([path for each in group for path in run_dirs(each)], inputs, data_by_key, device)
        preds[name] = smooth_frames(mean, data, tasks[name].pop("seconds"))
    one = tasks[task] if len(tasks) == 1 else {}
    done = {"tracks": len(data.tracks), "frames": data.n_frames, "rows": data.n_frames, "out": str(out), "check": None, "missing": list(unusable),
            "missing_rows": {} if fmt == "csv" else lengths,
            "runs": sum(each["runs"] for each in tasks.values()), "smooth_seconds": one.get("smooth_seconds"), "smoothing": one.get("smoothing"), "tasks": tasks}
    if fmt == "csv" and task == "mtl":  # one model's three tasks, in the columns their own runs would give
        parts = {part: preds["mtl"][:, MTL_PRED[part]] for part in MTL_TASKS}
        write_csv(out, data.tracks, data.offsets, parts, *columns, thresholds=tasks["mtl"]["thresholds"], frame_numbers=numbers)
    elif fmt == "csv":
        write_csv(out, data.tracks, data.offsets, preds, *columns, thresholds=tasks.get("au", {}).get("thresholds"), frame_numbers=numbers)
    elif task == "mtl":
        done["rows"], done["check"] = write_mtl(out, data, preds[task], sample_file, numbers, tasks["mtl"]["thresholds"])
        done["thresholds"] = tasks["mtl"]["thresholds"]
    elif fmt == "per-track":
        write_per_track(out, data.tracks, data.offsets, preds[task], lengths)
    elif task != "va":  # EXPR the most probable class per row, AU each unit's probability at the threshold its runs chose
        tasks[task]["thresholds"] = done["thresholds"] = au_thresholds(given) if task == "au" else None
        values, _ = submission_values(task, preds[task], data.n_frames, tasks[task]["thresholds"])
        done["rows"], done["check"] = write_task(task, out, data, values, sample_file, listed, lengths, numbers)
    else:
        done["rows"], done["check"] = write_va(out, data, preds[task], sample_file, listed, split, lengths, numbers)
    return done


def _read_store(features: str, split: str, sample, feature_sets: dict, keys: set, allow_incomplete: bool, task: str | tuple[str, ...], with_columns: bool,
                source: Path):
    """(listed tracks, {track: why not usable}, {such a track: its rows to fill}, the sample file, {data key: SplitData},
    frame columns or None, {track: its rows' frame numbers} of an image set's tracks (s-Aff-Wild2: `frame_number`, which
    the sample's rows map to)) of split
    for task's listing (va: the tracks stored under split; expr, au: that task's split, wherever stored; a tuple of tasks,
    for per-frame CSVs: `predict_tracks`, no sample file), after checking the store holds the runs' sets."""
    from dva.stores import framing_mismatches, open_store, sets_mismatch
    from dva.trainer.loading.store import load_split, predict_tracks

    store = open_store(features, mode="r")
    try:
        if task == "mtl":
            return _read_mtl_store(store, features, split, sample, feature_sets, keys, allow_incomplete, source)
        mismatch = sets_mismatch(feature_sets, store.feature_sets(), features)
        if mismatch:
            raise ConfigError(f"{source} was trained on other features: {mismatch}; extract {split} with the same encoder flags")
        for line in framing_mismatches(feature_sets, store.feature_sets(), features):
            warnings.warn(DvaWarning(line), stacklevel=3)
        if split not in store.splits() and task == "va":
            raise StoreError(f"{features} has no {split!r} split: run `dva extract --split {split}` into it first")
        found = predict_tracks(store, split, task) if isinstance(task, tuple) else None
        sample_file = resolve_sample(store, split, sample, task) if found is None else None
        listed, unusable, lengths = listed_tracks(store, split, sample_file, list(feature_sets), allow_incomplete, task, found)
        usable = [t for t in listed if t not in unusable]
        data_by_key = {key: load_split(store, split, json.loads(key[1]), key[0], tracks=usable, task=None if task == "va" else task) for key in sorted(keys)}
        damaged = {t: why for data in data_by_key.values() for t, why in data.left_out.items() if t in usable}
        if damaged:  # found only by reading them: refused (or filled, or left out) as the tracks above, and every run reads the same tracks
            index = {t: a for stored in store.splits() for t, a in store.track_index(stored).items() if t in damaged}
            lengths = {**lengths, **fill_or_refuse(damaged, listed, split, allow_incomplete, task, sample_file, index, found is not None)}
            unusable = {**unusable, **damaged}
            usable = [t for t in usable if t not in damaged]
            data_by_key = {key: load_split(store, split, json.loads(key[1]), key[0], tracks=usable, task=None if task == "va" else task) for key in sorted(keys)}
        tracks = next(iter(data_by_key.values())).tracks
        where = {t: found[t][0] for t in tracks} if found is not None else stored_where(store, split, tracks)
        columns = frame_columns(store, where, feature_sets) if with_columns else None
        numbers = frame_numbers(store, where)
    finally:
        store.close()
    return listed, unusable, lengths, sample_file, data_by_key, columns, numbers


IMAGE_SET = "s-aff-wild2"  # the store's `dataset` attr after `dva extract` of an s-Aff-Wild2 set (its layout's name)


def _read_mtl_store(store, features: str, split: str, sample, feature_sets: dict, keys: set, allow_incomplete: bool, source: Path):
    """`_read_store` of an MTL submission: its rows are the multi-task challenge's test list (an s-Aff-Wild2 store
    records it at extraction; --sample FILE gives it for any store), the tracks it names wherever stored, none filled; the
    last item is each loaded track's frame numbers (its `frame_number` array, else row i is frame i + 1), which the list's
    `<track>/<NNNNN>.jpg` names map to. A store of the full Aff-Wild2 has no MTL test list: DataError."""
    from dva.stores import framing_mismatches, sets_mismatch
    from dva.trainer.loading.store import load_split, predict_tracks

    mismatch = sets_mismatch(feature_sets, store.feature_sets(), features)
    if mismatch:
        raise ConfigError(f"{source} was trained on other features: {mismatch}; extract {split} with the same encoder flags")
    for line in framing_mismatches(feature_sets, store.feature_sets(), features):
        warnings.warn(DvaWarning(line), stacklevel=4)
    if sample is None and store.attrs.get("dataset") != IMAGE_SET:
        raise DataError(f"{features} is not an s-Aff-Wild2 store, so it has no multi-task test list to write an MTL submission for: "
                        "pass the challenge's list with --sample FILE, or use --format csv for every frame's VA, EXPR and AU")
    sample_file = resolve_sample(store, split, sample, "va")  # an s-Aff-Wild2 store records the MTL test list as its test split's rows
    if sample_file is None:
        raise DataError(f"{features}: its {split} split records no multi-task test list: pass it with --sample FILE")
    found = predict_tracks(store, split, MTL_TASKS)
    found.update({t: (stored, a) for stored in store.splits() for t, a in store.track_index(stored).items() if t not in found and t in set(sample_file.tracks)})
    # found given: nothing is filled here; an image no stored row holds refuses the file (build_mtl_submission)
    listed, unusable, _ = listed_tracks(store, split, sample_file, list(feature_sets), allow_incomplete, MTL_TASKS, found)
    usable = [t for t in listed if t not in unusable]
    data_by_key = {}
    for key in sorted(keys):
        parts = [load_split(store, stored, json.loads(key[1]), key[0], tracks=[t for t in usable if found[t][0] == stored], task=None)
                 for stored in dict.fromkeys(found[t][0] for t in usable)]
        data_by_key[key] = concatenated(parts, usable)
    tracks = next(iter(data_by_key.values())).tracks
    numbers = {}
    for track in tracks:
        stored = found[track][0]
        rows = int(store.read(stored, track, "frame_time").shape[0])
        numbers[track] = np.asarray(store.read(stored, track, "frame_number"), np.int64) if store.has_array(stored, track, "frame_number") else np.arange(1, rows + 1)
    return listed, unusable, {}, sample_file, data_by_key, None, numbers


def concatenated(parts: list[SplitData], order: list[str]) -> SplitData:
    """The tracks of several loads (each a stored split's) as one SplitData, in order (on the CPU)."""
    import torch

    from dva.trainer.loading.audio_rows import AudioRows
    from dva.trainer.loading.tracks import select_tracks

    if len(parts) == 1:
        data = parts[0]
        return select_tracks(data, [data.tracks.index(t) for t in order if t in data.tracks], split=data.split)
    where = {t: (k, i) for k, part in enumerate(parts) for i, t in enumerate(part.tracks)}
    pieces = [select_tracks(parts[where[t][0]], [where[t][1]], split=parts[0].split) for t in order if t in where]
    offsets = np.concatenate([[0], np.cumsum([p.n_frames for p in pieces])]).astype(np.int64)
    audio = [AudioRows.per_frame(torch.cat([p.audio_at(torch.arange(p.n_frames)) for p in pieces]), offsets)] if pieces[0].audio else []
    return SplitData(pieces[0].split, [p.tracks[0] for p in pieces], offsets, torch.cat([p.visual for p in pieces]), torch.cat([p.visual_mask for p in pieces]),
                     audio, torch.cat([p.audio_mask for p in pieces]), torch.cat([p.labels for p in pieces]), torch.cat([p.label_mask for p in pieces]),
                     [a for p in pieces for a in p.attrs])


def run_task(checkpoints: dict[Path, dict]) -> str:
    """The task every run was trained for (va for a run of a dva before tasks); RunError when they differ: an ensemble
    averages one kind of prediction."""
    tasks = {path: checkpoint["settings"].get("task", "va") for path, checkpoint in checkpoints.items()}
    if len(set(tasks.values())) > 1:
        shown = ", ".join(f"{path} ({task})" for path, task in tasks.items())
        raise RunError(f"an ensemble averages the runs of one task; these were trained for different tasks: {shown}")
    return next(iter(tasks.values()))


def task_groups(given: list[Path], checkpoints: dict[Path, dict]) -> dict[str, list[Path]]:
    """{task: the given run or folds directories trained for it}, in va, expr, au, mtl order (a run of a dva before tasks is
    VA's); RunError when one folds directory holds runs of different tasks."""
    groups: dict[str, list[Path]] = {}
    for path in given:
        groups.setdefault(run_task({run: checkpoints[run] for run in run_dirs(path)}), []).append(path)
    return {task: groups[task] for task in (*TASKS, "mtl") if task in groups}


def _refuse_looking_ahead(checkpoints: dict, smooth) -> None:
    """ConfigError when --smooth would centre a Gaussian on the predictions of a run that sees only the past (--causal,
    --target last): the smoothing would look ahead."""
    from dva.trainer.evaluate import smooth_widths

    past = [path for path, checkpoint in checkpoints.items() if checkpoint["settings"].get("causal") or checkpoint["settings"].get("target") == "last"]
    if past and smooth is not None and smooth_widths(smooth) != (0.0, 0.0):
        raise ConfigError(f"--smooth {smooth}: {past[0]} predicts every frame from its past only (causal or --target last), and a centred "
                          "Gaussian would look ahead; pass --smooth 0 or leave it out")


def _task_smoothing(task: str, given: list[Path], smooth) -> dict:
    """{"seconds": the widths to smooth with, "smooth_seconds": as reported (VA per dimension, EXPR and AU one width),
    "smoothing": where they came from} of one task's runs (`smoothing_width`)."""
    from dva.trainer.evaluate import DIMENSIONS

    if task == "mtl":
        return _mtl_smoothing(given, smooth)
    seconds, smoothing = smoothing_width(given, smooth)
    if task != "va" and seconds[0] != seconds[1]:
        raise ConfigError(f"--smooth {smooth}: {task} smooths its probabilities with one width, not one per dimension (V,A is VA's)")
    return {"seconds": seconds, "smooth_seconds": dict(zip(DIMENSIONS, seconds)) if task == "va" else seconds[0], "smoothing": smoothing}


def _mtl_smoothing(given: list[Path], smooth) -> dict:
    """`_task_smoothing` of MTL runs: --smooth for every part (V,A: VA's per dimension), else the four widths `dva fit`
    chose (valence, arousal, expression, aus), per width their median over the runs when they differ."""
    from dva.trainer.evaluate import mtl_widths

    if smooth is not None:
        seconds, smoothing = mtl_widths(smooth), "--smooth"
    else:
        recorded = [dict(width) for width in (recorded_smoothing(path) for path in given) if width is not None]
        if not recorded:
            warnings.warn(DvaWarning("no run chose a smoothing width (a final fit holds nothing out to choose on): not smoothing; pass --smooth SECONDS"), stacklevel=4)
            seconds, smoothing = mtl_widths(0.0), "none chosen (final fits): no smoothing"
        else:
            seconds = {name: float(np.median([float(r[name]) for r in recorded])) for name in mtl_widths(0.0)}
            smoothing = "chosen by dva fit on held-out tracks" if len({tuple(sorted(r.items())) for r in recorded}) == 1 else "median of the widths dva fit chose"
    return {"seconds": seconds, "smooth_seconds": seconds, "smoothing": smoothing}


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
