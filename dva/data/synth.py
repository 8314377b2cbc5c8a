"""A synthetic Aff-Wild2: the released layout and its quirks, with VA planted in pictures and sound.

Valence and arousal are smooth trajectories in [-1, 1]. The pictures carry valence strongly
(the face's colour) and arousal weakly (a small brightness change, half of it unrelated
to arousal); the sound carries arousal strongly (loudness and tremolo rate) and valence
weakly (a pitch shift, half of it unrelated). So either stream alone predicts one dimension
well and the other poorly, and both together beat either.

Quirks, all present with the defaults: a two-person video annotated as NAME_left / NAME_right
(sharing one sound track, which carries the left person's VA), a video without an audio
stream, an mpeg4 .avi, frame rates 30, 25 and 24, a file name that lies about its frame rate,
a 44.1 kHz stereo sound track, -5 runs, annotations 3 lines longer and 4 lines shorter than
the video, gaps in cropped_aligned, the three challenges' test lists in
names_of_videos_in_each_test_set/ (the Action Unit and Expression lists name other videos), and
the organisers' VA sample file, whose rows for the first test video end 2 frames before the
video does (the sample, not the decoded count, decides a test track's length).

The other two challenges on the same videos (`Annotations/EXPR_Recognition_Challenge/`,
`Annotations/AU_Detection_Challenge/`), drawn from the planted VA with their own random stream (so VA's figures are
those of a VA-only synth): EXPR's class is the region of the VA plane the frame is in (`expression`), AU's bits are
thresholds of valence and arousal (`action_units`), each with a few frames flipped and runs of -1. Their splits
differ from VA's: VA train tracks in EXPR val and test and AU val, a VA val track in EXPR test and AU test; the
video without sound has no AU labels (`synth_tasks.task_splits`). Each has
its own test list and sample file (`..._Expr_test_set_example.txt`, `..._AU_test_set_sample.txt`), whose rows for
a video VA also tests may end before VA's.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dva.data.synth_tasks import write_tasks
from dva.errors import DataError

CROP = 112
FRAME = 128  # video frames are 128 x 128 (two people: 256 x 128); the crop is the face region
ANNOTATIONS = Path("Annotations") / "VA_Estimation_Challenge"
TEST_LISTS = "names_of_videos_in_each_test_set"
VA_TEST_LIST = "Valence_Arousal_Estimation_Challenge_test_set_release.txt"
OTHER_TEST_LISTS = ("Action_Unit_Detection_Challenge_test_set_release.txt", "Expression_Classification_Challenge_test_set_release.txt")
SAMPLE_FILE = "CVPR_8th_ABAW_VA_test_set_sample.txt"
SAMPLE_SHORTFALL = 2  # sample rows of the first test video: its decoded frames minus this
FPS_CYCLE = (30, 25, 24)


@dataclass
class VideoPlan:
    name: str
    split: str
    fps: int
    batch: str
    subjects: tuple[str | None, ...] = (None,)
    suffix: str = ".mp4"
    audio: str = "mono16k"  # mono16k | stereo44k | none
    line_delta: int = 0  # annotation lines minus decoded frames
    invalid_runs: bool = False


def plan_videos(tracks: int) -> list[VideoPlan]:
    """Which videos to write for this many tracks, with every quirk placed."""
    n_test = max(1, round(tracks * 0.2))
    n_val = max(1, round(tracks * 0.2))
    n_train = tracks - n_test - n_val  # the two-person video gives two of these
    plans = [
        VideoPlan("synth_000", "train", 30, "batch1", subjects=("left", "right"), invalid_runs=True),
        VideoPlan("synth_001", "train", 25, "batch2", audio="none", line_delta=3),
        VideoPlan("12-30-640x360", "train", 25, "batch1", line_delta=-4),  # named 30 fps, really 25
    ]
    for i in range(3, n_train - 1):  # the rest of train, one video each (the first video has two tracks)
        plans.append(VideoPlan(f"synth_{i:03d}", "train", FPS_CYCLE[i % 3], ("batch1", "batch2")[i % 2]))
    for i in range(n_val):
        plans.append(VideoPlan(f"synth_1{i:02d}", "val", FPS_CYCLE[(i + 1) % 3], "batch2", suffix=".avi" if i == 0 else ".mp4", invalid_runs=i == 0))
    for i in range(n_test):
        plans.append(VideoPlan(f"synth_2{i:02d}", "test", FPS_CYCLE[(i + 2) % 3], "batch1", audio="stereo44k" if i == 0 else "mono16k"))
    return plans


def trajectory(rng: np.random.Generator, seconds: float, rate: float) -> np.ndarray:
    """A smooth signal in [-0.95, 0.95] sampled at rate Hz: slow sinusoids (0.03-0.3 Hz) through tanh."""
    t = np.arange(int(round(seconds * rate))) / rate
    signal = np.zeros_like(t)
    for _ in range(4):
        signal += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.03, 0.3) * t + rng.uniform(0, 2 * np.pi))
    signal /= signal.std() + 1e-9
    return 0.95 * np.tanh(0.7 * signal)  # mostly inside the plane, sometimes near its edges


def face(valence: np.ndarray, arousal_hint: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, 112, 112, 3]: a face-like disc whose colour follows valence; brightness weakly follows arousal."""
    yy, xx = np.mgrid[:CROP, :CROP]
    disc = ((yy - 56) / 46) ** 2 + ((xx - 56) / 38) ** 2 <= 1.0
    frames = np.empty((valence.shape[0], CROP, CROP, 3), dtype=np.float32)
    frames[:] = 90.0  # background
    colour = np.stack([140 + 90 * valence, 120 + 10 * valence, 140 - 90 * valence], axis=1) + 14 * arousal_hint[:, None]
    frames[:, disc] = colour[:, None, :]
    frames[:, 40:46, 30:50] = frames[:, 40:46, 62:82] = 30.0  # eyes, so it is not only a blob
    frames += rng.normal(0, 12, frames.shape)
    return frames.clip(0, 255).astype(np.uint8)


def sound(arousal: np.ndarray, valence_hint: np.ndarray, fps: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [N] in [-1, 1] at rate Hz: loudness and tremolo follow arousal; pitch weakly follows valence."""
    samples = int(round(arousal.shape[0] / fps * rate))
    t = np.arange(samples) / rate
    frame_t = np.arange(arousal.shape[0]) / fps
    a = np.interp(t, frame_t, arousal)
    v = np.interp(t, frame_t, valence_hint)
    level = 0.02 + 0.3 * ((a + 1) / 2) ** 1.5
    tremolo = 1 + 0.6 * np.sin(2 * np.pi * np.cumsum(2 + 8 * (a + 1) / 2) / rate)
    pitch = 220 * 2 ** (0.35 * v)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    tone = sum(np.sin(h * phase) / h for h in (1, 2, 3, 4))
    wave = level * tremolo * tone / 2 + rng.normal(0, 0.01, samples)
    return wave.clip(-1, 1).astype(np.float32)


def write_video(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None = None, sample_rate: int = 16000, channels: int = 1) -> Path:
    """Write uint8 [T, H, W, 3] frames (and float audio [N] in [-1, 1]) with real codecs through PyAV:
    H.264 + AAC in .mp4, mpeg4 + 16-bit PCM in .avi. Single-threaded encoders, so output is deterministic."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    mp4 = path.suffix.lower() == ".mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264" if mp4 else "mpeg4", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        if mp4:
            video.options = {"preset": "veryfast", "crf": "20"}
        else:
            video.bit_rate = 2_000_000
        stream = None
        if audio is not None:
            stream = container.add_stream("aac" if mp4 else "pcm_s16le", rate=sample_rate)
            stream.layout = "stereo" if channels == 2 else "mono"
            stream.codec_context.thread_count = 1
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if stream is not None:
            layout = "stereo" if channels == 2 else "mono"
            step = 1024
            for start in range(0, audio.shape[0], step):
                chunk = np.repeat(audio[None, start : start + step], channels, axis=0)
                if mp4:
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk, dtype=np.float32), format="fltp", layout=layout)
                else:  # packed 16-bit: channels interleaved in one row
                    frame = av.AudioFrame.from_ndarray((chunk.T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def _write_crops(folder: Path, faces: np.ndarray, rng: np.random.Generator) -> None:
    """1-based five-digit JPEGs, with a few runs missing where 'no face was found'."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    missing = np.zeros(faces.shape[0], dtype=bool)
    for _ in range(rng.integers(1, 4)):
        start = rng.integers(0, max(1, faces.shape[0] - 12))
        missing[start : start + rng.integers(3, 12)] = True
    for i, image in enumerate(faces):
        if not missing[i]:
            Image.fromarray(image).save(folder / f"{i + 1:05d}.jpg", quality=90)


def _write_annotation(path: Path, valence: np.ndarray, arousal: np.ndarray, lines: int, invalid_runs: bool, rng: np.random.Generator) -> None:
    rows = np.stack([valence, arousal], axis=1)
    if lines > rows.shape[0]:  # annotation longer than the video: pad with plausible values
        rows = np.concatenate([rows, np.repeat(rows[-1:], lines - rows.shape[0], axis=0)])
    rows = rows[:lines].round(3)
    text = [f"{v:.3f},{a:.3f}" for v, a in rows]
    if invalid_runs:
        for _ in range(2):
            start = int(rng.integers(0, max(1, lines - 40)))
            for i in range(start, min(lines, start + int(rng.integers(10, 40)))):
                text[i] = "-5,-5"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("valence,arousal\n" + "\n".join(text) + "\n")


def check_request(out: Path, tracks: int, seconds: float, train_holds: str) -> Path:
    """out as a Path, after the checks both synthetic layouts make: at least 5 tracks (train holds train_holds, val and
    test one each), 2 seconds, and a new or empty folder (DataError otherwise)."""
    out = Path(out)
    if tracks < 5:
        raise DataError(f"--tracks {tracks}: need at least 5 (train holds {train_holds}, val and test one each)")
    if seconds < 2:
        raise DataError(f"--seconds {seconds}: need at least 2")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not empty: choose a new folder")
    return out


def synth(out: Path, tracks: int = 8, seconds: float = 12.0, seed: int = 0, progress: bool = True) -> dict:
    """Write the dataset under out; returns {"out", "tracks": [{track, split, video, subject, fps, n_video_frames, n_lines, has_audio}],
    "tasks": {task: {split: tracks}}} (split and n_lines are VA's)."""
    from tqdm import tqdm

    out = check_request(out, tracks, seconds, "a two-person video and two more")
    rng = np.random.default_rng(seed)
    summary = []
    test_names, sample_rows = [], []
    planted = {}  # track -> (valence, arousal, VA's rows): what the other challenges' labels are made of
    for plan in tqdm(plan_videos(tracks), desc="synth", unit="video", disable=not progress):
        n_frames = int(round(seconds * plan.fps))
        people = []
        for subject in plan.subjects:
            valence, arousal = trajectory(rng, seconds, plan.fps)[:n_frames], trajectory(rng, seconds, plan.fps)[:n_frames]
            nuisance_v, nuisance_a = trajectory(rng, seconds, plan.fps)[:n_frames], trajectory(rng, seconds, plan.fps)[:n_frames]
            faces = face(valence + rng.normal(0, 0.08, n_frames), 0.4 * arousal + 0.6 * nuisance_a, rng)
            people.append((subject, valence, arousal, nuisance_v, faces))
        picture = np.full((n_frames, FRAME, FRAME * len(people), 3), 90, dtype=np.uint8)
        for k, (*_, faces) in enumerate(people):
            picture[:, 8 : 8 + CROP, FRAME * k + 8 : FRAME * k + 8 + CROP] = faces
        _, valence, arousal, nuisance_v, _ = people[0]  # the sound track carries the first (left) person's VA
        rate, channels = {"mono16k": (16000, 1), "stereo44k": (44100, 2), "none": (16000, 1)}[plan.audio]
        audio = None if plan.audio == "none" else sound(arousal, 0.4 * valence + 0.6 * nuisance_v, plan.fps, rate, rng)
        video = Path("videos") / plan.batch / f"{plan.name}{plan.suffix}"
        write_video(out / video, picture, plan.fps, audio, rate, channels)
        for subject, valence, arousal, _, faces in people:
            track = plan.name if subject is None else f"{plan.name}_{subject}"
            _write_crops(out / "cropped_aligned" / track, faces, rng)
            lines = n_frames + plan.line_delta
            if plan.split == "test":
                test_names.append(track)
                rows = n_frames - (SAMPLE_SHORTFALL if len(test_names) == 1 else 0)
                sample_rows += [f"{track}/{frame:05d}.jpg,," for frame in range(1, rows + 1)]
                planted[track] = (valence, arousal, rows)
            else:
                planted[track] = (valence, arousal, lines)
                folder = "Train_Set" if plan.split == "train" else "Validation_Set"
                _write_annotation(out / ANNOTATIONS / folder / f"{track}.txt", valence, arousal, lines, plan.invalid_runs, rng)
            summary.append({
                "track": track, "split": plan.split, "video": video.as_posix(), "subject": subject, "fps": plan.fps,
                "n_video_frames": n_frames, "n_lines": None if plan.split == "test" else lines, "has_audio": audio is not None,
            })
    lists = out / TEST_LISTS
    lists.mkdir(parents=True, exist_ok=True)
    (lists / VA_TEST_LIST).write_text("\n".join(test_names) + "\n")
    (out / SAMPLE_FILE).write_text("\n".join(["image_location,valence,arousal", *sample_rows]) + "\n")
    va_splits = {split: [t["track"] for t in summary if t["split"] == split] for split in ("train", "val", "test")}
    return {"out": str(out), "tracks": summary, "tasks": {"va": va_splits, **write_tasks(out, planted, va_splits, seed)}}
