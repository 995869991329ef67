"""divmin.eval._samples against independent oracles: POT, scipy, brute force, closed forms."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import scipy.linalg
import torch

from divmin.eval._samples import (
    class_coverage,
    frechet_distance,
    gaussian_frechet_distance,
    mode_stats,
    precision_recall,
    sliced_wasserstein,
)


@pytest.mark.parametrize("n,m,p", [(300, 300, 2.0), (200, 347, 2.0), (150, 90, 1.0)])
def test_sliced_wasserstein_matches_pot(n, m, p):
    gen = torch.Generator().manual_seed(n + m)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = 0.5 + 2 * torch.randn(m, 3, generator=gen, dtype=torch.float64)
    theta = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    ours = sliced_wasserstein(x, y, projections=theta, p=p)
    pot = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), projections=theta.T.numpy(), p=p)
    assert float(ours) == pytest.approx(float(pot), rel=1e-9)


def test_sliced_wasserstein_of_a_translation_in_1d_is_the_shift():
    """In 1-D, W_p between a sample and its translate by c is |c| for every p (quantiles shift)."""
    x = torch.randn(500, 1)
    sw = sliced_wasserstein(x, x + 1.5, num_projections=3)
    assert float(sw) == pytest.approx(1.5, rel=1e-5)
    assert float(sliced_wasserstein(x, x.clone())) == 0.0


def test_frechet_distance_matches_scipy_sqrtm():
    gen = np.random.default_rng(0)
    a, b = gen.normal(size=(400, 6)), gen.normal(size=(300, 6)) @ gen.normal(size=(6, 6)) + 0.3
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a.T), np.cov(b.T)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean)
    assert frechet_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, rel=1e-7)


def test_gaussian_frechet_closed_form_for_commuting_covariances():
    """Diagonal covariances: sum (mu1-mu2)^2 + sum (sqrt(v1) - sqrt(v2))^2."""
    v1, v2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.25])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = float((mu1 - mu2).square().sum() + (v1.sqrt() - v2.sqrt()).square().sum())
    got = gaussian_frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)


def _brute_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        return np.array([np.sort(np.linalg.norm(x - xi, axis=1))[k] for xi in x])

    def inside(pts, centres, r):
        return np.mean([any(np.linalg.norm(c - q) <= rc for c, rc in zip(centres, r)) for q in pts])

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_precision_recall_matches_brute_force_loops():
    gen = np.random.default_rng(1)
    real, fake = gen.normal(size=(60, 2)), gen.normal(size=(50, 2)) * 0.5 + 1.0
    pr = precision_recall(torch.tensor(fake), torch.tensor(real), k=3, chunk=7)
    assert (pr.precision, pr.recall) == pytest.approx(_brute_precision_recall(real, fake, 3), abs=1e-12)


def test_precision_recall_extremes():
    x = torch.randn(100, 2)
    assert precision_recall(x.clone(), x) == (1.0, 1.0)
    assert precision_recall(x + 100.0, x) == (0.0, 0.0)
    collapsed = 0.01 * torch.randn(100, 2)  # a mode-collapsed generator: precise, no recall
    pr = precision_recall(collapsed, torch.randn(2000, 2))
    assert pr.precision == 1.0 and pr.recall < 0.1


def test_mode_stats_counts_hand_made_assignments():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    weights = torch.tensor([0.5, 0.3, 0.2])
    # 6 samples at mode 0, 4 at mode 1, none at mode 2, 2 far away (off-mode)
    x = torch.cat([torch.zeros(6, 2), torch.tensor([[10.0, 0.1]]).repeat(4, 1), torch.tensor([[5.0, 5.0]] * 2)])
    st = mode_stats(x, means, weights, 0.5, k_std=3.0, coverage=0.25)
    torch.testing.assert_close(st.shares, torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64))
    assert st.covered == 2
    assert st.tv == pytest.approx(0.5 * (0.1 + 0.1 + 0.2))
    assert st.quality == pytest.approx(10 / 12)


def test_mode_stats_of_exact_samples_are_near_perfect():
    from divmin.diffusion import GaussianMixtureTeacher

    means = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    w = torch.tensor([0.5, 0.25, 0.15, 0.1])
    x = GaussianMixtureTeacher(means, 0.2, w).sample(20_000, generator=torch.Generator().manual_seed(0))
    st = mode_stats(x, means, w, 0.2)
    assert st.covered == 4 and st.tv < 0.02 and st.quality > 0.98  # 3-sigma disc in 2-D holds 98.9%


def test_class_coverage():
    st = class_coverage(torch.tensor([0, 0, 1, 1, 1, 3]), 4, coverage=0.5)
    torch.testing.assert_close(st.shares, torch.tensor([2 / 6, 3 / 6, 0.0, 1 / 6], dtype=torch.float64))
    assert st.covered == 3  # threshold 0.5 * 1/4 = 1/8: classes 0, 1, 3
    assert st.tv == pytest.approx(0.5 * (1 / 12 + 1 / 4 + 1 / 4 + 1 / 12))


def test_bad_inputs_name_the_argument():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="samples"):
        mode_stats(x[:, 0], x, torch.ones(10), 1.0)
    with pytest.raises(ValueError, match="weights"):
        mode_stats(x, x[:3], torch.ones(2), 1.0)
    with pytest.raises(ValueError, match="k"):
        precision_recall(x, x, k=10)
    with pytest.raises(ValueError, match="projections"):
        sliced_wasserstein(x, x, projections=torch.ones(4, 3))
    with pytest.raises(ValueError, match="labels"):
        class_coverage(torch.tensor([0, 5]), 3)
