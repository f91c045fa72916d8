"""Conditional-linear moves of the sampler (xafsflow.bayes.remc): the design matrix against the
model, the kernel against its NumPy reference, and the sampled posterior against a grid."""

from __future__ import annotations

import numpy as np
import pytest

from xafsflow.bayes import remc
from xafsflow.bayes.diagnostics import ess
from xafsflow.bayes.models import peaks_model, preedge_model, xanes_model
from xafsflow.bayes.remc import ChainSettings, run_chain
from xafsflow.bayes.xmcd import dichroism_model, helicity_model


def _models():
    return {
        "xanes": (xanes_model(2, -10.0, 30.0, 0.0), np.arange(-10.0, 30.0, 0.5)),
        "preedge": (preedge_model(3, 7105.0, 7118.0, 1.0, 7121.0), np.arange(7105.0, 7118.0, 0.25)),
        "peaks": (peaks_model(2), np.linspace(0.0, 3.0, 60)),
        "helicity": (helicity_model(2, 700.0, 730.0, 5.0), np.arange(700.0, 730.0, 0.2)),
        "dichroism": (dichroism_model(1, 2, 700.0, 730.0, 5.0), np.arange(700.0, 730.0, 0.2)),
        # a fixed height: the background is not wholly linear in the free parameters (the general path)
        "preedge_fixed_offset": (preedge_model(2, 7105.0, 7118.0, 1.0, 7121.0,
                                               priors={"offset": {"dist": "fixed", "value": 0.05}}),
                                 np.arange(7105.0, 7118.0, 0.25)),
        "xanes_fixed_step": (xanes_model(1, -10.0, 30.0, 0.0, priors={"step": {"dist": "fixed", "value": 1.0}}),
                             np.arange(-10.0, 30.0, 0.5)),
    }


def test_linear_indices_are_the_heights_areas_and_line():
    m = xanes_model(2, -10.0, 30.0, 0.0)
    assert m.linear_indices().tolist() == [0, 3, 7, 10]
    m = preedge_model(2, 7105.0, 7118.0, 1.0, 7121.0)
    assert m.linear_indices().tolist() == [0, 3, 4, 6, 9]
    # a fixed parameter is not moved
    m = preedge_model(1, 7105.0, 7118.0, 1.0, 7121.0, priors={"offset": {"dist": "fixed", "value": 0.0}})
    assert m.linear_indices().tolist() == [0, 4, 6]
    assert peaks_model(3).linear_indices().tolist() == [0, 3, 6]


@pytest.mark.parametrize("which", list(_models()))
def test_design_reproduces_the_model(which):
    """c + A^T beta, built from unit curves, equals the model evaluated at theta (NumPy reference)."""
    model, x = _models()[which]
    rng = np.random.default_rng(3)
    lin = model.linear_indices()
    P, N = model.n_params, x.size
    for theta in model.sample_prior(rng, 5):
        A, c = np.zeros((P, N)), np.zeros(N)
        cw = np.zeros((P, 2), np.int64)
        remc._design(model.bg_type, model.comp_type, theta, x, model.nb, model.K, lin, lin.size,
                     remc.uniform_step(x), np.zeros(P), np.zeros((3, N)), np.zeros(N), A, c, cw)
        # outside its window a column is zero
        for i in range(lin.size):
            assert not np.any(A[i, : cw[i, 0]]) and not np.any(A[i, cw[i, 1]:])
        f = c + theta[lin] @ A[: lin.size]
        ref = model.evaluate(x, theta)
        np.testing.assert_allclose(f, ref, rtol=1e-9, atol=1e-11 * np.max(np.abs(ref)))


# spectra with components the data determine (a prior draw may put them where the data say nothing)
TRUTH = {
    "xanes": np.array([1.0, 0.0, 2.0, 5.0, 3.0, 4.0, 0.5, 1.0, 10.0, 2.0, 0.5, 20.0, 3.0]),
    "preedge": np.array([0.8, 7121.0, 4.0, 0.02, 0.001, 7105.0, 0.12, 7110.5, 0.7, 0.08, 7112.6, 0.8,
                         0.05, 7115.0, 0.6]),
    "helicity": np.array([4.0, 708.0, 0.5, 2.0, 712.0, 0.8]),
}


@pytest.mark.parametrize("which", list(TRUTH))
def test_kernel_equals_reference_with_both_moves_accepted(which):
    model, x = _models()[which]
    theta = TRUTH[which]
    rng = np.random.default_rng(5)
    f = model.evaluate(x, theta)
    y = f + rng.normal(0.0, 0.01 * np.ptp(f), x.size)
    bv = np.concatenate([[0.0], np.geomspace(1.0, 1.0 / (0.01 * np.ptp(f)) ** 2, 6)])
    s = ChainSettings(sweeps=60, burn_in=60, thin=5, block=20, adapt_every=20, refresh=30, checkpoint_every=20,
                      joint_min=20, joint_window=40)
    a = run_chain(x, y, model, bv, s, np.random.SeedSequence(2))
    b = run_chain(x, y, model, bv, s, np.random.SeedSequence(2), use_kernel=False)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.energies, b.energies, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(a.linear_acceptance[1:], b.linear_acceptance[1:])
    np.testing.assert_array_equal(a.collapsed_acceptance[1:], b.collapsed_acceptance[1:])
    assert np.nanmax(a.linear_acceptance) > 0.1 and np.nanmax(a.collapsed_acceptance) > 0.0


def test_linear_moves_off_tries_none_and_on_changes_the_chain():
    """linear_moves=False makes no conditional-linear move (that its chains equal those written before the
    moves existed, bit for bit, is test_weighted_likelihood's golden-file test); on, the chain differs."""
    model, x = _models()["preedge"]
    rng = np.random.default_rng(5)
    y = model.evaluate(x, model.sample_prior(rng, 1)[0]) + rng.normal(0.0, 0.005, x.size)
    bv = np.concatenate([[0.0], np.geomspace(1.0, 4e4, 6)])
    kw = dict(sweeps=40, burn_in=40, thin=5, block=20, adapt_every=20, checkpoint_every=20, joint_min=20)
    off = run_chain(x, y, model, bv, ChainSettings(linear_moves=False, **kw), np.random.SeedSequence(4))
    on = run_chain(x, y, model, bv, ChainSettings(**kw), np.random.SeedSequence(4))
    assert np.all(np.isnan(off.linear_acceptance)) and np.all(np.isnan(off.collapsed_acceptance))
    assert np.nansum(on.linear_acceptance) > 0
    assert not np.array_equal(off.samples, on.samples)


def _grid_posterior(x, y, model, b, n=81):
    """Posterior means and sds of (a, mu, b) of a one-peak model at noise precision b, on an n^3 grid."""
    axes = [np.linspace(0.55, 1.65, n), np.linspace(1.41, 1.60, n), np.geomspace(15.0, 120.0, n)]
    # the prior is a product: its log on each axis, broadcast
    logp = sum(np.array([model.priors[j].logpdf(v) for v in ax], float).reshape([-1 if i == j else 1
                                                                                 for i in range(3)])
               for j, ax in enumerate(axes))
    logp = logp + np.log(axes[2])[None, None, :]  # geometric grid in b: cell volume proportional to b
    A, M, B = np.meshgrid(*axes, indexing="ij")
    r = y - A[..., None] * np.exp(-0.5 * B[..., None] * (x - M[..., None]) ** 2)
    logp = logp - 0.5 * b * np.einsum("...i,...i->...", r, r)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    means = np.array([np.sum(w * v) for v in (A, M, B)])
    sds = np.array([np.sqrt(np.sum(w * (v - m) ** 2)) for v, m in zip((A, M, B), means)])
    return means, sds, w


def test_sampled_posterior_equals_the_grid_posterior():
    """One Gaussian peak (height linear; centre and precision nonlinear): the coldest replica's
    means and sds of (a, mu, b) agree with an 81^3 grid integration of the same posterior."""
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 3.0, 40)
    sigma = 0.1
    y = 1.0 * np.exp(-0.5 * 40.0 * (x - 1.5) ** 2) + rng.normal(0.0, sigma, x.size)
    model = peaks_model(1)
    b = 1.0 / sigma**2
    means, sds, w = _grid_posterior(x, y, model, b)
    # the grid holds the posterior: its edges carry no weight
    for ax in range(3):
        edge = np.take(w, [0, -1], axis=ax).sum()
        assert edge < 1e-3
    bv = np.concatenate([[0.0], np.geomspace(1.0, b, 8)])
    s = ChainSettings(sweeps=6000, burn_in=2000, thin=2)
    res = run_chain(x, y, model, bv, s, np.random.SeedSequence(7))
    assert np.nanmin(res.linear_acceptance[1:]) > 0.2 and res.collapsed_acceptance[-1] > 0.1
    draws = res.samples[:, -1, :]
    n_eff = ess(draws[None])
    se = sds / np.sqrt(n_eff)
    z = (draws.mean(axis=0) - means) / se
    assert np.all(np.abs(z) < 4.0), (z, n_eff)
    np.testing.assert_allclose(draws.std(axis=0), sds, rtol=0.1)
