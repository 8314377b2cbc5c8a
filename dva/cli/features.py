"""`dva extract`, `dva import`, `dva info`, `dva verify`, `dva convert`, `dva upgrade`: the feature store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dva.cli.app import app, user_errors, warn


@app.command()
@user_errors
def extract(
    data: Path = typer.Option(..., help="Aff-Wild2 dataset folder, or a folder of videos (split all)."),
    split: str = typer.Option(..., help="train, val or test; all for a folder of videos."),
    out: Optional[str] = typer.Option(None, help="Feature store: a Zarr directory, an fsspec URL, or a .h5 file (default: stores)."),
    preset: Optional[str] = typer.Option(None, help="Named encoder configuration: 'default' (real weights) or 'tiny' (random, offline; with --recipe: tiny encoders standing in for the recipe's, its preprocessing kept)."),
    recipe: Optional[str] = typer.Option(None, help="A recipe (dva recipes) or its TOML file: extract the feature sets it expects (its encoders and preprocessing); flags override it."),
    visual_encoder: Optional[str] = typer.Option(None, help="Visual family: clip (open_clip, the default), hf (a transformers image backbone, --hf-model) or timm (a timm model, --timm-model)."),
    audio_encoder: Optional[str] = typer.Option(None, help="Audio family: ast (the default), or wav2vec2 (wav2vec2, HuBERT, WavLM through transformers, --wav2vec2-model)."),
    clip_model: Optional[str] = typer.Option(None, help="open_clip model name (default: ViT-B-32)."),
    clip_pretrained: Optional[str] = typer.Option(None, help="open_clip pretrained tag or local checkpoint file (default: openai)."),
    clip_norm: Optional[str] = typer.Option(None, help="clip (the model's own mean and std, the default) or imagenet (ImageNet's, as the seed paper's released code feeds CLIP): recorded, and in the set's name (-imagenet)."),
    ast_model: Optional[str] = typer.Option(None, help="AST hub id or local directory (default: MIT/ast-finetuned-audioset-10-10-0.4593)."),
    hf_model: Optional[str] = typer.Option(None, help="--visual-encoder hf: hub id or local directory (default: google/vit-base-patch16-224-in21k)."),
    timm_model: Optional[str] = typer.Option(None, help="--visual-encoder timm: a timm model name or hf-hub:owner/name id (default: efficientnet_b0)."),
    timm_weights: Optional[Path] = typer.Option(None, help="--visual-encoder timm: a local weights file, tensors only (.safetensors, or a torch state dict .pt/.pth); default: timm's pretrained weights."),
    wav2vec2_model: Optional[str] = typer.Option(None, help="--audio-encoder wav2vec2: hub id or local directory, e.g. microsoft/wavlm-base-plus (default: facebook/wav2vec2-base)."),
    audio_layer: Optional[str] = typer.Option(None, help="--audio-encoder wav2vec2: the hidden state to keep (0 = CNN features, 1..L transformer layers) or mean of all (the default)."),
    audio_mode: Optional[str] = typer.Option(None, help="window (the default): one AST pass per step; tokens: one pass per segment, pooled patch tokens (much cheaper)."),
    audio_window: Optional[float] = typer.Option(None, help="Seconds of audio per step (AST window mode, wav2vec2; default 1)."),
    audio_hop: Optional[float] = typer.Option(None, help="Seconds between audio steps (AST window mode, wav2vec2; default 0.1)."),
    audio_frontend: Optional[str] = typer.Option(None, help="AST's input: kaldi (ASTFeatureExtractor's fbank, the default) or mel (the seed paper's released code: torchaudio mel, 128 bins, n_fft 1024, hop 512, dB; see the README)."),
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
    task: Optional[str] = typer.Option(None, help="va, expr, au (comma-separated): whose split's tracks to take (default: every challenge the release annotates)."),
    fps: Optional[float] = typer.Option(None, help="s-Aff-Wild2 (images only): the rate of the images' frame numbers, which gives each row its time (default 30)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
):
    """Add a visual and an audio feature set of one split to the store (resumable; other sets are never touched).
    The split's tracks of every challenge (VA, EXPR, AU) are taken, each stored once with all its labels."""
    from dva import api

    report = api.extract(
        data, split, out, preset=preset, recipe=recipe, clip_norm=clip_norm, audio_frontend=audio_frontend, visual_encoder=visual_encoder, audio_encoder=audio_encoder, clip_model=clip_model,
        clip_pretrained=clip_pretrained, ast_model=ast_model, hf_model=hf_model, timm_model=timm_model,
        timm_weights=str(timm_weights) if timm_weights else None, wav2vec2_model=wav2vec2_model, audio_layer=audio_layer,
        audio_mode=audio_mode, audio_window=audio_window, audio_hop=audio_hop, audio_pad=audio_pad or None, visual_source=visual_source, crops=str(crops) if crops else None,
        batch_size=batch_size, device=device, workers=workers, scheduler=scheduler, overwrite=overwrite or None, progress=not as_json,
        test_list=str(test_list) if test_list else None, sample=str(sample) if sample else None, shard=shard, claim_timeout=claim_timeout,
        only=only, name=name, jpeg_decoder=jpeg_decoder, allow_other_device=allow_other_device or None, tasks=task, fps=fps,
    )
    _print_warnings(report["warnings"], report["masked_crops"])
    for track, reason in report["failed"].items():
        typer.echo(f"dva: failed: {track}: {reason}", err=True)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        typer.echo(
            f"{split}: {len(report['extracted'])} tracks extracted, {len(report['skipped'])} already complete, "
            f"{len(report['elsewhere'])} done by another process, {len(report['failed'])} failed; "
            f"{report['frames']} frames in {report['seconds']:.1f} s ({report['frames_per_second']:.1f} frames/s) -> {report['store']}"
        )
    if report["failed"]:
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
    task: Optional[list[str]] = typer.Option(None, help="va, expr, au (repeatable or comma-separated): whose split's tracks the files name (default: every challenge's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
):
    """Add a feature set computed elsewhere to the store, with its provenance; every file is checked before anything is written.
    The files name the split's tracks of every challenge (or --task's), each written where the store keeps it."""
    from dva.pipeline.import_features import ImportSettings, run_import

    settings = ImportSettings(store=store, split=split, name=name, modality=modality, folder=str(folder), rate=rate, overwrite=overwrite,
                              progress=not as_json, tasks=",".join(task) if task else None)
    report = run_import(settings)
    for message in report.warnings:
        warn(message)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        where = ", ".join(f"{count} {'stored under ' if i == 0 else 'under '}{stored}" for i, (stored, count) in enumerate(report.stored.items()))
        typer.echo(
            f"{settings.described()}: {len(report.imported)} tracks imported into {name}{f' ({where})' if where else ''}, {len(report.skipped)} already complete, "
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
    if summary.get("dataset") == "s-aff-wild2":
        typer.echo("data    s-Aff-Wild2: selected frames as images, no audio (visual sets only; each row at its frame number's time)")
    if not summary.get("checksums"):
        typer.echo(f"checks  none: written before dva checksummed every chunk (`dva upgrade {summary['path']}` adds them)")
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
    for task, splits in (summary.get("tasks") or {}).items():
        for split, part in splits.items():
            stored = ", ".join(f"{n} in {where}" for where, n in part["stored_in"].items())
            typer.echo(f"task    {task:<4} {split:<5}  {part['tracks']} tracks ({stored}), {part['frames']} frames, {part['annotated']} annotated")


@app.command()
@user_errors
def labels(
    data: Path = typer.Option(..., help="The Aff-Wild2 release whose annotations to read (VA, EXPR, AU)."),
    features: str = typer.Option(..., help="Feature store (Zarr directory or .h5 file) holding the tracks."),
    task: Optional[str] = typer.Option(None, help="va, expr, au (comma-separated): which challenges' labels (default: every one the release has)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Add every challenge's labels (and each track's split per challenge) to the tracks a store holds, without re-encoding."""
    from dva.pipeline.labels import run_labels

    report = run_labels(data, features, tasks=task, progress=not as_json)
    for message in report.warnings:
        warn(message)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        done = ", ".join(f"{task}: {n} tracks ({report.annotated.get(task, 0)} annotated frames)" for task, n in report.labelled.items()) or "no labels"
        typer.echo(f"labels written: {done} -> {features}")


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
def verify(
    store: str = typer.Argument(..., help="Feature store: a Zarr directory, an fsspec URL, or a .h5 file."),
    workers: int = typer.Option(8, help="Arrays read at once (threads)."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
):
    """Read back every chunk of every set of every track; name each damaged split, track and set (checksum mismatch,
    truncated or missing chunk, unreadable metadata). Exit 1 when anything is damaged: `dva extract` over the same
    data redoes exactly the damaged sets."""
    from dva.stores import verify as verify_store

    report = verify_store(store, workers=workers, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        for finding in report.findings:
            typer.echo(f"dva: damaged: {finding.line()}", err=True)
        state = f"{len(report.findings)} damaged" if report.findings else "no damage"
        typer.echo(f"{store}: {report.tracks} tracks, {report.arrays} arrays read back, {state}")
        if not report.checksummed:
            warn(f"{store} was written before dva checksummed every chunk: a flipped byte may read back unseen; `dva upgrade {store}` adds the checksums")
        if report.findings:
            typer.echo("redo the damaged sets with `dva extract` over the same data (split by split, as they were made)", err=True)
    if report.findings:
        raise typer.Exit(1)


@app.command()
@user_errors
def upgrade(
    store: str = typer.Argument(..., help="A store written by dva 0.1 (format 1), or one written before dva checksummed its chunks."),
):
    """Bring a store written by an older dva up to this one, in place (resumable): a dva 0.1 store's two arrays per
    track become feature sets, and every array without a checksum is rewritten with one (Zarr crc32c, HDF5 Fletcher32)."""
    from dva.pipeline.encoders.naming import format_1_set_names
    from dva.stores import add_checksums, open_store
    from dva.stores import upgrade as upgrade_store

    with open_store(store, mode="r") as opened:
        layout, names, checksummed = opened.layout, opened.attrs, opened.checksummed
    if layout == 1:
        names = format_1_set_names(names)
        count = upgrade_store(store, names)
        typer.echo(f"upgraded {count} tracks of {store}: feature sets {names['visual']} (visual) and {names['audio']} (audio)")
    elif checksummed:
        typer.echo(f"{store} is up to date: every chunk carries a checksum")
        return
    count, damaged = add_checksums(store)
    for finding in damaged:
        typer.echo(f"dva: damaged: {finding.line()}", err=True)
    typer.echo(f"checksums added to {count} tracks of {store}" + (f"; {len(damaged)} damaged left as they are: redo them with `dva extract`, then run `dva upgrade` again" if damaged else ""))
    if damaged:
        raise typer.Exit(1)
