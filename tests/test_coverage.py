"""Interval coverage, selection of K and the noise estimate on simulated data with known truth.

The full study (``slow``; `make test-slow`) uses 20 datasets of each kind
(Nagata benchmark, simulated XANES); the fast suite checks the same properties
on 2 datasets with intervals widened for the number of parameters (Bonferroni).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from xafsflow.bayes.models import xanes_model
from xafsflow.bayes.posterior import Convergence, LadderTuning, PosteriorSpec, analyse
from xafsflow.bayes.remc import ChainSettings

from test_bayes import nagata_data, nagata_truth_vector

# burn-in long enough for replicas that quenched into poor local modes to leave them
# (with 1000 sweeps, 3 of 20 XANES datasets kept a run in a mode where the edge sits on the white line)
SETTINGS = ChainSettings(sweeps=2000, burn_in=4000)
# The study's documented protocol: fixed-length chains on the automatic ladder over a fixed K range
# (the numbers in the README); the adaptive pipeline is tested on its own in test_bayes.
STUDY = {"tuning": LadderTuning(enabled=False), "convergence": Convergence(enabled=False)}


def xanes_dataset(seed: int, sigma: float = 0.005):
    """Normalized XANES (arctan + pseudo-Voigt + 2 Gaussians) with known parameters.

    0.25 eV steps (N = 220): with N - P = 207 degrees of freedom the noise estimate's
    own sampling spread is about 5 %, so "within 10 % in 90 % of datasets" is testable
    (at 0.5 eV steps, N = 110, even the exact maximum-likelihood sigma would be within
    10 % in only about 84 % of datasets).
    """
    rng = np.random.default_rng([seed, 77])
    e0 = 8979.0
    x = np.arange(e0 - 15.0, e0 + 40.0, 0.25)
    theta = np.array([1.0, e0 + rng.uniform(-0.5, 0.5), rng.uniform(1.5, 2.5), rng.uniform(4, 8), rng.uniform(2, 4),
                      rng.uniform(3, 5), rng.uniform(0.3, 0.7),
                      rng.uniform(0.6, 1.4), e0 - 6 + rng.uniform(-1, 1), rng.uniform(1.2, 2.0),
                      rng.uniform(0.6, 1.4), e0 + 25 + rng.uniform(-1, 1), rng.uniform(1.2, 2.0)])
    model = xanes_model(2, x[0], x[-1], e0)
    y = model.evaluate(x, theta) + rng.normal(0, sigma, x.size)
    return x, y, theta, e0


def study(kind: str, seed: int) -> dict:
    """Analyse one simulated dataset; return what the criteria need."""
    if kind == "nagata":
        x, y = nagata_data(1000 + seed)
        spec = PosteriorSpec(model="peaks", k_min=1, k_max=4, replicas=32, runs=2, settings=SETTINGS, k_limit=4, **STUDY)
        truth, k_true, sigma = nagata_truth_vector(), 3, 0.1
    else:
        x, y, truth, e0 = xanes_dataset(seed)
        spec = PosteriorSpec(model="xanes", k_min=1, k_max=3, replicas=32, runs=2, settings=SETTINGS, e0=e0, k_limit=3, **STUDY)
        k_true, sigma = 2, 0.005
    res = analyse(x, y, spec, seed, f"{kind}-{seed}")
    return {
        "kind": kind, "seed": seed, "truth": truth, "k_true": k_true, "sigma": sigma,
        "samples": res.per_k[k_true]["samples"].reshape(-1, truth.size),
        "k_selected": res.k_selected, "p_true": float(res.p_k[res.ks.index(k_true)]),
        "sigma_hat": res.noise["sigma_hat"],
        # sd of the noise actually drawn: how far sigma-hat can be expected to be from sigma
        "drawn_sd": float(np.std(y - spec.build(k_true, x).evaluate(x, truth))),
    }


def covered(truth, samples, alpha):
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2], axis=0)
    return (truth >= lo) & (truth <= hi)


@pytest.mark.parametrize("kind,seed", [("nagata", 1), ("xanes", 1)])
def test_coverage_fast(kind, seed):
    r = study(kind, seed)
    alpha = 0.05 / r["truth"].size  # Bonferroni: every parameter's interval at once
    cov = covered(r["truth"], r["samples"], alpha)
    assert cov.all(), f"not covered: {np.flatnonzero(~cov)}"
    assert r["k_selected"] == r["k_true"]
    assert abs(r["sigma_hat"] / r["sigma"] - 1) < 0.2


def _study_row(job):
    r = study(*job)
    c = covered(r["truth"], r["samples"], 0.05)
    return {"kind": r["kind"], "seed": r["seed"], "hits": int(c.sum()), "pairs": int(c.size),
            "k_ok": r["k_selected"] == r["k_true"], "k_selected": r["k_selected"], "p_true": r["p_true"],
            "sig_ok": abs(r["sigma_hat"] / r["sigma"] - 1) < 0.10, "sig_ratio": r["sigma_hat"] / r["sigma"],
            "drawn_ratio": r["drawn_sd"] / r["sigma"], "vs_drawn": r["sigma_hat"] / r["drawn_sd"]}


@pytest.mark.slow
def test_coverage_study():
    """The issue's criteria over the study's 40 datasets (20 Nagata, 20 XANES): coverage of the
    95 % intervals in 88-99 % of (dataset, parameter) pairs, the true K in at least 80 % of
    datasets, sigma-hat within 10 % of sigma in at least 90 %.

    Each kind must also hold on its own, with floors that allow for what its data can tell:
    on the Nagata benchmark the log evidences of K = 3 and K = 4 are often within a fraction
    of a nat of each other (even with sigma fixed at the truth; independent runs agree to
    about 0.3 nats), so K = 4 is the evidence's choice on some datasets.
    """
    jobs = [(kind, seed) for kind in ("nagata", "xanes") for seed in range(100, 120)]
    with ProcessPoolExecutor(2) as ex:
        rows = list(ex.map(_study_row, jobs))
    for r in rows:
        print(f"  {r['kind']} {r['seed']}: K {r['k_selected']} (P(true K) {r['p_true']:.2f}), sigma-hat / sigma "
              f"{r['sig_ratio']:.3f}, drawn noise sd / sigma {r['drawn_ratio']:.3f}, covered {r['hits']}/{r['pairs']}")

    def tally(sel):
        n = len(sel)
        cov = sum(r["hits"] for r in sel) / sum(r["pairs"] for r in sel)
        k_ok, s_ok = sum(r["k_ok"] for r in sel), sum(r["sig_ok"] for r in sel)
        vs = [r["vs_drawn"] for r in sel]
        print(f"{sel[0]['kind'] if len({r['kind'] for r in sel}) == 1 else 'all'}: coverage {cov:.3f}, K right "
              f"{k_ok}/{n}, sigma within 10 % {s_ok}/{n}, sigma-hat / drawn noise sd {np.mean(vs):.3f} "
              f"({min(vs):.3f}-{max(vs):.3f})")
        return n, cov, k_ok, s_ok

    per_kind = {kind: tally([r for r in rows if r["kind"] == kind]) for kind in ("nagata", "xanes")}
    n, cov, k_ok, s_ok = tally(rows)
    assert 0.88 <= cov <= 0.99
    assert k_ok >= 0.8 * n
    assert s_ok >= 0.9 * n
    for kind, (n, cov, k_ok, s_ok) in per_kind.items():
        assert 0.85 <= cov <= 0.995, kind
        assert k_ok >= (0.6 if kind == "nagata" else 0.8) * n, kind
        assert s_ok >= 0.85 * n, kind


def xanes_preedge_dataset(seed: int, sigma: float = 0.005):
    """Normalized Fe K-edge-like XANES with a weak pre-edge peak 10-18 eV below the white line.

    arctan step at E0 (within 0.5 eV of 7120 eV), pseudo-Voigt white line 3-5 eV above it,
    a Gaussian pre-edge peak (area 0.15-0.25, sd 0.6-1.0 eV: a height of 0.06-0.17 in units
    of the edge step) and a post-edge Gaussian 25 eV above E0; 0.25 eV steps over the
    default fit range [-15, 40] eV around E0. Returns (x, y, E0 used for the fit range,
    true pre-edge centre).
    """
    from xafsflow.simulate.forward import xanes_normalized

    rng = np.random.default_rng([seed, 78])
    e0 = 7120.0
    x = np.arange(e0 - 15.0, e0 + 40.0, 0.25)
    wl = rng.uniform(3, 5)
    centre = e0 + wl - rng.uniform(10, 18)
    peaks = [(rng.uniform(0.15, 0.25), centre, rng.uniform(0.6, 1.0)),
             (rng.uniform(0.6, 1.4), e0 + 25 + rng.uniform(-1, 1), rng.uniform(1.2, 2.0))]
    y = xanes_normalized(x, e0 + rng.uniform(-0.5, 0.5), rng.uniform(1.5, 2.5), rng.uniform(4, 8), wl,
                         rng.uniform(3, 5), rng.uniform(0.3, 0.7), peaks)
    return x, y + rng.normal(0, sigma, x.size), e0, centre


def preedge_found(seed: int, overrides: dict | None = None) -> tuple[bool, str]:
    """Whether the selected K's posterior has a component within 1 eV of the true pre-edge centre."""
    from xafsflow.products.posterior import spec_from_params
    from xafsflow.schemas import analysis_defaults

    x, y, e0, centre = xanes_preedge_dataset(seed)
    p = {**analysis_defaults("xanes")["posterior"], **(overrides or {})}
    spec = spec_from_params(p, e0)
    res = analyse(x, y, spec, 1, f"preedge-{seed}")
    model = spec.build(res.k_selected, x)
    flat = np.asarray(res.per_k[res.k_selected]["samples"]).reshape(-1, model.n_params)
    centres = np.median(flat[:, model.nb + 1::3], axis=0)
    found = bool(np.min(np.abs(centres - centre)) < 1.0)
    return found, f"seed {seed}: pre-edge {centre:.2f} eV, K {res.k_selected}, centres {np.round(centres, 2)}"


def test_preedge_peak_found_fast():
    """One dataset, K = 1, 2 with short fixed-length chains: K = 2 starts from the residual of K = 1 and finds the peak."""
    from xafsflow.schemas import analysis_defaults

    conv = {**analysis_defaults("xanes")["posterior"]["convergence"], "enabled": False}
    found, msg = preedge_found(3, {"k_min": 1, "k_max": 2, "k_limit": 2, "burn_in": 1000, "sweeps": 1000,
                                   "convergence": conv})
    assert found, msg


def _preedge_row(seed: int):
    return preedge_found(seed)


@pytest.mark.slow
def test_preedge_peak_study():
    """The issue's criterion: with the product's default settings (K range, adaptive ladder, convergence
    stopping, K growth), a pre-edge peak 10-18 eV below the white line is found in at least 19 of 20
    simulated datasets."""
    with ProcessPoolExecutor(2) as ex:
        rows = list(ex.map(_preedge_row, range(200, 220)))
    for found, msg in rows:
        print(("found    " if found else "MISSED   ") + msg)
    assert sum(f for f, _ in rows) >= 19
