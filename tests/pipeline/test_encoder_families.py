"""The registry and every family's tiny preset, through the real transformers / open_clip code paths (offline)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dva.errors import EncoderError
from dva.pipeline.encoders import AUDIO_FAMILIES, PRESETS, VISUAL_FAMILIES, AudioEncoder, VisualEncoder, build_audio, build_visual, register_encoder
from dva.pipeline.encoders.ast import DEFAULT_AST, AstEncoder
from dva.pipeline.encoders.base import set_name
from dva.pipeline.encoders.clip import ClipEncoder
from dva.pipeline.encoders.wav2vec2 import Wav2Vec2Encoder

TINY = PRESETS["tiny"]
VISUAL_MODELS = {"clip": (TINY["clip_model"], TINY["clip_pretrained"]), "hf": (TINY["hf_model"], None), "timm": (TINY["timm_model"], None)}
AUDIO_MODELS = {"ast": TINY["ast_model"], "wav2vec2": TINY["wav2vec2_model"]}
NAME = r"^[A-Za-z0-9._-]+$"


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """A tone that swells and fades, in noise: 16 kHz mono float32."""
    t = np.arange(int(16000 * seconds)) / 16000
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) + rng.normal(0, 0.05, t.size)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def visual():
    return {family: build_visual(family, *VISUAL_MODELS[family]) for family in VISUAL_FAMILIES}


@pytest.fixture(scope="module")
def audio():
    return {family: build_audio(family, AUDIO_MODELS[family]) for family in AUDIO_FAMILIES}


# --------------------------------------------------------------------------- the registry


def test_families_come_from_the_registry_and_every_preset_names_each_family():
    assert VISUAL_FAMILIES == ("clip", "hf", "timm") and AUDIO_FAMILIES == ("ast", "wav2vec2")
    for preset in PRESETS.values():
        assert set(preset) == {"clip_model", "clip_pretrained", "ast_model", "hf_model", "timm_model", "wav2vec2_model"}


def test_an_unknown_family_is_an_encoder_error_naming_the_known_ones():
    with pytest.raises(EncoderError, match="clip, hf, timm"):
        build_visual("dino", "facebook/dino-vitb16")
    with pytest.raises(EncoderError, match="ast, wav2vec2"):
        build_audio("whisper", "openai/whisper-base")


def test_register_encoder_refuses_a_class_of_the_wrong_modality_or_a_taken_name():
    with pytest.raises(TypeError):
        register_encoder("audio", "not-audio")(ClipEncoder)
    with pytest.raises(ValueError):
        register_encoder("visual", "clip")(type("OtherClip", (ClipEncoder,), {}))
    with pytest.raises(ValueError):
        register_encoder("text", "bert")


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    probe = "import sys; import dva.pipeline.encoders as e; assert e.VISUAL_FAMILIES and 'torch' not in sys.modules, sorted(sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


# --------------------------------------------------------------------------- every family's tiny preset


@pytest.mark.parametrize("family", ["clip", "hf", "timm"])
def test_tiny_visual_presets_build_offline_and_encode_batches(visual, family):
    encoder = visual[family]
    assert isinstance(encoder, VisualEncoder) and encoder.family == family and encoder.dim == 64
    images = torch.randint(0, 256, (5, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pixels = encoder.preprocess(images)
    assert pixels.shape == (5, 3, 64, 64) and pixels.dtype == torch.float32
    features = encoder.encode(pixels)
    assert features.shape == (5, 64) and features.dtype == torch.float32 and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])  # the pictures differ, so do their features
    provenance = encoder.provenance()
    assert {"family", "model", "dim", "weights_sha256"} <= set(provenance) and provenance["family"] == family
    again = build_visual(family, *VISUAL_MODELS[family])
    assert again.provenance()["weights_sha256"] == provenance["weights_sha256"]  # seeded
    torch.testing.assert_close(again.encode(again.preprocess(images)), features)


@pytest.mark.parametrize("family", ["ast", "wav2vec2"])
def test_tiny_audio_presets_give_steps_every_hop_like_ast_windows(audio, family):
    encoder = audio[family]
    assert isinstance(encoder, AudioEncoder) and encoder.family == family and encoder.dim == 64
    features, times = encoder.encode_waveform(noise(3.05), batch_size=8)
    assert features.shape == (31, 64) and features.dtype == np.float32 and np.isfinite(features).all()
    np.testing.assert_allclose(times, np.arange(31) * 0.1, atol=1e-6)  # one step every hop from 0, as AST windows
    empty, no_times = encoder.encode_waveform(np.zeros(0, np.float32))
    assert empty.shape == (0, 64) and no_times.shape == (0,)
    provenance = encoder.provenance()
    assert {"family", "model", "dim", "weights_sha256"} <= set(provenance)
    assert build_audio(family, AUDIO_MODELS[family]).provenance()["weights_sha256"] == provenance["weights_sha256"]


def test_options_a_family_does_not_use_are_ignored_and_absent_from_its_provenance():
    ast = build_audio("ast", TINY["ast_model"], layer=3)
    assert "layer" not in ast.provenance() and ast.provenance() == build_audio("ast", TINY["ast_model"]).provenance()
    wav2vec2 = build_audio("wav2vec2", TINY["wav2vec2_model"], mode="tokens", pad=True)
    assert not {"mode", "pad", "window_input"} & set(wav2vec2.provenance())
    assert "pretrained" not in build_visual("hf", TINY["hf_model"], "openai").provenance()


def test_set_names_say_family_model_and_options_in_safe_characters(visual, audio):
    names = {
        "clip": visual["clip"].set_name(), "hf": visual["hf"].set_name(), "timm": visual["timm"].set_name(), "ast": audio["ast"].set_name(),
        "wav2vec2": audio["wav2vec2"].set_name(),
        "ast-tokens": build_audio("ast", TINY["ast_model"], mode="tokens").set_name(),
        "ast-padded": build_audio("ast", TINY["ast_model"], pad=True).set_name(),
        "wav2vec2-1": build_audio("wav2vec2", TINY["wav2vec2_model"], layer="1").set_name(),
    }
    assert names == {
        "clip": "clip-dva-tiny-clip-random", "hf": "hf-dva-tiny-hf", "timm": "timm-dva-tiny-timm", "ast": "ast-dva-tiny-ast-window", "wav2vec2": "dva-tiny-wav2vec2-layermean",
        "ast-tokens": "ast-dva-tiny-ast-tokens", "ast-padded": "ast-dva-tiny-ast-window-padded", "wav2vec2-1": "dva-tiny-wav2vec2-layer1",
    }
    # the real defaults, named from their provenance without their weights (as a dva 0.1 store's encoders are)
    assert ClipEncoder.name_for({"model": "ViT-B-32", "pretrained": "openai"}) == "clip-ViT-B-32-openai"
    assert ClipEncoder.name_for({"model": "ViT-B-32", "pretrained": "/ckpt/run 3/epoch_10.pt"}) == "clip-ViT-B-32-epoch_10.pt"
    assert AstEncoder.name_for({"model": DEFAULT_AST, "mode": "window", "window_input": "native"}) == "ast-window"
    assert AstEncoder.name_for({"model": DEFAULT_AST, "mode": "tokens", "window_input": None}) == "ast-tokens"
    assert AstEncoder.name_for({"model": "owner/ast-ft", "mode": "window", "window_input": "padded"}) == "ast-ast-ft-window-padded"
    assert Wav2Vec2Encoder.set_name(SimpleNamespace(model_name="facebook/wav2vec2-base", layer="mean")) == "wav2vec2-base-layermean"
    assert Wav2Vec2Encoder.set_name(SimpleNamespace(model_name="microsoft/wavlm-base-plus/", layer=6)) == "wavlm-base-plus-layer6"
    assert set_name("clip", "hf-hub:timm/ViT B@16", "x") == "clip-hf-hub-timm-ViT-B-16-x"
    import re

    assert all(re.match(NAME, name) for name in names.values())


# --------------------------------------------------------------------------- wav2vec2


def test_wav2vec2_layer_index_and_mean_give_different_features():
    wave = noise(2.0)
    mean, _ = build_audio("wav2vec2", TINY["wav2vec2_model"], layer="mean").encode_waveform(wave)
    first, _ = build_audio("wav2vec2", TINY["wav2vec2_model"], layer=0).encode_waveform(wave)
    last, _ = build_audio("wav2vec2", TINY["wav2vec2_model"], layer="2").encode_waveform(wave)
    assert not np.allclose(mean, first, atol=1e-3) and not np.allclose(mean, last, atol=1e-3) and not np.allclose(first, last, atol=1e-3)
    np.testing.assert_allclose(mean, (first + last + build_audio("wav2vec2", TINY["wav2vec2_model"], layer=1).encode_waveform(wave)[0]) / 3, atol=1e-5)


@pytest.mark.parametrize("layer", ["-1", "3", "last", 1.5])
def test_wav2vec2_layer_must_be_mean_or_an_index_the_model_has(layer):
    with pytest.raises(EncoderError, match="layer"):
        build_audio("wav2vec2", TINY["wav2vec2_model"], layer=layer)


def test_wav2vec2_frames_are_the_models_hidden_states_of_the_normalised_wave():
    encoder = build_audio("wav2vec2", TINY["wav2vec2_model"], layer=1)
    wave = noise(1.5)
    normalised = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    with torch.inference_mode():
        expected = encoder.model(torch.from_numpy(normalised)[None], output_hidden_states=True).hidden_states[1][0].numpy()
    frames = encoder.frames(normalised, chunks_per_pass=1)
    assert frames.shape == expected.shape == (encoder.frame_count(wave.size), 64)
    np.testing.assert_allclose(frames, expected, atol=1e-5)
    for samples in (399, 400, 719, 720, 16000, 12345):
        assert encoder.frame_count(samples) == int(encoder.model._get_feat_extract_output_lengths(samples))


def test_wav2vec2_steps_pool_the_frames_centred_in_their_window():
    """Frames that carry their own centre time pool to the step's centre: the windows are where AST's are."""
    encoder = build_audio("wav2vec2", TINY["wav2vec2_model"], window=1.0, hop=0.1)
    total = 250  # 5 s of 20 ms frames
    centre_times = (np.arange(total) * encoder.stride + encoder.receptive / 2) / 16000
    frames = np.repeat(centre_times[:, None], encoder.dim, axis=1).astype(np.float32)
    centres = np.arange(50) * 0.1
    pooled = encoder.pool(frames, centres)[:, 0]
    inside = (centres >= 0.5) & (centres <= 4.5)  # whole windows
    np.testing.assert_allclose(pooled[inside], centres[inside], atol=0.011)
    assert pooled[0] == pytest.approx(centre_times[:25].mean())  # the first window holds the frames of its second half
    narrow = build_audio("wav2vec2", TINY["wav2vec2_model"], window=0.01, hop=0.1)  # windows narrower than a frame: the nearest one
    np.testing.assert_allclose(narrow.pool(frames, centres)[:, 0], centre_times[np.clip(np.round((centres - 0.0125) / 0.02).astype(int), 0, total - 1)])


def test_wav2vec2_chunked_features_agree_with_one_pass_and_context_matters():
    wave = noise(7.0)
    one_pass, times = build_audio("wav2vec2", TINY["wav2vec2_model"]).encode_waveform(wave)  # 7 s < one 30 s chunk
    chunked = Wav2Vec2Encoder(TINY["wav2vec2_model"], chunk=2.0, context=1.0)
    features, chunked_times = chunked.encode_waveform(wave, batch_size=4)  # 4 chunks, 2 of equal length share a pass
    np.testing.assert_array_equal(times, chunked_times)
    assert cosine(one_pass, features).min() > 0.995  # measured 0.9988: attention and group norm see less than the track
    blind, _ = Wav2Vec2Encoder(TINY["wav2vec2_model"], chunk=2.0, context=0.0).encode_waveform(wave)
    assert np.abs(one_pass - features).max() < np.abs(one_pass - blind).max() / 2  # measured 0.085 vs 0.29
    again, _ = chunked.encode_waveform(wave, batch_size=64)
    np.testing.assert_allclose(features, again, atol=1e-5)  # chunks per pass do not matter


def test_wav2vec2_short_and_silent_waves_still_give_a_step():
    encoder = build_audio("wav2vec2", TINY["wav2vec2_model"])
    for wave in (noise(0.01), np.zeros(8000, np.float32)):
        features, times = encoder.encode_waveform(wave)
        assert features.shape[0] == times.shape[0] >= 1 and np.isfinite(features).all()


def test_wav2vec2_family_loads_hubert_and_wavlm_from_a_local_directory(tmp_path):
    from transformers import AutoModel, HubertConfig, Wav2Vec2FeatureExtractor, WavLMConfig

    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    wave = noise(2.0)
    for name, config in (("hubert-tiny", HubertConfig(**tiny)), ("wavlm-tiny", WavLMConfig(**tiny))):
        torch.manual_seed(1)
        AutoModel.from_config(config).save_pretrained(tmp_path / name)
        Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path / name)
        encoder = build_audio("wav2vec2", str(tmp_path / name), layer=2)
        provenance = encoder.provenance()
        assert provenance["model_type"] == config.model_type and encoder.dim == 32 and encoder.set_name() == f"{name}-layer2"
        assert provenance["normalisation"] is None and provenance["normalisation_from"] == "preprocessor_config"
        features, _ = encoder.encode_waveform(wave)
        assert features.shape == (20, 32) and np.isfinite(features).all()


def test_wav2vec2_local_directory_equals_the_tiny_preset_it_was_saved_from(audio, tmp_path):
    tiny = audio["wav2vec2"]
    tiny.model.save_pretrained(tmp_path / "saved")
    loaded = build_audio("wav2vec2", str(tmp_path / "saved"))
    assert loaded.provenance()["weights_sha256"] == tiny.provenance()["weights_sha256"]
    assert loaded.provenance()["normalisation_from"] == "default"  # no preprocessor_config.json: normalise, as the extractor does
    wave = noise(1.0)
    np.testing.assert_allclose(loaded.encode_waveform(wave)[0], tiny.encode_waveform(wave)[0], atol=1e-6)


def test_wav2vec2_bad_ids_and_other_model_types_are_encoder_errors(tmp_path, visual):
    with pytest.raises(EncoderError, match="neither a local directory nor a hub id"):
        build_audio("wav2vec2", str(tmp_path / "missing"))
    visual["hf"].model.save_pretrained(tmp_path / "vit")
    with pytest.raises(EncoderError, match="not one of the wav2vec2 family"):
        build_audio("wav2vec2", str(tmp_path / "vit"))


# --------------------------------------------------------------------------- hf


def test_hf_local_directory_equals_the_tiny_preset_and_reads_its_image_processor(visual, tmp_path):
    from transformers import ViTImageProcessor

    tiny = visual["hf"]
    tiny.model.save_pretrained(tmp_path / "vit")
    loaded = build_visual("hf", str(tmp_path / "vit"))
    assert loaded.provenance()["weights_sha256"] == tiny.provenance()["weights_sha256"] and loaded.pooling == "pooler_output"
    assert loaded.provenance()["image_processor"] == "default"
    ViTImageProcessor(size={"height": 64, "width": 64}, resample=3, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]).save_pretrained(tmp_path / "vit")
    processed = build_visual("hf", str(tmp_path / "vit"))
    provenance = processed.provenance()
    assert (provenance["image_processor"], provenance["interpolation"], provenance["mean"]) == ("preprocessor_config", "bicubic", [0.4, 0.5, 0.6])
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(processed.preprocess(images), tiny.preprocess(images))


def test_hf_preprocessing_matches_the_image_processor(tmp_path, visual):
    """Our tensor ops against ViTImageProcessor itself (PIL, bilinear): same tolerance as CLIP's transform test."""
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    visual["hf"].model.save_pretrained(tmp_path / "vit")
    processor.save_pretrained(tmp_path / "vit")
    encoder = build_visual("hf", str(tmp_path / "vit"))
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randint(0, 256, (3, 3, 14, 19), generator=generator).float(), size=(112, 150), mode="bilinear")
    images = smooth.round().to(torch.uint8)
    reference = processor(images=[image.permute(1, 2, 0).numpy() for image in images], return_tensors="pt")["pixel_values"]
    ours = encoder.preprocess(images)
    assert ours.shape == reference.shape
    difference = (ours - reference).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.05


def test_hf_without_a_pooler_in_the_checkpoint_takes_the_cls_token(tmp_path):
    from transformers import ViTModel

    from dva.pipeline.encoders.hf import tiny_config

    torch.manual_seed(0)
    ViTModel(tiny_config(), add_pooling_layer=False).save_pretrained(tmp_path / "no-pooler")
    encoder = build_visual("hf", str(tmp_path / "no-pooler"))
    assert encoder.pooling == "cls" and encoder.provenance()["pooling"] == "cls" and encoder.dim == 64
    pixels = encoder.preprocess(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    with torch.inference_mode():
        expected = encoder.model(pixel_values=pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(encoder.encode(pixels), expected)


def test_hf_bad_ids_are_encoder_errors(tmp_path):
    with pytest.raises(EncoderError, match="--hf-model"):
        build_visual("hf", str(tmp_path / "missing"))
    with pytest.raises(EncoderError, match="--hf-model"):
        build_visual("hf", "vit-base")


# --------------------------------------------------------------------------- extract settings -> encoders


def test_extract_settings_pick_the_families_and_each_reads_its_own_model_field():
    from dva.pipeline.extract_settings import ExtractSettings
    from dva.pipeline.provenance import build_encoders

    settings = ExtractSettings(data=".", split="train", visual_encoder="hf", audio_encoder="wav2vec2", audio_layer="1", **TINY)
    settings.validate()
    visual, audio = build_encoders(settings, "cpu")
    assert (visual.family, visual.provenance()["model"]) == ("hf", TINY["hf_model"])
    assert (audio.family, audio.provenance()["model"], audio.provenance()["layer"]) == ("wav2vec2", TINY["wav2vec2_model"], 1)
    default_families = ExtractSettings(data=".", split="train", clip_model=TINY["clip_model"], clip_pretrained=None, ast_model=TINY["ast_model"])
    assert [encoder.family for encoder in build_encoders(default_families, "cpu")] == ["clip", "ast"]


@pytest.mark.parametrize("field, value", [("visual_encoder", "dino"), ("audio_encoder", "whisper"), ("audio_layer", "-1"), ("audio_layer", "last")])
def test_extract_settings_refuse_an_unknown_family_or_layer(field, value):
    from dva.errors import ConfigError
    from dva.pipeline.extract_settings import ExtractSettings

    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        ExtractSettings(data=".", split="train", **{field: value}).validate()


def test_a_store_extracts_with_the_hf_and_wav2vec2_families(synth_data, tmp_path):
    from dva.pipeline.extract import run_extract
    from tests.conftest import tiny_settings

    report = run_extract(tiny_settings(synth_data, "val", tmp_path / "store", visual_encoder="hf", audio_encoder="wav2vec2", hf_model=TINY["hf_model"], wav2vec2_model=TINY["wav2vec2_model"]))
    assert report.extracted and not report.failed and report.frames > 0


@pytest.mark.parametrize("modality, family", [("visual", "clip"), ("visual", "hf"), ("visual", "timm"), ("audio", "ast"), ("audio", "wav2vec2")])
def test_weights_cast_to_bf16_once_equal_the_autocast_path_within_bf16_tolerance(modality, family):
    # on CUDA every family casts its weights to bfloat16 once; CPU bfloat16 shows the same computation against the
    # autocast path it replaced (fp32 weights, each op re-cast per forward)
    def build():
        if modality == "visual":
            return build_visual(family, *VISUAL_MODELS[family], device="cpu")
        return build_audio(family, AUDIO_MODELS[family], device="cpu")

    def run(encoder):
        if modality == "visual":
            images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 112, 112), dtype=np.uint8))
            return encoder.encode(encoder.preprocess(images)).numpy()
        return encoder.encode_waveform(noise(1.5))[0]

    reference = build()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = run(reference)
    cast = build().cast(torch.bfloat16)
    assert next(cast.model.parameters()).dtype == torch.bfloat16 and next(reference.model.parameters()).dtype == torch.float32
    got = run(cast)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert cosine(got, expected).min() > 0.99
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 0.05 * scale, f"bf16 weights and bf16 autocast differ by {np.abs(got - expected).max() / scale:.3f} of the scale"
    assert not np.array_equal(got, run(build())), "the cast copy computed in float32"
