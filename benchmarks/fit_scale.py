"""`dva fit` at the release's scale: a store shaped like Aff-Wild2's VA train+val (432 tracks, 2.16M frames at
30 fps, a 512-d visual set per frame and a 768-d audio set at 10 Hz, float16), and one epoch of `dva fit`
on it and on 1/16 of it, each in its own process, side by side in one run:

- window-frames/s of the training pass at each size (their ratio: the rate held at scale);
- evaluation's share of the epoch;
- peak resident memory of the fit process against the chosen sets' bytes.

    python benchmarks/fit_scale.py [--frames 2160000] [--keep DIR] [--quick]

--quick: 1/400 of the size, every code path, seconds. The store is written to a temporary folder (or --keep DIR,
reused when it is there: writing 3.3 GB takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RELEASE = dict(frames=2_160_000, tracks=432, val_tracks=76, visual_dim=512, audio_dim=768, fps=30.0, audio_hz=10.0)
VISUAL, AUDIO = "clip-bench", "ast-bench"


def write_store(path: Path, frames: int, tracks: int, val_tracks: int, visual_dim: int, audio_dim: int, fps: float, audio_hz: float, seed: int = 0) -> int:
    """A format-2 store of random features in the release's shapes (fit's speed and memory do not depend on the
    values; labels are smooth so that the epoch has valid windows). Returns the sets' bytes (data, mask, time)."""
    from dva import __version__
    from dva.stores import open_store

    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(0.4 * frames / tracks), int(1.6 * frames / tracks), tracks)
    lengths = (lengths * frames / lengths.sum()).astype(int)
    lengths[-1] += frames - lengths.sum()
    store = open_store(path, "a")
    info = {"preprocessing": {"rate": "benchmark"}, "encoder": {"family": "benchmark"}, "dva_version": __version__}
    store.add_feature_set(VISUAL, {"modality": "visual", "dim": visual_dim, **info})
    store.add_feature_set(AUDIO, {"modality": "audio", "dim": audio_dim, **info})
    total = 0
    for i, length in enumerate(lengths):
        split = "val" if i < val_tracks else "train"
        frame_time = (np.arange(length) / fps).astype(np.float32)
        steps = int(length / fps * audio_hz)
        va = np.stack([np.sin(frame_time / (3 + i % 7)), np.cos(frame_time / (5 + i % 3))], 1).astype(np.float32) * 0.8
        store.create_track(split, f"track{i:03d}", {"frame_time": frame_time, "labels": va}, {"video": f"track{i:03d}.mp4", "fps": fps})
        visual = {"data": rng.standard_normal((length, visual_dim), dtype=np.float32).astype(np.float16), "mask": np.ones(length, bool)}
        audio = {"data": rng.standard_normal((steps, audio_dim), dtype=np.float32).astype(np.float16), "time": (0.5 + np.arange(steps) / audio_hz).astype(np.float32)}
        store.write_set(split, f"track{i:03d}", VISUAL, "visual", visual)
        store.write_set(split, f"track{i:03d}", AUDIO, "audio", audio)
        total += sum(a.nbytes for a in (*visual.values(), *audio.values()))
    store.close()
    return total


def child(store: str, out: str, hidden: int) -> None:
    """One `dva fit --epochs 1 --prompt none` as the CLI runs it, with its phases timed; prints JSON."""
    import torch

    from dva.trainer.loading.windows import window_index
    from dva.trainer.fit import load_features, train
    from dva.trainer.results.run_dir import write_run
    from dva.trainer.settings import FitSettings

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    settings = FitSettings(features=store, out=out, epochs=1, prompt="none", hidden=hidden)
    started = time.perf_counter()
    features = load_features(store)
    loaded = time.perf_counter()
    result = train(settings, features, progress=False)
    trained = time.perf_counter()
    write_run(result, features, Path(out))
    windows = window_index(features.train.offsets, settings.seq_len, settings.stride)[0].shape[0]
    row = result.history[0]
    print(json.dumps({"load": loaded - started, "epoch": row["seconds"], "eval": row.get("eval_seconds"), "after": trained - loaded - row["seconds"],
                      "write": time.perf_counter() - trained, "window_frames": windows * settings.seq_len, "frames": features.pool.n_frames}))


def run_child(store: Path, out: Path, hidden: int) -> dict:
    """The child's figures, and its peak resident memory (os.wait4: this process's own child only)."""
    process = subprocess.Popen([sys.executable, __file__, "--child", str(store), "--out", str(out), "--hidden", str(hidden)], stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"the fit at {store} failed (status {status})")
    return {**json.loads(output.strip().splitlines()[-1]), "peak_bytes": usage.ru_maxrss * 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=RELEASE["frames"])
    parser.add_argument("--hidden", type=int, default=None, help="GRU and fusion width (default: dva fit's)")
    parser.add_argument("--keep", type=Path, default=None, help="write the stores here and reuse them")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.out, args.hidden)
    from dva.trainer.settings import FitSettings

    hidden = args.hidden or (16 if args.quick else FitSettings.hidden)
    frames = 5400 if args.quick else args.frames
    scale = frames / RELEASE["frames"]
    tracks, val = max(16, round(RELEASE["tracks"] * scale)), max(4, round(RELEASE["val_tracks"] * scale))
    root = args.keep or Path(tempfile.mkdtemp(prefix="dva-fit-scale-"))
    rows = []
    for name, divide in (("1/16", 16), ("full", 1)):
        store = root / f"store-{frames // divide}"
        shape = {**RELEASE, "frames": frames // divide, "tracks": max(4, tracks // divide), "val_tracks": max(1, val // divide)}
        size_file = store / "bench-bytes.json"
        if not size_file.is_file():
            started = time.perf_counter()
            size = write_store(store, **shape)
            size_file.write_text(json.dumps(size))
            print(f"wrote {store} ({shape['frames']:,} frames, {shape['tracks']} tracks) in {time.perf_counter() - started:.0f} s", flush=True)
        figures = run_child(store, root / f"run-{name.replace('/', '-')}", hidden)
        rows.append((name, json.loads(size_file.read_text()), figures))
    print(f"\ndva fit --epochs 1 --prompt none, hidden {hidden}, {os.cpu_count()} cores\n")
    print("| size | frames | load s | epoch s | evaluation share | window-frames/s | peak RSS | sets' bytes | peak / sets |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size, f in rows:
        train_seconds = f["epoch"] - (f["eval"] or 0)
        print(f"| {name} | {f['frames']:,} | {f['load']:.1f} | {f['epoch']:.1f} | {(f['eval'] or 0) / f['epoch']:.0%} | {f['window_frames'] / train_seconds:,.0f} | "
              f"{f['peak_bytes'] / 1e9:.2f} GB | {size / 1e9:.2f} GB | {f['peak_bytes'] / size:.2f}x |")
    small, full = rows[0][2], rows[1][2]
    rate = lambda f: f["window_frames"] / (f["epoch"] - (f["eval"] or 0))  # noqa: E731
    print(f"\nfull-size training rate / 1/16-size rate: {rate(full) / rate(small):.2f}")


if __name__ == "__main__":
    main()
