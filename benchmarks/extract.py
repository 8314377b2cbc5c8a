"""Extraction throughput, at two scales.

--scale small (default), side by side in one run on one synthetic dataset:
1. the whole `dva extract` pipeline (read crops + audio, encode, write the store), frames/s;
2. the encoders alone on pre-decoded tensors (the bound the pipeline can approach);
3. a naive per-frame loop: PIL + open_clip's own transform, batch of one;
and AST-base (random weights) window mode padded vs native vs tokens mode: cost per second of
audio, and the cosine similarity of the padded and native features of the same windows.

--scale release: the release's shape (112x112 JPEG crops, 30 fps tracks of a few minutes, 16 kHz
audio) for --minutes of video: frames/s of each stage alone (JPEG decode, preprocess, CLIP, AST) and
of the whole pipeline (`run_extract`), as ratios to the slowest stage, then the time each would take
for the release (2.8M frames, ~26 h of audio). Defaults: ViT-B-32 and AST-base (window mode, native
windows), both with random weights. With --split-cores (CPU) the encoders get the last core and the
reader thread with its JPEG decoders the others, as a GPU machine splits them (encoders on the device,
decoding on the cores): the pipeline should then approach its slowest stage, not their sum.

    python benchmarks/extract.py [--scale small|release] [--device cpu] [--minutes 1] [--quick]

Random weights are fine for timing (`--clip-pretrained none`). At the small scale the pipeline's AST
is the tiny preset in tokens mode unless --ast-model / --audio-mode say otherwise. --quick: tiny CLIP
and AST, a few seconds of video, one repeat; seconds, every code path of the chosen scale.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

QUICK = dict(clip_model="dva-tiny-clip", ast_model="dva-tiny-ast", tracks=5, seconds=2.0, repeats=1, naive_frames=8, audio_seconds=1.0, minutes=0.1)
AST_BASE = "ast-base"  # AST-base's config (MIT/ast-finetuned-audioset-10-10-0.4593's) with random weights
RELEASE_FRAMES, RELEASE_AUDIO_HOURS = 2_800_000, 26.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("small", "release"), default="small")
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--clip-pretrained", default="none")
    parser.add_argument("--ast-model", default=None, help=f"hub id, local dir, dva-tiny-ast or {AST_BASE} (default: dva-tiny-ast small, {AST_BASE} release)")
    parser.add_argument("--audio-mode", default=None, help="window or tokens (default: tokens small, window release)")
    parser.add_argument("--audio-pad", action="store_true", help="release: pad each AST window to 1024 frames instead of its own length")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tracks", type=int, default=5, help="small: synthetic tracks (at least 5; 4 of them in train)")
    parser.add_argument("--seconds", type=float, default=8.0, help="small: seconds per track")
    parser.add_argument("--repeats", type=int, default=None, help="measurements alternated, medians kept (default: 3 small, 1 release)")
    parser.add_argument("--naive-frames", type=int, default=64)
    parser.add_argument("--audio-seconds", type=float, default=5.0, help="small: audio for the AST-base padded / native / tokens comparison")
    parser.add_argument("--minutes", type=float, default=1.0, help="release: minutes of video (30 fps) with sound")
    parser.add_argument("--track-minutes", type=float, default=3.0, help="release: the longest track")
    parser.add_argument("--split-cores", action="store_true",
                        help="release, CPU: the encoders on the last core, the reader thread and its decoders on the others (a GPU's split: "
                             "the encoders on their own device), stages alone pinned the same way")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    args = parser.parse_args()
    if args.quick:  # quick sizes become the defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    release = args.scale == "release"
    if args.split_cores and not (release and args.device == "cpu" and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2):
        parser.error("--split-cores needs --scale release, --device cpu, Linux and at least 2 usable cores")
    args.ast_model = args.ast_model or (AST_BASE if release else "dva-tiny-ast")
    args.audio_mode = args.audio_mode or ("window" if release else "tokens")
    args.repeats = args.repeats or (1 if release else 3)
    args.pretrained = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained
    with tempfile.TemporaryDirectory() as tmp:
        if args.ast_model == AST_BASE:
            args.ast_model = save_ast_base(Path(tmp) / "ast-base")
        (release_scale if release else small_scale)(args, Path(tmp))


def synchronize(device: str):
    """Wait for the device the work runs on (synchronize() alone waits for the current device, cuda:0 unless set)."""
    return (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)


def save_ast_base(folder: Path) -> str:
    """AST-base's config with random weights, saved where `--ast-model DIR` loads it. AST initialises its
    positions and CLS/distillation tokens to zeros; they get random values (std 0.02, as ViT initialises
    them) so that which positions a native window takes makes a difference."""
    from transformers import ASTConfig, ASTModel

    from dva.pipeline.encoders.base import seeded_init

    with seeded_init():
        model = ASTModel(ASTConfig())
        with torch.no_grad():
            for parameter in (model.embeddings.position_embeddings, model.embeddings.cls_token, model.embeddings.distillation_token):
                torch.nn.init.trunc_normal_(parameter, std=0.02)
    model.save_pretrained(folder)
    return str(folder)


# --------------------------------------------------------------------------- --scale small


def small_scale(args, tmp: Path) -> None:
    from dva.data.aff_wild2 import scan
    from dva.data.synth import synth
    from dva.pipeline.encoders import build_audio, build_visual
    from dva.pipeline.extract import ExtractSettings, run_extract
    from dva.pipeline.reading import plan_track, read_audio, read_crop

    sync = synchronize(args.device)
    data = tmp / "data"
    synth(data, tracks=args.tracks, seconds=args.seconds, seed=0, progress=False)
    tracks = scan(data, split="train").tracks
    visual = build_visual("clip", args.clip_model, args.pretrained, args.device)
    audio = build_audio("ast", args.ast_model, args.device, mode=args.audio_mode, window=1.0, hop=0.1)
    print(f"device {args.device}, visual {args.clip_model} ({visual.image_size}px), audio {Path(args.ast_model).name} ({args.audio_mode}), "
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
        settings = ExtractSettings(data=str(data), split="train", out=str(tmp / f"store{i}"), clip_model=args.clip_model, clip_pretrained=args.pretrained,
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

    print("\n| path | frames/s | vs encoder-alone bound |")
    print("| --- | ---: | ---: |")
    print(f"| dva extract pipeline (read + encode + write) | {frames / pipe_s:,.1f} | {bound_s / pipe_s:.2f} |")
    print(f"| encoders alone on pre-decoded tensors (bound) | {frames / bound_s:,.1f} | 1.00 |")
    print(f"| naive per-frame loop (PIL transform, batch of 1, visual only) | {naive_fps:,.1f} | {naive_fps / (frames / bound_s):.2f} |")
    ast_forms(args, np.concatenate(waves)[: int(args.audio_seconds * 16000)], tmp)


def ast_forms(args, wave: np.ndarray, tmp: Path) -> None:
    """Window mode padded vs native vs tokens mode on the same sound, with AST-base (random weights) through
    the real loading path; --quick uses the tiny AST. Also how alike the padded and native features are."""
    from dva.pipeline.encoders import build_audio

    sync = synchronize(args.device)
    folder = "dva-tiny-ast" if args.quick else save_ast_base(tmp / "ast-base-forms")
    forms = {"padded": ("window", True), "native": ("window", False), "tokens": ("tokens", False)}
    encoders = {name: build_audio("ast", folder, args.device, mode=mode, window=1.0, hop=0.1, pad=pad) for name, (mode, pad) in forms.items()}
    timings, features = {name: [] for name in forms}, {}
    for name, encoder in encoders.items():
        encoder.encode_waveform(wave[:16000], batch_size=16)  # warm-up
    for _ in range(args.repeats):  # the forms alternate: machine noise hits each alike
        for name, encoder in encoders.items():
            sync()
            start = time.perf_counter()
            features[name], _ = encoder.encode_waveform(wave, batch_size=16)
            sync()
            timings[name].append(time.perf_counter() - start)
    costs = {name: float(np.median(t)) / (wave.size / 16000) for name, t in timings.items()}
    padded, native = (features[name] / np.linalg.norm(features[name], axis=1, keepdims=True) for name in ("padded", "native"))
    cosine = (padded * native).sum(1)

    def follows(unit: np.ndarray) -> float:  # cosine of windows 1 s (10 hops) apart: near 1 when the features ignore the sound
        return float((unit[:-10] * unit[10:]).sum(1).mean()) if len(unit) > 10 else float("nan")

    print(f"\n{'tiny AST' if args.quick else 'AST-base (random weights)'} on {wave.size / 16000:.0f} s of audio, {args.device}:\n")
    print("| audio mode | s per s of audio | cost vs native windows |")
    print("| --- | ---: | ---: |")
    labels = {
        "padded": f"window (1 s every 0.1 s), padded to {encoders['padded'].window_input} frames (--audio-pad)",
        "native": f"window (1 s every 0.1 s), native length ({encoders['native'].window_input} frames)",
        "tokens": f"tokens (one pass per {encoders['tokens'].max_length} frames, pooled per time column)",
    }
    for name, cost in costs.items():
        print(f"| {labels[name]} | {cost:.3f} | {cost / costs['native']:.2f}x |")
    print(f"\npadded vs native window features, cosine similarity over {cosine.size} windows: mean {cosine.mean():.3f}, "
          f"median {np.median(cosine):.3f}, min {cosine.min():.3f}; windows 1 s apart, cosine within a form: padded {follows(padded):.3f}, "
          f"native {follows(native):.3f}")


# --------------------------------------------------------------------------- --scale release


def write_release_like(root: Path, minutes: float, track_minutes: float, fps: int = 30, seed: int = 0) -> None:
    """Train tracks in the release's layout and shape: 112x112 JPEG crops (every frame), 30 fps, 16 kHz mono
    AAC, annotations; tracks of track_minutes (the last one shorter) adding up to minutes of video. The
    videos' pictures are small and flat: with crops, the pipeline reads only their timestamps and sound."""
    from PIL import Image

    from dva.data.synth import ANNOTATIONS, face, sound, trajectory, write_video

    rng = np.random.default_rng(seed)
    left, index = minutes * 60, 0
    while left > 0:
        seconds, name = min(track_minutes * 60, left), f"release_{index:03d}"
        left, index = left - seconds, index + 1
        valence, arousal = trajectory(rng, seconds, fps), trajectory(rng, seconds, fps)
        crops = root / "cropped_aligned" / name
        crops.mkdir(parents=True)
        for start in range(0, valence.size, 500):  # in chunks: a float32 face array of 3 minutes is 800 MB
            for i, image in enumerate(face(valence[start : start + 500], arousal[start : start + 500], rng), start + 1):
                Image.fromarray(image).save(crops / f"{i:05d}.jpg", quality=95)
        pictures = np.full((valence.size, 32, 32, 3), 90, dtype=np.uint8)
        write_video(root / "videos" / "batch1" / f"{name}.mp4", pictures, fps, sound(arousal, valence, fps, 16000, rng))
        labels = root / ANNOTATIONS / "Train_Set" / f"{name}.txt"
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text("valence,arousal\n" + "".join(f"{v:.3f},{a:.3f}\n" for v, a in zip(valence, arousal)))


def release_scale(args, tmp: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dva.data.aff_wild2 import scan
    from dva.pipeline.encoders import build_audio, build_visual
    from dva.pipeline.extract import ExtractSettings, run_extract
    from dva.pipeline.reading import decode_workers, plan_track, read_audio, visual_batches

    sync = synchronize(args.device)
    data = tmp / "data"
    write_release_like(data, args.minutes, args.track_minutes)
    tracks = scan(data, split="train").tracks
    frames = sum(t.n_video_frames for t in tracks)
    visual = build_visual("clip", args.clip_model, args.pretrained, args.device)
    audio = build_audio("ast", args.ast_model, args.device, mode=args.audio_mode, window=1.0, hop=0.1, pad=args.audio_pad)
    form = f"{args.audio_mode}" + (f", {'padded' if args.audio_pad else 'native'}" if args.audio_mode == "window" else "")
    ast_name = "AST-base" if Path(args.ast_model).name == AST_BASE else Path(args.ast_model).name
    cores = split_cores() if args.split_cores else {"reader": None, "encoders": None}
    if args.split_cores:
        print(f"split cores: reader and writer threads and JPEG decoders on {sorted(cores['reader'])}, encoders on {sorted(cores['encoders'])} "
              f"({len(cores['encoders'])} torch thread)")
        torch.set_num_threads(len(cores["encoders"]))
    print(f"device {args.device}, {len(tracks)} tracks, {frames} frames ({frames / 30 / 60:.1f} min at 30 fps), {visual.image_size}px {args.clip_model}, "
          f"{ast_name} ({form}), batch {args.batch_size}, {decode_workers()} decode threads, torch threads {torch.get_num_threads()}")
    plans = [plan_track(track, data) for track in tracks]
    crop_paths = [data / t.frames_dir / f"{r + 1:05d}.jpg" for t, plan in zip(tracks, plans) for r in range(min(plan.rows, t.n_video_frames))]
    crop_batches = [[p for p in crop_paths[i : i + args.batch_size] if p.is_file()] for i in range(0, len(crop_paths), args.batch_size)]
    waves = [read_audio(track, data).wave for track in tracks]

    def stages() -> dict:
        """Seconds of each stage alone, on the output of the one before (held in memory: 38 KB a 112 px frame)."""
        seconds = dict.fromkeys(("read", "decode", *(f"decode_{name}" for name in OTHER_DECODERS), "preprocess", "clip", "ast"), 0.0)

        def timed(name: str, work) -> object:
            sync()
            start = time.perf_counter()
            result = work()
            sync()
            seconds[name] += time.perf_counter() - start
            return result

        def read_all(pool):  # everything the pipeline's reader thread does: frame times, crops, sound
            for track in tracks:
                plan = plan_track(track, data)
                [b for _, b in visual_batches(plan, data, "crops", args.batch_size, pool, [])]
                read_audio(track, data)

        with pinned(cores["reader"]), ThreadPoolExecutor(max_workers=decode_workers()) as pool:  # the pool's threads inherit the pinning
            timed("read", lambda: read_all(pool))
            batches = timed("decode", lambda: [b for plan in plans for _, b in visual_batches(plan, data, "crops", args.batch_size, pool, [])])
            for name in OTHER_DECODERS:  # the same crops through the other decoders, side by side
                timed(f"decode_{name}", lambda: [other_batch(name, pool, paths) for paths in crop_batches])
        with pinned(cores["encoders"]), torch.inference_mode():
            for batch in batches:
                pixels = timed("preprocess", lambda: visual.preprocess(batch))
                timed("clip", lambda: visual.encode(pixels))
            for wave in waves:
                timed("ast", lambda: audio.encode_waveform(wave, batch_size=args.batch_size))
        return seconds

    def pipeline(i: int) -> float:
        settings = ExtractSettings(data=str(data), split="train", out=str(tmp / f"store{i}"), clip_model=args.clip_model, clip_pretrained=args.pretrained,
                                   ast_model=args.ast_model, audio_mode=args.audio_mode, audio_pad=args.audio_pad, batch_size=args.batch_size,
                                   device=args.device, progress=False)
        with pinned(cores["encoders"]), reader_pinned(cores["reader"]):
            report = run_extract(settings)
        assert not report.failed and report.frames == frames, report.failed
        return report.seconds

    with torch.inference_mode():  # warm-up (allocations, kernels)
        visual.encode(visual.preprocess(torch.zeros(args.batch_size, 3, 112, 112, dtype=torch.uint8)))
        audio.encode_waveform(waves[0][:16000])
    runs = [{**stages(), "pipeline": pipeline(i)} for i in range(args.repeats)]  # alternated: machine noise hits both alike
    seconds = {name: float(np.median([run[name] for run in runs])) for name in runs[0]}

    audio_seconds = sum(w.size for w in waves) / 16000
    serial = seconds["preprocess"] + seconds["clip"] + seconds["ast"]  # one device runs these one after the other
    fps = {name: frames / s for name, s in seconds.items()}
    slowest = min(fps[name] for name in ("decode", "preprocess", "clip", "ast"))
    overlapped = min(fps["read"], frames / serial)  # reading and encoding overlap; the encoders share one device
    rows = [
        ("the reader thread's whole work (frame times, JPEG decode + batch, audio decode)", "read"),
        ("JPEG decode + batch (read thread, libjpeg-turbo via torchvision)", "decode"),
        *((f"JPEG decode + batch with {OTHER_DECODERS[name]}", f"decode_{name}") for name in OTHER_DECODERS),
        (f"preprocess (uint8 -> normalised {visual.image_size} px)", "preprocess"),
        (f"CLIP {args.clip_model} encode", "clip"), (f"{ast_name} encode ({form}), {seconds['ast'] / audio_seconds:.3f} s per s of audio", "ast"),
        ("whole pipeline (run_extract: read, encode, write)", "pipeline"),
    ]
    print("\n| stage | frames/s | vs slowest stage | release (2.8M frames, 26 h audio) |")
    print("| --- | ---: | ---: | ---: |")
    for label, name in rows:
        release = RELEASE_AUDIO_HOURS * 3600 * seconds["ast"] / audio_seconds if name == "ast" else RELEASE_FRAMES / fps[name]
        print(f"| {label} | {fps[name]:,.1f} | {fps[name] / slowest:.2f} | {hours(release)} |")
    print(f"| preprocess + CLIP + AST one after the other (the encoders' serial bound) | {frames / serial:,.1f} | {frames / serial / slowest:.2f} | "
          f"{hours(RELEASE_FRAMES / (frames / serial))} |")
    print(f"\npipeline / serial encoder bound: {fps['pipeline'] / (frames / serial):.2f}; pipeline / min(reader thread, serial encoders), "
          f"the bound when reading overlaps encoding: {fps['pipeline'] / overlapped:.2f}; pipeline / all of it one after the other: "
          f"{fps['pipeline'] * (1 / fps['read'] + serial / frames):.2f}")
    print(f"projected release time through the pipeline: "
          f"{hours(RELEASE_FRAMES / fps['pipeline'])} (this sample: {audio_seconds / 3600 * RELEASE_FRAMES / frames:.1f} h of audio per 2.8M frames)")


# Decoders measured beside dva's stage on the same crops, in one harness (read, decode, stack): torchvision's decode_jpeg
# (what dva calls), PIL (what dva used before) and simplejpeg (libjpeg-turbo through its own binding) where it is installed (`pip install simplejpeg`; not a dependency).
OTHER_DECODERS = {
    "torchvision": "torchvision's decode_jpeg alone (dva's decode_crop, the harness of the rows below)",
    "pil": "PIL (the decoder before)",
    **({"simplejpeg": "simplejpeg (not a dva dependency)"} if importlib.util.find_spec("simplejpeg") else {}),
}


def other_batch(decoder: str, pool, paths: list) -> "torch.Tensor":
    """One batch of crops decoded by another decoder, uint8 [B, 3, H, W] like `visual_batches` yields."""
    if decoder == "torchvision":
        from dva.pipeline.reading import decode_crop

        def load(path):
            return decode_crop(path.read_bytes(), path)
    elif decoder == "pil":
        from PIL import Image

        def load(path):
            with Image.open(path) as image:
                return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    else:
        import simplejpeg

        def load(path):
            return torch.from_numpy(simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB")).permute(2, 0, 1)

    return torch.stack(list(pool.map(load, paths)))


def split_cores() -> dict:
    """{"reader": cores, "encoders": the last core} of this process's usable cores."""
    usable = sorted(os.sched_getaffinity(0))
    return {"reader": set(usable[:-1]), "encoders": {usable[-1]}}


@contextlib.contextmanager
def pinned(cpus: set | None):
    """The calling thread (and the threads it starts meanwhile, which inherit it) on cpus; None: unchanged."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)  # on Linux, pid 0 is the calling thread
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def reader_pinned(cpus: set | None):
    """run_extract's reader thread (and its decode pool, which it starts) and its writer thread on cpus, where a GPU
    machine runs them too: the reader generator and write_track_sets run in those threads, so each pins its thread
    when it starts. The real reader and writer do the work; only their threads move."""
    if cpus is None:
        yield
        return
    from dva.pipeline import stream, writing

    reader, writer = stream.read_units, writing.write_track_sets

    def pinned_reader(*args, **kwargs):
        os.sched_setaffinity(0, cpus)
        yield from reader(*args, **kwargs)

    def pinned_writer(*args, **kwargs):
        os.sched_setaffinity(0, cpus)
        return writer(*args, **kwargs)

    stream.read_units, writing.write_track_sets = pinned_reader, pinned_writer
    try:
        yield
    finally:
        stream.read_units, writing.write_track_sets = reader, writer


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{math.ceil(seconds / 60):.0f} min"


if __name__ == "__main__":
    main()
