"""`dva labels`: every challenge's labels of a release (VA, EXPR, AU) onto the tracks a store already holds, without
re-encoding anything: a store extracted before dva knew the other challenges (or with --task va) gains
`labels_expr` / `labels_au`, each track's `tasks` attr ({task: split}) and the test split's `task_tests`.

A label file longer than the track's stored rows is cut to them (named in a warning: the store's rows were decided
when it was extracted); a shorter one is padded with 'not annotated'. Tracks a task names that the store does not
hold are named too: `dva extract --split S` adds them (labels and all).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dva.data.aff_wild2 import splits_of, task_split_of, release_tasks
from dva.data.annotations import fit_rows, read_task_annotation
from dva.data.layout import claim_key
from dva.data.s_aff_wild2 import NONE, image_set_files, image_set_marker, read_image_annotation, read_image_test_list
from dva.data.tasks import TASK_ORDER, parse_tasks
from dva.errors import StoreError, refusals
from dva.pipeline.claims import claims_for
from dva.pipeline.writing import phase_attrs
from dva.stores import open_store, track_tasks


@dataclasses.dataclass
class LabelsReport:
    store: str
    labelled: dict[str, int] = dataclasses.field(default_factory=dict)  # task -> tracks given its labels
    annotated: dict[str, int] = dataclasses.field(default_factory=dict)  # task -> annotated frames written
    not_in_store: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # "task split" -> tracks the store lacks
    cut: dict[str, int] = dataclasses.field(default_factory=dict)  # "task track" -> label rows past the stored rows
    warnings: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_labels(data: str | Path, store_path: str, tasks: str | None = None, progress: bool = False) -> LabelsReport:
    """Write the labels of every task DATA has (tasks: "expr,au" narrows them) to the store's tracks; returns what it did
    (FileSystemError when the store refuses the writes: full, read-only, forbidden)."""
    with refusals(store_path):
        return _run_labels(data, store_path, tasks, progress)


def _run_labels(data: str | Path, store_path: str, tasks: str | None, progress: bool) -> LabelsReport:
    root, selected = Path(data), parse_tasks(tasks) or TASK_ORDER
    if image_set_marker(root) is not None:
        return _image_set_labels(root, store_path, selected, progress)
    members, phases = release_tasks(root, None, None, None, selected)
    report = LabelsReport(store=str(store_path))
    with open_store(store_path, mode="a") as store:
        held: set[str] = set()
        for stored, track, attrs, claims in _stored_tracks(store, store_path, held, progress):
            _label_track(store, root, members, selected, stored, track, attrs, claims, report)
        for task in selected:
            for split, named in members[task].items():
                missing = [t for t in named if t not in held]
                if missing:
                    report.not_in_store[f"{task} {split}"] = missing
                    report.warnings.append(f"{len(missing)} tracks of {task} {split} are not in the store (dva extract --split {split} adds them): {', '.join(missing[:10])}")
        _record_tests(store, phases, selected, held)
    if report.cut:
        report.warnings.append(f"{len(report.cut)} label files are longer than their tracks' stored rows, cut to them (re-extract with --overwrite to take every row): "
                               + ", ".join(f"{key} (+{rows})" for key, rows in list(report.cut.items())[:10]))
    return report


def _label_track(store, root: Path, members: dict, selected, stored: str, track: str, attrs: dict, claims, report: LabelsReport) -> None:
    """One track's labels of the selected tasks, fitted to its stored rows, and its `tasks` attr."""
    rows, splits, labels = int(attrs["rows"]), track_tasks(attrs, stored), {}
    for task in selected:
        if not splits_of(members[task], track):
            continue
        split, path = task_split_of(members[task], track, stored)
        splits[task] = split
        if path is None:
            continue
        values = read_task_annotation(path, task)
        if values.shape[0] > rows:
            report.cut[f"{task} {track}"] = int(values.shape[0] - rows)
        labels[task] = fit_rows(values, rows, task)
    if not splits:
        return
    _write(store, stored, track, attrs, claims, labels, {task: splits[task] for task in TASK_ORDER if task in splits}, report)


def _stored_tracks(store, store_path: str, held: set[str], progress: bool):
    """(stored split, track, attrs, the split's claims) of every stored track that has rows (one that failed before it
    had rows gets its labels from extract when it lands); held gains every stored track's name."""
    from tqdm import tqdm

    if not store.splits():
        raise StoreError(f"{store_path}: no tracks in the store: `dva extract` them first (labels come with them)")
    for stored in store.splits():
        index = store.track_index(stored)
        held |= set(index)
        claims = claims_for(store, stored)
        for track, attrs in tqdm(index.items(), desc=f"labels {stored}", unit="track", disable=not progress):
            if attrs.get("rows"):
                yield stored, track, attrs, claims


def _write(store, stored: str, track: str, attrs: dict, claims, labels: dict, splits: dict, report: LabelsReport) -> None:
    """One track's label arrays and `tasks` attr written under its video's claim (never beside an extract writing the
    same video), counted in report."""
    with claims.hold(claim_key(track, attrs.get("video"))):
        store.write_labels(stored, track, labels, splits)
    after = store.track_attrs(stored, track).get("annotated") or {}
    for task in labels:
        report.labelled[task] = report.labelled.get(task, 0) + 1
        report.annotated[task] = report.annotated.get(task, 0) + int(after.get(task, 0))


def _record_tests(store, phases: dict, selected, held: set[str]) -> None:
    """The other challenges' test lists and sample files on the store's test split (VA's stay as extract wrote them)."""
    if "test" not in store.splits():
        return
    others = {}
    for task, phase in phases.items():
        if task == "va" or task not in selected:
            continue
        named = [t for t in phase.tracks if t in held]
        others[task] = phase_attrs(str(phase.test_list) if phase.test_list else None, phase.sample, named)
    if others:
        store.set_split_attrs("test", {"task_tests": {**(store.split_attrs("test").get("task_tests") or {}), **others}})


def _image_set_labels(root: Path, store_path: str, selected, progress: bool) -> LabelsReport:
    """`run_labels` of an s-Aff-Wild2 set: each stored track's labels at its rows' frame numbers (`frame_number`), from
    the annotation file that names the track (a frame the file does not name: not annotated); test tracks keep none."""
    files = image_set_files(root)
    named = {split: read_image_annotation(files[split]) for split in ("train", "val") if split in files}
    listed = read_image_test_list(files["test"]).track_order() if "test" in files else []
    report = LabelsReport(store=str(store_path))
    with open_store(store_path, mode="a") as store:
        held: set[str] = set()
        for stored, track, attrs, claims in _stored_tracks(store, store_path, held, progress):
            split = next((name for name, tracks in named.items() if track in tracks), "test" if track in listed else None)
            if split is None:
                continue
            if not store.has_array(stored, track, "frame_number"):
                report.warnings.append(f"{stored}/{track} was not extracted from an s-Aff-Wild2 set (no frame numbers): left as it is")
                continue
            labels = {}
            if split != "test":
                found = named[split].get(track, NONE).at(store.read(stored, track, "frame_number"))
                labels = {task: found[task] for task in selected}
            _write(store, stored, track, attrs, claims, labels, {**track_tasks(attrs, stored), **{task: split for task in selected}}, report)
        for split, tracks in [*named.items(), ("test", listed)]:
            missing = [t for t in tracks if t not in held]
            if missing:
                report.not_in_store.update({f"{task} {split}": missing for task in selected})
                report.warnings.append(f"{len(missing)} tracks of {split} are not in the store (dva extract --split {split} adds them): {', '.join(missing[:10])}")
    return report
