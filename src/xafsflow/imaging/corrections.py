"""Frame corrections of transmission image stacks: optical density and drift registration.

Pure functions on 2-D frames (y, x); the ingest step applies them frame by
frame while it streams a stack into Zarr, so only a few frames are ever in
memory. Each correction is off unless the scan sheet asks for it.

- Optical density from an I0 region: ``mu = -ln(I / <I over the region>)``,
  the region a rectangle of empty pixels (no sample) measured in every frame.
- Optical density from flat and dark frames: ``mu = -ln((I - dark) / (flat - dark))``.
- Drift registration: the shift of each frame against a reference frame by
  phase correlation (sub-pixel by upsampled cross-correlation), undone by a
  Fourier shift; pixels that wrapped around the frame's edge are set to NaN.

Intensities (I, flat - dark, the I0 region's mean) must be positive. With
``nonpositive="error"`` (the default) a non-positive one raises a
:class:`ValueError` saying which pixels; with ``nonpositive="mask"`` their OD
is NaN (the pixel is then excluded from what follows) and they are counted.
"""

from __future__ import annotations

import re

import numpy as np

NONPOSITIVE_POLICIES = ("error", "mask")
_REGION = re.compile(r"^\s*([xy])\s*=\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_region(text: str, shape: tuple[int, int] | None = None) -> tuple[slice, slice]:
    """The (y, x) slices of a rectangle written ``x=x0:x1, y=y0:y1``.

    Parameters
    ----------
    text : str
        Pixel index ranges, 0-based, end excluded (as Python slices), x along a
        row (columns) and y down the image (rows); both required.
    shape : (ny, nx), optional
        Frame shape the rectangle must fit in.

    Returns
    -------
    (slice, slice)
        Rows and columns, for ``frame[rows, cols]``.
    """
    parts = [p for p in str(text).split(",") if p.strip()]
    found: dict[str, tuple[int, int]] = {}
    for p in parts:
        m = _REGION.match(p)
        if m is None:
            raise ValueError(f"region {text!r}: write it as 'x=x0:x1, y=y0:y1' (0-based pixel indices, end excluded)")
        found[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    if set(found) != {"x", "y"} or len(parts) != 2:
        raise ValueError(f"region {text!r}: give both x and y ranges once, e.g. 'x=0:10, y=0:20'")
    for axis, (a, b) in found.items():
        if b <= a:
            raise ValueError(f"region {text!r}: the {axis} range {a}:{b} is empty")
    if shape is not None:
        ny, nx = shape
        if found["x"][1] > nx or found["y"][1] > ny:
            raise ValueError(f"region {text!r} does not fit in the {ny} x {nx} (y x x) frame")
    return slice(*found["y"]), slice(*found["x"])


def _od(ratio: np.ndarray, nonpositive: str, what: str) -> tuple[np.ndarray, int]:
    """-ln(ratio), with the non-positive / non-finite policy; (od float64, number of pixels set to NaN)."""
    if nonpositive not in NONPOSITIVE_POLICIES:
        raise ValueError(f"nonpositive must be one of {NONPOSITIVE_POLICIES}, not {nonpositive!r}")
    bad = ~(np.isfinite(ratio) & (ratio > 0))
    n_bad = int(bad.sum())
    if n_bad and nonpositive == "error":
        raise ValueError(f"{n_bad} pixel(s) with non-positive or non-finite {what}: their optical density is "
                         "undefined; check the dark/flat frames or I0 region, or set nonpositive to 'mask' to "
                         "exclude those pixels")
    with np.errstate(divide="ignore", invalid="ignore"):
        od = -np.log(np.where(bad, np.nan, ratio))
    return od, n_bad


def od_from_i0_region(frame: np.ndarray, region: tuple[slice, slice], nonpositive: str = "error"):
    """Optical density of one frame of transmitted intensity, I0 measured in an empty region.

    Parameters
    ----------
    frame : (ny, nx) array
        Transmitted intensity I (counts, any linear unit).
    region : (slice, slice)
        Rows and columns of the empty (sample-free) rectangle, see :func:`parse_region`.
    nonpositive : {"error", "mask"}
        What to do with pixels whose I is non-positive or not finite (see the module).

    Returns
    -------
    od : (ny, nx) float64
        ``-ln(I / I0)`` (dimensionless), I0 the mean of ``frame`` over ``region``.
    i0 : float
        That mean (same unit as ``frame``).
    n_masked : int
        Pixels set to NaN (only with ``nonpositive="mask"``).
    """
    frame = np.asarray(frame, dtype=np.float64)
    box = frame[region]
    i0 = float(np.mean(box)) if box.size else float("nan")
    if not (np.isfinite(i0) and i0 > 0):
        raise ValueError(f"the I0 region's mean intensity is {i0!r}; choose a rectangle of empty, "
                         "illuminated pixels (positive counts)")
    od, n_bad = _od(frame / i0, nonpositive, "intensity")
    return od, i0, n_bad


def od_from_flat_dark(frame: np.ndarray, flat: np.ndarray, dark: np.ndarray | float = 0.0,
                      nonpositive: str = "error"):
    """Optical density ``-ln((I - dark) / (flat - dark))`` of one frame.

    Parameters
    ----------
    frame, flat : (ny, nx) arrays
        Transmitted intensity with and without the sample (same unit, same exposure).
    dark : (ny, nx) array or float
        Detector signal without beam (same unit); 0 if not measured.
    nonpositive : {"error", "mask"}
        What to do with pixels where ``I - dark`` or ``flat - dark`` is non-positive
        or not finite (see the module).

    Returns
    -------
    od : (ny, nx) float64
        Optical density (dimensionless).
    n_masked : int
        Pixels set to NaN (only with ``nonpositive="mask"``).
    """
    frame = np.asarray(frame, dtype=np.float64)
    num = frame - dark
    den = np.asarray(flat, dtype=np.float64) - dark
    if den.shape != frame.shape:
        raise ValueError(f"flat frame is {den.shape}, the image {frame.shape}: they must match")
    bad_den = ~(np.isfinite(den) & (den > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bad_den, np.nan, num / np.where(bad_den, 1.0, den))
    return _od(ratio, nonpositive, "(I - dark) or (flat - dark)")


def _fill_nan(frame: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` with NaN replaced by the mean of its finite pixels (for correlation only)."""
    f = np.asarray(frame, dtype=np.float64)
    ok = np.isfinite(f)
    if ok.all():
        return f
    if not ok.any():
        raise ValueError("frame has no finite pixel: nothing to register")
    return np.where(ok, f, f[ok].mean())


def measure_shift(reference: np.ndarray, frame: np.ndarray, upsample: int = 10) -> np.ndarray:
    """Shift (dy, dx) in pixels that registers ``frame`` onto ``reference``, by phase correlation.

    Parameters
    ----------
    reference, frame : (ny, nx) arrays
        Images of the same field (e.g. optical density); NaN pixels are filled with the
        frame's mean before correlating.
    upsample : int
        Upsampling factor of the cross-correlation: the shift is resolved to
        1 / ``upsample`` pixel.

    Returns
    -------
    (2,) float64
        The shift to apply to ``frame`` (see :func:`apply_shift`) so that it
        lines up with ``reference``, in pixels along (y, x).
    """
    from skimage.registration import phase_cross_correlation

    if int(upsample) < 1:
        raise ValueError(f"upsample factor must be >= 1, not {upsample}")
    ref = _fill_nan(reference)
    mov = _fill_nan(frame)
    shift, _, _ = phase_cross_correlation(ref - ref.mean(), mov - mov.mean(), upsample_factor=int(upsample))
    return np.asarray(shift, dtype=np.float64)


def apply_shift(frame: np.ndarray, shift) -> np.ndarray:
    """``frame`` translated by ``shift`` (dy, dx) pixels with a Fourier shift.

    The Fourier shift is exact for band-limited images and wraps around the
    frame's edges; the wrapped-in strips (``ceil(|shift|)`` rows / columns on the
    side the image moved away from) are set to NaN, and so is every pixel that
    draws on a NaN pixel of ``frame`` (its mask moved by the same shift, with
    linear interpolation).

    Parameters
    ----------
    frame : (ny, nx) array
    shift : (dy, dx) in pixels

    Returns
    -------
    (ny, nx) float64
    """
    from scipy.ndimage import fourier_shift

    f = _fill_nan(frame)
    dy, dx = (float(s) for s in shift)
    if dy == 0.0 and dx == 0.0:
        return np.asarray(frame, dtype=np.float64).copy()
    out = np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(f), (dy, dx))))
    out[invalid_border(out.shape, [(dy, dx)])] = np.nan
    bad = ~np.isfinite(np.asarray(frame, dtype=np.float64))
    if bad.any():
        from scipy.ndimage import shift as nd_shift

        out[nd_shift(bad.astype(np.float64), (dy, dx), order=1, mode="constant", cval=0.0) > 1e-6] = np.nan
    return out


def invalid_border(shape: tuple[int, int], shifts) -> np.ndarray:
    """Pixels (True) that any of ``shifts`` (dy, dx) fills from outside the frame (see :func:`apply_shift`)."""
    ny, nx = shape
    bad = np.zeros((ny, nx), bool)
    for dy, dx in shifts:
        ky, kx = int(np.ceil(abs(dy) - 1e-9)), int(np.ceil(abs(dx) - 1e-9))
        if ky:
            bad[:ky] |= dy > 0
            bad[ny - ky:] |= dy < 0
        if kx:
            bad[:, :kx] |= dx > 0
            bad[:, nx - kx:] |= dx < 0
    return bad
