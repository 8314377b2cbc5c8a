"""Model parts: soft labels, CCC loss, temporal encoder, attention, fusion, the prompt head, the composed model."""

import json

import pytest
import torch

from dva.trainer.model.attention import CrossModalAttention
from dva.trainer.model.fusion import FUSIONS
from dva.trainer.model.losses import loss, masked_ccc, prompt_kl, va_loss
from dva.trainer.model.compose import ModelSettings, VAModel
from dva.trainer.model.prompts import DEFAULT_DESCRIPTIONS, HARD_TEMPLATE, PromptHead
from dva.trainer.model.soft_labels import REGION_CENTRES, hard_labels, soft_labels
from dva.trainer.model.temporal import build_temporal

TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
B, T, DV, DA = 3, 8, 12, 10


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    """A random-initialised tiny open_clip model, built the way the trainer builds one (create_model)."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip_config")
    (folder / "dva-test-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("dva-test-tiny-clip").eval()
    model.dva_snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    return model


def tokenize(texts):
    import open_clip

    return open_clip.tokenize(texts, context_length=77)


def random_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    visual_mask = torch.rand(B, T, generator=g) > 0.25
    audio_mask = torch.rand(B, T, generator=g) > 0.25
    label_mask = torch.rand(B, T, generator=g) > 0.2
    visual_mask[0, 0] = audio_mask[0, 1] = label_mask[0, 2] = False  # at least one of each masked
    visual = torch.randn(B, T, DV, generator=g)
    visual[~visual_mask] = float("nan")  # missing frames may hold anything
    labels = torch.rand(B, T, 2, generator=g) * 2 - 1
    labels[~label_mask] = float("nan")
    return {
        "visual": visual, "audio": torch.randn(B, T, DA, generator=g), "visual_mask": visual_mask,
        "audio_mask": audio_mask, "labels": labels, "label_mask": label_mask,
    }


def inputs(batch):
    return {k: batch[k] for k in ("visual", "audio", "visual_mask", "audio_mask")}


# --- soft labels ---------------------------------------------------------------------------------


def test_region_centres_are_a_3x3_grid_row_major_from_high_arousal_and_negative_valence():
    assert REGION_CENTRES.shape == (9, 2)
    assert torch.allclose(REGION_CENTRES[0], torch.tensor([-2 / 3, 2 / 3]))
    assert torch.allclose(REGION_CENTRES[4], torch.tensor([0.0, 0.0]))
    assert torch.allclose(REGION_CENTRES[2], torch.tensor([2 / 3, 2 / 3]))
    assert torch.allclose(REGION_CENTRES[8], torch.tensor([2 / 3, -2 / 3]))
    assert torch.equal(hard_labels(REGION_CENTRES), torch.eye(9))


def test_soft_labels_sum_to_one_and_peak_at_the_nearest_centre():
    y = torch.rand(4, 50, 2) * 2 - 1
    q = soft_labels(y, 0.35)
    assert q.shape == (4, 50, 9)
    assert torch.allclose(q.sum(-1), torch.ones(4, 50), atol=1e-6)
    assert torch.equal(q.argmax(-1), hard_labels(y).argmax(-1))
    nearest = ((y[..., None, :] - REGION_CENTRES) ** 2).sum(-1).argmin(-1)
    assert torch.equal(q.argmax(-1), nearest)


def test_soft_labels_approach_one_hot_for_small_sigma_and_uniform_for_large():
    y = torch.rand(200, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # a point on a region border is equally near two centres; keep points clear of the borders (+-1/3)
    y = y[((y.abs() - 1 / 3).abs() > 0.02).all(dim=1)]
    sharp = soft_labels(y, 0.01)
    assert torch.isfinite(sharp).all()
    assert torch.allclose(sharp, hard_labels(y), atol=1e-4)
    flat = soft_labels(y, 100.0)
    assert torch.allclose(flat, torch.full_like(flat, 1 / 9), atol=1e-4)


# --- losses --------------------------------------------------------------------------------------


def test_ccc_of_identical_series_is_one_and_masked_positions_are_ignored():
    x = torch.randn(2, 30)
    mask = torch.rand(2, 30) > 0.3
    assert masked_ccc(x, x.clone(), mask).item() == pytest.approx(1.0, abs=1e-6)
    noisy = x.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()))  # only where masked out
    assert masked_ccc(x, noisy, mask).item() == pytest.approx(1.0, abs=1e-6)


def test_ccc_loss_gradient_is_correct():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 5, 2, dtype=torch.float64, generator=g, requires_grad=True)
    target = torch.randn(2, 5, 2, dtype=torch.float64, generator=g)
    mask = torch.tensor([[True, True, False, True, True], [True, False, True, True, True]])
    assert torch.autograd.gradcheck(lambda p: va_loss(p, target, mask), (pred,))
    assert torch.autograd.gradcheck(lambda p: masked_ccc(p[..., 0], target[..., 0], mask), (pred,))


def test_prompt_kl_is_zero_when_logits_match_the_labels_and_ignores_masked_frames():
    y = torch.rand(2, 6, 2) * 2 - 1
    q = soft_labels(y, 0.3)
    mask = torch.ones(2, 6, dtype=torch.bool)
    assert prompt_kl(q.log(), q, mask).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(2, 6, 9, requires_grad=True)
    assert prompt_kl(logits, q, mask).item() > 0
    mask[1, 3] = False
    nan_q = q.clone()
    nan_q[1, 3] = float("nan")
    value = prompt_kl(logits, nan_q, mask)
    value.backward()
    assert value.item() == pytest.approx(prompt_kl(logits, q, mask).item())
    assert torch.isfinite(logits.grad).all() and (logits.grad[1, 3] == 0).all()


# --- parts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_encoder_maps_frames_to_hidden(bidirectional):
    encoder = build_temporal("gru", DV, ModelSettings(hidden=16, layers=2, bidirectional=bidirectional, heads=2))
    assert encoder(torch.randn(B, T, DV)).shape == (B, T, 16)


def test_cross_attention_ignores_masked_keys_and_survives_all_masked_rows():
    attention = CrossModalAttention(16, heads=2, dropout=0.0).eval()
    v, a = torch.randn(2, T, 16), torch.randn(2, T, 16)
    a_mask = torch.ones(2, T, dtype=torch.bool)
    a_mask[0, :3] = False
    a_mask[1] = False  # nothing to attend to
    v_att, a_att = attention(v, a, None, a_mask)
    assert v_att.shape == a_att.shape == (2, T, 16)
    assert torch.isfinite(v_att).all() and torch.isfinite(a_att).all()
    changed = a.clone()
    changed[0, :3] = 100 * torch.randn(3, 16)
    changed[1] = 100 * torch.randn(T, 16)
    assert torch.allclose(attention(v, changed, None, a_mask)[0], v_att, atol=1e-6)


# --- the prompt head -----------------------------------------------------------------------------


def test_soft_prompts_with_no_context_equal_clip_encode_text(clip_model):
    head = PromptHead(clip_model, DEFAULT_DESCRIPTIONS, n_ctx=0, mode="learnable", feature_dim=16)
    with torch.no_grad():
        ours = head.text_features()
        clip = clip_model.encode_text(tokenize([f"{d}." for d in DEFAULT_DESCRIPTIONS]))
    assert ours.shape == (9, TINY_CLIP["embed_dim"])
    assert torch.allclose(ours, clip, atol=1e-5)


def test_context_vectors_sit_after_sos_and_before_the_description(clip_model):
    head = PromptHead(clip_model, DEFAULT_DESCRIPTIONS, n_ctx=2, mode="learnable", feature_dim=16)
    word = tokenize(["x"])[0, 1]  # the token id of "x"
    with torch.no_grad():
        head.ctx.copy_(clip_model.token_embedding.weight[word].expand(2, -1))
        ours = head.text_features()
        clip = clip_model.encode_text(tokenize([f"x x {d}." for d in DEFAULT_DESCRIPTIONS]))
    assert torch.allclose(ours, clip, atol=1e-5)


def test_hard_prompts_are_the_fixed_template_through_clip(clip_model):
    head = PromptHead(clip_model, DEFAULT_DESCRIPTIONS, mode="fixed", feature_dim=16)
    with torch.no_grad():
        clip = clip_model.encode_text(tokenize([HARD_TEMPLATE.format(d) for d in DEFAULT_DESCRIPTIONS]))
    assert torch.allclose(head.text_features(), clip, atol=1e-5)
    assert {name for name, _ in head.named_parameters()} == {"logit_scale", "project.weight", "project.bias"}


# --- the composed model --------------------------------------------------------------------------

CASES = [(("visual", "audio"), fusion, prompt) for fusion in FUSIONS for prompt in ("none", "fixed", "learnable")]
CASES += [((modality,), "hierarchical", prompt) for modality in ("visual", "audio") for prompt in ("none", "fixed", "learnable")]


def build(clip_model, modalities=("visual", "audio"), fusion="hierarchical", prompt="learnable", **overrides):
    settings = ModelSettings(modalities=modalities, fusion=fusion, prompt=prompt, hidden=16, heads=2, **overrides)
    torch.manual_seed(0)
    return VAModel(settings, DV, DA, clip_model=clip_model if prompt != "none" else None)


@pytest.mark.parametrize("modalities,fusion,prompt", CASES)
def test_every_variant_trains_one_step(clip_model, modalities, fusion, prompt):
    model = build(clip_model, modalities, fusion, prompt)
    batch = random_batch()
    trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    assert not {id(p) for p in model.parameters() if p.requires_grad} & {id(p) for p in clip_model.parameters()}
    if prompt != "none":  # the prompt head freezes the tower it is given; without one the model never sees CLIP
        assert not any(p.requires_grad for p in clip_model.parameters())
    if prompt == "learnable":
        assert "prompt_head.ctx" in trainable
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    model.train()
    given = {**inputs(batch), "visual": batch["visual"] if "visual" in modalities else None,
             "audio": batch["audio"] if "audio" in modalities else None}
    out = model(**given)
    assert out["va"].shape == (B, T, 2) and (out["va"].abs() < 1).all()
    assert (out["logits"] is None) == (prompt == "none")
    if out["logits"] is not None:
        assert out["logits"].shape == (B, T, 9)
    value = loss(out, batch["labels"], batch["label_mask"], sigma=0.35, lambda_prompt=0.5, labels="hard" if prompt == "fixed" else "soft")
    assert torch.isfinite(value)
    optimiser.zero_grad()
    value.backward()
    optimiser.step()

    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.isfinite(p).all(), name
            assert not torch.equal(p.detach(), trainable[name]), f"{name} did not change"
    for name, tensor in clip_model.state_dict().items():
        assert torch.equal(tensor, clip_model.dva_snapshot[name]), f"CLIP weight {name} changed"


def test_masked_frames_do_not_influence_the_loss(clip_model):
    model = build(clip_model, dropout=0.0).eval()
    batch = random_batch(seed=2)

    def objective(b):
        out = model(**inputs(b))
        return loss(out, b["labels"], b["label_mask"], sigma=0.35, lambda_prompt=0.5, labels="soft")

    reference = objective(batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["visual"][~batch["visual_mask"]] = 1e3 * torch.randn(int((~batch["visual_mask"]).sum()), DV)
    changed["audio"][~batch["audio_mask"]] = 1e3 * torch.randn(int((~batch["audio_mask"]).sum()), DA)
    changed["labels"][~batch["label_mask"]] = torch.rand(int((~batch["label_mask"]).sum()), 2)
    assert torch.isfinite(reference)
    assert torch.allclose(objective(changed), reference, atol=1e-6)
    # ...while a change at a valid frame does matter
    changed["labels"][batch["label_mask"]] = torch.rand(int(batch["label_mask"].sum()), 2)
    assert not torch.allclose(objective(changed), reference, atol=1e-6)


def test_a_window_with_no_valid_audio_gives_finite_outputs_and_gradients(clip_model):
    model = build(clip_model, fusion="hierarchical", prompt="none")
    batch = random_batch()
    batch["audio_mask"][1] = False
    out = model(**inputs(batch))
    value = loss(out, batch["labels"], batch["label_mask"], 0.35, 0.5)
    value.backward()
    assert torch.isfinite(out["va"]).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- readouts, text once per pass, stitching -----------------------------------------------------


@pytest.mark.parametrize("readout", ["prompt", "blend"])
def test_prompt_and_blend_readouts_read_the_region_probabilities_and_train(clip_model, readout):
    model = build(clip_model, readout=readout, dropout=0.0)
    batch = random_batch()
    out = model(**inputs(batch))
    from_prompt = torch.softmax(out["logits"], dim=-1) @ REGION_CENTRES
    if readout == "prompt":
        assert model.regression is None and torch.allclose(out["va"], from_prompt, atol=1e-6)
    else:
        share = torch.sigmoid(model.mix)
        assert torch.allclose(share, torch.full((2,), 0.5))
        with torch.no_grad():
            model.mix.fill_(50.0)  # all regression
            only_regression = model(**inputs(batch))["va"]
            model.mix.fill_(-50.0)  # all prompt
            only_prompt = model(**inputs(batch))["va"]
            model.mix.zero_()
        assert torch.allclose(only_prompt, from_prompt, atol=1e-5)
        assert torch.allclose(out["va"], (only_regression + only_prompt) / 2, atol=1e-5)
    value = loss(out, batch["labels"], batch["label_mask"], sigma=0.35, lambda_prompt=0.5, labels="soft")
    value.backward()
    assert model.prompt_head.ctx.grad.abs().sum() > 0
    if readout == "blend":
        assert model.mix.grad.abs().sum() > 0


def test_hard_and_soft_labels_give_different_losses_for_the_same_output(clip_model):
    model = build(clip_model)
    batch = random_batch()
    out = model(**inputs(batch))
    soft = loss(out, batch["labels"], batch["label_mask"], 0.35, 0.5, labels="soft")
    hard = loss(out, batch["labels"], batch["label_mask"], 0.35, 0.5, labels="hard")
    none = loss(out, batch["labels"], batch["label_mask"], 0.35, 0.0, labels="soft")
    assert len({round(v.item(), 6) for v in (soft, hard, none)}) == 3


def test_the_text_tower_runs_once_per_evaluation_pass_and_once_per_step(clip_model):
    import numpy as np

    from dva.trainer.loading.windows import SplitData
    from dva.trainer.evaluate import predict_frames
    from dva.trainer.settings import FitSettings

    model = build(clip_model)
    calls = []
    hook = model.prompt_head.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    frames = 100
    data = SplitData("val", ["a", "b"], np.array([0, 60, frames]), torch.randn(frames, DV), torch.ones(frames, dtype=torch.bool),
                     torch.randn(frames, DA), torch.ones(frames, dtype=torch.bool), torch.zeros(frames, 2), torch.ones(frames, dtype=torch.bool), [{}, {}])
    pred = predict_frames(model, FitSettings(seq_len=8), data, batch_size=4)  # many batches
    assert pred.shape == (frames, 2) and np.isfinite(pred).all()
    assert len(calls) == 1
    model.train()
    for _ in range(3):  # a training step: one forward, one pass of the tower
        model(**inputs(random_batch())).get("va").sum().backward()
    assert len(calls) == 4
    hook.remove()


def test_hann_stitching_favours_window_centres_and_covers_track_ends():
    from dva.trainer.evaluate import stitch_weights

    hann = stitch_weights("hann", 8)
    assert hann.argmax() in (3, 4) and (hann > 0).all() and hann[0] < 0.05
    assert torch.allclose(hann, hann.flip(0))
    assert torch.equal(stitch_weights("mean", 8), torch.ones(8))


def test_hann_stitching_of_a_constant_model_is_exact_everywhere(clip_model):
    """Weights that sum to less than one at a track's ends must still give the window's value there."""
    import numpy as np

    from dva.trainer.loading.windows import SplitData
    from dva.trainer.evaluate import predict_frames
    from dva.trainer.settings import FitSettings

    model = build(clip_model, prompt="none")
    with torch.no_grad():
        model.regression.weight.zero_()
        model.regression.bias.copy_(torch.tensor([0.3, -0.2]))
    frames = 37
    data = SplitData("val", ["a"], np.array([0, frames]), torch.randn(frames, DV), torch.ones(frames, dtype=torch.bool),
                     torch.randn(frames, DA), torch.ones(frames, dtype=torch.bool), torch.zeros(frames, 2), torch.ones(frames, dtype=torch.bool), [{}])
    for how in ("hann", "mean"):
        pred = predict_frames(model, FitSettings(seq_len=8, stitch=how, prompt="none"), data)
        np.testing.assert_allclose(pred, np.tile(np.tanh([0.3, -0.2]), (frames, 1)), atol=1e-6)


# --- seeds ---------------------------------------------------------------------------------------

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"))]


def seeded_model(seed: int, device: str):
    """Seed, then build the model with the tiny CLIP's text tower: `dva fit`'s order (trainer/fit.py)."""
    from dva.trainer.evaluate import build_model
    from dva.trainer.settings import FitSettings

    settings = FitSettings(prompt="learnable", text_tower="dva-tiny-clip/none", hidden=16, heads=2, seed=seed)
    torch.manual_seed(seed)
    return build_model(settings, {}, DV, DA, torch.device(device))


@pytest.mark.parametrize("device", DEVICES)
def test_seeds_change_the_prompt_context_and_projections_on_every_device(device):
    first, again, other = seeded_model(1, device), seeded_model(1, device), seeded_model(2, device)
    for name in ("prompt_head.ctx", "prompt_head.project.weight", "regression.weight"):
        a, b, c = (dict(m.named_parameters())[name] for m in (first, again, other))
        assert torch.equal(a, b), f"{name}: one seed, two models on {device}"
        assert not torch.equal(a, c), f"{name}: seeds 1 and 2 give the same values on {device}"


def test_building_a_text_tower_never_reseeds_the_cuda_generators(monkeypatch):
    # a spy, because no GPU is here: torch.manual_seed reseeds every CUDA generator through this function, and
    # fork_rng(devices=[]) does not restore them, so a build that calls it pins every later CUDA draw to its seed
    calls = []
    original = torch.cuda.manual_seed_all
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: (calls.append(seed), original(seed)))
    from dva.pipeline.encoders.clip import load_clip

    load_clip("dva-tiny-clip", None)
    assert calls == []
