"""A measured image brought to the simulation's terms: scale, background, contrast, crop; bad images."""

from __future__ import annotations

import numpy as np
import pytest

from xafsflow.domains.prepare import normalize_contrast, prepare_image


def test_pixel_size_against_length_unit_resamples():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(64, 64))
    out, rec = prepare_image(img, pixel_size_um=0.1, length_unit_um=0.05, scales=3)
    assert rec["zoom"] == 2.0 and rec["resampled_shape"] == [128, 128] and out.shape == (128, 128)
    # a stripe of period 16 px at 0.1 um becomes period 32 grid spacings at 0.05 um
    x = np.arange(64)
    stripes = np.cos(2 * np.pi * x / 16)[None, :] * np.ones((64, 1))
    out, _ = prepare_image(stripes, 0.1, 0.05, scales=3, percentiles=(0, 100))
    spec = np.abs(np.fft.rfft(out.mean(axis=0)))
    assert np.argmax(spec[1:]) + 1 == 128 // 32


def test_contrast_percentiles_map_to_minus_one_and_one():
    rng = np.random.default_rng(1)
    img = 1000 + 50 * rng.normal(size=(64, 64))
    out, rec = prepare_image(img, 0.05, 0.05, scales=3)
    lo, hi = np.percentile(img, [1, 99])
    np.testing.assert_allclose(out, np.clip(2 * (img - lo) / (hi - lo) - 1, -1, 1))
    assert out.min() == -1.0 and out.max() == 1.0 and "percentiles 1/99" in rec["contrast"]
    # gain and offset of the detector do not matter
    np.testing.assert_allclose(prepare_image(3 * img - 7, 0.05, 0.05, scales=3)[0], out, atol=1e-12)


def test_background_flattening_removes_a_smooth_trend():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:128, 0:128]
    domains = np.sign(np.cos(2 * np.pi * xx / 8) + 0.3 * rng.normal(size=(128, 128)))
    trend = 3 * np.cos(2 * np.pi * yy / 128)  # periodic, slow illumination change
    flat, rec = prepare_image(domains + trend, 0.05, 0.05, scales=3, background_sigma=4.0)
    kept, _ = prepare_image(domains + trend, 0.05, 0.05, scales=3)
    ref, _ = prepare_image(domains, 0.05, 0.05, scales=3, background_sigma=4.0)
    assert np.mean(np.abs(flat - ref)) < 0.1 and np.mean(np.abs(kept - ref)) > 0.3
    assert "sigma 4" in rec["background"]


def test_side_not_divisible_is_cropped_and_recorded():
    img = np.random.default_rng(3).normal(size=(70, 83))
    out, rec = prepare_image(img, 0.05, 0.05, scales=3)
    assert out.shape == (64, 80) and rec["crop"] == [3, 1, 64, 80]


@pytest.mark.parametrize("img,px,match", [
    (np.zeros((2, 8, 8)), 0.05, "2-D"),
    (np.where(np.eye(32) > 0, np.nan, 0.0), 0.05, "non-finite"),
    (np.random.default_rng(0).normal(size=(32, 32)), None, "no pixel size"),
    (np.full((32, 32), 3.0), 0.05, "constant"),
])
def test_bad_images(img, px, match):
    with pytest.raises(ValueError, match=match):
        prepare_image(img, px, 0.05, scales=3)


def test_too_few_grey_levels_is_no_contrast():
    img = np.zeros((32, 32))
    img[0, 0] = 1.0  # one bright pixel: the 1st and 99th percentiles coincide
    with pytest.raises(ValueError, match="percentiles are equal"):
        normalize_contrast(img)


def test_a_real_micrograph_goes_through(shared):
    """A real STXM frame (ALS, 150 x 150 at 0.08 um; no domain images are among the shared real data):
    resampled to 0.05 um grid spacings, cropped to a multiple of 16, contrast -1..1, finite statistics
    that a circular shift by a multiple of 2^scales leaves unchanged."""
    from xafsflow.domains.pss import pss

    frame = np.loadtxt(shared / "stxm" / "als_fe_l23_71214098" / "71214098_a060.xim")
    assert frame.shape == (150, 150)
    out, rec = prepare_image(frame, 0.08, 0.05, scales=4)
    assert rec["zoom"] == pytest.approx(1.6) and rec["resampled_shape"] == [240, 240]
    assert out.shape == (240, 240) and out.min() == -1.0 and out.max() == 1.0
    v = pss(out)
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(pss(np.roll(out, (48, -32), axis=(0, 1))), v, rtol=1e-9, atol=1e-12)
