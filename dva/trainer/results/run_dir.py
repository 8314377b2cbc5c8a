"""The run directory `dva fit` writes and `dva predict` reads: config.json, metrics.json, best.pt, val
predictions and plots; checkpoints are loaded with strict key checks.

The frozen CLIP text weights are never saved (they are rebuilt from the store's provenance), so
"strict" means: every saved key is a key of the model the settings build, and every key of that
model that is not a frozen weight was saved.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from dva.data.tasks import AU_NAMES, EXPR_CLASSES, TASKS
from dva.errors import RunError, at_most

CHECKPOINT = "best.pt"
WIDTH_WORDS = {True: "each dimension's width", False: "the width"}  # VA smooths each dimension with its own width, EXPR and AU with one


def trainable_state(model: torch.nn.Module) -> dict:
    """The state worth saving: everything but the frozen CLIP weights (rebuilt from the store's provenance).
    A copy: on the CPU `.cpu()` would share storage with the live weights, which training goes on changing."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k not in frozen}


def load_state_strictly(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load a `trainable_state` into model; RunError naming the keys when it does not match the model."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    keys = set(model.state_dict())
    missing = sorted(keys - frozen - set(state))
    unexpected = sorted(set(state) - keys)
    if missing or unexpected:
        parts = [f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "",
                 f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}" if unexpected else ""]
        raise RunError(f"{source}: the checkpoint does not match the model its settings build ({'; '.join(p for p in parts if p)}); "
                       "it was written by another dva or edited: fit it again")
    try:
        model.load_state_dict(state, strict=False)  # the frozen CLIP weights are absent by design (checked above)
    except RuntimeError as exc:  # shapes differ
        raise RunError(f"{source}: the checkpoint does not match the model its settings build ({str(exc).splitlines()[-1].strip()})") from None


def write_run(result, features, out: Path) -> Path:
    """config.json, metrics.json, best.pt, held-out predictions (ABAW files) and plots under out.

    result: a `dva.trainer.fit.FitResult`; features: the `dva.trainer.fit.Features` it was trained on."""
    from dva.trainer.evaluate import text_tower_for
    from dva.trainer.results.plots import plot_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    held = result.held
    config = {
        "task": result.settings.task,
        "settings": dataclasses.asdict(result.settings),
        "store": {"path": features.store_path, **features.provenance},
        "train_tracks": result.train_tracks,
        "val_tracks": held.tracks if held is not None else [],
        "held_out": result.held_name,
        "left_out": {"train": features.train.left_out, "val": features.val.left_out},
        "torch": torch.__version__,
    }
    plugin = temporal_plugin(result.settings.temporal)
    if plugin:
        config["temporal_plugin"] = plugin
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "metrics.json").write_text(json.dumps(finite(run_metrics(result, features)), indent=2))
    checkpoint = io.BytesIO()  # serialised here, written by Python's own I/O: a full disk is then an OSError that names the file
    torch.save(
        {
            "settings": dataclasses.asdict(result.settings),
            "state": result.state if result.model is None else trainable_state(result.model),
            "normaliser": result.normaliser.state(),
            "visual_dim": features.train.visual_dim,
            "audio_dim": features.train.audio_dim,
            "provenance": {**features.provenance, "text_tower": text_tower_for(result.settings, features.provenance)},
            **({"temporal_plugin": plugin} if plugin else {}),
        },
        checkpoint,
    )
    partial = out / (CHECKPOINT + ".partial")
    partial.write_bytes(checkpoint.getbuffer())
    partial.replace(out / CHECKPOINT)  # never half a checkpoint under its own name
    if held is not None:
        write_predictions(out / "val_predictions", result.settings.task, held, result.val_pred)
    plot_run(out, result.history, held if result.settings.task == "va" else None, result.val_pred)
    return out


def temporal_plugin(temporal: str) -> dict | None:
    """What a run records of its temporal model when an installed package provides it (`plugins.plugin_record`:
    name, module:Class, distribution, version); None for dva's own kinds."""
    from dva.trainer.plugins import plugin_record
    from dva.trainer.settings import TEMPORALS

    return None if temporal in TEMPORALS else plugin_record(temporal)


def write_predictions(out: Path, task: str, data, pred: np.ndarray) -> None:
    """Held-out predictions: VA's as ABAW per-track files under out; EXPR's or AU's probabilities as out.npz (tracks,
    offsets, probabilities [N, 8 or 12]; MTL's [N, 22]: valence, arousal, the 8 class and the 12 unit probabilities)."""
    from dva.trainer.results.submission import write_per_track

    if task == "va":
        write_per_track(out, data.tracks, data.offsets, pred)
    else:
        np.savez_compressed(out.with_suffix(".npz"), tracks=np.asarray(data.tracks), offsets=np.asarray(data.offsets), probabilities=pred)


def run_metrics(result, features) -> dict:
    """metrics.json of one run: every figure under the name of what it is, and a line saying so."""
    from dva.trainer.evaluate import evaluate_frames, smooth

    from dva.trainer.evaluate import FIGURE_NAMES

    held, name, task = result.held, result.held_name or "the held-out tracks", result.settings.task
    metrics: dict = {"task": task, "figure": FIGURE_NAMES[task], "train_splits": result.settings.train_splits, "held_out": result.held_name}
    if result.loss_terms is not None:  # what each loss term can train (fit.term_reach), and those that train nothing
        metrics["loss_terms"] = {name: {"parameters_reached": count, "trains": count > 0} for name, count in result.loss_terms.items()}
        metrics["untrained_terms"] = [name for name, count in result.loss_terms.items() if count == 0]
    if result.weights is not None and task == "mtl":
        metrics["loss_weights"] = {"kind": "EXPR's class weights (inverse frequency, mean 1), AU's positive weights (negatives / positives)",
                                   "values": dict(zip((*EXPR_CLASSES, *AU_NAMES), result.weights))}
    elif result.weights is not None:
        metrics["loss_weights"] = {"kind": "class weights (inverse frequency, mean 1)" if task == "expr" else "positive weights (negatives / positives)",
                                   "values": dict(zip(TASKS[task].columns, result.weights))}
    if task == "mtl":
        metrics["task_weights"] = task_weights_record(result)
    if held is None:
        last = result.history[-1]
        metrics["figures"] = {"final": "the last epoch (no selection); nothing was held out, so it has no score"}
        empty = {"ccc_v": None, "ccc_a": None, "p_va": None} if task == "va" else {FIGURE_NAMES[task]: None}
        empty = {"ccc_v": None, "ccc_a": None, "expr_f1": None, "au_f1": None, "p_mtl": None} if task == "mtl" else empty
        metrics["final"] = {"epoch": last["epoch"], "loss": last["loss"], **empty}
        metrics["smooth_seconds"] = None  # chose none: an ensemble takes the width its other runs chose
        metrics["smoothing"] = {"seconds": None, "selected_on": None, "note": "nothing held out to choose a width on; pass dva predict --smooth"}
    else:
        seconds = result.smoothing["seconds"]  # {"valence": s, "arousal": s}
        metrics["figures"] = {
            "best_val": f"the epoch kept, scored on {name}, which also selected it (optimistic)",
            "final": f"the last epoch, scored on {name} (not selected)",
            "best_val_smoothed": f"best_val after smoothing ({widths_text(seconds)}), {WIDTH_WORDS[task in ('va', 'mtl')]} the one that scored best on {name} (selected on it too)",
        }
        metrics["best_val"] = result.best
        metrics["final"] = result.final
        thresholds = result.smoothing.get("thresholds")
        metrics["best_val_smoothed"] = {"epoch": result.best["epoch"], **evaluate_frames(smooth(result.val_pred, held, seconds), held, thresholds), "smooth_seconds": seconds}
        metrics["smooth_seconds"] = seconds
        metrics["smoothing"] = result.smoothing
        if thresholds is not None:
            metrics["figures"]["best_val_smoothed"] += f"; AU at the per-unit thresholds chosen on {name} after smoothing (selected on it too)"
            metrics["thresholds"] = dict(zip(AU_NAMES, thresholds))
    metrics.update({
        "epochs": result.history, "per_track": result.per_track, "seconds": result.seconds,
        "val_tracks": len(held.tracks) if held is not None else 0, "val_left_out": features.val.left_out,
    })
    return metrics


def task_weights_record(result) -> dict:
    """MTL: the weights of its three losses, as given, and with uncertainty weighting the learned s = log sigma^2 of
    each and the factor exp(-s) it ended at."""
    settings = result.settings
    record = {"weighting": settings.task_weighting, "given": dict(zip(("va", "expr", "au"), settings.task_weight_triple))}
    state = trainable_state(result.model) if result.model is not None else (result.state or {})
    if state.get("task_log_vars") is not None:
        learned = [float(v) for v in state["task_log_vars"]]
        record["log_variance"] = dict(zip(("va", "expr", "au"), learned))
        record["factor"] = {task: float(np.exp(-s)) for task, s in zip(("va", "expr", "au"), learned)}
    return record


def write_folds(result, features, out: Path) -> Path:
    """A folds directory: fold-0 ... fold-{K-1} (each a run directory), plain/ (the plain fit, when there is
    one), folds.json (which tracks in which fold), oof_predictions/ and oof_selected_predictions/ (ABAW files) and
    metrics.json with the out-of-fold figures. result: a `dva.trainer.fit.FoldsResult`."""
    from dva.trainer.evaluate import choose_smoothing, evaluate_frames, smooth, smooth_choices
    from dva.trainer.folds import FOLDS_FILE
    from dva.trainer.loading.tracks import select_tracks, track_rows

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    k, pooled = result.settings.folds, result.pooled
    runs = [write_run(run, features, out / f"fold-{fold}") for fold, run in enumerate(result.runs)]
    if result.plain is not None:
        write_run(result.plain, features, out / "plain")
    folds = {
        "folds": k, "seed": result.settings.seed, "runs": [run.name for run in runs],
        "tracks": [[t for t, f in zip(pooled.tracks, result.fold_of) if f == fold] for fold in range(k)],
        "fold_of": dict(zip(pooled.tracks, result.fold_of)),
    }
    (out / FOLDS_FILE).write_text(json.dumps(folds, indent=2))
    write_predictions(out / "oof_predictions", result.settings.task, pooled, result.oof_pred)
    write_predictions(out / "oof_selected_predictions", result.settings.task, pooled, result.oof_selected)
    smoothing = {**choose_smoothing(result.oof_pred, pooled, smooth_choices(result.settings)), "selected_on": "the out-of-fold predictions"}
    seconds, thresholds = smoothing["seconds"], smoothing.get("thresholds")
    val = [i for i, track_attrs in enumerate(pooled.attrs) if track_attrs.get("split") == "val"]
    val_data = select_tracks(pooled, val)
    val_rows = track_rows(pooled.offsets, val, ordered=True)
    epochs = "/".join(map(str, result.oof_epochs))
    metrics = {
        "folds": k,
        "figures": {
            "oof": f"out-of-fold: every train+val frame predicted by the fold run that did not train on it, all {k} folds concatenated; "
                   f"each fold's epoch ({epochs}) chosen on the other folds' held-out figures, nothing selected on the frames it scores "
                   "(where a fold stopped early, patience on its own fold decided that)",
            "oof_selected": "out-of-fold, each fold's epoch selected on its own held-out fold, the frames it scores (optimistic; what each fold's best.pt predicts; what dva called oof before)",
            "oof_last": "out-of-fold from each fold's last epoch: nothing selected on the held-out folds",
            "oof_smoothed": f"oof after smoothing ({widths_text(seconds)}), {WIDTH_WORDS[result.settings.task in ('va', 'mtl')]} the one that scored best on the out-of-fold predictions (selected on them)",
            "oof_val": "the out-of-fold predictions (oof) of the val tracks alone, scored over val's frames",
            "plain_best_val": "a plain fit for comparison: trained on train, epoch selected on val and scored on val (optimistic)",
        },
        "oof": {**evaluate_frames(result.oof_pred, pooled), "folds": k, "epochs": result.oof_epochs},
        "oof_selected": {**evaluate_frames(result.oof_selected, pooled), "folds": k, "epochs": [run.best["epoch"] for run in result.runs]},
        "oof_last": {**evaluate_frames(result.oof_last, pooled), "folds": k},
        "oof_smoothed": {**evaluate_frames(smooth(result.oof_pred, pooled, seconds), pooled, thresholds), "folds": k, "smooth_seconds": seconds},
        "oof_val": {**evaluate_frames(result.oof_pred[val_rows], val_data), "folds": k},
        "plain_best_val": result.plain.best if result.plain is not None else None,
        "smooth_seconds": seconds,
        "smoothing": smoothing,
        "per_fold": [
            {"fold": fold, "run": runs[fold].name, "tracks": len(folds["tracks"][fold]), "frames": int(run.held.n_frames),
             "best_val": run.best, "final": run.final}
            for fold, run in enumerate(result.runs)
        ],
        "tracks": len(pooled.tracks), "frames": pooled.n_frames, "seconds": result.seconds, "left_out": pooled.left_out,
    }
    if result.plain is None:
        del metrics["figures"]["plain_best_val"], metrics["plain_best_val"]
    from dva.trainer.evaluate import FIGURE_NAMES

    metrics.update(task=result.settings.task, figure=FIGURE_NAMES[result.settings.task])
    if thresholds is not None:
        metrics["figures"]["oof_smoothed"] += "; AU at the per-unit thresholds chosen on the out-of-fold predictions after smoothing"
        metrics["thresholds"] = dict(zip(AU_NAMES, thresholds))
    (out / "metrics.json").write_text(json.dumps(finite(metrics), indent=2))
    return out


SUMMARY = ("task", "figure", "thresholds", "figures", "oof", "oof_smoothed", "oof_selected", "oof_last", "oof_val", "plain_best_val", "best_val", "best_val_smoothed", "final", "smooth_seconds", "folds")


def run_summary(out: Path) -> dict:
    """The figures of a run (or folds) directory's metrics.json, and "run": where it is."""
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    return {"run": str(out), **{k: metrics[k] for k in SUMMARY if k in metrics}}


def finite(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def read_checkpoint(run: Path) -> dict:
    """best.pt of a run directory, on the CPU. The one place dva reads a checkpoint: a run directory is data,
    so only tensors, numbers, strings, lists and dicts (all dva writes) are unpickled; anything else is
    refused (RunError) before it is built, so nothing in the file runs. A run whose temporal model came from a package
    that is not installed here is refused too (RunError), one of another version warned about (`plugins.check_recorded`)."""
    checkpoint_path = Path(run) / CHECKPOINT
    if not checkpoint_path.is_file():
        raise RunError(f"{run}: no {CHECKPOINT} here; pass a run directory written by `dva fit`")
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler met something it will not build
        asked = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand \S+", str(exc))
        what = f" (it asks for {asked.group(1) or asked.group(0)})" if asked else ""
        raise RunError(f"{checkpoint_path}: refused: it holds more than tensors, numbers and text{what}, so it was not written by dva "
                       "or was tampered with; nothing in it was run") from None
    from dva.trainer.plugins import check_recorded

    check_recorded(checkpoint.get("temporal_plugin"), str(run))  # a plugin's model that cannot be built here: refused before any work
    return checkpoint


def load_run(run: Path, device=None):
    """(settings, model, normaliser, provenance) from a run directory written by `dva fit`."""
    from dva.trainer.loading.windows import Normaliser
    from dva.trainer.evaluate import build_model, resolve_device
    from dva.trainer.settings import settings_from, upgrade_settings

    checkpoint_path = Path(run) / CHECKPOINT
    checkpoint = read_checkpoint(run)
    settings = settings_from(**{**upgrade_settings(checkpoint["settings"]), "device": device})
    device = resolve_device(device)
    provenance = run_provenance(checkpoint["provenance"])
    model = build_model(settings, provenance, checkpoint["visual_dim"], checkpoint["audio_dim"], device)
    load_state_strictly(model, checkpoint["state"], str(checkpoint_path))
    return settings, model, Normaliser.from_state(checkpoint["normaliser"]), provenance


def run_provenance(provenance: dict) -> dict:
    """A checkpoint's provenance in today's terms: a run trained on a dva 0.1 store names its two encoders,
    which `dva upgrade` turns into feature sets of the same names."""
    if "feature_sets" in provenance:
        return provenance
    from dva.pipeline.encoders.naming import format_1_set_names
    from dva.stores import format_1_sets

    names = format_1_set_names(provenance)
    visual = provenance.get("visual_encoder") or {}
    return {
        **provenance, "feature_sets": format_1_sets(provenance, names), "sets": {m: [names[m]] for m in names},
        "text_tower": {"model": visual.get("model"), "pretrained": visual.get("pretrained")},
    }


def run_dirs(path: Path) -> list[Path]:
    """The run directories a path stands for: itself (a run directory), or a folds directory's fold runs."""
    from dva.trainer.folds import FOLDS_FILE

    path = Path(path)
    if (path / FOLDS_FILE).is_file():
        return [path / name for name in json.loads((path / FOLDS_FILE).read_text())["runs"]]
    if (path / CHECKPOINT).is_file():
        return [path]
    raise RunError(f"{path}: no {CHECKPOINT} (a run directory) or {FOLDS_FILE} (a folds directory) here; pass a directory `dva fit` wrote")


def recorded_smoothing(path: Path) -> tuple[float, float] | None:
    """The (valence, arousal) smoothing widths (seconds) `dva fit` chose for a run or folds directory; None when it
    chose none (a final fit holds nothing out); one width for both from a dva that chose one for both, 0 from a
    dva that did not smooth."""
    from dva.trainer.evaluate import smooth_widths

    metrics = Path(path) / "metrics.json"
    recorded = json.loads(metrics.read_text()) if metrics.is_file() else {}
    if "smooth_seconds" not in recorded:
        return (0.0, 0.0)
    value = recorded["smooth_seconds"]
    if isinstance(value, dict) and "expression" in value:  # MTL: its four widths, as recorded
        return tuple(sorted(value.items()))
    return None if value is None else smooth_widths(value)


def widths_text(seconds) -> str:
    """'valence 0.2 s, arousal 0.4 s' of a per-dimension width (see `dva.trainer.evaluate.smooth_widths`); '0.2 s' of the
    one width of EXPR or AU (a number)."""
    from dva.trainer.evaluate import DIMENSIONS, smooth_widths

    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return f"{float(seconds):g} s"
    if isinstance(seconds, dict) and "expression" in seconds:  # MTL: VA's two, EXPR's and AU's
        return ", ".join(f"{name} {float(width):g} s" for name, width in seconds.items())
    return ", ".join(f"{d} {w:g} s" for d, w in zip(DIMENSIONS, smooth_widths(seconds)))


def check_compatible(checkpoints: dict[Path, dict]) -> dict:
    """RunError naming the difference unless every feature set the runs (run directory -> its checkpoint) share
    was made the same way (its provenance); returns {"feature_sets": every set any run reads}. Runs on
    different sets of one store may form an ensemble, or be predicted together (runs of several tasks)."""
    from dva.stores import set_differences

    sets: dict[str, dict] = {}
    first_of: dict[str, Path] = {}
    for run, checkpoint in checkpoints.items():
        for name, info in run_provenance(checkpoint["provenance"])["feature_sets"].items():
            if name not in sets:
                sets[name], first_of[name] = info, run
                continue
            differences = set_differences(sets[name], info)
            if differences:
                shown = at_most(differences, 3)
                raise RunError(f"{first_of[name]} and {run} were trained on different features: feature set {name!r} differs ({shown}); runs predicted together (an ensemble, the tasks of one CSV) need one kind of store")
    return {"feature_sets": sets}
