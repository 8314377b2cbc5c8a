"""Final fits (fixed epochs on chosen splits, no selection) and learning-rate schedules."""

import math

import numpy as np
import pytest

from dva.errors import ConfigError
from dva.trainer.evaluate import evaluate_frames, predict_frames
from dva.trainer.fit import load_features, lr_factor, train
from dva.trainer.settings import FitSettings

QUICK = dict(epochs=3, patience=1, hidden=16, seq_len=32, stride=16, batch_size=16, prompt="none")


@pytest.fixture(scope="module")
def features(tiny_store):
    return load_features(str(tiny_store))


def test_warmup_rises_linearly_and_cosine_ends_at_zero():
    constant = lr_factor("constant", 0.25, 8)
    assert [constant(s) for s in range(8)] == [0.5, 1.0, 1, 1, 1, 1, 1, 1]
    cosine = lr_factor("cosine", 0.0, 10)
    values = [cosine(s) for s in range(11)]
    assert values[0] == 1.0 and values[10] == pytest.approx(0.0) and values[5] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr_factor("cosine", 0.5, 10)(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 5)))


def test_a_final_fit_trains_on_train_and_val_every_epoch_and_keeps_the_last(tiny_store, features):
    settings = FitSettings(features=str(tiny_store), train_splits="train,val", schedule="cosine", warmup=0.2, **QUICK)
    result = train(settings, features, progress=False)
    assert result.best is None and result.held is None and result.val_pred is None
    assert len(result.history) == settings.epochs  # patience 1 stops nothing: there is nothing to select on
    assert result.train_tracks == features.train.tracks + features.val.tracks
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine reached its end
    assert "p_va" not in result.history[0]


def test_the_model_kept_is_the_one_that_scored_best_val(tiny_store, features):
    # a large step: val falls after the first epoch, so keeping the best and keeping the last are told apart
    result = train(FitSettings(features=str(tiny_store), **{**QUICK, "patience": 3, "lr": 0.1}), features, progress=False)
    assert result.final["epoch"] == 3 and result.best["epoch"] < result.final["epoch"]
    assert result.best["p_va"] == max(row["p_va"] for row in result.history) > result.history[-1]["p_va"] + 0.05
    again = predict_frames(result.model, result.settings, features.val, normaliser=result.normaliser)
    np.testing.assert_allclose(again, result.val_pred, atol=1e-5)
    assert evaluate_frames(again, features.val)["p_va"] == pytest.approx(result.best["p_va"], abs=1e-5)
    assert result.smoothing["selected_on"] == "val"


@pytest.mark.parametrize("flags, message", [
    (dict(train_splits="test"), "--train-splits"), (dict(warmup=1.0), "--warmup"), (dict(schedule="linear"), "--schedule"),
    (dict(folds=1), "--folds"), (dict(folds=3, train_splits="train,val"), "leave --train-splits out"),
])
def test_bad_schedule_and_split_settings_are_refused(flags, message):
    with pytest.raises(ConfigError, match=message):
        FitSettings(**flags).validate()
