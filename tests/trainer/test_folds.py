"""`dva fit --folds K`: folds cut by video over train+val, one run per fold, every track predicted out of fold once."""

import json

import numpy as np
import pytest

from dva.errors import ConfigError
from dva.metrics import ccc
from dva.trainer.fit import load_features
from dva.trainer.folds import assign_folds, unselected_epochs
from dva.trainer.paired import figure

TRACKS = ["a_left", "a_right", "b", "c", "d_left", "d_right", "e", "f"]
ATTRS = [{"video": f"videos/{t.split('_')[0]}.mp4"} for t in TRACKS]
LENGTHS = [100, 100, 300, 50, 80, 80, 200, 120]


def test_folds_keep_a_videos_tracks_together_and_repeat_for_a_seed():
    first = assign_folds(TRACKS, ATTRS, LENGTHS, 3, seed=0)
    assert first == assign_folds(TRACKS, ATTRS, LENGTHS, 3, seed=0)
    assert first[0] == first[1] and first[4] == first[5]
    assert sorted(set(first)) == [0, 1, 2]
    seeds = {tuple(assign_folds(TRACKS, ATTRS, LENGTHS, 3, seed=s)) for s in range(6)}
    assert len(seeds) > 1  # the seed decides
    frames = [sum(n for n, f in zip(LENGTHS, first) if f == fold) for fold in range(3)]
    assert max(frames) - min(frames) <= 300  # balanced: no fold holds all the big videos


def test_a_track_without_a_video_attr_is_grouped_by_its_name():
    folds = assign_folds(["x_left", "x_right", "y"], [{}, {}, {}], [5, 5, 5], 2, seed=1)
    assert folds[0] == folds[1] != folds[2]


def test_s_aff_wild2s_two_subjects_of_a_video_share_a_fold_though_each_names_its_own_image_folder():
    tracks = ["video12_left", "video12_right", "426", "10-60-1280x720"]
    attrs = [{"video": f"cropped_aligned/{track}"} for track in tracks]  # as an s-Aff-Wild2 store keeps them: no video, an image folder
    for seed in range(4):
        folds = assign_folds(tracks, attrs, [5, 5, 5, 5], 3, seed=seed)
        assert folds[0] == folds[1] and len(set(folds)) == 3


def test_more_folds_than_videos_is_refused():
    with pytest.raises(ConfigError, match="only 6 videos"):
        assign_folds(TRACKS, ATTRS, LENGTHS, 7, seed=0)


def test_fit_folds_writes_a_run_per_fold_and_every_track_out_of_fold_once(folds_dir, tiny_store):
    out, report = folds_dir
    features = load_features(str(tiny_store))
    every = features.train.tracks + features.val.tracks
    folds = json.loads((out / "folds.json").read_text())
    assert folds["runs"] == ["fold-0", "fold-1", "fold-2"] and sorted(folds["fold_of"]) == sorted(every)
    held_out = []
    for fold in range(3):
        run = out / f"fold-{fold}"
        assert (run / "best.pt").is_file() and (run / "metrics.json").is_file()
        config = json.loads((run / "config.json").read_text())
        assert set(config["val_tracks"]) == set(folds["tracks"][fold]) and not set(config["val_tracks"]) & set(config["train_tracks"])
        assert set(config["val_tracks"]) | set(config["train_tracks"]) == set(every)
        held_out += config["val_tracks"]
    assert sorted(held_out) == sorted(every)  # each track held out exactly once
    assert folds["fold_of"]["synth_000_left"] == folds["fold_of"]["synth_000_right"]

    # the out-of-fold files, one per track, score exactly the oof figure
    labels, preds = [], []
    for data in (features.train, features.val):
        for i, track in enumerate(data.tracks):
            rows = (out / "oof_predictions" / f"{track}.txt").read_text().splitlines()[1:]
            preds.append(np.array([[float(x) for x in row.split(",")] for row in rows]))
            labels.append(data.labels[data.track_slice(i)].numpy())
    pred, label = np.concatenate(preds), np.concatenate(labels)
    oof = report["oof"]
    assert oof["p_va"] == pytest.approx((ccc(pred[:, 0], label[:, 0]) + ccc(pred[:, 1], label[:, 1])) / 2, abs=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"oof", "oof_selected", "oof_last", "oof_smoothed", "oof_val", "plain_best_val"} <= set(metrics["figures"]) <= set(metrics)
    # oof: each fold at the epoch its other folds' held-out figures chose; oof_selected: at the epoch its own fold chose
    histories = [[e["p_va"] for e in json.loads((out / f"fold-{fold}" / "metrics.json").read_text())["epochs"]] for fold in range(3)]
    assert metrics["oof"]["epochs"] == unselected_epochs(histories) == report["oof"]["epochs"]
    assert metrics["oof_selected"]["epochs"] == [entry["best_val"]["epoch"] for entry in metrics["per_fold"]]
    selected = np.concatenate([np.loadtxt(out / "oof_selected_predictions" / f"{t}.txt", delimiter=",", skiprows=1, ndmin=2) for t in every])
    assert metrics["oof_selected"]["p_va"] == pytest.approx(figure(selected, label), abs=1e-4)
    assert [entry["fold"] for entry in metrics["per_fold"]] == [0, 1, 2] and all(entry["best_val"]["p_va"] is not None for entry in metrics["per_fold"])
    assert metrics["smooth_seconds"] == metrics["smoothing"]["seconds"] and set(metrics["smooth_seconds"]) == {"valence", "arousal"}
    assert metrics["oof_smoothed"]["ccc_a"] == pytest.approx(max(metrics["smoothing"]["ccc_by_seconds"]["arousal"].values()))  # chosen out of fold, per dimension
    assert (out / "plain" / "best.pt").is_file()


def test_more_folds_than_the_store_has_videos_is_one_line_exit_2(tiny_store, tmp_path):
    from typer.testing import CliRunner

    from dva.cli import app

    result = CliRunner().invoke(app, ["fit", "--features", str(tiny_store), "--out", str(tmp_path / "cv"), "--folds", "9"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "only 5 videos" in result.stderr and not (tmp_path / "cv").exists()


def test_out_of_fold_selected_rows_come_from_the_fold_run_that_held_the_track_out(folds_dir, tiny_store):
    from dva.trainer.evaluate import predict_frames
    from dva.trainer.results.run_dir import load_run
    from dva.trainer.loading.tracks import select_tracks

    out, _ = folds_dir
    pooled = load_features(str(tiny_store)).pooled()
    fold_of = json.loads((out / "folds.json").read_text())["fold_of"]
    runs = [load_run(out / f"fold-{fold}", device="cpu") for fold in range(3)]
    for i, track in enumerate(pooled.tracks):
        one = select_tracks(pooled, [i])
        written = np.loadtxt(out / "oof_selected_predictions" / f"{track}.txt", delimiter=",", skiprows=1, ndmin=2)
        by_fold = [np.clip(predict_frames(model, settings, one, normaliser=normaliser), -1, 1) for settings, model, normaliser, _ in runs]
        held = fold_of[track]
        np.testing.assert_allclose(written, by_fold[held], atol=1e-5, err_msg=track)  # the run that never trained on it
        assert all(np.abs(pred - written).max() > 1e-3 for fold, pred in enumerate(by_fold) if fold != held), track


def equal_quality_folds(rng, k: int = 5, epochs: int = 15, frames: int = 240):
    """k folds' VA labels and, for each, `epochs` epochs' predictions that are the truth plus fresh noise of one size:
    every epoch of equal true quality, so any lift from picking one is selection on noise. Each fold's scores per epoch
    on its own frames, as `dva fit` records them."""
    labels = [rng.uniform(-1, 1, (frames, 2)) for _ in range(k)]
    preds = [[y + rng.normal(0, 1.0, y.shape) for _ in range(epochs)] for y in labels]
    scores = [[figure(p, y) for p in ps] for ps, y in zip(preds, labels)]
    return labels, preds, scores


def test_among_epochs_of_equal_quality_the_selected_oof_is_lifted_by_selection_and_the_unselected_is_not():
    rng = np.random.default_rng(0)
    lifts = []
    for _ in range(30):
        labels, preds, scores = equal_quality_folds(rng)
        pooled = np.concatenate(labels)
        oof = lambda chosen: figure(np.concatenate([ps[e - 1] for ps, e in zip(preds, chosen)]), pooled)  # noqa: E731
        last = oof([len(preds[0])] * len(preds))
        lifts.append((oof([int(np.argmax(s)) + 1 for s in scores]) - last, oof(unselected_epochs(scores)) - last))
    lifts = np.array(lifts)
    mean, error = lifts.mean(axis=0), lifts.std(axis=0, ddof=1) / np.sqrt(len(lifts))
    assert mean[0] > 5 * error[0] and mean[0] > 0.02  # selection on the scored fold lifts the figure (about +0.04 here)
    assert abs(mean[1]) < 3 * error[1] and abs(mean[1]) < mean[0] / 4  # choosing on the other folds does not


def test_a_folds_oof_epoch_is_chosen_without_its_own_scores():
    _, _, scores = equal_quality_folds(np.random.default_rng(1), k=4, epochs=6, frames=50)
    chosen = unselected_epochs(scores)
    for k in range(4):  # fold k's own scores, whatever they are, do not move its epoch
        for own in ([0.0] * 6, list(range(6)), list(range(6))[::-1]):
            assert unselected_epochs([own if j == k else s for j, s in enumerate(scores)])[k] == chosen[k]
        others = [s for j, s in enumerate(scores) if j != k]
        assert chosen[k] == int(np.argmax(np.mean(others, axis=0))) + 1  # the best mean over the other folds
    # fold 2 stopped after epoch 1 (patience): folds 0 and 1 choose among the epochs all others reached (1); fold 2's others
    # choose epoch 2, past where it stopped, so it keeps its last
    assert unselected_epochs([[0.1, 0.5, 0.2], [0.3, 0.9, 0.1], [0.2]]) == [1, 1, 1]
    assert unselected_epochs([[0.1, 0.5, 0.2], [0.3, 0.9, 0.1], [0.2, 0.1, 0.0, 0.3]]) == [2, 2, 2]


def test_one_fold_plan_for_variants_whose_feature_sets_cover_different_tracks(two_audio_store, tmp_path):
    """Two audio sets, one incomplete on a track: the variants load different tracks and still get one fold plan, made
    once from every track the task puts in train or val, each variant's tracks cut as in it."""
    import dataclasses
    import shutil
    import warnings

    import zarr

    from tests.conftest import TINY_AUDIO, WAV2VEC2
    from dva.trainer.ablate import job_tasks, plan_jobs
    from dva.trainer.fit import fold_plan, store_fold_plan
    from dva.trainer.settings import FitSettings
    from dva.trainer.tasks import store_identity

    store = tmp_path / "store"
    shutil.copytree(two_audio_store, store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(store), mode="r+")["train"]["synth_001"]
        group.attrs.update({"complete": {k: v for k, v in group.attrs["complete"].items() if k != WAV2VEC2}})
    base = FitSettings(features=str(store), folds=3, seed=4)
    plan = store_fold_plan(base)
    pools = {}
    for audio in (TINY_AUDIO, WAV2VEC2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pools[audio] = load_features(str(store), audio_features=audio).pooled()
    assert "synth_001" in pools[TINY_AUDIO].tracks and "synth_001" not in pools[WAV2VEC2].tracks
    for pooled in pools.values():
        assert fold_plan(base, pooled) == [plan[t] for t in pooled.tracks]
    assert set(plan) == set(pools[TINY_AUDIO].tracks)  # the union: every track of train and val
    tasks = job_tasks(plan_jobs(base, {"audio_features": [TINY_AUDIO, WAV2VEC2]}, 2, store_identity(str(store))), "digest")
    by_seed = {}
    for task in tasks:
        by_seed.setdefault(task.settings.seed, set()).add(task.plan)
    assert sorted(by_seed) == [4, 5] and all(len(plans) == 1 for plans in by_seed.values())  # one plan per seed, every variant
    assert dict(next(iter(by_seed[4]))) == plan and dict(next(iter(by_seed[5]))) == store_fold_plan(dataclasses.replace(base, seed=5))
