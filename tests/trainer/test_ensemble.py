"""`dva predict` with several runs (an ensemble), a folds directory, and smoothing along each track."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dva.cli import app
from dva.trainer.loading.windows import SplitData
from dva.trainer.evaluate import choose_smoothing, smooth
from dva.trainer.results.run_dir import CHECKPOINT, read_checkpoint
from tests.conftest import TINY_VISUAL


def predict(*args):
    result = CliRunner().invoke(app, ["predict", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def values(path):
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2))


def test_two_runs_predict_the_mean_of_their_single_predictions(run_dir, folds_dir, tiny_store, tmp_path):
    a, b = run_dir[0], folds_dir[0] / "fold-0"
    for name, runs in (("a", [a]), ("b", [b]), ("ab", [a, b])):
        summary = predict(*[arg for run in runs for arg in ("--run", run)], "--features", tiny_store, "--out", tmp_path / f"{name}.txt", "--smooth", "0")
        assert summary["runs"] == len(runs) and summary["smooth_seconds"] == {"valence": 0.0, "arousal": 0.0}
    single_a, single_b = values(tmp_path / "a.txt"), values(tmp_path / "b.txt")
    assert np.abs(single_a - single_b).max() > 1e-2  # two different models
    np.testing.assert_allclose(values(tmp_path / "ab.txt"), (single_a + single_b) / 2, atol=1e-4)


def test_a_folds_directory_is_the_ensemble_of_its_folds_smoothed_as_fit_chose(folds_dir, tiny_store, tmp_path):
    out, report = folds_dir
    folds = predict("--run", out, "--features", tiny_store, "--out", tmp_path / "folds.txt", "--smooth", "0")
    each = predict(*[a for k in range(3) for a in ("--run", out / f"fold-{k}")], "--features", tiny_store, "--out", tmp_path / "each.txt", "--smooth", "0")
    assert folds["runs"] == each["runs"] == 3
    np.testing.assert_array_equal(values(tmp_path / "folds.txt"), values(tmp_path / "each.txt"))
    chosen = predict("--run", out, "--features", tiny_store, "--out", tmp_path / "chosen.txt")
    assert chosen["smooth_seconds"] == report["smooth_seconds"] == json.loads((out / "metrics.json").read_text())["smooth_seconds"]


def test_runs_trained_on_other_features_are_refused_naming_the_difference(run_dir, tiny_store, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_dir[0], other)
    checkpoint = read_checkpoint(other)
    checkpoint["provenance"]["feature_sets"][TINY_VISUAL]["encoder"]["model"] = "ViT-L-14"  # the same set name, made otherwise
    torch.save(checkpoint, other / CHECKPOINT)
    result = CliRunner().invoke(app, ["predict", "--run", str(run_dir[0]), "--run", str(other), "--features", str(tiny_store), "--out", str(tmp_path / "x.txt")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert TINY_VISUAL in result.stderr and "encoder.model" in result.stderr and "ViT-L-14" in result.stderr and not (tmp_path / "x.txt").exists()


def split_of(lengths, fps):
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = int(offsets[-1])
    labels = torch.zeros(n, 2)
    return SplitData("val", [f"t{i}" for i in range(len(lengths))], offsets, torch.zeros(n, 1), torch.ones(n, dtype=torch.bool),
                     torch.zeros(n, 1), torch.ones(n, dtype=torch.bool), labels, torch.ones(n, dtype=torch.bool), [{"fps": f} for f in fps])


def test_smoothing_is_a_gaussian_of_seconds_times_fps_within_each_track():
    data = split_of([201, 50], fps=[25, 10])
    impulse = np.zeros((251, 2), np.float32)
    impulse[100] = 1.0
    impulse[201:] = 0.5  # the second track: a constant
    out = smooth(impulse, data, 0.2)
    frames = np.arange(201)
    weights = out[:201, 0] / out[:201, 0].sum()
    spread = np.sqrt((weights * (frames - 100) ** 2).sum())
    assert spread == pytest.approx(0.2 * 25, rel=0.02)  # sigma = 5 frames at 25 fps
    np.testing.assert_allclose(out[201:], 0.5, atol=1e-6)  # the ends are not pulled towards zero, nothing leaks from track 0
    assert smooth(impulse, data, 0.0) is impulse


def test_smoothing_widths_apply_per_dimension_and_a_zero_width_leaves_its_dimension_alone():
    data = split_of([201, 50], fps=[25, 10])
    pred = np.random.default_rng(1).normal(size=(251, 2)).astype(np.float32)
    both = smooth(pred, data, 0.2)
    valence_only = smooth(pred, data, (0.2, 0.0))
    np.testing.assert_array_equal(valence_only[:, 0], both[:, 0])
    np.testing.assert_array_equal(valence_only[:, 1], pred[:, 1])
    mixed = smooth(pred, data, {"valence": 0.1, "arousal": 0.8})  # as metrics.json records it
    np.testing.assert_array_equal(mixed[:, 0], smooth(pred, data, 0.1)[:, 0])
    np.testing.assert_array_equal(mixed[:, 1], smooth(pred, data, "0.8")[:, 1])
    np.testing.assert_array_equal(smooth(pred, data, "0.1,0.8"), mixed)  # --smooth V,A


def test_the_width_chosen_per_dimension_is_the_one_that_scores_best_and_none_for_a_clean_dimension():
    data = split_of([400], fps=[30])
    truth = np.sin(np.arange(400) / 40.0)[:, None].repeat(2, axis=1).astype(np.float32)
    data.labels = torch.from_numpy(truth)
    noisy = truth.copy()
    noisy[:, 0] += np.random.default_rng(0).normal(0, 0.5, 400).astype(np.float32)  # valence noisy, arousal exact
    chosen = choose_smoothing(noisy, data)
    valence = chosen["ccc_by_seconds"]["valence"]
    assert chosen["seconds"]["valence"] > 0 and valence[str(chosen["seconds"]["valence"])] == max(valence.values())
    assert chosen["seconds"]["arousal"] == 0.0
    assert set(valence) == {"0.0", "0.1", "0.2", "0.4", "0.8"}
    assert choose_smoothing(truth, data)["seconds"] == {"valence": 0.0, "arousal": 0.0}


def test_a_negative_smoothing_width_is_refused(run_dir, tiny_store, tmp_path):
    result = CliRunner().invoke(app, ["predict", "--run", str(run_dir[0]), "--features", str(tiny_store), "--out", str(tmp_path / "x.txt"), "--smooth", "-1"])
    assert result.exit_code == 2 and "--smooth must be 0 or more seconds" in result.stderr


def test_a_final_fit_chose_no_width_so_an_ensemble_takes_its_folds_width(tmp_path):
    from dva.trainer.results.predict import smoothing_width

    def run(name, metrics):
        path = tmp_path / name
        path.mkdir()
        if metrics is not None:
            (path / "metrics.json").write_text(json.dumps(metrics))
        return path

    folds = run("cv", {"smooth_seconds": {"valence": 0.4, "arousal": 0.1}})
    final = run("final", {"smooth_seconds": None})  # `dva fit --train-splits train,val`: nothing held out to choose on
    single = run("single", {"smooth_seconds": 0.2})  # a dva that chose one width for both dimensions
    older = run("old", None)  # a run of a dva that did not smooth
    assert smoothing_width([folds, final], None) == ((0.4, 0.1), "chosen by dva fit on held-out tracks")
    assert smoothing_width([single], None) == ((0.2, 0.2), "chosen by dva fit on held-out tracks")
    with pytest.warns(UserWarning, match="no run chose"):
        assert smoothing_width([final], None)[0] == (0.0, 0.0)
    with pytest.warns(UserWarning, match="median per dimension"):
        assert smoothing_width([folds, older], None)[0] == pytest.approx((0.2, 0.05))
    assert smoothing_width([final], 0.1) == ((0.1, 0.1), "--smooth")
    assert smoothing_width([final], "0.1,0.4") == ((0.1, 0.4), "--smooth")


def test_predict_smooths_with_the_recorded_widths_old_single_and_new_per_dimension(run_dir, tiny_store, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir[0], run)
    metrics = json.loads((run / "metrics.json").read_text())

    def recorded(widths):
        (run / "metrics.json").write_text(json.dumps({**metrics, "smooth_seconds": widths}))
        return values_of(predict("--run", run, "--features", tiny_store, "--out", tmp_path / "recorded.txt"))

    def given(widths):
        return values_of(predict("--run", run, "--features", tiny_store, "--out", tmp_path / "given.txt", "--smooth", widths))

    def values_of(summary):
        return values(summary["out"]), summary["smooth_seconds"]

    old, old_seconds = recorded(0.4)  # the record of a dva that chose one width for both
    assert old_seconds == {"valence": 0.4, "arousal": 0.4}
    np.testing.assert_array_equal(old, given("0.4")[0])
    new, new_seconds = recorded({"valence": 0.0, "arousal": 0.8})
    assert new_seconds == {"valence": 0.0, "arousal": 0.8}
    np.testing.assert_array_equal(new, given("0,0.8")[0])
    np.testing.assert_array_equal(new[:, 0], given("0")[0][:, 0])
    assert np.abs(new[:, 1] - given("0")[0][:, 1]).max() > 1e-4  # arousal smoothed, valence not
