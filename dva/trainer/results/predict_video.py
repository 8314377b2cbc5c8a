"""`dva predict --video FILE ... --run RUN --out DIR`: recordings in, `<track>.csv` and `<track>.png` out.

The runs' feature sets are rebuilt from the provenance they recorded (`dva.pipeline.rebuild`), each checked to be
the recorded set before anything is extracted; then, under `DIR/.dva-work/`, the face stage (for sets read from
crops, with the face settings the set recorded, or for the release's crops the defaults in the framing the set
recorded: learned from the release's crops), extraction into a store
of the one split `all`, and prediction (`dva.trainer.results.predict`, an ensemble or folds as well as a single run).
Runs of several tasks (VA, EXPR, AU) share that one extraction: the sets rebuilt are those of every run (a set two runs
both read must have been made alike), each task's runs form an ensemble, and `<track>.csv` holds every task's columns
side by side (`dva.trainer.results.submission.csv_columns`), `<track>.png` a panel per task.

Work folder: `data/` (a link per video, so the videos form a folder of plain videos), `data/cropped_aligned/` or
`crops-<size>-<subjects>-<framing>/cropped_aligned/` (faces), `store/`, `videos.json` (which files the work is of: it is
reused, and resumes, only for the same files unchanged; otherwise it is made again).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dva.errors import ConfigError, DataError, DvaWarning, RunError

WORK = ".dva-work"
MANIFEST = "videos.json"


@dataclass
class VideoReport:
    """What `predict_videos` wrote: per track its files; per video that failed, why."""

    out: str
    tasks: list[str] = field(default_factory=list)  # the tasks predicted (va, expr, au), in that order
    tracks: dict[str, dict] = field(default_factory=dict)  # track -> {"csv", "png", "frames", "faces"}
    failed: dict[str, str] = field(default_factory=dict)  # the video as given -> one-line reason
    prediction: dict = field(default_factory=dict)  # what `predict` returned (runs, and per task its runs, smoothing, thresholds)
    framing: dict[str, str] = field(default_factory=dict)  # visual set read from crops -> the framing its crops were made in

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def predict_videos(videos: list[Path], runs: list[Path], out: Path, device: str | None = None, smooth=None,
                   progress: bool = True) -> VideoReport:
    """CSV and PNG per track of each video under out. Raises RunError when a run's sets cannot be rebuilt (imported
    features, another family, other weights here), DataError for a missing file or two of one name; a video that
    cannot be read is named in report.failed and the others land."""
    from dva.trainer.evaluate import smooth_widths
    from dva.trainer.results.predict import predict, task_groups
    from dva.trainer.results.run_dir import check_compatible, read_checkpoint, run_dirs

    if not videos:
        raise ConfigError("pass at least one --video FILE")
    if not runs:
        raise ConfigError("pass at least one --run")
    if smooth is not None:
        smooth_widths(smooth)  # a bad --smooth is refused before the work, not after it
    checkpoints = {path: read_checkpoint(path) for run in runs for path in run_dirs(Path(run))}
    task_groups([Path(run) for run in runs], checkpoints)  # a folds directory of two tasks is refused before the work too
    sets = check_compatible(checkpoints)["feature_sets"]  # every run's sets, the ones they share made alike: one extraction serves them all
    out = Path(out)
    work = out / WORK
    data, given = _link_videos([Path(v) for v in videos], work)
    report = VideoReport(out=str(out))
    store = work / "store"
    crops = _crops_folders(work, sets)
    _framings(sets, report)
    plans = {name: _rebuilt(name, info, data, crops.get(name), store, device, str(runs[0]), progress) for name, info in sets.items()}
    _faces(data, sets, crops, report, given, progress)
    sound = {}  # one line per video, however many audio sets decode its sound
    for name, settings in plans.items():
        sound.update(_extract(settings, data, report, given))
    for video, problems in sound.items():
        warnings.warn(DvaWarning(f"{video}: {problems}"), stacklevel=2)
    landed = _usable_tracks(store, list(sets))
    if not landed:
        return report
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="writing without", category=DvaWarning)  # each failed video has its own line
        report.prediction = predict(list(runs), str(store), "all", out, device, fmt="csv", allow_incomplete=True, smooth=smooth)
    report.tasks = list(report.prediction["tasks"])
    for track in landed:
        report.tracks[track] = _plot(out / f"{track}.csv")
    return report


def _link_videos(videos: list[Path], work: Path) -> tuple[Path, dict[str, Path]]:
    """work/data with a link to each video (named as the file); the work folder made again unless it is of these
    very files. Returns (work/data, {link name: the video as given})."""
    from dva.data.video import RECORDING_SUFFIXES

    manifest, given = {}, {}
    for video in videos:
        if not video.is_file():
            raise DataError(f"{video}: no such video file")
        if video.suffix.lower() not in RECORDING_SUFFIXES:
            raise DataError(f"{video}: not a video file name (expected {', '.join(RECORDING_SUFFIXES)}, any case)")
        if video.stem in {Path(name).stem for name in manifest}:
            first = next(given[name] for name in given if Path(name).stem == video.stem)
            raise DataError(f"two videos are both called {video.stem!r}: {first} and {video} (a track is named by its file name); rename one")
        stat = video.stat()
        manifest[video.name] = {"path": str(video.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        given[video.name] = video
    _fresh_work(work, manifest)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, entry in manifest.items():
        if not (data / name).is_symlink():
            (data / name).symlink_to(entry["path"])
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return data, given


def _fresh_work(work: Path, manifest: dict) -> None:
    """Keep work (to resume) when it was made for exactly these files, unchanged; else remove it. Refuses to remove a
    folder of that name that dva did not make."""
    if not work.exists():
        return
    recorded = work / MANIFEST
    if not recorded.is_file():
        raise ConfigError(f"{work} exists and was not made by dva predict --video: move it, or pass another --out")
    try:
        same = json.loads(recorded.read_text()) == manifest
    except ValueError:
        same = False
    if not same:
        shutil.rmtree(work)


def _face_settings(info: dict):
    """The face stage's settings for a visual set read from crops: those the set recorded (--crops of dva faces'
    crops; before framings were recorded, dlib's framing), else the defaults (the release's crops: 112 px, one
    subject) in the framing the set recorded (learned from the release's crops), dlib's when it recorded none."""
    from dva.faces import FaceSettings

    preprocessing = info.get("preprocessing") or {}
    recorded = (preprocessing.get("crops") or {}).get("faces") or {}
    names = {f.name for f in dataclasses.fields(FaceSettings)}
    settings = FaceSettings(**{k: v for k, v in recorded.items() if k in names})
    if "crops" not in preprocessing and preprocessing.get("framing"):
        settings = dataclasses.replace(settings, framing=preprocessing["framing"])
    return settings


def _framings(sets: dict, report: VideoReport) -> None:
    """Which framing each visual set's crops are made in (report.framing); a set trained on crops whose framing it
    did not record (the release's, extracted without dlib or before dva recorded framings) is warned about."""
    for name, info in sets.items():
        preprocessing = info.get("preprocessing") or {}
        if info["modality"] != "visual" or preprocessing.get("visual_source") != "crops":
            continue
        report.framing[name] = _face_settings(info).framing.describe()
        if "crops" not in preprocessing and not preprocessing.get("framing"):
            warnings.warn(DvaWarning(f"feature set {name!r} recorded no framing of the crops it was made from: the recording's crops are dlib's, "
                                     "which may frame faces otherwise (extract the release's crops with dlib installed to record theirs)"), stacklevel=3)


def _crops_folders(work: Path, sets: dict) -> dict[str, Path | None]:
    """{visual set read from crops: where its faces go}: None for the data's own cropped_aligned/ (the set was made
    from a dataset's own crops, the release's), else a crops folder per face settings (the set was made with --crops)."""
    crops = {}
    for name, info in sets.items():
        preprocessing = info.get("preprocessing") or {}
        if info["modality"] == "visual" and preprocessing.get("visual_source") == "crops":
            if "crops" in preprocessing and not preprocessing["crops"].get("faces"):
                raise RunError(f"feature set {name!r} was made from crops dva faces did not make ({preprocessing['crops'].get('folder')}): they cannot be made again from a video")
            settings = _face_settings(info)
            crops[name] = None if "crops" not in preprocessing else work / f"crops-{settings.size}-{settings.subjects}-{settings.framing.name}"
    return crops


def _rebuilt(name: str, info: dict, data: Path, crops: Path | None, store: Path, device: str | None, source: str, progress: bool):
    """The extract settings that make set name again, checked to make the set the run recorded (RunError otherwise)."""
    from dva.pipeline.provenance import build_encoders, default_device, feature_sets
    from dva.pipeline.rebuild import check_rebuilt, rebuild_settings

    settings = rebuild_settings(name, info, data=str(data), split="all", out=str(store), crops=str(crops) if crops else None,
                                device=device or default_device(), progress=progress)
    visual, audio = build_encoders(settings, settings.device)
    made = feature_sets(settings, visual, audio)[name]
    for key in ("crops", "framing"):  # the face stage runs with the settings the set recorded (_face_settings): the same by construction
        if key in made["preprocessing"]:
            made["preprocessing"][key] = info["preprocessing"].get(key)
    check_rebuilt(name, info, made, source)
    return settings


def _faces(data: Path, sets: dict, crops: dict, report: VideoReport, given: dict, progress: bool) -> None:
    """The face stage, once per crops folder the sets need; a video it cannot read lands in report.failed."""
    from dva.faces import run_faces

    done = set()
    for name, where in crops.items():
        if where in done:
            continue
        done.add(where)
        faces = run_faces(data, _face_settings(sets[name]), out=where, progress=progress)
        for video, reason in faces.failed.items():
            user = str(given[Path(video).name])
            report.failed.setdefault(user, _as_given(reason, data, user))
        for video in faces.without_face:
            warnings.warn(DvaWarning(f"{given[Path(video).name]}: no face found, its visual rows are all masked (predicted from sound and context)"), stacklevel=3)
        for video in faces.without_video:
            warnings.warn(DvaWarning(f"{given[Path(video).name]}: no video stream, predicted from its sound"), stacklevel=3)


def _as_given(reason: str, data: Path, user: str) -> str:
    """reason with every path into the work folder's links (as PyAV or the face stage wrote it) shown as the user's."""
    import re

    return re.sub(re.escape(str(data)) + r"/[^'\")\s]+", lambda _: user, reason)


def _extract(settings, data: Path, report: VideoReport, given: dict) -> dict[str, str]:
    """One feature set for every video in data; a track that fails names its video in report.failed. Returns {the video
    as given: what keeping its sound on time took} (holes or overlaps in its timestamps, refused packets)."""
    from dva.pipeline.extract import run_extract

    extracted = run_extract(settings)
    for track, reason in extracted.failed.items():
        link = next((name for name in given if track == Path(name).stem or track.startswith(f"{Path(name).stem}_")), None)
        video = str(given[link]) if link else track
        report.failed.setdefault(video, reason.replace(str(data / link), video) if link else reason)
    return {str(given.get(Path(video).name, video)): problems for video, problems in extracted.sound.items()}


def _usable_tracks(store: Path, sets: list[str]) -> list[str]:
    """The tracks of the work store whose every set is complete (those predict writes)."""
    from dva.stores import open_store, why_not_usable

    if not store.exists():
        return []
    with open_store(str(store), mode="r") as opened:
        index = opened.track_index("all") if "all" in opened.splits() else {}
    return [track for track, attrs in index.items() if why_not_usable(attrs, sets) is None]


def _plot(csv: Path) -> dict:
    """<track>.png beside the <track>.csv predict wrote, drawn from the CSV (a panel per task in it); the track's entry
    of the report."""
    from dva.data.tasks import AU_NAMES, EXPR_CLASSES
    from dva.trainer.results.plots import plot_track

    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]

    def numbers(names) -> np.ndarray | None:
        if not set(names) <= set(header):
            return None
        index = [header.index(name) for name in names]
        return np.array([[float(r[i]) for i in index] for r in rows], np.float64).reshape(-1, len(names))

    face = header.index("face")
    faces = None if rows and rows[0][face] == "" else np.array([r[face] == "1" for r in rows], bool)
    time = numbers(["time"])[:, 0]
    panels = {task: values for task, names in (("va", ("valence", "arousal")), ("expr", EXPR_CLASSES), ("au", AU_NAMES))
              if (values := numbers(names)) is not None}
    png = plot_track(csv.with_suffix(".png"), csv.stem, time, panels, faces)
    return {"csv": str(csv), "png": str(png), "frames": len(rows), "faces": None if faces is None else int(faces.sum())}
