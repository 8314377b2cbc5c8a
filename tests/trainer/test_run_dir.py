"""Run directories: fit and predict share modules without importing each other; checkpoints load strictly."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dva.cli import app
from dva.errors import RunError
from dva.trainer.results.run_dir import CHECKPOINT, load_run, read_checkpoint


@pytest.mark.parametrize("module, never", [("dva.trainer.results.predict", "dva.trainer.fit"), ("dva.trainer.fit", "dva.trainer.results.predict")])
def test_fit_and_predict_do_not_import_each_other(module, never):
    probe = f"import sys, {module}; assert {never!r} not in sys.modules, 'imported'"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_run_loads_with_every_trainable_key(run_dir):
    out, _ = run_dir
    _, model, _, _ = load_run(out, device="cpu")
    saved = read_checkpoint(out)["state"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert trainable and frozen  # the run has a learnable prompt over the frozen CLIP text tower
    assert trainable <= set(saved) and not frozen & set(saved)  # every trained weight saved, no frozen one
    assert set(saved) == set(model.state_dict()) - frozen  # buffers (the prompt's token prefix ...) too
    for name in saved:  # each loaded exactly as saved
        assert torch.equal(model.state_dict()[name], saved[name]), name


@pytest.mark.parametrize("tamper", ["drop", "add", "reshape"])
def test_a_checkpoint_that_does_not_match_its_model_is_refused_by_name(run_dir, tmp_path, tamper):
    out, _ = run_dir
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    checkpoint = read_checkpoint(copy)
    key = "regression.weight"
    if tamper == "drop":
        del checkpoint["state"][key]
    elif tamper == "add":
        checkpoint["state"]["head.extra"] = torch.zeros(1)
    else:
        checkpoint["state"][key] = torch.zeros(3, 3)
    torch.save(checkpoint, copy / CHECKPOINT)
    with pytest.raises(RunError, match="does not match") as error:
        load_run(copy, device="cpu")
    assert (key if tamper != "add" else "head.extra") in str(error.value)


def test_a_run_of_dva_0_1_still_loads_with_its_prompt_split_into_two_settings(run_dir, tmp_path):
    out, _ = run_dir
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    checkpoint = read_checkpoint(copy)
    old = {k: v for k, v in checkpoint["settings"].items() if k not in ("labels", "readout", "stitch")}
    checkpoint["settings"] = {**old, "prompt": "hard"}
    del checkpoint["state"]["prompt_head.ctx"]  # fixed prompts have no context vectors
    torch.save(checkpoint, copy / CHECKPOINT)
    settings, model, _, _ = load_run(copy, device="cpu")
    assert (settings.prompt, settings.labels, settings.readout, settings.stitch) == ("fixed", "hard", "regression", "mean")
    assert model.prompt_head.text_encoder is None


class TouchOnUnpickle:
    """Unpickling it creates a file: the stand-in for code a shared run directory could run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_that_would_run_code_is_refused_by_name_and_nothing_runs(run_dir, tiny_store, tmp_path):
    out, _ = run_dir
    copy, marker = tmp_path / "shared", tmp_path / "ran"
    shutil.copytree(out, copy)
    checkpoint = read_checkpoint(copy)
    checkpoint["provenance"]["note"] = TouchOnUnpickle(marker)  # otherwise the valid checkpoint
    torch.save(checkpoint, copy / CHECKPOINT)
    result = CliRunner().invoke(app, ["predict", "--run", str(copy), "--features", str(tiny_store), "--out", str(tmp_path / "x.txt")])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(copy / CHECKPOINT) in result.stderr and "not written by dva" in result.stderr
    assert not marker.exists() and not (tmp_path / "x.txt").exists()


def test_a_saved_state_is_a_copy_that_later_training_does_not_change():
    from dva.trainer.results.run_dir import trainable_state

    model = torch.nn.Linear(2, 2)
    state = trainable_state(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(state["weight"], model.weight)
