"""A store checked chunk by chunk (`dva verify`, and `dva extract` before it skips a complete set), and a store written
before dva checksummed its chunks given the checksums (`dva upgrade`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dva.errors import StoreDamage
from dva.stores.attrs import LABEL_ARRAYS, SET_ARRAYS, TRACK_ARRAYS, UNREADABLE, complete_sets
from dva.stores.base import Store
from dva.stores.open import open_store

OWN = None  # a finding's set for the track's own arrays (frame_time, labels) and its metadata


@dataclass
class Finding:
    """What is wrong with one set of one track (set None: the track's own arrays or its metadata)."""

    split: str
    track: str
    set: str | None
    problem: str

    def line(self) -> str:
        return f"{self.split}/{self.track} {f'set {self.set}' if self.set else 'own arrays'}: {self.problem}"


@dataclass
class VerifyReport:
    path: str
    tracks: int = 0
    arrays: int = 0
    checksummed: bool = True  # every chunk carries a checksum (else a flipped byte may decode unseen)
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"path": self.path, "tracks": self.tracks, "arrays": self.arrays, "checksummed": self.checksummed, "damaged": [asdict(f) for f in self.findings]}


def verify(path: str | Path, workers: int = 8, progress: bool = True) -> VerifyReport:
    """Read every chunk of every array of every track (its own arrays and each complete set), workers at a time."""
    from tqdm import tqdm

    with open_store(path, "r") as store:
        store.require_layout()
        report = VerifyReport(str(path), checksummed=store.checksummed)
        jobs, findings = [], []
        for split in store.splits():
            for track, attrs in store.track_index(split).items():
                report.tracks += 1
                arrays, broken = track_arrays(store, split, track, attrs)
                findings += broken
                jobs += [(split, track, name, array) for name, paths in arrays.items() for array in paths]
        report.arrays = len(jobs)
        with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(jobs), desc="verify", unit="array", disable=not progress) as bar:
            for (split, track, name, _), problems in zip(jobs, pool.map(lambda job: store.check_array(*job[:2], job[3]), jobs)):
                findings += [Finding(split, track, name, problem) for problem in problems]
                bar.update(1)
    report.findings = merged(findings)
    return report


def check_track(store: Store, split: str, track: str, attrs: dict, sets=None, workers: int = 4) -> list[Finding]:
    """The damage of one track: its metadata, its own arrays and each of sets (default: each complete one), chunk by
    chunk; one finding per problem (an own array's names the array first)."""
    arrays, findings = track_arrays(store, split, track, attrs, sets)
    jobs = [(name, array) for name, paths in arrays.items() for array in paths]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for (name, _), problems in zip(jobs, pool.map(lambda job: store.check_array(split, track, job[1]), jobs)):
            findings += [Finding(split, track, name, problem) for problem in problems]
    return findings


def track_arrays(store: Store, split: str, track: str, attrs: dict, sets=None) -> tuple[dict[str | None, list[str]], list[Finding]]:
    """({set or OWN: the array paths it must have}, [a finding when the track's metadata cannot be read]). Own arrays:
    frame_time, VA's labels when the attrs say it has them, and the other labels there; sets: each of sets complete."""
    if not attrs or UNREADABLE in attrs:  # a track whose zarr.json cannot be read (or {}: being written right now)
        try:
            attrs = store.track_attrs(split, track)
        except StoreDamage as exc:
            return {}, [Finding(split, track, OWN, exc.problem)]
    own = ({"frame_time"} if attrs.get("rows") is not None else set()) | ({"labels"} if attrs.get("labelled") else set())  # a failed track has none
    try:
        own |= set(store.array_names(split, track)) & set(TRACK_ARRAYS)
    except (StoreDamage, ValueError):  # an array's metadata unreadable: the ones the attrs name, whose check names it
        own |= {LABEL_ARRAYS[task] for task in (attrs.get("annotated") or {}) if task != "va"}
    known = store.feature_sets()
    names = sorted(complete_sets(attrs) & set(known)) if sets is None else [s for s in sets if s in complete_sets(attrs)]
    arrays = {OWN: sorted(own, key=TRACK_ARRAYS.index)}
    arrays.update({name: [f"{name}/{key}" for key in SET_ARRAYS[known[name]["modality"]]] for name in names})
    return arrays, []


def merged(findings: list[Finding]) -> list[Finding]:
    """One finding per split, track and set, its problems joined."""
    grouped: dict[tuple, list[str]] = {}
    for f in findings:
        grouped.setdefault((f.split, f.track, f.set), []).append(f.problem)
    return [Finding(*key, "; ".join(problems)) for key, problems in grouped.items()]


def add_checksums(path: str | Path, progress: bool = True) -> tuple[int, list[Finding]]:
    """Rewrite, in place, every array of a store that carries no checksum, with one (a set through `write_set`, so a
    run that dies leaves it incomplete for `dva extract` to redo, never marked complete half-written); then record the
    store as checksummed. An array that does not read back is left as it is and returned as a finding (and the store is
    not recorded as checksummed). Returns (tracks rewritten, findings)."""
    from tqdm import tqdm

    findings, rewritten = [], 0
    with open_store(path, "a") as store:
        known = store.feature_sets()
        jobs = [(split, track, attrs) for split in store.splits() for track, attrs in store.track_index(split).items()]
        for split, track, attrs in tqdm(jobs, desc="checksums", unit="track", disable=not progress):
            arrays, broken = track_arrays(store, split, track, attrs)
            findings += broken
            touched = False
            for name, paths in arrays.items():
                try:
                    if all(store.is_checksummed(split, track, p) for p in paths):
                        continue
                    if name is OWN:
                        store.replace_track_arrays(split, track, {p: store.read(split, track, p) for p in paths})
                    else:
                        modality = known[name]["modality"]
                        store.write_set(split, track, name, modality, store.read_set(split, track, name, modality))
                    touched = True
                except StoreDamage as exc:
                    findings.append(Finding(split, track, name, exc.problem))
            rewritten += touched
        if not findings:
            store.set_attrs({"checksums": store.checksum})
    return rewritten, merged(findings)
