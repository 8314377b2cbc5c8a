"""Peak memory of decoding many tracks' sound: decord's AudioReader (old) vs `media.read_audio` (new).

decord's AudioReader keeps its decoded buffer alive after every open, so a process that
reads many long tracks grows by about one track's audio per track. Each figure is the
peak RSS (ru_maxrss) of a fresh child process that decodes the sound of `--few` and then
`--many` tracks of `--seconds` each, one after the other; the growth from few to many is
what a long `dva extract` run would accumulate. A whole `run_extract` (tiny preset, frames
from the videos, AST in tokens mode to keep it fast) is measured the same way.

    python benchmarks/audio_memory.py            # 4 vs 20 tracks of 300 s (a few minutes)
    python benchmarks/audio_memory.py --quick    # 2 vs 4 tracks of 5 s (~30 s)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure the dva next to this script, in this process and the children
DECODERS = {"old": "decord AudioReader (old)", "new": "media.read_audio (new)", "extract": "run_extract, tiny preset (new)"}


def write_dataset(folder: Path, tracks: int, seconds: float, rate: int, source: Path | None) -> Path:
    """An Aff-Wild2-layout folder of `tracks` copies of one long video (32x32 frames at 1 fps, AAC sound); returns the video."""
    import numpy as np

    from dva.data.synth import write_video

    videos = folder / "videos" / "batch1"
    labels = folder / "Annotations" / "VA_Estimation_Challenge" / "Train_Set"
    videos.mkdir(parents=True)
    labels.mkdir(parents=True)
    frames = int(seconds)  # 1 fps: the pictures are not what is measured
    if source is None:  # written once, then hard-linked: the decoders cannot tell
        t = np.arange(int(seconds * rate)) / rate
        wave = (0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t))).astype(np.float32)
        source = write_video(folder / "source.mp4", np.zeros((frames, 32, 32, 3), np.uint8), 1, wave, rate)
    annotation = "valence,arousal\n" + "0.1,0.2\n" * frames
    for i in range(tracks):
        os.link(source, videos / f"track_{i:03d}.mp4")
        (labels / f"track_{i:03d}.txt").write_text(annotation)
    return source


def write_both(tmp: str, few: int, many: int, seconds: float, rate: int) -> None:
    """Run in a child process (so the parent stays small): the two datasets; prints the decoders' versions."""
    import av
    import decord

    source = write_dataset(Path(tmp) / "few", few, seconds, rate, None)
    write_dataset(Path(tmp) / "many", many, seconds, rate, source)
    print(json.dumps({"av": av.__version__, "decord": decord.__version__}))


def child(decoder: str, data: str) -> None:
    """Run in a fresh process: decode every track's sound (or run_extract), print peak RSS in MB."""
    videos = sorted((Path(data) / "videos" / "batch1").glob("*.mp4"))
    samples = 0
    if decoder == "old":
        import decord

        for video in videos:
            reader = decord.AudioReader(str(video), ctx=decord.cpu(0), sample_rate=16000, mono=True)
            samples += reader[:].asnumpy().size
            del reader
    elif decoder == "new":
        from dva.pipeline.media import read_audio

        for video in videos:
            samples += read_audio(video).wave.size
    else:
        from dva.pipeline.encoders import PRESETS
        from dva.pipeline.extract import ExtractSettings, run_extract

        tiny = PRESETS["tiny"]
        report = run_extract(ExtractSettings(data=data, split="train", out=str(Path(data) / "store"), clip_model=tiny["clip_model"], clip_pretrained=None,
                                             ast_model=tiny["ast_model"], audio_mode="tokens", visual_source="video", device="cpu", progress=False))
        assert not report.failed and len(report.extracted) == len(videos), report.failed
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"peak_mb": peak_kb / 1024, "samples": samples}))


def run_child(*args: str) -> dict:
    """Run this script with args in a fresh process; its last stdout line as JSON.

    Linux carries a process's peak RSS across fork and exec (ru_maxrss starts at the parent's
    RSS), so the parent must stay smaller than any child: it imports no numpy, PyAV or decord.
    """
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 vs 4 tracks of 5 s")
    parser.add_argument("--few", type=int, default=4)
    parser.add_argument("--many", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=int, default=44100, help="sample rate of the AAC sound written")
    parser.add_argument("--child", nargs=2, metavar=("DECODER", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--write", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.few, args.many, args.seconds = 2, 4, 5.0
    if args.child:
        return child(*args.child)
    if args.write:
        return write_both(args.write, args.few, args.many, args.seconds, args.rate)

    with tempfile.TemporaryDirectory() as tmp:
        versions = run_child("--write", tmp, "--few", str(args.few), "--many", str(args.many), "--seconds", str(args.seconds), "--rate", str(args.rate))
        peaks = {decoder: tuple(run_child("--child", decoder, str(Path(tmp) / name))["peak_mb"] for name in ("few", "many")) for decoder in DECODERS}
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"{datetime.date.today()}, {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, PyAV {versions['av']}, "
          f"decord {versions['decord']}; {args.seconds:g} s tracks of {args.rate / 1000:g} kHz mono AAC, peak RSS of a fresh process each "
          f"(the parent's own peak, a floor for every figure: {parent_mb:.0f} MB)\n")
    print(f"| decoder | tracks | peak RSS MB | growth {args.few}->{args.many} |")
    print("| --- | ---: | ---: | ---: |")
    for decoder, (low, high) in peaks.items():
        print(f"| {DECODERS[decoder]} | {args.few} | {low:.0f} | |")
        print(f"| {DECODERS[decoder]} | {args.many} | {high:.0f} | {high - low:+.0f} MB |")


if __name__ == "__main__":
    main()
