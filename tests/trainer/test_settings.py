"""The trainer's choices: every one is checked before anything is loaded."""

import pytest
from typer.testing import CliRunner

from dva.cli import app


@pytest.mark.parametrize("command", [["fit", "--audio-align", "cubic"], ["ablate", "--grid", "audio_align=nearest,cubic"]])
def test_a_bad_audio_align_is_refused_before_the_store_is_opened(command, tmp_path):
    done = CliRunner().invoke(app, [*command, "--features", str(tmp_path / "no-such-store"), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2
    assert "--audio-align must be one of nearest, linear, not 'cubic'" in done.output  # not the missing store: the choice is checked first
