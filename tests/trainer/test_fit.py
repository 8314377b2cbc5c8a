"""`dva fit` / `dva predict` / `dva ablate` on a store extracted from the synthetic dataset."""

import json
import subprocess
import sys

import numpy as np
import pytest

from dva.data.aff_wild2 import scan
from dva.trainer.fit import fit, load_features, train
from dva.trainer.settings import FitSettings
from tests.conftest import BLOCKED, TINY_VISUAL

QUICK = dict(epochs=4, patience=4, hidden=32, seq_len=32, stride=16, batch_size=16)


def test_fit_writes_the_run_directory_and_beats_a_constant(run_dir):
    out, report = run_dir
    for name in ("config.json", "metrics.json", "best.pt", "curves.png", "traces.png", "va_plane.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_val"]["p_va"] == pytest.approx(report["best_val"]["p_va"])
    assert report["best_val"]["p_va"] > 0.2  # a constant predictor scores 0
    assert metrics["final"]["epoch"] == metrics["epochs"][-1]["epoch"] and metrics["final"]["p_va"] == pytest.approx(metrics["epochs"][-1]["p_va"])
    assert set(report["figures"]) == {"best_val", "final", "best_val_smoothed"}  # every figure says what it is
    chosen, by_seconds = metrics["smoothing"]["seconds"], metrics["smoothing"]["ccc_by_seconds"]
    assert metrics["smooth_seconds"] == chosen and set(chosen.values()) <= {0.0, 0.1, 0.2, 0.4, 0.8} and metrics["smoothing"]["selected_on"] == "val"
    assert metrics["best_val_smoothed"]["ccc_v"] == pytest.approx(max(by_seconds["valence"].values()))  # each dimension its own best width
    assert metrics["best_val_smoothed"]["ccc_a"] == pytest.approx(max(by_seconds["arousal"].values()))
    assert set(metrics["per_track"]) == set(json.loads((out / "config.json").read_text())["val_tracks"])
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["fusion"] == "hierarchical" and config["store"]["feature_sets"][TINY_VISUAL]["encoder"]["weights_sha256"]
    assert list((out / "val_predictions").glob("*.txt"))


def test_predict_per_track_writes_an_abaw_file_per_test_track_with_every_row(run_dir, tiny_store, synth_data, tmp_path):
    out, _ = run_dir
    command = [sys.executable, "-c", BLOCKED, "predict", "--run", str(out), "--features", str(tiny_store), "--split", "test", "--out", str(tmp_path), "--format", "per-track"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for track in scan(synth_data, split="test", tasks=("va",)).tracks:
        lines = (tmp_path / f"{track.track}.txt").read_text().splitlines()
        assert lines[0] == "valence,arousal"
        assert len(lines) - 1 == track.n_frames  # the sample file's rows for this track
        values = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
        assert np.all(np.abs(values) <= 1) and values.std(axis=0).min() > 0


def test_same_seed_same_numbers_and_store_is_read_once_for_many_variants(tiny_store, monkeypatch):
    import zarr

    # spies, not fakes: zarr opens and reads as ever, the test counts the store's groups opened and arrays read
    reads = []
    real_open, real_get = zarr.open_group, zarr.Array.__getitem__
    monkeypatch.setattr(zarr, "open_group", lambda *a, **k: reads.append("open") or real_open(*a, **k))
    monkeypatch.setattr(zarr.Array, "__getitem__", lambda self, key: reads.append(self.path) or real_get(self, key))
    features = load_features(str(tiny_store))
    assert "open" in reads and len(reads) > 20  # the spies see the store being read
    reads.clear()
    first = train(FitSettings(features=str(tiny_store), **QUICK), features, progress=False)
    second = train(FitSettings(features=str(tiny_store), **QUICK), features, progress=False)
    other = train(FitSettings(features=str(tiny_store), **{**QUICK, "fusion": "concat", "epochs": 1}), features, progress=False)
    assert reads == []  # three variants, not one more read of the store
    timing = ("seconds", "eval_seconds")
    assert [{k: v for k, v in row.items() if k not in timing} for row in first.history] == [{k: v for k, v in row.items() if k not in timing} for row in second.history]
    np.testing.assert_array_equal(first.val_pred, second.val_pred)
    assert np.isfinite(other.history[0]["loss"])


@pytest.mark.parametrize("fusion", ["concat", "xattn", "gated", "hierarchical"])
@pytest.mark.parametrize("prompt", ["none", "fixed", "learnable"])
def test_every_fusion_and_prompt_variant_trains(tiny_store, fusion, prompt, request):
    features = request.getfixturevalue("_features")
    result = train(FitSettings(features=str(tiny_store), fusion=fusion, prompt=prompt, **{**QUICK, "epochs": 1}), features, progress=False)
    assert np.isfinite(result.history[0]["loss"])


def test_the_loss_weights_reach_the_training_loss(tiny_store, request):
    """With a learning rate too small to move the model, the first epoch's loss is the loss of one model: doubling
    both CCC weights doubles it, and an MSE term adds to it."""
    features = request.getfixturevalue("_features")
    frozen = {**QUICK, "epochs": 1, "lr": 1e-20, "prompt": "none"}

    def first_loss(**loss_settings):
        return train(FitSettings(features=str(tiny_store), **frozen, **loss_settings), features, progress=False).history[0]["loss"]

    paper = first_loss()
    assert first_loss(va_weights="2,2") == pytest.approx(2 * paper, rel=1e-5)
    assert first_loss(mse_weight=1.0) > paper + 1e-3


@pytest.fixture(scope="module")
def _features(tiny_store):
    return load_features(str(tiny_store))


def test_ablate_grid_from_one_load_resumes_and_runs_without_decoders(tiny_store, tmp_path):
    out = tmp_path / "ablate"
    command = [sys.executable, "-c", BLOCKED, "ablate", "--features", str(tiny_store), "--grid", "fusion=concat,hierarchical",
               "--grid", "prompt=none,learnable", "--set", "epochs=2", "--set", "hidden=32", "--set", "seq_len=32", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| fusion=")]
    assert len(rows) == 4
    assert (out / "results.md").is_file() and (out / "ablation.png").is_file()
    assert len((out / "results.csv").read_text().splitlines()) == 5
    again = subprocess.run(command, capture_output=True, text=True)  # everything done: nothing retrained
    assert again.returncode == 0 and len((out / "results.csv").read_text().splitlines()) == 5


def test_config_file_holds_settings_and_flags_override_it(tmp_path):
    from dva.errors import ConfigError
    from dva.trainer.settings import settings_from

    config = tmp_path / "fit.toml"
    config.write_text('fusion = "gated"\nsigma = 0.2\ndescriptions = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]\n')
    settings = settings_from(config, sigma=0.5)
    assert settings.fusion == "gated" and settings.sigma == 0.5 and settings.descriptions[8] == "i"
    config.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        settings_from(config)


def test_ablate_over_local_dask_workers_gives_the_same_numbers(tiny_store, tmp_path):
    from dva.trainer.ablate import ablate

    base = FitSettings(features=str(tiny_store), **{**QUICK, "epochs": 2})
    grid = {"fusion": ["concat", "gated"]}
    here = ablate(base, grid, seeds=1, out=tmp_path / "here", progress=False)
    there = ablate(base, grid, seeds=1, out=tmp_path / "there", workers=2, progress=False)
    assert [row["variant"] for row in here] == [row["variant"] for row in there]
    for a, b in zip(here, there):
        assert a["p_va"] == pytest.approx(b["p_va"], abs=1e-6)


def test_fit_and_predict_on_an_hdf5_store_give_what_they_give_on_zarr(run_dir, tiny_store, tmp_path):
    from typer.testing import CliRunner

    from dva.cli import app

    def dva(*args):
        result = CliRunner().invoke(app, [str(arg) for arg in args])
        assert result.exit_code == 0, result.stderr
        return result.stdout

    h5 = tmp_path / "features.h5"
    dva("convert", tiny_store, h5)
    quick = ["--epochs", "2", "--hidden", "16", "--seq-len", "32", "--stride", "16", "--prompt", "none", "--json"]
    reports = [json.loads(dva("fit", "--features", store, "--out", tmp_path / name, *quick)) for store, name in ((h5, "on-h5"), (tiny_store, "on-zarr"))]
    assert reports[0]["best_val"] == reports[1]["best_val"] and reports[0]["best_val"]["p_va"] > 0
    run, _ = run_dir
    for store, name in ((h5, "h5.txt"), (tiny_store, "zarr.txt")):
        dva("predict", "--run", run, "--features", store, "--out", tmp_path / name)
    lines = (tmp_path / "h5.txt").read_text().splitlines()
    assert len(lines) > 100 and lines == (tmp_path / "zarr.txt").read_text().splitlines()
