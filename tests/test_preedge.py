"""The preedge model: edge tail + line + K Gaussians over the pre-edge region, its integrated
intensity and centroid with intervals; on simulated truth and on measured Fe oxides."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from xafsflow.bayes.models import PREEDGE_BG_NAMES, preedge_model, preedge_moments
from xafsflow.bayes.posterior import Convergence, LadderTuning, PosteriorSpec, analyse
from xafsflow.bayes.remc import ChainSettings
from xafsflow.io.store import open_store
from xafsflow.schemas import analysis_defaults
from xafsflow.steps import ingest, normalize, tabulated_edge

NB = len(PREEDGE_BG_NAMES)
SHORT = dict(replicas=24, runs=2, tuning=LadderTuning(enabled=False), convergence=Convergence(enabled=False),
             settings=ChainSettings(sweeps=2000, burn_in=2000, thin=10, block=50, adapt_every=50,
                                    checkpoint_every=500))


def simulated(seed: int, sigma: float = 0.005):
    """Fe-like pre-edge: two Gaussians on the tail of an edge at 7124 eV plus a line, 0.25 eV steps."""
    x = np.arange(7100.0, 7118.0, 0.25)
    truth = preedge_model(2, x[0], x[-1], 1.0, 7124.0)
    theta = np.array([0.8, 7124.0, 4.0, 0.02, 0.001, x[0], 0.12, 7112.5, 0.7, 0.08, 7114.6, 0.8])
    y = truth.evaluate(x, theta) + np.random.default_rng(seed).normal(0, sigma, x.size)
    return x, y, theta


def test_moments_of_known_components():
    # areas 1 and 3 at 10 and 14 eV: intensity 4, centroid (10 + 42) / 4 = 13
    th = np.array([[0, 0, 0, 0, 0, 0, 1.0, 10.0, 0.5, 3.0, 14.0, 0.7]])
    inten, cen = preedge_moments(th, NB)
    assert inten[0] == pytest.approx(4.0) and cen[0] == pytest.approx(13.0)


def test_centroid_window_keeps_the_components_inside():
    """Only components whose median centre lies in the window make the intensity and the centroid."""
    rng = np.random.default_rng(2)
    n = 400
    th = np.zeros((n, NB + 9))
    for j, (a, c, w) in enumerate([(0.05, 7105.0, 2.5), (0.03, 7111.6, 0.8), (0.02, 7113.1, 0.6)]):
        th[:, NB + 3 * j] = a * (1 + 0.1 * rng.standard_normal(n))
        th[:, NB + 3 * j + 1] = c + 0.1 * rng.standard_normal(n)
        th[:, NB + 3 * j + 2] = w
    th[:5, NB + 1] = 7109.0  # a few draws of the low component inside: its median decides, not each draw
    inten, cen = preedge_moments(th, NB, (7108.0, 7116.0))
    a, c = th[:, NB + 3::3][:, :2], th[:, NB + 4::3][:, :2]
    np.testing.assert_allclose(inten, a.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(cen, (a * c).sum(axis=1) / a.sum(axis=1), rtol=1e-12)
    all_i, all_c = preedge_moments(th, NB)
    assert np.all(all_c < cen)  # the low component pulls the all-component centroid down
    none_i, none_c = preedge_moments(th, NB, (7120.0, 7125.0))
    assert np.all(none_i == 0) and np.all(np.isnan(none_c))


def test_components_are_no_narrower_than_the_resolution():
    m = preedge_model(3, 7100.0, 7118.0, 1.5, 7124.0)
    draws = m.sample_prior(np.random.default_rng(0), 4000)
    widths = draws[:, [NB + 3 * k + 2 for k in range(3)]]
    assert widths.min() >= 1.5 / (2 * np.sqrt(2 * np.log(2))) - 1e-12
    assert np.all(draws[:, PREEDGE_BG_NAMES.index("x_ref")] == 7100.0)  # fixed, never moved


def test_simulated_pre_edge_recovered():
    x, y, theta = simulated(1)
    spec = PosteriorSpec(model="preedge", k_min=1, k_max=3, k_limit=3, e0=7124.0, **SHORT)
    res = analyse(x, y, spec, 11, "pe")
    assert abs(res.k_selected - 2) <= 1
    ent = res.per_k[res.k_selected]
    inten, cen = preedge_moments(ent["samples"].reshape(-1, ent["samples"].shape[-1]), NB)
    true_i, true_c = preedge_moments(theta[None], NB)
    # 95 % intervals widened to 99.5 % (two quantities) cover the truth
    lo, hi = np.percentile(inten, [0.25, 99.75])
    assert lo <= true_i[0] <= hi
    lo, hi = np.percentile(cen, [0.25, 99.75])
    assert lo <= true_c[0] <= hi
    assert hi - lo < 1.0  # and the centroid is measured to better than 1 eV


# ------------------------------------------------------------------ measured Fe oxides
@pytest.fixture(scope="module")
def fe_scans(tmp_path_factory, shared):
    d = tmp_path_factory.mktemp("preedge")
    out = {}
    for name in ("fe2o3_rt", "feo_rt1"):
        raw = ingest(name, "xanes", "xdi", [str(shared / "xdi" / f"{name}.xdi")], d / f"{name}.raw.zarr", fields={})
        normalize(raw, d / f"{name}.zarr", analysis_defaults("xanes"))
        out[name] = d / f"{name}.zarr"
    return out


def _run(store, tmp_path, name, seed=5, **posterior):
    p = analysis_defaults("xanes")
    p["posterior"].update(model="preedge", **posterior)
    out = tmp_path / f"{name}.zarr"
    cmd = [sys.executable, "-m", "xafsflow", "posterior", str(store), "--scan-id", name, "--seed", str(seed),
           "--params", json.dumps(p), "--out", str(out), "--tsv", str(tmp_path / f"{name}.tsv"),
           "--png", str(tmp_path / f"{name}.png")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _centroid_draws(store):
    g = open_store(store)
    k = dict(g.attrs)["k_selected"]
    return g[f"K{k}/derived/centroid"][...].ravel()


SHORT_PARAMS = dict(k_min=1, k_max=2, k_limit=2, replicas=24, sweeps=2000, burn_in=2000,
                    tuning={"enabled": False}, convergence={"enabled": False})


def test_measured_centroids_lie_in_the_pre_edge_region(fe_scans, tmp_path):
    """Fe2O3 and FeO through the preedge model (default ranges, short chains): centroids within
    7110-7117 eV, Fe3+ above Fe2+ with posterior probability > 0.95 (the files come from different
    beamlines: only the order is asserted)."""
    draws = {}
    for name in ("fe2o3_rt", "feo_rt1"):
        store = _run(fe_scans[name], tmp_path, name, **SHORT_PARAMS)
        c = draws[name] = _centroid_draws(store)
        assert 7110.0 <= np.median(c) <= 7117.0, name
        # the flag says when a component models the edge onset or the cut (1 eV default margin)
        g = open_store(store)
        k = dict(g.attrs)["k_selected"]
        e = g["energy"][...]
        centres = [np.median(g[f"K{k}/posterior/centre_{j + 1}"][...]) for j in range(k)]
        at_end = any(c - e.min() < 1.0 or e.max() - c < 1.0 for c in centres)
        flagged = any(f.startswith("component_at_range_end") for f in dict(g.attrs)["flags"])
        assert flagged == at_end, (name, centres, dict(g.attrs)["flags"])
    assert _p_above(draws["fe2o3_rt"], draws["feo_rt1"]) > 0.95


def _p_above(a, b):
    """P(A > B) for independent posteriors, from their draws (every pair)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    assert not (np.isnan(a).any() or np.isnan(b).any())
    return float(np.mean(a[:, None] > b[None, :]))


def test_range_is_relative_to_the_tabulated_edge(fe_scans, tmp_path):
    out = _run(fe_scans["fe2o3_rt"], tmp_path, "w", **dict(SHORT_PARAMS, k_max=1, k_limit=1, sweeps=200,
                                                             burn_in=200, replicas=8))
    g = open_store(out)
    e = g["energy"][...]
    tab = tabulated_edge("Fe", "K")
    lo, hi = analysis_defaults("xanes")["posterior"]["preedge"]["fit_range"]
    assert e.min() >= tab + lo and e.max() <= tab + hi
    assert e.min() - (tab + lo) < 1.0 and (tab + hi) - e.max() < 1.0  # the data's step is below 1 eV
    assert "tabulated edge" in dict(g.attrs)["fit_window"]


def test_no_tabulated_edge_is_a_clear_error(tmp_path, demo_dir):
    d = tmp_path
    raw = ingest("s", "xanes", "columns", [str(demo_dir / "xanes_02.dat")], d / "raw.zarr",
                 fields={"energy": "energy_eV", "i0": "I0", "itrans": "IT"})  # no element, no edge
    params = analysis_defaults("xanes")
    params["normalize"].update(pre1=-180.0, pre2=-40.0, norm1=60.0, nnorm=1)
    normalize(raw, d / "scan.zarr", params)
    p = analysis_defaults("xanes")
    p["posterior"].update(model="preedge")
    r = subprocess.run([sys.executable, "-m", "xafsflow", "posterior", str(d / "scan.zarr"), "--params",
                        json.dumps(p), "--out", str(d / "o.zarr"), "--tsv", str(d / "o.tsv"),
                        "--png", str(d / "o.png")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "tabulated edge" in r.stderr and "preedge.reference: absolute" in r.stderr
    assert not (d / "o.zarr").exists() and not (d / "o.tsv").exists()


@pytest.mark.parametrize("centres, flagged", [((7112.5, 7114.6), False), ((7112.5, 7117.2), True),
                                             ((7100.4, 7112.5), True)])
def test_component_at_range_end_is_flagged(centres, flagged):
    """A selected component whose median centre sits within 1 eV of the fitted range's ends."""
    from xafsflow.products.posterior import _component_at_range_end

    x = np.arange(7100.0, 7118.0, 0.25)  # range ends 7100 and 7117.75
    spec = PosteriorSpec(model="preedge", e0=7124.0)
    model = spec.build(2, x)
    rng = np.random.default_rng(0)
    samples = np.zeros((2, 50, model.n_params))
    samples[..., NB + 1::3] = np.array(centres) + rng.normal(0, 0.1, (2, 50, 2))
    got = _component_at_range_end({"samples": samples}, spec, x, 2, 1.0)
    assert (got is not None) == flagged
    if flagged:
        assert abs(got - [c for c in centres if c < 7101 or c > 7116.75][0]) < 0.2
    assert _component_at_range_end({"samples": samples}, spec, x, 2, 0.0) is None  # margin 0: off


def test_empty_centroid_window_is_flagged():
    """A selected K with no component inside the centroid window has no centroid: the flag says so."""
    from xafsflow.bayes.posterior import PosteriorResult
    from xafsflow.products.posterior import quality_flags

    x = np.arange(7100.0, 7115.0, 0.25)
    q = analysis_defaults("xanes")["posterior"]["quality"]
    for centre, flagged in ((7105.0, True), (7112.0, False)):
        spec = PosteriorSpec(model="preedge", e0=7124.0, centroid_window=(7108.0, 7116.0))
        samples = np.zeros((2, 50, NB + 3))
        samples[..., NB:] = (0.05, centre, 1.0)
        ent = {"samples": samples, "rhat": np.ones(NB + 3), "exchange_rate": np.array([0.5]), "F_spread": 0.0}
        res = PosteriorResult(ks=[1, 2], bvals=np.array([0.0, 1.0]), n_points=x.size, per_k={1: ent, 2: ent},
                              p_k=np.array([0.9, 0.1]), k_selected=1, sigma_fixed=None, noise=None)
        assert ("no_component_in_centroid_window" in quality_flags(res, q, spec, x)) == flagged


def test_tabulated_range_refuses_a_non_k_edge(tmp_path):
    """The pre-edge range relative to the tabulated edge is a K-edge notion: an L3 scan is refused, clearly."""
    from xafsflow.errors import AnalysisInputError
    from xafsflow.io import store as st
    from xafsflow.products.posterior import preedge_window

    with st.atomic_store(tmp_path / "s.zarr") as g:
        st.set_attrs(g, scan_id="s", kind="xanes", element="Fe", edge="L3")
    pe = analysis_defaults("xanes")["posterior"]["preedge"]
    with pytest.raises(AnalysisInputError, match="edge is L3.*preedge.reference: absolute"):
        preedge_window(tmp_path / "s.zarr", pe)
    assert preedge_window(tmp_path / "s.zarr", {**pe, "reference": "absolute",
                                                 "fit_range": [700.0, 706.0]})[:2] == (700.0, 706.0)


@pytest.fixture(scope="module", params=[5, 7])
def defaults_runs(fe_scans, tmp_path_factory, request):
    """Fe2O3 and FeO through the preedge model at the schema's defaults (convergence stopping, tuned
    ladder, conditional-linear moves), with two campaign seeds."""
    d = tmp_path_factory.mktemp(f"preedge_defaults_{request.param}")
    return {name: _run(fe_scans[name], d, name, seed=request.param) for name in ("fe2o3_rt", "feo_rt1")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fe2o3_rt", "feo_rt1"])
def test_measured_preedge_is_healthy_at_the_defaults(defaults_runs, name):
    """The issue's sampler-health criteria on every K tried, and the fit's reduced chi-square.

    Not asserted: the stopping rule's own F-error target (0.2 nats), stricter than the issue's
    criteria: FeO's K = 3 and 4 can stop at the sweep budget with an SE of 0.2-0.3 nats
    (flag not_converged(f_se ...); README, "Pre-edge").
    """
    g = open_store(defaults_runs[name])
    a = dict(g.attrs)
    other = [f for f in a["flags"] if not f.startswith("not_converged(f_se after")]
    assert other == [], a["flags"]
    ks = [int(k) for k in g["K"][...]]
    assert a["k_selected"] < max(ks)  # below the limit the product reached
    for K in ks:
        assert np.nanmax(g[f"K{K}/rhat"][...]) < 1.01, K
        assert np.min(g[f"K{K}/exchange_rate"][...]) >= 0.1, K
        f_runs = g[f"K{K}/free_energy_runs"][...]
        assert np.ptp(f_runs) < 1.0, (K, f_runs)
    # reduced chi-square of the posterior-mean fit with the estimated noise
    K = a["k_selected"]
    x, y = g["energy"][...], g["norm"][...]
    model = preedge_model(K, x[0], x[-1], 1.0, a["e0"])
    draws = np.stack([g[f"K{K}/posterior/{n}"][...].ravel() for n in model.names], axis=1)
    fit = np.mean([model.evaluate(x, t) for t in draws[:: max(1, len(draws) // 300)]], axis=0)
    n_free = sum(p.code != 0 for p in model.priors)
    chi2 = float(np.sum((y - fit) ** 2)) / (x.size - n_free) / a["sigma_hat"] ** 2
    assert 0.7 <= chi2 <= 1.4, chi2


@pytest.mark.slow
def test_measured_centroid_order_at_the_defaults(defaults_runs):
    """Fe3+ (Fe2O3) above Fe2+ (FeO) with posterior probability > 0.95, both within 7110-7117 eV."""
    c = {name: _centroid_draws(store) for name, store in defaults_runs.items()}
    for name, v in c.items():
        assert 7110.0 <= np.percentile(v, 2.5) and np.percentile(v, 97.5) <= 7117.0, name
    assert _p_above(c["fe2o3_rt"], c["feo_rt1"]) > 0.95
