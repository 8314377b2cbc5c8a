"""`dva fit --folds K`: folds cut by video over train+val, one run per fold, every track predicted out of fold once."""

import json

import numpy as np
import pytest

from dva.errors import ConfigError
from dva.metrics import ccc
from dva.trainer.fit import load_features
from dva.trainer.folds import assign_folds

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
    assert {"oof", "oof_last", "oof_smoothed", "oof_val", "plain_best_val"} <= set(metrics["figures"]) <= set(metrics)
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


def test_out_of_fold_rows_come_from_the_fold_run_that_held_the_track_out(folds_dir, tiny_store):
    from dva.trainer.evaluate import predict_frames
    from dva.trainer.results.run_dir import load_run
    from dva.trainer.loading.tracks import select_tracks

    out, _ = folds_dir
    pooled = load_features(str(tiny_store)).pooled()
    fold_of = json.loads((out / "folds.json").read_text())["fold_of"]
    runs = [load_run(out / f"fold-{fold}", device="cpu") for fold in range(3)]
    for i, track in enumerate(pooled.tracks):
        one = select_tracks(pooled, [i])
        written = np.loadtxt(out / "oof_predictions" / f"{track}.txt", delimiter=",", skiprows=1, ndmin=2)
        by_fold = [np.clip(predict_frames(model, settings, one, normaliser=normaliser), -1, 1) for settings, model, normaliser, _ in runs]
        held = fold_of[track]
        np.testing.assert_allclose(written, by_fold[held], atol=1e-5, err_msg=track)  # the run that never trained on it
        assert all(np.abs(pred - written).max() > 1e-3 for fold, pred in enumerate(by_fold) if fold != held), track
