"""Sparse-structure product: chi(k) plumbing, FEFF basis against larch, the LASSO solver against scikit-learn,
recovery of simulated shells, resolution beyond the Fourier transform, real Cu and Fe foils, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from xafsflow.errors import AnalysisInputError
from xafsflow.exafs.basis import basis_matrix, r_grid_of, run_feff, shell_chi
from xafsflow.exafs.sparse import (SparseSpec, block_bootstrap_indices, contiguous_folds, fit_sparse, lasso_objective,
                                   lasso_sklearn, merge_shells, nonneg_lasso_gram, select_alpha)
from xafsflow.io.store import open_store, read_provenance
from xafsflow.schemas import analysis_defaults
from xafsflow.steps import ingest, normalize

S02 = 0.9
K = np.arange(0.0, 16.0, 0.05)
# fcc Cu, first four shells (N, R, sigma^2), sigma^2 typical of room temperature
CU_FCC = [(12, 2.553, 0.0086), (6, 3.610, 0.0122), (24, 4.421, 0.0127), (12, 5.105, 0.0140)]


@pytest.fixture(scope="session")
def feff_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("feff")


@pytest.fixture(scope="session")
def cu_path(feff_cache):
    return run_feff("Cu", "Cu", "K", 2.5, cache_dir=feff_cache)


def _simulate(path, shells, noise, seed, de0=0.0):
    chi = shell_chi(path, K, [s[1] for s in shells], [s[2] for s in shells], n=[s[0] for s in shells], s02=S02,
                    de0=de0).sum(axis=1)
    return chi + np.random.default_rng(seed).normal(0.0, noise, K.size)


# ------------------------------------------------------------------ extraction and basis against larch
def _cu_store(tmp_path_factory, shared, name="cu_metal_rt.xdi", scan_id="cu"):
    d = tmp_path_factory.mktemp(scan_id)
    raw = ingest(scan_id, "exafs", "xdi", [str(shared / "xdi" / name)], d / "raw.zarr")
    normalize(raw, d / "scan.zarr", analysis_defaults("exafs"))
    return d / "scan.zarr"


@pytest.fixture(scope="module")
def cu_store(tmp_path_factory, shared):
    return _cu_store(tmp_path_factory, shared)


@pytest.fixture(scope="module")
def fe_store(tmp_path_factory, shared):
    return _cu_store(tmp_path_factory, shared, "fe_metal_rt.xdi", "fe")


def test_chi_extraction_equals_larch_autobk_with_the_same_parameters(cu_store):
    from larch import Group
    from larch.xafs import autobk

    from xafsflow.xas.background import extract_chi

    g = open_store(cu_store)
    e, mu = g["energy"][...], g["mu"][...]
    e0, step = float(g.attrs["e0"]), float(g.attrs["edge_step"])
    ours = extract_chi(e, mu, e0, step, rbkg=1.1, kweight=3, kmin=0.5, kmax=16.0, dk=0.2, window="kaiser")
    ref = Group()
    autobk(e, mu, group=ref, ek0=e0, edge_step=step, rbkg=1.1, kweight=3, kmin=0.5, kmax=16.0, dk=0.2, win="kaiser")
    np.testing.assert_allclose(ours.k, ref.k)
    np.testing.assert_allclose(ours.chi, ref.chi, rtol=0, atol=1e-12)
    assert ours.params["rbkg"] == 1.1 and ours.params["win"] == "kaiser" and ours.params["kmax"] == 16.0
    # and a changed parameter is not silently dropped: another rbkg gives another chi
    other = extract_chi(e, mu, e0, step, rbkg=0.8, kweight=3, kmin=0.5, kmax=16.0, dk=0.2, window="kaiser")
    assert np.max(np.abs(other.chi - ours.chi)) > 1e-3


def test_basis_column_equals_larch_feff_path(cu_path, feff_cache):
    from larch.xafs import feffpath, path2chi

    k = np.arange(1.0, 16.0, 0.05)
    for dr, s2, de0 in ((0.3, 0.008, 3.0), (-0.4, 0.003, -5.0), (1.2, 0.012, 0.0)):
        ref = feffpath(str(feff_cache / f"{cu_path.key}.dat"), degen=6, s02=S02, e0=de0, deltar=dr, sigma2=s2)
        path2chi(ref, k=k)
        ours = shell_chi(cu_path, k, cu_path.reff + dr, s2, n=6, de0=de0, s02=S02)[:, 0]
        # larch extrapolates its first point linearly; compare the rest
        np.testing.assert_allclose(ours[1:], ref.chi[1:], rtol=0, atol=1e-9 * np.abs(ref.chi).max() + 1e-12)


def test_basis_normalization_is_undone_in_coefficients(cu_path):
    k = np.arange(3.0, 14.0, 0.05)
    b = basis_matrix(cu_path, k, r_grid_of((2.0, 3.0)), (0.004, 0.009), kweight=2)
    np.testing.assert_allclose(np.linalg.norm(b.matrix, axis=0), 1.0)
    j = 55 * 2 + 1  # R = 2.55, sigma^2 = 0.009
    direct = shell_chi(cu_path, k, 2.55, 0.009, n=7.0)[:, 0] * k**2
    np.testing.assert_allclose(b.matrix[:, j] * (7.0 * b.norms[j]), direct, atol=1e-12)


def test_coordination_penalty_scales_all_columns_alike(cu_path):
    k = np.arange(3.0, 14.0, 0.05)
    b = basis_matrix(cu_path, k, r_grid_of((2.0, 3.0)), (0.004, 0.009), kweight=2, penalty="coordination")
    assert np.all(b.norms == b.norms[0])
    j = 55 * 2 + 1
    direct = shell_chi(cu_path, k, 2.55, 0.009, n=7.0)[:, 0] * k**2
    np.testing.assert_allclose(b.matrix[:, j] * (7.0 * b.norms[j]), direct, atol=1e-12)


def test_feff_cache_is_reused_and_keyed_by_inputs(cu_path, feff_cache):
    again = run_feff("Cu", "Cu", "K", 2.5, cache_dir=feff_cache, executable="/nonexistent/feff")  # from the cache
    np.testing.assert_array_equal(again.amp, cu_path.amp)
    other = run_feff("Cu", "Cu", "K", 2.6, cache_dir=feff_cache)
    assert other.key != cu_path.key and abs(other.reff - 2.6) < 1e-3
    assert json.loads((feff_cache / f"{cu_path.key}.json").read_text())["feff.inp"].startswith("TITLE")


# ------------------------------------------------------------------ solver and pieces
def test_active_set_lasso_matches_scikit_learn_coordinate_descent(cu_path):
    y_chi = _simulate(cu_path, CU_FCC[:2], 0.001, 5)
    m = (K >= 3) & (K <= 14)
    k = K[m]
    y = y_chi[m] * k**2
    a = basis_matrix(cu_path, k, r_grid_of((2.0, 4.0), 0.02), (0.003, 0.009)).matrix
    n = len(y)
    amax = np.max(a.T @ y) / n
    for frac in (0.3, 0.03, 0.003):
        alpha = frac * amax
        ours = nonneg_lasso_gram(a.T @ a / n, a.T @ y / n, alpha)
        ref = lasso_sklearn(a, y, alpha, cd_tol=1e-10, cd_max_iter=500000)
        assert ours.min() >= 0
        # KKT conditions of the nonnegative LASSO: A^T (y - A c) / n = alpha where c > 0, <= alpha where c = 0
        grad = a.T @ (y - a @ ours) / n
        on = ours > 0
        np.testing.assert_allclose(grad[on], alpha, rtol=1e-6)
        assert np.all(grad[~on] <= alpha * (1 + 1e-6))
        # the exact solver reaches the optimum coordinate descent approaches (never worse)
        assert lasso_objective(a, y, ours, alpha) <= lasso_objective(a, y, ref, alpha) * (1 + 1e-7)
        np.testing.assert_allclose(a @ ours, a @ ref, atol=2e-3 * np.abs(y).max())


def test_folds_are_contiguous_and_bootstrap_keeps_blocks():
    folds = contiguous_folds(103, 5)
    assert [len(f) for f in folds] == [21, 21, 21, 20, 20]
    assert all(np.all(np.diff(f) == 1) for f in folds)
    np.testing.assert_array_equal(np.concatenate(folds), np.arange(103))
    idx = block_bootstrap_indices(100, 20, np.random.default_rng(0))
    assert idx.size == 100
    for b in range(5):
        assert np.all(np.diff(idx[20 * b:20 * b + 20]) == 1)


def test_one_se_rule_takes_the_largest_alpha_within_one_standard_error():
    alphas = np.array([1.0, 0.5, 0.25, 0.125])
    mean = np.array([3.0, 1.05, 1.0, 1.2])
    se = np.array([0.1, 0.1, 0.1, 0.1])
    assert select_alpha(alphas, mean, se) == (0.25, 0.25)
    assert select_alpha(alphas, mean, se, one_se=True) == (0.5, 0.25)


def test_merge_shells_weighted_means():
    r = r_grid_of((2.0, 3.0))
    s2 = np.array([0.004, 0.010])
    cmap = np.zeros((r.size, 2))
    cmap[50, 0], cmap[51, 1] = 3.0, 1.0   # one shell at 2.50/2.51
    cmap[70, 0] = 2.0                      # another at 2.70
    cmap[90, 1] = 0.05                     # below 5 % of the largest: dropped
    shells = merge_shells(cmap, r, s2, merge_distance=0.05, min_fraction=0.05)
    assert len(shells) == 2
    assert shells[0].n == pytest.approx(4.0) and shells[0].r == pytest.approx((3 * 2.50 + 2.51) / 4)
    assert shells[0].sigma2 == pytest.approx((3 * 0.004 + 0.010) / 4)
    assert shells[1].r == pytest.approx(2.70) and shells[1].n == pytest.approx(2.0)


# ------------------------------------------------------------------ ground truth
def test_fcc_cu_four_shells_recovered(cu_path):
    chi = _simulate(cu_path, CU_FCC, noise=0.0005, seed=11, de0=2.0)
    res = fit_sparse(K, chi, cu_path, SparseSpec(bootstrap=0))
    assert len(res.shells) == 4, [(s.r, s.n) for s in res.shells]
    for (n, r, _), sh in zip(CU_FCC, res.shells):
        assert abs(sh.r - r) < 0.02, (r, sh.r)
        assert abs(sh.n / S02 - n) < 0.15 * n, (n, sh.n / S02)
    assert abs(res.de0 - 2.0) < 1.0


def test_two_shells_closer_than_fourier_resolution_resolved(cu_path):
    from scipy.signal import find_peaks

    from xafsflow.xas.background import chi_r

    truth = [(6, 2.45, 0.005), (6, 2.57, 0.005)]
    assert 0.12 < np.pi / (2 * (14.0 - 3.0))  # closer than the Fourier resolution
    chi = _simulate(cu_path, truth, noise=0.001, seed=3)
    r, mag = chi_r(K, chi, 3.0, 14.0, kweight=2, dk=1.0, window="hanning")
    peaks, _ = find_peaks(mag)
    in_window = peaks[(r[peaks] > 1.5) & (r[peaks] < 3.0)]
    main = in_window[mag[in_window] > 0.5 * mag[in_window].max()]
    assert len(main) == 1  # |chi(R)| shows one peak (and at most side lobes below half its height)
    # a sigma^2 grid below the merged shell's (a first-shell prior) lets the model resolve the pair
    res = fit_sparse(K, chi, cu_path, SparseSpec(bootstrap=0, sigma2_grid=(0.004, 0.006), de0_range=(-3.0, 3.0)))
    big = [s for s in res.shells if 2.3 < s.r < 2.7 and s.n > 2.0]
    assert len(big) == 2, [(s.r, s.n) for s in res.shells]
    assert abs(big[0].r - 2.45) < 0.03 and abs(big[1].r - 2.57) < 0.03


# ------------------------------------------------------------------ real data, through the product
def _run_product(store, tmp_path, params=None, seed=7, feff_cache=None):
    from xafsflow.products.sparse_structure import run_sparse_structure

    p = analysis_defaults("exafs")
    p["sparse_structure"].update(params or {})
    out = tmp_path / "out.zarr"
    res = run_sparse_structure(store, out, tmp_path / "out.tsv", tmp_path / "out.png", p, "s1", seed,
                               feff_cache=feff_cache)
    return res, out


def test_real_cu_foil_first_shell(cu_store, tmp_path, feff_cache):
    res, out = _run_product(cu_store, tmp_path, {"bootstrap": 8}, feff_cache=feff_cache)
    first = res.shells[0]
    assert abs(first.r - 2.55) < 0.03
    assert 8.0 < first.n < 13.0
    g = open_store(out)
    assert g["coef_map"].shape == (401, 4) and g["cv_mean"].shape == (30,)
    assert g.attrs["first_shell"]["r"] == pytest.approx(first.r)
    cmap, r_grid = g["coef_map"][...], g["r_grid"][...]
    inside = (r_grid >= first.r_lo - 1e-9) & (r_grid <= first.r_hi + 1e-9)
    assert cmap[inside].sum() == pytest.approx(first.n)  # the store's map holds N*S0^2 per grid point
    prov = read_provenance(out)
    used = prov["parameters"]["autobk_used"]
    assert used["rbkg"] == 1.0 and used["method"] == "larch.xafs.autobk" and used["ek0"] == g.attrs["e0"]
    rows = list(csv.DictReader(open(tmp_path / "out.tsv"), delimiter="\t"))
    assert float(rows[0]["R"]) == pytest.approx(first.r, abs=1e-5) and float(rows[0]["R_sd"]) > 0
    assert (tmp_path / "out.png").stat().st_size > 10000


def test_real_fe_foil_first_two_shells(fe_store, tmp_path, feff_cache):
    res, _ = _run_product(fe_store, tmp_path, {"bootstrap": 0}, feff_cache=feff_cache)  # default dE0 range ±15 eV
    rs = [s.r for s in res.shells]
    for target in (2.48, 2.87):
        assert min(abs(r - target) for r in rs) < 0.04, (target, rs)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("params, words", [
    ({"k_range": [3.0, 19.0]}, ["s1", "cu_metal_rt.xdi", "k = 17.4", "end of k_range", "19"]),
    ({"scatterer": "Xx"}, ["s1", "cu_metal_rt.xdi", "unknown element", "Xx"]),
])
def test_bad_input_names_the_scan_and_writes_nothing(cu_store, tmp_path, params, words):
    with pytest.raises(AnalysisInputError) as exc:
        _run_product(cu_store, tmp_path, params)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))
    assert not list(tmp_path.iterdir())


def test_feff_failing_names_the_scan_and_writes_nothing(cu_store, tmp_path, monkeypatch):
    import xafsflow.exafs.basis as basis

    fake = tmp_path / "feff6l"
    fake.write_text("#!/bin/sh\necho 'fatal: potentials diverged'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(basis, "feff_executable", lambda: fake)
    outdir = tmp_path / "out"
    outdir.mkdir()
    with pytest.raises(AnalysisInputError) as exc:
        _run_product(cu_store, outdir, {"r_ref": 2.61})
    msg = str(exc.value)
    assert "s1" in msg and "cu_metal_rt.xdi" in msg and "FEFF failed" in msg and "potentials diverged" in msg
    assert not list(outdir.iterdir())


def test_cli_refuses_a_xanes_scan_with_exit_2(tmp_path, demo_dir):
    raw = ingest("x", "xanes", "xdi", [str(demo_dir / "xanes_01.xdi")], tmp_path / "r.zarr")
    normalize(raw, tmp_path / "s.zarr", analysis_defaults("xanes"))
    out = subprocess.run([sys.executable, "-m", "xafsflow", "sparse_structure", str(tmp_path / "s.zarr"),
                          "--out", str(tmp_path / "o.zarr"), "--tsv", str(tmp_path / "o.tsv"),
                          "--png", str(tmp_path / "o.png")], capture_output=True, text=True)
    assert out.returncode == 2 and "EXAFS" in out.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_dry_run_check_names_the_keys():
    from xafsflow.products.sparse_structure import check

    p = analysis_defaults("exafs")["sparse_structure"]
    assert check(p) == []
    assert check(dict(p, k_range=[14.0, 3.0])) == ["k_range [14.0, 3.0] is not ordered (start below end)"]
    assert check(dict(p, autobk=dict(p["autobk"], kmax=12.0))) == [
        "autobk.kmax (12.0) is below the end of k_range (14.0)"]


def test_summary_fields_from_store_attributes():
    from xafsflow.products.sparse_structure import PRODUCT, summary

    out = summary({"n_shells": 2, "first_shell": {"r": 2.5512, "n": 10.04, "sigma2": 0.00861}, "de0": 3.456,
                   "alpha": 0.00123, "flags": ["de0_at_bound(10.0)"]})
    assert out == {"n_shells": 2, "r1": "2.551", "n1": "10.04", "sigma2_1": "0.0086", "de0": "3.46",
                   "alpha": "0.00123", "flags": ["de0_at_bound(10.0)"]}
    assert set(out) - {"flags"} == set(PRODUCT.summary_fields)


@pytest.mark.slow
def test_bootstrap_sd_of_r_matches_the_spread_over_noise_realizations(cu_path):
    """Calibration of the block bootstrap: over independent noise draws of one shell, the sd of the fitted R
    and the median bootstrap sd agree within a factor of 2."""
    spec = SparseSpec(r_range=(2.2, 2.9), sigma2_grid=(0.004, 0.006, 0.008, 0.010), de0_range=(0.0, 0.0),
                      bootstrap=40)
    rs, sds, ns, nsds = [], [], [], []
    for seed in range(12):
        chi = _simulate(cu_path, [(12, 2.55, 0.007)], noise=0.004, seed=100 + seed)
        res = fit_sparse(K, chi, cu_path, spec, rng=np.random.default_rng(seed))
        top = max(res.shells, key=lambda s: s.n)
        rs.append(top.r)
        sds.append(top.r_sd)
        ns.append(top.n)
        nsds.append(top.n_sd)
    for spread, boot in ((np.std(rs, ddof=1), np.median(sds)), (np.std(ns, ddof=1), np.median(nsds))):
        assert 0.5 < boot / spread < 2.0, (boot, spread)


def test_same_seed_same_result_other_seed_other_bootstrap(cu_path):
    chi = _simulate(cu_path, [(12, 2.55, 0.007)], noise=0.003, seed=1)
    spec = SparseSpec(r_range=(2.3, 2.8), sigma2_grid=(0.005, 0.009), de0_range=(0.0, 0.0), bootstrap=6)
    a = fit_sparse(K, chi, cu_path, spec, rng=np.random.default_rng(np.random.SeedSequence([1, 2])))
    b = fit_sparse(K, chi, cu_path, spec, rng=np.random.default_rng(np.random.SeedSequence([1, 2])))
    c = fit_sparse(K, chi, cu_path, spec, rng=np.random.default_rng(np.random.SeedSequence([1, 3])))
    np.testing.assert_array_equal(a.coef_map, b.coef_map)
    assert a.shells[0].r_sd == b.shells[0].r_sd and a.shells[0].n_sd == b.shells[0].n_sd
    np.testing.assert_array_equal(a.coef_map, c.coef_map)  # the fit itself has no randomness
    assert a.shells[0].n_sd != c.shells[0].n_sd


def test_k_range_beyond_feff_grid_is_refused(cu_path):
    with pytest.raises(AnalysisInputError, match="beyond FEFF's k grid"):
        fit_sparse(np.arange(0, 25, 0.05), np.zeros(500), cu_path, SparseSpec(k_range=(3.0, 22.0), bootstrap=0))
