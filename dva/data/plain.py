"""A folder of plain videos as a dataset: one unlabelled split, `all`.

Every recording under DATA (recursively: .mp4 .avi .mov .mkv .webm, any case, names with spaces) is a track named
by its file name without extension, or two tracks `NAME_left` / `NAME_right` when `dva faces --subjects 2`
followed two people in it (the video's record in the crops folder says which). A track's crops are
`cropped_aligned/<track>/` of the crops folder (DATA's, or the one `--crops` names) when that folder exists; its
T is the count of frames a player shows (`dva.data.video`); it has no labels. A recording of sound alone (.wav,
.m4a, ..., or a video file without a video stream) is a track without pictures, T one row per 1/30 s of its
sound. Two recordings of one name are refused, naming both.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dva.data.aff_wild2 import Problem, ScanResult, Track, crops_dir
from dva.data.layout import CROPS_FOLDER, child_folder, read_record, record_path
from dva.data.video import probe_video, videos_by_name
from dva.errors import DataError

PLAIN_SPLIT = "all"


def scan_plain(root: Path, crops: Path | None = None, progress: bool = False) -> ScanResult:
    """The tracks of a folder of videos (split `all`); crops: the cropped_aligned folder to take faces from
    (default: DATA's, when there is one). A video that cannot be read is a `Problem`; a video in which the face
    stage found no face is named in the result's warnings (its visual rows are all masked)."""
    root = Path(root)
    crops_root = Path(crops) if crops is not None else child_folder(root, CROPS_FOLDER)
    videos = videos_by_name(root, skip=crops_root)
    jobs, warnings = [], []
    for name, video in videos.items():
        record = read_record(record_path(crops_root, name)) if crops_root is not None else None
        tracks = {name: {"subject": None}} if record is None else record["tracks"]
        for track, info in tracks.items():
            if record is not None and info.get("crops") == 0 and record.get("n_frames"):
                warnings.append(f"{video.relative_to(root).as_posix()}: no face found by dva faces, every visual row of {track} masked")
        jobs.append((video, [(track, info.get("subject")) for track, info in tracks.items()]))

    def probe(job):
        return _tracks(root, crops_root, *job)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = pool.map(probe, jobs)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(jobs), desc="scan", unit="video")
        found = [item for result in results for item in result]
    tracks = [item for item in found if isinstance(item, Track)]
    warnings += [f"{t.video}: no video stream, {t.track} is its sound alone (every visual row masked)" for t in tracks if not t.n_video_frames]
    return ScanResult(tracks, [item for item in found if isinstance(item, Problem)], warnings=warnings)


def _tracks(root: Path, crops_root: Path | None, video: Path, named: list[tuple[str, str | None]]) -> list:
    """The video's tracks (one, or its left and right person), probed once; a Problem per track when it cannot be read."""
    try:
        probe = probe_video(video)
    except DataError as exc:
        return [Problem(track, PLAIN_SPLIT, str(exc)) for track, _ in named]
    tracks = []
    for track, subject in named:
        folder = crops_root / track if crops_root is not None and (crops_root / track).is_dir() else None
        tracks.append(Track(
            track=track, split=PLAIN_SPLIT, video=video.relative_to(root).as_posix(), subject=subject,
            n_frames=probe.rows, n_valid=None, fps=probe.fps, has_audio=probe.has_audio, frames_dir=crops_dir(root, folder),
            n_video_frames=probe.n_frames, annotation=None,
        ))
    return tracks
