"""The phantom electrode (xafsflow simulate stack): normalization, mask and NMF scored against its truth."""

from __future__ import annotations

import numpy as np
import pytest

from xafsflow.imaging import nmf as nm
from xafsflow.imaging.pixels import edge_step_mask, normalize_stack_tolerant
from xafsflow.simulate.phantom import DEMO_NOISE, simulate_phantom

NORMALIZE = {"e0": 7722.0, "pre1": -60.0, "pre2": -20.0, "norm1": 30.0, "nnorm": 1}


@pytest.fixture(scope="module")
def phantom():
    import dask
    import dask.array as da

    mu, e, truth = simulate_phantom(20261127, noise=DEMO_NOISE)
    n_e = e.size
    res = normalize_stack_tolerant(e, da.from_array(mu.reshape(n_e, -1), chunks=(n_e, 700)), **NORMALIZE)
    step, norm = dask.compute(res["edge_step"], res["norm"])
    return mu, e, truth, step, norm.T


def _normalized_truth(e, truth):
    """The phases' spectra as a pure, noiseless pixel reaches the NMF: through the same normalization."""
    from xafsflow.simulate.phantom import normalized_spectra

    return normalized_spectra(truth, NORMALIZE)


def test_truth_is_complete(phantom):
    _, _, t, _, _ = phantom
    f = t["fractions"]
    sample = f.sum(axis=0) > 0
    np.testing.assert_allclose(f.sum(axis=0)[sample], 1.0)
    assert set(t["grain_class"]) == {"empty", "pure", "mixed"}
    assert t["grain_id"].shape == t["label"].shape == sample.shape
    assert np.all((t["label"] == 0) == ~sample)
    for p in range(f.shape[0]):  # every phase has pure pixels
        assert np.any(f[p] == 1.0)


def test_mask_is_the_empty_pixels(phantom):
    _, _, t, step, _ = phantom
    mask, thr = edge_step_mask(step, 0.3)
    empty = (t["label"] == 0).ravel()
    assert np.array_equal(mask, empty)
    assert thr > 0


def test_nmf_recovers_phases(phantom):
    import dask.array as da

    _, e, t, step, X = phantom
    mask, _ = edge_step_mask(step, 0.3)
    keep = ~mask
    k, ks, errs, fits = nm.select_k(da.from_array(X, chunks=(700, e.size)), 1, 4, mask=mask, energy=e,
                                    max_iter=300, tol=1e-5, k_gain=0.25)
    # the data's own curve: a knee at 3 (two thirds off the error), then small gains
    assert k == 3
    assert errs[2] < 0.4 * errs[1] and errs[3] > 0.75 * errs[2]
    fit = fits[3]
    W = fit.W.compute()
    F = t["fractions"].reshape(3, -1).T
    score = nm.match_components(fit.H, W[keep], _normalized_truth(e, t), F[keep], X[keep].mean(axis=0))
    assert np.all(score["cosine"] >= 0.99)
    assert np.all(score["correlation"] >= 0.95)
    # components come out sorted by edge: the phases' edges are ordered by their shift
    assert [j for _, j in sorted(score["pairs"])] == [0, 1, 2]


def test_tolerant_normalization_matches_per_pixel_normalize_edge():
    """Blocks with edgeless pixels: NaN there; elsewhere the same as normalize_edge pixel by pixel
    (both the fixed-e0 one-pass path and the bisection path for e0 found per pixel)."""
    from xafsflow.imaging.pixels import _normalize_block_tolerant
    from xafsflow.xas.normalize import normalize_edge

    mu, e, t = simulate_phantom(3, ny=12, nx=12, n_grains=6, empty_fraction=0.3)
    block = mu.reshape(e.size, -1).astype(float)
    empty = (t["label"] == 0).ravel()
    assert empty.any() and not empty.all()
    for params in (NORMALIZE, {k: v for k, v in NORMALIZE.items() if k != "e0"}):
        packed = _normalize_block_tolerant(block, e, params)
        ok = np.isfinite(packed[1])
        assert not ok[empty].all()  # edgeless pixels are refused (some noise may fake a small step)
        for i in np.flatnonzero(ok)[::7]:
            one = normalize_edge(e, block[:, i], **params)
            np.testing.assert_allclose(packed[1, i], one.edge_step, rtol=1e-9)
            np.testing.assert_allclose(packed[2:2 + e.size, i], one.norm, rtol=1e-8, atol=1e-10)
        for i in np.flatnonzero(~ok):
            with pytest.raises(Exception):
                normalize_edge(e, block[:, i], **params)


def test_nan_and_negative_frames():
    """A NaN in one pixel's spectrum leaves only that pixel unnormalized (then masked); negative entries of
    the normalized data are kept and counted by the NMF, not clipped."""
    from xafsflow.imaging.pixels import _normalize_block_tolerant

    mu, e, t = simulate_phantom(5, ny=6, nx=6, n_grains=4, empty_fraction=0.0)
    block = mu.reshape(e.size, -1).astype(float)
    block[10, 4] = np.nan
    packed = _normalize_block_tolerant(block, e, NORMALIZE)
    assert np.isnan(packed[1, 4]) and np.all(np.isfinite(packed[1, np.arange(block.shape[1]) != 4]))
    mask, _ = edge_step_mask(packed[1], 0.2)
    assert mask[4] and mask.sum() == 1
    X = packed[2:2 + e.size].T
    fit = nm.nmf(X, 2, mask, energy=e, max_iter=20, tol=0)
    assert fit.counts["negative"] == int(np.sum(X[~mask] < 0)) > 0  # pre-edge noise about zero
    assert fit.counts["masked"] == 1
