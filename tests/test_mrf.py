"""Hidden Potts MRF segmentation (xafsflow.imaging.mrf): kernels against NumPy, chunking, ground truth."""

from __future__ import annotations

import itertools

import dask
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from xafsflow.imaging import mrf
from xafsflow.imaging import mrf_kernels as kern


def voronoi_classes(ny, nx, n_grains, n_classes, rng):
    """A labelled map: Voronoi grains, each given a class (every class used)."""
    seeds = np.column_stack([rng.uniform(0, ny, n_grains), rng.uniform(0, nx, n_grains)])
    yy, xx = np.mgrid[0:ny, 0:nx]
    grain = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    cls = rng.permutation(np.arange(n_grains) % n_classes)
    return cls[grain]


CENTRES = np.array([[0.0, 0.0], [1.0, 0.5], [0.3, 1.2]])


def labelled_features(noise, seed=1, shape=(64, 64), n_grains=20):
    rng = np.random.default_rng(seed)
    lab = voronoi_classes(*shape, n_grains, 3, rng)
    return lab, CENTRES[lab] + rng.normal(0, noise, lab.shape + (2,))


def ari(a, b):
    return adjusted_rand_score(np.ravel(a), np.ravel(b))


def padded_inputs(rng, ny, nx, nc, neighbours, masked=0.1):
    valid = rng.random((ny, nx)) > masked
    col = kern.site_colours((ny, nx), neighbours, valid)
    h = rng.normal(0, 1.5, (ny, nx, nc))
    q = rng.dirichlet(np.ones(nc), (ny, nx)) * valid[..., None]
    pad = lambda a, v: np.pad(a, [(1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 2), constant_values=v)  # noqa: E731
    return valid, pad(q, 0.0), pad(h, 0.0), pad(col, -1), pad(np.arange(ny * nx).reshape(ny, nx), 0)


# ----------------------------------------------------------------- kernels
@pytest.mark.parametrize("neighbours", [4, 8])
def test_colour_classes_hold_no_two_neighbours(neighbours):
    col = kern.site_colours((7, 9), neighbours)
    assert set(np.unique(col)) == set(range(kern.n_colours(neighbours)))
    offs = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if neighbours == 8 else [])
    for dy, dx in offs:
        a = col[max(dy, 0):, max(dx, 0): col.shape[1] + min(dx, 0)]
        b = col[: col.shape[0] - dy, max(-dx, 0): col.shape[1] - max(dx, 0)]
        assert not np.any(a == b)


@pytest.mark.parametrize("neighbours", [4, 8])
def test_mean_field_kernel_equals_numpy_reference(neighbours):
    rng = np.random.default_rng(3)
    valid, qp, hp, cp, _ = padded_inputs(rng, 13, 17, 3, neighbours)
    q_nb, q_np = qp.copy(), qp.copy()
    for col in range(kern.n_colours(neighbours)):
        change = kern.mf_colour_update(q_nb, hp, cp, col, 0.8, neighbours == 8)
        before = q_np
        q_np = kern.mf_colour_update_np(q_np, hp, cp, col, 0.8, neighbours == 8)
        # the kernel's returned change is the largest |difference| the update made
        assert abs(change - np.max(np.abs(q_np - before))) < 1e-12
        assert change > 0
    assert np.max(np.abs(q_nb - q_np)) < 1e-12
    assert np.all(q_nb[1:-1, 1:-1][~valid] == 0)  # masked sites untouched
    np.testing.assert_allclose(q_nb[1:-1, 1:-1][valid].sum(axis=-1), 1.0, atol=1e-12)


@pytest.mark.parametrize("neighbours", [4, 8])
def test_gibbs_kernel_equals_numpy_reference(neighbours):
    rng = np.random.default_rng(4)
    valid, qp, hp, cp, sp = padded_inputs(rng, 15, 11, 4, neighbours)
    z = np.where(cp >= 0, rng.integers(0, 4, cp.shape), -1).astype(np.int32)
    z_nb, z_np = z.copy(), z.copy()
    for step in range(20):
        col = step % kern.n_colours(neighbours)
        kern.gibbs_colour_update(z_nb, hp, cp, sp, col, 0.7, neighbours == 8, np.uint64(12345), step)
        z_np = kern.gibbs_colour_update_np(z_np, hp, cp, sp, col, 0.7, neighbours == 8, np.uint64(12345), step)
    assert np.array_equal(z_nb, z_np)
    assert np.all(z_nb[cp < 0] == -1)


def test_site_uniforms_are_uniform_and_independent_of_order():
    u = kern.site_uniforms(7, np.arange(200_000), 3)
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    perm = np.random.default_rng(0).permutation(200_000)
    assert np.array_equal(kern.site_uniforms(7, perm, 3), u[perm])
    assert not np.array_equal(kern.site_uniforms(7, np.arange(10), 4), u[:10])


def test_gibbs_frequencies_match_exact_posterior_of_a_small_map():
    """2 x 3 map, 2 classes: the exact Potts posterior by enumerating 64 states vs Gibbs frequencies."""
    rng = np.random.default_rng(5)
    h = rng.normal(0, 0.7, (2, 3, 2))
    beta = 0.6
    marg = np.zeros((2, 3, 2))
    ztot = 0.0
    for state in itertools.product([0, 1], repeat=6):
        z = np.array(state).reshape(2, 3)
        e = sum(h[y, x, z[y, x]] for y in range(2) for x in range(3))
        e += beta * (np.sum(z[:, 1:] == z[:, :-1]) + np.sum(z[1:] == z[:-1]))
        w = np.exp(e)
        ztot += w
        marg[np.arange(2)[:, None], np.arange(3)[None], z] += w
    marg /= ztot
    _, freq = mrf.gibbs_sample(h, beta, n_sweeps=40_000, n_burn=100, key=11)
    assert np.max(np.abs(freq - marg)) < 0.015


def test_mean_field_at_zero_coupling_is_the_softmax():
    h = np.random.default_rng(6).normal(size=(9, 8, 3))
    q = mrf.mean_field(h, 0.0, n_sweeps=3)
    e = np.exp(h - h.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(q, e / e.sum(axis=-1, keepdims=True), atol=1e-14)


# -------------------------------------------------------------- chunking
@pytest.mark.parametrize("neighbours", [4, 8])
def test_chunked_sweeps_equal_single_chunk(neighbours):
    rng = np.random.default_rng(8)
    h = rng.normal(0, 1.0, (30, 37, 3))
    mask = rng.random((30, 37)) > 0.05
    with dask.config.set(scheduler="synchronous"):
        ref = mrf.mean_field(h, 0.9, mask, neighbours=neighbours, n_sweeps=6)
        for chunks in [(10, 13), ((7, 11, 12), (20, 17)), (30, 37)]:
            got = mrf.mean_field(h, 0.9, mask, neighbours=neighbours, n_sweeps=6, chunks=chunks)
            assert np.array_equal(got, ref), chunks  # same arithmetic: bit-identical
        z_ref, f_ref = mrf.gibbs_sample(h, 0.9, mask, neighbours=neighbours, n_sweeps=8, n_burn=5, key=99)
        z, f = mrf.gibbs_sample(h, 0.9, mask, neighbours=neighbours, n_sweeps=8, n_burn=5, key=99, chunks=(8, 9))
    assert np.array_equal(z, z_ref) and np.array_equal(f, f_ref)
    assert np.all(z_ref[~mask] == -1)


def test_chunked_fit_equals_single_chunk_fit():
    lab, x = labelled_features(0.5, shape=(30, 33), n_grains=8)
    mask = np.ones(lab.shape, bool)
    mask[:3, :5] = False
    ref = mrf.fit_mrf(x, 3, mask, seed=2)
    with dask.config.set(scheduler="synchronous"):
        got = mrf.fit_mrf(x, 3, mask, seed=2, chunks=(12, 17))
    assert got.n_iter == ref.n_iter
    assert np.max(np.abs(got.probabilities - ref.probabilities)) < 1e-9
    assert abs(got.beta - ref.beta) < 1e-9 and np.max(np.abs(got.means - ref.means)) < 1e-9
    assert np.array_equal(got.labels, ref.labels)


# ------------------------------------------------------- against the truth
def test_ari_at_moderate_noise():
    lab, x = labelled_features(0.3)
    res = mrf.fit_mrf(x, 3, seed=1)
    assert ari(lab, res.labels) >= 0.9
    # class means recovered (labels ordered by the first feature, as the centres are)
    assert np.max(np.abs(res.means - CENTRES[np.argsort(CENTRES[:, 0])])) < 0.05


def test_spatial_prior_matters_at_high_noise():
    lab, x = labelled_features(0.6)
    res = mrf.fit_mrf(x, 3, seed=1)
    assert ari(lab, res.gmm_labels) < 0.7
    assert ari(lab, res.labels) >= 0.85


def test_coupling_estimate_recovers_a_potts_sample():
    """Labels drawn from a Potts prior (beta = 0.6, below the critical 1.005 for C = 3), well-separated features:
    the mean-field-like pseudo-likelihood estimate of beta lands near the truth."""
    beta_true = 0.6
    z, _ = mrf.gibbs_sample(np.zeros((80, 80, 3)), beta_true, n_sweeps=300, n_burn=299, key=3,
                            init=np.random.default_rng(0).integers(0, 3, (80, 80)))
    x = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])[z] + np.random.default_rng(1).normal(0, 0.3, (80, 80, 2))
    res = mrf.fit_mrf(x, 3, seed=0)
    assert abs(res.beta - beta_true) < 0.1


def test_class_selection_finds_three_classes_with_its_curve():
    lab, x = labelled_features(0.3, shape=(48, 48), n_grains=14)
    sel = mrf.select_classes(x, classes_min=2, classes_max=5, seed=0)
    assert sel.classes == [2, 3, 4, 5] and len(sel.bic) == 4 and len(sel.gmm_bic) == 4
    assert sel.n_classes == 3
    assert ari(lab, sel.best.labels) >= 0.9
    # the mean-field-like BIC over-splits here (documented in select_classes): it would take 4
    assert mrf.select_classes(x, classes_min=2, classes_max=5, seed=0, class_criterion="mrf_bic").n_classes == 4


# -------------------------------------------------------------- bad input
def test_too_few_pixels_is_refused_and_skipped_in_a_range():
    x = np.random.default_rng(0).normal(size=(4, 5, 2))
    with pytest.raises(mrf.MRFInputError, match="too few for 3 classes"):
        mrf.fit_mrf(x, 3)
    mask = np.zeros((4, 5), bool)
    with pytest.raises(mrf.MRFInputError, match="too few"):
        mrf.select_classes(x, mask, classes_min=2, classes_max=3)
    lab, x = labelled_features(0.3, shape=(10, 10), n_grains=4)
    sel = mrf.select_classes(x, classes_min=2, classes_max=4)
    assert not sel.supported[-1] and any("C=4 skipped" in n for n in sel.notes)


def test_singular_covariance_is_regularised_and_recorded():
    lab, x = labelled_features(0.3, shape=(32, 32), n_grains=8)
    x = np.concatenate([x, np.zeros(lab.shape + (1,))], axis=-1)  # a constant feature: singular covariances
    res = mrf.fit_mrf(x, 3, reg_covar=1e-4, seed=0)
    assert any("singular" in n for n in res.notes)
    assert np.all(np.linalg.eigvalsh(res.covariances) >= 1e-4 - 1e-12)
    assert ari(lab, res.labels) >= 0.9


def test_more_classes_than_the_data_support_lose_on_bic():
    """Two populations: C = 1..4 compared, BIC chooses 2 (C = 1 has no coupling to fit)."""
    rng = np.random.default_rng(3)
    lab = voronoi_classes(40, 40, 8, 2, rng)
    x = CENTRES[:2][lab] + rng.normal(0, 0.25, lab.shape + (2,))
    sel = mrf.select_classes(x, classes_min=1, classes_max=4, seed=0)
    assert sel.n_classes == 2
    assert np.all(np.diff(sel.gmm_bic[1:]) > 0)  # past the truth, every added class costs more than it explains


@pytest.mark.slow  # starting the two worker processes takes most of its 10-25 s
def test_chunked_fit_on_a_distributed_cluster_equals_single_chunk():
    """The same halo tasks on a two-process Dask cluster (the product's client) give the single-array fit."""
    from xafsflow.distributed import client

    lab, x = labelled_features(0.5, shape=(24, 26), n_grains=6)
    ref = mrf.fit_mrf(x, 3, seed=4)
    with client(2, 1000):
        got = mrf.fit_mrf(x, 3, seed=4, chunks=(12, 13))
        z, f = mrf.gibbs_sample(mrf.site_field(x, ref), ref.beta, n_sweeps=6, n_burn=2, key=5, chunks=(8, 13))
    z_ref, f_ref = mrf.gibbs_sample(mrf.site_field(x, ref), ref.beta, n_sweeps=6, n_burn=2, key=5)
    assert np.max(np.abs(got.probabilities - ref.probabilities)) < 1e-9
    assert np.array_equal(got.labels, ref.labels)
    assert np.array_equal(z, z_ref) and np.array_equal(f, f_ref)
