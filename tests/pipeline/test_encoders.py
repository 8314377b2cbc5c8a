"""The real encoder code paths (open_clip, transformers AST, torchaudio Kaldi fbank) on tiny random configurations."""

import numpy as np
import pytest
import torch

from dva.errors import EncoderError
from dva.pipeline.encoders import PRESETS, build_audio, build_visual
from dva.pipeline.encoders.ast import fbank

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def clip():
    return build_visual("clip", TINY["clip_model"], TINY["clip_pretrained"])


def test_tiny_clip_is_seeded_and_encodes_batches(clip):
    again = build_visual("clip", TINY["clip_model"], TINY["clip_pretrained"])
    assert again.sha256 == clip.sha256 and clip.provenance()["weights_sha256"] == clip.sha256
    images = torch.randint(0, 256, (5, 3, 112, 112), dtype=torch.uint8)
    features = clip.encode(clip.preprocess(images))
    assert features.shape == (5, clip.dim) and features.dtype == torch.float32
    torch.testing.assert_close(features, again.encode(again.preprocess(images)))


@pytest.mark.parametrize("shape", [(112, 112), (90, 150), (160, 120)])
def test_tensor_preprocessing_matches_open_clip_transform(clip, shape):
    """Tolerance: mean |diff| < 0.01 and max < 0.35 in normalised units (1 unit is about 68 grey levels);
    measured about 0.003 mean and up to 0.2-0.3 max on pixel noise, where bicubic rounding differs most."""
    import open_clip
    from PIL import Image

    transform = open_clip.image_transform(clip.image_size, is_train=False, mean=clip.mean, std=clip.std)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (3, 3, *shape), dtype=torch.uint8, generator=generator)
    smooth = torch.nn.functional.interpolate(noise.float(), scale_factor=0.125, mode="bilinear")
    smooth = torch.nn.functional.interpolate(smooth, size=shape, mode="bilinear").round().to(torch.uint8)
    for images, max_tolerance in ((noise, 0.35), (smooth, 0.05)):
        ours = clip.preprocess(images)
        reference = torch.stack([transform(Image.fromarray(image.permute(1, 2, 0).numpy())) for image in images])
        assert ours.shape == reference.shape
        difference = (ours - reference).abs()
        assert difference.mean() < 0.01 and difference.max() < max_tolerance


def test_unknown_clip_model_or_missing_checkpoint_is_an_encoder_error(tmp_path):
    with pytest.raises(EncoderError, match="unknown open_clip model"):
        build_visual("clip", "ViT-Huge-Nonexistent", None)
    with pytest.raises(EncoderError, match="neither a checkpoint file nor a tag"):
        build_visual("clip", "ViT-B-32", str(tmp_path / "missing.pt"))


def test_clip_loads_a_local_checkpoint_file(clip, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = build_visual("clip", TINY["clip_model"], str(path))
    assert loaded.sha256 == clip.sha256 and loaded.provenance()["pretrained"] == str(path)


def test_fbank_equals_the_ast_feature_extractor():
    from transformers import ASTFeatureExtractor

    wave = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)
    reference = ASTFeatureExtractor()._extract_fbank_features(wave, max_length=198)
    np.testing.assert_allclose(fbank(torch.from_numpy(wave)).numpy(), reference, atol=1e-4)


@pytest.mark.parametrize("mode", ["window", "tokens"])
def test_ast_steps_cover_the_audio_in_time_order(mode):
    encoder = build_audio("ast", TINY["ast_model"], "cpu", mode=mode, window=1.0, hop=0.1)
    wave = np.random.default_rng(1).normal(0, 0.1, int(16000 * 7.5)).astype(np.float32)
    features, times = encoder.encode_waveform(wave, batch_size=8)
    assert features.shape == (times.shape[0], encoder.dim) and np.isfinite(features).all()
    assert np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] <= 7.5
    if mode == "window":
        assert times.shape[0] == 75
    else:
        assert 60 <= times.shape[0] <= 75  # ~10 Hz: one feature per 10-frame time column
    again, _ = build_audio("ast", TINY["ast_model"], "cpu", mode=mode).encode_waveform(wave, batch_size=32)
    np.testing.assert_allclose(features, again, atol=1e-5)  # seeded weights; batch size does not matter


def test_empty_audio_gives_zero_rows_and_bad_ids_are_encoder_errors(tmp_path):
    encoder = build_audio("ast", TINY["ast_model"])
    features, times = encoder.encode_waveform(np.zeros(0, np.float32))
    assert features.shape == (0, encoder.dim) and times.shape == (0,)
    with pytest.raises(EncoderError):
        build_audio("ast", str(tmp_path / "no-such-dir"))
    with pytest.raises(EncoderError):
        build_audio("ast", TINY["ast_model"], mode="frames")


def _randomise_positions(encoder, seed: int = 0) -> None:
    """AST initialises its positions and CLS/distillation tokens to zeros: random ones make position bugs visible."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = encoder.model.embeddings
    for parameter in (embeddings.position_embeddings, embeddings.cls_token, embeddings.distillation_token):
        parameter.copy_(torch.randn(parameter.shape, generator=generator))


def test_native_forward_at_max_length_equals_ast_models_own_forward():
    encoder = build_audio("ast", TINY["ast_model"])
    _randomise_positions(encoder)
    inputs = torch.randn(3, encoder.max_length, 128, generator=torch.Generator().manual_seed(1))
    expected = encoder.model(input_values=inputs).pooler_output
    torch.testing.assert_close(encoder.pooled_native(inputs), expected, atol=1e-5, rtol=0)


def test_native_window_takes_the_middle_time_positions():
    """A 1 s window (98 fbank frames, run as 106: 10 time columns of the tiny AST's 12) equals an ASTModel built for
    106 frames whose positions are the middle columns of the pretrained grid, picked here by index."""
    from transformers import ASTModel

    encoder = build_audio("ast", TINY["ast_model"], window=1.0)
    _randomise_positions(encoder)
    assert (encoder.window_frames, encoder.window_input) == (98, 106)
    config = encoder.model.config
    short = ASTModel(type(config)(**{**config.to_dict(), "max_length": encoder.window_input})).eval()
    state = encoder.model.state_dict()
    full_columns, columns, rows = encoder.time_patches, 10, encoder.freq_patches
    start = full_columns // 2 - columns // 2  # 1: columns 1..10 of 0..11
    keep = [0, 1] + [2 + f * full_columns + c for f in range(rows) for c in range(start, start + columns)]
    state["embeddings.position_embeddings"] = state["embeddings.position_embeddings"][:, keep]
    short.load_state_dict(state)
    inputs = torch.randn(2, encoder.window_input, 128, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(encoder.pooled_native(inputs), short(input_values=inputs).pooler_output, atol=1e-5, rtol=0)


def test_padded_and_native_windows_are_recorded_and_give_the_same_steps():
    native, padded = build_audio("ast", TINY["ast_model"]), build_audio("ast", TINY["ast_model"], pad=True)
    assert native.provenance()["window_input"] == "native" and padded.provenance()["window_input"] == "padded"
    assert build_audio("ast", TINY["ast_model"], mode="tokens").provenance()["window_input"] is None
    assert padded.window_input == padded.max_length
    wave = np.random.default_rng(2).normal(0, 0.1, 16000 * 2).astype(np.float32)
    (a, times_a), (b, times_b) = native.encode_waveform(wave), padded.encode_waveform(wave)
    np.testing.assert_array_equal(times_a, times_b)
    assert a.shape == b.shape and not np.allclose(a, b)  # the padding is attended to: the forms differ


def _windows_one_by_one(encoder, wave: np.ndarray, batch_size: int):
    """AST window mode as it was written, each window sliced, padded and normalised alone: the reference."""
    import math

    wave = torch.as_tensor(wave)
    steps = max(1, math.ceil(wave.numel() / 16000 / encoder.hop - 1e-9))
    half = int(round(encoder.window / 2 * 16000))
    frames = fbank(torch.nn.functional.pad(wave, (half, half)))
    starts = np.round(np.arange(steps) * encoder.hop / 0.010).astype(int)
    features = []
    for b in range(0, steps, batch_size):
        batch = torch.stack([encoder._fit_length(frames[s : s + encoder.window_frames], encoder.window_input) for s in starts[b : b + batch_size]])
        features.append(encoder._run(batch).pooler_output.float().cpu() if encoder.pad else encoder.pooled_native(batch))
    return torch.cat(features).numpy()


@pytest.mark.parametrize("window, pad", [(1.0, False), (1.0, True), (2.0, False)])  # 2 s: longer than the tiny AST's 128 frames
def test_windows_gathered_at_once_equal_the_per_window_code(window, pad):
    encoder = build_audio("ast", TINY["ast_model"], mode="window", window=window, hop=0.1, pad=pad)
    _randomise_positions(encoder)
    wave = np.random.default_rng(1).normal(0, 0.1, int(16000 * 2.37)).astype(np.float32)  # the last windows run past the end
    ours, _ = encoder.encode_waveform(wave, batch_size=7)
    np.testing.assert_allclose(ours, _windows_one_by_one(encoder, wave, 7), rtol=1e-5, atol=1e-5)
