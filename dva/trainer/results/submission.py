"""Prediction files in the layouts ABAW accepts.

- `submission` (ABAW 5 onwards): one file, header `image_location,valence,arousal`, then exactly
  the organisers' sample file's rows in its order, each with a value in [-1, 1]. Without a sample
  file: every frame of every listed track, in list order (`<track>/<NNNNN>.jpg`).
- `per-track` (older challenges): one `<track>.txt` per track, header `valence,arousal`.

A submission is complete or not written: a track with no predictions (missing, failed or incomplete in the store,
written only under `--allow-incomplete`) gets every one of its rows filled by `FILL` (named in a warning with its row
count by `dva predict`), so the file still holds exactly the sample's rows in its order.
- `csv` (for reading, any split): one `<track>.csv` per track, header `frame,time,valence,arousal,face` (VA; the
  runs of several tasks side by side, `csv_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dva.data.tasks import AU_NAMES, EXPR_CLASSES, TASKS
from dva.data.test_set import SUBMISSION_HEADER, SampleFile, submission_header

FORMATS = ("submission", "per-track", "csv")

# What a track without predictions gets in every row of a submission (`--allow-incomplete`): the middle of the VA
# plane, the neutral class, no unit active; `FILL_RULE` says it in words for the warning and the check.
FILL = {"va": (0.0, 0.0), "expr": 0, "au": (0,) * len(AU_NAMES)}
FILL_RULE = {"va": "valence 0, arousal 0", "expr": f"class 0 ({EXPR_CLASSES[0]})", "au": "every unit 0"}


def fill_rows(task: str, rows: int) -> np.ndarray:
    """rows copies of task's `FILL`: float32 [rows, 2] for va, int64 [rows] for expr, int64 [rows, 12] for au."""
    value = np.asarray(FILL[task], dtype=np.float32 if task == "va" else np.int64)
    return np.broadcast_to(value, (rows, *value.shape)).copy()


def filled_text(task: str, missing: dict[str, int]) -> str:
    """'12 rows of 2 tracks without predictions filled with valence 0, arousal 0: a (5 rows), b (7 rows)'."""
    shown = ", ".join(f"{track} ({rows} rows)" for track, rows in missing.items())
    return f"{sum(missing.values())} rows of {len(missing)} tracks without predictions filled with {FILL_RULE[task]}: {shown}"


def write_per_track(out: Path, tracks: list[str], offsets: np.ndarray, pred: np.ndarray, missing: dict[str, int] | None = None) -> list[Path]:
    """One `<track>.txt` per track under out: header `valence,arousal`, one line per row, values in [-1, 1]; and one per
    track of missing ({track: rows}, tracks without predictions), every row `FILL`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    parts = [(track, pred[offsets[i] : offsets[i + 1]]) for i, track in enumerate(tracks)]
    parts += [(track, fill_rows("va", count)) for track, count in (missing or {}).items()]
    for track, values in parts:
        rows = np.clip(values, -1.0, 1.0)
        path = out / f"{track}.txt"
        path.write_text("\n".join(["valence,arousal"] + [f"{v:.6f},{a:.6f}" for v, a in rows]) + "\n")
        written.append(path)
    return written


def csv_columns(tasks) -> list[str]:
    """The value columns of a `<track>.csv`, per task given, in va, expr, au order: valence, arousal; the eight EXPR
    class probabilities (EXPR_CLASSES) and `expression`, the most probable class; the twelve AU probabilities (AU_NAMES)
    and `<AU>_on`, each unit's probability at its threshold (0/1)."""
    names = {"va": list(TASKS["va"].columns), "expr": [*EXPR_CLASSES, "expression"], "au": [*AU_NAMES, *(f"{au}_on" for au in AU_NAMES)]}
    return [column for task in TASKS if task in tasks for column in names[task]]


def write_csv(out: Path, tracks: list[str], offsets: np.ndarray, values: dict[str, np.ndarray], times: np.ndarray, faces: np.ndarray | None,
              thresholds: list[float] | None = None, frame_numbers: dict[str, np.ndarray] | None = None) -> list[Path]:
    """One `<track>.csv` per track under out, a row per frame: `frame` (1-based, as the crops `NNNNN.jpg`: an image
    set's track, in frame_numbers, its stored frame numbers), `time`
    (seconds, the store's frame_time), each task's columns (`csv_columns`: values {task: per-frame predictions [N, C]},
    VA's clipped to [-1, 1], probabilities to [0, 1]; thresholds: AU's per unit), `face` (1 where the visual set has the
    frame, i.e. a face crop was there; empty when the model reads no visual set). times float [N], faces bool [N] or None.
    VA alone: header `frame,time,valence,arousal,face`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = ",".join(["frame", "time", *csv_columns(values), "face"])
    cells = [_task_cells(task, values[task], thresholds) for task in TASKS if task in values]
    written = []
    for i, track in enumerate(tracks):
        rows = range(int(offsets[i]), int(offsets[i + 1]))
        face = [""] * len(rows) if faces is None else [str(int(f)) for f in faces[rows.start : rows.stop]]
        names = [str(int(n)) for n in frame_numbers[track]] if frame_numbers and track in frame_numbers else [str(n) for n in range(1, len(rows) + 1)]
        lines = [",".join([names[k], f"{times[row]:.4f}", *(part[row] for part in cells), face[k]]) for k, row in enumerate(rows)]
        path = out / f"{track}.csv"
        path.write_text("\n".join([header, *lines]) + "\n")
        written.append(path)
    return written


def _task_cells(task: str, pred: np.ndarray, thresholds: list[float] | None) -> list[str]:
    """One task's columns of every row, as text: VA two values in [-1, 1]; EXPR eight probabilities and the argmax's
    name; AU twelve probabilities and twelve bits (probability >= the unit's threshold, 0.5 without)."""
    if task == "va":
        return [f"{v:.6f},{a:.6f}" for v, a in np.clip(pred, -1.0, 1.0)]
    probabilities = np.clip(pred, 0.0, 1.0)
    shown = [",".join(f"{p:.6f}" for p in row) for row in probabilities]
    if task == "expr":
        return [f"{text},{EXPR_CLASSES[k]}" for text, k in zip(shown, np.argmax(pred, axis=1))]
    bits = pred >= np.asarray(thresholds if thresholds is not None else [0.5] * len(AU_NAMES))[None, :]
    return [f"{text},{','.join('1' if b else '0' for b in row)}" for text, row in zip(shown, bits)]


@dataclass
class Submission:
    """The rows of one submission file, and what was done to make them."""

    locations: list[str]
    values: np.ndarray  # float32 [rows, 2], clipped to [-1, 1]
    filled: dict[str, int]  # track -> rows past its stored frames, given the track's last prediction
    missing: dict[str, int]  # track -> rows of a track without predictions, each given FILL["va"]

    def check(self, sample: SampleFile | None) -> str:
        """One line: does this equal the sample's rows, in order, with finite values in [-1, 1]? Raises
        ValueError when it does not (a bug: the rows were built from the sample)."""
        finite = bool(np.isfinite(self.values).all()) and bool((np.abs(self.values) <= 1).all())
        if not finite:
            raise ValueError("submission holds values that are not finite or outside [-1, 1]")
        return _check_line(self.locations, sample, "all values finite in [-1, 1]", "va", self.missing)

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [SUBMISSION_HEADER] + [f"{loc},{v:.6f},{a:.6f}" for loc, (v, a) in zip(self.locations, self.values)]
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)  # a reader never sees half a submission
        return path


def build_submission(tracks: list[str], offsets: np.ndarray, pred: np.ndarray, sample: SampleFile | None, listed: list[str],
                     lengths: dict[str, int] | None = None, frame_numbers: dict[str, np.ndarray] | None = None) -> Submission:
    """The submission rows: the sample's rows in its order (frame N of a track is its row N-1; an image set's track,
    in frame_numbers, has the row of its stored frame N), or, without a sample, every frame of every listed track in
    list order. A track with no predictions gets `FILL` in each of its rows, counted in `missing` (without a sample,
    lengths gives its row count)."""
    done = build_task_submission("va", tracks, offsets, pred, sample, listed, lengths, frame_numbers)
    return Submission(done.locations, done.values, done.filled, done.missing)


def _check_line(locations: list[str], sample: SampleFile | None, kind: str, task: str, missing: dict[str, int]) -> str:
    """The check's one line (`Submission.check`); ValueError when the rows are not the sample's, in its order."""
    fill = f"; {sum(missing.values())} rows of {len(missing)} tracks without predictions filled with {FILL_RULE[task]}" if missing else ""
    if sample is None:
        return f"{len(locations)} rows, every frame of {len(set(loc.split('/')[0] for loc in locations))} tracks in list order, {kind}{fill}"
    if locations != sample.locations:
        raise ValueError(f"submission rows differ from {sample.path}")
    return f"checked against {Path(sample.path).name}: {len(locations)} rows, same order, {kind}{fill}"


def submission_rows(tracks: list[str], offsets: np.ndarray, sample: SampleFile | None, listed: list[str],
                    lengths: dict[str, int] | None = None, frame_numbers: dict[str, np.ndarray] | None = None
                    ) -> tuple[list[str], list[int], dict[str, int], dict[str, int]]:
    """(locations, the prediction row of each, -1 for a track without predictions, {track: rows not among its stored
    frames}, {track without predictions: its rows}): the sample's rows in its order, or every frame of every listed track
    without a sample, lengths giving the row count of a track without predictions (ValueError when it gives none: a
    caller refuses such a submission before building it). frame_numbers: {track: the frame number of each of its rows}
    of an image set's tracks (the store's `frame_number`, s-Aff-Wild2), whose rows are their selected frames only; a
    track not in it has row N-1 for frame N."""
    position = {track: i for i, track in enumerate(tracks)}
    numbers = frame_numbers or {}
    if sample is not None:
        wanted_tracks, wanted_frames, locations = sample.tracks, sample.frames, sample.locations
    else:
        wanted_tracks, wanted_frames, locations = [], [], []
        for track in listed:
            if track in position:
                count = int(offsets[position[track] + 1] - offsets[position[track]])
            elif track in (lengths or {}):
                count = int(lengths[track])
            else:
                raise ValueError(f"{track}: no predictions and no row count to fill")
            frames = [int(n) for n in numbers[track]] if track in numbers else list(range(1, count + 1))
            wanted_tracks += [track] * count
            wanted_frames += frames
            locations += [f"{track}/{frame:05d}.jpg" for frame in frames]
    rows, filled, missing = [], {}, {}
    for track, frame in zip(wanted_tracks, wanted_frames):
        i = position.get(track)
        if i is None:
            missing[track] = missing.get(track, 0) + 1
            rows.append(-1)
            continue
        start, stop = int(offsets[i]), int(offsets[i + 1])
        if track in numbers:  # an image set's track: the row that holds frame N, wherever the selection put it
            at = int(np.searchsorted(numbers[track], frame))
            if at >= stop - start or int(numbers[track][at]) != frame:  # a frame not stored (extracted from another list)
                filled[track] = filled.get(track, 0) + 1
                at = min(at, stop - start - 1)
            row = start + at
        else:
            row = start + frame - 1
        if row >= stop:  # the store holds fewer frames than the sample asks for (extracted without the sample file)
            filled[track] = filled.get(track, 0) + 1
            row = stop - 1
        rows.append(row)
    return list(locations), rows, filled, missing


@dataclass
class TaskSubmission:
    """One challenge's submission rows (`build_task_submission`): VA values [rows, 2] in [-1, 1], EXPR class indices
    [rows] in 0-7, AU bits [rows, 12] in {0, 1}."""

    task: str
    locations: list[str]
    values: np.ndarray
    filled: dict[str, int]
    missing: dict[str, int]  # track -> rows filled with FILL[task]

    def check(self, sample: SampleFile | None) -> str:
        """One line: the sample's rows in its order, each value of the challenge's kind; ValueError when not."""
        values = self.values
        if self.task == "va":
            return Submission(self.locations, values, self.filled, self.missing).check(sample)
        width = len(TASKS[self.task].columns) if self.task == "au" else None
        shape_ok = values.shape == ((len(self.locations),) if width is None else (len(self.locations), width))
        kind = "class indices 0-7" if self.task == "expr" else "12 bits 0/1"
        if not shape_ok or not np.isin(values, np.arange(8) if self.task == "expr" else (0, 1)).all():
            raise ValueError(f"{self.task} submission holds values that are not {kind} (shape {values.shape})")
        return _check_line(self.locations, sample, f"all {kind}", self.task, self.missing)

    def write(self, path: Path) -> Path:
        """The file, header `submission_header(task)` then one `<location>,<values>` per row, written atomically."""
        if self.task == "va":
            return Submission(self.locations, self.values, self.filled, self.missing).write(path)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.values.reshape(len(self.locations), -1)
        lines = [submission_header(self.task)] + [f"{loc},{','.join(str(int(v)) for v in row)}" for loc, row in zip(self.locations, rows)]
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)
        return path


def build_task_submission(task: str, tracks: list[str], offsets: np.ndarray, pred: np.ndarray, sample: SampleFile | None, listed: list[str],
                          lengths: dict[str, int] | None = None, frame_numbers: dict[str, np.ndarray] | None = None) -> TaskSubmission:
    """A challenge's submission from per-frame predictions of the tracks (rows offsets[i]:offsets[i+1] are track i's):
    pred float [N, 2] for va, int [N] class indices for expr, int [N, 12] bits for au. The rows are the challenge's
    own sample file's (its `find_task_sample`, or the store's test split `task_tests[task]["sample"]`), in its order; a
    track without predictions gets `FILL[task]` in each of its rows (lengths: its row count without a sample). Call `check(sample)` before `write(path)`, as `dva predict` does for VA.
    frame_numbers: as `submission_rows`."""
    if task not in TASKS:
        raise ValueError(f"build_task_submission: unknown task {task!r}")
    locations, rows, filled, missing = submission_rows(tracks, offsets, sample, listed, lengths, frame_numbers)
    index = np.asarray(rows, dtype=np.int64)
    values = fill_rows(task, len(rows))  # a track without predictions keeps FILL
    have = index >= 0
    if have.any():
        given = np.asarray(pred)[index[have]]
        values[have] = np.clip(given, -1.0, 1.0) if task == "va" else given
    return TaskSubmission(task, locations, values, filled, missing)


MTL_HEADER = "image,valence,arousal,expression,aus"  # the multi-task challenge's, as teams write it (khanhnd185/MTL-ABAW4 test.py)


@dataclass
class MtlSubmission:
    """The multi-task challenge's rows (`build_mtl_submission`): per test image its valence and arousal [rows, 2], the
    expression index [rows] and the 12 AU bits [rows, 12]; header: the sample file's when it has one of its own."""

    locations: list[str]
    va: np.ndarray
    expression: np.ndarray
    aus: np.ndarray
    header: str = MTL_HEADER

    def check(self, sample: SampleFile) -> str:
        """One line: exactly the list's rows in its order, finite VA in [-1, 1], a class 0-7 and 12 bits per row;
        ValueError naming what is not so (a bug: the rows were built from the list)."""
        rows = len(self.locations)
        if self.locations != list(sample.locations):
            raise ValueError(f"MTL submission rows differ from {sample.path}")
        if self.va.shape != (rows, 2) or not np.isfinite(self.va).all() or (np.abs(self.va) > 1).any():
            raise ValueError("MTL submission holds valence or arousal values that are not finite in [-1, 1]")
        if self.expression.shape != (rows,) or not np.isin(self.expression, np.arange(len(EXPR_CLASSES))).all():
            raise ValueError("MTL submission holds expressions that are not class indices 0-7")
        if self.aus.shape != (rows, len(AU_NAMES)) or not np.isin(self.aus, (0, 1)).all():
            raise ValueError("MTL submission holds AU values that are not 12 bits 0/1 per row")
        return (f"checked against {Path(sample.path).name}: {rows} rows, same order, valence and arousal finite in [-1, 1], "
                f"expression 0-7, 12 AU bits each")

    def write(self, path: Path) -> Path:
        """The file, `header` then `<image>,<valence>,<arousal>,<expression>,<au1>,...,<au12>` per row, written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [self.header] + [f"{loc},{v:.6f},{a:.6f},{int(e)},{','.join(str(int(b)) for b in bits)}"
                                 for loc, (v, a), e, bits in zip(self.locations, self.va, self.expression, self.aus)]
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)
        return path


def build_mtl_submission(tracks: list[str], offsets: np.ndarray, numbers: dict[str, np.ndarray], pred: np.ndarray, sample: SampleFile,
                         thresholds: list[float] | None) -> MtlSubmission:
    """The multi-task submission: the list's rows in its order, `<track>/<NNNNN>.jpg` read from the track's row whose frame
    number (numbers[track], one per row) is NNNNN. pred [N, 22] (`MTL_PRED`): VA clipped to [-1, 1], the expression the
    most probable class, each AU its probability at its threshold (0.5 without). DataError naming the images that no
    stored row holds (an image of the list that was not extracted)."""
    from dva.data.tasks import MTL_PRED
    from dva.errors import DataError, at_most

    position = {track: i for i, track in enumerate(tracks)}
    row_of = {track: {int(n): int(offsets[i]) + k for k, n in enumerate(numbers[track])} for track, i in position.items()}
    rows, absent = [], []
    for location, track, frame in zip(sample.locations, sample.tracks, sample.frames):
        row = row_of.get(track, {}).get(int(frame))
        (absent if row is None else rows).append(location if row is None else row)
    if absent:
        raise DataError(f"{len(absent)} of the {len(sample.locations)} images of {Path(sample.path).name} have no stored frame to predict, so the "
                        f"submission would miss them: {at_most(absent, 5)}; extract the test split with this list (dva extract --split test)")
    index = np.asarray(rows, dtype=np.int64)
    cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(AU_NAMES))[None, :]
    return MtlSubmission(
        list(sample.locations), np.clip(pred[index, MTL_PRED["va"]], -1.0, 1.0).astype(np.float32),
        np.argmax(pred[index, MTL_PRED["expr"]], axis=1).astype(np.int64), (pred[index, MTL_PRED["au"]] >= cut).astype(np.int64), sample_header(sample),
    )


def sample_header(sample: SampleFile) -> str:
    """The header of an MTL submission: the sample file's first line when it is a header naming at least the five
    columns (`image,valence,arousal,expression,aus` or the organisers' own wording), else `MTL_HEADER`."""
    from dva.data.test_set import LOCATION

    try:
        first = Path(sample.path).read_text(encoding="utf-8-sig").splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return MTL_HEADER
    fields = [f.strip() for f in first.split(",")]
    return first if len(fields) >= 5 and LOCATION.match(fields[0]) is None and "/" not in fields[0] else MTL_HEADER
