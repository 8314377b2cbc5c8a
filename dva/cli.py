"""The `dva` command line: one thin function per command (parse, call, print).

Heavy libraries are imported inside the commands that need them, so `dva --help` is
quick and `dva fit` runs where video decoders cannot be imported.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from dva.errors import DvaError, DvaWarning

app = typer.Typer(
    help="Distance-aware soft prompt learning for multimodal valence-arousal estimation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(command):
    """Turn a DvaError into one line on stderr and exit code 2 (bugs stay tracebacks), and every
    DvaWarning into one `dva: warning:` line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("always", DvaWarning)
            warnings.showwarning = _show_warning
            try:
                return command(*args, **kwargs)
            except DvaError as exc:
                typer.echo(f"dva: error: {exc}", err=True)
                raise typer.Exit(2) from None

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, DvaWarning):
        warn(str(message))
    else:  # a library's warning: as Python would print it
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


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
    data: Path = typer.Argument(..., help="Aff-Wild2 dataset folder, or a folder of videos (one split: all)."),
    split: Optional[str] = typer.Option(None, help="train, val or test; all for a folder of videos (default: every split)."),
    test_list: Optional[Path] = typer.Option(None, help="The VA test list (default: found in DATA by its challenge name)."),
    sample: Optional[Path] = typer.Option(None, help="The organisers' sample submission (default: *VA*test_set_sample*.txt found in DATA)."),
    crops: Optional[Path] = typer.Option(None, help="Read faces from CROPS/cropped_aligned/ (written by dva faces --out CROPS) instead of DATA's."),
    as_json: bool = typer.Option(False, "--json", help="One JSON record per line."),
):
    """Show what the pipeline sees: one record per track."""
    from dva.data.dataset import scan as scan_data

    result = scan_data(data, split=split, progress=not as_json and sys.stderr.isatty(), test_list=test_list, sample=sample, crops=crops)
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
    return "\n".join(lines)


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
    workers: int = typer.Option(0, help="Videos in parallel on a local Dask cluster of N processes."),
    overwrite: bool = typer.Option(False, help="Redo videos whose crops were made with other settings."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Aligned face crops in the release's layout (cropped_aligned/<track>/NNNNN.jpg) for every video under DATA; resumable."""
    from dva.faces import FaceSettings, run_faces

    settings = FaceSettings(size=size, subjects=subjects, detector=detector, detect_every=detect_every, detect_side=detect_side)
    report = run_faces(data, settings, out=out, workers=workers, overwrite=overwrite, progress=not as_json)
    for video in report.without_face:
        warn(f"{video}: no face found, its track has no crops (every visual row masked)")
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
    if report.failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def extract(
    data: Path = typer.Option(..., help="Aff-Wild2 dataset folder, or a folder of videos (split all)."),
    split: str = typer.Option(..., help="train, val or test; all for a folder of videos."),
    out: Optional[str] = typer.Option(None, help="Feature store: a Zarr directory, an fsspec URL, or a .h5 file (default: stores)."),
    preset: Optional[str] = typer.Option(None, help="Named encoder configuration: 'default' (real weights) or 'tiny' (random, offline)."),
    visual_encoder: Optional[str] = typer.Option(None, help="Visual family: clip (open_clip, the default) or hf (a transformers image backbone, --hf-model)."),
    audio_encoder: Optional[str] = typer.Option(None, help="Audio family: ast (the default), or wav2vec2 (wav2vec2, HuBERT, WavLM through transformers, --wav2vec2-model)."),
    clip_model: Optional[str] = typer.Option(None, help="open_clip model name (default: ViT-B-32)."),
    clip_pretrained: Optional[str] = typer.Option(None, help="open_clip pretrained tag or local checkpoint file (default: openai)."),
    ast_model: Optional[str] = typer.Option(None, help="AST hub id or local directory (default: MIT/ast-finetuned-audioset-10-10-0.4593)."),
    hf_model: Optional[str] = typer.Option(None, help="--visual-encoder hf: hub id or local directory (default: google/vit-base-patch16-224-in21k)."),
    wav2vec2_model: Optional[str] = typer.Option(None, help="--audio-encoder wav2vec2: hub id or local directory, e.g. microsoft/wavlm-base-plus (default: facebook/wav2vec2-base)."),
    audio_layer: Optional[str] = typer.Option(None, help="--audio-encoder wav2vec2: the hidden state to keep (0 = CNN features, 1..L transformer layers) or mean of all (the default)."),
    audio_mode: Optional[str] = typer.Option(None, help="window (the default): one AST pass per step; tokens: one pass per segment, pooled patch tokens (much cheaper)."),
    audio_window: Optional[float] = typer.Option(None, help="Seconds of audio per step (AST window mode, wav2vec2; default 1)."),
    audio_hop: Optional[float] = typer.Option(None, help="Seconds between audio steps (AST window mode, wav2vec2; default 0.1)."),
    audio_pad: bool = typer.Option(False, help="Window mode: pad each 1 s window to the AST's input length in training (1024 frames, about 10x the cost) instead of running it at its own length."),
    jpeg_decoder: Optional[str] = typer.Option(None, help="cpu (the default: libjpeg-turbo, a thread per core) or cuda (nvJPEG on the encoders' GPU, batched) for cropped_aligned JPEGs."),
    visual_source: Optional[str] = typer.Option(None, help="crops (cropped_aligned/), video (decoded frames) or auto (the default: crops when the folder exists)."),
    crops: Optional[Path] = typer.Option(None, help="Read faces from CROPS/cropped_aligned/ (dva faces --out CROPS) instead of DATA's: with --only visual --name NAME, a visual set beside the release's."),
    batch_size: Optional[int] = typer.Option(None, help="Frames (or audio windows) per encoder batch (default 64 on a CPU, 256 on a GPU)."),
    device: Optional[str] = typer.Option(None, help="cuda, cuda:1, cpu (default: cuda when present). With Dask workers, cuda gives each worker its own GPU."),
    allow_other_device: bool = typer.Option(False, help="Continue a feature set begun on another kind of device (cpu/cuda: fp32 or bf16 features), with a warning."),
    workers: Optional[int] = typer.Option(None, help="Start a local Dask cluster with N worker processes (default: none, this process); with GPUs, worker i takes GPU i mod their count."),
    scheduler: Optional[str] = typer.Option(None, help="Send the work to a running Dask scheduler, e.g. tcp://host:8786."),
    overwrite: bool = typer.Option(False, help="Redo every track, complete or not."),
    test_list: Optional[Path] = typer.Option(None, help="The VA test list (default: Valence_Arousal_Estimation_Challenge_test_set_release.txt found in DATA)."),
    sample: Optional[Path] = typer.Option(None, help="The organisers' sample submission (default: *VA*test_set_sample*.txt found in DATA); its rows decide the test tracks' lengths."),
    shard: Optional[str] = typer.Option(None, help="I/N: take only videos I, I+N, ... (0-based), for a job array's task I of N."),
    claim_timeout: Optional[float] = typer.Option(None, help="Seconds without a heartbeat before a claim of another process is taken over (default 600)."),
    only: Optional[str] = typer.Option(None, help="visual or audio: make that modality's feature set only."),
    name: Optional[str] = typer.Option(None, help="Name of the feature set (with --only; default: derived from the encoder, e.g. clip-ViT-B-32-openai)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
):
    """Add a visual and an audio feature set of one split to the store (resumable; other sets are never touched)."""
    from dva.pipeline.extract import run_extract
    from dva.pipeline.extract_settings import extract_settings_from

    settings = extract_settings_from(
        preset, data=str(data), split=split, out=out, visual_encoder=visual_encoder, audio_encoder=audio_encoder, clip_model=clip_model,
        clip_pretrained=clip_pretrained, ast_model=ast_model, hf_model=hf_model, wav2vec2_model=wav2vec2_model, audio_layer=audio_layer,
        audio_mode=audio_mode, audio_window=audio_window, audio_hop=audio_hop, audio_pad=audio_pad or None, visual_source=visual_source, crops=str(crops) if crops else None,
        batch_size=batch_size, device=device, workers=workers, scheduler=scheduler, overwrite=overwrite or None, progress=not as_json,
        test_list=str(test_list) if test_list else None, sample=str(sample) if sample else None, shard=shard, claim_timeout=claim_timeout,
        only=only, name=name, jpeg_decoder=jpeg_decoder, allow_other_device=allow_other_device or None,
    )
    report = run_extract(settings)
    _print_warnings(report.warnings, report.masked_crops)
    for track, reason in report.failed.items():
        typer.echo(f"dva: failed: {track}: {reason}", err=True)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        typer.echo(
            f"{split}: {len(report.extracted)} tracks extracted, {len(report.skipped)} already complete, "
            f"{len(report.elsewhere)} done by another process, {len(report.failed)} failed; "
            f"{report.frames} frames in {report.seconds:.1f} s ({report.frames_per_second:.1f} frames/s) -> {out}"
        )
    if report.failed:
        raise typer.Exit(1)


def _print_warnings(warnings: list[str], masked_crops: list[str], limit: int = 5) -> None:
    for message in warnings:
        warn(message)
    for message in masked_crops[:limit]:
        warn(message + " (frame masked)")
    if len(masked_crops) > limit:
        warn(f"... {len(masked_crops) - limit} more corrupt JPEGs masked ({len(masked_crops)} in all)")


@app.command("import")
@user_errors
def import_(
    folder: Path = typer.Argument(..., help="One <track>.npy or <track>.npz per track of the split."),
    store: str = typer.Option(..., help="Feature store (Zarr directory or .h5 file) that already holds the split's tracks."),
    split: str = typer.Option(..., help="train, val or test."),
    name: str = typer.Option(..., help="Name of the feature set, e.g. my-wavlm (a new one, or the same set for another split)."),
    modality: str = typer.Option(..., help="visual ([T, D]: one row per annotation line, .npz may add mask) or audio ([K, D] rows in time)."),
    rate: Optional[float] = typer.Option(None, help="Audio: rows per second, row k at k / HZ s on the frame clock (or give a time array in each .npz)."),
    overwrite: bool = typer.Option(False, help="Rewrite tracks already complete for the set (needed when the files changed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
):
    """Add a feature set computed elsewhere to the store, with its provenance; every file is checked before anything is written."""
    from dva.pipeline.import_features import ImportSettings, run_import

    settings = ImportSettings(store=store, split=split, name=name, modality=modality, folder=str(folder), rate=rate, overwrite=overwrite, progress=not as_json)
    report = run_import(settings)
    for message in report.warnings:
        warn(message)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        typer.echo(
            f"{split}: {len(report.imported)} tracks imported into {name}, {len(report.skipped)} already complete, "
            f"{len(report.held)} held by another process, {len(report.without_file)} without a file; {report.rows} rows -> {store}"
        )


@app.command()
@user_errors
def info(
    store: str = typer.Argument(..., help="Feature store (Zarr directory or .h5 file)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """What a store holds: its feature sets (modality, dim, rate, encoder) and each one's coverage per split, failures, bytes."""
    from dva.stores import open_store

    opened = open_store(store, mode="r")
    try:
        summary = opened.summary()
    finally:
        opened.close()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    size = "size unknown" if summary["bytes"] is None else f"{summary['bytes'] / 1e6:.1f} MB"
    typer.echo(f"store   {summary['path']} ({summary['format']}, {size}, dva {summary.get('dva_version')})")
    if summary["layout"] == 1:
        typer.echo(f"format 1 (dva 0.1: one visual and one audio set): run `dva upgrade {summary['path']}` to turn it into feature sets")
        return
    for name, info in summary["feature_sets"].items():
        said = summary["provenance"][name]
        typer.echo(f"set     {name:<28} {info['modality']:<6} dim {info.get('dim')}  {said['rate']}  {said['family']} {said['source']}")
    for split, part in summary["splits"].items():
        typer.echo(f"{split:<6}  {part['tracks']} tracks, {part['frames']} frames, {part['valid_labels']} valid labels")
        for name, coverage in part["sets"].items():
            typer.echo(f"        {name:<28} {coverage['complete']}/{part['tracks']} complete, {coverage['rows']} rows, {len(coverage['failed'])} failed")
            for track, reason in list(coverage["failed"].items())[:10]:
                typer.echo(f"          failed {track}: {reason}")
            if len(coverage["failed"]) > 10:
                typer.echo(f"          ... {len(coverage['failed']) - 10} more failed (dva info --json lists them)")
            if coverage["incomplete"]:
                typer.echo(f"          incomplete: {', '.join(coverage['incomplete'][:10])}{' ...' if len(coverage['incomplete']) > 10 else ''} (rerun `dva {summary['provenance'][name]['maker']}` to finish)")
        if part.get("sample"):
            typer.echo(f"        sample file {part['sample']['path']} ({part['sample']['rows']} rows): the submission's rows and order")


@app.command()
@user_errors
def convert(
    src: str = typer.Argument(..., help="Existing store."),
    dst: str = typer.Argument(..., help="New store: a .h5 file or a Zarr directory."),
):
    """Copy a store between Zarr (a directory) and HDF5 (one .h5 file)."""
    from dva.stores import convert as convert_store

    convert_store(src, dst)
    typer.echo(f"converted {src} -> {dst}")


@app.command()
@user_errors
def upgrade(
    store: str = typer.Argument(..., help="A store written by dva 0.1 (format 1)."),
):
    """Turn a dva 0.1 store (one visual and one audio array per track) into feature sets, in place (resumable)."""
    from dva.stores import open_store, upgrade as upgrade_store
    from dva.pipeline.encoders.naming import format_1_set_names

    with open_store(store, mode="r") as opened:
        names = format_1_set_names(opened.attrs)
    count = upgrade_store(store, names)
    typer.echo(f"upgraded {count} tracks of {store}: feature sets {names['visual']} (visual) and {names['audio']} (audio)")


@app.command()
@user_errors
def fit(
    features: Optional[str] = typer.Option(None, help="Feature store written by `dva extract` (default: stores)."),
    out: Optional[str] = typer.Option(None, help="Run directory (default: runs/fit)."),
    config: Optional[Path] = typer.Option(None, help="TOML file with any of these settings; flags override it."),
    modalities: Optional[str] = typer.Option(None, help="visual, audio or visual,audio."),
    fusion: Optional[str] = typer.Option(None, help="concat, xattn, gated or hierarchical (attention, then gate)."),
    prompt: Optional[str] = typer.Option(None, help="The prompt head's text: none (no prompt head), fixed (hand-written prompts) or learnable (CoOp context vectors)."),
    labels: Optional[str] = typer.Option(None, help="The prompt head's target: soft (Gaussian over the region centres, width --sigma) or hard (one-hot of the nearest region)."),
    readout: Optional[str] = typer.Option(None, help="The prediction: regression (tanh head), prompt (sum of region probabilities x region centres) or blend (a learned mix)."),
    stitch: Optional[str] = typer.Option(None, help="Overlapping evaluation windows averaged: hann (weights favour window centres) or mean."),
    n_ctx: Optional[int] = typer.Option(None, help="Learnable context vectors per prompt."),
    sigma: Optional[float] = typer.Option(None, help="Width of the Gaussian soft labels over region centres."),
    lambda_prompt: Optional[float] = typer.Option(None, help="Weight of the prompt KL loss."),
    hidden: Optional[int] = typer.Option(None, help="GRU and fusion width."),
    layers: Optional[int] = typer.Option(None, help="GRU layers."),
    bidirectional: Optional[bool] = typer.Option(None, "--bidirectional/--unidirectional", help="Bidirectional GRUs."),
    dropout: Optional[float] = typer.Option(None),
    heads: Optional[int] = typer.Option(None, help="Cross-modal attention heads."),
    seq_len: Optional[int] = typer.Option(None, help="Frames per training window."),
    stride: Optional[int] = typer.Option(None, help="Frames between training windows."),
    batch_size: Optional[int] = typer.Option(None, help="Windows per batch."),
    epochs: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    weight_decay: Optional[float] = typer.Option(None),
    patience: Optional[int] = typer.Option(None, help="Stop after this many epochs without a better val P_VA."),
    seed: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="cuda, cpu, ... (default: cuda when present)."),
    audio_align: Optional[str] = typer.Option(None, help="nearest or linear interpolation of audio steps to frame times."),
    visual_features: Optional[str] = typer.Option(None, help="Visual feature set(s) of the store, NAME[,NAME] (default: its only one)."),
    audio_features: Optional[str] = typer.Option(None, help="Audio feature set(s) of the store, NAME[,NAME] (default: its only one)."),
    text_tower: Optional[str] = typer.Option(None, help="MODEL/PRETRAINED of the CLIP text tower for the prompt head (default: the store's CLIP set)."),
    train_splits: Optional[str] = typer.Option(None, help="train (select the epoch on val) or train,val (a final fit: every --epochs, the last kept, nothing held out)."),
    schedule: Optional[str] = typer.Option(None, help="Learning rate after the warmup: constant or cosine (down to 0 at the last epoch)."),
    warmup: Optional[float] = typer.Option(None, help="Fraction of the training steps over which the learning rate rises linearly from 0."),
    folds: Optional[int] = typer.Option(None, help="K folds over the tracks of train and val together (a video's tracks stay in one fold): one run per fold under --out and the out-of-fold P_VA."),
    workers: int = typer.Option(0, help="With --folds: train the folds over N local Dask worker processes (one per GPU when there are GPUs)."),
    scheduler: Optional[str] = typer.Option(None, help="With --folds: send the folds to a running Dask scheduler, e.g. tcp://host:8786 (the store at a path or URL every worker reads)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
):
    """Train: select the epoch on val, or K folds over train+val, or a fixed number of epochs on chosen splits."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "as_json", "workers", "scheduler")}
    from dva.trainer.fit import fit as run_fit
    from dva.trainer.settings import settings_from
    from dva.trainer.tasks import fit_folds_spread

    settings = settings_from(config, **flags)
    spread = scheduler or workers > 0
    report = fit_folds_spread(settings, scheduler, workers, progress=not as_json) if spread else run_fit(settings, progress=not as_json)
    typer.echo(json.dumps(report) if as_json else "\n".join(report_lines(report)))


def report_lines(report: dict) -> list[str]:
    """What `dva fit` prints: one line per figure, each named by what it is."""
    lines = []
    for name in ("oof", "oof_smoothed", "oof_last", "oof_val", "plain_best_val", "best_val", "best_val_smoothed", "final"):
        figure = report.get(name)
        if not figure:
            continue
        if figure.get("p_va") is None:
            lines.append(f"{name:<18} epoch {figure['epoch']}: no held-out score (nothing held out)")
            continue
        epoch = f"epoch {figure['epoch']}" if "epoch" in figure else f"{figure.get('folds', '?')} folds"
        lines.append(f"{name:<18} {epoch}: CCC_V {figure['ccc_v']:.4f}  CCC_A {figure['ccc_a']:.4f}  P_VA {figure['p_va']:.4f}")
    lines += [f"  {name}: {text}" for name, text in report.get("figures", {}).items() if report.get(name)]
    lines.append(f"-> {report['run']}")
    return lines


@app.command()
@user_errors
def predict(
    files: Optional[list[Path]] = typer.Argument(None, help="More videos after --video FILE (dva predict --video a.mp4 b.mov ...).", show_default=False),
    run: list[Path] = typer.Option(..., help="Run directory written by `dva fit`, or a folds directory (`dva fit --folds`); repeat for an ensemble (the per-frame mean)."),
    features: Optional[str] = typer.Option(None, help="Feature store holding the split to predict (not with --video)."),
    video: list[Path] = typer.Option([], help="A recording to predict (faces, extraction of the run's feature sets, prediction): <track>.csv and <track>.png under --out."),
    split: str = typer.Option("test", help="test, val, or all (a folder of videos)."),
    out: Path = typer.Option(..., help="The submission file (e.g. predictions.txt), or a folder with --format per-track or csv, or with --video."),
    format: str = typer.Option("submission", "--format", help="submission: one file in the sample file's rows and order (ABAW 5 onwards); per-track: one <track>.txt each (older challenges); csv: one <track>.csv each, frame,time,valence,arousal,face."),
    sample: Optional[Path] = typer.Option(None, help="The organisers' sample file (default: the one the split was extracted with)."),
    allow_incomplete: bool = typer.Option(False, help="Write what exists when listed tracks are missing, failed or incomplete (they are named)."),
    smooth: Optional[float] = typer.Option(None, help="Seconds of centred Gaussian smoothing along each track, after the ensemble and before clipping (default: the width `dva fit` chose on held-out tracks; 0: none)."),
    device: Optional[str] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
):
    """Write the ABAW submission (every row of the organisers' sample file, in its order), per-track files, or VA traces of recordings (--video)."""
    if video or files:
        return _predict_videos([*video, *(files or [])], bool(video), run, features, out, device, smooth, as_json)
    if features is None:
        raise DvaError("pass --features STORE (the store holding the split), or --video FILE")
    from dva.trainer.predict import predict as run_predict

    summary = run_predict(run, features, split, out, device, fmt=format, sample=sample, allow_incomplete=allow_incomplete, smooth=smooth)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    if summary["check"]:
        typer.echo(summary["check"])
    typer.echo(f"ensemble of {summary['runs']} run(s), smoothing {summary['smooth_seconds']:g} s ({summary['smoothing']})")
    typer.echo(f"wrote {summary['rows']} rows of {summary['tracks']} tracks to {out}")


def _predict_videos(videos: list[Path], flagged: bool, run: list[Path], features, out: Path, device, smooth, as_json: bool) -> None:
    from dva.trainer.predict_video import predict_videos

    if not flagged:
        raise DvaError(f"{videos[0]}: videos to predict go after --video (dva predict --video FILE [FILE ...] --run RUN --out DIR)")
    if features is not None:
        raise DvaError("--video extracts its own features from the recordings: leave out --features")
    report = predict_videos(videos, run, out, device=device, smooth=smooth, progress=not as_json)
    for video, reason in report.failed.items():
        typer.echo(f"dva: failed: {video}: {reason}", err=True)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        for track, files in report.tracks.items():
            faces = "no faces read" if files["faces"] is None else f"a face in {files['faces']}"
            typer.echo(f"{track}: {files['frames']} frames ({faces}) -> {files['csv']}, {files['png']}")
    if report.failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def ablate(
    features: str = typer.Option(..., help="Feature store written by `dva extract`."),
    grid: list[str] = typer.Option([], help="KEY=V1,V2,... over any `dva fit` setting (repeatable); modalities=visual,audio,visual+audio."),
    fixed: list[str] = typer.Option([], "--set", help="KEY=VALUE fixed for every variant (repeatable)."),
    config: Optional[Path] = typer.Option(None, help="TOML file with base fit settings."),
    seeds: int = typer.Option(1, help="Seeds per variant (seed, seed+1, ...)."),
    folds: Optional[int] = typer.Option(None, help="K folds over train+val per variant and seed: rank by the out-of-fold P_VA instead of best_val."),
    out: Path = typer.Option(Path("runs/ablate"), help="Folder for results.csv, results.md and ablation.png."),
    workers: int = typer.Option(0, help="Run variants over N local Dask worker processes (one per GPU when there are GPUs)."),
    scheduler: Optional[str] = typer.Option(None, help="Send the variants to a running Dask scheduler, e.g. tcp://host:8786 (the store at a path or URL every worker reads)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """A grid of fit variants, one task per variant x seed x fold; prints the results table."""
    from dva.trainer.ablate import ablate as run_ablate
    from dva.trainer.ablate import markdown_table, parse_fixed, parse_grid
    from dva.trainer.settings import settings_from

    values = {**parse_fixed(fixed), "features": features} | ({"folds": folds} if folds is not None else {})
    base = settings_from(config, **values)
    summary = run_ablate(base, parse_grid(grid), seeds, out, workers=workers, progress=not as_json, scheduler=scheduler)
    for task, reason in summary.failed.items():
        typer.echo(f"dva: failed: {task}: {reason}", err=True)
    typer.echo(json.dumps(summary) if as_json else markdown_table(summary) + f"\nresults in {out}/results.csv, chart {out}/ablation.png")
    if summary.failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("demo"), help="Folder for the synthetic data, store, runs and plots."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
):
    """synth + extract (offline tiny encoders) + fit + ablation, end to end on this machine."""
    from dva.demo import demo as run_demo
    from dva.trainer.ablate import markdown_table

    result = run_demo(out, progress=True)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(markdown_table(result["ablation"]))
    typer.echo(markdown_table(result["feature_sets"]))
    typer.echo(f"full model, best_val (epoch {result['epoch']} selected on val, scored on val): CCC_V {result['ccc_v']:.4f}  CCC_A {result['ccc_a']:.4f}  P_VA {result['p_va']:.4f}")
    typer.echo("plots: " + ", ".join(result["plots"]))
    typer.echo(f"test submission (ABAW format, the sample file's rows): {result['predictions']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
