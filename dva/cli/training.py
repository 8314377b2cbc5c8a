"""`dva fit`, `dva predict`, `dva ablate`, `dva demo`: training and predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dva.cli.app import app, user_errors
from dva.errors import DvaError


@app.command()
@user_errors
def fit(
    features: Optional[str] = typer.Option(None, help="Feature store written by `dva extract` (default: stores)."),
    out: Optional[str] = typer.Option(None, help="Run directory (default: runs/fit)."),
    config: Optional[Path] = typer.Option(None, help="TOML file with any of these settings; flags override it."),
    modalities: Optional[str] = typer.Option(None, help="visual, audio or visual,audio."),
    task: Optional[str] = typer.Option(None, help="The challenge: va (valence-arousal, default), expr (eight expressions: macro F1) or au (twelve action units: mean F1; needs --prompt none). Its own labels and splits of the store."),
    temporal: Optional[str] = typer.Option(None, help="Temporal encoder per modality: gru (the paper's), tcn (dilated convolutions over the whole window) or transformer (self-attention, sinusoidal positions)."),
    tcn_kernel: Optional[int] = typer.Option(None, help="--temporal tcn: kernel of the dilated convolutions (odd); levels are added until the receptive field covers --seq-len."),
    temporal_layers: Optional[int] = typer.Option(None, help="--temporal transformer: encoder layers (pre-norm; --heads heads)."),
    fusion: Optional[str] = typer.Option(None, help="concat, xattn, gated or hierarchical (attention, then gate)."),
    prompt: Optional[str] = typer.Option(None, help="The prompt head's text: none (no prompt head), fixed (hand-written prompts) or learnable (CoOp context vectors)."),
    labels: Optional[str] = typer.Option(None, help="The prompt head's target: soft (Gaussian over the region centres, width --sigma) or hard (one-hot of the nearest region)."),
    readout: Optional[str] = typer.Option(None, help="The prediction: regression (tanh head), prompt (sum of region probabilities x region centres) or blend (a learned mix)."),
    stitch: Optional[str] = typer.Option(None, help="Overlapping evaluation windows averaged: hann (weights favour window centres) or mean."),
    n_ctx: Optional[int] = typer.Option(None, help="Learnable context vectors per prompt."),
    sigma: Optional[float] = typer.Option(None, help="Width of the Gaussian soft labels over region centres."),
    lambda_prompt: Optional[float] = typer.Option(None, help="Weight of the prompt KL loss."),
    mse_weight: Optional[float] = typer.Option(None, help="Add this x the MSE over valid frames to the CCC loss (default 0: the paper's loss; ABAW's Team RAS used 0.01)."),
    va_weights: Optional[str] = typer.Option(None, help="V,A: weights of valence and arousal in the CCC (and MSE) terms (default 1,1; Team RAS used 0.7,0.3)."),
    hidden: Optional[int] = typer.Option(None, help="Width of the temporal encoders and the fusion."),
    layers: Optional[int] = typer.Option(None, help="GRU layers (--temporal gru)."),
    bidirectional: Optional[bool] = typer.Option(None, "--bidirectional/--unidirectional", help="Bidirectional GRUs."),
    dropout: Optional[float] = typer.Option(None),
    heads: Optional[int] = typer.Option(None, help="Attention heads: cross-modal attention, and --temporal transformer."),
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
    folds: Optional[int] = typer.Option(None, help="K folds over the tracks of train and val together (a video's tracks stay in one fold): one run per fold under --out and the out-of-fold P_VA (oof: each fold's epoch chosen on the other folds; oof_selected: on its own)."),
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
    for name in ("oof", "oof_smoothed", "oof_selected", "oof_last", "oof_val", "plain_best_val", "best_val", "best_val_smoothed", "final"):
        figure = report.get(name)
        if not figure:
            continue
        key = report.get("figure", "p_va")  # the task's figure: p_va, expr_f1 or au_f1
        if figure.get(key) is None:
            lines.append(f"{name:<18} epoch {figure['epoch']}: no held-out score (nothing held out)")
            continue
        epoch = f"epoch {figure['epoch']}" if "epoch" in figure else f"{figure.get('folds', '?')} folds" + (f", epochs {'/'.join(map(str, figure['epochs']))}" if figure.get("epochs") else "")
        shown = f"CCC_V {figure['ccc_v']:.4f}  CCC_A {figure['ccc_a']:.4f}  P_VA {figure['p_va']:.4f}" if key == "p_va" else f"{key.upper().replace('_', ' ')} {figure[key]:.4f}"
        lines.append(f"{name:<18} {epoch}: {shown}")
    lines += [f"  {name}: {text}" for name, text in report.get("figures", {}).items() if report.get(name)]
    lines.append(f"-> {report['run']}")
    return lines


@app.command()
@user_errors
def predict(
    files: Optional[list[Path]] = typer.Argument(None, help="More videos after --video FILE (dva predict --video a.mp4 b.mov ...).", show_default=False),
    run: list[Path] = typer.Option(..., help="Run directory written by `dva fit`, or a folds directory (`dva fit --folds`); repeat for an ensemble (the per-frame mean), or, with --video or --format csv, for runs of several tasks (va, expr, au: each task's runs an ensemble, every task's columns in one CSV)."),
    features: Optional[str] = typer.Option(None, help="Feature store holding the split to predict (not with --video)."),
    video: list[Path] = typer.Option([], help="A recording to predict (faces, extraction of the runs' feature sets, prediction): <track>.csv and <track>.png under --out, every task of the --run given."),
    split: str = typer.Option("test", help="test, val, or all (a folder of videos)."),
    out: Path = typer.Option(..., help="The submission file (e.g. predictions.txt), or a folder with --format per-track or csv, or with --video."),
    format: str = typer.Option("submission", "--format", help="submission: one file in the sample file's rows and order (ABAW 5 onwards); per-track: one <track>.txt each (older challenges); csv: one <track>.csv each, frame,time,valence,arousal,face (EXPR's eight probabilities and expression, AU's twelve and <AU>_on, before face, for runs of those tasks)."),
    sample: Optional[Path] = typer.Option(None, help="The organisers' sample file (default: the one the split was extracted with)."),
    allow_incomplete: bool = typer.Option(False, help="Write what exists when listed tracks are missing, failed or incomplete (they are named)."),
    smooth: Optional[str] = typer.Option(None, help="Seconds of centred Gaussian smoothing along each track, after the ensemble and before clipping: one width, or V,A for valence and arousal (default: the widths `dva fit` chose on held-out tracks, per dimension; 0: none). With runs of several tasks it is VA's (EXPR and AU smooth with the width dva fit chose), every task's when no VA run is given."),
    device: Optional[str] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
):
    """Write the ABAW submission (every row of the organisers' sample file, in its order), per-track files, or per-frame CSVs (--format csv, or of recordings: --video)."""
    if video or files:
        return _predict_videos([*video, *(files or [])], bool(video), run, features, out, device, smooth, as_json)
    if features is None:
        raise DvaError("pass --features STORE (the store holding the split), or --video FILE")
    from dva.trainer.results.predict import predict as run_predict
    from dva.trainer.results.run_dir import widths_text

    summary = run_predict(run, features, split, out, device, fmt=format, sample=sample, allow_incomplete=allow_incomplete, smooth=smooth)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    if summary["check"]:
        typer.echo(summary["check"])
    if len(summary["tasks"]) == 1:
        typer.echo(f"ensemble of {summary['runs']} run(s), smoothing {widths_text(summary['smooth_seconds'])} ({summary['smoothing']})")
    else:
        typer.echo("predicted " + "; ".join(_task_line(task, each) for task, each in summary["tasks"].items()))
    typer.echo(f"wrote {summary['rows']} rows of {summary['tracks']} tracks to {out}")


def _task_line(task: str, each: dict) -> str:
    """'va (ensemble of 2 runs, smoothing valence 0.2 s, arousal 0.4 s: chosen by dva fit on held-out tracks)': one task
    of a prediction."""
    from dva.trainer.results.run_dir import widths_text

    runs = "1 run" if each["runs"] == 1 else f"ensemble of {each['runs']} runs"
    return f"{task} ({runs}, smoothing {widths_text(each['smooth_seconds'])}: {each['smoothing']})"


def _predict_videos(videos: list[Path], flagged: bool, run: list[Path], features, out: Path, device, smooth, as_json: bool) -> None:
    from dva.trainer.results.predict_video import predict_videos

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
        for name, framing in report.framing.items():
            typer.echo(f"{name}: crops framed {framing}")
        if report.tasks:
            typer.echo("predicted " + "; ".join(_task_line(task, each) for task, each in report.prediction["tasks"].items()))
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
    folds: Optional[int] = typer.Option(None, help="K folds over train+val per variant and seed (one fold plan per seed for every variant): rank by the out-of-fold figure that selects nothing on the frames it scores (oof: P_VA; --set task=expr|au: its F1) instead of best_val."),
    baseline: list[str] = typer.Option([], help="KEY=VALUE of the row every other is compared with (repeatable; default: the grid's first value on every axis)."),
    out: Path = typer.Option(Path("runs/ablate"), help="Folder for results.csv, results.md, ablation.png and predictions/."),
    workers: int = typer.Option(0, help="Run variants over N local Dask worker processes (one per GPU when there are GPUs)."),
    scheduler: Optional[str] = typer.Option(None, help="Send the variants to a running Dask scheduler, e.g. tcp://host:8786 (the store at a path or URL every worker reads)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """A grid of fit variants, one task per variant x seed x fold; prints the results table, every row against the baseline."""
    from dva.trainer.ablate import ablate as run_ablate
    from dva.trainer.ablate import markdown_table, parse_baseline, parse_fixed, parse_grid
    from dva.trainer.settings import settings_from

    values = {**parse_fixed(fixed), "features": features} | ({"folds": folds} if folds is not None else {})
    base, axes = settings_from(config, **values), parse_grid(grid)
    summary = run_ablate(base, axes, seeds, out, workers=workers, progress=not as_json, scheduler=scheduler, baseline=parse_baseline(baseline, axes))
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
    """synth + extract (offline tiny encoders) + fit and predict (VA, EXPR, AU) + ablation, end to end on this machine."""
    from dva.demo import demo as run_demo
    from dva.trainer.ablate import markdown_table

    result = run_demo(out, progress=True)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(markdown_table(result["ablation"]))
    typer.echo(markdown_table(result["feature_sets"]))
    typer.echo(f"VA   full model, best_val (epoch {result['epoch']} selected on val, scored on val): CCC_V {result['ccc_v']:.4f}  CCC_A {result['ccc_a']:.4f}  P_VA {result['p_va']:.4f}")
    typer.echo(f"     test submission {result['predictions']}: {result['check']}")
    for task, what in (("expr", "macro F1 over 8 classes"), ("au", "mean F1 over 12 units")):
        done = result["tasks"][task]
        typer.echo(f"{task.upper():<4} --task {task}, best_val (epoch {done['epoch']} selected on val, scored on val): {what} {done[f'{task}_f1']:.4f}")
        typer.echo(f"     test submission {done['predictions']}: {done['check']}")
    typer.echo("plots: " + ", ".join(result["plots"]))
