import numpy as np
import pytest
import torch

from dva.errors import ConfigError
from dva.trainer.loading.audio_rows import AudioRows, align_rows
from dva.trainer.loading.windows import Normaliser, SplitData, align_audio, gather, window_index
from dva.trainer.evaluate import normalise_batch
from dva.trainer.loading.tracks import concat_splits, select_tracks, track_rows, track_span


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
    data = SplitData("train", ["t"], np.array([0, 50]), visual.half(), visual_mask, torch.randn(50, 2), torch.ones(50, dtype=torch.bool), labels, torch.ones(50, dtype=torch.bool), [{}])
    normaliser = Normaliser.fit(data)
    index = torch.arange(50)[None, :]
    batch = normalise_batch(gather(data, index, torch.ones_like(index, dtype=torch.bool)), normaliser)
    assert batch["visual"][0][visual_mask].mean(0).abs().max() < 2e-3
    assert batch["visual"][0][~visual_mask].abs().max() == 0
    assert data.visual.dtype == torch.float16 and data.visual[0, 0] == 1000.0  # the split stays as stored; batches are normalised
    batch = gather(data, *window_index(data.offsets, 8, 8))
    assert batch["visual"].shape == (7, 8, 3) and batch["label_mask"].dtype == torch.bool


def _audio_split(how: str, seed: int = 0) -> tuple[SplitData, list[np.ndarray]]:
    """Three tracks at 30 fps, audio at 10 Hz (the middle track silent), as `load_splits` builds them; and the
    frame-rate audio `align_audio` gives for each track (what a stored expanded copy held)."""
    rng = np.random.default_rng(seed)
    lengths, steps = [90, 45, 61], [30, 0, 20]
    starts, offsets = np.cumsum([0] + steps), np.cumsum([0] + lengths)
    rows = rng.normal(size=(sum(steps), 4)).astype(np.float16)
    data = torch.cat([torch.from_numpy(rows), torch.zeros(1, 4, dtype=torch.float16)])
    left, right, weight, mask, expected = [], [], [], [], []
    for i, (length, step) in enumerate(zip(lengths, steps)):
        frame_time, audio_time = (np.arange(length) / 30).astype(np.float32), (0.05 + np.arange(step) / 10).astype(np.float32)
        l, r, w, m = align_rows(audio_time, frame_time, how)
        left.append(l + starts[i] if step else np.full_like(l, starts[-1]))
        right.append((r + starts[i] if step else np.full_like(r, starts[-1])) if r is not None else None)
        weight.append(w)
        mask.append(m)
        expected.append(align_audio(rows[starts[i] : starts[i + 1]], audio_time, frame_time, how)[0].astype(np.float16))
    cat = lambda parts: None if parts[0] is None else torch.from_numpy(np.concatenate(parts))  # noqa: E731
    audio = AudioRows(data, starts.astype(np.int64), cat(left), cat(right), cat(weight))
    n = int(offsets[-1])
    split = SplitData("train", ["a", "b", "c"], offsets.astype(np.int64), torch.zeros(n, 0, dtype=torch.float16), torch.zeros(n, dtype=torch.bool),
                      [audio], torch.from_numpy(np.concatenate(mask)), torch.zeros(n, 2), torch.ones(n, dtype=torch.bool), [{}, {}, {}])
    return split, expected


@pytest.mark.parametrize("how", ["nearest", "linear"])
def test_audio_at_its_own_rate_gives_the_values_of_a_frame_rate_copy(how):
    data, expected = _audio_split(how)
    assert data.audio[0].data.shape[0] == 51  # 50 steps and the spare row: a third of the frames, not every frame
    got = data.audio_at(torch.arange(data.n_frames))
    for i, values in enumerate(expected):
        rows = data.track_slice(i)
        valid = data.audio_mask[rows]
        assert torch.equal(got[rows][valid], torch.from_numpy(values.astype(np.float32))[valid])  # bitwise: figures do not move
    assert not data.audio_mask[data.track_slice(1)].any()  # the silent track is masked


@pytest.mark.parametrize("how", ["nearest", "linear"])
def test_selected_spanned_and_concatenated_tracks_read_the_same_audio(how):
    data, _ = _audio_split(how)
    every = data.audio_at(torch.arange(data.n_frames))
    valid = data.audio_mask
    held = select_tracks(data, [2, 0])
    rows = torch.from_numpy(track_rows(data.offsets, [2, 0], ordered=True))
    assert torch.equal(held.audio_at(torch.arange(held.n_frames))[valid[rows]], every[rows][valid[rows]])
    tail = track_span(data, 1, 3, "tail", [{}, {}], {})
    assert tail.audio[0].data.data_ptr() == data.audio[0].data[30:].data_ptr()  # a view: no copy of the rows
    assert torch.equal(tail.audio_at(torch.arange(tail.n_frames))[tail.audio_mask], every[90:][valid[90:]])
    both = concat_splits(select_tracks(data, [0]), tail)
    assert torch.equal(both.audio_at(torch.arange(both.n_frames))[both.audio_mask], every[valid])
