"""The temporal encoders (`--temporal gru|tcn|transformer`) and long windows, against independent references."""

import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dva.cli import app
from dva.trainer.model.compose import ModelSettings, VAModel
from dva.trainer.model.temporal import build_temporal, registered
from dva.trainer.model.temporal.transformer import sinusoids
from dva.trainer.settings import FitSettings

runner = CliRunner()
B, T, D = 2, 24, 6


def encoder(kind: str, **settings) -> nn.Module:
    torch.manual_seed(0)
    return build_temporal(kind, D, ModelSettings(temporal=kind, **{"hidden": 8, "heads": 2, **settings})).eval()


def dependence(model: nn.Module, frames: int, at: int) -> torch.Tensor:
    """bool [frames]: which input frames the output at frame `at` depends on (its gradient is nonzero), in float64."""
    x = torch.randn(1, frames, D, dtype=torch.float64, requires_grad=True)
    model.double()(x)[0, at].sum().backward()
    return x.grad[0].abs().sum(dim=1) > 0


@pytest.mark.parametrize("kind", ["gru", "tcn", "transformer"])
def test_every_temporal_encoder_maps_frames_to_hidden_with_and_without_a_mask_and_under_bf16_autocast(kind):
    assert kind in registered()
    model, x = encoder(kind), torch.randn(B, T, D)
    mask = torch.rand(B, T) > 0.3
    assert model(x).shape == model(x, mask).shape == (B, T, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(x, mask).float()).all()


@pytest.mark.parametrize("kernel, seq_len, levels", [(3, 20, 3), (5, 300, 6)])
def test_tcn_receptive_field_measured_by_gradients_is_the_formula_and_covers_the_window(kernel, seq_len, levels):
    model = encoder("tcn", tcn_kernel=kernel, seq_len=seq_len, hidden=4)
    field = 1 + 2 * (kernel - 1) * (2**levels - 1)  # two convolutions of `kernel` taps per level, dilations 1, 2, 4, ...
    assert len(model.blocks) == levels and model.field == field >= seq_len > 1 + 2 * (kernel - 1) * (2 ** (levels - 1) - 1)
    frames, at = field + 20, field // 2 + 10  # room on both sides: the field ends inside the input
    seen = dependence(model, frames, at)
    assert seen.nonzero().flatten().tolist() == list(range(at - field // 2, at + field // 2 + 1))  # |t - s| <= (field - 1) / 2


@pytest.mark.parametrize("kind", ["tcn", "transformer"])
def test_features_at_masked_frames_do_not_change_outputs_at_valid_frames(kind):
    model = encoder(kind, seq_len=T)
    g = torch.Generator().manual_seed(1)
    x, mask = torch.randn(B, T, D, generator=g), torch.rand(B, T, generator=g) > 0.4
    other = torch.where(mask[..., None], x, 100 * torch.randn(B, T, D, generator=g))
    with torch.no_grad():
        first, second = model(x, mask), model(other, mask)
    torch.testing.assert_close(first[mask], second[mask], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(other).detach(), first)  # without the mask the same change is seen


def test_sinusoids_are_the_vaswani_formula_for_any_length():
    table = sinusoids(457, 8)
    for pos, i in [(0, 0), (3, 1), (300, 2), (456, 3)]:
        angle = pos / 10000 ** (2 * i / 8)
        assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
        assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_a_transformer_trained_on_300_frames_runs_on_other_lengths_and_its_positions_matter():
    model = encoder("transformer", seq_len=300).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(B, 300, D)).pow(2).mean().backward()
    optimiser.step()
    model.eval()
    same = torch.randn(1, 1, D).expand(1, 450, D)  # every frame alike: only the positions tell them apart
    for frames in (17, 450):
        out = model(same[:, :frames])
        assert out.shape == (1, frames, 8) and torch.isfinite(out).all()
    assert (out[0, 0] - out[0, 400]).abs().max() > 1e-3


def test_a_transformer_window_without_a_valid_frame_gives_finite_outputs_in_training_and_in_evaluation():
    model = encoder("transformer").train()
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0] = False
    x = torch.where(mask[..., None], torch.randn(B, T, D), torch.zeros(()))  # masked frames arrive zeroed
    x.requires_grad_(True)
    out = model(x, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():  # as dva predict runs it: torch's fused inference path, where no key at all gives NaN
        assert torch.isfinite(model.eval()(x, mask)).all()


def test_the_default_gru_is_the_papers_gru_built_as_before_the_registry():
    torch.manual_seed(0)
    model = VAModel(ModelSettings.of(FitSettings(prompt="none", hidden=16)), 12, 10)
    torch.manual_seed(0)  # the encoders as dva built them before the registry: projection, GRU, per modality in order
    old = {m: (nn.Sequential(nn.Linear(dim, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.1)), nn.GRU(16, 16, batch_first=True))
           for m, dim in (("visual", 12), ("audio", 10))}
    for name, (project, gru) in old.items():
        ours = model.encoders[name].state_dict()
        theirs = {**{f"project.{k}": v for k, v in project.state_dict().items()}, **{f"gru.{k}": v for k, v in gru.state_dict().items()}}
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("args, says", [
    (["--temporal", "lstm"], "--temporal must be one of gru, tcn, transformer"),
    (["--tcn-kernel", "4"], "--tcn-kernel must be odd"),
    (["--temporal-layers", "0"], "--temporal-layers must be at least 1"),
    (["--temporal", "transformer", "--hidden", "30", "--heads", "4"], "must be divisible by --heads"),
])
def test_bad_temporal_flags_are_refused_in_one_line(args, says, tmp_path):
    result = runner.invoke(app, ["fit", "--features", str(tmp_path / "no-store"), *args])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output


def test_ablate_and_config_files_take_the_temporal_settings(tmp_path):
    from dva.trainer.ablate import parse_fixed, parse_grid
    from dva.trainer.settings import settings_from

    assert parse_grid(["temporal=gru,tcn,transformer", "seq-len=64,300"]) == {"temporal": ["gru", "tcn", "transformer"], "seq_len": [64, 300]}
    assert parse_fixed(["tcn-kernel=5", "temporal_layers=3"]) == {"tcn_kernel": 5, "temporal_layers": 3}
    result = runner.invoke(app, ["ablate", "--features", str(tmp_path), "--grid", "temporal=gru,lstm"])
    assert result.exit_code == 2 and "--temporal must be one of" in result.output
    config = tmp_path / "fit.toml"
    config.write_text('temporal = "tcn"\ntcn_kernel = 5\n')
    settings = settings_from(config)
    assert (settings.temporal, settings.tcn_kernel, ModelSettings.of(settings).tcn_kernel) == ("tcn", 5, 5)


def test_a_run_written_before_the_temporal_settings_loads_as_the_gru(run_dir, tmp_path):
    import shutil

    from dva.trainer.results.run_dir import load_run

    old = tmp_path / "old-run"
    shutil.copytree(run_dir[0], old)
    checkpoint = torch.load(old / "best.pt", weights_only=True)
    for name in ("temporal", "tcn_kernel", "temporal_layers"):
        del checkpoint["settings"][name]
    torch.save(checkpoint, old / "best.pt")
    settings, model, _, _ = load_run(old, device="cpu")  # strict: every saved key is the GRU's
    assert settings.temporal == "gru" and type(model.encoders["visual"]).__name__ == "GRUEncoder"


@pytest.mark.parametrize("kind", ["tcn", "transformer"])
def test_fit_with_300_frame_windows_trains_and_predicts_the_test_split(kind, tiny_store, tmp_path):
    out = tmp_path / "run"
    fit = ["fit", "--features", str(tiny_store), "--out", str(out), "--temporal", kind, "--seq-len", "300", "--stride", "150",
           "--epochs", "1", "--hidden", "16", "--heads", "2", "--temporal-layers", "1", "--prompt", "none", "--json"]
    result = runner.invoke(app, fit)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert (settings["temporal"], settings["seq_len"]) == (kind, 300)
    state = torch.load(out / "best.pt", weights_only=True)["state"]
    if kind == "tcn":  # kernel 3: seven levels reach 509 frames, six only 253
        assert {k.split(".")[3] for k in state if k.startswith("encoders.visual.blocks.")} == {str(i) for i in range(7)}
    submission = tmp_path / "submission.txt"
    result = runner.invoke(app, ["predict", "--run", str(out), "--features", str(tiny_store), "--split", "test", "--out", str(submission)])
    assert result.exit_code == 0, result.output
    rows = submission.read_text().splitlines()[1:]
    values = torch.tensor([[float(v) for v in row.split(",")[1:]] for row in rows])
    assert len(rows) > 300 and values.abs().max() <= 1 and values.std(dim=0).min() > 0  # tracks shorter than a window get predictions too
