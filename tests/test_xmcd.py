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


def test_dichroism_draws_sorted_within_sign_groups_only():
    """Permuting components within a sign group gives the same sorted draw; signs never mix."""
    from xafsflow.bayes.xmcd import order_within_signs

    pos = [(0.5, 710.0, 1.0), (0.2, 705.0, 0.5), (0.9, 722.0, 0.8)]
    neg = [(-1.0, 708.0, 0.7), (-0.3, 720.0, 0.6)]
    draws = np.array([np.ravel(pos + neg), np.ravel([pos[2], pos[0], pos[1], neg[1], neg[0]])])
    out = order_within_signs(draws, 3)
    np.testing.assert_array_equal(out[0], out[1])
    comps = out[0].reshape(-1, 3)
    assert list(comps[:3, 1]) == [705.0, 710.0, 722.0] and list(comps[3:, 1]) == [708.0, 720.0]
    assert np.all(comps[:3, 0] > 0) and np.all(comps[3:, 0] < 0)
    # groups of one component (K_pos = K_neg = 1) are left as they are
    np.testing.assert_array_equal(order_within_signs(draws[:, :6], 1), draws[:, :6])


# ------------------------------------------------------------------------ simulated pair (ground truth)
def _short_spec(t, sweeps=600, k_pos=(1, 3), k_neg=(1, 2), k_min=2, k_max=4, replicas=12, grid_limit=1):
    from xafsflow.bayes.posterior import Convergence, LadderTuning, PosteriorSpec
    from xafsflow.bayes.xmcd import XmcdSpec

    base = PosteriorSpec(replicas=replicas, runs=2,
                         settings=ChainSettings(sweeps=sweeps, burn_in=sweeps, thin=5, block=50, adapt_every=50),
                         tuning=LadderTuning(warmup=sweeps // 2, sweeps=sweeps // 2, rounds=2, max_replicas=16),
                         convergence=Convergence(enabled=False))
    return XmcdSpec(base=base, k_min=k_min, k_max=k_max, k_pos=k_pos, k_neg=k_neg, grid_limit=grid_limit,
                    n_holes=t["n_holes"],
                    polarization=t["polarization"], l3=t["steps"]["l3"], l2=t["steps"]["l2"],
                    step_width=t["steps"]["width"], step_height=t["steps"]["height"],
                    l3_window=tuple(t["windows"]["l3"]), l23_window=tuple(t["windows"]["l23"]))


SIM_SEED = 1


@pytest.fixture(scope="module")
def simulated():
    from xafsflow.bayes.xmcd import analyse_pair
    from xafsflow.simulate.xmcd import simulate_xmcd_pair

    sim = simulate_xmcd_pair(SIM_SEED, grid_step=0.4)
    t = sim["truth"]
    res = analyse_pair(sim["energy"], sim["mu_plus"], sim["mu_minus"], _short_spec(t), 11, "sim")
    return sim, res


def test_simulated_truth_is_self_consistent():
    """The truth's exact moments: window integrals of the known components (closed form) equal the
    integrals of the noiseless spectra the simulation reports."""
    from xafsflow.simulate.xmcd import simulate_xmcd_pair

    t = simulate_xmcd_pair(0)["truth"]
    comps = t["components"]
    w3, w23 = t["windows"]["l3"], t["windows"]["l23"]

    def integ(key, w):
        return sum(float(pvoigt_integral(c[key], c["centre"], c["sd"], *w)) for c in comps)

    assert t["p"] == pytest.approx(integ("area_plus", w3) - integ("area_minus", w3), rel=1e-6)
    assert t["q"] == pytest.approx(integ("area_plus", w23) - integ("area_minus", w23), rel=1e-6)
    assert t["r"] == pytest.approx(integ("area_plus", w23) + integ("area_minus", w23), rel=1e-6)
    assert (t["K_plus"], t["K_minus"], t["K_pos"], t["K_neg"]) == (3, 3, 2, 1)
    assert t["n_holes"] == 2.0 and t["noise_sd"] == 0.01 and t["lorentz_fwhm"] == 1.0
    assert t["m_orb"] > 0 and t["m_spin_eff"] > 0  # Ni2+ moments parallel (negative L3 dichroism)


def test_simulated_pair_numbers_of_components_within_one(simulated):
    sim, res = simulated
    t = sim["truth"]
    assert abs(res.plus.k_selected - t["K_plus"]) <= 1
    assert abs(res.minus.k_selected - t["K_minus"]) <= 1
    kp, kn = res.dichroism["selected"]
    assert abs(kp - t["K_pos"]) <= 1 and abs(kn - t["K_neg"]) <= 1
    assert res.dichroism["p"].sum() == pytest.approx(1.0)


def test_simulated_pair_exact_moments_inside_bonferroni_intervals(simulated):
    """Two quantities (m_orb, m_spin_eff): each interval at 1 - 0.05/2, so both cover with >= 95 %."""
    sim, res = simulated
    t = sim["truth"]
    for name in ("m_orb", "m_spin_eff"):
        draws = res.moments[name].ravel()
        lo, hi = np.percentile(draws, [1.25, 98.75])
        assert lo <= t[name] <= hi, (name, lo, t[name], hi)
        # and the interval is informative: narrower than half the value
        assert hi - lo < 0.5 * abs(t[name])
    s = res.summary["ratio"]
    assert s["q2.5"] < s["mean"] < s["q97.5"]


def test_dichroism_grid_refuses_a_top_cell_the_points_cannot_support():
    """The top cell has K_pos + K_neg components: (2, 2) is 12 parameters, more than 20 points support."""
    from xafsflow.bayes.xmcd import _grid
    from xafsflow.errors import AnalysisInputError
    from xafsflow.simulate.xmcd import simulate_xmcd_pair

    sim = simulate_xmcd_pair(SIM_SEED, grid_step=0.4)
    i = np.linspace(0, sim["energy"].size - 1, 20).astype(int)
    e, d = sim["energy"][i], (sim["mu_plus"] - sim["mu_minus"])[i]
    with pytest.raises(AnalysisInputError, match="20 points cannot support K = 4"):
        _grid(e, d, _short_spec(sim["truth"], k_pos=(1, 2), k_neg=(1, 2)), 1.0, 11, "few", None, print)


def test_dichroism_grid_grows_past_its_range():
    """Truth (K_pos, K_neg) = (2, 1); a grid given as (1, 1) grows (one row or column at a time) while its
    top row or column keeps P >= 0.01, and selects the truth (within one) below its limit."""
    from xafsflow.bayes.xmcd import _grid
    from xafsflow.simulate.xmcd import simulate_xmcd_pair
    from xafsflow.xas.sum_rules import window_integral

    sim = simulate_xmcd_pair(SIM_SEED, grid_step=0.4)
    t = sim["truth"]
    e, d = sim["energy"], sim["mu_plus"] - sim["mu_minus"]  # equal step heights: the steps cancel
    spec = _short_spec(t, k_pos=(1, 1), k_neg=(1, 1), grid_limit=3)
    msgs: list[str] = []
    g = _grid(e, d, spec, window_integral(e, np.abs(d), e[0], e[-1]), 11, "grow", None, msgs.append)
    assert g["k_pos"][0] == g["k_neg"][0] == 1 and g["k_pos"][-1] >= 2
    assert any(m.startswith("grid grows to K_pos = 2") for m in msgs)
    assert set(g["cells"]) == {(a, b) for a in g["k_pos"] for b in g["k_neg"]}  # a full rectangle
    assert g["p"].shape == (len(g["k_pos"]), len(g["k_neg"])) and g["p"].sum() == pytest.approx(1.0)
    # growth stopped because the top row / column became improbable, or at the limit
    assert g["p"][-1, :].sum() < 0.01 or g["k_pos"][-1] == 3
    assert g["p"][:, -1].sum() < 0.01 or g["k_neg"][-1] == 3
    kp, kn = g["selected"]
    assert abs(kp - t["K_pos"]) <= 1 and abs(kn - t["K_neg"]) <= 1 and kp < 3


# ------------------------------------------------------------------------ real data: Fe L2,3 TEY pair
# Short chains (test budget); the flags say which health criteria these do not meet.
REAL_SHORT = {"n_holes": 3.39, "polarization": 1.0, "k_max": 3, "k_limit": 3, "k_pos": [1, 2], "k_neg": [1, 2], "grid_limit": 1,
              "replicas": 12,
              "sweeps": 400, "burn_in": 400, "thin": 5,
              "tuning": {"warmup": 200, "sweeps": 200, "rounds": 2, "max_replicas": 16},
              "convergence": {"enabled": False}}
FE_ROW = ("fe_pf\txmcd\t../shared/data/xmcd/fe_l23_pf_1.txt;../shared/data/xmcd/fe_l23_pf_2.txt\tcolumns\t"
          "col1\tcol2\tcol3\t{overrides}\n")
FE_ANALYSIS = "  xmcd:\n    normalize: {pre1: -25.0, pre2: -8.0, norm1: 25.0, nnorm: 1}\n"


def _fe_campaign(workdir, overrides="xmcd_posterior.n_holes=3.39; xmcd_posterior.polarization=1.0",
                 analysis=FE_ANALYSIS):
    (workdir / "sheet.tsv").write_text("scan_id\tkind\tpath\tformat\tenergy\ti0\tifluor\toverrides\n"
                                       + FE_ROW.format(overrides=overrides))
    cfg = workdir / "campaign.yaml"
    cfg.write_text(f"campaign: fe\nscans: sheet.tsv\nanalysis:\n{analysis}")
    return cfg


@pytest.fixture(scope="module")
def fe_pair(tmp_path_factory):
    """The real pair from a scan-sheet row (n_h and P_c in its overrides) through ingest, normalize and the
    xmcd_posterior CLI."""
    import json
    import os
    import subprocess
    import sys

    from conftest import shared_data
    from xafsflow.campaign import load_campaign
    from xafsflow.steps import ingest, normalize

    tmp = tmp_path_factory.mktemp("fe")
    work = tmp / "work"
    work.mkdir()
    (tmp / "shared").symlink_to(shared_data().parent)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        camp = load_campaign(_fe_campaign(work))
        scan = camp.scan("fe_pf")
        raw = ingest(scan.scan_id, scan.kind, scan.format, scan.paths, work / "raw.zarr", fields=scan.fields)
        store = normalize(raw, work / "fe_pf.zarr", scan.params)
    finally:
        os.chdir(cwd)
    params = dict(scan.params["xmcd_posterior"], **REAL_SHORT)
    cmd = [sys.executable, "-m", "xafsflow", "xmcd_posterior", str(store), "--scan-id", "fe_pf", "--params",
           json.dumps({"xmcd_posterior": params}), "--seed", "7", "--out", str(work / "post.zarr"),
           "--tsv", str(work / "post.tsv"), "--png", str(work / "post.png")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return scan, store, work, p.stdout


def test_real_pair_sheet_values_and_normalization(fe_pair):
    from xafsflow.io.store import open_store

    scan, store, _, _ = fe_pair
    assert scan.params["xmcd_posterior"]["n_holes"] == 3.39  # from the sheet's overrides column
    g = open_store(store)
    e, mp, mm = g["energy"][...], g["norm_plus"][...], g["norm_minus"][...]
    raw_p, raw_m = g["mu"][...], g["mu_minus"][...]
    # raw pre-edge levels differ (about 0.50 vs 0.55 at 692 eV); each helicity's own pre-edge line removes it
    i692 = int(np.argmin(np.abs(e - 692.0)))
    assert abs(raw_m[i692] - raw_p[i692]) > 0.03
    pre = e < dict(g.attrs)["e0"] - 8.0
    assert abs(np.mean(mp[pre])) < 0.01 and abs(np.mean(mm[pre])) < 0.01
    # one common edge jump: both helicities' pre-edge-subtracted mu divided by the same number
    step = dict(g.attrs)["edge_step"]
    np.testing.assert_allclose((raw_p - g["pre_edge"][...] * 0 - (raw_p - mp * step)) / step, mp, rtol=1e-9)
    mid = (raw_p - mp * step)  # the plus helicity's own pre-edge line
    assert np.ptp(np.diff(mid) / np.diff(e)) < 1e-9  # a straight line
    mid_m = (raw_m - mm * step)
    assert not np.allclose(mid, mid_m)  # a different line for the other helicity


def test_real_pair_dichroism_signs_and_reported_ratio(fe_pair):
    import csv

    from xafsflow.io.store import open_store

    _, store, work, stdout = fe_pair
    g = open_store(store)
    e, d = g["energy"][...], g["norm_plus"][...] - g["norm_minus"][...]
    l3 = (e > 705) & (e < 711)
    l2 = (e > 719) & (e < 724)
    assert d[l3].min() < -1.0 and d[l2].max() > 0.5  # opposite signs at L3 and L2
    post = open_store(work / "post.zarr")
    a = dict(post.attrs)
    assert a["moments"]["p"]["q97.5"] < 0  # L3 dichroism integral negative
    # the ratio with its interval, in the TSV, the CLI's report line and the store
    with open(work / "post.tsv") as fh:
        rows = {r["quantity"]: r for r in csv.DictReader(fh, delimiter="\t")}
    lo, mean, hi = (float(rows["ratio"][k]) for k in ("q2.5", "mean", "q97.5"))
    assert lo < mean < hi
    assert "m_orb/m_spin_eff" in stdout
    prov = a["xafsflow_provenance"]
    assert prov["normalization"]["edge_step"] > 0 and "windows" in prov
    assert a["windows"]["l3"][1] < a["windows"]["l23"][1]
    for part in ("plus", "minus"):
        assert post[part]["p_K"][...].sum() == pytest.approx(1.0)
    assert post["dichroism"]["p_K"][...].shape == (2, 2)
    assert post["moments"]["m_orb"][...].shape[0] == 2  # (chain, draw)


def test_real_pair_flags_state_the_health_that_does_not_hold(fe_pair):
    """Sampler health on the real pair, reported honestly: each criterion that fails is in the flags."""
    from xafsflow.io.store import open_store

    _, _, work, _ = fe_pair
    a = dict(open_store(work / "post.zarr").attrs)
    h, flags = a["health"], " ".join(a["flags"])
    assert (h["min_exchange"] < 0.1) == ("low_exchange" in flags)
    assert (a["max_rhat"] > 1.01) == ("high_rhat" in flags)
    assert (h["max_f_spread"] > 1.0) == ("runs_disagree" in flags)
    assert bool(h["k_at_limit"]) == ("k_at_limit" in flags)


def test_demo_dry_run_gives_the_pair_to_xmcd_posterior(workdir):
    """The XMCD pair's store in posterior/ is made by xmcd_posterior (rule order + scan-id constraint), the
    XANES stores by posterior; the demo's n_holes reaches the job."""
    from conftest import REPO, run_snakemake

    p = run_snakemake(workdir, "-n", "--profile", str(REPO / "profiles" / "local"))
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    mine = [ln for ln in out.splitlines() if " xmcd_posterior " in ln and "--scan-id xmcd_01" in ln]
    assert mine and '"n_holes": 3.39' in mine[0] and "posterior/xmcd_01.zarr" in mine[0]
    assert not [ln for ln in out.splitlines() if " -m xafsflow posterior " in ln and "xmcd_01" in ln]
    assert [ln for ln in out.splitlines() if " -m xafsflow posterior " in ln and "xanes_01" in ln]


def test_real_pair_declared_positive_l3_sign_is_refused_and_nothing_written(fe_pair, tmp_path):
    """The Fe pair's L3 dichroism is negative: a sheet declaring it positive (swapped helicities) stops the
    scan with one message naming the raw file, before sampling, and writes no product."""
    from xafsflow.products.xmcd_posterior import run_xmcd_posterior

    scan, store, _, _ = fe_pair
    params = {**scan.params, "xmcd_posterior": dict(scan.params["xmcd_posterior"], **REAL_SHORT,
                                                    expected_l3_sign="positive")}
    out = tmp_path / "swapped.zarr"
    with pytest.raises(AnalysisInputError, match="helicities swapped") as err:
        run_xmcd_posterior(store, out, tmp_path / "s.tsv", tmp_path / "s.png", params, "fe_pf", 7)
    assert "fe_l23_pf_1.txt" in str(err.value)
    assert not out.exists() and not (tmp_path / "s.tsv").exists() and not (tmp_path / "s.png").exists()


def test_killed_xmcd_job_resumes_to_the_uninterrupted_result(fe_pair, tmp_path):
    """The real pair's job killed once its first chain checkpointed, then run again with the same
    checkpoint folder (as the rule does): the same draws and moments as a run never interrupted, and the
    folder is gone once the product is written."""
    import json
    import subprocess
    import sys

    from conftest import kill_at_first_checkpoint
    from xafsflow.io.store import open_store

    scan, store, _, _ = fe_pair
    tiny = {**scan.params["xmcd_posterior"], **REAL_SHORT, "k_min": 1, "k_max": 1, "k_limit": 1, "k_pos": [1, 1],
            "k_neg": [1, 1], "replicas": 6, "sweeps": 3000, "burn_in": 500, "checkpoint_every": 500,
            "tuning": {"enabled": False}}

    def cmd(out, ck):
        return [sys.executable, "-m", "xafsflow", "xmcd_posterior", str(store), "--scan-id", "fe_pf", "--params",
                json.dumps({"xmcd_posterior": tiny}), "--seed", "7", "--checkpoint-dir", str(ck),
                "--out", str(out / "p.zarr"), "--tsv", str(out / "p.tsv"), "--png", str(out / "p.png")]

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir()
    killed.mkdir()
    assert subprocess.run(cmd(clean, tmp_path / "ck0"), capture_output=True).returncode == 0
    assert not (tmp_path / "ck0").exists()
    ck = tmp_path / "ck1"
    kill_at_first_checkpoint(cmd(killed, ck), ck)
    assert not (killed / "p.zarr").exists()
    assert subprocess.run(cmd(killed, ck), capture_output=True).returncode == 0
    a, b = open_store(clean / "p.zarr"), open_store(killed / "p.zarr")
    for name in ("p", "q", "r", "m_orb", "m_spin_eff"):
        np.testing.assert_array_equal(a[f"moments/{name}"][...], b[f"moments/{name}"][...])
    for part in ("plus/K1", "minus/K1", "dichroism/Kpos1_Kneg1"):
        for name in a[f"{part}/posterior"].attrs["parameters"]:
            np.testing.assert_array_equal(a[f"{part}/posterior/{name}"][...], b[f"{part}/posterior/{name}"][...])
    assert not ck.exists()


# ------------------------------------------------------------------------ bad input
def test_missing_n_holes_stops_before_any_job(tmp_path, monkeypatch):
    from conftest import shared_data
    from xafsflow.campaign import load_campaign

    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared_data().parent)
    monkeypatch.chdir(work)
    with pytest.raises(Exception, match="n_holes") as err:
        load_campaign(_fe_campaign(work, overrides="xmcd_posterior.polarization=0.9"))
    assert "fe_pf" in str(err.value) or "sheet" in str(err.value)


def test_pair_errors_unequal_nan_swapped():
    from xafsflow.bayes.xmcd import check_expected_sign, check_pair
    from xafsflow.simulate.xmcd import simulate_xmcd_pair

    sim = simulate_xmcd_pair(3)
    e, mp, mm = sim["energy"], sim["mu_plus"], sim["mu_minus"]
    with pytest.raises(AnalysisInputError, match="unequal lengths"):
        check_pair(e, mp, mm[:-1], "x.dat")
    bad = mm.copy()
    bad[5] = np.nan
    with pytest.raises(AnalysisInputError, match="mu- has 1 non-finite"):
        check_pair(e, mp, bad, "x.dat")
    w3 = tuple(sim["truth"]["windows"]["l3"])
    assert check_expected_sign(e, mp - mm, w3, "negative") < 0
    with pytest.raises(AnalysisInputError, match="swapped"):
        check_expected_sign(e, mm - mp, w3, "negative", "x.dat")


# ------------------------------------------------------------------------ slow: coverage study
STUDY_SEEDS = range(100, 120)  # 20 simulated pairs (independent noise)


@pytest.mark.slow
def test_coverage_study_over_20_simulated_pairs():
    """Over 20 pairs: the 95 % intervals of p, q, r, m_orb and m_spin_eff (100 intervals) cover the exact
    values 88-99 times; every selected number of components within 1 of the truth in >= 80 % of pairs."""
    from xafsflow.bayes.xmcd import analyse_pair
    from xafsflow.simulate.xmcd import simulate_xmcd_pair

    covered, total, k_ok = 0, 0, 0
    for seed in STUDY_SEEDS:
        sim = simulate_xmcd_pair(seed, grid_step=0.4)
        t = sim["truth"]
        res = analyse_pair(sim["energy"], sim["mu_plus"], sim["mu_minus"], _short_spec(t), 11, f"study{seed}")
        for name in ("p", "q", "r", "m_orb", "m_spin_eff"):
            s = res.summary[name]
            covered += s["q2.5"] <= t[name] <= s["q97.5"]
            total += 1
        kp, kn = res.dichroism["selected"]
        k_ok += (abs(res.plus.k_selected - t["K_plus"]) <= 1 and abs(res.minus.k_selected - t["K_minus"]) <= 1
                 and abs(kp - t["K_pos"]) <= 1 and abs(kn - t["K_neg"]) <= 1)
        print(f"seed {seed}: covered {covered}/{total}, K ok {k_ok}", flush=True)
    assert 88 <= covered <= 99, (covered, total)
    assert k_ok >= 0.8 * len(STUDY_SEEDS), k_ok


# ------------------------------------------------------------------------ repeats per helicity
def test_repeats_average_spread_and_deviating_repeat():
    from xafsflow.xas.repeats import average_repeats

    rng = np.random.default_rng(5)
    e = np.linspace(700, 730, 301)
    truth = 1.0 + np.exp(-0.5 * ((e - 708) / 0.8) ** 2)
    reps = [truth + rng.normal(0, 0.02, e.size) for _ in range(8)]
    grid, mean, sd, warns = average_repeats([e] * 8, reps)
    assert warns == []
    # the standard error from the spread estimates the true 0.02 / sqrt(8) (300 points: within 10 %)
    assert np.sqrt(np.mean(sd**2)) == pytest.approx(0.02 / np.sqrt(8), rel=0.1)
    assert np.std(mean - truth) == pytest.approx(0.02 / np.sqrt(8), rel=0.15)
    # one repeat shifted by 5 noise sd: named in a warning
    bad = reps[:3] + [reps[3] + 0.1] + reps[4:]
    names = [f"plus_{i}.dat" for i in range(8)]
    _, _, _, warns = average_repeats([e] * 8, bad, names)
    assert len(warns) == 1 and "plus_3.dat deviates" in warns[0]
    # another grid is interpolated (and said), a grid that does not cover is refused
    fine = np.linspace(699.5, 730.5, 700)
    fine_truth = 1.0 + np.exp(-0.5 * ((fine - 708) / 0.8) ** 2)
    _, mean2, _, warns = average_repeats([e, fine], [truth, fine_truth], ["a", "b"])
    assert any("b: on another energy grid, interpolated" in w for w in warns)
    assert np.max(np.abs(mean2 - truth)) < 1e-3
    with pytest.raises(AnalysisInputError, match="cannot interpolate"):
        average_repeats([e, e[10:]], [truth, truth[10:]], ["a", "b"])
    with pytest.raises(AnalysisInputError, match="non-finite"):
        average_repeats([e, e], [truth, np.where(e > 720, np.nan, truth)], ["a", "b"])


def test_simulate_cli_and_beamline_columns_with_repeats(tmp_path):
    """`xafsflow simulate xmcd` writes a labelled-column pair and its truth; two alternating repeats per
    helicity (plus;minus;plus;minus) read by column names are averaged with their spread kept."""
    import json

    from xafsflow.cli import main
    from xafsflow.io.store import open_store
    from xafsflow.steps import ingest

    for seed, sub in ((4, "r1"), (5, "r2")):
        assert main(["simulate", "xmcd", str(tmp_path / sub), "--seed", str(seed)]) in (0, None)
    truth = json.loads((tmp_path / "r1" / "truth.json").read_text())
    assert truth["m_orb"] > 0 and truth["files"] == ["ni_l23_plus.dat", "ni_l23_minus.dat"]
    paths = [str(tmp_path / r / f"ni_l23_{h}.dat") for r in ("r1", "r2") for h in ("plus", "minus")]
    fields = {"energy": "energy", "i0": "I0", "ifluor": "Isample"}
    one = open_store(ingest("one", "xmcd", "columns", paths[:2], tmp_path / "one.zarr", fields=fields))
    two = open_store(ingest("two", "xmcd", "columns", paths, tmp_path / "two.zarr", fields=fields))
    assert "mu_sd" not in one and "mu_sd" in two and "mu_minus_sd" in two
    e = two["energy"][...]
    raw_plus = truth["pre_level"] + 2e-4 * (e - e[0])  # the simulated raw mu: level + slope + jump * normalized
    clean = (two["mu"][...] - raw_plus) / truth["edge_jump"]
    from xafsflow.simulate.xmcd import simulate_xmcd_pair

    noiseless = simulate_xmcd_pair(4)["clean_plus"]
    # the average of two repeats has noise sd 0.01 / sqrt(2); its spread-based standard error says about that
    assert np.std(clean - noiseless) == pytest.approx(0.01 / np.sqrt(2), rel=0.2)
    assert np.sqrt(np.mean(two["mu_sd"][...] ** 2)) / truth["edge_jump"] == pytest.approx(0.01 / np.sqrt(2), rel=0.2)
    warns = dict(two.attrs)["xafsflow_provenance"]["warnings"]
    assert any("2 plus and 2 minus repeats averaged" in w for w in warns)
