"""The one place a challenge's submission file is written: `dva predict` (from runs) and `write_submission` (from
per-frame predictions of one's own model, on a split `dva.read_split` read) both end here.

The rows are the organisers' sample file's, in its order (the one the split was extracted with, or one given); a
listed track that is missing, failed or incomplete refuses the file in one line unless allow_incomplete, and is named
either way: allowed, each of its rows gets `submission.FILL` (the warning names the track and its row count), so the
file is never short; a track whose row count is unknown (no sample file, nothing stored) refuses it even then. Every
file is checked against the sample before it is written (the check's one line is returned), and written atomically.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dva.data.test_set import SampleFile, read_sample_file
from dva.errors import ConfigError, DataError, DvaWarning, StoreError, at_most
from dva.trainer.results.submission import FILL_RULE, build_mtl_submission, build_submission, build_task_submission


def write_submission(pred, data, out, sample=None, allow_incomplete: bool = False, thresholds=None) -> dict:
    """Write the challenge's submission file `out` for per-frame predictions pred of a test split read by
    `dva.read_split` (its `source` says the store, split and task): VA values [N, 2] (clipped to [-1, 1]); EXPR the 8
    class probabilities [N, 8] (the most probable class is written) or class indices [N]; AU the 12 probabilities
    [N, 12] (each unit at its threshold: thresholds, one, 12 or {AU: value}, None: 0.5) or 0/1 bits. The rows are the sample file's
    (sample: a path, None: the one recorded for the split), in its order, checked as `dva predict` checks them.
    Returns {"out", "task", "rows", "tracks", "check" (the check's line), "missing" (listed tracks without
    predictions), "missing_rows" ({track: rows filled}), "thresholds" (AU's)}. MTL: `dva.predict` writes its file.

    >>> test = dva.read_split("stores", "test")
    >>> done = dva.write_submission(frames, test, "predictions.txt")  # frames: [test.n_frames, 2]
    >>> print(done["check"])  # checked against <the sample file>: <rows> rows, same order, all values finite in [-1, 1]
    """
    from dva.stores import open_store

    source = getattr(data, "source", None) or {}
    task, split = source.get("task"), source.get("split")
    if not task:
        raise ConfigError("write_submission takes a split read by dva.read_split (it records the store, split and task it came from)")
    if task == "mtl":
        raise ConfigError("write_submission writes the VA, EXPR and AU challenges' files; an MTL submission: dva.predict(run=..., features=..., out=...)")
    values, cut = submission_values(task, pred, data.n_frames, thresholds)
    with open_store(source["store"], "r") as store:
        if split not in store.splits() and task == "va":
            raise StoreError(f"{source['store']} has no {split!r} split: run `dva extract --split {split}` into it first")
        sample_file = resolve_sample(store, split, sample, task)
        needed = [name for names in source["sets"].values() for name in names]
        listed, unusable, lengths = listed_tracks(store, split, sample_file, needed, allow_incomplete, task)
        have = set(data.tracks)
        absent = {t: data.left_out.get(t, "not in the predictions given") for t in listed if t not in have and t not in unusable}
        if absent:  # left out by the read (damaged) or by the caller: refused, or filled, as the tracks above
            index = {t: a for stored in store.splits() for t, a in store.track_index(stored).items() if t in absent}
            lengths = {**lengths, **fill_or_refuse(absent, listed, split, allow_incomplete, task, sample_file, index, False)}
        numbers = frame_numbers(store, stored_where(store, split, data.tracks))
    if task == "va":
        rows, check = write_va(out, data, values, sample_file, listed, split, lengths, numbers)
    else:
        rows, check = write_task(task, out, data, values, sample_file, listed, lengths, numbers)
    return {"out": str(out), "task": task, "rows": rows, "tracks": len(data.tracks), "check": check, "missing": [*unusable, *absent],
            "missing_rows": lengths, "thresholds": cut}


def submission_values(task: str, pred, frames: int, thresholds=None) -> tuple[np.ndarray, list[float] | None]:
    """(what a task's file holds per frame: VA float [N, 2], EXPR class indices [N], AU bits [N, 12]; AU's thresholds
    used) from per-frame predictions (`write_submission`); ConfigError naming the shapes it takes."""
    from dva.data.tasks import AU_NAMES, EXPR_CLASSES
    from dva.trainer.loading.dataset import unit_thresholds

    values = np.asarray(pred.detach().cpu().numpy() if hasattr(pred, "detach") else pred)
    takes = {"va": f"[{frames}, 2] values", "expr": f"[{frames}, {len(EXPR_CLASSES)}] class probabilities or [{frames}] class indices",
             "au": f"[{frames}, {len(AU_NAMES)}] probabilities or 0/1 bits"}[task]
    refused = ConfigError(f"write_submission takes {task}'s per-frame predictions of the split, {takes}, not {list(values.shape)}")
    if values.shape[:1] != (frames,):
        raise refused
    if task == "va" and values.shape == (frames, 2):
        return values.astype(np.float32), None
    if task == "expr" and values.shape == (frames, len(EXPR_CLASSES)):
        return np.argmax(values, axis=1), None
    if task == "expr" and values.ndim == 1 and np.isin(values, np.arange(len(EXPR_CLASSES))).all():
        return values.astype(np.int64), None
    if task == "au" and values.shape == (frames, len(AU_NAMES)):
        cut = unit_thresholds(0.5 if thresholds is None else thresholds)
        return (values >= np.asarray(cut)[None, :]).astype(np.int64), cut
    raise refused


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


def listed_tracks(store, split: str, sample_file, needed: list[str], allow_incomplete: bool, task: str | tuple = "va",
                  found: dict | None = None) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """(the tracks to predict, in the submission's order; {track: why} for those that cannot be; {track: its rows} of
    those, for a submission to fill): a DataError naming them unless allow_incomplete, then a warning naming each with
    the rows filled. A submission (found None) is refused even then when a track's row count is unknown (no sample
    file and no stored count). EXPR, AU: the tracks of that task's split, wherever stored; found: the tracks
    `predict_tracks` chose (per-frame CSVs, nothing filled), in the store's order."""
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
    return listed, unusable, fill_or_refuse(unusable, listed, split, allow_incomplete, task, sample_file, index, found is not None)


def fill_or_refuse(unusable: dict[str, str], listed: list[str], split: str, allow_incomplete: bool, task, sample_file, index: dict,
                   per_frame: bool) -> dict[str, int]:
    """{track: its rows to fill} of the tracks that cannot be predicted (unusable: {track: why}): a DataError naming
    them unless allow_incomplete, then a warning naming each with the rows filled (per_frame CSVs: left out, nothing
    filled). A submission is refused even then when a track's row count is unknown (no sample file, no stored count)."""
    if not unusable:
        return {}
    named = at_most([f"{t} ({why})" for t, why in unusable.items()], 10)
    if not allow_incomplete:
        raise DataError(f"{len(unusable)} of {len(listed)} {split} tracks cannot be predicted, so the submission would miss them: {named}. Extract them (dva extract --split {split}), or pass --allow-incomplete")
    if per_frame:
        warnings.warn(DvaWarning(f"writing without {len(unusable)} of {len(listed)} {split} tracks: {named}"), stacklevel=4)
        return {}
    known = sample_file.rows_per_track() if sample_file else {t: (index.get(t) or {}).get("n_frames") for t in unusable}
    lengths = {t: int(known[t]) for t in unusable if isinstance(known.get(t), int)}
    unknown = [t for t in unusable if t not in lengths]
    if unknown:
        raise DataError(f"{len(unknown)} {split} tracks cannot be predicted and their row count is unknown (no sample file, nothing stored), so even "
                        f"--allow-incomplete cannot fill them: {at_most([f'{t} ({unusable[t]})' for t in unknown], 10)}. Pass --sample FILE, or extract them")
    rows = [f"{t} ({lengths[t]} rows; {why})" for t, why in unusable.items()]
    warnings.warn(DvaWarning(f"{len(unusable)} of {len(listed)} {split} tracks cannot be predicted: {sum(lengths.values())} rows filled with "
                             f"{FILL_RULE[task]}, not predictions: {'; '.join(rows)}"), stacklevel=4)
    return lengths


def stored_where(store, split: str, tracks: list[str]) -> dict[str, str]:
    """{track: the split it is stored under}, in tracks' order: under split itself when there, else where the store
    holds it (EXPR's and AU's test tracks are read wherever stored)."""
    stored_in = {t: stored for stored in reversed(store.splits()) for t in store.track_index(stored)}
    here = store.track_index(split) if split in store.splits() else {}
    return {t: split if t in here else stored_in.get(t, split) for t in tracks}


def frame_numbers(store, where: dict[str, str]) -> dict[str, np.ndarray]:
    """{track: its rows' frame numbers} of where's tracks that store them (an image set's, s-Aff-Wild2: `frame_number`,
    which the sample's rows map to)."""
    return {t: store.read(stored, t, "frame_number") for t, stored in where.items() if store.has_array(stored, t, "frame_number")}


def write_va(out: Path, data, pred: np.ndarray, sample_file, listed: list[str], split: str, lengths: dict[str, int],
             numbers: dict | None = None) -> tuple[int, str]:
    """Write VA's one-file submission; (its rows, its check against the sample file)."""
    submission = build_submission(data.tracks, data.offsets, pred, sample_file, listed, lengths, numbers)
    check = submission.check(sample_file)
    if submission.filled:
        warnings.warn(DvaWarning(
            f"{sum(submission.filled.values())} sample rows lie past the stored frames of {len(submission.filled)} tracks and repeat each track's last "
            f"prediction ({', '.join(list(submission.filled)[:5])}): extract {split} with the sample file so its rows decide each track's length"
        ), stacklevel=3)
    submission.write(out)
    return len(submission.locations), check


def write_task(task: str, out: Path, data, values: np.ndarray, sample_file, listed: list[str], lengths: dict[str, int],
               numbers: dict | None = None) -> tuple[int, str]:
    """Write EXPR's (class indices [N]) or AU's (bits [N, 12]) submission after its check against the challenge's sample
    file; (rows, the check)."""
    submission = build_task_submission(task, data.tracks, data.offsets, values, sample_file, listed, lengths, numbers)
    check = submission.check(sample_file)
    submission.write(out)
    return len(submission.locations), check


def write_mtl(out: Path, data, pred: np.ndarray, sample_file, numbers: dict, thresholds: list[float]) -> tuple[int, str]:
    """The MTL submission (`build_mtl_submission`), checked against the test list, then written; (rows, the check)."""
    submission = build_mtl_submission(data.tracks, data.offsets, numbers, pred, sample_file, thresholds)
    check = submission.check(sample_file)
    submission.write(out)
    return len(submission.locations), check
