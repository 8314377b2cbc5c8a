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
