"""A release's framing, learned from its own crops.

The organisers align their crops by a similarity transform of their detector's five points onto a template they do
not publish. dva finds dlib's 68 points in a sample of their crops (`Points68.on_crop`: HOG on the crop itself),
takes the five it aligns by (dva/faces/framing.py) and fits the template those crops put them on: a generalised
Procrustes mean (each crop's points aligned by a similarity onto the current template, the median of the aligned
points the next template, placed where the crops put their faces: the similarity of it onto the median raw
points). The crops' own alignment jitter and dlib's landmark noise average out; what is left is `residual_px`, the
median RMS distance of a crop's points to the template, in the crops' pixels.

The sample: up to SAMPLE crops spread over the tracks (evenly over the sorted track folders) and over each track's
frames (at evenly spaced quantiles), visited track by track in turn, so the same release always gives the same
sample and the same template. A folder whose first crops show no face at all (not faces: synthetic pictures) is
given up on early.

Where it is written: `dva faces` writes the framing it learned to `framing.json` in the crops folder it writes
(`OUT/cropped_aligned/framing.json`: the record, plus `from`, the folder it was learned from), and reuses it on a
rerun from the same folder; every faces record carries the framing in its settings, so `dva extract` reading dva's
crops finds it in their records. `dva extract` reading crops dva did not make (the release's own) learns it from
them (`crops_framing`) when dlib is installed, and keeps what it learned in the user's cache (`cache_file`), never
in the release.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from dva.data.layout import CROPS_FOLDER, child_folder, release_marker
from dva.errors import ConfigError, DataError
from dva.faces.framing import Framing, Points68, apply, five_points, similarity

SAMPLE = 48  # crops sampled: a few dozen, spread over tracks and frames
TRACKS = 16  # at most this many tracks sampled
LEAST = 8  # crops with a face found needed to learn a template
GIVE_UP = 12  # no face in the first this many crops: not a folder of faces
FRAMING_FILE = "framing.json"
_LEARNED: dict = {}  # per process: cache file (the folder and its sampled crops) -> framing record or None


def sample_crops(root: Path, sample: int = SAMPLE) -> list[Path]:
    """Up to sample crops of root (`<track>/NNNNN.jpg`), spread over tracks and frames, track by track in turn."""
    tracks = sorted(d for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(tracks) > TRACKS:
        tracks = [tracks[int(i * len(tracks) / TRACKS)] for i in range(TRACKS)]
    per = math.ceil(sample / max(len(tracks), 1))
    columns = []
    for track in tracks:
        files = sorted(track.glob("*.jpg"))
        picks = sorted({int((i + 0.5) * len(files) / per) for i in range(per)}) if files else []
        columns.append([files[i] for i in picks])
    ordered = [column[i] for i in range(per) for column in columns if i < len(column)]
    return ordered[:sample]


def fit_template(shapes: np.ndarray, rounds: int = 5) -> tuple[np.ndarray, float]:
    """(template [K, 2], residual px) of shapes [N, K, 2]: the generalised Procrustes median, posed as the crops
    pose their faces, and the median over shapes of their RMS distance to it. Shapes that fit their similarity onto
    the template more than three times worse than the median (a wrong face, a failed fit) are left out."""
    shapes = np.asarray(shapes, np.float64)
    keep = np.ones(len(shapes), bool)
    template = np.median(shapes, axis=0)
    for _ in range(rounds):
        aligned = np.stack([apply(similarity(s, template), s) for s in shapes])
        misfit = np.sqrt(((aligned - template) ** 2).sum(-1).mean(-1))
        keep = misfit <= 3 * max(float(np.median(misfit)), 1e-6)
        mean_shape = np.median(aligned[keep], axis=0)
        template = apply(similarity(mean_shape, np.median(shapes[keep], axis=0)), mean_shape)
    residual = float(np.median(np.sqrt(((shapes[keep] - template) ** 2).sum(-1).mean(-1))))
    return template, residual


def learn_framing(root: Path, sample: int = SAMPLE) -> Framing:
    """The release framing of the crops under root; DataError when too few of the sampled crops show a face dlib
    finds, or the crops are not square and of one size."""
    from PIL import Image

    root = Path(root)
    files = sample_crops(root, sample) if root.is_dir() else []
    if not files:
        raise DataError(f"{root}: no crops (<track>/NNNNN.jpg) to learn the framing from")
    finder, shapes, sizes = Points68(), [], set()
    for tried, path in enumerate(files, 1):
        crop = np.asarray(Image.open(path).convert("RGB"))
        sizes.add(crop.shape[:2])
        points = finder.on_crop(crop)
        if points is not None:
            shapes.append(five_points(points))
        if tried >= GIVE_UP and not shapes:
            break
    if len(sizes) != 1 or len({*next(iter(sizes))}) != 1:
        raise DataError(f"{root}: the crops are not square and of one size ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))})")
    if len(shapes) < LEAST:
        raise DataError(f"{root}: dlib found a face in only {len(shapes)} of {tried} sampled crops, too few to learn their framing from")
    template, residual = fit_template(np.stack(shapes))
    return Framing("release", tuple(map(tuple, template)), int(next(iter(sizes))[0]), round(residual, 2), len(shapes))


def crops_source(folder: Path) -> Path:
    """The crops folder of --framing-from CROPS: CROPS/cropped_aligned when there is one, else CROPS itself."""
    return child_folder(Path(folder), CROPS_FOLDER) or Path(folder)


def release_crops(data: Path) -> Path | None:
    """The release's own crops when data is an Aff-Wild2 release that has them."""
    return child_folder(Path(data), CROPS_FOLDER) if release_marker(Path(data)) is not None else None


def default_framing(data: Path, framing_from: Path | None) -> str:
    """`dva faces`' framing when --framing is not given: release for a release with its crops (or --framing-from),
    else dlib's, as before framings existed."""
    return "release" if framing_from is not None or release_crops(data) is not None else "dlib"


def resolved_framing(framing: Framing, data: Path, crops_root: Path, framing_from: Path | None) -> Framing:
    """framing with its template: a release framing without points is learned from --framing-from or the release's
    crops, or read from crops_root/framing.json when that was learned from the same folder (written otherwise)."""
    if framing_from is not None and framing.name != "release":
        raise ConfigError(f"--framing-from learns the release framing: it does not go with --framing {framing.name}")
    if framing.name != "release" or framing.points:
        return framing.validate()
    source = crops_source(framing_from) if framing_from is not None else release_crops(data)
    if source is None:
        raise ConfigError(f"--framing release learns the framing from a release's crops: {data} has none; pass --framing-from CROPS (crops in the release's layout)")
    source = source.resolve()
    path = Path(crops_root) / FRAMING_FILE
    try:
        written = json.loads(path.read_text())
        if written.get("from") == str(source):
            return Framing.from_record(written)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    learned = learn_framing(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({**learned.record(), "from": str(source)}, indent=1))
    os.replace(temporary, path)
    return learned


def crops_framing(root: Path) -> dict | None:
    """The framing record of the crops under root, for a feature set's provenance: their records' when dva made them,
    else learned from them when dlib is installed (once per process, and kept in the user's cache, `cache_file`);
    None when neither can be had (no dlib, no crops, too few faces in them)."""
    from dva.faces.stage import crops_settings

    root = Path(root)
    settings = crops_settings(root) if root.is_dir() else None
    if settings is not None:
        return Framing.from_record(settings.get("framing")).record()
    try:
        import dlib  # noqa: F401  (without it the framing is not learned: the set records none)
    except ImportError:
        return None
    files = sample_crops(root) if root.is_dir() else []
    if not files:
        return None
    cache = cache_file(root, files)
    if cache not in _LEARNED:
        found, record = _cached(cache)
        if not found:
            try:
                record = learn_framing(root).record()
            except DataError:
                record = None  # too few faces: the set records no framing
            _keep(cache, record)
        _LEARNED[cache] = record
    return _LEARNED[cache]


def cache_file(root: Path, files: list[Path]) -> Path:
    """Where the framing learned from files (a sample of root) is kept: named by the folder and each sampled crop's
    name, size and time, so that other crops are learned afresh. `$XDG_CACHE_HOME/dva/framing/` (~/.cache/...)."""
    import hashlib

    stats = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps([str(root.resolve()), stats]).encode()).hexdigest()[:32]
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dva" / "framing" / f"{key}.json"


def _cached(path: Path) -> tuple[bool, dict | None]:
    """(whether the cache has an entry, its framing record)."""
    try:
        return True, json.loads(path.read_text())["framing"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, None


def _keep(path: Path, record: dict | None) -> None:
    """Write the cache entry (a folder without a learnable framing too); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"framing": record}))
        os.replace(temporary, path)
    except OSError:
        pass
