"""What `dva info` says about a store, as data: each split's coverage by every feature set, and what a
set's provenance means to a reader (how often it has a row, where it came from, which command adds to it)."""

from __future__ import annotations

from dva.stores.attrs import complete_sets, damage_of, set_errors, track_tasks


def describe_set(info: dict) -> dict[str, str]:
    """A feature set's info read for a person: {"rate": "per frame" | "50/s" | ..., "family": the encoder family
    ("imported" for an import), "source": the model id, or "from DIR (train, val)" for an imported set,
    "maker": the command that adds its tracks ("extract" or "import")}."""
    encoder = info.get("encoder") or {}
    return {"rate": set_rate(info), "family": encoder.get("family", "imported"), "source": encoder.get("model") or set_sources(info), "maker": set_maker(info)}


def set_rate(info: dict) -> str:
    """How often a set has a row: every frame (visual), or steps per second (audio)."""
    if info["modality"] == "visual":
        return "per frame"
    encoder = info.get("encoder") or {}
    if info.get("rate"):
        return f"{info['rate']:g}/s"
    if encoder.get("hop"):
        return f"{1 / encoder['hop']:g}/s"
    if (info.get("preprocessing") or {}).get("rate") == "time arrays":
        return "time arrays"
    return "per segment token" if encoder.get("mode") == "tokens" else "rate ?"


def set_maker(info: dict) -> str:
    """The command that adds a set's tracks: import for an imported set, extract for the others."""
    return "import" if (info.get("encoder") or {}).get("family") == "imported" else "extract"


def set_sources(info: dict) -> str:
    """Where an imported set came from: "from DIR (train, val), DIR2 (test)"; '' for an extracted one."""
    by_path: dict[str, list[str]] = {}
    for split, source in (info.get("sources") or {}).items():
        by_path.setdefault(source.get("path", "?"), []).append(split)
    return ("from " + ", ".join(f"{path} ({', '.join(splits)})" for path, splits in by_path.items())) if by_path else ""


def split_summary(index: dict[str, dict], sets, recorded: dict) -> dict:
    """One split's part of the summary from its track index ({track: attrs}) and its own attrs (recorded):
    {"tracks", "frames", "valid_labels", "sets": {NAME: {"complete", "rows", "failed": {track: reason}, "incomplete": [track]}},
    and "sample" {"path", "rows", "sha256"} when the split records the organisers' sample file}."""
    part = {"tracks": len(index), "frames": 0, "valid_labels": 0, "sets": {}}
    for name in sets:
        part["sets"][name] = {"complete": 0, "rows": 0, "failed": {}, "incomplete": []}
    for track, track_attrs in index.items():
        part["frames"] += int(track_attrs.get("rows") or 0)
        part["valid_labels"] += int(track_attrs.get("valid_labels") or 0)
        done, errors, set_rows = complete_sets(track_attrs), set_errors(track_attrs), track_attrs.get("set_rows") or {}
        damaged = damage_of(track_attrs)
        for name, coverage in part["sets"].items():
            if damaged:  # as a failed track: named, left out
                coverage["failed"][track] = damaged
            elif name in done:
                coverage["complete"] += 1
                coverage["rows"] += int(set_rows.get(name, 0))
            elif name in errors:
                coverage["failed"][track] = errors[name]
            else:
                coverage["incomplete"].append(track)
    if "sample" in recorded:
        part["sample"] = {k: recorded["sample"][k] for k in ("path", "rows", "sha256")}
    return part


def task_summary(indexes: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Per task and split, from every store split's track index ({split: {track: attrs}}): {task: {split: {"tracks",
    "frames", "annotated", "stored_in": {store split: tracks}}}}; a task's split may lie in several store splits (a
    track is stored under the split of the first task that names it, `dva.data.tasks`)."""
    found: dict[str, dict[str, dict]] = {}
    for stored, index in indexes.items():
        for attrs in index.values():
            annotated = attrs.get("annotated") or {}
            for task, split in track_tasks(attrs, stored).items():
                part = found.setdefault(task, {}).setdefault(split, {"tracks": 0, "frames": 0, "annotated": 0, "stored_in": {}})
                part["tracks"] += 1
                part["frames"] += int(attrs.get("rows") or 0)
                # a task's test tracks have no labels of it (a track's VA labels are not its EXPR's or AU's)
                part["annotated"] += int(annotated.get(task, 0) if task != "va" else attrs.get("valid_labels") or 0)
                part["stored_in"][stored] = part["stored_in"].get(stored, 0) + 1
    tasks, splits = ("va", "expr", "au"), ("train", "val", "test")
    return {task: {split: found[task][split] for split in splits if split in found[task]} for task in tasks if task in found}
