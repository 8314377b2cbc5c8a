"""`dva predict`: the ABAW submission from a run directory and a store.

The test split of the store remembers the organisers' files it was extracted with (the VA test
list and the sample submission); the submission has exactly the sample's rows in its order. A
listed track that is missing, failed or incomplete refuses the submission unless
`allow_incomplete`, and is named either way.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from dva.data.test_set import SampleFile, read_sample_file
from dva.errors import ConfigError, DataError, DvaWarning, StoreError
from dva.trainer.run_dir import load_run
from dva.trainer.submission import FORMATS, build_submission, write_per_track


def resolve_sample(store, split: str, sample: str | Path | None) -> SampleFile | None:
    """The sample file: given, or the one the split was extracted with (it must still be there, unchanged)."""
    if sample is not None:
        return read_sample_file(sample)
    recorded = store.split_attrs(split).get("sample")
    if not recorded:
        return None
    path = Path(recorded["path"])
    if not path.is_file():
        raise DataError(f"{path}: the sample file {split} was extracted with is gone; pass --sample FILE")
    found = read_sample_file(path)
    if found.sha256 != recorded["sha256"]:
        raise DataError(f"{path} changed since {split} was extracted (sha256 differs): re-extract {split}, or pass --sample FILE to use it as it is now")
    return found


def predict(run: Path, features: str, split: str, out: Path, device=None, fmt: str = "submission", sample: str | Path | None = None, allow_incomplete: bool = False) -> dict:
    """Predict every listed track of split and write `out` (a file, or a folder for per-track); returns
    {"tracks", "frames", "rows", "out", "check", "missing"}. Raises DataError naming the tracks a
    submission would miss, unless allow_incomplete."""
    from dva.stores import open_store
    from dva.trainer.data import load_split
    from dva.trainer.evaluate import predict_frames

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "submission" and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder: the submission is one file (e.g. {Path(out) / 'predictions.txt'}), or use --format per-track")
    settings, model, normaliser, provenance = load_run(run, device)
    store = open_store(features, mode="r")
    try:
        wanted = provenance.get("visual_encoder"), provenance.get("audio_encoder")
        have = store.attrs.get("visual_encoder"), store.attrs.get("audio_encoder")
        if have != wanted:
            raise ConfigError(f"{features} was extracted with other encoders than the store {run} was trained on; extract with the same flags")
        if split not in store.splits():
            raise StoreError(f"{features} has no {split!r} split: run `dva extract --split {split}` into it first")
        sample_file = resolve_sample(store, split, sample)
        index = store.track_index(split)
        listed = sample_file.track_order() if sample_file else store.split_attrs(split).get("test_list", {}).get("tracks") or list(index)
        unusable = {t: ("missing from the store" if t not in index else f"failed: {index[t]['error']}" if "error" in index[t] else "incomplete") for t in listed if not index.get(t, {}).get("complete")}
        if unusable:
            named = "; ".join(f"{t} ({why})" for t, why in list(unusable.items())[:10]) + (f"; and {len(unusable) - 10} more" if len(unusable) > 10 else "")
            if not allow_incomplete:
                raise DataError(f"{len(unusable)} of {len(listed)} {split} tracks cannot be predicted, so the submission would miss them: {named}. Extract them (dva extract --split {split}), or pass --allow-incomplete")
            warnings.warn(DvaWarning(f"writing without {len(unusable)} of {len(listed)} {split} tracks: {named}"), stacklevel=2)
        data = load_split(store, split, settings.audio_align, tracks=[t for t in listed if t not in unusable])
    finally:
        store.close()
    data = data.to(next(model.parameters()).device)
    pred = predict_frames(model, settings, data, normaliser=normaliser)
    if fmt == "per-track":
        write_per_track(out, data.tracks, data.offsets, pred)
        return {"tracks": len(data.tracks), "frames": data.n_frames, "rows": data.n_frames, "out": str(out), "check": None, "missing": list(unusable)}
    submission = build_submission(data.tracks, data.offsets, pred, sample_file, listed)
    check = submission.check(sample_file)
    if submission.filled:
        warnings.warn(DvaWarning(
            f"{sum(submission.filled.values())} sample rows lie past the stored frames of {len(submission.filled)} tracks and repeat each track's last "
            f"prediction ({', '.join(list(submission.filled)[:5])}): extract {split} with the sample file so its rows decide each track's length"
        ), stacklevel=2)
    submission.write(out)
    return {"tracks": len(data.tracks), "frames": data.n_frames, "rows": len(submission.locations), "out": str(out), "check": check, "missing": list(unusable)}
