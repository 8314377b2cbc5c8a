"""`dva fit`, `dva predict`, `dva ablate`, `dva demo`: training and predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dva.cli.app import app, user_errors
from dva.errors import DvaError, refusals

TRACK_HELP = ("mlflow: log the run to MLflow (pip install 'dva[mlflow]'): settings as params, per-epoch and final figures as metrics, "
              "config.json, metrics.json and plots as artifacts; at MLFLOW_TRACKING_URI, else a local store beside the run directory (mlruns).")



@app.command()
@user_errors
def fit(
    features: Optional[str] = typer.Option(None, help="Feature store written by `dva extract` (default: stores)."),
    out: Optional[str] = typer.Option(None, help="Run directory (default: runs/fit)."),
    config: Optional[Path] = typer.Option(None, help="TOML file with any of these settings; flags override it."),
    recipe: Optional[str] = typer.Option(None, help="Start from a recipe (dva recipes: paper, seed-code, ...) or its TOML file: its settings, and the store's feature sets it expects where none is named; --config and flags override it. Recorded in config.json with its checksum."),
    modalities: Optional[str] = typer.Option(None, help="visual, audio or visual,audio."),
    task: Optional[str] = typer.Option(None, help="The challenge: va (valence-arousal, default), expr (eight expressions: macro F1), au (twelve action units: mean F1; no prompt head) or mtl (one model, the three heads: P_MTL = (CCC_V + CCC_A)/2 + EXPR F1 + AU F1). Its own labels and splits of the store."),
    task_weights: Optional[str] = typer.Option(None, help="--task mtl: V,E,A, the weights of the VA, EXPR and AU losses (default 1,1,1)."),
    task_weighting: Optional[str] = typer.Option(None, help="--task mtl: fixed (--task-weights) or uncertainty (each loss also x exp(-s) + s, s learned per task: Kendall et al.)."),
    temporal: Optional[str] = typer.Option(None, help="Temporal encoder per modality: gru (the paper's), tcn (dilated convolutions over the whole window), transformer (self-attention, sinusoidal positions), or the name an installed package registers in the entry-point group dva.temporal (e.g. mamba, from examples/dva-mamba)."),
    tcn_kernel: Optional[int] = typer.Option(None, help="--temporal tcn: kernel of the dilated convolutions (odd); levels are added until the receptive field covers --seq-len."),
    temporal_layers: Optional[int] = typer.Option(None, help="--temporal transformer: encoder layers (pre-norm; --heads heads)."),
    fusion: Optional[str] = typer.Option(None, help="concat, xattn, gated or hierarchical (attention, then gate)."),
    prompt: Optional[str] = typer.Option(None, help="The prompt head's text: none (no prompt head), fixed (hand-written prompts) or learnable (CoOp context vectors; the default, none for --task au)."),
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
    region_centre: Optional[float] = typer.Option(None, help="The region grid's outer centre coordinate, for the soft and hard labels and the prompt readout (default 2/3; the released code 0.66)."),
    prompt_templates: Optional[str] = typer.Option(None, help="--prompt fixed: several templates separated by |, each with {} for the region's text, averaged per region (the released code's three)."),
    logit_scale: Optional[str] = typer.Option(None, help="The prompt head's logit scale: learnable (default) or a fixed number (the released code: 10)."),
    prompt_input: Optional[str] = typer.Option(None, help="What the prompt head reads: fused (the fused stream, projected; default) or visual (the visual features as stored, no projection; needs a CLIP set of the text tower's width)."),
    head: Optional[str] = typer.Option(None, help="VA's regression head: linear (tanh; default) or mlp (128 hidden, dropout 0.2, no tanh, as released)."),
    gate_partner: Optional[str] = typer.Option(None, help="--fusion hierarchical: audio (attention both ways, then gate(visual, audio); default) or visual (visual attends to audio, then an MLP gate(attended, visual), as released)."),
    causal: Optional[bool] = typer.Option(None, "--causal/--no-causal", help="Every prediction from the past only: TCN padded on the left, GRU one way, transformer and fusion attention masked; no smoothing chosen."),
    tcn_levels: Optional[int] = typer.Option(None, help="--temporal tcn: a fixed number of levels (default 0: as many as cover the window; released 2)."),
    target: Optional[str] = typer.Option(None, help="frame (every frame of a window a target; default) or last (one target per past window, its last frame; the window averaged before the head)."),
    window_seconds: Optional[float] = typer.Option(None, help="--target last: seconds of past each window covers (default 10)."),
    window_frames: Optional[int] = typer.Option(None, help="--target last: frames sampled evenly by time among the window's face crops (default 20)."),
    train_stride_seconds: Optional[float] = typer.Option(None, help="--target last: seconds between training targets (default 3)."),
    train_splits: Optional[str] = typer.Option(None, help="train (select the epoch on val) or train,val (a final fit: every --epochs, the last kept, nothing held out)."),
    schedule: Optional[str] = typer.Option(None, help="Learning rate after the warmup: constant or cosine (down to 0 at the last epoch)."),
    warmup: Optional[float] = typer.Option(None, help="Fraction of the training steps over which the learning rate rises linearly from 0."),
    folds: Optional[int] = typer.Option(None, help="K folds over the tracks of train and val together (a video's tracks stay in one fold): one run per fold under --out and the out-of-fold P_VA (oof: each fold's epoch chosen on the other folds; oof_selected: on its own)."),
    workers: int = typer.Option(0, help="With --folds: train the folds over N local Dask worker processes (one per GPU when there are GPUs)."),
    scheduler: Optional[str] = typer.Option(None, help="With --folds: send the folds to a running Dask scheduler, e.g. tcp://host:8786 (the store at a path or URL every worker reads)."),
    track: Optional[str] = typer.Option(None, help=TRACK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
):
    """Train: select the epoch on val, or K folds over train+val, or a fixed number of epochs on chosen splits."""
    flags = {k: v for k, v in locals().items() if k not in ("features", "config", "recipe", "as_json", "workers", "scheduler", "track") and v is not None}
    from dva import api

    report = api.fit(features, recipe=recipe, config=config, track=track, workers=workers, scheduler=scheduler, progress=not as_json, **flags)
    typer.echo(json.dumps(report) if as_json else "\n".join(report_lines(report)))


def report_lines(report: dict) -> list[str]:
    """What `dva fit` prints: one line per figure, each named by what it is."""
    lines = []
    for name in ("oof", "oof_smoothed", "oof_selected", "oof_last", "oof_val", "plain_best_val", "best_val", "best_val_smoothed", "final"):
        figure = report.get(name)
        if not figure:
            continue
        key = report.get("figure", "p_va")  # the task's figure: p_va, expr_f1, au_f1 or p_mtl
        if figure.get(key) is None:
            lines.append(f"{name:<18} epoch {figure['epoch']}: no held-out score (nothing held out)")
            continue
        epoch = f"epoch {figure['epoch']}" if "epoch" in figure else f"{figure.get('folds', '?')} folds" + (f", epochs {'/'.join(map(str, figure['epochs']))}" if figure.get("epochs") else "")
        shown = figure_text(key, figure)
        lines.append(f"{name:<18} {epoch}: {shown}")
    lines += [f"  {name}: {text}" for name, text in report.get("figures", {}).items() if report.get(name)]
    lines.append(f"-> {report['run']}")
    if report.get("mlflow"):
        lines.append(f"-> MLflow run {report['mlflow']['run_id']} at {report['mlflow']['tracking_uri']}")
    return lines


def figure_text(key: str, figure: dict) -> str:
    """A task's figure as `dva fit` shows it: P_VA with its CCCs, P_MTL with its four parts, or the F1."""
    number = lambda name: "n/a" if figure.get(name) is None else f"{figure[name]:.4f}"  # noqa: E731  (a part without labels on the held-out tracks)
    if key == "p_va":
        return f"CCC_V {number('ccc_v')}  CCC_A {number('ccc_a')}  P_VA {number('p_va')}"
    if key == "p_mtl":
        return f"CCC_V {number('ccc_v')}  CCC_A {number('ccc_a')}  EXPR F1 {number('expr_f1')}  AU F1 {number('au_f1')}  P_MTL {number('p_mtl')}"
    return f"{key.upper().replace('_', ' ')} {number(key)}"


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
    allow_incomplete: bool = typer.Option(False, help="Write the submission when listed tracks are missing, failed or incomplete: each of their rows filled (VA 0,0; EXPR Neutral; AU 0) and named with its row count, so the file still has every sample row."),
    smooth: Optional[str] = typer.Option(None, help="Seconds of centred Gaussian smoothing along each track, after the ensemble and before clipping: one width, or V,A for valence and arousal (default: the widths `dva fit` chose on held-out tracks, per dimension; 0: none). With runs of several tasks it is VA's (EXPR and AU smooth with the width dva fit chose), every task's when no VA run is given."),
    device: Optional[str] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
):
    """Write the ABAW submission (every row of the organisers' sample file, in its order), per-track files, or per-frame CSVs (--format csv, or of recordings: --video)."""
    if video or files:
        return _predict_videos([*video, *(files or [])], bool(video), run, features, out, device, smooth, as_json)
    if features is None:
        raise DvaError("pass --features STORE (the store holding the split), or --video FILE")
    from dva import api
    from dva.trainer.results.run_dir import widths_text

    summary = api.predict(run, features, split, out, format=format, sample=sample, allow_incomplete=allow_incomplete, smooth=smooth, device=device)
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
    with refusals(out):
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
    recipe: Optional[str] = typer.Option(None, help="Start every variant from a recipe (dva recipes) or its TOML file; --config, --set and --grid override it. `--grid recipe=paper,seed-code` compares recipes, each on its own feature sets."),
    seeds: int = typer.Option(1, help="Seeds per variant (seed, seed+1, ...)."),
    folds: Optional[int] = typer.Option(None, help="K folds over train+val per variant and seed (one fold plan per seed for every variant): rank by the out-of-fold figure that selects nothing on the frames it scores (oof: P_VA; --set task=expr|au: its F1) instead of best_val."),
    baseline: list[str] = typer.Option([], help="KEY=VALUE of the row every other is compared with (repeatable; default: the grid's first value on every axis)."),
    out: Path = typer.Option(Path("runs/ablate"), help="Folder for results.csv, results.md, ablation.png and predictions/."),
    workers: int = typer.Option(0, help="Run variants over N local Dask worker processes (one per GPU when there are GPUs)."),
    scheduler: Optional[str] = typer.Option(None, help="Send the variants to a running Dask scheduler, e.g. tcp://host:8786 (the store at a path or URL every worker reads)."),
    track: Optional[str] = typer.Option(None, help="mlflow: one MLflow run for the ablation (the results table and chart), a child per variant x seed (its settings, figures and difference to the baseline) and a grandchild per fold, each task logged where it trains (pip install 'dva[mlflow]'; MLFLOW_TRACKING_URI, else OUT/../mlruns)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """A grid of fit variants, one task per variant x seed x fold; prints the results table, every row against the baseline."""
    from dva import api
    from dva.trainer.ablate import markdown_table, parse_fixed

    summary = api.ablate(features, grid, seeds=seeds, folds=folds, baseline=baseline, out=out, recipe=recipe, config=config, track=track,
                         workers=workers, scheduler=scheduler, progress=not as_json, **parse_fixed(fixed))
    if summary.mlflow:
        typer.echo(f"MLflow run {summary.mlflow['run_id']} at {summary.mlflow['tracking_uri']}", err=True)
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


@app.command()
@user_errors
def recipes(
    action: Optional[str] = typer.Argument(None, help="show: print one recipe whole."),
    name: Optional[str] = typer.Argument(None, help="With show: a recipe's name or TOML file."),
):
    """The shipped recipes (the paper as described, the authors' released code, an ABAW winner): name and source,
    one line each; `dva recipes show NAME` prints one (fit settings, the feature sets it expects, its source)."""
    from dva import recipes as shipped

    if action is None:
        for each in shipped.names():
            recipe = shipped.load(each)
            typer.echo(f"{each:<14} {recipe.summary} (source: {recipe.source})")
        return
    if action != "show" or name is None:
        raise DvaError("usage: dva recipes, or dva recipes show NAME")
    recipe = shipped.load(name)
    typer.echo(f"# {recipe.name}: {recipe.path} (sha256 {recipe.sha256[:16]})")
    typer.echo(Path(recipe.path).read_text().rstrip())
