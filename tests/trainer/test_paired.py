"""The paired bootstrap over videos (dva.trainer.paired) against cases worked by hand and dva.metrics itself."""

import numpy as np
import pytest

from dva.metrics import ccc
from dva.trainer.paired import paired_difference, resample_counts, resampled_p_va, video_sums


def videos_of(lengths: list[int], seed: int = 0):
    """labels [N, 2] (a slow random walk per video), the video of each frame, and a good prediction (labels + noise)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.clip(np.cumsum(rng.normal(0, 0.05, (n, 2)), axis=0) + rng.uniform(-0.5, 0.5, 2), -1, 1) for n in lengths])
    videos = np.repeat([f"video{i}" for i in range(len(lengths))], lengths)
    return labels, videos, labels + rng.normal(0, 0.1, labels.shape)


def test_two_identical_variants_differ_by_exactly_zero_with_an_interval_of_zero_width():
    labels, videos, good = videos_of([30, 50, 80, 20, 60])
    labels[::7, 0] = np.nan  # invalid frames are left out alike
    result = paired_difference(good, good.copy(), labels, videos, resamples=500)
    assert (result.diff, result.low, result.high) == (0.0, 0.0, 0.0) and result.holds_zero and result.videos == 5


@pytest.mark.parametrize("ignores_its_input", ["constant", "shuffled"])
def test_a_variant_that_ignores_its_input_is_below_a_good_one_with_an_interval_that_excludes_zero(ignores_its_input):
    labels, videos, good = videos_of([40] * 30)
    rng = np.random.default_rng(1)
    bad = np.full_like(good, 0.1) if ignores_its_input == "constant" else good[rng.permutation(len(good))]
    result = paired_difference(bad, good, labels, videos)  # good minus bad
    assert result.diff > 0.5 and 0 < result.low <= result.diff <= result.high and not result.holds_zero
    assert result.resamples == 2000
    flipped = paired_difference(good, bad, labels, videos)
    assert (flipped.diff, flipped.low, flipped.high) == pytest.approx((-result.diff, -result.high, -result.low))


def test_a_resample_draws_whole_videos_a_video_drawn_twice_brings_all_its_frames_twice():
    lengths = [3, 17, 60, 5, 110]  # unequal: a resample's frames are a sum of whole videos, never of single frames
    labels, videos, good = videos_of(lengths, seed=2)
    index = np.repeat(np.arange(len(lengths)), lengths)
    counts = resample_counts(len(lengths), 200, seed=4)
    sums = video_sums(good, labels, index, len(lengths))
    assert np.array_equal(np.einsum("rv,vdk->rdk", counts, sums)[:, 0, 0], counts @ np.array(lengths))
    draw = int(np.argmax(counts.max(axis=1) >= 2))  # a resample that holds some video twice or more
    assert counts[draw].max() >= 2 and counts[draw].sum() == len(lengths)
    frames = np.concatenate([np.flatnonzero(index == v) for v in range(len(lengths)) for _ in range(int(counts[draw, v]))])
    by_hand = (ccc(good[frames, 0], labels[frames, 0]) + ccc(good[frames, 1], labels[frames, 1])) / 2  # the frames concatenated
    assert resampled_p_va(sums, counts)[draw] == pytest.approx(by_hand, abs=1e-12)


def test_the_difference_is_the_figure_over_every_frame_and_the_interval_is_reproducible():
    labels, videos, good = videos_of([25, 35, 45, 55, 65, 75], seed=5)
    other = good + np.random.default_rng(6).normal(0, 0.2, good.shape)
    result = paired_difference(other, good, labels, videos, resamples=300)
    whole = [(ccc(p[:, 0], labels[:, 0]) + ccc(p[:, 1], labels[:, 1])) / 2 for p in (good, other)]
    assert result.diff == whole[0] - whole[1]
    assert paired_difference(other, good, labels, videos, resamples=300) == result  # a fixed seed
    assert paired_difference(other, good, labels, videos, resamples=300, seed=1) != result
    order = np.random.default_rng(7).permutation(len(labels))  # a video's frames need not be contiguous
    shuffled = paired_difference(other[order], good[order], labels[order], videos[order], resamples=300)
    assert (shuffled.low, shuffled.high) == pytest.approx((result.low, result.high), abs=1e-12)


def expr_videos(lengths: list[int], seed: int = 0):
    """EXPR labels [N, 1] (class runs per video, some frames not annotated), videos, and 8-class probabilities that
    mostly put the most weight on the true class."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.repeat(rng.integers(0, 8, n // 10 + 1), 10)[:n] for n in lengths]).astype(np.float64)[:, None]
    videos = np.repeat([f"video{i}" for i in range(len(lengths))], lengths)
    scores = rng.random((len(labels), 8))
    right = rng.random(len(labels)) < 0.7
    scores[right, labels[right, 0].astype(int)] += 1
    labels[::9] = np.nan
    return labels, videos, scores / scores.sum(axis=1, keepdims=True)


def au_videos(lengths: list[int], seed: int = 0):
    """AU labels [N, 12] of 0/1 (whole frames not annotated), videos, and probabilities near the truth."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((sum(lengths), 12)) < 0.3).astype(np.float64)
    labels[::11] = np.nan
    videos = np.repeat([f"video{i}" for i in range(len(lengths))], lengths)
    good = np.nan_to_num(labels, nan=0.5) * 0.35 + rng.random(labels.shape) * 0.6  # many on either side of 0.5
    return labels, videos, good


@pytest.mark.parametrize("task", ["expr", "au"])
def test_each_videos_counts_drawn_once_give_the_tasks_own_figure_and_a_video_drawn_twice_its_frames_twice(task):
    from dva.metrics import f1_binary, f1_per_class
    from dva.trainer.paired import figure, resampled_f1, video_counts

    lengths = [13, 40, 7, 55, 30]
    labels, _, good = (expr_videos if task == "expr" else au_videos)(lengths, seed=3)
    index = np.repeat(np.arange(len(lengths)), lengths)
    counts = video_counts(good, labels, index, len(lengths))

    def by_hand(rows):  # the figure as `dva fit` scores a split, over these frames
        if task == "expr":
            return np.mean(f1_per_class(np.argmax(good[rows], axis=1), labels[rows, 0], 8))
        return np.mean([f1_binary(good[rows, u] >= 0.5, labels[rows, u]) for u in range(12)])

    everything = np.arange(len(labels))
    assert resampled_f1(counts, np.ones((1, len(lengths))))[0] == pytest.approx(by_hand(everything), abs=1e-12) == figure(good, labels)
    draw = np.array([[2.0, 0, 1, 0, 2]])  # video 0 and 4 twice, video 2 once
    frames = np.concatenate([np.flatnonzero(index == v) for v in range(len(lengths)) for _ in range(int(draw[0, v]))])
    assert resampled_f1(counts, draw)[0] == pytest.approx(by_hand(frames), abs=1e-12)


@pytest.mark.parametrize("task", ["expr", "au"])
def test_a_class_variant_that_ignores_its_input_is_below_a_good_one_and_identical_ones_differ_by_zero(task):
    labels, videos, good = (expr_videos if task == "expr" else au_videos)([40] * 30, seed=4)
    rng = np.random.default_rng(5)
    bad = good[rng.permutation(len(good))]
    result = paired_difference(bad, good, labels, videos)
    assert result.diff > 0.2 and 0 < result.low <= result.diff <= result.high and result.resamples == 2000
    same = paired_difference(good, good.copy(), labels, videos, resamples=300)
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0) and same.holds_zero
