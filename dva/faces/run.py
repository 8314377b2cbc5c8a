"""The face stage over a folder: every video under it, one after another or one per Dask worker process."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from dva.data.layout import CROPS_FOLDER, child_folder, record_path, release_marker
from dva.data.video import videos_by_name
from dva.errors import ConfigError, DataError
from dva.faces.stage import FaceSettings, failure_reason, faces_for_video, models, read_record, settings_record
from dva.faces.framing import DLIB
from dva.faces.template import resolved_framing

CROPS = CROPS_FOLDER


@dataclass
class FacesReport:
    """What `dva faces` did: per video (its path relative to DATA) the crops of each track."""

    data: str
    crops: str  # the cropped_aligned folder written
    done: dict[str, dict[str, int]] = field(default_factory=dict)  # video -> track -> crops, made by this run
    skipped: list[str] = field(default_factory=list)  # complete before this run
    failed: dict[str, str] = field(default_factory=dict)  # video -> reason
    framing: dict = field(default_factory=dict)  # the crops' framing (dva/faces/framing.py), learned or fixed
    without_face: list[str] = field(default_factory=list)  # videos (done or skipped) in which no face was found
    without_video: list[str] = field(default_factory=list)  # recordings of sound alone: no frames to look at
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "frames_per_second": round(self.frames_per_second, 2)}

    def add(self, record) -> None:
        if record.skipped:
            self.skipped.append(record.video)
        else:
            self.done[record.video] = record.crops
            self.frames += record.frames
        if not record.frames:
            self.without_video.append(record.video)
        elif not record.has_face:
            self.without_face.append(record.video)


def crops_folder(data: Path, out: Path | None) -> Path:
    """Where the crops go: OUT/cropped_aligned, or DATA/cropped_aligned; never inside an Aff-Wild2 release."""
    if out is not None:
        return Path(out) / CROPS
    marker = release_marker(Path(data))
    if marker is not None:
        raise ConfigError(f"{data} is an Aff-Wild2 release (it has {marker.name}/): pass --out CROPS so that its cropped_aligned/ stays as released")
    return Path(data) / CROPS


def run_faces(data: Path, settings: FaceSettings, out: Path | None = None, workers: int = 0, overwrite: bool = False,
              progress: bool = True, framing_from: Path | None = None) -> FacesReport:
    """Crops and records for every video under data (see dva/faces/stage.py for the layout). A video that cannot be
    read is named in report.failed and the others still land. A release framing without its points is learned from
    framing_from or the release's crops (dva/faces/template.py). Raises DataError when data has no videos or two of
    one name, ConfigError when crops of other settings are already there (unless overwrite)."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: no such folder")
    root = crops_folder(data, out)
    dataclasses.replace(settings, framing=DLIB).validate()  # the rest before a release's framing is learned
    models(settings.detector)  # a missing dlib or model file is one line before any video is opened
    settings = dataclasses.replace(settings, framing=resolved_framing(settings.framing, data, root, framing_from)).validate()
    jobs = plan_videos(data, root, settings)
    _refuse_other_settings(root, jobs, overwrite)
    report = FacesReport(data=str(data), crops=str(root), framing=settings.framing.record())
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    if workers > 1 and len(jobs) > 1:
        from dva.faces.distributed import faces_distributed

        faces_distributed(jobs, root, workers, report, progress)
    else:
        for name, video, label, video_settings in jobs:
            try:
                report.add(faces_for_video(video, root, video_settings, name=name, progress=progress, label=label))
            except DataError as exc:
                report.failed[label] = failure_reason(exc, video)
    report.seconds = time.perf_counter() - started
    return report


def plan_videos(data: Path, root: Path, settings: FaceSettings) -> list[tuple[str, Path, str, FaceSettings]]:
    """(name, path, path relative to data, its settings) per video; two videos of one name are a DataError naming
    both. In an Aff-Wild2 release a video whose annotations are `NAME_left`/`NAME_right` (in any challenge's folder)
    has two subjects whatever --subjects says: the release names its two people so, and extract looks for those
    tracks' crops."""
    annotations = child_folder(data, "Annotations")
    pairs = {path.stem.rsplit("_", 1)[0] for side in ("left", "right") for path in annotations.rglob(f"*_{side}.txt")} if annotations else set()
    return [(name, video, video.relative_to(data).as_posix(), dataclasses.replace(settings, subjects=2) if name in pairs else settings)
            for name, video in videos_by_name(data, skip=root).items()]


def _refuse_other_settings(root: Path, jobs: list, overwrite: bool) -> None:
    if overwrite:
        return
    for name, _, label, settings in jobs:
        wanted = settings_record(settings)
        record = read_record(record_path(root, name))
        if record is not None and record.get("settings") != wanted:
            differ = ", ".join(f"{k} {_shown(k, record['settings'].get(k))}" for k in wanted if record["settings"].get(k) != wanted[k])
            raise ConfigError(f"{record_path(root, name)}: {label} was done with other settings ({differ}); pass --overwrite to redo, or another --out")



def _shown(key: str, value) -> str:
    """A setting as the refusal names it: a framing by its name and template (its record is long)."""
    return f"{value.get('name')} {value.get('points') or ''}".strip() if key == "framing" and isinstance(value, dict) else str(value)
