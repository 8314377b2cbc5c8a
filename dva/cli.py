"""The `dva` command line: one thin function per command (parse, call, print).

Heavy libraries are imported inside the commands that need them, so `dva --help` is
quick and `dva fit` runs where video decoders cannot be imported.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from dva.errors import DvaError

app = typer.Typer(
    help="Distance-aware soft prompt learning for multimodal valence-arousal estimation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(command):
    """Turn a DvaError into one line on stderr and exit code 2 (bugs stay tracebacks)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DvaError as exc:
            typer.echo(f"dva: error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def warn(message: str) -> None:
    typer.echo(f"dva: warning: {message}", err=True)


@app.command()
@user_errors
def synth(
    out: Path = typer.Argument(..., help="Folder to create (must not exist or be empty)."),
    tracks: int = typer.Option(8, help="Number of tracks (a two-subject video counts twice)."),
    seconds: float = typer.Option(12.0, help="Length of each video in seconds."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same dataset."),
):
    """Write a synthetic dataset in the real Aff-Wild2 layout, VA planted in pictures and sound."""
    from dva.data.synth import synth as make_synth

    summary = make_synth(out, tracks=tracks, seconds=seconds, seed=seed)
    counts = {}
    for track in summary["tracks"]:
        counts[track["split"]] = counts.get(track["split"], 0) + 1
    typer.echo(f"wrote {len(summary['tracks'])} tracks to {out} ({', '.join(f'{k}: {v}' for k, v in counts.items())})")


@app.command()
@user_errors
def scan(
    data: Path = typer.Argument(..., help="Aff-Wild2 dataset folder."),
    split: Optional[str] = typer.Option(None, help="train, val or test (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON record per line."),
):
    """Show what the pipeline sees: one record per track."""
    from dva.data.aff_wild2 import scan as scan_data

    result = scan_data(data, split=split, progress=not as_json and sys.stderr.isatty())
    for problem in result.problems:
        warn(f"[{problem.split}] {problem.track} left out: {problem.reason}")
    if as_json:
        for track in result.tracks:
            typer.echo(json.dumps(track.record()))
        return
    typer.echo(_scan_table(result))


def _scan_table(result) -> str:
    header = f"{'split':<6} {'track':<32} {'video':<40} {'subj':<5} {'lines':>6} {'valid':>6} {'frames':>6} {'fps':>6} {'audio':>5} {'crops':>5}"
    lines = [header, "-" * len(header)]
    for t in result.tracks:
        lines.append(
            f"{t.split:<6} {t.track:<32} {t.video:<40} {t.subject or '-':<5} {_dash(t.n_frames):>6} {_dash(t.n_valid):>6} "
            f"{t.n_video_frames:>6} {t.fps:>6.2f} {'yes' if t.has_audio else 'no':>5} {'yes' if t.frames_dir else 'no':>5}"
        )
    lines.append("-" * len(header))
    for split in ("train", "val", "test"):
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
    return "\n".join(lines)


def _dash(value) -> str:
    return "-" if value is None else str(value)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
