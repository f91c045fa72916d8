"""Replica-exchange sampler, free energy and model selection: tests against exact results,
the NumPy reference, known simulated truth and dynesty."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from xafsflow.bayes import free_energy as fe
from xafsflow.bayes import nagata
from xafsflow.bayes.models import peaks_model, preedge_model, xanes_model
from xafsflow.bayes.posterior import Convergence, LadderTuning, PosteriorSpec, analyse, rhat

FIXED_LENGTH = Convergence(enabled=False)  # exactly `sweeps` production sweeps
from xafsflow.bayes.priors import ImproperPriorError, prior_from_config
from xafsflow.bayes.remc import ChainSettings, run_chain
from xafsflow.errors import InputError

X_NAGATA = nagata.X


def nagata_data(seed: int, sigma: float = 0.1):
    return nagata.data(seed, sigma)


def nagata_truth_vector():
    return nagata.truth_vector()


# ------------------------------------------------------------------ kernel vs reference
def preedge_case(seed: int):
    """A Fe-like pre-edge: two Gaussians on the tail of an edge at 7124 eV plus a sloped line."""
    x = np.arange(7100.0, 7120.0, 0.25)
    model = preedge_model(2, x[0], x[-1], 1.0, 7124.0)
    theta = np.array([0.8, 7124.0, 4.0, 0.02, 0.001, x[0], 0.12, 7112.5, 0.7, 0.08, 7114.6, 0.8])
    y = model.evaluate(x, theta) + np.random.default_rng(seed).normal(0, 0.005, x.size)
    return x, y, model, theta


@pytest.mark.parametrize("which", ["peaks", "xanes", "preedge"])
def test_kernel_equals_numpy_reference(which):
    if which == "peaks":
        x, y = nagata_data(3)
        x, y = x[::3], y[::3]
        model = peaks_model(2)
    elif which == "preedge":
        x, y, model, _ = preedge_case(0)
    else:
        x = np.arange(-10.0, 30.0, 0.5)
        truth = xanes_model(1, -10, 30, 0.0)
        theta = np.array([1.0, 0.0, 2.0, 5.0, 3.0, 4.0, 0.5, 1.0, 10.0, 2.0])
        y = truth.evaluate(x, theta) + np.random.default_rng(0).normal(0, 0.02, x.size)
        model = xanes_model(2, -10, 30, 0.0)
    bv = np.concatenate([[0.0], np.geomspace(0.5, 1e4, 5)])
    # joint moves start after 20 burn-in draws, so the compared sweeps include them
    s = ChainSettings(sweeps=60, burn_in=60, thin=5, block=20, adapt_every=20, refresh=30, checkpoint_every=20,
                      joint_min=20, joint_window=40)
    a = run_chain(x, y, model, bv, s, np.random.SeedSequence(11))
    b = run_chain(x, y, model, bv, s, np.random.SeedSequence(11), use_kernel=False)
    np.testing.assert_allclose(a.energies, b.energies, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(np.nan_to_num(a.acceptance, nan=-1), np.nan_to_num(b.acceptance, nan=-1))
    np.testing.assert_array_equal(a.exchange_rate, b.exchange_rate)
    assert a.exchange_rate.sum() > 0  # exchanges did happen in the compared block
    assert a.joint_acceptance.sum() > 0  # and joint moves were accepted
    np.testing.assert_array_equal(a.joint_acceptance, b.joint_acceptance)


@pytest.mark.parametrize("which", ["peaks", "xanes", "preedge"])
def test_incremental_energy_equals_full_model_evaluation(which):
    """No refresh in production: every recorded energy comes from incremental updates only
    (components, and for xanes the cached step / Lorentzian / Gaussian parts of the background)."""
    if which == "peaks":
        x, y = nagata_data(4)
        model = peaks_model(3)
    elif which == "preedge":
        x, y, model, _ = preedge_case(4)
    else:
        x = np.arange(-15.0, 40.0, 0.5)
        theta = np.array([1.0, 0.3, 2.0, 6.0, 3.0, 4.0, 0.5, 1.0, -6.0, 1.5, 1.0, 25.0, 1.5])
        model = xanes_model(2, x[0], x[-1], 0.0)
        y = model.evaluate(x, theta) + np.random.default_rng(4).normal(0, 0.01, x.size)
    bv = np.concatenate([[0.0], np.geomspace(1e-2, 100, 11)])
    s = ChainSettings(sweeps=300, burn_in=100, thin=10, block=50, refresh=1000, checkpoint_every=50)
    r = run_chain(x, y, model, bv, s, np.random.SeedSequence(5))
    # samples are recorded on the same sweeps as every 10th energy (refresh never ran in production)
    e_at_samples = r.energies[9::10]
    for i in range(0, r.samples.shape[0], 7):
        for l in (3, 11):
            f = model.evaluate(x, r.samples[i, l])
            assert 0.5 * np.mean((y - f) ** 2) == pytest.approx(e_at_samples[i, l], rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ free energy estimators
def test_stepping_stone_and_ti_on_exact_gaussian_samples():
    """1-D: prior N(0, 1), E(theta) = (theta - c)^2 / 2 with N = 1; tempered posteriors are Gaussian."""
    c = 1.3
    bv = np.concatenate([[0.0], np.geomspace(0.01, 50, 40)])
    rng = np.random.default_rng(0)
    prec = 1 + bv
    mean = bv * c / prec
    theta = rng.normal(mean, 1 / np.sqrt(prec), size=(20000, bv.size))
    e = 0.5 * (theta - c) ** 2
    exact = 0.5 * np.log(prec) + 0.5 * c**2 * bv / prec  # -log int exp(-b E) N(0,1)
    np.testing.assert_allclose(fe.stepping_stone(e, bv, 1), exact, atol=0.02)
    np.testing.assert_allclose(fe.thermodynamic_integration(e, bv, 1), exact, atol=0.05)
    err = fe.block_bootstrap(e, bv, 1, rng)
    assert 0 < err[-1] < 0.05
    grid = np.geomspace(0.02, 40, 50)
    curve = fe.free_energy_curve(e, bv, 1, grid)
    np.testing.assert_allclose(curve, 0.5 * np.log(1 + grid) + 0.5 * c**2 * grid / (1 + grid), atol=0.02)


def _tempered_gaussian_energies(rng, bv, c, n, rho):
    """1-D: prior N(0, 1), E = (theta - c)^2 / 2 (N = 1); at each b an AR(1) chain (correlation rho) whose
    marginal is the exact tempered posterior, so F is known and the samples are autocorrelated like a chain's."""
    prec = 1 + bv
    z = np.empty((n, bv.size))
    z[0] = rng.normal(size=bv.size)
    eps = rng.normal(size=(n, bv.size)) * math.sqrt(1 - rho**2)
    for t in range(1, n):
        z[t] = rho * z[t - 1] + eps[t]
    theta = bv * c / prec + z / np.sqrt(prec)
    return 0.5 * (theta - c) ** 2


def test_bar_kernel_equals_scipy_reference():
    """The numba Newton solver of Bennett's equation and the brentq reference agree (1e-9 relative) on
    works of well and poorly overlapping neighbours, with and without a starting guess."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(5, 4000))
        d, sd = rng.uniform(-20, 60), rng.uniform(0.05, 6.0)
        wf = rng.normal(d + 0.5 * sd**2, sd, n)
        wr = rng.normal(-d + 0.5 * sd**2, sd, int(rng.integers(5, 4000)))
        ref = fe._bar_pair(wf, wr)
        for guess, has in ((0.0, False), (ref + rng.normal(0, 5), True)):
            assert fe._bar_newton(wf, wr, guess, has) == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_thinning_leaves_the_bootstrap_error_unchanged(monkeypatch):
    """Autocorrelated sweeps (tau ~ 100) of an exactly known F: the block bootstrap on the energies thinned
    to MAX_ERROR_SAMPLES gives the SE of the unthinned bootstrap (within 10 %) in a fraction of the time;
    both are within a factor 1.6 of the sd of F over 24 independent repetitions, whose mean is exact."""
    c = 1.3
    bv = np.concatenate([[0.0], np.geomspace(0.01, 50, 25)])
    exact = 0.5 * np.log(1 + bv[-1]) + 0.5 * c**2 * bv[-1] / (1 + bv[-1])
    rng = np.random.default_rng(11)
    reps = [_tempered_gaussian_energies(rng, bv, c, 12000, 0.98) for _ in range(24)]
    f_top = np.array([fe.bridge(e, bv, 1)[-1] for e in reps])
    sd = f_top.std(ddof=1)
    assert abs(f_top.mean() - exact) < 4 * sd / math.sqrt(f_top.size)
    assert fe.thinned(reps[0]).shape[0] == fe.MAX_ERROR_SAMPLES == 4000
    thin = [fe.block_bootstrap(e, bv, 1, np.random.default_rng(i))[-1] for i, e in enumerate(reps[:2])]
    monkeypatch.setattr(fe, "MAX_ERROR_SAMPLES", 10**9)
    full = [fe.block_bootstrap(e, bv, 1, np.random.default_rng(i))[-1] for i, e in enumerate(reps[:2])]
    assert np.mean(thin) == pytest.approx(np.mean(full), rel=0.1)
    for se in (np.mean(thin), np.mean(full)):
        assert sd / 1.6 < se < 1.6 * sd, (se, sd)


def test_log_evidence_relation():
    assert fe.log_evidence(3.0, 100.0, 301) == pytest.approx(0.5 * 301 * math.log(100 / (2 * math.pi)) - 3.0)


def test_rhat_detects_unmixed_runs():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(2, 1000, 3))
    assert np.all(np.abs(rhat(same) - 1) < 0.02)
    apart = same + np.array([0.0, 2.0])[:, None, None]
    assert np.all(rhat(apart) > 1.2)


# ------------------------------------------------------------------ closed-form evidence
def test_linear_gaussian_evidence_is_exact():
    """Fixed centres and widths, Gaussian prior on amplitudes: log Z is a Gaussian density of y."""
    x = np.arange(0, 3.0001, 0.02)
    centres, bs = [0.8, 1.5, 2.1], [60.0, 90.0, 40.0]
    m0, s0, sigma = 1.0, 0.5, 0.1
    phi = np.stack([np.exp(-b * (x - c) ** 2 / 2) for c, b in zip(centres, bs)], axis=1)
    rng = np.random.default_rng(7)
    y = phi @ np.array([0.7, 1.4, 0.9]) + rng.normal(0, sigma, x.size)
    cov = sigma**2 * np.eye(x.size) + s0**2 * phi @ phi.T
    exact = multivariate_normal(mean=phi @ np.full(3, m0), cov=cov).logpdf(y)
    priors = {"a": {"dist": "normal", "mean": m0, "sd": s0}}
    model = peaks_model(3, priors)
    for k in range(3):  # fix centres and widths
        model.priors[3 * k + 1] = prior_from_config({"dist": "fixed", "value": centres[k]}, "mu")
        model.priors[3 * k + 2] = prior_from_config({"dist": "fixed", "value": bs[k]}, "b")
    bv = np.concatenate([[0.0], np.geomspace(1e-2, 1 / sigma**2, 23)])
    s = ChainSettings(sweeps=4000, burn_in=500, thin=10)
    runs = [run_chain(x, y, model, bv, s, np.random.SeedSequence([7, r])) for r in range(2)]
    f = np.mean([fe.stepping_stone(r.energies, bv, x.size)[-1] for r in runs])
    err = np.sqrt(sum(fe.block_bootstrap(r.energies, bv, x.size, rng)[-1] ** 2 for r in runs)) / 2
    logz = fe.log_evidence(f, bv[-1], x.size)
    assert abs(logz - exact) < 0.2
    assert abs(logz - exact) < 3 * err + 1e-9 or abs(logz - exact) < 0.05


# ------------------------------------------------------------------ Nagata benchmark
def test_nagata_free_energy_selects_three_components():
    x, y = nagata_data(2012)
    spec = PosteriorSpec(model="peaks", k_min=1, k_max=5, replicas=32, runs=2, sigma=0.1,
                         ladder=list(np.geomspace(1e-2, 100, 31)), settings=ChainSettings(sweeps=2000, burn_in=1000),
                         convergence=FIXED_LENGTH, k_limit=5)
    res = analyse(x, y, spec, 2012, "nagata")
    F = {K: res.per_k[K]["F"] for K in res.ks}
    err = {K: res.per_k[K]["F_err"] for K in res.ks}
    kmin = min(F, key=F.get)
    assert kmin == 3 or F[3] - F[kmin] < 2 * math.hypot(err[3], err[kmin]) + 0.5
    assert F[1] > F[3] + 10 and F[2] > F[3] + 10
    # log Z and F are reported together with their exact relation
    for K in res.ks:
        assert res.per_k[K]["log_z"] == pytest.approx(fe.log_evidence(F[K], 100.0, x.size))
    assert res.k_selected == 3 or res.p_k[2] > 0.2


@pytest.mark.slow  # two minutes of nested sampling: `make test-slow`
def test_dynesty_evidence_agrees():
    dynesty = pytest.importorskip("dynesty")

    x, y = nagata_data(99)
    sigma = 0.1
    b = 1 / sigma**2
    loglike, ptform = nagata.dynesty_problem(x, y, sigma)
    sampler = dynesty.NestedSampler(loglike, ptform, 9, nlive=500, sample="rwalk",
                                    rstate=np.random.default_rng(3))
    sampler.run_nested(dlogz=0.1, print_progress=False)
    dres = sampler.results
    logz_d, err_d = float(dres.logz[-1]), float(dres.logzerr[-1])
    spec = PosteriorSpec(model="peaks", k_min=3, k_max=3, replicas=32, runs=2, sigma=sigma,
                         ladder=list(np.geomspace(1e-2, b, 31)), settings=ChainSettings(sweeps=3000, burn_in=1000),
                         convergence=FIXED_LENGTH, k_limit=3)
    ours = analyse(x, y, spec, 99, "dynesty").per_k[3]
    diff = abs(ours["log_z"] - logz_d)
    assert diff < 0.5
    assert diff < 3 * math.hypot(ours["log_z_err"], err_d)


# ------------------------------------------------------------------ checkpoints
def test_interrupted_chain_resumes_to_the_same_result(tmp_path):
    x, y = nagata_data(1)
    model = peaks_model(2)
    bv = np.concatenate([[0.0], np.geomspace(1e-2, 100, 9)])
    s = ChainSettings(sweeps=300, burn_in=200, thin=10, block=50, checkpoint_every=100)
    clean = run_chain(x, y, model, bv, s, np.random.SeedSequence(8))
    ck = tmp_path / "chain.npz"

    class Stop(Exception):
        pass

    def stop_at(sweep, total):
        if sweep == 350:  # after the checkpoint at 300, mid-production
            raise Stop

    with pytest.raises(Stop):
        run_chain(x, y, model, bv, s, np.random.SeedSequence(8), checkpoint=ck, progress=stop_at)
    assert ck.is_file()
    resumed_from = []
    again = run_chain(x, y, model, bv, s, np.random.SeedSequence(8), checkpoint=ck,
                      progress=lambda sw, t: resumed_from.append(sw))
    assert resumed_from[0] == 350  # started from the checkpoint at 300, not from 0
    np.testing.assert_array_equal(again.energies, clean.energies)
    np.testing.assert_array_equal(again.samples, clean.samples)
    np.testing.assert_array_equal(again.exchange_rate, clean.exchange_rate)
    # a checkpoint of another chain (other seed) is ignored
    other = run_chain(x, y, model, bv, s, np.random.SeedSequence(9), checkpoint=ck)
    assert not np.array_equal(other.energies, clean.energies)


def test_same_samples_whatever_the_workers():
    from distributed import Client, LocalCluster

    x, y = nagata_data(5)
    # the whole pipeline: tuned ladders, chains extended until converged (or 400 sweeps), K past k_max
    spec = PosteriorSpec(model="peaks", k_min=1, k_max=2, replicas=8, runs=2, sigma=0.1,
                         settings=ChainSettings(sweeps=100, burn_in=100, checkpoint_every=100),
                         tuning=LadderTuning(warmup=100, sweeps=100, rounds=2),
                         convergence=Convergence(max_sweeps=400), k_limit=3, expand_p=0.0)
    serial = analyse(x, y, spec, 1, "scan")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=40) as cl, Client(cl) as c:
        dist = analyse(x, y, spec, 1, "scan", client=c)
    assert serial.ks == dist.ks == [1, 2, 3]  # expand_p = 0: K grows to k_limit
    for K in serial.ks:
        np.testing.assert_array_equal(serial.per_k[K]["samples"], dist.per_k[K]["samples"])
        np.testing.assert_array_equal(serial.per_k[K]["bvals"], dist.per_k[K]["bvals"])
    np.testing.assert_array_equal(serial.p_k, dist.p_k)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("case", ["nan", "few", "order", "krange"])
def test_bad_spectra_are_input_errors(case):
    x, y = nagata_data(1)
    spec = PosteriorSpec(model="peaks", k_min=1, k_max=3, sigma=0.1)
    if case == "nan":
        y = y.copy()
        y[5] = np.nan
        match = "non-finite"
    elif case == "few":
        x, y = x[:5], y[:5]  # K = 1 (3 parameters) needs 6 points
        match = "cannot support K"
    elif case == "order":
        x = x.copy()
        x[10], x[11] = x[11], x[10]
        match = "not strictly increasing"
    else:
        spec = PosteriorSpec(model="peaks", k_min=3, k_max=2, sigma=0.1)
        match = "K range"
    with pytest.raises(InputError, match=match):
        analyse(x, y, spec, 1, "bad")


def test_pre_run_checks_refuse_too_few_points_in_the_jobs_words():
    """The config checks run before any job word a too-short scan as the analysis itself would refuse it."""
    from xafsflow.bayes.posterior import require_points
    from xafsflow.products import posterior as post_product
    from xafsflow.products import xmcd_posterior
    from xafsflow.schemas import analysis_defaults

    p = dict(analysis_defaults("xanes")["posterior"], k_min=2, k_max=4)  # xanes model: 7 + 3 K parameters
    assert post_product.check(p, n_points=26) == []  # K = 2: 13 parameters, 26 points
    with pytest.raises(InputError) as exc:
        require_points(25, "xanes", 2)
    assert post_product.check(p, n_points=25) == [exc.value.reason]
    x = dict(analysis_defaults("xmcd")["xmcd_posterior"], k_max=2, k_pos=[1, 3], k_neg=[1, 2])  # 5 components
    assert xmcd_posterior.check(x, n_points=30) == []
    with pytest.raises(InputError) as exc:
        require_points(29, "xmcd", 5)
    assert xmcd_posterior.check(x, n_points=29) == [exc.value.reason]


def test_k_max_beyond_the_points_is_lowered():
    """20 points support 10 parameters: K = 3 Gaussians (9) but not 4; k_max 6 becomes 3, recorded."""
    x, y = nagata_data(1)
    x, y = x[::15][:20], y[::15][:20]
    spec = PosteriorSpec(model="peaks", k_min=1, k_max=6, k_limit=8, replicas=6, runs=1, sigma=0.1,
                         settings=ChainSettings(sweeps=50, burn_in=50, block=50, checkpoint_every=50),
                         tuning=LadderTuning(enabled=False), convergence=Convergence(enabled=False), expand_p=0.0)
    lines = []
    res = analyse(x, y, spec, 1, "coarse", progress=lines.append)
    assert res.ks == [1, 2, 3] and res.k_max_by_points == 3  # expand_p = 0 would grow K: the points stop it
    assert any("k_max lowered to 3" in ln for ln in lines)
    full = analyse(*nagata_data(1), dataclasses.replace(spec, k_max=1, k_limit=1), 1, "full")
    assert full.k_max_by_points is None


@pytest.mark.parametrize("spec", [
    {"dist": "uniform", "lo": 0.0}, {"dist": "uniform", "lo": 1.0, "hi": 1.0}, {"dist": "loguniform", "lo": 0.0, "hi": 2.0},
    {"dist": "gamma", "shape": 0.0, "rate": 1.0}, {"dist": "normal", "mean": 0.0, "sd": -1.0}, {"dist": "flat"},
])
def test_improper_priors_are_refused(spec):
    with pytest.raises(ImproperPriorError, match="prior of x"):
        prior_from_config(spec, "x")


def test_bridge_sampling_on_exact_gaussian_samples():
    c = 1.3
    bv = np.concatenate([[0.0], np.geomspace(0.01, 50, 12)])  # coarse ladder: bridge still exact
    rng = np.random.default_rng(1)
    prec = 1 + bv
    theta = rng.normal(bv * c / prec, 1 / np.sqrt(prec), size=(20000, bv.size))
    e = 0.5 * (theta - c) ** 2
    exact = 0.5 * np.log(prec) + 0.5 * c**2 * bv / prec
    np.testing.assert_allclose(fe.bridge(e, bv, 1), exact, atol=0.02)


def test_runs_are_combined_in_evidence_not_in_log_evidence():
    """Two runs on the exact Gaussian problem of the tests above, one of them left in a
    poorer mode at high b: averaging Z keeps the combined F within log 2 of the good run
    (the mean of log Z would land halfway), and identical runs combine to themselves."""
    assert fe.combine_runs([3.0, 3.0]) == pytest.approx(3.0)
    assert fe.combine_runs([0.0, -1e3]) == pytest.approx(-math.log(2))
    c = 1.3
    bv = np.concatenate([[0.0], np.geomspace(0.01, 50, 30)])
    rng = np.random.default_rng(2)
    prec = 1 + bv
    theta = rng.normal(bv * c / prec, 1 / np.sqrt(prec), size=(5000, bv.size))
    good = 0.5 * (theta - c) ** 2
    stuck = good.copy()
    stuck[:, 20:] = 0.5 * (theta[:, 20:] - c - 1.0) ** 2  # the upper replicas sit 1 unit away from the data
    f_good, f_stuck = fe.bridge(good, bv, 1), fe.bridge(stuck, bv, 1)
    assert f_stuck[-1] - f_good[-1] > 10
    combined = -fe.combine_runs(-np.stack([f_good, f_stuck]))
    assert 0 <= combined[-1] - f_good[-1] <= math.log(2) + 1e-9
    one = fe.estimate_noise(good, bv, 1)
    two = fe.estimate_noise([good, good], bv, 1)
    assert two["sigma_hat"] == one["sigma_hat"]
    np.testing.assert_allclose(two["log_evidence"], one["log_evidence"])
