"""Bring a measured domain image to the simulation's terms before its statistics are computed.

1. Scale: the image is resampled (linear interpolation) by ``pixel_size /
   length_unit`` so that one pixel is one simulation grid spacing. Without a
   pixel size (from the scan sheet or the image file) the scale cannot be
   matched and the image is refused.
2. Background (optional): a Gaussian-blurred copy (sigma ``background_sigma``
   grid spacings, periodic) is subtracted, removing slow illumination trends.
3. Contrast: the ``percentiles`` (low, high) of the image are mapped to -1 and
   +1 (phi's range in saturated domains) and values beyond are clipped, so a
   measured image and a simulated one compare on the same scale whatever the
   detector's gain and offset. Simulated images go through the same step.
4. Size: a centred crop to sides divisible by ``2^scales`` (the statistics need it).

Every choice and its effect goes into the returned ``record`` (provenance).
"""

from __future__ import annotations

import numpy as np


def normalize_contrast(image: np.ndarray, percentiles=(1.0, 99.0)) -> np.ndarray:
    """Map the ``percentiles`` of ``image`` (or of each image of a stack) to -1 and +1, clipped.

    Raises ``ValueError`` when they coincide (a constant image, or one with too few grey levels).
    """
    x = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(x, percentiles, axis=(-2, -1), keepdims=True)
    if np.any(hi - lo <= 0):
        raise ValueError(f"the image's {percentiles[0]:g} and {percentiles[1]:g} percentiles are equal "
                         "(constant image): it has no domain contrast")
    return np.clip(2.0 * (x - lo) / (hi - lo) - 1.0, -1.0, 1.0)


def centred_crop(image: np.ndarray, multiple: int) -> tuple[np.ndarray, list[int]]:
    """Centred crop of the last two axes to multiples of ``multiple``; returns it and [top, left, ny, nx]."""
    ny, nx = image.shape[-2:]
    cy, cx = ny - ny % multiple, nx - nx % multiple
    if cy == 0 or cx == 0:
        raise ValueError(f"image {ny}x{nx} is smaller than {multiple} pixels on a side")
    top, left = (ny - cy) // 2, (nx - cx) // 2
    return image[..., top:top + cy, left:left + cx], [top, left, cy, cx]


def prepare_image(image: np.ndarray, pixel_size_um: float | None, length_unit_um: float, scales: int = 4,
                  percentiles=(1.0, 99.0), background_sigma: float | None = None) -> tuple[np.ndarray, dict]:
    """A measured image in the simulation's terms, and the record of what was done.

    Parameters
    ----------
    image : ndarray (ny, nx)
        The measured image, any grey scale.
    pixel_size_um : float or None
        Its pixel size, micrometres; None refuses the image (no scale to match).
    length_unit_um : float
        Micrometres per simulation grid spacing.
    scales : int
        Pyramid levels: sides are cropped to multiples of ``2^scales``.
    percentiles : (float, float)
        Grey levels mapped to -1 and +1.
    background_sigma : float or None
        Gaussian background removed first (grid spacings); None keeps the background.

    Returns
    -------
    (ndarray, dict)
        The prepared image (float64, values in [-1, 1]) and its record.

    Raises
    ------
    ValueError
        Not 2-D, non-finite pixels, no pixel size, constant, or too small.
    """
    from scipy import ndimage

    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"image has {int(np.sum(~np.isfinite(x)))} non-finite pixels (NaN or inf)")
    if pixel_size_um is None:
        raise ValueError("no pixel size: give pixel_size (micrometres) in the scan sheet or use an image "
                         "whose file records its resolution; without it the image cannot be matched to the "
                         "simulation's length unit")
    if np.ptp(x) == 0:
        raise ValueError("image is constant; it has no domain contrast")
    zoom = float(pixel_size_um) / float(length_unit_um)
    record = {"input_shape": list(x.shape), "pixel_size_um": float(pixel_size_um),
              "length_unit_um": float(length_unit_um), "zoom": zoom}
    if abs(zoom - 1.0) > 1e-9:
        x = ndimage.zoom(x, zoom, order=1, mode="grid-wrap", grid_mode=True)
    record["resampled_shape"] = list(x.shape)
    if background_sigma is not None:
        x = x - ndimage.gaussian_filter(x, background_sigma, mode="wrap")
        record["background"] = f"subtracted Gaussian blur, sigma {background_sigma:g} grid spacings"
    else:
        record["background"] = "kept"
    x, crop = centred_crop(x, 2**scales)
    record["crop"] = crop
    record["contrast"] = f"percentiles {percentiles[0]:g}/{percentiles[1]:g} -> -1/+1, clipped"
    return normalize_contrast(x, percentiles), record
