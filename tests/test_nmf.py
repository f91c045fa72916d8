"""Distributed HALS NMF (xafsflow.imaging.nmf): against its single-chunk reference, scikit-learn and truth."""

from __future__ import annotations

import numpy as np
import pytest

from xafsflow.imaging import nmf as nm


def _mixture(seed=1, npix=2400, n_e=60, k=3, noise=0.01, alpha=1.0):
    """Edges at 0.3, 0.4, 0.5 with white lines, mixed with Dirichlet(alpha) fractions, Gaussian noise; 5 % pixels masked."""
    r = np.random.default_rng(seed)
    e = np.linspace(0.0, 1.0, n_e)
    # an edge plus a white line above it, so no component lies under another (NMF is then identifiable)
    H = np.stack([1.0 / (1.0 + np.exp(-(e - c) / 0.03)) + 1.5 * np.exp(-0.5 * ((e - c - 0.05) / 0.03) ** 2)
                  for c in (0.3, 0.4, 0.5)[:k]])
    W = r.dirichlet(np.full(k, alpha), npix)
    X = (W @ H + r.normal(0.0, noise, (npix, n_e))).astype(np.float32).astype(np.float64)
    mask = r.random(npix) < 0.05
    return X, mask, W, H, e


@pytest.mark.parametrize("runner", ["dask", "threads"])
@pytest.mark.parametrize("chunk", [1200, 500, 97])
def test_distributed_equals_single_chunk_reference(chunk, runner):
    import dask.array as da

    X, mask, _, _, e = _mixture(npix=1200)
    ref = nm.nmf_reference(X, 3, mask, energy=e, max_iter=60, tol=0)
    out = nm.nmf(da.from_array(X, chunks=(chunk, X.shape[1])), 3, mask, energy=e, max_iter=60, tol=0,
                 runner=runner, threads=2)
    W = out.W.compute()
    assert out.iterations == ref.iterations == 60
    assert np.max(np.abs(out.H - ref.H)) <= 1e-6 * np.max(np.abs(ref.H))
    assert np.max(np.abs(W - ref.W)) <= 1e-6 * np.max(np.abs(ref.W))
    # the error from the reduced quantities equals the reference's ||X - WH|| computed directly
    np.testing.assert_allclose(out.errors, ref.errors, rtol=1e-8)
    assert np.all(W[mask] == 0)


@pytest.mark.parametrize("runner", ["dask", "threads"])
def test_same_chunking_is_bit_identical_and_error_monotone(runner, monkeypatch):
    import dask.array as da

    monkeypatch.setattr(nm, "TILE_ROWS", 300)  # several tiles, run by 1 or 3 threads in any order
    X, mask, _, _, e = _mixture(seed=3)
    runs = [nm.nmf(da.from_array(X, chunks=(500, X.shape[1])), 3, mask, energy=e, max_iter=40, tol=0,
                   runner=runner, threads=t) for t in (1, 3)]
    assert np.array_equal(runs[0].H, runs[1].H)
    assert np.array_equal(runs[0].W.compute(), runs[1].W.compute())
    assert np.all(np.diff(runs[0].errors) <= 1e-12)


@pytest.mark.parametrize("init", ["spa", "nndsvda"])
def test_in_process_runner_equals_dask_runner(init, monkeypatch):
    """The thread-pool runner and the Dask runner: same factors to 1e-6 relative, float32 input, NaN entries."""
    import dask.array as da

    monkeypatch.setattr(nm, "TILE_ROWS", 256)
    X, mask, _, _, e = _mixture(seed=9, npix=1500)
    X = X.astype(np.float32)
    X[17, 3] = np.nan
    outs = {r: nm.nmf(da.from_array(X, chunks=(400, X.shape[1])), 3, mask, energy=e, max_iter=80, tol=0,
                      init=init, runner=r, threads=2) for r in ("dask", "threads")}
    a, b = outs["dask"], outs["threads"]
    assert a.counts == b.counts and a.counts["non_finite"] == 1
    assert np.max(np.abs(a.H - b.H)) <= 1e-6 * np.max(np.abs(a.H))
    assert np.max(np.abs(a.W.compute() - b.W.compute())) <= 1e-6 * np.max(np.abs(a.W.compute()))
    np.testing.assert_allclose(a.errors, b.errors, rtol=1e-8)


def test_auto_runner_choice():
    import dask.array as da

    X = da.zeros((1000, 50), chunks=(100, 50), dtype=np.float32)
    assert nm._choose_runner(np.zeros((10, 5)), "auto", 1e9) == "threads"
    assert nm._choose_runner(X, "auto", 1e9) == "threads"
    assert nm._choose_runner(X, "auto", 1e3) == "dask"  # larger than the in-memory budget
    assert nm._choose_runner(X, "dask", 1e9) == "dask"
    with pytest.raises(ValueError, match="runner"):
        nm._choose_runner(X, "processes", 1e9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_block_kernel_equals_numpy_reference(dtype):
    """The per-block HALS pass: numba kernel against its NumPy reference, with masked rows and non-finite entries."""
    from xafsflow.imaging.nmf_kernels import hals_block, hals_block_numpy

    r = np.random.default_rng(2)
    x = r.random((700, 40)).astype(dtype)
    x[5, 2], x[9, 0] = np.nan, np.inf
    mask = r.random(700) < 0.1
    H = r.random((4, 40))
    H[2, :5] = 0.0
    w0 = r.random((700, 4))
    w_ref, wtx_ref, wtw_ref = hals_block_numpy(x, mask, w0, H)
    w = w0.copy()
    wtx, wtw = hals_block(x, mask, w, H)
    for got, ref in ((w, w_ref), (wtx, wtx_ref), (wtw, wtw_ref)):
        assert np.max(np.abs(got - ref)) <= 1e-10 * np.max(np.abs(ref))
    assert np.all(w[mask] == 0) and np.all(w >= 0)


def test_matches_scikit_learn_cd_from_the_same_start():
    """Peer: scikit-learn NMF(solver='cd') from our NNDSVDa start, same iterations: same factors."""
    from sklearn.decomposition import NMF

    X, mask, _, _, e = _mixture(seed=5, npix=1500)
    x = np.maximum(X, 0.0)  # scikit-learn refuses negative entries
    x[mask] = 0.0
    W0, H0 = nm.nndsvda_init(x, 3, mask)
    sk = NMF(3, init="custom", solver="cd", max_iter=80, tol=0.0, shuffle=False)
    Ws = sk.fit_transform(x, W=W0.copy(), H=H0.copy())
    ours = nm.nmf_reference(x, 3, mask, max_iter=80, tol=0, init=(W0, H0))
    # undo our scaling/order by matching the product W H
    np.testing.assert_allclose(ours.W @ ours.H, Ws @ sk.components_, rtol=0, atol=1e-8)
    assert ours.errors[-1] == pytest.approx(np.linalg.norm(x - Ws @ sk.components_) / np.linalg.norm(x), rel=1e-9)


def test_recovers_truth_and_sorts_by_edge():
    X, mask, W, H, e = _mixture(seed=7, noise=0.005, alpha=0.2)  # near-pure pixels: identifiable
    out = nm.nmf(X, 3, mask, energy=e, max_iter=400, tol=1e-7)
    # sorted by half-height edge position: truth's edges are at 0.3, 0.4, 0.5
    assert np.all(np.diff(out.edge_positions) > 0)
    np.testing.assert_allclose(out.edge_positions, [0.3, 0.4, 0.5], atol=0.03)
    keep = ~mask
    for j in range(3):
        assert np.corrcoef(out.W[keep, j], W[keep, j])[0, 1] > 0.95
        hc = out.H[j] - X[keep].mean(0)  # cosine after subtracting the mean spectrum of all pixels
        ht = H[j] - X[keep].mean(0)
        assert hc @ ht / np.linalg.norm(hc) / np.linalg.norm(ht) > 0.99


def test_choose_k_finds_the_number_of_components():
    X, mask, _, _, e = _mixture(seed=11, npix=800, noise=0.01)
    k, ks, errs, fits = nm.select_k(X, 1, 5, mask=mask, energy=e, max_iter=150, tol=1e-5, k_gain=0.05)
    assert k == 3
    assert errs[2] < 0.2 * errs[1] and abs(errs[3] - errs[2]) < 0.05 * errs[2]  # a knee at the truth, then flat
    assert nm.choose_k([1, 2, 3], [1.0, 0.5, 0.4], 0.05) == 3  # every step gains more: the largest


def test_bad_k_and_empty_input():
    X, mask, _, _, _ = _mixture(npix=200)
    with pytest.raises(ValueError, match="components"):
        nm.nmf(X, 0, mask)
    with pytest.raises(ValueError, match="nothing to factorize"):
        nm.nmf(np.zeros_like(X), 2)
