"""Sound and frame times through PyAV (`dva.pipeline.media`): the same sound as before, on the frame clock."""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dva.data.synth import write_video
from dva.data.video import frame_times, open_frames
from dva.errors import DataError
from dva.pipeline.extract import run_extract
from dva.pipeline.media import read_audio, times_for_rows
from dva.stores import open_store
from tests.conftest import (
    TINY_AUDIO,
    by_modality,
    garble_audio,
    tiny_settings,
    write_annotation,
)
from tests.test_real_clips import _clips

RATE = 16000


def _old_decoder(path: Path) -> np.ndarray:
    """decord's AudioReader, the decoder dva used before: here only as the reference PyAV is compared with."""
    import decord

    return decord.AudioReader(str(path), ctx=decord.cpu(0), sample_rate=RATE, mono=True)[:].asnumpy().reshape(-1)


def _best_lag(x: np.ndarray, reference: np.ndarray, lags) -> tuple[int, float]:
    """(L, correlation): the lag in lags that best lines x[L + i] up with reference[i]."""
    edge = max(abs(lag) for lag in lags)
    n = min(x.shape[0], reference.shape[0]) - 2 * edge
    scores = [np.corrcoef(x[edge + lag : edge + lag + n], reference[edge : edge + n])[0, 1] for lag in lags]
    best = int(np.argmax(scores))
    return list(lags)[best], float(scores[best])


def _noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Smoothed noise [N] at rate: no period, so a lag between two decodings is unambiguous."""
    wave = np.random.default_rng(seed).normal(0, 0.1, int(seconds * rate))
    return np.convolve(wave, np.ones(4) / 4, mode="same").astype(np.float32)


def _write_clip(path: Path, frame_ms, wave: np.ndarray | None = None, audio_start: float = 0.0) -> Path:
    """H.264 video whose frame i plays at frame_ms[i] ms, with 16 kHz AAC wave [N] whose first sample is at audio_start s."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        video.codec_context.time_base = Fraction(1, 1000)  # pts in ms, set per frame below
        sound = None
        if wave is not None:
            sound = container.add_stream("aac", rate=RATE)
            sound.layout = "mono"
        for i, ms in enumerate(frame_ms):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 5 % 255, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(ms), Fraction(1, 1000)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            offset = int(round(audio_start * RATE))
            for start in range(0, wave.shape[0], 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = RATE, offset + start, Fraction(1, RATE)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


FLASH = 2.0  # s: the white frame and the beep of `_flash_and_beep`, on the file's timeline


def _flash_and_beep(path: Path, hole: tuple[float, float] | None = None, overlaps: int = 0, bframes: bool = False, seconds: float = 4.0) -> Path:
    """A recording of `seconds` at 25 fps whose frame at FLASH is white (the rest black), with 16 kHz mono sound: a quiet
    300 Hz tone and a loud 1 kHz beep of 0.1 s that a player sounds at FLASH, as a capture or a screen recorder writes
    it. .mkv: H.264 + 16-bit PCM in packets of 0.1 s; .mp4: H.264 + AAC (packets of 64 ms); .avi: mpeg4 + PCM.
    hole (a, b): the sound packets starting in [a, b) s are left out, the rest keep their timestamps. overlaps N: the
    N packets from 1.0 s each start 0.04 s before the previous one ends (what follows is 0.04 N s earlier: its samples
    are written that much later in the sound). bframes: the video has B-frames."""
    import av

    suffix = path.suffix
    codec = {".mkv": "pcm_s16le", ".mp4": "aac", ".avi": "pcm_s16le"}[suffix]
    late = 0.04 * overlaps
    t = np.arange(int((seconds + late) * RATE)) / RATE
    wave = 0.01 * np.sin(2 * np.pi * 300 * t)  # 300 Hz: 0.04 s is 12 whole periods, so an overlap leaves the tone seamless
    beep = (t >= FLASH + late) & (t < FLASH + late + 0.1)
    wave[beep] = 0.5 * np.sin(2 * np.pi * 1000 * t[beep])
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4" if suffix == ".avi" else "libx264", rate=25)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        if bframes:
            video.codec_context.max_b_frames = 2
        sound = container.add_stream(codec, rate=RATE)
        sound.layout = "mono"
        for i in range(int(seconds * 25)):
            image = np.full((32, 32, 3), 255 if i == round(FLASH * 25) else 0, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        moved = 0

        def mux(packet):
            nonlocal moved
            start = float(packet.pts * packet.time_base)
            if hole and hole[0] <= start < hole[1]:
                return
            if overlaps and start >= 1.0:
                moved = min(moved + 1, overlaps)
                ticks = round(0.04 * moved / packet.time_base)
                packet.pts, packet.dts = packet.pts - ticks, packet.dts - ticks
            container.mux(packet)

        step = 1024 if codec == "aac" else 1600
        for start in range(0, wave.shape[0], step):
            chunk = wave[None, start : start + step].astype(np.float32)
            frame = (av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono") if codec == "aac"
                     else av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16), format="s16", layout="mono"))
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
            for packet in sound.encode(frame):
                mux(packet)
        for packet in sound.encode(None):
            mux(packet)
    return path


def _flash_time(path: Path) -> float:
    """When the white frame plays, on the frame clock: the brightest decoded frame's time."""
    brightest = int(np.argmax([image.mean() for image in open_frames(path)]))
    return float(frame_times(path)[brightest])


def _beep_time(audio) -> float:
    """When the beep starts in decoded sound, on the frame clock."""
    return float(np.flatnonzero(np.abs(audio.wave) > 0.25)[0] / RATE + audio.start)


# --------------------------------------------------------------------------- the same sound as the old decoder


@pytest.mark.parametrize("name", ["synth_101.mp4", "synth_100.avi"])  # 16 kHz mono AAC, 16 kHz mono PCM
def test_16khz_sound_is_sample_for_sample_what_the_old_decoder_gave(synth_data, name):
    path = next(synth_data.glob(f"videos/*/{name}"))
    new, old = read_audio(path).wave, _old_decoder(path)
    assert new.dtype == np.float32 and new.size > RATE
    assert abs(new.shape[0] - old.shape[0]) <= 1
    n = min(new.shape[0], old.shape[0])
    assert np.abs(new[:n] - old[:n]).max() < 1e-5  # measured: 6e-8 (AAC), 0 (PCM)


@pytest.mark.parametrize("clip", ["synth 44.1 kHz stereo AAC", "bigbuckbunny 48 kHz 5.1 AAC"])
def test_resampled_sound_matches_the_old_decoder_but_for_its_1ms_delay(synth_data, clip):
    path = next(synth_data.glob("videos/*/synth_200.mp4")) if clip.startswith("synth") else _clips() / "bigbuckbunny.mp4"
    new, old = read_audio(path).wave, _old_decoder(path)
    assert abs(new.shape[0] - old.shape[0]) <= 1
    # decord's resampler does not compensate its filter delay: its output lags by ~16.7 samples
    # (1.04 ms) at 16 kHz; PyAV's does (see the next test). Aligned to the nearest whole sample
    # (the 0.3-0.7 sample left over costs a little correlation), the two agree.
    lag, correlation = _best_lag(old, new, range(-40, 41))
    assert 0 <= lag <= 20  # measured: 17 (synth), 16 (bigbuckbunny)
    assert correlation > 0.98  # measured: 0.992 (synth), 0.997 (bigbuckbunny)


def test_resampled_sound_is_on_time(tmp_path):
    # A band-limited signal known at every instant, written at 44.1 kHz stereo, read at 16 kHz.
    rng = np.random.default_rng(1)
    freqs, phases, amps = rng.uniform(100, 3000, 12), rng.uniform(0, 2 * np.pi, 12), rng.uniform(0.01, 0.05, 12)

    def signal(rate):
        t = np.arange(int(2.0 * rate))[:, None] / rate
        return (amps * np.sin(2 * np.pi * freqs * t + phases)).sum(axis=1).astype(np.float32)

    path = write_video(tmp_path / "tone.mp4", np.zeros((50, 32, 32, 3), np.uint8), 25, signal(44100), 44100, 2)
    audio = read_audio(path)
    assert audio.start == 0.0
    lag, correlation = _best_lag(audio.wave, signal(RATE), range(-40, 41))
    assert lag == 0 and correlation > 0.999  # measured: 0.99999 (decord: lag 17, 0.973)


# --------------------------------------------------------------------------- sound at its own timestamps


@pytest.mark.parametrize("name, where, length", [("hole.mkv", 1.0, 0.5), ("hole.mp4", 1.024, 0.512)])  # AAC packets start every 64 ms
def test_a_hole_in_the_sound_timestamps_is_silence_of_its_length_and_the_beep_stays_with_the_flash(tmp_path, name, where, length):
    path = _flash_and_beep(tmp_path / name, hole=(1.0, 1.5))
    audio = read_audio(path)
    assert _flash_time(path) == pytest.approx(FLASH, abs=1e-3)
    assert _beep_time(audio) == pytest.approx(FLASH, abs=1 / RATE * 4)  # measured: 0.1 ms (joined end to end: 1.49-1.50 s)
    assert audio.start + audio.wave.shape[0] / RATE == pytest.approx(4.0, abs=0.07)  # AAC pads its last packet of 64 ms
    assert audio.holes == [pytest.approx((where, length), abs=1e-3)] and not audio.overlaps
    inside = audio.wave[int((where + 0.1) * RATE) : int((where + length - 0.1) * RATE)]
    assert inside.size and not inside.any()  # silence, not the sound after it pulled forward
    assert audio.problems() == f"1 hole in the audio timestamps ({length:.3f} s at {where:.3f} s; {length:.3f} s in all) filled with silence"


@pytest.mark.parametrize("name, first", [("overlap.mkv", 0.96), ("overlap.mp4", 0.984)])
def test_overlapping_sound_packets_are_trimmed_and_the_beep_stays_with_the_flash(tmp_path, name, first):
    path = _flash_and_beep(tmp_path / name, overlaps=5)
    audio = read_audio(path)
    assert _flash_time(path) == pytest.approx(FLASH, abs=1e-3)
    assert _beep_time(audio) == pytest.approx(FLASH, abs=1 / RATE * 4)  # measured: 0.1 ms (end to end: 0.2 s late)
    assert audio.start + audio.wave.shape[0] / RATE == pytest.approx(4.0, abs=0.07)
    assert len(audio.overlaps) == 5 and audio.overlaps[0] == pytest.approx((first, 0.04), abs=1e-3) and not audio.holes
    assert audio.problems().startswith(f"5 overlaps in the audio timestamps (0.040 s at {first:.3f} s, ") and "0.200 s in all) trimmed" in audio.problems()


def test_an_avi_with_b_frames_starts_the_frame_clock_at_its_first_frame_slot(tmp_path):
    import av

    path = _flash_and_beep(tmp_path / "bframes.avi", bframes=True)
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(container.streams.video[0]) if p.pts is not None)
    assert (first.dts, first.pts) == (0, 1)  # FFmpeg guesses the first frame's pts a frame in (its B-frame delay)
    audio = read_audio(path)
    assert audio.start == 0.0 and _flash_time(path) == pytest.approx(FLASH, abs=1e-3)
    assert _beep_time(audio) == pytest.approx(FLASH, abs=1 / RATE * 4)  # on the guessed pts: a frame (40 ms) early
    assert audio.problems() is None


# --------------------------------------------------------------------------- the frame clock


@pytest.mark.parametrize("audio_start, video_start", [(0.5, 0.0), (0.0, 0.3)])
def test_sound_is_placed_on_the_frame_clock(tmp_path, audio_start, video_start):
    wave = _noise(2.0, RATE)
    path = _write_clip(tmp_path / "clip.mp4", 1000 * video_start + 40 * np.arange(50), wave, audio_start)
    audio = read_audio(path)
    # Where the first written sample sits in the decoded wave: after AAC priming that the
    # container did not hide (FFmpeg's muxer hides it only for a stream starting at 0).
    lag, correlation = _best_lag(audio.wave, wave, range(0, 3000))
    assert correlation > 0.95
    assert audio.start + lag / RATE == pytest.approx(audio_start - video_start, abs=1e-3)


def test_video_without_sound_gives_an_empty_wave(tmp_path):
    audio = read_audio(_write_clip(tmp_path / "silent.mp4", 40 * np.arange(10)))
    assert audio.wave.shape == (0,) and audio.wave.dtype == np.float32 and audio.start == 0.0


def test_damaged_sound_becomes_silence_of_its_length_and_the_rest_stays_on_time(tmp_path):
    t = np.arange(4 * RATE) / RATE
    wave = (0.02 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    wave[(t >= 2.0) & (t < 2.5)] *= 30  # a burst whose place in time is checked after the damage
    path = write_video(tmp_path / "clip.mp4", np.zeros((100, 32, 32, 3), np.uint8), 25, wave)
    damaged = garble_audio(path, 1.0, 1.3)
    audio = read_audio(path)
    assert damaged >= 4 and audio.bad_packets == damaged and audio.bad_seconds == pytest.approx(damaged * 1024 / RATE)
    assert audio.wave.shape[0] == pytest.approx(4 * RATE, abs=1024)  # the damaged stretch is still there, as silence
    loud = np.flatnonzero(np.abs(audio.wave) > 0.3) / RATE + audio.start
    assert loud[0] == pytest.approx(2.0, abs=0.002) and loud[-1] == pytest.approx(2.5, abs=0.002)
    assert np.count_nonzero(audio.wave[: int(1.9 * RATE)] == 0) >= damaged * 1024 - 64


def test_sound_mostly_damaged_is_a_data_error(tmp_path):
    path = write_video(tmp_path / "clip.mp4", np.zeros((50, 32, 32, 3), np.uint8), 25, _noise(2.0, RATE))
    garble_audio(path, 0.0, 2.0)
    with pytest.raises(DataError, match="packets refused by the decoder"):
        read_audio(path)


def test_unreadable_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    for read in (read_audio, frame_times):
        with pytest.raises(DataError, match="broken.mp4") as caught:
            read(path)
        assert "\n" not in str(caught.value)


def test_frame_times_of_a_variable_frame_rate_video_are_its_timestamps(tmp_path):
    ms = np.cumsum(np.random.default_rng(2).integers(20, 90, 40)) - 20  # irregular gaps, B-frames reordered
    times = frame_times(_write_clip(tmp_path / "vfr.mp4", ms))
    np.testing.assert_allclose(times, (ms - ms[0]) / 1000, atol=1e-3)


def test_rows_past_the_video_end_get_increasing_times():
    times = np.array([0.0, 0.04, 0.1, 0.13])
    np.testing.assert_allclose(times_for_rows(times, 6, 1 / 25), [0.0, 0.04, 0.1, 0.13, 0.17, 0.21])  # median gap 0.04
    np.testing.assert_array_equal(times_for_rows(times, 3, 1 / 25), times[:3])
    np.testing.assert_allclose(times_for_rows(np.zeros(1), 3, 0.5), [0.0, 0.5, 1.0])


# --------------------------------------------------------------------------- through dva extract


@pytest.fixture(scope="module")
def timed_store(tmp_path_factory):
    """A dataset of a VFR video (annotated 2 lines past its end), late sound, on-time sound, and a flash with a beep
    three times (intact, with a hole in its sound's timestamps, with overlapping sound packets), extracted (tiny, frames
    from video): (data, store, the VFR video's frame times, the report)."""
    root = tmp_path_factory.mktemp("timed") / "data"
    ms = np.cumsum(np.random.default_rng(3).integers(20, 90, 40)) - 20
    wave = _noise(2.0, RATE, seed=4)
    _write_clip(root / "videos" / "batch1" / "vfr.mp4", ms, wave)
    _write_clip(root / "videos" / "batch1" / "late.mp4", 40 * np.arange(50), wave, audio_start=0.5)
    _write_clip(root / "videos" / "batch1" / "plain.mp4", 40 * np.arange(50), wave)
    _flash_and_beep(root / "videos" / "batch1" / "beep.mp4")
    _flash_and_beep(root / "videos" / "batch1" / "hole.mp4", hole=(1.0, 1.5))
    _flash_and_beep(root / "videos" / "batch1" / "overlap.mp4", overlaps=5)
    labels = root / "Annotations" / "VA_Estimation_Challenge" / "Train_Set"
    for name, lines in (("vfr", 42), ("late", 50), ("plain", 50), ("beep", 100), ("hole", 100), ("overlap", 100)):
        write_annotation(labels / f"{name}.txt", lines)
    out = tmp_path_factory.mktemp("timed-store") / "store"
    report = run_extract(tiny_settings(root, "train", out, visual_source="video"))
    assert not report.failed, report.failed
    return root, out, (ms - ms[0]) / 1000, report


def test_extract_stores_the_timestamps_of_a_variable_frame_rate_video(timed_store):
    _, out, seconds, _ = timed_store
    stored = by_modality(open_store(out), "train", "vfr")
    np.testing.assert_allclose(stored["frame_time"][:40], seconds, atol=1e-3)
    assert np.all(np.diff(stored["frame_time"]) > 0)  # the 2 rows past the end too
    assert stored["visual_mask"].tolist() == [True] * 40 + [False] * 2


def test_extract_stores_late_sound_at_its_time(timed_store):
    root, out, _, _ = timed_store
    store = open_store(out)
    late, plain = store.read("train", "late", f"{TINY_AUDIO}/time"), store.read("train", "plain", f"{TINY_AUDIO}/time")
    start = read_audio(root / "videos" / "batch1" / "late.mp4").start
    assert start > 0.4 and read_audio(root / "videos" / "batch1" / "plain.mp4").start == 0.0
    n = min(late.shape[0], plain.shape[0])
    np.testing.assert_allclose(late[:n] - plain[:n], start, atol=1e-5)


def test_extract_keeps_the_sound_after_a_hole_or_an_overlap_with_its_frames_and_names_it(timed_store):
    _, out, _, report = timed_store
    store = open_store(out)
    intact = np.asarray(store.read("train", "beep", f"{TINY_AUDIO}/data"), np.float32)
    times = store.read("train", "beep", f"{TINY_AUDIO}/time")
    around = (times >= FLASH - 0.6) & (times <= FLASH + 0.8)  # rows whose window holds the beep, past the repairs
    for track in ("hole", "overlap"):
        data = np.asarray(store.read("train", track, f"{TINY_AUDIO}/data"), np.float32)
        assert data.shape[0] == pytest.approx(intact.shape[0], abs=1)  # the decoded duration: 4 s either way
        rows = np.flatnonzero(around)
        lags = range(-7, 8)  # audio steps (0.1 s): the repaired sound best matches the intact one where it was recorded
        distance = [np.linalg.norm(data[rows + lag] - intact[rows], axis=1).mean() for lag in lags]
        assert list(lags)[int(np.argmin(distance))] == 0, (track, distance)  # joined end to end: 0.5 s early after the hole, 0.2 s late after the overlaps
    lines = [line for line in report.warnings if "in the audio timestamps" in line]
    assert sorted(lines) == sorted(f"{video}: {problems}" for video, problems in report.sound.items()) and len(lines) == 2
    assert any(line.startswith("videos/batch1/hole.mp4: 1 hole in the audio timestamps (0.512 s at 1.024 s;") for line in lines)
    assert any(line.startswith("videos/batch1/overlap.mp4: 5 overlaps in the audio timestamps (") for line in lines)
