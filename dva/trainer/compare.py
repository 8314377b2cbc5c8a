"""An ablation's rows against its baseline: every job's held-out predictions kept beside results.csv
(predictions/<key>.npz: the frames its figure was computed on), each variant's averaged over its seeds, and
each variant compared with the baseline on the videos both predicted by `dva.trainer.paired` (in the task's figure),
and the results.md cells that say so. numpy only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dva.trainer.paired import figure, paired_difference

PREDICTIONS = "predictions"
FEW_VIDEOS = 10  # a bootstrap over fewer clusters than this sees too few distinct resamples


@dataclass
class Held:
    """One job's (or a variant's, averaged over seeds) held-out predictions, track after track."""

    tracks: list[str]
    videos: list[str]  # the video of each track (a video's `_left`/`_right` tracks share it)
    offsets: np.ndarray  # int64 [tracks + 1]
    pred: np.ndarray  # float32 [frames, 2] (EXPR: [frames, 8] class probabilities, AU: [frames, 12] probabilities)
    labels: np.ndarray  # float32 [frames, 2] (EXPR: [frames, 1] class index, AU: [frames, 12]), NaN where not annotated

    def rows(self, tracks: list[str]) -> np.ndarray:
        """The frames of these tracks, in their order."""
        where = {t: i for i, t in enumerate(self.tracks)}
        return np.concatenate([np.arange(self.offsets[where[t]], self.offsets[where[t] + 1]) for t in tracks] or [np.zeros(0, np.int64)])


def held_of(parts: list[dict]) -> Held:
    """A job's Held from its tasks' essentials (one without folds; a fold's held-out tracks each otherwise)."""
    tracks = [t for p in parts for t in p["held_tracks"]]
    videos = [v for p in parts for v in p["held_videos"]]
    lengths = np.concatenate([np.diff(p["held_offsets"]) for p in parts])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pred = np.concatenate([np.asarray(p["val_pred"], dtype=np.float32) for p in parts])
    labels = np.concatenate([np.asarray(p["labels"], dtype=np.float32) for p in parts])
    return Held(tracks, videos, offsets, pred, labels)


def keep(out: Path, key: str, held: Held) -> Path:
    """out/predictions/<key>.npz, written whole (a file half written is never read as a result)."""
    folder = Path(out) / PREDICTIONS
    folder.mkdir(parents=True, exist_ok=True)
    path, partial = folder / f"{key}.npz", folder / f"{key}.partial.npz"
    np.savez(partial, tracks=np.array(held.tracks, dtype=str), videos=np.array(held.videos, dtype=str), offsets=held.offsets,
             pred=held.pred, labels=held.labels)
    os.replace(partial, path)
    return path


def kept(out: Path, key: str) -> Held | None:
    """The Held of a job kept under out, None when there is none (a row written by an older dva)."""
    path = Path(out) / PREDICTIONS / f"{key}.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return Held([str(t) for t in data["tracks"]], [str(v) for v in data["videos"]], data["offsets"], data["pred"], data["labels"])


def seed_average(helds: list[Held]) -> Held:
    """The seeds' predictions averaged frame by frame on the tracks every seed predicted (the first seed's order)."""
    first, others = helds[0], [set(h.tracks) for h in helds[1:]]
    common = [t for t in first.tracks if all(t in other for other in others)]
    rows = first.rows(common)
    lengths = np.diff(first.offsets)[[first.tracks.index(t) for t in common]]
    pred = np.mean([h.pred[h.rows(common)] for h in helds], axis=0, dtype=np.float64).astype(np.float32)
    videos = dict(zip(first.tracks, first.videos))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Held(common, [videos[t] for t in common], offsets, pred, first.labels[rows])


def against(baseline: Held, variant: Held):
    """(Paired: variant minus baseline on the tracks both predicted, their videos resampled whole, or None when they
    share none; the number of tracks one of them has that the other lacks)."""
    theirs = set(variant.tracks)
    common = [t for t in baseline.tracks if t in theirs]
    unshared = len(baseline.tracks) + len(variant.tracks) - 2 * len(common)
    if not common:
        return None, unshared
    lengths = np.diff(baseline.offsets)[[baseline.tracks.index(t) for t in common]]
    videos = dict(zip(baseline.tracks, baseline.videos))
    names = sorted({videos[t] for t in common})
    codes = np.repeat([names.index(videos[t]) for t in common], lengths)  # integers: no string sort over every frame
    rows = baseline.rows(common)
    result = paired_difference(baseline.pred[rows], variant.pred[variant.rows(common)], baseline.labels[rows], codes)
    return result, unshared


def variant_helds(out: Path, keys: dict[str, list[str]]) -> dict[str, Held | None]:
    """Each variant's seed ensemble: its seeds' kept predictions (keys: its jobs with a row) averaged frame by frame;
    None where one seed has none kept (a row written by an older dva)."""
    helds = {}
    for variant, variant_keys in keys.items():
        found = [kept(out, key) for key in variant_keys]
        helds[variant] = seed_average(found) if found and all(h is not None for h in found) else None
    return helds


def compare_to_baseline(summary: list[dict], baseline: str, helds: dict[str, Held | None]) -> None:
    """Each entry of summary gets `baseline` (bool), diff (of the task's figure), ci_low, ci_high and holds_zero (None on the
    baseline and where nothing can be compared), videos, few_videos (the interval rests on fewer than FEW_VIDEOS), and a
    note saying why there is no interval or what it is not over (appended to the entry's note). helds: `variant_helds`.
    diff is the variant's seed-ensemble figure minus the baseline's, the figures the table shows; the interval is the
    paired bootstrap of that same difference."""
    base = helds.get(baseline)
    for entry in summary:
        note = entry.get("note") or ""
        entry.update(baseline=entry["variant"] == baseline, diff=None, ci_low=None, ci_high=None, holds_zero=None, videos=None, few_videos=None)
        add = lambda text: "; ".join(t for t in (note, text) if t)  # noqa: E731
        entry["note"] = note
        if entry["baseline"]:
            continue
        if base is None or helds.get(entry["variant"]) is None:
            which = "the baseline" if base is None else "this row"
            entry["note"] = add(f"{which} has no result ({baseline} is the baseline)" if which == "the baseline" and baseline not in helds else
                                f"{which} has no kept predictions (a row of an older dva: delete its rows from results.csv to train it again)")
            continue
        mine = helds[entry["variant"]]
        paired, unshared = against(base, mine)
        if paired is None:
            entry["note"] = add("no held-out track in common with the baseline")
            continue
        diff = figure(mine.pred, mine.labels) - figure(base.pred, base.labels) if not unshared else paired.diff
        entry.update(diff=diff, ci_low=paired.low, ci_high=paired.high, holds_zero=paired.holds_zero, videos=paired.videos,
                     few_videos=paired.videos < FEW_VIDEOS)
        if unshared:
            entry["note"] = add(f"Δ over the tracks both predicted ({unshared} predicted by one of the two only), not the difference of the shown figures")


def difference_caption(summary: list[dict], name: str = "P_VA") -> str:
    """The caption of the Δ column; name: the figure (P_VA, EXPR F1, AU F1)."""
    from dva.trainer.paired import LEVEL, RESAMPLES, SEED

    base = next((e["variant"] for e in summary if e["baseline"]), None)
    videos = sorted({e["videos"] for e in summary if e.get("videos")})
    over = f"the same {'/'.join(map(str, videos))} held-out videos" if videos else "the same held-out videos"
    return (f"Δ{name}: the row's shown {name} minus the baseline's ({base or 'not in these results'}), on {over}; [low, high]: {LEVEL:.0%} paired "
            f"bootstrap interval of that difference ({RESAMPLES} resamples of whole videos, seed {SEED}). \"holds 0\": the interval holds 0, the "
            f"difference is within the noise of which videos were held out. A row whose interval rests on fewer than {FEW_VIDEOS} videos says so: "
            "too few to trust it.")


def difference_cell(entry: dict, notes: list[str]) -> str:
    """The Δ cell of a row (its note, if any, appended to notes and marked)."""
    if entry["baseline"]:
        return "baseline"
    mark = ""
    if entry["note"]:
        notes.append(f"[{len(notes) + 1}] {entry['variant']}: {entry['note']}")
        mark = f" [{len(notes)}]"
    if entry["diff"] is None:
        return "—" + mark
    signed = lambda x: f"{x:+.4f}".replace("-", "−")  # noqa: E731
    interval = f"[{signed(entry['ci_low'])}, {signed(entry['ci_high'])}]" if not math.isnan(entry["ci_low"]) else "[no interval]"
    few = f", {entry['videos']} videos: too few to trust" if entry.get("few_videos") else ""
    return f"{signed(entry['diff'])} {interval}" + (" holds 0" if entry["holds_zero"] else "") + few + mark
