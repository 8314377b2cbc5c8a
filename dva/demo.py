"""`dva demo`: synth -> extract (offline tiny encoders) -> fit -> predict -> ablate, on this machine.

VA is the full method; EXPR and AU then train on the same store (the one extraction holds every challenge's tracks)
and predict each challenge's submission, checked against its sample file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

DEMO_TRACKS = 10
DEMO_SECONDS = 20.0
DEMO_AUDIO_SETS = ("ast-dva-tiny-ast-tokens", "dva-tiny-wav2vec2-layermean")  # what the tiny preset's AST (tokens) and wav2vec2 are called
# EXPR and AU: fewer epochs than VA keep the demo's time (their F1 is within ~0.02 of 15 epochs'); AU has no prompt head
DEMO_TASKS = {"expr": dict(epochs=10, patience=10), "au": dict(epochs=10, patience=10, prompt="none")}


def demo(out: Path, progress: bool = True, tracks: int = DEMO_TRACKS, seconds: float = DEMO_SECONDS, epochs: int = 15) -> dict:
    """Run the whole method end to end under out/; rerunning reuses what is already there."""
    from dva.data.synth import synth
    from dva.pipeline.extract import run_extract
    from dva.pipeline.extract_settings import extract_settings_from
    from dva.trainer.ablate import ablate
    from dva.trainer.fit import fit
    from dva.trainer.results.predict import predict
    from dva.trainer.settings import FitSettings

    out = Path(out)
    data, store = out / "data", out / "stores" / "tiny"
    if not data.is_dir():
        synth(data, tracks=tracks, seconds=seconds, seed=0, progress=progress)
    common = dict(data=str(data), out=str(store), batch_size=64, progress=progress)
    # two extractions into one store: CLIP + AST, then a second audio set (wav2vec2 family) that the ablation compares
    runs = [dict(audio_mode="tokens"), dict(only="audio", audio_encoder="wav2vec2")]
    for options in runs:
        for split in ("train", "val", "test"):
            report = run_extract(extract_settings_from("tiny", split=split, **common, **options))
            if report.failed:
                raise RuntimeError(f"demo extraction failed for {report.failed}")  # synthetic data must extract cleanly: a bug
    ast_set, wav2vec2_set = DEMO_AUDIO_SETS
    base = FitSettings(features=str(store), out=str(out / "runs" / "full"), epochs=epochs, patience=epochs, hidden=64, seq_len=64, stride=16, audio_features=ast_set)
    report = fit(base, progress=progress)
    run_dir = Path(report["run"])
    predictions = out / "predictions" / "submission.txt"
    checked = predict(run_dir, str(store), "test", predictions)["check"]
    tasks = {task: _task_fit(dataclasses.replace(base, out=str(out / "runs" / task), task=task, **options), out / "predictions" / f"{task}.txt", progress)
             for task, options in DEMO_TASKS.items()}
    summary = ablate(
        dataclasses.replace(base, out=str(out / "ablation")),
        {"modalities": ["visual", "audio", "visual,audio"], "prompt": ["none", "learnable"]},
        seeds=1, out=out / "ablation", progress=progress,
    )
    feature_sets = ablate(
        dataclasses.replace(base, out=str(out / "ablation-features"), prompt="none"),
        {"audio_features": [ast_set, wav2vec2_set]}, seeds=1, out=out / "ablation-features", progress=progress,
    )
    return {
        **{k: report["best_val"][k] for k in ("ccc_v", "ccc_a", "p_va", "epoch")},
        "run": str(run_dir),
        "plots": [str(run_dir / name) for name in ("curves.png", "traces.png", "va_plane.png")] + [str(out / "ablation" / "ablation.png")],
        "predictions": str(predictions),
        "check": checked,
        "ablation": summary,
        "feature_sets": feature_sets,
        "tasks": tasks,
    }


def _task_fit(settings, predictions: Path, progress: bool) -> dict:
    """Fit one challenge (EXPR or AU) on the demo's store and write its test submission; its figure at the epoch kept
    (best_val), where the run and the submission are, the submission's rows and its check against the sample file."""
    from dva.trainer.evaluate import FIGURE_NAMES
    from dva.trainer.fit import fit
    from dva.trainer.results.predict import predict

    report = fit(settings, progress=progress)
    done = predict(Path(report["run"]), settings.features, "test", predictions)
    figure = FIGURE_NAMES[settings.task]
    return {figure: report["best_val"][figure], "epoch": report["best_val"]["epoch"], "run": report["run"],
            "predictions": str(predictions), "rows": done["rows"], "check": done["check"]}
