"""The timm visual family through timm itself (offline): its data config as tensor preprocessing, local weights files
of tensors only (an HSEmotion-style EfficientNet with an 8-class head), extraction into a store and its rebuild."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dva.cli import app
from dva.errors import ConfigError, EncoderError
from dva.pipeline.encoders import PRESETS, build_visual

TINY = PRESETS["tiny"]["timm_model"]
SET = "timm-dva-tiny-timm"


@pytest.fixture(scope="module")
def tiny():
    return build_visual("timm", TINY)


def _images(n: int, shape=(112, 112), seed: int = 0) -> torch.Tensor:
    """uint8 [n, 3, H, W]: smooth pictures (noise upsampled), where resizing kernels agree to a grey level or so."""
    noise = torch.randint(0, 256, (n, 3, 14, 14), generator=torch.Generator().manual_seed(seed)).float()
    return torch.nn.functional.interpolate(noise, size=shape, mode="bilinear").round().to(torch.uint8)


def _head_model(architecture: str, classes: int = 8):
    """A timm model with a classifier head (as emotion-trained checkpoints are), random but seeded."""
    import timm

    torch.manual_seed(5)
    return timm.create_model(architecture, num_classes=classes).eval()


def _pre_logits(model, pixels):
    with torch.inference_mode():
        return model.forward_head(model.forward_features(pixels), pre_logits=True)


def test_preprocessing_is_timms_eval_transform_of_the_models_data_config(tiny, tmp_path):
    """Our tensor ops against timm's own transform (PIL) for two data configs: the tiny EfficientNet (bicubic,
    ImageNet mean, crop_pct 0.95 at 64 px) and timm's test ResNet loaded from a file (bilinear, 0.5 mean, 160 px)."""
    import timm.data
    from PIL import Image
    from safetensors.torch import save_file

    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), tmp_path / "resnet.safetensors")
    resnet = build_visual("timm", "test_resnet", str(tmp_path / "resnet.safetensors"))
    for encoder in (tiny, resnet):
        config = timm.data.resolve_model_data_config(encoder.model)
        provenance = encoder.provenance()
        assert provenance["input_size"] == list(config["input_size"][1:]) and provenance["crop_pct"] == config["crop_pct"]
        assert (provenance["interpolation"], provenance["mean"], provenance["std"]) == (config["interpolation"], list(config["mean"]), list(config["std"]))
        transform = timm.data.create_transform(**config)
        images = _images(3, (112, 150))
        reference = torch.stack([transform(Image.fromarray(image.permute(1, 2, 0).numpy())) for image in images])
        ours = encoder.preprocess(images)
        assert ours.shape == reference.shape
        difference = (ours - reference).abs()
        assert difference.mean() < 0.01 and difference.max() < 0.05, (provenance["model"], float(difference.max()))
    assert resnet.provenance()["interpolation"] == "bilinear" and tiny.provenance()["interpolation"] == "bicubic"


def test_a_weights_file_as_safetensors_or_pt_gives_the_models_pre_logits_features(tmp_path):
    """An 8-class EfficientNet saved as safetensors and as a .pt checkpoint dict: both load into --timm-model with
    the head dropped (and recorded), and give exactly the features the model computes before its head."""
    from safetensors.torch import save_file

    trained = _head_model("test_efficientnet")
    save_file(trained.state_dict(), tmp_path / "hse.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}, "epoch": 3}, tmp_path / "hse.pt")
    images = _images(4)
    built = {suffix: build_visual("timm", "test_efficientnet", str(tmp_path / f"hse.{suffix}")) for suffix in ("safetensors", "pt")}
    for suffix, encoder in built.items():
        provenance = encoder.provenance()
        assert provenance["head_dropped"] == ["classifier.bias", "classifier.weight"] and provenance["pretrained"] is None
        assert provenance["weights_file"] == str((tmp_path / f"hse.{suffix}").resolve())
        assert encoder.set_name() == f"timm-test_efficientnet-hse.{suffix}"
        pixels = encoder.preprocess(images)
        torch.testing.assert_close(encoder.encode(pixels), _pre_logits(trained, pixels), rtol=0, atol=0)
    assert built["pt"].provenance()["weights_sha256"] == built["safetensors"].provenance()["weights_sha256"]


def test_the_tiny_preset_saved_and_loaded_back_is_the_same_encoder(tiny, tmp_path):
    torch.save(tiny.model.state_dict(), tmp_path / "tiny.pth")
    loaded = build_visual("timm", TINY, str(tmp_path / "tiny.pth"))
    assert loaded.sha256 == tiny.sha256 and loaded.provenance()["head_dropped"] == []
    pixels = tiny.preprocess(_images(3))
    torch.testing.assert_close(loaded.encode(pixels), tiny.encode(pixels), rtol=0, atol=0)


def test_files_that_are_not_tensors_of_the_model_are_one_line_encoder_errors(tiny, tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    torch.save(_head_model("test_resnet").state_dict(), tmp_path / "resnet.pt")
    torch.save({k: v for k, v in tiny.model.state_dict().items() if k != "conv_stem.weight"} | {"fc.weight": torch.zeros(2)}, tmp_path / "partial.pt")
    cases = {
        "list.pt": "holds list that is not a state dict of named tensors",
        "junk.safetensors": "is not a safetensors or torch state-dict file",
        "resnet.pt": "does not fit timm dva-tiny-timm: size mismatch for bn1.weight",
        "partial.pt": "does not fit timm dva-tiny-timm (missing conv_stem.weight; unexpected fc.weight)",
        "missing.pt": "no such file",
    }
    for name, message in cases.items():
        with pytest.raises(EncoderError, match=re.escape(message)) as raised:
            build_visual("timm", TINY, str(tmp_path / name))
        assert "\n" not in str(raised.value)
    with pytest.raises(EncoderError, match="unknown timm model 'efficientnet_b99'"):
        build_visual("timm", "efficientnet_b99")
    with pytest.raises(ConfigError, match="--timm-weights loads into the timm family"):
        from tests.conftest import tiny_settings

        tiny_settings(tmp_path, "val", tmp_path / "store", timm_weights=str(tmp_path / "resnet.pt"))


class _Trap:
    """Unpickling it opens (creates) a file: what any code in a pickle could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_pickled_model_is_refused_in_one_line_with_exit_2_and_never_unpickled(synth_data, tiny, tmp_path):
    torch.save(tiny.model, tmp_path / "enet_b0_8_best_vgaf.pt")  # how HSEmotion publishes its models: the whole module pickled
    done = CliRunner().invoke(app, ["extract", "--data", str(synth_data), "--split", "val", "--out", str(tmp_path / "store"), "--preset", "tiny",
                                    "--only", "visual", "--visual-encoder", "timm", "--timm-weights", str(tmp_path / "enet_b0_8_best_vgaf.pt"), "--json"])
    assert done.exit_code == 2 and len(done.stderr.strip().splitlines()) == 1, done.output
    assert "holds more than tensors (a pickled model?)" in done.stderr and "save model.state_dict()" in done.stderr
    assert not (tmp_path / "store").exists()
    torch.save({"conv_stem.weight": torch.zeros(1), "extra": _Trap(tmp_path / "opened")}, tmp_path / "trap.pt")
    with pytest.raises(EncoderError, match="holds more than tensors"):
        build_visual("timm", TINY, str(tmp_path / "trap.pt"))
    assert not (tmp_path / "opened").exists()  # its code never ran


def test_extract_makes_a_timm_set_with_its_provenance_and_the_same_set_rebuilds(synth_data, tiny, tmp_path):
    """`dva extract --visual-encoder timm` (tiny) on the shared dataset: the set, its record, features that are the
    encoder's of the crops; then what `dva predict --video` does with a run's record: the settings that make it again."""
    from dva.pipeline.provenance import build_encoders, feature_sets
    from dva.pipeline.reading import read_crop
    from dva.pipeline.rebuild import check_rebuilt, rebuild_settings
    from dva.stores import open_store

    store = tmp_path / "store"
    done = CliRunner().invoke(app, ["extract", "--data", str(synth_data), "--split", "val", "--out", str(store), "--preset", "tiny",
                                    "--only", "visual", "--visual-encoder", "timm", "--device", "cpu", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["extracted"]
    with open_store(str(store), mode="r") as opened:
        info = opened.feature_sets()[SET]
        track = opened.tracks("val")[0]
        stored = opened.read_track("val", track, [SET])
    assert info["modality"] == "visual" and info["dim"] == 64 and info["encoder"] == tiny.provenance()
    preprocessing = {k: v for k, v in info["preprocessing"].items() if k != "framing"}  # the crops' framing: tests/faces/test_framing.py
    assert preprocessing == {"visual_source": "crops", "device": "cpu", "compute_dtype": "float32"}
    assert stored[f"{SET}/data"].shape == (stored[f"{SET}/mask"].shape[0], 64) and stored[f"{SET}/mask"].any()
    row = int(stored[f"{SET}/mask"].argmax())
    crop = read_crop(synth_data / "cropped_aligned" / track / f"{row + 1:05d}.jpg")
    expected = tiny.encode(tiny.preprocess(crop[None]))[0].numpy()
    np.testing.assert_allclose(stored[f"{SET}/data"][row].astype(np.float32), expected, rtol=2e-3, atol=1e-5)  # float16 in the store

    settings = rebuild_settings(SET, info, data=str(synth_data), split="val", out=str(tmp_path / "again"), device="cpu", progress=False)
    assert (settings.visual_encoder, settings.timm_model, settings.timm_weights, settings.only) == ("timm", TINY, None, "visual")
    visual, audio = build_encoders(settings, "cpu")
    check_rebuilt(SET, info, feature_sets(settings, visual, audio)[SET], "run")  # raises RunError naming what differs


def test_a_set_made_from_a_weights_file_rebuilds_from_that_file_and_other_weights_in_it_are_named(synth_data, tiny, tmp_path):
    from dva.errors import RunError
    from dva.pipeline.provenance import build_encoders, feature_sets
    from dva.pipeline.rebuild import check_rebuilt, rebuild_settings
    from tests.conftest import tiny_settings

    state = tiny.model.state_dict()
    torch.save(state, tmp_path / "mine.pt")
    settings = tiny_settings(synth_data, "val", tmp_path / "store", only="visual", visual_encoder="timm", timm_weights=str(tmp_path / "mine.pt"))
    name, info = next(iter(feature_sets(settings, *build_encoders(settings, "cpu")).items()))
    assert name == "timm-dva-tiny-timm-mine.pt" and info["encoder"]["weights_file"] == str((tmp_path / "mine.pt").resolve())

    def rebuilt():
        again = rebuild_settings(name, info, data=str(synth_data), split="all", out=str(tmp_path / "work"), device="cpu", progress=False)
        assert again.timm_weights == info["encoder"]["weights_file"]
        return feature_sets(again, *build_encoders(again, "cpu"))[name]

    check_rebuilt(name, info, rebuilt(), "run")
    torch.save(state | {"conv_stem.weight": state["conv_stem.weight"] + 1}, tmp_path / "mine.pt")  # the file changed since
    with pytest.raises(RunError, match="encoder.weights_sha256"):
        check_rebuilt(name, info, rebuilt(), "run")
