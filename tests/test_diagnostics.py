"""Convergence diagnostics (xafsflow.bayes.diagnostics): R-hat, bulk and tail ESS.

Checked against ArviZ (0.23, ``arviz.rhat`` / ``arviz.ess``) on the same draws,
against an AR(1) process whose ESS is known, and on the edge cases.

Conventions shared with ArviZ (so agreement is to rounding, asserted at 1e-6
relative): split chains drop the middle draw of odd chains; ranks are average
ranks over all draws with Blom's offsets (r - 3/8) / (S + 1/4); the folded
draws are taken about the median of the split draws; tail quantiles use linear
interpolation over all draws; autocovariances are 1/N normalized; the ESS adds
the even lag after Geyer's truncation and is capped at S log10 S.

Documented differences, not compared: ArviZ's ``rhat`` returns NaN for a
single chain (it requires two), ours compares the two halves of the chain (the
split-R-hat definition); for a constant parameter ArviZ's ESS returns the
number of draws, ours returns NaN (as for R-hat).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import signal, stats

from xafsflow.bayes import diagnostics as dg

RTOL = 1e-6


def _ar1(rng, phi, chains, draws, params=None):
    """Stationary AR(1) chains x_t = phi x_{t-1} + e_t with unit innovations."""
    shape = (chains, draws) if params is None else (chains, draws, params)
    e = rng.standard_normal(shape)
    e[:, 0] /= np.sqrt(1.0 - phi**2)          # start in the stationary distribution
    return signal.lfilter([1.0], [1.0, -phi], e, axis=1)


def _cases():
    rng = np.random.default_rng(20240611)
    shifted = rng.standard_normal((4, 1000, 3))
    shifted[3] += np.array([0.5, 1.0, 3.0])     # one chain elsewhere: R-hat >> 1.01
    return {
        "iid_normal": rng.standard_normal((4, 1000, 5)),
        "ar1_0.9": _ar1(rng, 0.9, 4, 1000, 3),
        "ar1_0.99": _ar1(rng, 0.99, 4, 1000, 3),
        "different_means": shifted,
        "cauchy": rng.standard_cauchy((4, 1000, 3)),
        "odd_draws": _ar1(rng, 0.5, 4, 999, 2),
        "antithetic": _ar1(rng, -0.6, 4, 1000, 2),   # ESS > S: hits the S log10 S cap
        "short": rng.standard_normal((3, 7, 2)),
    }


CASES = _cases()


@pytest.fixture(scope="module")
def az():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # ArviZ's refactor notice at import
        return pytest.importorskip("arviz")


def _arviz(az, func, x, **kwargs):
    """ArviZ's result on a (chains, draws[, params]) array, as a NumPy array."""
    return np.asarray(func(az.convert_to_dataset(x), **kwargs)["x"].values, dtype=float)


def _reference_rank_rhat(x):
    """Rank-normalized R-hat written out literally for one parameter (chains, draws)."""
    n = x.shape[1] // 2
    halves = [c[:n] for c in x] + [c[x.shape[1] - n:] for c in x]

    def rhat(chains):
        flat = np.concatenate(chains)
        z = stats.norm.ppf((stats.rankdata(flat) - 0.375) / (flat.size + 0.25))
        z = z.reshape(len(chains), n)
        w = np.mean([np.var(c, ddof=1) for c in z])
        var_plus = (n - 1) / n * w + np.var(z.mean(axis=1), ddof=1)
        return np.sqrt(var_plus / w)

    med = np.median(np.concatenate(halves))
    return max(rhat(halves), rhat([np.abs(h - med) for h in halves]))


# ------------------------------------------------------------ ArviZ agreement


@pytest.mark.parametrize("name", list(CASES))
def test_rhat_matches_arviz(az, name):
    x = CASES[name]
    np.testing.assert_allclose(dg.rank_normalized_rhat(x), _arviz(az, az.rhat, x, method="rank"),
                               rtol=RTOL)
    np.testing.assert_allclose(dg.split_rhat(x), _arviz(az, az.rhat, x, method="split"), rtol=RTOL)


@pytest.mark.parametrize("name", list(CASES))
def test_ess_bulk_and_tail_match_arviz(az, name):
    x = CASES[name]
    np.testing.assert_allclose(dg.ess_bulk(x), _arviz(az, az.ess, x, method="bulk"), rtol=RTOL)
    np.testing.assert_allclose(dg.ess_tail(x), _arviz(az, az.ess, x, method="tail"), rtol=RTOL)


@pytest.mark.parametrize("name", [n for n in CASES if n != "short"])
def test_plain_ess_of_split_chains_matches_arviz_mean_ess(az, name):
    # ArviZ's "mean" ESS is the ESS of the split chains without rank normalization.
    # ("short" is left out: its split chains have 3 draws, below our 4-draw minimum.)
    x = CASES[name]
    np.testing.assert_allclose(dg.ess(dg.split_chains(x)), _arviz(az, az.ess, x, method="mean"),
                               rtol=RTOL)


def test_single_chain_ess_matches_arviz(az):
    x = _ar1(np.random.default_rng(5), 0.7, 1, 2000, 3)
    np.testing.assert_allclose(dg.ess_bulk(x), _arviz(az, az.ess, x, method="bulk"), rtol=RTOL)
    np.testing.assert_allclose(dg.ess_tail(x), _arviz(az, az.ess, x, method="tail"), rtol=RTOL)


def test_two_dimensional_input_gives_a_float_equal_to_arviz(az):
    x = CASES["ar1_0.9"][:, :, 0]
    for ours, kwargs, func in [(dg.rank_normalized_rhat, {"method": "rank"}, az.rhat),
                               (dg.ess_bulk, {"method": "bulk"}, az.ess),
                               (dg.ess_tail, {"method": "tail"}, az.ess)]:
        value = ours(x)
        assert isinstance(value, float)
        assert value == pytest.approx(float(_arviz(az, func, x, **kwargs)), rel=RTOL)


# ------------------------------------------------------- what the values say


def test_rhat_flags_chains_with_different_means_and_passes_mixed_ones():
    assert np.all(dg.rank_normalized_rhat(CASES["different_means"]) > 1.02)
    assert np.all(dg.rank_normalized_rhat(CASES["iid_normal"]) < 1.01)
    assert np.all(dg.rank_normalized_rhat(CASES["cauchy"]) < 1.01)


def test_iid_ess_is_about_the_number_of_draws():
    x = CASES["iid_normal"]
    for value in (dg.ess_bulk(x), dg.ess_tail(x)):
        assert np.all(np.abs(value / x[:, :, 0].size - 1) < 0.15)


def test_antithetic_chains_are_capped_at_s_log10_s():
    x = CASES["antithetic"]
    s = x.shape[0] * x.shape[1]
    np.testing.assert_allclose(dg.ess_bulk(x), s * np.log10(s), rtol=1e-12)


@pytest.mark.parametrize("phi, draws", [(0.9, 100_000), (0.99, 500_000)])
def test_ar1_bulk_ess_approaches_the_analytic_value(phi, draws):
    # For AR(1) the integrated autocorrelation time is (1 + phi) / (1 - phi).
    x = _ar1(np.random.default_rng(int(phi * 100)), phi, 4, draws)
    expected = x.size * (1 - phi) / (1 + phi)
    assert dg.ess_bulk(x) == pytest.approx(expected, rel=0.10)
    assert dg.ess(x) == pytest.approx(expected, rel=0.10)


def test_single_chain_rhat_compares_its_two_halves():
    rng = np.random.default_rng(11)
    stationary = rng.standard_normal(2000)
    drifting = np.r_[rng.standard_normal(1000), rng.standard_normal(1000) + 1.0]
    assert dg.rank_normalized_rhat(stationary[None]) < 1.01
    assert dg.rank_normalized_rhat(drifting[None]) > 1.1
    for x in (stationary[None], drifting[None], CASES["ar1_0.9"][:, :, 1]):
        assert dg.rank_normalized_rhat(x) == pytest.approx(_reference_rank_rhat(x), rel=1e-12)


# -------------------------------------------------------------- shapes, edges


def test_parameters_are_computed_independently():
    x = CASES["cauchy"]
    for func in (dg.rank_normalized_rhat, dg.split_rhat, dg.ess, dg.ess_bulk, dg.ess_tail):
        whole = func(x)
        assert whole.shape == (3,)
        np.testing.assert_array_equal(whole, [func(x[:, :, j]) for j in range(3)])
    grid = CASES["iid_normal"][:, :, :4].reshape(4, 1000, 2, 2)
    assert dg.ess_bulk(grid).shape == (2, 2)
    np.testing.assert_array_equal(dg.ess_bulk(grid).ravel(), dg.ess_bulk(grid.reshape(4, 1000, 4)))


def test_constant_parameter_and_nan_draws_give_nan_without_warnings():
    x = CASES["iid_normal"][:, :, :3].copy()
    x[:, :, 1] = 2.5
    x[2, 17, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for func in (dg.rank_normalized_rhat, dg.split_rhat, dg.ess, dg.ess_bulk, dg.ess_tail):
            value = func(x)
            assert np.isnan(value[1:]).all(), func.__name__
            assert value[0] == func(x[:, :, 0]), func.__name__
            assert np.isnan(func(np.full((4, 50), -1.0))), func.__name__


def test_fewer_than_four_draws_give_nan_and_four_work():
    rng = np.random.default_rng(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for func in (dg.rank_normalized_rhat, dg.split_rhat, dg.ess, dg.ess_bulk, dg.ess_tail):
            assert np.isnan(func(rng.standard_normal((4, 3, 2)))).all(), func.__name__
            assert np.isnan(func(rng.standard_normal((4, 0)))), func.__name__
        for func in (dg.rank_normalized_rhat, dg.ess_bulk, dg.ess):
            assert np.isfinite(func(rng.standard_normal((4, 4, 2)))).all(), func.__name__


def test_chains_stuck_at_different_values_give_infinite_rhat():
    x = np.repeat(np.array([0.0, 0.1, 0.2, 0.3])[:, None], 100, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dg.rank_normalized_rhat(x) == np.inf
        assert dg.split_rhat(x) == np.inf
        assert dg.ess_bulk(x) < 10


def test_input_must_have_chain_and_draw_axes():
    with pytest.raises(ValueError, match="chains"):
        dg.ess_bulk(np.zeros(10))
    with pytest.raises(ValueError, match="chains"):
        dg.rank_normalized_rhat(np.zeros((0, 10)))


def test_split_chains_and_rank_normalize():
    x = np.arange(2 * 5 * 1, dtype=float).reshape(2, 5, 1)
    np.testing.assert_array_equal(dg.split_chains(x)[:, :, 0], [[0, 1], [5, 6], [3, 4], [8, 9]])
    z = dg.rank_normalize(np.array([[3.0, 1.0], [2.0, 2.0]]))
    ranks = np.array([[4.0, 1.0], [2.5, 2.5]])
    np.testing.assert_allclose(z, stats.norm.ppf((ranks - 0.375) / 4.25))
