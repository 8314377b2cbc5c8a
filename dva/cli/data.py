"""`dva synth`, `dva scan`, `dva faces`: datasets and faces."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from dva.cli.app import app, user_errors, warn
from dva.errors import ConfigError


@app.command()
@user_errors
def synth(
    out: Path = typer.Argument(..., help="Folder to create (must not exist or be empty)."),
    tracks: int = typer.Option(8, help="Number of tracks (a two-subject video counts twice)."),
    seconds: float = typer.Option(12.0, help="Length of each video in seconds."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same dataset."),
    layout: str = typer.Option("aff-wild2", help="aff-wild2 (videos, crops, the three challenges' annotations) or s-aff-wild2 (the multi-task challenge's: selected frames as images, one annotation file per split, a test list; no sound)."),
):
    """Write a synthetic dataset in the real Aff-Wild2 layout (or s-Aff-Wild2's), VA (EXPR, AU) planted in pictures and sound."""
    if layout == "s-aff-wild2":
        from dva.data.synth_images import synth_image_set as make_synth
    elif layout == "aff-wild2":
        from dva.data.synth import synth as make_synth
    else:
        raise ConfigError(f"--layout {layout!r}: use aff-wild2 or s-aff-wild2")

    summary = make_synth(out, tracks=tracks, seconds=seconds, seed=seed)
    counts = {}
    for track in summary["tracks"]:
        counts[track["split"]] = counts.get(track["split"], 0) + 1
    typer.echo(f"wrote {len(summary['tracks'])} tracks to {out} ({', '.join(f'{k}: {v}' for k, v in counts.items())})")


@app.command()
@user_errors
def scan(
    data: Path = typer.Argument(..., help="Aff-Wild2 dataset folder, or a folder of videos (one split: all)."),
    split: Optional[str] = typer.Option(None, help="train, val or test; all for a folder of videos (default: every split)."),
    test_list: Optional[Path] = typer.Option(None, help="The VA test list (default: found in DATA by its challenge name)."),
    sample: Optional[Path] = typer.Option(None, help="The organisers' sample submission (default: *VA*test_set_sample*.txt found in DATA)."),
    crops: Optional[Path] = typer.Option(None, help="Read faces from CROPS/cropped_aligned/ (written by dva faces --out CROPS) instead of DATA's."),
    task: Optional[str] = typer.Option(None, help="va, expr, au (comma-separated): whose splits to show (default: every challenge the release annotates)."),
    fps: Optional[float] = typer.Option(None, help="s-Aff-Wild2 (images only): the rate of the images' frame numbers (default 30)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON record per line."),
):
    """Show what the pipeline sees: one record per track (its split: where the store keeps it), and per challenge its splits."""
    from dva.data.dataset import scan as scan_data

    result = scan_data(data, split=split, progress=not as_json and sys.stderr.isatty(), test_list=test_list, sample=sample, crops=crops, tasks=task, fps=fps)
    for problem in result.problems:
        warn(f"[{problem.split}] {problem.track} left out: {problem.reason}")
    for message in result.warnings:
        warn(message)
    if as_json:
        for track in result.tracks:
            typer.echo(json.dumps(track.record()))
        return
    typer.echo(_scan_table(result))


def _scan_table(result) -> str:
    header = f"{'split':<6} {'track':<32} {'video':<40} {'subj':<5} {'lines':>6} {'valid':>6} {'frames':>6} {'fps':>6} {'audio':>5} {'crops':>5}"
    lines = [header, "-" * len(header)]
    if result.layout == "s-aff-wild2":
        lines.insert(0, "s-Aff-Wild2: selected frames as images (lines: the track's images; frames: those in cropped_aligned/), no video, no sound")
    for t in result.tracks:
        lines.append(
            f"{t.split:<6} {t.track:<32} {t.video:<40} {t.subject or '-':<5} {_dash(t.n_frames):>6} {_dash(t.n_valid):>6} "
            f"{t.n_video_frames:>6} {t.fps:>6.2f} {'yes' if t.has_audio else 'no':>5} {'yes' if t.frames_dir else 'no':>5}"
        )
    lines.append("-" * len(header))
    for split in ("train", "val", "test", "all"):
        tracks = [t for t in result.tracks if t.split == split]
        left_out = sum(p.split == split for p in result.problems)
        if not tracks and not left_out:
            continue
        lines.append(
            f"{split}: {len(tracks)} tracks, {sum(t.n_frames or 0 for t in tracks)} annotated frames "
            f"({sum(t.n_valid or 0 for t in tracks)} valid), {sum(t.n_video_frames for t in tracks)} video frames, "
            f"{sum(not t.has_audio for t in tracks)} without audio, {sum(t.frames_dir is None for t in tracks)} without crops, "
            f"{left_out} left out"
        )
    lines += _task_lines(result.tracks)
    return "\n".join(lines)


def _task_lines(tracks) -> list[str]:
    """Per challenge and split: tracks, frames (the rows its annotations or sample give), annotated frames."""
    counts: dict[tuple[str, str], list[int]] = {}
    for t in tracks:
        for task, info in t.tasks.items():
            part = counts.setdefault((task, info["split"]), [0, 0, 0])
            part[0] += 1
            part[1] += info["rows"] or 0
            part[2] += info["annotated"] or 0
    order = {"va": 0, "expr": 1, "au": 2, "train": 0, "val": 1, "test": 2}
    return [f"task {task} {split}: {n} tracks, {frames} frames, {annotated} annotated"
            for (task, split), (n, frames, annotated) in sorted(counts.items(), key=lambda kv: (order[kv[0][0]], order[kv[0][1]]))]


def _dash(value) -> str:
    return "-" if value is None else str(value)


@app.command()
@user_errors
def faces(
    data: Path = typer.Option(..., help="Folder of videos (searched recursively: .mp4 .avi .mov .mkv .webm)."),
    out: Optional[Path] = typer.Option(None, help="Write OUT/cropped_aligned/ instead of DATA/cropped_aligned/ (required for an Aff-Wild2 release)."),
    size: int = typer.Option(112, help="Crop side in pixels: 112 (as the release) or 224."),
    subjects: int = typer.Option(1, help="1: the main face of each video; 2: the left and right person (tracks NAME_left, NAME_right)."),
    detector: str = typer.Option("dlib-hog", help="Face detector: dlib-hog (fast on CPU) or dlib-cnn (finds turned faces, slow on CPU)."),
    detect_every: int = typer.Option(10, help="Frames between full-frame detections while every subject is followed."),
    detect_side: int = typer.Option(640, help="The detector sees frames scaled to this longest side (faces from about 80/scale px are found)."),
    carry: int = typer.Option(12, help="Longest gap (frames) between two sightings of a face bridged with its last landmarks (marked carried; never across a cut)."),
    workers: int = typer.Option(0, help="Videos in parallel on a local Dask cluster of N processes."),
    overwrite: bool = typer.Option(False, help="Redo videos whose crops were made with other settings."),
    framing: Optional[str] = typer.Option(None, help="Where the face sits in the crop: release (learned from a release's crops; the default on a release), dlib (the default elsewhere) or arcface."),
    framing_from: Optional[Path] = typer.Option(None, help="Learn the release framing from these crops (CROPS/cropped_aligned/ or CROPS/: <track>/NNNNN.jpg) instead of DATA's."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Aligned face crops in the release's layout (cropped_aligned/<track>/NNNNN.jpg) for every video under DATA; resumable."""
    from dva.faces import FaceSettings, run_faces
    from dva.faces.framing import Framing
    from dva.faces.template import default_framing

    framing = framing or default_framing(data, framing_from)
    settings = FaceSettings(size=size, subjects=subjects, detector=detector, detect_every=detect_every, detect_side=detect_side, carry=carry, framing=framing)
    report = run_faces(data, settings, out=out, workers=workers, overwrite=overwrite, progress=not as_json, framing_from=framing_from)
    for video in report.without_face:
        warn(f"{video}: no face found, its track has no crops (every visual row masked)")
    for video in report.without_video:
        warn(f"{video}: no video stream, its track has no crops (predicted from its sound)")
    for video, reason in report.failed.items():
        typer.echo(f"dva: failed: {video}: {reason}", err=True)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        crops = sum(sum(tracks.values()) for tracks in report.done.values())
        typer.echo(
            f"{len(report.done)} videos done ({crops} crops), {len(report.skipped)} already complete, {len(report.failed)} failed; "
            f"{report.frames} frames in {report.seconds:.1f} s ({report.frames_per_second:.1f} frames/s) -> {report.crops}"
        )
        typer.echo(f"framing: {Framing.from_record(report.framing).describe()}")
    if report.failed:
        raise typer.Exit(1)
