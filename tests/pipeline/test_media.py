"""Sound and frame times through PyAV (`dva.pipeline.media`): the same sound as before, on the frame clock."""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dva.data.synth import write_video
from dva.data.video import frame_times
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
    """A dataset of a VFR video (annotated 2 lines past its end), late sound and on-time sound, extracted (tiny, frames from video)."""
    root = tmp_path_factory.mktemp("timed") / "data"
    ms = np.cumsum(np.random.default_rng(3).integers(20, 90, 40)) - 20
    wave = _noise(2.0, RATE, seed=4)
    _write_clip(root / "videos" / "batch1" / "vfr.mp4", ms, wave)
    _write_clip(root / "videos" / "batch1" / "late.mp4", 40 * np.arange(50), wave, audio_start=0.5)
    _write_clip(root / "videos" / "batch1" / "plain.mp4", 40 * np.arange(50), wave)
    labels = root / "Annotations" / "VA_Estimation_Challenge" / "Train_Set"
    for name, lines in (("vfr", 42), ("late", 50), ("plain", 50)):
        write_annotation(labels / f"{name}.txt", lines)
    out = tmp_path_factory.mktemp("timed-store") / "store"
    report = run_extract(tiny_settings(root, "train", out, visual_source="video"))
    assert not report.failed, report.failed
    return root, out, (ms - ms[0]) / 1000


def test_extract_stores_the_timestamps_of_a_variable_frame_rate_video(timed_store):
    _, out, seconds = timed_store
    stored = by_modality(open_store(out), "train", "vfr")
    np.testing.assert_allclose(stored["frame_time"][:40], seconds, atol=1e-3)
    assert np.all(np.diff(stored["frame_time"]) > 0)  # the 2 rows past the end too
    assert stored["visual_mask"].tolist() == [True] * 40 + [False] * 2


def test_extract_stores_late_sound_at_its_time(timed_store):
    root, out, _ = timed_store
    store = open_store(out)
    late, plain = store.read("train", "late", f"{TINY_AUDIO}/time"), store.read("train", "plain", f"{TINY_AUDIO}/time")
    start = read_audio(root / "videos" / "batch1" / "late.mp4").start
    assert start > 0.4 and read_audio(root / "videos" / "batch1" / "plain.mp4").start == 0.0
    n = min(late.shape[0], plain.shape[0])
    np.testing.assert_allclose(late[:n] - plain[:n], start, atol=1e-5)
