"""What the store buys: the cost of one ablation variant (a `dva fit` on cached features) against
the cost of re-encoding the same frames, measured side by side in one run.

    python benchmarks/ablate.py [--clip-model ViT-B-32] [--tracks 8] [--seconds 10] [--epochs 10] [--quick]

Random ViT-B-32 weights are fine for timing; the AST is the tiny preset unless --ast-model is given.
--quick: tiny CLIP, 5 tracks x 2 s, one epoch; seconds, every code path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

QUICK = dict(clip_model="dva-tiny-clip", tracks=5, seconds=2.0, epochs=1)


def main() -> None:
    from dva.data.synth import synth
    from dva.pipeline.encoders import PRESETS
    from dva.pipeline.extract import ExtractSettings, run_extract
    from dva.trainer.fit import load_features, train
    from dva.trainer.settings import FitSettings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--ast-model", default=PRESETS["tiny"]["ast_model"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    args = parser.parse_args()
    if args.quick:  # quick sizes become the defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data, store = Path(tmp) / "data", Path(tmp) / "store"
        synth(data, tracks=args.tracks, seconds=args.seconds, seed=0, progress=False)
        encode_s, frames = 0.0, 0
        for split in ("train", "val"):
            report = run_extract(ExtractSettings(data=str(data), split=split, out=str(store), clip_model=args.clip_model, clip_pretrained=None,
                                                 ast_model=args.ast_model, audio_mode="tokens", device=args.device, progress=False))
            encode_s += report.seconds
            frames += report.frames
        start = time.perf_counter()
        features = load_features(str(store))
        load_s = time.perf_counter() - start
        settings = FitSettings(features=str(store), epochs=args.epochs, patience=args.epochs, device=args.device)
        result = train(settings, features, progress=False)
        variant_s = result.seconds

    print(f"device {args.device}; {frames} train+val frames; visual {args.clip_model} (random weights), audio {args.ast_model}")
    print("\n| step | seconds | vs one variant |")
    print("| --- | ---: | ---: |")
    print(f"| re-encode train+val (dva extract) | {encode_s:.1f} | {encode_s / variant_s:.1f}x |")
    print(f"| load the store once (shared by every variant) | {load_s:.2f} | {load_s / variant_s:.2f}x |")
    print(f"| one variant: full model, {args.epochs} epochs (dva fit / ablate) | {variant_s:.1f} | 1.0x |")


if __name__ == "__main__":
    main()
