"""The settings the authors' released code (byeongjin1/abaw10th_imlab-va-) needs, each checked against that code's own
formulas written out here: region centres and soft labels, templates averaged per region with a fixed scale on the
stored visual features, the MLP head, the one-way attention and MLP gate, causal models, and one target per past
window (each prediction from the past only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dva.cli import app
from dva.errors import ConfigError
from dva.trainer.loading.windows import SplitData, past_windows
from dva.trainer.model.compose import ModelSettings, VAModel
from dva.trainer.model.prompts import PromptHead
from dva.trainer.model.soft_labels import hard_labels, region_centres, soft_labels
from dva.trainer.settings import FitSettings, settings_from
from tests.trainer.test_model_parts import TINY_CLIP, clip_model, tokenize  # noqa: F401  (clip_model: a fixture)

RELEASED_TEMPLATES = ("a photo of a person who looks {}", "a face showing {}", "a facial expression of {}")  # model_clip.py:50-54
# model_clip.py:38-48 in the released order (V-major: low, mid, high valence; within each, low, mid, high arousal)
RELEASED_STATES = ("sad, tired, and low-energy", "displeased and uncomfortable", "angry, tense, and highly aroused",
                   "calm, expressionless, and low-energy", "neutral and emotionally ordinary", "alert, attentive, and emotionally neutral",
                   "relaxed, content, and pleasant", "happy and pleasant", "excited, joyful, and energetic")


def released_soft_label(v: float, a: float, centers_1d=(-0.66, 0.0, 0.66), sigma=0.45) -> np.ndarray:
    """dataset.py:61-102 as released: centres V-major, weights exp(-d^2 / 2 sigma^2) / (sum + 1e-8), float32."""
    centers = [(vc, ac) for vc in centers_1d for ac in centers_1d]
    va = np.array([v, a], dtype=np.float32)
    dists = np.array([np.sum((va - np.array(c, dtype=np.float32)) ** 2) for c in centers], dtype=np.float32)
    weights = np.exp(-dists / (2 * sigma * sigma))
    return weights / (weights.sum() + 1e-8)


def released_to_dva(index: int) -> int:
    """The released region index (3 x valence row + arousal column, each low..high) as dva's (3 x arousal row from high
    to low + valence column from negative to positive, soft_labels.py)."""
    v_step, a_step = divmod(index, 3)
    return 3 * (2 - a_step) + v_step


def test_dva_soft_labels_with_the_released_sigma_and_centres_equal_the_released_codes_in_its_region_order():
    settings = settings_from(sigma=0.45, region_centre=0.66)
    points = np.random.default_rng(0).uniform(-1, 1, size=(200, 2)).astype(np.float32)
    ours = soft_labels(torch.from_numpy(points), settings.sigma, settings.region_centre).numpy()
    order = [released_to_dva(k) for k in range(9)]
    for point, row in zip(points, ours):
        np.testing.assert_allclose(row[order], released_soft_label(float(point[0]), float(point[1])), rtol=1e-5, atol=1e-7)
    # the released centres sit where dva's region_centres(0.66) put the same regions
    released = [(vc, ac) for vc in (-0.66, 0.0, 0.66) for ac in (-0.66, 0.0, 0.66)]
    np.testing.assert_allclose(region_centres(0.66).numpy()[order], np.array(released, dtype=np.float32))


def test_region_centre_moves_the_hard_labels_and_the_prompt_readout(clip_model):
    point = torch.tensor([[0.5, 0.0]])  # nearer 2/3 than 0 ... and nearer 0 than a far centre of 1.0
    assert hard_labels(point).argmax().item() == 5 and hard_labels(point, 1.0).argmax().item() == 4
    model = VAModel(ModelSettings(prompt="fixed", readout="prompt", hidden=16, heads=2, region_centre=0.66), 12, 10, clip_model=clip_model)
    torch.testing.assert_close(model.centres, region_centres(0.66))
    assert FitSettings().region_centre == 2 / 3  # today's grid unchanged by default
    with pytest.raises(ConfigError, match="region-centre"):
        settings_from(region_centre=1.5)


def test_templates_are_averaged_per_region_and_a_fixed_scale_reads_the_stored_visual_features_as_released(clip_model):
    head = PromptHead(clip_model, RELEASED_STATES, mode="fixed", feature_dim=None, templates=RELEASED_TEMPLATES, logit_scale=10.0)
    with torch.no_grad():  # model_clip.py:91-129: encode the 27 prompts, normalise, mean of each region's 3, normalise
        text = F.normalize(clip_model.encode_text(tokenize([t.format(s) for s in RELEASED_STATES for t in RELEASED_TEMPLATES])), dim=-1)
        prototypes = F.normalize(text.reshape(9, 3, -1).mean(dim=1), dim=-1)
        torch.testing.assert_close(F.normalize(head.text_features(), dim=-1), prototypes, atol=1e-5, rtol=1e-5)
        features = torch.randn(2, 1, TINY_CLIP["embed_dim"])
        expected = 10.0 * F.normalize(features, dim=-1) @ prototypes.t()  # model_clip.py:518-524
        torch.testing.assert_close(head(features), expected, atol=1e-5, rtol=1e-5)
    assert not [name for name, p in head.named_parameters() if p.requires_grad]  # nothing in it can train
    assert "fixed_scale" not in head.state_dict()


def test_prompt_input_visual_averages_the_stored_features_over_a_window_and_refuses_a_width_unlike_the_texts(clip_model):
    settings = ModelSettings(prompt="fixed", hidden=16, heads=2, prompt_input="visual", logit_scale=10.0, target="last", seq_len=4)
    dim = TINY_CLIP["embed_dim"]
    model = VAModel(settings, dim, 10, clip_model=clip_model).eval()
    stored = torch.randn(2, 4, dim)
    mask = torch.tensor([[True, True, False, True], [True] * 4])
    with torch.no_grad():
        out = model(stored * 3, torch.randn(2, 4, 10), mask, torch.ones(2, 4, dtype=torch.bool), prompt_visual=stored)
        mean = torch.stack([stored[0, mask[0]].mean(0), stored[1].mean(0)])[:, None]
        torch.testing.assert_close(out["logits"], model.prompt_head(mean), atol=1e-5, rtol=1e-5)
    assert out["va"].shape == (2, 1, 2) and out["logits"].shape == (2, 1, 9)
    with pytest.raises(ConfigError, match="prompt-input visual"):
        VAModel(settings, dim + 1, 10, clip_model=clip_model)


def test_the_mlp_head_is_the_released_va_head_without_tanh(clip_model):
    model = VAModel(ModelSettings(prompt="none", hidden=16, heads=2, head="mlp"), 12, 10)
    layers = list(model.regression)
    assert [type(layer).__name__ for layer in layers] == ["Linear", "ReLU", "Dropout", "Linear"]  # model_clip.py:534-539
    assert (layers[0].in_features, layers[0].out_features, layers[2].p, layers[3].out_features) == (16, 128, 0.2, 2)
    with torch.no_grad():
        layers[3].bias.fill_(5.0)
        out = model.eval()(torch.randn(1, 3, 12), torch.randn(1, 3, 10))
    assert out["va"].min() > 1  # no tanh


def test_gate_partner_visual_is_one_way_attention_then_the_mlp_gate_with_the_visual_stream():
    from dva.trainer.model.fusion import Fusion

    torch.manual_seed(0)
    fusion = Fusion("hierarchical", 16, heads=2, dropout=0.0, partner="visual").eval()
    assert fusion.attention is None
    v, a = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    with torch.no_grad():
        one = fusion.one_way
        attended, _ = one.attn(v, a, a, need_weights=False)
        x = one.norm(v + attended)
        x = one.norm2(x + one.ffn(x))  # model_clip.py:402-413
        gate = fusion.gate
        img, aud = gate.first(x), gate.second(v)
        g = gate.gate(torch.cat([img, aud], dim=-1))
        expected = gate.out(g * img + (1 - g) * aud)  # model_clip.py:454-460, gate(attended, visual) as in :497
        torch.testing.assert_close(fusion(v, a), expected)
    with pytest.raises(ConfigError, match="gate-partner"):
        settings_from(gate_partner="visual", fusion="gated")


@pytest.mark.parametrize("temporal,fusion,partner", [("tcn", "hierarchical", "visual"), ("gru", "hierarchical", "audio"),
                                                     ("transformer", "xattn", "audio")])
def test_a_causal_model_output_at_a_frame_never_moves_when_a_later_frame_changes(temporal, fusion, partner):
    settings = ModelSettings(prompt="none", hidden=16, heads=2, temporal=temporal, fusion=fusion, gate_partner=partner, causal=True,
                             tcn_levels=2, seq_len=12, dropout=0.0)
    torch.manual_seed(0)
    model = VAModel(settings, 12, 10).eval()
    if temporal == "tcn":
        assert model.encoders["visual"].levels == 2
    g = torch.Generator().manual_seed(1)
    visual, audio = torch.randn(2, 12, 12, generator=g), torch.randn(2, 12, 10, generator=g)
    vmask = torch.rand(2, 12, generator=g) > 0.3
    vmask[:, 0] = False  # a first frame without a face: the causal masks must not leave it nothing to see
    with torch.no_grad():
        before = model(visual, audio, vmask)["va"]
        visual[:, 7], audio[:, 7], vmask[:, 7] = 50.0, -50.0, True
        after = model(visual, audio, vmask)["va"]
    assert torch.isfinite(before).all()
    torch.testing.assert_close(after[:, :7], before[:, :7])
    assert not torch.allclose(after[:, 7:], before[:, 7:])  # the change does reach the frames from 7 on


def test_causal_refuses_a_bidirectional_gru():
    with pytest.raises(ConfigError, match="unidirectional"):
        settings_from(causal=True, bidirectional=True)


# --- one target per past window ------------------------------------------------------------------------------------

def _track_data(masks: list[np.ndarray], fps: float, labelled=None) -> SplitData:
    lengths = [len(m) for m in masks]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    labels = torch.zeros(n, 2) if labelled is None else torch.where(torch.from_numpy(np.concatenate(labelled))[:, None], 0.0, float("nan"))
    return SplitData("val", [f"t{i}" for i in range(len(masks))], offsets, torch.zeros(n, 1, dtype=torch.float16),
                     torch.from_numpy(np.concatenate(masks)), torch.zeros(n, 0), torch.ones(n, dtype=torch.bool), labels,
                     ~torch.isnan(labels).any(1), [{"fps": fps} for _ in masks])


def released_training_windows(crops: list[int], labelled: list[int], fps: float, window_sec: float, stride_sec: float, num: int):
    """dataset.py:273-338 and :352-369 as released, frames 1-based: [(target frame, sampled frames)]."""
    out, last_kept = [], -1e9
    for frame_idx in labelled:
        end_time = (frame_idx - 1) / fps
        if end_time - window_sec < 0 or end_time - last_kept < stride_sec:
            continue
        start_frame = frame_idx - int(round(window_sec * fps)) + 1
        if start_frame < 1:
            continue
        available = [f for f in crops if start_frame <= f <= frame_idx]
        if not available:
            continue
        last_kept = end_time
        idxs = np.round(np.linspace(0, len(available) - 1, num)).astype(int) if len(available) > 1 else [0] * num
        out.append((frame_idx, [available[i] for i in idxs]))
    return out


def released_inference_window(crops: list[int], target: int, fps: float, window_sec: float, num: int) -> list[int]:
    """inference_test.py:217-266 as released (frames 1-based), with its sample_uniform_frames_from_list (:60-73)."""
    def uniform(frames):
        if len(frames) == 1:
            return [frames[0]] * num
        return [frames[i] for i in torch.round(torch.linspace(0, len(frames) - 1, steps=num)).long().tolist()]

    span = int(round(window_sec * fps))
    until = [f for f in crops if f <= target]
    if len(until) < num:
        return [until[0]] * (num - len(until)) + until
    if target < span:
        return uniform(until)
    window = [f for f in crops if target - span + 1 <= f <= target]
    if not window:
        return uniform(until)
    if len(window) < num:
        return [window[0]] * (num - len(window)) + window
    return uniform(window)


def test_past_windows_are_the_released_codes_training_and_inference_windows():
    rng = np.random.default_rng(4)
    fps, seconds, frames = 10.0, 2.0, 8
    masks = [rng.random(90) > 0.3, rng.random(70) > 0.8]
    masks[0][:6] = True  # the first crops before any gap
    masks[1][:3] = True
    masks[1][30:55] = False  # a window with no crop in it
    labelled = [rng.random(90) > 0.1, np.ones(70, dtype=bool)]
    data = _track_data(masks, fps, labelled)
    index, target = past_windows(data, seconds, frames, stride_seconds=0.7)
    expected = []
    for i, (mask, known) in enumerate(zip(masks, labelled)):
        crops, annotated = list(np.flatnonzero(mask) + 1), list(np.flatnonzero(known) + 1)
        expected += [(int(data.offsets[i]) + t - 1, [int(data.offsets[i]) + f - 1 for f in chosen])
                     for t, chosen in released_training_windows(crops, annotated, fps, seconds, 0.7, frames)]
    assert [(int(t), row.tolist()) for t, row in zip(target, index)] == expected
    index, target = past_windows(data, seconds, frames)  # evaluation: a window ending at every frame
    assert target.tolist() == list(range(data.n_frames))
    for i, mask in enumerate(masks):
        crops, base = list(np.flatnonzero(mask) + 1), int(data.offsets[i])
        for t in range(crops[0], len(mask) + 1):
            assert index[base + t - 1].tolist() == [base + f - 1 for f in released_inference_window(crops, t, fps, seconds, frames)], (i, t)
    assert (index <= target[:, None]).all()  # nothing after the target, ever


# --- a causal, one-target-per-window run end to end -----------------------------------------------------------------

SEED_LIKE = ["--temporal", "tcn", "--tcn-levels", "2", "--causal", "--target", "last", "--window-seconds", "2", "--window-frames", "8",
             "--train-stride-seconds", "0.5", "--prompt", "fixed", "--prompt-templates", "|".join(RELEASED_TEMPLATES), "--logit-scale", "10",
             "--prompt-input", "visual", "--head", "mlp", "--gate-partner", "visual", "--region-centre", "0.66", "--sigma", "0.45",
             "--lambda-prompt", "0.2", "--hidden", "32", "--batch-size", "16", "--epochs", "3", "--patience", "3", "--json"]


@pytest.fixture(scope="module")
def past_run(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("past-run") / "run"
    done = CliRunner().invoke(app, ["fit", "--features", str(tiny_store), "--out", str(out), *SEED_LIKE])
    assert done.exit_code == 0, done.output
    return out, json.loads(done.stdout)


def test_a_causal_last_target_run_records_its_settings_chooses_no_smoothing_and_predicts_val_from_the_past_only(past_run, tiny_store):
    from dva.trainer.evaluate import predict_frames
    from dva.trainer.fit import load_features
    from dva.trainer.results.run_dir import load_run

    run, report = past_run
    saved = json.loads((run / "config.json").read_text())["settings"]
    assert {k: saved[k] for k in ("causal", "target", "window_frames", "head", "gate_partner", "prompt_input", "logit_scale", "region_centre",
                                  "tcn_levels")} == {"causal": True, "target": "last", "window_frames": 8, "head": "mlp", "gate_partner": "visual",
                                                     "prompt_input": "visual", "logit_scale": "10", "region_centre": 0.66, "tcn_levels": 2}
    assert saved["prompt_templates"] == list(RELEASED_TEMPLATES)
    assert report["smooth_seconds"] == {"valence": 0.0, "arousal": 0.0}  # a centred Gaussian would look ahead
    settings, model, normaliser, _ = load_run(run, device="cpu")
    val = load_features(str(tiny_store), visual_features=settings.visual_features).val
    before = predict_frames(model, settings, val, normaliser=normaliser)
    assert np.isfinite(before).all() and before.shape == (val.n_frames, 2)
    track = val.track_slice(1)
    (rows,) = val.audio
    # a future frame of the second track, the first to read its audio step: its face and its sound changed
    change = int(torch.nonzero(rows.left[track] == rows.left[track.start + 60])[0]) + track.start
    val.visual[change] = val.visual[change] + 3
    val.visual_mask[change] = True
    rows.data[rows.left[change]] = rows.data[rows.left[change]] - 3
    after = predict_frames(model, settings, val, normaliser=normaliser)
    np.testing.assert_array_equal(after[:change], before[:change])  # nothing before it moved (nor any other track's earlier frames)
    assert not np.allclose(after[change:track.stop], before[change:track.stop])  # it does reach the frames from it on


def test_a_causal_last_target_run_predicts_a_recording_with_no_smoothing_each_frame_from_its_past(past_run, people, tmp_path):
    pytest.importorskip("dlib", reason="the face stage needs dva[faces]")
    from dva.stores import open_store
    from dva.trainer.evaluate import predict_frames
    from dva.trainer.loading.store import load_split
    from dva.trainer.results.run_dir import load_run

    done = CliRunner().invoke(app, ["predict", "--video", str(people / "talking.mp4"), "--run", str(past_run[0]), "--out", str(tmp_path), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["prediction"]["tasks"]["va"]["smooth_seconds"] == {"valence": 0.0, "arousal": 0.0}
    rows = [line.split(",") for line in (tmp_path / "talking.csv").read_text().splitlines()[1:]]
    assert len(rows) > 1 and all(value not in ("nan", "") for row in rows for value in row[2:4])
    # the recording as the command extracted it, predicted again with one of its later frames changed
    settings, model, normaliser, provenance = load_run(past_run[0], device="cpu")
    with open_store(tmp_path / ".dva-work" / "store", mode="r") as store:
        data = load_split(store, "all", provenance["sets"], settings.audio_align)
    before = predict_frames(model, settings, data, normaliser=normaliser)
    np.testing.assert_allclose(before, np.array([[float(r[2]), float(r[3])] for r in rows]), atol=1e-4)  # what the CSV holds
    (audio,) = data.audio
    change = int(torch.nonzero(audio.left == audio.left[data.n_frames * 2 // 3])[0])
    data.visual[change] += 3
    data.visual_mask[change] = True
    audio.data[audio.left[change]] -= 3
    after = predict_frames(model, settings, data, normaliser=normaliser)
    np.testing.assert_array_equal(after[:change], before[:change])
    assert not np.allclose(after[change:], before[change:])


def test_smoothing_a_past_only_run_is_refused_in_one_line(past_run, tiny_store, tmp_path):
    done = CliRunner().invoke(app, ["predict", "--run", str(past_run[0]), "--features", str(tiny_store), "--split", "val", "--format", "csv",
                                    "--smooth", "0.4", "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and "look ahead" in done.stderr and "Traceback" not in done.output


def test_every_released_axis_is_an_ablation_key_and_keys_of_earlier_results_are_kept_at_its_default():
    from dva.trainer.ablate import parse_fixed, parse_grid, result_key

    fixed = parse_fixed(["causal=true", "logit_scale=10", f"prompt_templates={'|'.join(RELEASED_TEMPLATES)}", "region_centre=0.66", "target=last",
                         "window_seconds=2", "window_frames=8", "train_stride_seconds=0.5", "tcn_levels=2", "prompt=fixed", "prompt_input=visual",
                         "head=mlp", "gate_partner=visual"])
    settings = settings_from(**fixed)
    assert settings.prompt_templates == RELEASED_TEMPLATES and settings.fixed_logit_scale == 10.0 and settings.causal is True
    assert parse_grid(["target=frame,last"]) == {"target": ["frame", "last"]}
    store = {"identity": "x"}
    assert result_key(FitSettings(), store) == result_key(FitSettings(causal=False, head="linear", target="frame"), store)
    assert result_key(FitSettings(), store) != result_key(FitSettings(causal=True), store)
    with pytest.raises(ConfigError, match="target"):
        parse_fixed(["target=first"])


def test_folds_of_a_past_only_run_choose_no_smoothing_and_score_every_frame(tiny_store, tmp_path):
    done = CliRunner().invoke(app, ["fit", "--features", str(tiny_store), "--out", str(tmp_path / "folds"), "--folds", "2", "--epochs", "1", "--patience", "1",
                                    *[a for a in SEED_LIKE[: SEED_LIKE.index("--epochs")]], "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert np.isfinite(report["oof"]["p_va"]) and report["oof_smoothed"]["smooth_seconds"] == {"valence": 0.0, "arousal": 0.0}


@pytest.mark.parametrize("flags,says", [
    (["--causal", "--bidirectional"], "unidirectional"),
    (["--prompt-templates", "a {}|b {}"], "--prompt fixed"),
    (["--prompt", "fixed", "--prompt-templates", "no slot"], "one {}"),
    (["--logit-scale", "hot"], "--logit-scale"),
    (["--target", "last", "--task", "expr"], "--target last"),
    (["--gate-partner", "visual", "--fusion", "gated"], "--fusion hierarchical"),
    (["--head", "mlp", "--task", "au", "--prompt", "none"], "--head mlp"),
    (["--prompt-input", "visual", "--modalities", "audio"], "--prompt-input visual"),
    (["--tcn-levels", "-1"], "--tcn-levels"),
])
def test_bad_released_axis_flags_are_one_line_exit_2(flags, says, tmp_path):
    done = CliRunner().invoke(app, ["fit", "--features", str(tmp_path / "none"), *flags])
    assert done.exit_code == 2 and says in done.stderr and "Traceback" not in done.output, done.output


def test_an_ensemble_of_past_only_runs_predicts_val_unsmoothed(past_run, tiny_store, tmp_path):
    out = tmp_path / "csv"
    done = CliRunner().invoke(app, ["predict", "--run", str(past_run[0]), "--run", str(past_run[0]), "--features", str(tiny_store), "--split", "val",
                                    "--format", "csv", "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["runs"] == 2 and report["smooth_seconds"] == {"valence": 0.0, "arousal": 0.0}
    assert sorted(p.suffix for p in out.iterdir()) and all(p.suffix == ".csv" for p in out.iterdir())
