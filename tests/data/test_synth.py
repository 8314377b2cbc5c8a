"""The synthetic dataset: deterministic, in the release layout, and carrying the VA signal as documented."""

import filecmp

import numpy as np
import pytest

from dva.data.aff_wild2 import scan
from dva.data.annotations import read_annotation
from dva.data.synth import synth
from dva.errors import DataError
from dva.metrics import ccc


def test_same_seed_same_dataset(synth_data, tmp_path):
    again = tmp_path / "again"
    synth(again, tracks=8, seconds=6.0, seed=3, progress=False)
    for relative in ("Annotations/VA_Estimation_Challenge/Train_Set", "cropped_aligned/synth_000_left", "videos/batch1"):
        comparison = filecmp.dircmp(synth_data / relative, again / relative)
        assert comparison.left_list and not comparison.diff_files and not comparison.left_only, relative


def test_bad_arguments_are_data_errors(synth_data, tmp_path):
    with pytest.raises(DataError, match="not empty"):
        synth(synth_data, tracks=7, seconds=6, progress=False)
    with pytest.raises(DataError, match="at least 5"):
        synth(tmp_path / "x", tracks=3, progress=False)


def _features(data, track):
    """Hand-made features per annotated frame: mean RGB of the crop; loudness and spectral centroid of the sound."""
    from PIL import Image

    from dva.pipeline.media import read_audio

    labels = read_annotation(data / track.annotation)
    rows = min(labels.shape[0], track.n_video_frames)
    wave = read_audio(data / track.video).wave
    keep, visual, audio = [], [], []
    for i in range(rows):
        crop = data / track.frames_dir / f"{i + 1:05d}.jpg"
        if np.isnan(labels[i]).any() or not crop.exists():
            continue
        visual.append(np.asarray(Image.open(crop), dtype=np.float32)[30:80, 30:80].reshape(-1, 3).mean(0))
        centre = int(i / track.fps * 16000)
        chunk = wave[max(0, centre - 4000) : centre + 4000]
        spectrum = np.abs(np.fft.rfft(chunk))
        freqs = np.fft.rfftfreq(chunk.size, 1 / 16000)
        audio.append([np.log(np.sqrt((chunk**2).mean()) + 1e-6), (spectrum * freqs).sum() / (spectrum.sum() + 1e-9)])
        keep.append(i)
    return np.array(visual), np.array(audio), labels[keep]


def _fit_ccc(x, y):
    design = np.column_stack([x, np.ones(len(x))])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    return ccc(design @ coefficients, y)


def test_pictures_carry_valence_and_sound_carries_arousal(synth_data):
    tracks = [t for t in scan(synth_data).tracks if t.split != "test" and t.has_audio and t.subject != "right"]
    parts = [_features(synth_data, t) for t in tracks]
    visual, audio, labels = (np.concatenate(p) for p in zip(*parts))
    scores = {
        "visual->valence": _fit_ccc(visual, labels[:, 0]), "visual->arousal": _fit_ccc(visual, labels[:, 1]),
        "audio->valence": _fit_ccc(audio, labels[:, 0]), "audio->arousal": _fit_ccc(audio, labels[:, 1]),
    }
    assert scores["visual->valence"] > 0.8 and scores["audio->arousal"] > 0.6, scores
    assert scores["visual->arousal"] < scores["visual->valence"] - 0.2, scores
    assert scores["audio->valence"] < scores["audio->arousal"] - 0.2, scores
