"""The trainer's choices: every one is checked before anything is loaded."""

import pytest
from typer.testing import CliRunner

from dva.cli import app


@pytest.mark.parametrize("command", [["fit", "--audio-align", "cubic"], ["ablate", "--grid", "audio_align=nearest,cubic"]])
def test_a_bad_audio_align_is_refused_before_the_store_is_opened(command, tmp_path):
    done = CliRunner().invoke(app, [*command, "--features", str(tmp_path / "no-such-store"), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2
    assert "--audio-align must be one of nearest, linear, not 'cubic'" in done.output  # not the missing store: the choice is checked first


@pytest.mark.parametrize("flags,message", [
    (["--va-weights", "0.7"], "--va-weights must be two weights V,A"),
    (["--va-weights", "0.7,x"], "--va-weights must be two weights V,A"),
    (["--va-weights", "0,0"], "not both 0"),
    (["--va-weights", "-1,1"], "0 or more"),
    (["--mse-weight", "-0.1"], "--mse-weight must be 0 or more, not -0.1"),
])
def test_bad_loss_weights_are_one_line_exit_2_before_the_store_is_opened(flags, message, tmp_path):
    done = CliRunner().invoke(app, ["fit", *flags, "--features", str(tmp_path / "no-such-store"), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and message in done.output and len(done.output.strip().splitlines()) == 1


def test_loss_weights_are_settings_of_fit_ablate_and_toml_alike(tmp_path):
    from dva.trainer.ablate import parse_fixed, parse_grid
    from dva.trainer.settings import FitSettings, settings_from

    assert (FitSettings().mse_weight, FitSettings().va_weight_pair) == (0.0, (1.0, 1.0))  # the paper's loss
    assert parse_grid(["va_weights=1+1,0.7+0.3", "mse_weight=0,0.01"]) == {"va_weights": ["1,1", "0.7,0.3"], "mse_weight": [0.0, 0.01]}
    assert parse_fixed(["va-weights=0.7,0.3"]) == {"va_weights": "0.7,0.3"}
    config = tmp_path / "fit.toml"
    config.write_text("va_weights = [0.7, 0.3]\nmse_weight = 0.01\n")
    settings = settings_from(config)
    assert settings.va_weight_pair == (0.7, 0.3) and settings.mse_weight == 0.01
    assert settings_from(config, va_weights="0.5,0.5").va_weight_pair == (0.5, 0.5)  # a flag overrides the file
