"""Temporal models of other packages (`dva.temporal` entry points): the shipped example examples/dva-mamba, installed for
real with pip into a folder of its own (put on sys.path for this module only: the shared venv is left as it is), then
used by `dva ablate`, `dva fit`, `dva predict` and `dva predict --video` in-process; and the run of a plugin that is gone
or of another version."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dva.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dva-mamba"
TINY = ["--prompt", "none", "--epochs", "1", "--patience", "1", "--hidden", "16", "--temporal-layers", "1", "--seq-len", "32", "--stride", "32", "--batch-size", "16"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def mamba_installed(tmp_path_factory):
    """`pip install --no-deps --target DIR examples/dva-mamba` (a copy: the build leaves nothing in the repository), DIR
    on sys.path while this module runs: importlib.metadata finds the entry point there, as in any environment."""
    work = tmp_path_factory.mktemp("dva-mamba")
    source, target = work / "source", work / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m == "dva_mamba" or m.startswith("dva_mamba.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def mamba_run(mamba_installed, tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("mamba-run") / "run"
    done = _invoke("fit", "--features", tiny_store, "--out", out, "--temporal", "mamba", *TINY, "--json")
    assert done.exit_code == 0, done.output
    return out, json.loads(done.stdout)


def test_the_installed_plugin_is_listed_by_name_without_being_imported(mamba_installed):
    from dva.trainer.model.temporal import registered
    from dva.trainer.settings import temporal_choices

    sys.modules.pop("dva_mamba", None)
    assert registered()[-1] == "mamba" and temporal_choices() == ("gru", "tcn", "transformer", "mamba")
    assert "dva_mamba" not in sys.modules  # listing reads metadata only: the plugin's code is imported when a model is built


def test_the_mamba_encoder_keeps_the_temporal_contract_and_ignores_masked_features(mamba_installed):
    from dva.trainer.model.compose import ModelSettings
    from dva.trainer.model.temporal import build_temporal

    for bidirectional in (False, True):
        torch.manual_seed(0)
        model = build_temporal("mamba", 6, ModelSettings(temporal="mamba", hidden=8, temporal_layers=1, bidirectional=bidirectional)).eval()
        assert type(model).__module__ == "dva_mamba" and type(model.forward_mamba).__name__ == "MambaModel"  # transformers' own
        g = torch.Generator().manual_seed(1)
        x, mask = torch.randn(2, 20, 6, generator=g), torch.rand(2, 20, generator=g) > 0.4
        zeroed = torch.where(mask[..., None], x, torch.zeros(()))  # how VAModel hands it masked frames
        other = torch.where(mask[..., None], x, 100 * torch.randn(2, 20, 6, generator=g))
        with torch.no_grad():
            first, second = model(zeroed, mask), model(other, mask)
            assert first.shape == (2, 20, 8) and model(x).shape == (2, 20, 8)
            torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6)  # every output, valid frame or not
            assert not torch.allclose(model(other), first)  # without the mask the change is seen
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as dva runs every temporal model on a GPU
                assert torch.isfinite(model(zeroed, mask).float()).all()


def test_ablate_grids_over_gru_and_the_installed_mamba_with_folds_and_paired_intervals(mamba_installed, tiny_store, tmp_path):
    done = _invoke("ablate", "--features", tiny_store, "--grid", "temporal=gru,mamba", "--folds", "2", "--out", tmp_path,
                   *(f"--set={k.lstrip('-').replace('-', '_')}={v}" for k, v in zip(TINY[::2], TINY[1::2])))
    assert done.exit_code == 0, done.output
    with (tmp_path / "results.csv").open(newline="") as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"temporal=gru", "temporal=mamba"} and {row["figure"] for row in rows.values()} == {"oof"}
    mamba = rows["temporal=mamba"]
    assert json.loads(mamba["settings"])["temporal"] == "mamba" and mamba["p_va"] not in ("", "nan")
    assert float(mamba["ci_low"]) <= float(mamba["diff"]) <= float(mamba["ci_high"])  # against the gru baseline, paired over videos
    assert rows["temporal=gru"]["diff"] == ""
    assert "| temporal=mamba |" in (tmp_path / "results.md").read_text()


def test_a_mamba_run_records_its_plugin_and_predicts_a_split(mamba_run, tiny_store, tmp_path):
    run, report = mamba_run
    assert report["best_val"]["p_va"] is not None
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["temporal"] == "mamba"
    assert config["temporal_plugin"] == {"name": "mamba", "value": "dva_mamba:MambaTemporal", "distribution": "dva-mamba", "version": "0.1.0"}
    done = _invoke("predict", "--run", run, "--run", run, "--features", tiny_store, "--split", "val", "--format", "csv", "--out", tmp_path)
    assert done.exit_code == 0 and "ensemble of 2 run(s)" in done.stdout, done.output
    assert len(list(tmp_path.glob("*.csv"))) >= 1


def test_a_mamba_run_predicts_a_recording(mamba_run, people, tmp_path):
    pytest.importorskip("dlib", reason="the face stage needs dva[faces]")
    out = tmp_path / "out"
    done = _invoke("predict", "--video", people / "talking.mp4", "--run", mamba_run[0], "--out", out)
    assert done.exit_code == 0, done.output
    lines = (out / "talking.csv").read_text().splitlines()
    assert lines[0] == "frame,time,valence,arousal,face" and len(lines) == 121  # a row per decoded frame
    values = [[float(v) for v in line.split(",")[2:4]] for line in lines[1:]]
    assert all(-1 <= v <= 1 for row in values for v in row) and (out / "talking.png").is_file()


def test_a_run_whose_plugin_is_gone_is_refused_and_one_of_another_version_warned(mamba_run, tiny_store, tmp_path, monkeypatch):
    run = mamba_run[0]
    other = tmp_path / "other-version"
    shutil.copytree(run, other)
    checkpoint = torch.load(other / "best.pt", weights_only=True)
    checkpoint["temporal_plugin"]["version"] = "0.0.9"
    torch.save(checkpoint, other / "best.pt")
    done = _invoke("predict", "--run", other, "--features", tiny_store, "--split", "val", "--format", "csv", "--out", tmp_path / "csv")
    warned = [line for line in done.stderr.splitlines() if "dva-mamba 0.0.9" in line]
    assert done.exit_code == 0 and len(warned) == 1, done.output  # read twice (the check, then the model): said once
    assert warned[0].startswith("dva: warning: ") and "dva-mamba 0.1.0 is installed here" in warned[0]

    from dva.trainer.ablate import result_key
    from dva.trainer.plugins import plugin_names
    from dva.trainer.settings import FitSettings

    installed = result_key(FitSettings(temporal="mamba"), {})
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not Path(p, "dva_mamba").is_dir()])
    assert plugin_names() == ()
    assert result_key(FitSettings(temporal="mamba"), {}) != installed  # an ablation's key holds the plugin's distribution and version
    done = _invoke("predict", "--run", run, "--features", tiny_store, "--split", "val", "--format", "csv", "--out", tmp_path / "gone")
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    assert done.stderr.strip() == (f"dva: error: {run}: its temporal model 'mamba' comes from dva-mamba 0.1.0, which is not installed here: "
                                   "pip install 'dva-mamba==0.1.0'")
    done = _invoke("fit", "--features", tiny_store, "--out", tmp_path / "new", "--temporal", "mamba")
    assert done.exit_code == 2 and "--temporal must be one of gru, tcn, transformer, not 'mamba'" in done.stderr


def test_a_plugin_that_cannot_be_imported_is_one_line_naming_its_package(tiny_store, tmp_path, monkeypatch):
    """A real installed package (pip, as above) whose module fails on import, as a plugin missing a dependency does."""
    source, target = tmp_path / "dva-broken", tmp_path / "site"
    (source / "dva_broken").mkdir(parents=True)
    (source / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
                                           '[project]\nname = "dva-broken"\nversion = "0.3"\n'
                                           '[project.entry-points."dva.temporal"]\nbroken = "dva_broken:Model"\n'
                                           '[tool.setuptools]\npackages = ["dva_broken"]\n')
    (source / "dva_broken" / "__init__.py").write_text("import a_module_nobody_installed\n")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    monkeypatch.syspath_prepend(str(target))
    said = ("dva: error: --temporal broken: dva-broken 0.3 (dva_broken:Model) cannot be loaded: "
            "ModuleNotFoundError: No module named 'a_module_nobody_installed'")
    for command in (["fit", "--out", tmp_path / "run", "--temporal", "broken", *TINY], ["ablate", "--out", tmp_path / "ablate", "--grid", "temporal=gru,broken"]):
        done = _invoke(*command, "--features", tiny_store)
        assert done.exit_code == 2 and "Traceback" not in done.output and done.stderr.strip() == said, done.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "ablate" / "results.csv").exists()  # said before anything trained
