"""Steerable pyramid and Portilla-Simoncelli statistics: exact reconstruction, subsampling, shifts, known answers."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from xafsflow.domains import pss


@pytest.mark.parametrize("shape,scales,orientations", [((128, 128), 4, 4), ((64, 96), 3, 4), ((64, 64), 3, 6),
                                                         ((48, 80), 4, 4)])
def test_pyramid_reconstructs_the_image(shape, scales, orientations):
    x = np.random.default_rng(0).normal(size=shape) + 3.0
    rec = pss.reconstruct(pss.steerable_pyramid(x, scales, orientations))
    assert np.linalg.norm(rec - x) / np.linalg.norm(x) < 1e-10


def test_angular_masks_partition_unity():
    """sum_k cos^(2(K-1))(theta - pi k/K) = K binom(2K-2, K-1) / 4^(K-1), the constant the masks divide by."""
    theta = np.linspace(0, 2 * np.pi, 997)
    for k_or in (2, 4, 6):
        n = k_or - 1
        total = sum(np.cos(theta - np.pi * k / k_or) ** (2 * n) for k in range(k_or))
        np.testing.assert_allclose(total, k_or * comb(2 * n, n) / 4.0**n, rtol=1e-12)


def test_vector_count_names_and_no_duplicates():
    groups = pss.statistic_groups()
    names = pss.statistic_names()
    assert sum(groups.values()) == len(names) == 766  # the count the module docstring states
    assert len(set(names)) == len(names)
    assert list(groups) == list(pss.GROUPS)
    x = np.random.default_rng(1).normal(size=(128, 128))
    v = pss.pss(x)
    assert v.shape == (766,)
    assert len(np.unique(v)) == v.size  # no entry repeats another (symmetric lags and pairs kept once)
    for g, n in groups.items():
        assert sum(nm.split(".")[0] == g for nm in names) == n


def test_statistics_are_invariant_to_circular_shifts_by_the_coarsest_step():
    """Shifts by multiples of 2^scales move every level's sampling grid onto itself: exact."""
    x = np.random.default_rng(2).normal(size=(64, 64)) ** 2
    v = pss.pss(x, scales=3)
    for shift in [(8, 0), (40, -24), (-16, 56)]:
        w = pss.pss(np.roll(x, shift, axis=(0, 1)), scales=3)
        np.testing.assert_allclose(w, v, rtol=1e-10, atol=1e-12 * np.abs(v).max())


EXACT_FOR_ANY_SHIFT = ("pixel", "lowpass_autocorr", "real_variance", "cross_orientation_real", "highpass_variance")


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_statistics_under_other_shifts(seed):
    """Any other circular shift: the second-order statistics of band-limited images (and all of level 0,
    which is not subsampled) are exact; the others (magnitudes, moments, phase-doubled parents of levels
    s >= 1, averaged over every 2^s-th pixel) move by at most 5 % of their group's largest entry (15 % for
    the low-pass skewness and kurtosis, whose coarsest image is 8 x 8 here). Measured on these 64 x 64
    images: at most 3.0 % (8.0 % for the low-pass moments)."""
    x = np.random.default_rng(seed).normal(size=(64, 64)) ** 2
    names = pss.statistic_names(scales=3)
    groups = pss.statistic_groups(scales=3)
    v = pss.pss(x, scales=3)
    for shift in [(1, 0), (5, -13), (31, 17), (3, 3)]:
        w = pss.pss(np.roll(x, shift, axis=(0, 1)), scales=3)
        start = 0
        for group, n in groups.items():
            a, b = v[start:start + n], w[start:start + n]
            level0 = np.array([".s" not in nm or ".s0." in nm for nm in names[start:start + n]])
            scale = np.abs(a).max()
            np.testing.assert_allclose(b[level0], a[level0], rtol=1e-10, atol=1e-12 * scale)
            if group in EXACT_FOR_ANY_SHIFT:
                np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12 * scale)
            else:
                assert np.abs(b - a).max() <= (0.15 if group == "lowpass_moments" else 0.05) * scale, (group, shift)
            start += n


def test_batch_equals_single():
    x = np.random.default_rng(3).normal(size=(3, 64, 64))
    batch = pss.pss(x, scales=3)
    for i in range(3):
        np.testing.assert_allclose(batch[i], pss.pss(x[i], scales=3), rtol=1e-12, atol=1e-14)


def test_white_noise_cross_correlations():
    """White noise: real parts of orientations k, l correlate as (9 cos d + cos 3d)/10 (K = 4, d = pi(l-k)/4),
    zero for orthogonal ones; real parts against phase-doubled parents do not correlate."""
    names = pss.statistic_names()
    v = pss.pss(np.random.default_rng(4).normal(size=(256, 256)))
    stat = dict(zip(names, v))
    for s in (0, 1):
        for k in range(4):
            for m in range(k + 1, 4):
                d = np.pi * (m - k) / 4
                expected = (9 * np.cos(d) + np.cos(3 * d)) / 10
                assert stat[f"cross_orientation_real.s{s}.o{k}.o{m}"] == pytest.approx(expected, abs=0.03)
    cs = np.array([stat[n] for n in names if n.startswith("cross_scale_real.s0.")])
    assert np.max(np.abs(cs)) < 0.05
    cs1 = np.array([stat[n] for n in names if n.startswith("cross_scale_real.s1.")])
    assert np.max(np.abs(cs1)) < 0.1
    # and for a pattern with aligned phases across scales (a square wave) they are far from zero
    sq = np.sign(np.cos(2 * np.pi * 8 * np.arange(256) / 256))[None, :] * np.ones((256, 1))
    w = dict(zip(names, pss.pss(sq + 0.01 * np.random.default_rng(5).normal(size=(256, 256)))))
    assert max(abs(w[n]) for n in names if n.startswith("cross_scale_real.")) > 0.2


@pytest.mark.parametrize("direction,orientation", [((0, 1), 0), ((1, 1), 1), ((1, 0), 2)])
def test_grating_energy_sits_in_its_orientation_band(direction, orientation):
    """A pure grating: band energies over orientations follow cos^6(theta - pi k/4) / 1.25 and the
    complex band's magnitude is constant (the analytic signal of a cosine)."""
    n = 128
    yy, xx = np.mgrid[0:n, 0:n]
    f = 16 if direction != (1, 1) else 11
    grating = np.cos(2 * np.pi * f * (direction[0] * yy + direction[1] * xx) / n)
    names = pss.statistic_names()
    stat = dict(zip(names, pss.pss(grating)))
    theta = np.arctan2(direction[0], direction[1])
    energy = np.array([[stat[f"real_variance.s{s}.o{k}"] for k in range(4)] for s in range(4)]).sum(axis=0)
    expected = np.cos(theta - np.pi * np.arange(4) / 4) ** 6 / 1.25 * grating.var()
    np.testing.assert_allclose(energy, expected, rtol=1e-9, atol=1e-12)
    assert np.argmax(energy) == orientation
    for s in range(4):
        for k in range(4):
            if stat[f"magnitude_mean.s{s}.o{k}"] > 1e-3:
                assert stat[f"magnitude_autocorr.s{s}.o{k}.dy0.dx0"] < 1e-12


@pytest.mark.parametrize("image,match", [
    (np.zeros((4, 64, 64, 1)), "2-D"),
    (np.ones((64, 68)), "divisible"),
    (np.ones((64, 64)), "constant"),
    (np.where(np.eye(64) > 0, np.nan, 1.0), "non-finite"),
    (np.random.default_rng(0).normal(size=(32, 32)), "too small"),
])
def test_bad_images_are_refused(image, match):
    with pytest.raises(ValueError, match=match):
        pss.pss(image, scales=3)


def _full_band(x, scales, orientations, s):
    """Level s's complex bands at full resolution (no subsampling), straight from the masks."""
    hi0, lo0, levels, _, half_ang = pss._masks(*x.shape, scales, orientations)
    y = np.fft.fft2(x) * lo0
    for lo in [lo for _, lo in levels[:s]]:
        y = y * lo
    return np.fft.ifft2(y * levels[s][0] * half_ang) * (-1j) ** (orientations - 1)


@pytest.mark.parametrize("shape,scales", [((64, 96), 3), ((48, 80), 4)])
def test_subsampled_bands_are_samples_of_the_full_resolution_bands(shape, scales):
    """Each level is band-limited to its grid, so cropping its spectrum loses nothing: band s equals
    the non-subsampled band at every 2^s-th pixel, low-pass s the low-passed image there (also when
    the coarsest grid has an odd side: 48 x 80 at 4 scales ends on 3 x 5)."""
    x = np.random.default_rng(7).normal(size=shape) ** 2
    pyr = pss.steerable_pyramid(x, scales, 4)
    for s in range(scales):
        full = _full_band(x, scales, 4, s)
        assert pyr["bands"][s].shape == (4, shape[0] >> s, shape[1] >> s)
        np.testing.assert_allclose(pyr["bands"][s], full[:, ::2**s, ::2**s], atol=1e-12 * np.abs(full).max())
    hi0, lo0, levels, _, _ = pss._masks(*shape, scales, 4)
    y = np.fft.fft2(x) * lo0
    for s, low in enumerate(pyr["lowpasses"]):
        if s:
            y = y * levels[s - 1][1]
        full = np.fft.ifft2(y).real
        assert low.shape == (shape[0] >> s, shape[1] >> s)
        np.testing.assert_allclose(low, full[::2**s, ::2**s], atol=1e-12 * np.abs(full).max())


def _upsample(band):
    """Fourier (zero-padding) upsampling by 2 of complex images (..., ny, nx) band-limited to half their grid."""
    ny, nx = band.shape[-2:]
    spec = np.fft.fft2(band)
    up = np.zeros((*band.shape[:-2], 2 * ny, 2 * nx), dtype=complex)
    iy = np.r_[0:ny // 2, 2 * ny - ny // 2:2 * ny]
    ix = np.r_[0:nx // 2, 2 * nx - nx // 2:2 * nx]
    up[..., iy[:, None], ix[None, :]] = spec
    return np.fft.ifft2(up) * 4


def test_correlations_equal_the_pairwise_reference():
    """The matrix-product correlations equal a plain pairwise correlation of the pyramid's bands, the
    parent Fourier-upsampled onto its child's grid."""
    x = np.random.default_rng(6).normal(size=(64, 64)) ** 2
    stat = dict(zip(pss.statistic_names(scales=3), pss.pss(x, scales=3)))
    pyr = pss.steerable_pyramid(x, 3, 4)
    b0, b1, b2 = pyr["bands"]
    assert stat["cross_orientation_real.s0.o0.o1"] == pytest.approx(pss._corr(b0.real[0], b0.real[1]), abs=1e-12)
    assert stat["cross_orientation_magnitude.s0.o1.o3"] == pytest.approx(
        pss._corr(np.abs(b0[1]), np.abs(b0[3])), abs=1e-12)
    assert stat["cross_orientation_magnitude.s1.o0.o2"] == pytest.approx(
        pss._corr(np.abs(b1[0]), np.abs(b1[2])), abs=1e-12)
    p1 = _upsample(b1)
    assert stat["cross_scale_magnitude.s0.o2.p1"] == pytest.approx(pss._corr(np.abs(b0[2]), np.abs(p1[1])), abs=1e-12)
    doubled = p1[3] ** 2 / np.abs(p1[3])
    assert stat["cross_scale_real.s0.o0.p3.im"] == pytest.approx(pss._corr(b0.real[0], doubled.imag), abs=1e-12)
    assert stat["cross_scale_real.s0.o2.p3.re"] == pytest.approx(pss._corr(b0.real[2], doubled.real), abs=1e-12)
    p2 = _upsample(b2)
    doubled = p2[1] ** 2 / np.abs(p2[1])
    assert stat["cross_scale_real.s1.o3.p1.re"] == pytest.approx(pss._corr(b1.real[3], doubled.real), abs=1e-12)
    assert stat["cross_scale_magnitude.s1.o1.p0"] == pytest.approx(pss._corr(np.abs(b1[1]), np.abs(p2[0])), abs=1e-12)
    # auto-covariances: level s's lags are 2^s pixels of the full grid, i.e. neighbours on its own grid
    m1 = np.abs(b1[2]) - np.abs(b1[2]).mean()
    assert stat["magnitude_autocorr.s1.o2.dy2.dx-1"] == pytest.approx(
        (m1 * np.roll(m1, (-2, 1), axis=(0, 1))).mean(), abs=1e-12 * (m1 * m1).mean())
    low = pyr["lowpasses"][2] - pyr["lowpasses"][2].mean()
    assert stat["lowpass_autocorr.s2.dy1.dx3"] == pytest.approx(
        (low * np.roll(low, (-1, -3), axis=(0, 1))).mean(), abs=1e-12 * (low * low).mean())
