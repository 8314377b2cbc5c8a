"""Extraction throughput, side by side in one run on one synthetic dataset:

1. the whole `dva extract` pipeline (read crops + audio, encode, write the store), frames/s;
2. the encoders alone on pre-decoded tensors (the bound the pipeline can approach);
3. a naive per-frame loop: PIL + open_clip's own transform, batch of one.

    python benchmarks/extract.py [--clip-model ViT-B-32] [--device cpu] [--tracks 5] [--seconds 8] [--quick]

Random weights are fine for timing (`--clip-pretrained none`); the AST is the tiny preset in
tokens mode unless --ast-model says otherwise. Also prints AST window vs tokens cost (AST-base's
config). --quick: tiny CLIP and AST, 5 tracks x 2 s, one repeat; seconds, every code path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

QUICK = dict(clip_model="dva-tiny-clip", tracks=5, seconds=2.0, repeats=1, naive_frames=8, audio_seconds=1.0)


def main() -> None:
    from dva.data.aff_wild2 import scan
    from dva.data.synth import synth
    from dva.pipeline.encoders import PRESETS, build_audio, build_visual
    from dva.pipeline.encoders.ast import TINY_AST, load_ast
    from dva.pipeline.extract import ExtractSettings, read_crop, plan_track, read_audio, run_extract

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--clip-pretrained", default="none")
    parser.add_argument("--ast-model", default=PRESETS["tiny"]["ast_model"])
    parser.add_argument("--audio-mode", default="tokens")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tracks", type=int, default=5, help="synthetic tracks (at least 5; 4 of them in train)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3, help="pipeline/bound pairs; the medians are kept")
    parser.add_argument("--naive-frames", type=int, default=64)
    parser.add_argument("--audio-seconds", type=float, default=5.0, help="audio for the AST-base window vs tokens comparison")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    args = parser.parse_args()
    if args.quick:  # quick sizes become the defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    pretrained = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synth(data, tracks=args.tracks, seconds=args.seconds, seed=0, progress=False)
        tracks = scan(data, split="train").tracks
        visual = build_visual(args.clip_model, pretrained, args.device)
        audio = build_audio(args.ast_model, args.device, args.audio_mode, 1.0, 0.1)
        print(f"device {args.device}, visual {args.clip_model} ({visual.image_size}px), audio {args.ast_model} ({args.audio_mode}), "
              f"{len(tracks)} train tracks, torch threads {torch.get_num_threads()}")

        # 2. the bound: encoders alone on everything pre-decoded in memory
        batches, waves, frames = [], [], 0
        for track in tracks:
            plan = plan_track(track, data)
            rows = [r for r in range(min(plan.rows, track.n_video_frames)) if (data / track.frames_dir / f"{r + 1:05d}.jpg").exists()]
            images = [read_crop(data / track.frames_dir / f"{r + 1:05d}.jpg") for r in rows]
            batches += [torch.stack(images[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
            waves.append(read_audio(track, data).wave)
            frames += plan.rows

        def bound() -> float:
            sync()
            start = time.perf_counter()
            with torch.inference_mode():
                for batch in batches:
                    visual.encode(visual.preprocess(batch))
                for wave in waves:
                    audio.encode_waveform(wave, batch_size=args.batch_size)
            sync()
            return time.perf_counter() - start

        # 1. the pipeline, into a fresh store each time
        def pipeline(i: int) -> float:
            settings = ExtractSettings(data=str(data), split="train", out=str(Path(tmp) / f"store{i}"), clip_model=args.clip_model, clip_pretrained=pretrained,
                                       ast_model=args.ast_model, audio_mode=args.audio_mode, batch_size=args.batch_size, device=args.device, progress=False)
            report = run_extract(settings)
            assert not report.failed, report.failed
            return report.seconds

        bound()  # warm-up (allocations, kernels)
        pairs = [(pipeline(i), bound()) for i in range(args.repeats)]  # alternated: machine noise hits both alike
        pipe_s, bound_s = (float(np.median(c)) for c in zip(*pairs))

        # 3. naive: PIL + open_clip's transform, one frame at a time
        import open_clip
        from PIL import Image

        transform = open_clip.image_transform(visual.image_size, is_train=False, mean=visual.provenance()["mean"], std=visual.provenance()["std"])
        crops = sorted((data / tracks[0].frames_dir).glob("*.jpg"))[: args.naive_frames]
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            for crop in crops:
                visual.encode(transform(Image.open(crop).convert("RGB"))[None].to(args.device))
        sync()
        naive_fps = len(crops) / (time.perf_counter() - start)

        # AST window vs tokens on the same sound, with a full-size AST (AST-base config, random weights,
        # loaded from a local directory through the real loading path); --quick uses the tiny AST
        from transformers import ASTConfig, ASTModel

        base_dir = Path(tmp) / "ast-base"
        (load_ast(TINY_AST) if args.quick else ASTModel(ASTConfig())).save_pretrained(base_dir)
        ast_name = "tiny AST" if args.quick else "AST-base"
        clip_seconds = args.audio_seconds
        wave = np.concatenate(waves)[: int(clip_seconds * 16000)]
        costs = {}
        for mode in ("window", "tokens"):
            encoder = build_audio(str(base_dir), args.device, mode, 1.0, 0.1)
            sync()
            start = time.perf_counter()
            encoder.encode_waveform(wave, batch_size=16)
            sync()
            costs[mode] = time.perf_counter() - start

    print(f"\n| path | frames/s | vs encoder-alone bound |")
    print(f"| --- | ---: | ---: |")
    print(f"| dva extract pipeline (read + encode + write) | {frames / pipe_s:,.1f} | {bound_s / pipe_s:.2f} |")
    print(f"| encoders alone on pre-decoded tensors (bound) | {frames / bound_s:,.1f} | 1.00 |")
    print(f"| naive per-frame loop (PIL transform, batch of 1, visual only) | {naive_fps:,.1f} | {naive_fps / (frames / bound_s):.2f} |")
    print(f"\n{ast_name} on {clip_seconds:.0f} s of audio: window mode (1 s windows every 0.1 s) {costs['window']:.2f} s, "
          f"tokens mode {costs['tokens']:.2f} s -> tokens is {costs['window'] / costs['tokens']:.0f}x cheaper")


if __name__ == "__main__":
    main()
