"""Encoder families side by side: seconds of compute per second of video, random weights, one run.

Visual: 30 frames of 112x112 uint8 crops per second of video, preprocess + encode in batches;
audio: 16 kHz mono sound, encode_waveform. Real-size architectures with random weights (nothing
to download), each saved to a temporary directory and loaded through `build_visual` /
`build_audio`, the path `dva extract` takes:
- clip: open_clip ViT-B-32 (224 px), random init;
- hf: ViTConfig() (ViT-base, patch 16, 224 px: google/vit-base-patch16-224-in21k's shape), pooler_output;
- ast: ASTConfig() (AST-base), window mode, 1 s native windows every 0.1 s (the default);
- wav2vec2: Wav2Vec2Config() (wav2vec2-base), mean of all hidden states, 1 s windows every 0.1 s.
Then every visual + audio pair, as a ratio to CLIP + AST (the default pair).

    python benchmarks/encoders.py [--seconds 4] [--repeats 2] [--batch-size 64] [--device cpu] [--quick]

The encoders alternate within each repeat (machine noise hits each alike) and medians are kept.
wav2vec2 runs tracks longer than 30 s in chunks with 5 s of context each side, so on long
tracks it costs up to 40/30 of what a few seconds cost here. --quick: the tiny presets, 1 s of
media, one repeat; seconds, every code path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

QUICK = dict(seconds=1.0, repeats=1)
FPS, CROP, RATE = 30, 112, 16000


def save_real_size(folder: Path) -> dict:
    """The real-size transformers architectures with random weights (seed 0), saved where build_* load them.
    AST initialises its positions and CLS/distillation tokens to zeros; they get random values as in
    benchmarks/extract.py, so that the positions a native window takes make a difference."""
    from transformers import ASTConfig, ASTModel, ViTConfig, ViTImageProcessor, ViTModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from dva.pipeline.encoders.base import seeded_init

    with seeded_init():
        ViTModel(ViTConfig()).save_pretrained(folder / "vit-base")
        ViTImageProcessor().save_pretrained(folder / "vit-base")  # 224 x 224, bilinear, mean and std 0.5
        ast = ASTModel(ASTConfig())
        with torch.no_grad():
            for parameter in (ast.embeddings.position_embeddings, ast.embeddings.cls_token, ast.embeddings.distillation_token):
                torch.nn.init.trunc_normal_(parameter, std=0.02)
        ast.save_pretrained(folder / "ast-base")
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder / "wav2vec2-base")
        Wav2Vec2FeatureExtractor().save_pretrained(folder / "wav2vec2-base")  # do_normalize, as facebook/wav2vec2-base's
    return {name: str(folder / name) for name in ("vit-base", "ast-base", "wav2vec2-base")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of video (30 fps crops) and of sound")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per encoder, alternated; medians kept")
    parser.add_argument("--batch-size", type=int, default=64, help="frames per visual batch; encode_waveform's batch_size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny presets, 1 s of media, one repeat")
    args = parser.parse_args()
    if args.quick:  # quick sizes become the defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(args, Path(tmp))


def build(args, tmp: Path) -> tuple[dict, dict]:
    """(visual encoders, audio encoders) by label."""
    from dva.pipeline.encoders import PRESETS, build_audio, build_visual

    if args.quick:
        tiny = PRESETS["tiny"]
        models = {"clip": (tiny["clip_model"], tiny["clip_pretrained"]), "vit": tiny["hf_model"], "ast": tiny["ast_model"], "wav2vec2": tiny["wav2vec2_model"]}
        labels = {"clip": "clip: tiny CLIP", "hf": "hf: tiny ViT", "ast": "ast: tiny AST, window", "wav2vec2": "wav2vec2: tiny wav2vec2, layer mean"}
    else:
        saved = save_real_size(tmp)
        models = {"clip": ("ViT-B-32", None), "vit": saved["vit-base"], "ast": saved["ast-base"], "wav2vec2": saved["wav2vec2-base"]}
        labels = {
            "clip": "clip: CLIP ViT-B-32 (224 px)", "hf": "hf: ViT-base/16 (224 px, pooler)",
            "ast": "ast: AST-base, window (1 s native windows every 0.1 s)", "wav2vec2": "wav2vec2: wav2vec2-base, layer mean (1 s every 0.1 s)",
        }
    visual = {labels["clip"]: build_visual("clip", *models["clip"], device=args.device), labels["hf"]: build_visual("hf", models["vit"], device=args.device)}
    audio = {
        labels["ast"]: build_audio("ast", models["ast"], args.device, mode="window", window=1.0, hop=0.1),
        labels["wav2vec2"]: build_audio("wav2vec2", models["wav2vec2"], args.device, window=1.0, hop=0.1, layer="mean"),
    }
    return visual, audio


def measure(args, tmp: Path) -> None:
    sync = (lambda: torch.cuda.synchronize(args.device)) if args.device.startswith("cuda") else (lambda: None)
    visual, audio = build(args, tmp)
    generator = torch.Generator().manual_seed(0)
    frames = int(round(args.seconds * FPS))
    # smooth random faces-sized crops: the cost does not depend on the pictures, the preprocessing's resize does on their size
    crops = torch.nn.functional.interpolate(torch.randint(0, 256, (frames, 3, 14, 14), generator=generator).float(), size=(CROP, CROP), mode="bilinear")
    batches = [b.round().to(torch.uint8) for b in crops.split(args.batch_size)]
    t = np.arange(int(args.seconds * RATE)) / RATE
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) + np.random.default_rng(0).normal(0, 0.05, t.size)).astype(np.float32)

    def run_visual(encoder) -> None:
        for batch in batches:
            encoder.encode(encoder.preprocess(batch))

    def run_audio(encoder) -> None:
        encoder.encode_waveform(wave, batch_size=args.batch_size)

    jobs = {**{label: (run_visual, e) for label, e in visual.items()}, **{label: (run_audio, e) for label, e in audio.items()}}
    with torch.inference_mode():
        for encoder in visual.values():  # warm-up: allocations, kernels
            encoder.encode(encoder.preprocess(batches[0][:4]))
        for encoder in audio.values():
            encoder.encode_waveform(wave[:RATE], batch_size=args.batch_size)
        timings: dict[str, list[float]] = {label: [] for label in jobs}
        for _ in range(args.repeats):
            for label, (work, encoder) in jobs.items():
                sync()
                start = time.perf_counter()
                work(encoder)
                sync()
                timings[label].append(time.perf_counter() - start)
    cost = {label: float(np.median(t)) / args.seconds for label, t in timings.items()}  # seconds per second of video
    (clip, vit), (ast, wav2vec2) = list(visual), list(audio)  # labels, in build's order
    baseline = cost[clip] + cost[ast]
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.seconds:g} s of video ({frames} frames of {CROP}x{CROP} at {FPS} fps) "
          f"and of 16 kHz sound, batch {args.batch_size}, {args.repeats} repeat(s), medians\n")
    print("| encoders | s per s of video | vs CLIP + AST |")
    print("| --- | ---: | ---: |")
    for label in jobs:
        print(f"| {label} | {cost[label]:.3f} | {cost[label] / baseline:.2f} |")
    for v in (clip, vit):
        for a in (ast, wav2vec2):
            pair = cost[v] + cost[a]
            print(f"| **{v.split(':')[0]} + {a.split(':')[0]}** | {pair:.3f} | {pair / baseline:.2f} |")
    dims = ", ".join(f"{label.split(':')[0]} {encoder.dim}" for label, (_, encoder) in jobs.items())
    print(f"\nfeature dims: {dims}")


if __name__ == "__main__":
    main()
