"""The command-line contract: bad usage or bad input -> one line on stderr, exit code 2, no traceback."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dva.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["scan", "/no/such/data"], "no such dataset folder"),
        (["scan", ".", "--split", "training"], "unknown split"),
        (["extract", "--data", "/no/such/data", "--split", "train"], "no such dataset folder"),
        (["extract", "--data", ".", "--split", "train", "--preset", "huge"], "unknown --preset"),
        (["info", "/no/such/store"], "/no/such/store"),
        (["fit", "--features", "/no/such/store"], "/no/such/store"),
        (["fit", "--features", "/no/such/store", "--fusion", "sum"], "--fusion must be one of"),
        (["fit", "--features", "/no/such/store", "--prompt", "soft"], "use --prompt learnable --labels soft"),
        (["fit", "--features", "/no/such/store", "--prompt", "hard"], "use --prompt fixed --labels hard"),
        (["fit", "--features", "/no/such/store", "--prompt", "none", "--readout", "prompt"], "--readout prompt reads the prompt head"),
        (["ablate", "--features", "/no/such/store", "--grid", "prompt=none,soft"], "use --prompt learnable --labels soft"),
        (["predict", "--run", "/no/such/run", "--features", "x", "--out", "y"], "no best.pt"),
        (["ablate", "--features", "/no/such/store", "--grid", "colour=red,blue"], "unknown setting 'colour'"),
        (["ablate", "--features", "/no/such/store", "--grid", "epochs=ten"], "not a valid int"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, message):
    code, _, stderr = run(*args)
    assert code == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_unknown_option_is_a_usage_error():
    code, _, _ = run("scan", ".", "--colour")
    assert code == 2


def test_real_process_prints_no_traceback_and_help_is_fast():
    dva = [sys.executable, "-m", "dva.cli"]
    done = subprocess.run([*dva, "scan", "/no/such/data"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.startswith("dva: error:")
    # --help must not import the heavy stack (torch, decord, open_clip)
    probe = "import sys; from dva.cli import app; assert not any(m in sys.modules for m in ('torch', 'decord', 'open_clip', 'zarr')), sorted(sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


@pytest.mark.parametrize("flag, window_input", [([], "native"), (["--audio-pad"], "padded"), (["--no-audio-pad"], "native")])
def test_audio_pad_flag_reaches_the_settings_and_the_encoders_provenance(monkeypatch, flag, window_input):
    from dva.pipeline import extract
    from dva.pipeline.provenance import build_encoders

    seen = []
    monkeypatch.setattr(extract, "run_extract", lambda settings: seen.append(settings) or extract.ExtractReport(store=settings.out, split=settings.split))
    code, _, stderr = run("extract", "--data", ".", "--split", "train", "--preset", "tiny", *flag)
    assert code == 0, stderr
    _, audio = build_encoders(seen[0], "cpu")
    assert audio.provenance()["window_input"] == window_input
