"""Opening a store as it grows: `dva info` (a subprocess, as a user runs it) and fit's load of
train + val (`load_features`, in-process), on one store grown to 100, 300 and 600 small tracks.

    python benchmarks/store_open.py [--sizes 100 300 600] [--frames 50] [--repeats 3] [--quick]

Tracks are written with the store API (50 frames, 80 % train, 20 % val, CLIP/AST-sized features).
What matters is the cost that grows with the store: the ms per extra track between the sizes. Opening
a store should cost the same per track whatever the number of tracks (DESIGN.md): goal at 600 tracks,
info < 10 ms and load < 50 ms per extra track. --quick: 10, 20, 40 tracks, one repeat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dva
from dva.stores import open_store
from dva.trainer.fit import load_features

QUICK = dict(sizes=[10, 20, 40], repeats=1)
GOAL_MS = {"info": 10, "load": 50}


def track_arrays(frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One track's arrays in the shapes `dva extract` writes (ViT-B-32 visual, AST audio at ~10 Hz)."""
    audio_rows = frames * 10 // 25
    labels = rng.uniform(-1, 1, (frames, 2))
    labels[:3] = np.nan  # a few invalid frames, as in Aff-Wild2
    return {
        "visual": rng.normal(size=(frames, 512)), "visual_mask": np.ones(frames, bool), "frame_time": np.arange(frames) / 25,
        "audio": rng.normal(size=(audio_rows, 768)), "audio_time": np.arange(audio_rows) / 10, "labels": labels,
    }


def grow_store(path: Path, tracks: int, frames: int, rng: np.random.Generator) -> None:
    """Add tracks to the store until it holds `tracks`; every fifth track goes to val (80/20 at every size).
    Each track has one visual and one audio feature set, as one `dva extract` writes them."""
    with open_store(path, "a") as store:
        if not store.feature_sets():  # a new store (its root attrs already name its checksums)
            store.set_attrs({"dva_version": dva.__version__})
            store.add_feature_set("visual", {"modality": "visual", "dim": 512, "encoder": {"family": "benchmark"}, "preprocessing": {}})
            store.add_feature_set("audio", {"modality": "audio", "dim": 768, "encoder": {"family": "benchmark"}, "preprocessing": {}})
            for split in ("train", "val"):
                store.ensure_split(split)
        have = sum(len(store.tracks(split)) for split in ("train", "val"))
        for i in range(have, tracks):
            attrs = {"video": f"videos/batch1/track_{i:04d}.mp4", "subject": None, "fps": 25.0, "n_frames": frames, "has_audio": True}
            split, track, arrays = "val" if i % 5 == 4 else "train", f"track_{i:04d}", track_arrays(frames, rng)
            store.create_track(split, track, {"frame_time": arrays["frame_time"], "labels": arrays["labels"]}, attrs)
            store.write_set(split, track, "visual", "visual", {"data": arrays["visual"], "mask": arrays["visual_mask"]})
            store.write_set(split, track, "audio", "audio", {"data": arrays["audio"], "time": arrays["audio_time"]})


def time_info(path: Path) -> float:
    """Seconds for `dva info STORE`, run with the same dva as this script (Python's start-up included)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(dva.__file__).parents[1]), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dva.cli", "info", str(path)], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"dva info failed: {done.stderr}")
    return seconds


def time_load(path: Path) -> float:
    start = time.perf_counter()
    load_features(str(path))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 600], help="store sizes in tracks, growing")
    parser.add_argument("--frames", type=int, default=50, help="frames per track")
    parser.add_argument("--repeats", type=int, default=3, help="info/load pairs per size; the medians are kept")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    args = parser.parse_args()
    if args.quick:  # quick sizes become the defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    sizes = sorted(args.sizes)
    rng = np.random.default_rng(0)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        for tracks in sizes:
            start = time.perf_counter()
            grow_store(store, tracks, args.frames, rng)
            write_s = time.perf_counter() - start
            if tracks == sizes[0]:
                time_load(store)  # warm-up: imports (the files just written are in the OS cache already)
            pairs = [(time_info(store), time_load(store)) for _ in range(args.repeats)]  # alternated: noise hits both alike
            info_s, load_s = (float(np.median(column)) for column in zip(*pairs))
            rows.append((tracks, info_s, load_s))
            print(f"{tracks} tracks: grown in {write_s:.1f} s; info {info_s:.2f} s, load {load_s:.2f} s (medians of {args.repeats})", file=sys.stderr)

    print(f"\n{args.frames} frames per track, 80 % train / 20 % val, dva {dva.__version__}, medians of {args.repeats}")
    print("\n| tracks | dva info s | load (train + val) s |")
    print("| ---: | ---: | ---: |")
    for tracks, info_s, load_s in rows:
        print(f"| {tracks} | {info_s:.2f} | {load_s:.2f} |")

    def per_track_ms(a, b, column):
        return (b[column] - a[column]) / (b[0] - a[0]) * 1000

    steps = list(zip(rows, rows[1:])) + ([(rows[0], rows[-1])] if len(rows) > 2 else [])
    print("\n| ms per extra track | dva info | load |")
    print("| --- | ---: | ---: |")
    for a, b in steps:
        print(f"| {a[0]} -> {b[0]} tracks | {per_track_ms(a, b, 1):.1f} | {per_track_ms(a, b, 2):.1f} |")
    print(f"\ngoal at 600 tracks: info < {GOAL_MS['info']} ms, load < {GOAL_MS['load']} ms per extra track")


if __name__ == "__main__":
    main()
