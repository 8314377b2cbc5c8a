"""The method's formulas, each model part against a reference computed here from scratch (numpy, or a case worked
by hand), never against dva's own code: soft labels, the regions, the CCC loss, the prompt KL, the objective with its
MSE and per-dimension weights, cross-modal attention with its masks, the gate, the fusions and the readouts."""

import math

import numpy as np
import pytest
import torch

from dva.trainer.model.attention import CrossModalAttention
from dva.trainer.model.fusion import Fusion, Gate
from dva.trainer.model.losses import loss, masked_ccc, prompt_kl, va_loss
from dva.trainer.model.soft_labels import REGION_CENTRES, hard_labels, soft_labels

# The nine regions as the paper draws them: a 3x3 grid over [-1, 1]^2, row by row from high arousal down, each row
# from negative valence to positive. Written out, not computed the way dva computes it.
CENTRES = np.array([
    [-2 / 3, 2 / 3], [0, 2 / 3], [2 / 3, 2 / 3],
    [-2 / 3, 0], [0, 0], [2 / 3, 0],
    [-2 / 3, -2 / 3], [0, -2 / 3], [2 / 3, -2 / 3],
])


def np_soft_labels(y, sigma):
    """q_k = exp(-||y - c_k||^2 / (2 sigma^2)) / sum_j exp(-||y - c_j||^2 / (2 sigma^2)), point by point."""
    out = []
    for point in np.asarray(y, np.float64).reshape(-1, 2):
        weights = np.array([math.exp(-((point - c) ** 2).sum() / (2 * sigma**2)) for c in CENTRES])
        out.append(weights / weights.sum())
    return np.array(out)


def np_ccc(x, y):
    """Lin's CCC with population (divide by N) variances and covariance."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    covariance = ((x - x.mean()) * (y - y.mean())).mean()
    return 2 * covariance / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def logit(p):
    return math.log(p / (1 - p))


def numpy_of(t):
    return t.detach().double().numpy()


# --- regions and soft labels ----------------------------------------------------------------------


def test_region_centres_are_the_grid_in_the_papers_order():
    np.testing.assert_allclose(REGION_CENTRES.numpy(), CENTRES, atol=1e-7)
    np.testing.assert_array_equal(hard_labels(torch.tensor(CENTRES, dtype=torch.float32)).numpy(), np.eye(9))


def test_soft_labels_at_the_centre_worked_by_hand():
    # y = (0, 0): the four edge centres lie 4/9 away (squared), the four corners 8/9. With sigma^2 = 2/9 the
    # weights are exp(-1) and exp(-2), the centre's exp(0).
    q = soft_labels(torch.zeros(1, 2, dtype=torch.float64), math.sqrt(2 / 9))[0].numpy()
    corner, edge = math.exp(-2), math.exp(-1)
    expected = np.array([corner, edge, corner, edge, 1.0, edge, corner, edge, corner])
    np.testing.assert_allclose(q, expected / expected.sum(), rtol=1e-6)  # the centres are float32


@pytest.mark.parametrize("sigma", [0.2, 0.35, 0.8])
def test_soft_labels_are_the_gaussian_of_the_distance_to_each_centre(sigma):
    y = np.array([[0.9, -0.3], [-0.5, 0.5], [0.1, 0.95], [-1.0, -1.0], [0.33, -0.34]])
    q = soft_labels(torch.tensor(y, dtype=torch.float64), sigma).numpy()
    np.testing.assert_allclose(q, np_soft_labels(y, sigma), rtol=1e-5, atol=1e-12)  # float32 centres


# --- the CCC loss, the MSE and the per-dimension weights ------------------------------------------


def masked_series(seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(2, 7, 2, generator=g, dtype=torch.float64) * 2 - 1
    target = torch.rand(2, 7, 2, generator=g, dtype=torch.float64) * 2 - 1
    mask = torch.rand(2, 7, generator=g) > 0.3
    mask[0, 0] = False
    target[~mask] = float("nan")
    return pred, target, mask


def test_ccc_pools_the_valid_frames_of_the_batch_with_population_variances():
    pred, target, mask = masked_series()
    p, t, m = numpy_of(pred), numpy_of(target), mask.numpy()
    for d in range(2):
        assert masked_ccc(pred[..., d], target[..., d], mask).item() == pytest.approx(np_ccc(p[..., d][m], t[..., d][m]), rel=1e-7)
    # a hand case: pred = target + 1 (x = 0, 1, 2, 3): var 5/4 each, cov 5/4, mean gap 1 -> 2.5 / 3.5
    x = torch.arange(4, dtype=torch.float64)
    assert masked_ccc(x + 1, x, torch.ones(4, dtype=torch.bool)).item() == pytest.approx(2.5 / 3.5, rel=1e-7)


def test_va_loss_is_the_papers_loss_and_its_weights_and_mse_add_as_written():
    pred, target, mask = masked_series(1)
    p, t, m = numpy_of(pred), numpy_of(target), mask.numpy()
    ccc = [np_ccc(p[..., d][m], t[..., d][m]) for d in range(2)]
    mse = [((p[..., d][m] - t[..., d][m]) ** 2).mean() for d in range(2)]
    assert va_loss(pred, target, mask).item() == pytest.approx((1 - ccc[0]) + (1 - ccc[1]), rel=1e-7)
    weighted = 0.7 * (1 - ccc[0]) + 0.3 * (1 - ccc[1]) + 0.01 * (0.7 * mse[0] + 0.3 * mse[1])
    assert va_loss(pred, target, mask, (0.7, 0.3), 0.01).item() == pytest.approx(weighted, rel=1e-7)
    assert va_loss(pred, target, mask, (1, 1), 2.0).item() == pytest.approx((1 - ccc[0]) + (1 - ccc[1]) + 2 * (mse[0] + mse[1]), rel=1e-7)


def test_the_default_loss_is_bit_for_bit_the_papers_and_gradients_stay_finite_with_mse():
    from dva.trainer.settings import FitSettings

    defaults = FitSettings()
    g = torch.Generator().manual_seed(3)
    va = torch.rand(2, 7, 2, generator=g) * 2 - 1
    logits = torch.randn(2, 7, 9, generator=g)
    _, target, mask = masked_series(2)
    target = target.float()
    paper = {}
    for name, kwargs in (("paper", {}), ("defaults", {"va_weights": defaults.va_weight_pair, "mse_weight": defaults.mse_weight})):
        out = {"va": va.clone().requires_grad_(), "logits": logits.clone().requires_grad_()}
        value = loss(out, target, mask, 0.35, 0.5, "soft", **kwargs)
        value.backward()
        paper[name] = (value, out["va"].grad, out["logits"].grad)
    clean = torch.nan_to_num(target)
    by_hand = (1 - masked_ccc(va[..., 0], clean[..., 0], mask)) + (1 - masked_ccc(va[..., 1], clean[..., 1], mask))
    by_hand = by_hand + 0.5 * prompt_kl(logits, soft_labels(clean, 0.35), mask)
    assert torch.equal(paper["defaults"][0], paper["paper"][0]) and torch.equal(paper["paper"][0], by_hand)
    assert all(torch.equal(a, b) for a, b in zip(paper["defaults"][1:], paper["paper"][1:]))
    out = {"va": va.clone().requires_grad_(), "logits": None}
    loss(out, target, mask, 0.35, 0.5, va_weights=(0.7, 0.3), mse_weight=0.01).backward()  # NaN labels at masked frames
    assert torch.isfinite(out["va"].grad).all() and (out["va"].grad[~mask] == 0).all()


def test_the_objective_is_ccc_terms_plus_lambda_times_kl_to_the_gaussian_soft_labels():
    pred, target, mask = masked_series(4)
    logits = torch.randn(2, 7, 9, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    p, t, m, z = numpy_of(pred), numpy_of(target), mask.numpy(), numpy_of(logits)
    q, probs = np_soft_labels(t[m], 0.3), np_softmax(z[m])
    kl = (q * (np.log(q) - np.log(probs))).sum(-1).mean()  # KL(q || p), averaged over valid frames
    expected = (1 - np_ccc(p[..., 0][m], t[..., 0][m])) + (1 - np_ccc(p[..., 1][m], t[..., 1][m])) + 0.4 * kl
    assert loss({"va": pred, "logits": logits}, target, mask, sigma=0.3, lambda_prompt=0.4).item() == pytest.approx(expected, rel=1e-7)


# --- the prompt KL --------------------------------------------------------------------------------


def test_prompt_kl_worked_by_hand_and_averaged_over_valid_frames_only():
    uniform = torch.zeros(1, 3, 9)  # softmax: 1/9 each
    q = torch.zeros(1, 3, 9)
    q[0, 0, 4] = 1.0  # one-hot: KL = log 9
    q[0, 1, [2, 5]] = 0.5  # two halves: KL = 2 * 1/2 * log((1/2) / (1/9)) = log(9/2)
    q[0, 2] = 1 / 9  # uniform: KL = 0
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert prompt_kl(uniform, q, mask).item() == pytest.approx((math.log(9) + math.log(4.5) + 0) / 3, rel=1e-6)
    mask[0, 2] = False
    assert prompt_kl(uniform, q, mask).item() == pytest.approx((math.log(9) + math.log(4.5)) / 2, rel=1e-6)
    logits = torch.tensor([[[2.0, 0, 0, 0, 0, 0, 0, 0, 0]]])
    p0 = math.exp(2) / (math.exp(2) + 8)  # the direction: KL(q || p) with q the one-hot of region 0 is -log p_0
    one_hot = torch.nn.functional.one_hot(torch.tensor([[0]]), 9).float()
    assert prompt_kl(logits, one_hot, torch.ones(1, 1, dtype=torch.bool)).item() == pytest.approx(-math.log(p0), rel=1e-6)


# --- cross-modal attention ------------------------------------------------------------------------


def np_attend(query, context, key_valid, attend, heads):
    """One direction of `CrossModalAttention` from its weights: multi-head scaled dot-product attention of query
    [T, D] over context [T, D] (invalid keys get no weight; no valid key: no update), residual, LayerNorm."""
    mha, norm = attend.attn, attend.norm
    w, b = numpy_of(mha.in_proj_weight), numpy_of(mha.in_proj_bias)
    d = query.shape[-1]
    q, k, v = (x @ w[i * d : (i + 1) * d].T + b[i * d : (i + 1) * d] for i, x in enumerate((query, context, context)))
    size = d // heads
    heads_out = []
    for h in range(heads):
        cut = slice(h * size, (h + 1) * size)
        scores = q[:, cut] @ k[:, cut].T / math.sqrt(size)
        scores = np.where(key_valid[None, :], scores, -np.inf)
        heads_out.append(np_softmax(scores) @ v[:, cut] if key_valid.any() else np.zeros((len(query), size)))
    attended = np.concatenate(heads_out, axis=1) @ numpy_of(mha.out_proj.weight).T + numpy_of(mha.out_proj.bias)
    if not key_valid.any():
        attended = np.zeros_like(attended)
    x = query + attended
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.eps) * numpy_of(norm.weight) + numpy_of(norm.bias)


def trained_looking(module, seed=0):
    """Every parameter drawn at random (LayerNorm's gain and bias too), so that no default value hides a term."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module.eval()


def test_each_stream_attends_to_the_other_over_its_valid_frames_only():
    dim, heads, steps = 8, 2, 6
    attention = trained_looking(CrossModalAttention(dim, heads, dropout=0.0).double())
    g = torch.Generator().manual_seed(1)
    v, a = torch.randn(2, steps, dim, generator=g, dtype=torch.float64), torch.randn(2, steps, dim, generator=g, dtype=torch.float64)
    v_mask = torch.ones(2, steps, dtype=torch.bool)
    a_mask = torch.ones(2, steps, dtype=torch.bool)
    v_mask[0, [1, 4]] = False
    a_mask[0, :2] = False
    a_mask[1] = False  # no audio at all in the second window
    v_att, a_att = attention(v, a, v_mask, a_mask)
    for i in range(2):
        vi, ai = numpy_of(v[i]), numpy_of(a[i])
        np.testing.assert_allclose(numpy_of(v_att[i]), np_attend(vi, ai, a_mask[i].numpy(), attention.visual_to_audio, heads), atol=1e-10)
        np.testing.assert_allclose(numpy_of(a_att[i]), np_attend(ai, vi, v_mask[i].numpy(), attention.audio_to_visual, heads), atol=1e-10)


# --- the gate, the fusions ------------------------------------------------------------------------


def test_the_gate_mixes_the_streams_by_g_and_one_minus_g_worked_by_hand():
    gate = Gate(2)
    with torch.no_grad():  # a constant gate: g = (0.25, 0.8) whatever the streams
        gate.linear.weight.zero_()
        gate.linear.bias.copy_(torch.tensor([logit(0.25), logit(0.8)]))
    v, a = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[-3.0, 10.0]]])
    expected = [0.25 * 1 + 0.75 * -3, 0.8 * 2 + 0.2 * 10]  # -2.0, 3.6
    np.testing.assert_allclose(gate(v, a)[0, 0].detach().numpy(), expected, rtol=1e-6)


def test_the_gate_is_a_sigmoid_of_both_streams_per_frame_and_channel():
    gate = trained_looking(Gate(4).double())
    g = torch.Generator().manual_seed(2)
    v, a = torch.randn(2, 5, 4, generator=g, dtype=torch.float64), torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    weight, bias = numpy_of(gate.linear.weight), numpy_of(gate.linear.bias)
    vn, an = numpy_of(v), numpy_of(a)
    share = sigmoid(np.concatenate([vn, an], axis=-1) @ weight.T + bias)
    np.testing.assert_allclose(numpy_of(gate(v, a)), share * vn + (1 - share) * an, atol=1e-12)


def test_each_fusion_is_its_parts_in_the_papers_order():
    dim, heads = 8, 2
    g = torch.Generator().manual_seed(3)
    v, a = torch.randn(1, 5, dim, generator=g, dtype=torch.float64), torch.randn(1, 5, dim, generator=g, dtype=torch.float64)
    vn, an = numpy_of(v[0]), numpy_of(a[0])
    valid = np.ones(5, dtype=bool)
    for kind in ("concat", "xattn", "gated", "hierarchical"):
        fusion = trained_looking(Fusion(kind, dim, heads, dropout=0.0).double())
        first, second = vn, an
        if kind in ("xattn", "hierarchical"):  # alignment: each stream attends to the other
            first = np_attend(vn, an, valid, fusion.attention.visual_to_audio, heads)
            second = np_attend(an, vn, valid, fusion.attention.audio_to_visual, heads)
        both = np.concatenate([first, second], axis=-1)
        if kind in ("gated", "hierarchical"):  # refinement: the gate
            share = sigmoid(both @ numpy_of(fusion.gate.linear.weight).T + numpy_of(fusion.gate.linear.bias))
            expected = share * first + (1 - share) * second
        else:
            expected = both @ numpy_of(fusion.concat.weight).T + numpy_of(fusion.concat.bias)
        np.testing.assert_allclose(numpy_of(fusion(v, a)[0]), expected, atol=1e-10, err_msg=kind)


# --- the readouts ---------------------------------------------------------------------------------


def test_the_readouts_worked_by_hand_on_known_region_probabilities():
    # p = 1/2 on region 2 (2/3, 2/3) and 1/2 on region 5 (2/3, 0): the prompt readout is (2/3, 1/3)
    logits = torch.full((1, 1, 9), -1e4)
    logits[0, 0, [2, 5]] = 0.0
    expected = np.array([2 / 3, 1 / 3])
    np.testing.assert_allclose((torch.softmax(logits, -1) @ REGION_CENTRES)[0, 0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("readout", ["regression", "prompt", "blend"])
def test_the_models_readout_is_regression_prompt_expectation_or_their_blend(readout):
    from dva.trainer.evaluate import build_model
    from dva.trainer.settings import FitSettings

    settings = FitSettings(readout=readout, text_tower="dva-tiny-clip/none", hidden=16, heads=2, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(settings, {}, 6, 5, torch.device("cpu")).eval()
    if readout == "blend":
        with torch.no_grad():  # a share of 0.3 for valence and 0.9 for arousal, not the symmetric start
            model.mix.copy_(torch.tensor([logit(0.3), logit(0.9)]))
    seen = {}
    model.prompt_head.register_forward_hook(lambda module, args, out: seen.update(fused=args[0], logits=out))
    if model.regression is not None:
        model.regression.register_forward_hook(lambda module, args, out: seen.update(regression=out))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        va = model(torch.randn(2, 8, 6, generator=g), torch.randn(2, 8, 5, generator=g))["va"].double().numpy()
        text = model.text_features().double().numpy()
    head, fused = model.prompt_head, numpy_of(seen["fused"])
    frames = fused @ numpy_of(head.project.weight).T + numpy_of(head.project.bias)
    cosine = (frames / np.linalg.norm(frames, axis=-1, keepdims=True)) @ (text / np.linalg.norm(text, axis=-1, keepdims=True)).T
    logits = min(math.exp(head.logit_scale.item()), 100.0) * cosine  # scaled cosine similarity to each region's text
    np.testing.assert_allclose(numpy_of(seen["logits"]), logits, rtol=1e-4, atol=1e-4)
    from_prompt = np_softmax(numpy_of(seen["logits"])) @ CENTRES  # sum_k p_k c_k
    if readout == "prompt":
        np.testing.assert_allclose(va, from_prompt, atol=1e-6)
        return
    regression = np.tanh(numpy_of(seen["regression"]))
    expected = regression if readout == "regression" else np.array([0.3, 0.9]) * regression + np.array([0.7, 0.1]) * from_prompt
    np.testing.assert_allclose(va, expected, atol=1e-6)
