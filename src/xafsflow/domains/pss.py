"""Portilla-Simoncelli texture statistics on a complex steerable pyramid (NumPy, no torch).

After Portilla & Simoncelli, IJCV 40, 49 (2000), as used by Mototake, Shouno
et al., JPSJ 90, 044705 (2021), written for this project.

Pyramid
-------
A complex steerable pyramid built in the Fourier domain with ``scales``
levels and ``orientations`` (K) bands per level. Radial masks are
raised-cosine pairs on log2 of the radial frequency, ``lo^2 + hi^2 = 1``:
``hi_0``/``lo_0`` split at [pi/2, pi] (high-pass residual), level ``s``'s
band-pass ``hi_{s+1}`` and low-pass ``lo_{s+1}`` split at
[pi/2^(s+2), pi/2^(s+1)]. Angular masks are ``c_k(theta) =
cos^(K-1)(theta - pi k / K) / sqrt(C)`` with ``C = K binom(2K-2, K-1) /
4^(K-1)``, so ``sum_k c_k^2 = 1``; a complex (analytic) band keeps the half
plane ``cos(theta - pi k/K) > 0`` with weight 2, so its real part is the
real steerable band. The real parts, high-pass and low-pass residuals
reconstruct the image exactly (:func:`reconstruct`).

The pyramid is not subsampled: every band keeps the image's size, and a
statistic of level ``s`` samples lags ``2^s`` pixels apart (the
neighbourhood of the subsampled pyramid on the full grid). Every statistic
is then exactly invariant to any circular shift of the image.

Statistics (:func:`statistic_groups`; S scales, K orientations, neighbourhood
Na odd, U = (Na^2 + 1)/2 lags of a symmetric auto-correlation)
----------------------------------------------------------------------------
``pixel``                        6        mean, variance, skewness, kurtosis, min, max
``lowpass_moments``              2(S+1)   skewness, kurtosis of the low-passed image at each level 0..S
``lowpass_autocorr``             (S+1)U   auto-covariance of those low-passed images (lags 2^s apart)
``magnitude_mean``               SK       mean magnitude of each band
``magnitude_autocorr``           SKU      auto-covariance of each band's magnitude
``real_variance``                SK       variance of each band's real part
``cross_orientation_magnitude``  S K(K-1)/2  correlation of magnitudes, orientations k < l, same level
``cross_orientation_real``       S K(K-1)/2  correlation of real parts, k < l, same level
``cross_scale_magnitude``        (S-1)K^2 correlation of a band's magnitude with its parent's (level s+1)
``cross_scale_real``             (S-1)2K^2 correlation of a band's real part with the real and imaginary
                                          parts of its phase-doubled parent p^2/|p|
``highpass_variance``            1        variance of the high-pass residual

Auto-correlations keep one of each pair of lags (d, -d) (they are equal), and
cross-correlations one of each pair (k, l): no entry is duplicated. For the
defaults (S = 4, K = 4, Na = 7) the vector has 766 entries.
"""

from __future__ import annotations

from functools import lru_cache
from math import comb

import numpy as np

GROUPS = ("pixel", "lowpass_moments", "lowpass_autocorr", "magnitude_mean", "magnitude_autocorr",
          "real_variance", "cross_orientation_magnitude", "cross_orientation_real", "cross_scale_magnitude",
          "cross_scale_real", "highpass_variance")


def _half_lags(neighbourhood: int) -> list[tuple[int, int]]:
    """Lags (dy, dx) of an odd ``neighbourhood`` with one of each pair (d, -d)."""
    h = neighbourhood // 2
    return [(dy, dx) for dy in range(0, h + 1) for dx in range(-h, h + 1) if dy > 0 or dx >= 0]


def statistic_groups(scales: int = 4, orientations: int = 4, neighbourhood: int = 7) -> dict[str, int]:
    """Number of entries of each statistic group, in the vector's order."""
    s, k, u = scales, orientations, len(_half_lags(neighbourhood))
    return {"pixel": 6, "lowpass_moments": 2 * (s + 1), "lowpass_autocorr": (s + 1) * u,
            "magnitude_mean": s * k, "magnitude_autocorr": s * k * u, "real_variance": s * k,
            "cross_orientation_magnitude": s * k * (k - 1) // 2, "cross_orientation_real": s * k * (k - 1) // 2,
            "cross_scale_magnitude": (s - 1) * k * k, "cross_scale_real": (s - 1) * 2 * k * k,
            "highpass_variance": 1}


def statistic_names(scales: int = 4, orientations: int = 4, neighbourhood: int = 7) -> list[str]:
    """Name of every entry of the statistics vector (``group.detail``), in order."""
    S, K = scales, orientations
    lags = [f"dy{dy}.dx{dx}" for dy, dx in _half_lags(neighbourhood)]
    pairs = [(k, m) for k in range(K) for m in range(k + 1, K)]
    names = [f"pixel.{m}" for m in ("mean", "variance", "skewness", "kurtosis", "min", "max")]
    names += [f"lowpass_moments.s{s}.{m}" for s in range(S + 1) for m in ("skewness", "kurtosis")]
    names += [f"lowpass_autocorr.s{s}.{lag}" for s in range(S + 1) for lag in lags]
    names += [f"magnitude_mean.s{s}.o{k}" for s in range(S) for k in range(K)]
    names += [f"magnitude_autocorr.s{s}.o{k}.{lag}" for s in range(S) for k in range(K) for lag in lags]
    names += [f"real_variance.s{s}.o{k}" for s in range(S) for k in range(K)]
    names += [f"cross_orientation_magnitude.s{s}.o{k}.o{m}" for s in range(S) for k, m in pairs]
    names += [f"cross_orientation_real.s{s}.o{k}.o{m}" for s in range(S) for k, m in pairs]
    names += [f"cross_scale_magnitude.s{s}.o{k}.p{m}" for s in range(S - 1) for k in range(K) for m in range(K)]
    names += [f"cross_scale_real.s{s}.o{k}.p{m}.{part}" for s in range(S - 1) for k in range(K) for m in range(K)
              for part in ("re", "im")]
    names += ["highpass_variance"]
    return names


def check_image(image: np.ndarray, scales: int = 4, neighbourhood: int = 7) -> None:
    """Raise ``ValueError`` (one line, what to do) for an image the statistics cannot take.

    The image must be 2-D (or a stack of 2-D images), finite, not constant,
    with sides divisible by ``2^scales`` and longer than ``(neighbourhood - 1) 2^scales``
    (so that the coarsest level's lags are distinct on the periodic grid).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D image (or a stack of them), got shape {image.shape}")
    if neighbourhood < 1 or neighbourhood % 2 == 0:
        raise ValueError(f"neighbourhood must be odd and positive, got {neighbourhood}")
    ny, nx = image.shape[-2:]
    step = 2**scales
    if ny % step or nx % step:
        raise ValueError(f"image sides {ny}x{nx} are not divisible by 2^scales = {step}; crop the image "
                         "or use fewer scales")
    need = (neighbourhood - 1) * step
    if min(ny, nx) <= need:
        raise ValueError(f"image sides {ny}x{nx} too small for {scales} scales and a neighbourhood of "
                         f"{neighbourhood} (need more than {need} pixels); use fewer scales or a smaller "
                         "neighbourhood")
    if not np.all(np.isfinite(image)):
        raise ValueError("image has non-finite pixels (NaN or inf)")
    flat = image.reshape(-1, ny * nx)
    if np.any(np.ptp(flat, axis=1) == 0):
        raise ValueError("image is constant; it has no texture")


@lru_cache(maxsize=16)
def _masks(ny: int, nx: int, scales: int, orientations: int):
    """(hi_0, lo_0, [(hi_{s+1}, lo_{s+1})], angular filters (K, ny, nx) complex, real angular (K, ny, nx))."""
    wy = 2 * np.pi * np.fft.fftfreq(ny)
    wx = 2 * np.pi * np.fft.fftfreq(nx)
    r = np.hypot(wy[:, None], wx[None, :])
    theta = np.arctan2(wy[:, None] * np.ones((1, nx)), np.ones((ny, 1)) * wx[None, :])
    with np.errstate(divide="ignore"):
        lr = np.log2(np.where(r > 0, r, np.finfo(float).tiny) / np.pi)

    def split(top):  # transition over log2 radius [top - 1, top]: (hi, lo)
        t = np.clip(lr - (top - 1), 0.0, 1.0) * (np.pi / 2)
        return np.sin(t), np.cos(t)

    hi0, lo0 = split(0.0)
    levels = [split(-float(s + 1)) for s in range(scales)]
    order = orientations - 1
    const = orientations * comb(2 * order, order) / 4.0**order
    real_ang, cplx_ang = [], []
    for k in range(orientations):
        c = np.cos(theta - np.pi * k / orientations)
        ang = c**order / np.sqrt(const)
        real_ang.append(((-1j) ** order) * ang)
        cplx_ang.append(((-1j) ** order) * 2.0 * ang * (c > 0))
    return hi0, lo0, levels, np.array(cplx_ang), np.array(real_ang)


def steerable_pyramid(image: np.ndarray, scales: int = 4, orientations: int = 4) -> dict:
    """Complex steerable pyramid (not subsampled) of one image or a stack ``(..., ny, nx)``.

    Returns
    -------
    dict
        ``highpass`` (..., ny, nx) real; ``bands`` list over levels of (..., K, ny, nx)
        complex; ``lowpasses`` list over levels 0..S of the low-passed images
        (..., ny, nx) real (the last is the low-pass residual).
    """
    x = np.asarray(image, dtype=np.float64)
    ny, nx = x.shape[-2:]
    hi0, lo0, levels, cplx_ang, _ = _masks(ny, nx, scales, orientations)
    spec = np.fft.fft2(x)
    highpass = np.fft.ifft2(spec * hi0).real
    y = spec * lo0
    lowpasses = [np.fft.ifft2(y).real]
    bands = []
    for hi, lo in levels:
        bands.append(np.fft.ifft2((y * hi)[..., None, :, :] * cplx_ang))
        y = y * lo
        lowpasses.append(np.fft.ifft2(y).real)
    return {"highpass": highpass, "bands": bands, "lowpasses": lowpasses, "scales": scales,
            "orientations": orientations}


def reconstruct(pyr: dict) -> np.ndarray:
    """The image from the real parts of a pyramid's bands and its residuals."""
    ny, nx = pyr["highpass"].shape[-2:]
    hi0, lo0, levels, _, real_ang = _masks(ny, nx, pyr["scales"], pyr["orientations"])
    z = np.fft.fft2(pyr["lowpasses"][-1])
    for (hi, lo), band in zip(levels[::-1], pyr["bands"][::-1]):
        bspec = np.fft.fft2(band.real) * np.conj(real_ang)
        z = z * lo + hi * bspec.sum(axis=-3)
    return np.fft.ifft2(z * lo0 + np.fft.fft2(pyr["highpass"]) * hi0).real


def _centred(x):
    return x - x.mean(axis=(-2, -1), keepdims=True)


def _autocov(x: np.ndarray, lags, step: int) -> np.ndarray:
    """Circular auto-covariance of real images (..., ny, nx) at ``lags`` times ``step``."""
    ny, nx = x.shape[-2:]
    f = np.fft.rfft2(_centred(x))
    ac = np.fft.irfft2(f * np.conj(f), s=(ny, nx)) / (ny * nx)
    iy = np.array([(dy * step) % ny for dy, _ in lags])
    ix = np.array([(dx * step) % nx for _, dx in lags])
    return ac[..., iy, ix]


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation coefficient over the last two axes (0 where either side has no variance).

    The plain reference of the matrix-product correlations in :func:`_stats_batch` (tests compare them).
    """
    a, b = _centred(a), _centred(b)
    cov = (a * b).mean(axis=(-2, -1))
    den = np.sqrt((a * a).mean(axis=(-2, -1)) * (b * b).mean(axis=(-2, -1)))
    ok = den > 1e-12
    return np.where(ok, cov / np.where(ok, den, 1.0), 0.0)


def _standardized(a: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Bands (B, K, ny, nx) to zero mean and unit variance, flattened to (B, K, ny nx).

    A band whose standard deviation is below ``floor`` (B,) -- 1e-10 of the image's, i.e. rounding
    noise -- is set to zero, so its correlations are 0.
    """
    flat = a.reshape(*a.shape[:-2], -1)
    c = flat - flat.mean(axis=-1, keepdims=True)
    sd = np.sqrt((c * c).mean(axis=-1, keepdims=True))
    ok = sd > floor[:, None, None]
    return np.where(ok, c / np.where(ok, sd, 1.0), 0.0)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance, skewness and kurtosis over the last two axes (0 for a constant image)."""
    mean = x.mean(axis=(-2, -1))
    c = x - mean[..., None, None]
    c2 = c * c  # products, not powers: numpy's pow is several times slower
    var = c2.mean(axis=(-2, -1))
    m3 = (c2 * c).mean(axis=(-2, -1))
    m4 = (c2 * c2).mean(axis=(-2, -1))
    safe = np.where(var > 0, var, 1.0)
    skew = np.where(var > 0, m3 / safe**1.5, 0.0)
    kurt = np.where(var > 0, m4 / safe**2, 0.0)
    return mean, var, skew, kurt


def _stats_batch(x: np.ndarray, scales: int, orientations: int, neighbourhood: int) -> np.ndarray:
    """Statistics of a stack (B, ny, nx): (B, n_stats)."""
    S, K = scales, orientations
    lags = _half_lags(neighbourhood)
    pyr = steerable_pyramid(x, S, K)
    out = []
    mean, var, skew, kurt = _moments(x)
    out.append(np.stack([mean, var, skew, kurt, x.min(axis=(-2, -1)), x.max(axis=(-2, -1))], axis=-1))
    lows = pyr["lowpasses"]
    out.append(np.concatenate([np.stack(_moments(lp)[2:], axis=-1) for lp in lows], axis=-1))
    out.append(np.concatenate([_autocov(lp, lags, 2**s) for s, lp in enumerate(lows)], axis=-1))
    mags = [np.abs(b) for b in pyr["bands"]]  # (B, K, ny, nx) per level
    out.append(np.concatenate([m.mean(axis=(-2, -1)) for m in mags], axis=-1))
    out.append(np.concatenate([_autocov(m, lags, 2**s).reshape(x.shape[0], -1) for s, m in enumerate(mags)],
                              axis=-1))
    out.append(np.concatenate([_centred(b.real).__pow__(2).mean(axis=(-2, -1)) for b in pyr["bands"]], axis=-1))
    # correlations as products of standardized bands (one matrix product per level and pair of levels)
    iu = np.triu_indices(K, 1)
    floor = 1e-10 * np.sqrt(var) + 1e-300
    std_mag = [_standardized(m, floor) for m in mags]
    std_real = [_standardized(b.real, floor) for b in pyr["bands"]]
    npix = x.shape[-1] * x.shape[-2]

    def gram(a, b):  # (B, Ka, P) x (B, Kb, P) -> (B, Ka, Kb) correlation coefficients
        return np.einsum("bkp,blp->bkl", a, b) / npix

    out.append(np.concatenate([gram(m, m)[:, iu[0], iu[1]] for m in std_mag], axis=-1))
    out.append(np.concatenate([gram(r, r)[:, iu[0], iu[1]] for r in std_real], axis=-1))
    cs_mag, cs_real = [], []
    for s in range(S - 1):
        parent, pmag = pyr["bands"][s + 1], mags[s + 1]
        doubled = np.where(pmag > 0, parent**2 / np.where(pmag > 0, pmag, 1.0), 0.0)
        cs_mag.append(gram(std_mag[s], std_mag[s + 1]).reshape(x.shape[0], -1))
        re_im = np.stack([_standardized(doubled.real, floor), _standardized(doubled.imag, floor)], axis=-2)  # (B, K, 2, ...)
        c = gram(std_real[s], re_im.reshape(x.shape[0], 2 * K, -1))  # (B, K, 2K): parent m's re, im adjacent
        cs_real.append(c.reshape(x.shape[0], -1))
    empty = np.zeros((x.shape[0], 0))
    out.append(np.concatenate(cs_mag, axis=-1) if cs_mag else empty)
    out.append(np.concatenate(cs_real, axis=-1) if cs_real else empty)
    out.append(_centred(pyr["highpass"]).__pow__(2).mean(axis=(-2, -1))[:, None])
    return np.concatenate(out, axis=-1)


def pss(image: np.ndarray, scales: int = 4, orientations: int = 4, neighbourhood: int = 7,
        batch_pixels: int = 1 << 18) -> np.ndarray:
    """Portilla-Simoncelli statistics of one image ``(ny, nx)`` or a stack ``(n, ny, nx)``.

    Parameters
    ----------
    image : ndarray
        Image(s), any real units (the statistics scale with them).
    scales, orientations : int
        Pyramid levels and orientations per level.
    neighbourhood : int
        Width (odd, pixels at the finest level) of the auto-correlation neighbourhood.
    batch_pixels : int
        Pixels processed together (memory: about 40 x 16 bytes per pixel).

    Returns
    -------
    ndarray
        ``(n_stats,)`` or ``(n, n_stats)`` float64, entries named by
        :func:`statistic_names` in the groups of :func:`statistic_groups`.

    Raises
    ------
    ValueError
        For images :func:`check_image` refuses.
    """
    x = np.asarray(image, dtype=np.float64)
    check_image(x, scales, neighbourhood)
    single = x.ndim == 2
    stack = x[None] if single else x
    per = max(1, batch_pixels // (stack.shape[-1] * stack.shape[-2]))
    res = np.concatenate([_stats_batch(stack[i:i + per], scales, orientations, neighbourhood)
                          for i in range(0, stack.shape[0], per)])
    return res[0] if single else res
