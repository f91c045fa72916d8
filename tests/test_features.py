"""Per-pixel features of a normalized stack (xafsflow.imaging.features), and segmentation of a simulated stack."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from test_mrf import voronoi_classes
from xafsflow.imaging import features as ft
from xafsflow.imaging import mrf
from xafsflow.simulate import forward as fw

E0 = 7112.0
ENERGY = np.arange(E0 - 40, E0 + 60, 0.5)


def test_edge_energy_of_an_arctan_step_is_its_e0():
    """A pure arctan step crosses half its height exactly at e0 (analytic)."""
    shifts = np.array([-3.3, 0.0, 1.7, 4.25])
    norm = np.stack([fw.arctan_step(ENERGY, E0 + s, 3.0) for s in shifts], axis=1)  # (E, n)
    norm = norm + 0.3 * np.exp(-0.5 * ((ENERGY[:, None] - (E0 + 25 + shifts)) / 4.0) ** 2)  # a maximum above it
    got = ft.spectral_features(ENERGY, norm, E0, features=("edge_energy",), window=(-20, 40), smooth_sigma_ev=0)
    np.testing.assert_allclose(got[:, 0], E0 + shifts, atol=0.01)


def test_white_line_energy_and_height_of_a_gaussian_peak():
    """A Gaussian white line on a flat top: vertex near the peak's centre and height (1 eV grid)."""
    e = np.arange(E0 - 30, E0 + 50, 1.0)
    centres = E0 + np.array([5.3, 8.0, 10.6])
    norm = 1.0 + 1.2 * np.exp(-0.5 * ((e[:, None] - centres) / 2.5) ** 2)
    norm[e < E0 - 5] = 0.0
    got = ft.spectral_features(e, norm, E0, features=("white_line_energy", "white_line_height"), smooth_sigma_ev=0)
    np.testing.assert_allclose(got[:, 0], centres, atol=0.1)
    np.testing.assert_allclose(got[:, 1], 2.2, atol=0.02)


def test_masking_and_standardization():
    norm = np.stack([fw.arctan_step(ENERGY, E0 + s, 2.0) for s in (0.0, 1.0, 2.0, 3.0)], axis=1)
    norm = norm + 0.5 * np.exp(-0.5 * ((ENERGY[:, None] - E0 - 12) / 3.0) ** 2)
    norm[:, 1] = 0.2  # no edge: no half-step crossing
    norm = norm.reshape(len(ENERGY), 2, 2)
    mask = np.array([[True, True], [True, False]])
    maps = ft.pixel_features(ENERGY, norm, E0, mask=mask, extra={"abundance_1": np.arange(4.0).reshape(2, 2)})
    assert maps.names == ["edge_energy", "white_line_energy", "white_line_height", "abundance_1"]
    assert maps.mask.tolist() == [[True, False], [True, False]]
    assert np.all(np.isnan(maps.physical[~maps.mask])) and np.all(maps.values[~maps.mask] == 0)
    v = maps.values[maps.mask]
    # two pixels: the rounding of energies near 7000 eV divided by their small spread (4e-11 seen on an AMD EPYC)
    np.testing.assert_allclose(v.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(v.std(axis=0), 1.0, atol=1e-9)
    assert any("no half-step crossing" in n for n in maps.notes)
    with pytest.raises(ValueError, match="unknown features"):
        ft.spectral_features(ENERGY, norm, E0, features=("pre_edge",))


PHASES = [(0.0, 2.0), (2.5, 5.0), (5.0, 1.0)]  # (edge shift eV, white-line area), as the demo stacks


def simulated_stack(noise, seed=0, shape=(48, 48), n_grains=14):
    """A normalized stack of Voronoi grains with per-class edge shifts, Gaussian noise on every point."""
    rng = np.random.default_rng(seed)
    lab = voronoi_classes(*shape, n_grains, 3, rng)
    e = np.concatenate([np.arange(E0 - 40, E0 - 20, 5.0), np.arange(E0 - 20, E0 + 40, 1.0),
                        np.arange(E0 + 40, E0 + 120, 8.0)])
    spectra = np.stack([fw.xanes_normalized(e, E0 + s, 2.0, a, 2.0, 4.0, 0.5, []) for s, a in PHASES])
    norm = np.moveaxis(spectra[lab], -1, 0) + rng.normal(0, noise, (len(e),) + lab.shape)
    return lab, e, norm


def segment(e, norm, **kw):
    maps = ft.pixel_features(e, norm, E0)  # smoothed along energy by 1 eV (the default)
    return maps, mrf.fit_mrf(maps.values, 3, maps.mask, seed=0, **kw)


def test_smoothing_keeps_a_smooth_spectrum_and_averages_noise():
    """A straight line is unchanged by the renormalized Gaussian away from the ends; white noise shrinks."""
    e = ENERGY
    rows = np.flatnonzero((e > E0 - 20) & (e < E0 + 20))
    w = ft.smoothing_matrix(e, rows, 1.0)
    np.testing.assert_allclose(w @ (2.0 + 0.01 * e), 2.0 + 0.01 * e[rows], rtol=1e-10)
    noise = np.random.default_rng(0).normal(size=(e.size, 4000))
    # sd of a Gaussian-weighted mean: sqrt(sum w^2); 0.5 eV grid, sd 1 eV -> about 0.53
    np.testing.assert_allclose((w @ noise).std(), np.sqrt((w**2).sum(axis=1)).mean(), rtol=0.03)


def test_stack_segmentation_at_demo_noise():
    """Noise 0.02 of the edge step (the demo stacks'): MRF labels recover the grains' classes."""
    lab, e, norm = simulated_stack(0.02)
    maps, res = segment(e, norm)
    assert maps.mask.all()
    assert adjusted_rand_score(lab.ravel(), res.labels.ravel()) >= 0.9
    # each class's mean edge energy is its phase's half-step crossing (root of the noiseless model)
    from scipy.optimize import brentq

    truth = sorted(brentq(lambda x: fw.xanes_normalized(x, E0 + s, 2.0, a, 2.0, 4.0, 0.5, []) - 0.5,
                          E0 - 10, E0 + 10) for s, a in PHASES)
    raw_edge = ft.spectral_features(e, norm, E0, features=("edge_energy",), smooth_sigma_ev=0)[..., 0]
    edge = sorted(np.nanmean(raw_edge[res.labels == c]) for c in range(3))
    np.testing.assert_allclose(edge, truth, atol=0.1)


def test_stack_segmentation_spatial_prior_matters_at_higher_noise():
    """Noise 0.4 edge steps per point, three maps: the mixture without spatial prior scores below 0.7 on
    average, the MRF at least 0.85 on every map.

    (At 0.5 it does not: see test_stack_segmentation_limit_at_noise_half_an_edge_step.)"""
    a_gmm, a_mrf = [], []
    for seed in range(3):
        lab, e, norm = simulated_stack(0.4, seed=seed)
        maps, res = segment(e, norm)
        keep = maps.mask
        assert keep.mean() > 0.99
        a_gmm.append(adjusted_rand_score(lab[keep], res.gmm_labels[keep]))
        a_mrf.append(adjusted_rand_score(lab[keep], res.labels[keep]))
    assert np.mean(a_gmm) < 0.7
    assert min(a_mrf) >= 0.85


def test_stack_segmentation_limit_at_noise_half_an_edge_step():
    """The documented limit (README): at 0.5 edge steps per point the MRF no longer reaches 0.85 on every map,
    and the estimated beta stays below 1.1 on all three."""
    a_mrf, betas = [], []
    for seed in range(3):
        lab, e, norm = simulated_stack(0.5, seed=seed)
        maps, res = segment(e, norm)
        a_mrf.append(adjusted_rand_score(lab[maps.mask], res.labels[maps.mask]))
        betas.append(res.beta)
    assert min(a_mrf) < 0.85 and max(a_mrf) < 0.85
    assert max(betas) < 1.1
