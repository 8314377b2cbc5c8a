import numpy as np
import pytest
import torch

from dva.metrics import ccc, masked_ccc, p_va


def _series(n=500, seed=0):
    rng = np.random.default_rng(seed)
    target = np.tanh(np.cumsum(rng.normal(0, 0.1, n)))
    pred = 0.7 * target + 0.1 + rng.normal(0, 0.2, n)
    return pred.astype(np.float32), target.astype(np.float32)


def test_ccc_agrees_with_torchmetrics():
    from torchmetrics.regression import ConcordanceCorrCoef

    pred, target = _series()
    expected = ConcordanceCorrCoef()(torch.from_numpy(pred), torch.from_numpy(target)).item()
    assert ccc(pred, target) == pytest.approx(expected, abs=1e-4)
    assert ccc(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(expected, abs=1e-4)


def test_ccc_agrees_with_audmetric():
    import audmetric

    pred, target = _series(seed=3)
    assert ccc(pred, target) == pytest.approx(audmetric.concordance_cc(target, pred), abs=1e-4)


def test_ccc_ignores_nan_targets():
    pred, target = _series(seed=1)
    holes = target.copy()
    holes[::7] = np.nan
    keep = ~np.isnan(holes)
    assert ccc(pred, holes) == pytest.approx(ccc(pred[keep], target[keep]), abs=1e-6)


def test_ccc_perfect_and_constant_shift():
    _, target = _series()
    assert ccc(target, target) == pytest.approx(1.0)
    assert ccc(target + 0.5, target) < 0.9  # CCC punishes bias, unlike Pearson


def test_masked_torch_ccc_matches_numpy_and_has_gradients():
    pred, target = _series(seed=2)
    mask = np.ones_like(target, dtype=bool)
    mask[::5] = False
    tp = torch.tensor(pred, requires_grad=True)
    value = masked_ccc(tp, torch.from_numpy(np.where(mask, target, np.nan)), torch.from_numpy(mask))
    assert value.item() == pytest.approx(ccc(pred[mask], target[mask]), abs=1e-4)
    value.backward()
    assert torch.isfinite(tp.grad).all() and tp.grad[~torch.from_numpy(mask)].abs().max() == 0


def test_p_va_is_the_mean():
    assert p_va(0.4, 0.6) == pytest.approx(0.5)


def _masked_ccc_with_a_host_check(pred, target, mask, eps=1e-8):
    """masked_ccc as it was written with `if count < 2` (a value read on the host): the reference."""
    mask = mask.to(pred.dtype)
    count = mask.sum()
    if count < 2:
        return pred.sum() * 0
    target = torch.nan_to_num(target)
    mean_p, mean_t = (pred * mask).sum() / count, (target * mask).sum() / count
    dp, dt = (pred - mean_p) * mask, (target - mean_t) * mask
    return 2 * (dp * dt).sum() / count / ((dp * dp).sum() / count + (dt * dt).sum() / count + (mean_p - mean_t) ** 2 + eps)


@pytest.mark.parametrize("valid", [0, 1, 2, 7, 30])
def test_masked_ccc_decides_on_the_device_and_equals_the_host_checked_version(valid):
    g = torch.Generator().manual_seed(valid)
    target = torch.rand(30, generator=g) * 2 - 1
    mask = torch.zeros(30, dtype=torch.bool)
    mask[torch.randperm(30, generator=g)[:valid]] = True
    target[~mask] = float("nan")
    ours_pred = (torch.rand(30, generator=g) * 2 - 1).requires_grad_(True)
    ref_pred = ours_pred.detach().clone().requires_grad_(True)
    ours, ref = masked_ccc(ours_pred, target, mask), _masked_ccc_with_a_host_check(ref_pred, target, mask)
    assert ours.shape == () and torch.allclose(ours, ref, atol=1e-6), (ours, ref)
    ours.backward(), ref.backward()
    assert torch.isfinite(ours_pred.grad).all() and torch.allclose(ours_pred.grad, ref_pred.grad, atol=1e-6)
    # symbolic tracing fails on any Python `if` on a tensor, the host sync this replaces
    traced = torch.fx.symbolic_trace(masked_ccc, concrete_args={"eps": 1e-8})
    assert torch.allclose(traced(ours_pred.detach(), target, mask), ref.detach(), atol=1e-6)
