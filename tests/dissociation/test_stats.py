"""attnlab.dissociation.stats against known answers and independent references.

- Coverage: the percentile bootstrap 95% interval of a mean, on 2,000 simulated data sets with a known mean, covers it
  in about 95% of them. What to expect: the percentile interval of a mean is close to mean +- 1.96 plug-in standard
  errors, and the plug-in spread is sqrt((n - 1) / n) of the unbiased one, so for normal data of n = 40 its coverage
  is P(|t_39| < 1.96 sqrt(39/40)) = 0.940; skewed data (exponential, n = 60) lose about one point more. With 2,000
  independent data sets the observed coverage has standard deviation sqrt(0.94 * 0.06 / 2000) = 0.0053, so the
  bands [0.925, 0.960] (normal) and [0.915, 0.955] (exponential) are about 3 standard deviations wide each way. They
  have power: on the same simulated data a 90% interval covers 0.880 / 0.871 and a 99% one 0.981 / 0.975 (both
  fail), as would a standard error without resampling or an interval from too few resamples.
- Pairing: every leading row is resampled at the same items (checked against the indices of bootstrap_indices and
  through shift and scale equivariance, which only holds when the draws are shared).
- Holm and Benjamini-Hochberg adjusted p-values against hand-worked examples, and brute-force definitions.
"""

import math

import numpy as np
import pytest
import torch

from attnlab.dissociation import stats
from attnlab.errors import ArgumentError


@pytest.mark.parametrize(("dist", "band"), [("normal", (0.925, 0.960)), ("exponential", (0.915, 0.955))])
def test_bootstrap_ci_coverage(dist, band):
    """About 95% of 2,000 intervals cover the true mean (normal n=40; skewed exponential n=60); see the module
    docstring for the bands."""
    rng = np.random.default_rng(12345)
    true, n = (0.3, 40) if dist == "normal" else (1.0, 60)
    covered = 0
    widths = []
    for k in range(2000):
        x = rng.normal(true, 1.0, n) if dist == "normal" else rng.exponential(true, n)
        mean, lo, hi = stats.bootstrap_ci(torch.tensor(x), n_resamples=1000, seed=k, level=0.95)
        assert float(mean) == pytest.approx(x.mean(), abs=1e-12)
        covered += float(lo) <= true <= float(hi)
        widths.append(float(hi - lo))
    coverage = covered / 2000
    assert band[0] <= coverage <= band[1], coverage
    # the width is that of a normal-theory 95% interval, 2 * 1.96 * sd / sqrt(n) (sd = 1 for both), within 10%
    assert np.mean(widths) == pytest.approx(2 * 1.96 / math.sqrt(n), rel=0.1)


def test_bootstrap_ci_level_matters():
    """A 90% interval is narrower than a 95% one on the same draws, and a 99% one wider."""
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    w = {lvl: float(stats.bootstrap_ci(x, level=lvl)[2] - stats.bootstrap_ci(x, level=lvl)[1])
         for lvl in (0.9, 0.95, 0.99)}
    assert w[0.9] < w[0.95] < w[0.99]


def test_bootstrap_ci_is_the_percentile_interval_of_shared_draws():
    """Each row's interval is the percentile interval of its means over the items of bootstrap_indices, the same
    draws for every row (a reference with numpy's percentile, linear interpolation)."""
    g = torch.Generator().manual_seed(1)
    values = torch.randn(3, 25, generator=g, dtype=torch.float64)
    mean, lo, hi = stats.bootstrap_ci(values, n_resamples=500, seed=7, level=0.95)
    idx = stats.bootstrap_indices(25, 500, 7).numpy()
    assert idx.shape == (500, 25) and idx.min() >= 0 and idx.max() < 25
    v = values.numpy()
    boot = v[:, idx].mean(-1)  # [3, 500]: row r resampled at the same items idx[b] for every r
    np.testing.assert_allclose(mean.numpy(), v.mean(-1), atol=1e-12)
    np.testing.assert_allclose(lo.numpy(), np.percentile(boot, 2.5, axis=-1), atol=1e-10)
    np.testing.assert_allclose(hi.numpy(), np.percentile(boot, 97.5, axis=-1), atol=1e-10)


def test_paired_resampling_shift_and_scale():
    """Paired draws: a row equal to another plus 5 has its interval shifted by exactly 5, one equal to twice another
    has it doubled, and the interval of a row difference is the difference's own (much narrower than either)."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(40, generator=g, dtype=torch.float64)
    noise = 0.01 * torch.randn(40, generator=g, dtype=torch.float64)
    values = torch.stack([a, a + 5, 2 * a, a + noise])
    _, lo, hi = stats.bootstrap_ci(values, seed=3)
    assert float(lo[1] - lo[0]) == pytest.approx(5, abs=1e-9) and float(hi[1] - hi[0]) == pytest.approx(5, abs=1e-9)
    assert float(lo[2]) == pytest.approx(2 * float(lo[0]), abs=1e-9)
    assert float(hi[2]) == pytest.approx(2 * float(hi[0]), abs=1e-9)
    # unpaired (other items per row) would make lo[3] - lo[0] of the order of the interval width (~0.6)
    assert abs(float(lo[3] - lo[0])) < 0.02 and abs(float(hi[3] - hi[0])) < 0.02


def test_bootstrap_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone():
    x = torch.randn(30, generator=torch.Generator().manual_seed(4))
    state = torch.random.get_rng_state()
    first = stats.bootstrap_ci(x, seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = stats.bootstrap_ci(x, seed=11)
    other = stats.bootstrap_ci(x, seed=12)
    assert all(torch.equal(u, v) for u, v in zip(first, again))
    assert not torch.equal(first[1], other[1])
    assert torch.equal(stats.bootstrap_indices(30, 100, 5), stats.bootstrap_indices(30, 100, 5))
    assert not torch.equal(stats.bootstrap_indices(30, 100, 5), stats.bootstrap_indices(30, 100, 6))


def test_bootstrap_refuses_bad_settings():
    x = torch.randn(10)
    with pytest.raises(ArgumentError):
        stats.bootstrap_ci(x, n_resamples=10)
    with pytest.raises(ArgumentError):
        stats.bootstrap_ci(x, level=1.0)
    with pytest.raises(ArgumentError):
        stats.bootstrap_ci(x[:1])


def _standardised(n: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (z - z.mean()) / z.std()


def test_bootstrap_p_known_cases():
    """The bootstrap Wald test: replicates with mean 2 and standard deviation exactly 1 give p = 2 (1 - Phi(2)) =
    0.0455; with the estimate given, it is used instead of the replicates' mean; no spread: p 1 at 0, 0 elsewhere;
    NaN stays NaN; the sign does not matter (two-sided)."""
    z = _standardised(1000, 0)
    two_sided = math.erfc(2 / math.sqrt(2))  # 2 (1 - Phi(2)), written without the implementation's formula
    assert two_sided == pytest.approx(0.0455, abs=1e-4)
    assert float(stats.bootstrap_p(2 + z)) == pytest.approx(two_sided, abs=1e-9)
    assert float(stats.bootstrap_p(-2 + z)) == pytest.approx(two_sided, abs=1e-9)
    assert float(stats.bootstrap_p(0.5 * z, torch.tensor(1.0))) == pytest.approx(two_sided, abs=1e-9)
    assert float(stats.bootstrap_p(z)) == pytest.approx(1.0, abs=1e-9)
    batch = stats.bootstrap_p(torch.stack([2 + z, 3 * z + 3]))  # leading axes: one p per row
    assert batch.shape == (2,) and float(batch[1]) == pytest.approx(math.erfc(1 / math.sqrt(2)), abs=1e-9)
    assert float(stats.bootstrap_p(torch.zeros(100))) == 1.0
    assert float(stats.bootstrap_p(torch.full((100,), 0.3))) == 0.0
    assert math.isnan(float(stats.bootstrap_p(torch.tensor([1.0, float("nan"), 2.0]))))


def test_bootstrap_p_is_calibrated_under_the_null():
    """Data with mean 0: the p-value of "mean = 0" from the bootstrap of 1,000 data sets falls below 0.05 in about 5%
    of them (binomial sd 0.007; band [0.03, 0.08], allowing the percentile bootstrap's slight narrowness at n = 40),
    and below 0.2 in about 20% ([0.16, 0.26]); data with mean 0.8 (5 standard errors of the mean) are almost always rejected."""
    rng = np.random.default_rng(7)

    def p_values(mu):
        out = []
        for k in range(1000):
            x = torch.tensor(rng.normal(mu, 1, 40))
            idx = stats.bootstrap_indices(40, 1000, k)
            boot = x[idx].mean(-1)  # resampled means, by indexing (not the implementation's weight matrix)
            out.append(float(stats.bootstrap_p(boot, x.mean())))
        return np.array(out)

    null = p_values(0.0)
    assert 0.03 <= (null < 0.05).mean() <= 0.08 and 0.16 <= (null < 0.2).mean() <= 0.26
    assert (p_values(0.8) < 0.05).mean() > 0.97


# -- multiple comparisons ----------------------------------------------------------------------------------------
P = [0.01, 0.04, 0.03, 0.005]
# Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max 0.02, 0.03, 0.06, 0.06
HOLM = [0.03, 0.06, 0.06, 0.02]
# BH: sorted times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04; running min from the top: the same
BH = [0.02, 0.04, 0.04, 0.02]


def _holm_reference(p):
    """Holm 1979 by definition: adj(i) = max over j <= rank(i) of min(1, (m - j + 1) p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order):
        out[i] = max(min(1.0, (m - j) * p[order[j]]) for j in range(rank + 1))
    return out


def _bh_reference(p):
    """Benjamini-Hochberg 1995 by definition: adj(i) = min over j >= rank(i) of min(1, m p_(j) / j)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order):
        out[i] = min(min(1.0, m * p[order[j]] / (j + 1)) for j in range(rank, m))
    return out


def test_adjust_p_hand_worked():
    np.testing.assert_allclose(stats.adjust_p(torch.tensor(P), "holm").numpy(), HOLM, atol=1e-12)
    np.testing.assert_allclose(stats.adjust_p(torch.tensor(P), "bh").numpy(), BH, atol=1e-12)
    # clipped at 1, ties kept, NaN left out of the count (m = 2 here)
    np.testing.assert_allclose(stats.adjust_p(torch.tensor([0.6, 0.6]), "holm").numpy(), [1.0, 1.0])
    out = stats.adjust_p(torch.tensor([0.01, float("nan"), 0.02]), "holm").numpy()
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    with pytest.raises(ArgumentError):
        stats.adjust_p(torch.tensor(P), "bonferroni")


@pytest.mark.parametrize("seed", range(5))
def test_adjust_p_matches_the_definitions(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 1, 15), rng.uniform(0, 0.01, 5), [0.02, 0.02]])
    np.testing.assert_allclose(stats.adjust_p(torch.tensor(p), "holm").numpy(), _holm_reference(list(p)), atol=1e-12)
    np.testing.assert_allclose(stats.adjust_p(torch.tensor(p), "bh").numpy(), _bh_reference(list(p)), atol=1e-12)
