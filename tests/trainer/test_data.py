import numpy as np
import pytest
import torch

from dva.errors import ConfigError
from dva.trainer.data import Normaliser, SplitData, align_audio, gather, window_index


def test_windows_cover_every_frame_and_never_cross_tracks():
    offsets = np.array([0, 100, 130, 300])  # tracks of 100, 30 (shorter than a window) and 170 frames
    index, inside = window_index(offsets, seq_len=64, stride=32)
    covered = torch.zeros(300, dtype=torch.bool)
    covered[index[inside]] = True
    assert covered.all()
    track_of = torch.from_numpy(np.searchsorted(offsets, np.arange(300), side="right") - 1)
    for row, valid in zip(index, inside):
        assert len(set(track_of[row[valid]].tolist())) == 1
    short = (index[:, 0] == 100).nonzero()[0].item()
    assert inside[short].sum() == 30 and (index[short][~inside[short]] == 129).all()


def test_window_arguments_are_checked():
    with pytest.raises(ConfigError):
        window_index(np.array([0, 10]), seq_len=0, stride=1)


def test_nearest_and_linear_audio_alignment():
    audio = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    audio_time = np.array([0.05, 0.15, 0.25], dtype=np.float32)
    frame_time = np.array([0.0, 0.1, 0.2, 0.26, 0.5], dtype=np.float32)
    nearest, mask = align_audio(audio, audio_time, frame_time, "nearest")
    assert nearest[:4, 0].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert mask.tolist() == [True, True, True, True, False]  # 0.5 s is past the last step by more than a step
    linear, _ = align_audio(audio, audio_time, frame_time, "linear")
    np.testing.assert_allclose(linear[:4, 0], [0.0, 0.5, 1.5, 2.0], atol=1e-5)


def test_no_audio_gives_masked_zero_rows():
    aligned, mask = align_audio(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.arange(5, dtype=np.float32), "nearest")
    assert aligned.shape == (5, 4) and not mask.any()


def test_normaliser_uses_valid_rows_and_zeroes_masked_ones():
    visual = torch.randn(50, 3) * 4 + 2
    visual_mask = torch.ones(50, dtype=torch.bool)
    visual_mask[::5] = False
    visual[~visual_mask] = 1000.0  # masked rows must not leak into the statistics
    labels = torch.zeros(50, 2)
    data = SplitData("train", ["t"], np.array([0, 50]), visual, visual_mask, torch.randn(50, 2), torch.ones(50, dtype=torch.bool), labels, torch.ones(50, dtype=torch.bool), [{}])
    normaliser = Normaliser.fit(data)
    normalised = normaliser.apply(data)
    assert normalised.visual.dtype == torch.float16  # kept as stored: half the memory of float32
    assert normalised.visual[visual_mask].float().mean(0).abs().max() < 2e-3
    assert normalised.visual[~visual_mask].abs().max() == 0
    assert data.visual[0, 0] == 1000.0  # the input is left as it was
    batch = gather(normalised, *window_index(data.offsets, 8, 8))
    assert batch["visual"].shape == (7, 8, 3) and batch["label_mask"].dtype == torch.bool
