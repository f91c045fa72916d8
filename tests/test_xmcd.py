"""XMCD sum rules, the pseudo-Voigt component in the replica-exchange kernel, and the Bayesian XMCD
analysis on a simulated pair with known components and exact moments (issue 9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special

from xafsflow.bayes.models import pvoigt, pvoigt_integral, pvoigt_shape
from xafsflow.bayes.remc import run_chain
from xafsflow.bayes.settings import ChainSettings
from xafsflow.errors import AnalysisInputError
from xafsflow.xas import sum_rules as sr


# ------------------------------------------------------------------------ sum rules
def _gauss(e, area, c, s):
    return area / (s * math.sqrt(2 * math.pi)) * np.exp(-0.5 * ((e - c) / s) ** 2)


def _gauss_int(area, c, s, lo, hi):
    return area * 0.5 * (special.erf((hi - c) / (s * math.sqrt(2))) - special.erf((lo - c) / (s * math.sqrt(2))))


def test_moments_formula_on_hand_computed_values():
    # p = -1, q = -0.5, r = 10, n_h = 2: m_orb = -4(-0.5)2/(3*10) = 2/15; m_spin = -(-6 + 2)2/10 = 0.8
    m = sr.moments(-1.0, -0.5, 10.0, 2.0, 1.0)
    assert m["m_orb"] == pytest.approx(2.0 / 15.0, rel=1e-12)
    assert m["m_spin_eff"] == pytest.approx(0.8, rel=1e-12)
    assert m["ratio"] == pytest.approx((2.0 / 15.0) / 0.8, rel=1e-12)
    # P_c = 0.8 and 60 degrees incidence: the dichroism is scaled by 0.8 * 0.5, so moments by 1 / 0.4
    m2 = sr.moments(-1.0, -0.5, 10.0, 2.0, 0.8, math.cos(math.radians(60.0)))
    assert m2["m_orb"] == pytest.approx(2.0 / 15.0 / 0.4, rel=1e-12)
    assert m2["m_spin_eff"] == pytest.approx(0.8 / 0.4, rel=1e-12)
    assert m2["ratio"] == pytest.approx(m["ratio"], rel=1e-12)  # the ratio needs neither P_c nor the angle
    with pytest.raises(AnalysisInputError, match="polarization"):
        sr.moments(-1.0, -0.5, 10.0, 2.0, 1.5)


def test_step_integral_equals_quadrature():
    exact = sr.edge_steps_integral(700.0, 735.0, 708.0, 721.0, 0.9, 1.3)
    quad, _ = integrate.quad(lambda e: float(sr.edge_steps(e, 708.0, 721.0, 0.9, 1.3)), 700.0, 735.0,
                             points=[708.0, 721.0], epsabs=1e-13, epsrel=1e-13)
    assert exact == pytest.approx(quad, rel=1e-10)
    # far above both steps the integrand is the full height: 2/3 + 1/3 of it
    assert float(sr.edge_steps(1e6, 708.0, 721.0, 0.9, 1.3)) == pytest.approx(0.9, rel=1e-6)


def test_sum_rules_on_analytic_spectra_to_1e6():
    """Gaussian lines on two arctan steps: p, q, r and the moments from the spectra (fine grid, trapezoid)
    against closed-form integrals (erf), to 1e-6 relative."""
    e = np.linspace(695.0, 740.0, 45001)
    steps = sr.edge_steps(e, 708.0, 721.0, 1.0, 1.0)
    lines_p = [(5.0, 708.0, 0.8), (2.0, 721.0, 1.0)]
    lines_m = [(6.5, 708.0, 0.8), (1.6, 721.0, 1.0)]
    mu_p = steps + sum(_gauss(e, *g) for g in lines_p)
    mu_m = steps + sum(_gauss(e, *g) for g in lines_m)
    w3, w23 = (700.0, 714.5), (700.0, 733.0)
    p, q, r = sr.integrals(e, mu_p, mu_m, steps, w3, w23)

    def exact(lines, w):
        return sum(_gauss_int(*g, *w) for g in lines)

    p0 = exact(lines_p, w3) - exact(lines_m, w3)
    q0 = exact(lines_p, w23) - exact(lines_m, w23)
    r0 = exact(lines_p, w23) + exact(lines_m, w23)
    assert p == pytest.approx(p0, rel=1e-6)
    assert q == pytest.approx(q0, rel=1e-6)
    assert r == pytest.approx(r0, rel=1e-6)
    m, m0 = sr.moments(p, q, r, 3.39, 1.0), sr.moments(p0, q0, r0, 3.39, 1.0)
    for k in ("m_orb", "m_spin_eff", "ratio"):
        assert m[k] == pytest.approx(m0[k], rel=1e-6)
    # the steps are removed: r of spectra that are only steps is zero
    assert sr.integrals(e, steps, steps, steps, w3, w23)[2] == pytest.approx(0.0, abs=1e-12)


def test_window_outside_data_is_an_error():
    e = np.linspace(700, 730, 31)
    with pytest.raises(AnalysisInputError, match="outside the data"):
        sr.window_integral(e, np.ones_like(e), 690.0, 720.0)


# ------------------------------------------------------------------------ pseudo-Voigt
def test_pvoigt_matches_numerical_voigt_and_its_integral():
    """The Thompson-Cox-Hastings pseudo-Voigt against scipy's exact Voigt profile (1 % of the peak)
    and its closed-form window integral against quadrature."""
    from scipy.special import voigt_profile

    x = np.linspace(-8, 8, 3201)
    for sd in (0.1, 0.5, 1.5):
        exact = voigt_profile(x, sd, 0.5)  # Lorentzian HWHM 0.5 = FWHM 1 eV
        approx = pvoigt(x, 1.0, 0.0, sd)
        assert np.max(np.abs(approx - exact)) < 0.015 * exact.max()
        f, eta = pvoigt_shape(sd)
        assert 0 < eta <= 1 and f >= 1.0
        val = float(pvoigt_integral(2.0, 0.3, sd, -2.0, 5.0))
        quad, _ = integrate.quad(lambda t: float(pvoigt(np.array([t]), 2.0, 0.3, sd)[0]), -2.0, 5.0,
                                 epsabs=1e-13, epsrel=1e-12)
        assert val == pytest.approx(quad, rel=1e-9)


def test_pvoigt_kernel_equals_numpy_reference():
    from xafsflow.bayes.xmcd import dichroism_model, helicity_model

    x = np.arange(845.0, 880.0, 0.5)
    y = pvoigt(x, 4.0, 853.0, 0.5) + pvoigt(x, 1.5, 870.0, 0.6) + np.random.default_rng(0).normal(0, 0.01, x.size)
    s = ChainSettings(sweeps=60, burn_in=60, thin=5, block=20, adapt_every=20, refresh=30, checkpoint_every=20,
                      joint_min=20, joint_window=40)
    bv = np.concatenate([[0.0], np.geomspace(0.5, 1e4, 5)])
    for model in (helicity_model(2, x[0], x[-1], 3.0), dichroism_model(1, 1, x[0], x[-1], 6.0)):
        a = run_chain(x, y, model, bv, s, np.random.SeedSequence(3))
        b = run_chain(x, y, model, bv, s, np.random.SeedSequence(3), use_kernel=False)
        np.testing.assert_allclose(a.energies, b.energies, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(a.samples, b.samples, rtol=1e-9, atol=1e-12)
        assert a.exchange_rate.sum() > 0
        # the incrementally updated energy equals a full evaluation of the last kept draw
        theta = a.samples[-1, -1]
        e_full = 0.5 * np.mean((y - model.evaluate(x, theta)) ** 2)
        assert a.energies[-1, -1] == pytest.approx(e_full, rel=1e-9)
