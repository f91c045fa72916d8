"""Portilla-Simoncelli texture statistics on a complex steerable pyramid (NumPy and SciPy, no torch).

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

The pyramid is subsampled as in the original: level ``s``'s bands and
low-passed image are band-limited to ``|w| < pi/2^s`` (the low-pass masks
are exactly 0 beyond), so their spectra are cropped to a grid ``2^s``
coarser without loss -- each is exactly the non-subsampled array at every
``2^s``-th pixel (tested). A statistic of level ``s`` is therefore the
non-subsampled one averaged over those pixels only; its lags are neighbours
on its own grid (``2^s`` pixels of the image apart). The parent of a
cross-scale correlation is level ``s+1``'s band on level ``s``'s grid (its
Fourier upsampling, also exact). All spectra are Fourier coefficients
(``norm="forward"``) and the FFTs are ``scipy.fft``'s, in float64.

Shifts: a circular shift by a multiple of ``2^S`` leaves every statistic
unchanged (exactly: each grid maps onto itself). Any other shift leaves
level 0 (full resolution) and the second-order statistics of band-limited
images unchanged -- ``pixel``, ``lowpass_autocorr``, ``real_variance``,
``cross_orientation_real``, ``highpass_variance`` (Parseval on each grid) --
and moves the others (magnitudes, skewness and kurtosis, phase-doubled
parents of levels ``s >= 1``) a little: on 64 x 64 images at 3 scales by at
most 3 % of their group's largest entry, 8 % for the low-pass skewness and
kurtosis whose coarsest image has 8 x 8 pixels (the tests' bounds: 5 % and 15 %).

Statistics (:func:`statistic_groups`; S scales, K orientations, neighbourhood
Na odd, U = (Na^2 + 1)/2 lags of a symmetric auto-correlation)
----------------------------------------------------------------------------
``pixel``                        6        mean, variance, skewness, kurtosis, min, max
``lowpass_moments``              2(S+1)   skewness, kurtosis of the low-passed image at each level 0..S
``lowpass_autocorr``             (S+1)U   auto-covariance of those low-passed images (lags 2^s pixels apart)
``magnitude_mean``               SK       mean magnitude of each band
``magnitude_autocorr``           SKU      auto-covariance of each band's magnitude
``real_variance``                SK       variance of each band's real part
``cross_orientation_magnitude``  S K(K-1)/2  correlation of magnitudes, orientations k < l, same level
``cross_orientation_real``       S K(K-1)/2  correlation of real parts, k < l, same level
``cross_scale_magnitude``        (S-1)K^2 correlation of a band's magnitude with its parent's (level s+1,
                                          on level s's grid)
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
import scipy.fft as sfft

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


def _frozen(obj):
    """Mark the arrays of a cached result read-only (they are shared between calls and threads)."""
    items = obj.values() if isinstance(obj, dict) else obj
    for v in items:
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
        elif isinstance(v, (tuple, list)):
            _frozen(v)
    return obj


@lru_cache(maxsize=16)
def _masks(ny: int, nx: int, scales: int, orientations: int):
    """Full-grid masks: (hi_0, lo_0, [(hi_{s+1}, lo_{s+1})], real angular (K, ny, nx), half-plane (K, ny, nx)).

    The angular masks are real: the complex band's filter is ``(-1j)^(K-1)`` times the half-plane
    mask, the real band's ``(-1j)^(K-1)`` times the real angular mask. A low-pass mask is exactly 0
    at and beyond the top of its transition (so cropping the spectrum to a coarser grid drops nothing).
    """
    wy = 2 * np.pi * np.fft.fftfreq(ny)
    wx = 2 * np.pi * np.fft.fftfreq(nx)
    r = np.hypot(wy[:, None], wx[None, :])
    theta = np.arctan2(wy[:, None] * np.ones((1, nx)), np.ones((ny, 1)) * wx[None, :])
    with np.errstate(divide="ignore"):
        lr = np.log2(np.where(r > 0, r, np.finfo(float).tiny) / np.pi)

    def split(top):  # transition over log2 radius [top - 1, top]: (hi, lo)
        f = np.clip(lr - (top - 1), 0.0, 1.0)
        t = f * (np.pi / 2)
        return np.where(f >= 1.0, 1.0, np.sin(t)), np.where(f >= 1.0, 0.0, np.cos(t))

    hi0, lo0 = split(0.0)
    levels = [split(-float(s + 1)) for s in range(scales)]
    order = orientations - 1
    const = orientations * comb(2 * order, order) / 4.0**order
    real_ang, half_ang = [], []
    for k in range(orientations):
        c = np.cos(theta - np.pi * k / orientations)
        ang = c**order / np.sqrt(const)
        real_ang.append(ang)
        half_ang.append(2.0 * ang * (c > 0))
    return _frozen((hi0, lo0, levels, np.array(real_ang), np.array(half_ang)))


def _crop_index(m: int) -> np.ndarray:
    """Indices (FFT order) of the t = m/2 frequencies of a grid of t inside a grid of m (m even): the
    first (t+1)//2 and the last t//2 (t may be odd: an image side 2^S times an odd number)."""
    t = m // 2
    return np.r_[0:(t + 1) // 2, m - t // 2:m]


@lru_cache(maxsize=16)
def _grid_filters(ny: int, nx: int, scales: int, orientations: int) -> list[dict]:
    """Per grid g = 0..S (sides ny/2^g, nx/2^g), the full-grid masks cropped to its frequencies.

    ``lo``: lo_g (the mask that band-limits level g to this grid; lo_0 on grid 0); ``band``
    (K, ...): hi_{g+1} times the half-plane angular masks (level g's complex bands, without the
    phase (-1j)^(K-1)); ``parent`` (K, ...): lo_{g+1} hi_{g+2} times them (level g+1's bands on
    this grid); ``hi``: hi_{g+1}; ``real`` (K, ...): the real angular masks.
    """
    hi0, lo0, levels, real_ang, half_ang = _masks(ny, nx, scales, orientations)
    iy, ix = np.arange(ny), np.arange(nx)
    out = []
    for g in range(scales + 1):
        if g:
            iy, ix = iy[_crop_index(len(iy))], ix[_crop_index(len(ix))]
        crop = (Ellipsis, iy[:, None], ix[None, :])
        d = {"lo": (lo0 if g == 0 else levels[g - 1][1])[crop]}
        if g < scales:
            hi, lo = levels[g]
            d["hi"] = hi[crop]
            d["band"] = np.ascontiguousarray(hi[crop] * half_ang[crop])
            d["real"] = real_ang[crop]
            d["next_lo"] = lo[crop]
            if g + 1 < scales:
                d["parent"] = np.ascontiguousarray((lo * levels[g + 1][0])[crop] * half_ang[crop])
        out.append(_frozen(d))
    return out


def _phase(orientations: int) -> complex:
    return (-1j) ** (orientations - 1)


def _decompose(x: np.ndarray, scales: int, orientations: int):
    """Spectra and bands of the subsampled pyramid of a stack (B, ny, nx).

    Returns (spec, spectra, bands, parents): ``spec`` the image's spectrum (Fourier coefficients,
    ``norm="forward"``, as all spectra here); ``spectra[g]`` the low-pass spectrum of level g on grid g;
    ``bands[s]`` (B, K, ...) level s's complex bands on grid s; ``parents[s]`` (B, K, ...) level s+1's
    bands on grid s (s < S-1), the Fourier upsampling of ``bands[s+1]``.
    """
    ny, nx = x.shape[-2:]
    filt = _grid_filters(ny, nx, scales, orientations)
    ph = _phase(orientations)
    spec = sfft.fft2(x, norm="forward")
    y = spec * filt[0]["lo"]
    spectra, bands, parents = [y], [], []
    for g in range(scales):
        yp = y * ph
        if g == 0:
            bands.append(sfft.ifft2(yp[..., None, :, :] * filt[0]["band"], norm="forward", overwrite_x=True))
        if g + 1 < scales:
            par = sfft.ifft2(yp[..., None, :, :] * filt[g]["parent"], norm="forward", overwrite_x=True)
            parents.append(par)
            bands.append(np.ascontiguousarray(par[..., ::2, ::2]))
        y = y.take(_crop_index(y.shape[-2]), axis=-2).take(_crop_index(y.shape[-1]), axis=-1)  # C order
        y *= filt[g + 1]["lo"]
        spectra.append(y)
    return spec, spectra, bands, parents


def _lowpass(y: np.ndarray) -> np.ndarray:
    """Real image from a (Hermitian) spectrum on its grid (``norm="forward"``)."""
    my, mx = y.shape[-2:]
    return sfft.irfft2(y[..., :mx // 2 + 1], s=(my, mx), norm="forward")


def steerable_pyramid(image: np.ndarray, scales: int = 4, orientations: int = 4) -> dict:
    """Complex steerable pyramid (subsampled) of one image or a stack ``(..., ny, nx)``, sides divisible by 2^scales.

    Returns
    -------
    dict
        ``highpass`` (..., ny, nx) real; ``bands`` list over levels s of (..., K, ny/2^s, nx/2^s)
        complex; ``lowpasses`` list over levels 0..S of the low-passed images (..., ny/2^s, nx/2^s)
        real (the last is the low-pass residual). Every array is the non-subsampled one's samples
        at every 2^s-th pixel (exactly: each is band-limited to its grid).
    """
    x = np.asarray(image, dtype=np.float64)
    lead = x.shape[:-2]
    x3 = x.reshape(-1, *x.shape[-2:])
    spec, spectra, bands, _ = _decompose(x3, scales, orientations)
    ny, nx = x.shape[-2:]
    half = nx // 2 + 1
    highpass = sfft.irfft2(spec[..., :half] * _masks(ny, nx, scales, orientations)[0][:, :half], s=(ny, nx),
                           norm="forward")
    return {"highpass": highpass.reshape(*lead, *highpass.shape[-2:]),
            "bands": [b.reshape(*lead, *b.shape[-3:]) for b in bands],
            "lowpasses": [(lp := _lowpass(y)).reshape(*lead, *lp.shape[-2:]) for y in spectra],
            "scales": scales, "orientations": orientations}


def reconstruct(pyr: dict) -> np.ndarray:
    """The image from the real parts of a pyramid's bands and its residuals."""
    ny, nx = pyr["highpass"].shape[-2:]
    S, K = pyr["scales"], pyr["orientations"]
    filt = _grid_filters(ny, nx, S, K)
    hi0, lo0 = _masks(ny, nx, S, K)[:2]
    back = np.conj(_phase(K))
    z = sfft.fft2(pyr["lowpasses"][-1], norm="forward")
    for g in range(S - 1, -1, -1):
        my, mx = ny >> g, nx >> g
        up = np.zeros((*z.shape[:-2], my, mx), dtype=complex)
        up[..., _crop_index(my)[:, None], _crop_index(mx)[None, :]] = z  # zero-padded onto grid g
        bspec = sfft.fft2(pyr["bands"][g].real, norm="forward") * (back * filt[g]["real"])
        z = up * filt[g]["next_lo"] + filt[g]["hi"] * bspec.sum(axis=-3)
    return sfft.ifft2(z * lo0 + sfft.fft2(pyr["highpass"], norm="forward") * hi0, norm="forward").real


def _centred(x):
    return x - x.mean(axis=(-2, -1), keepdims=True)


@lru_cache(maxsize=64)
def _lag_matrices(my: int, mx: int, neighbourhood: int):
    """Cosine and sine matrices that turn a half power spectrum (my, mx/2+1) into the auto-covariance
    at lags dy = 0..h (rows) and dx = -h..h (columns), h = neighbourhood // 2, and the positions of
    :func:`_half_lags` in that (h+1) x neighbourhood table.

    The power spectrum of a real image is real and even, so its inverse transform at lag d is
    ``sum_k P(k) cos(k.d)`` over all frequencies: over the half spectrum, columns 1..mx/2-1 count twice.
    """
    h = neighbourhood // 2
    ky, kx = np.arange(my), np.arange(mx // 2 + 1)
    weight = np.where((kx == 0) | (2 * kx == mx), 1.0, 2.0)
    ay = 2 * np.pi * np.outer(np.arange(h + 1), ky) / my
    ax = 2 * np.pi * np.outer(kx, np.arange(-h, h + 1)) / mx
    x_mat = np.concatenate([weight[:, None] * np.cos(ax), weight[:, None] * np.sin(ax)], axis=1)
    sel = np.array([dy * neighbourhood + dx + h for dy, dx in _half_lags(neighbourhood)])
    return _frozen((np.cos(ay), np.sin(ay), x_mat, sel))


def _autocov_half(half: np.ndarray, shape: tuple[int, int], neighbourhood: int) -> np.ndarray:
    """Circular auto-covariance of real images at the lags of :func:`_half_lags` (grid steps), from their
    half spectra (``rfft2``, ``norm="forward"``; the mean is removed by dropping the zero frequency).

    Only these few lags are needed, so the inverse transform is two small matrix products with
    :func:`_lag_matrices` (the tests compare them with products of shifted images).
    """
    cy, sy, x_mat, sel = _lag_matrices(*shape, neighbourhood)
    power = np.abs(half)
    power *= power
    power[..., 0, 0] = 0.0
    h1 = cy.shape[0]
    a = np.einsum("dy,...yx->...dx", np.concatenate([cy, sy]), power)  # (..., 2(h+1), kx): sums over ky
    na = neighbourhood
    ac = (np.einsum("...dx,xj->...dj", a[..., :h1, :], x_mat[:, :na])
          - np.einsum("...dx,xj->...dj", a[..., h1:, :], x_mat[:, na:]))  # (..., h+1, Na)
    return ac.reshape(*ac.shape[:-2], -1)[..., sel]


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation coefficient over the last two axes (0 where either side has no variance).

    The plain reference of the matrix-product correlations in :func:`_stats_batch` (tests compare them).
    """
    a, b = _centred(a), _centred(b)
    cov = (a * b).mean(axis=(-2, -1))
    den = np.sqrt((a * a).mean(axis=(-2, -1)) * (b * b).mean(axis=(-2, -1)))
    ok = den > 1e-12
    return np.where(ok, cov / np.where(ok, den, 1.0), 0.0)


def _sumsq(a: np.ndarray) -> np.ndarray:
    """Sum of squares over the last axis (einsum, not BLAS: no thread pool for these small reductions)."""
    return np.einsum("...p,...p->...", a, a)


def _centred_sd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bands (B, K, ny, nx) flattened to (B, K, ny nx) and centred; their means and standard deviations (B, K)."""
    flat = a.reshape(*a.shape[:-2], -1)
    mean = flat.mean(axis=-1)
    c = flat - mean[..., None]
    return c, mean, np.sqrt(_sumsq(c) / c.shape[-1])


def _raw_sd(a: np.ndarray) -> np.ndarray:
    """Standard deviation over the last axis from the mean and the mean square (for arrays whose mean
    is at most a few standard deviations, as magnitudes)."""
    n = a.shape[-1]
    mean = a.sum(axis=-1) / n
    return np.sqrt(np.maximum(_sumsq(a) / n - mean * mean, 0.0))


def _inverse_sd(sd: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """1 / sd (B, K), 0 where sd is below ``floor`` (B,) -- 1e-10 of the image's, i.e. rounding noise
    -- so that a band with no variance has correlations 0."""
    ok = sd > floor[:, None]
    return np.where(ok, 1.0 / np.where(ok, sd, 1.0), 0.0)


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
    B, ny, nx = x.shape
    spec, spectra, bands, parents = _decompose(x, S, K)
    g = {name: [] for name in GROUPS}
    mean, var, skew, kurt = _moments(x)
    g["pixel"].append(np.stack([mean, var, skew, kurt, x.min(axis=(-2, -1)), x.max(axis=(-2, -1))], axis=-1))
    for y in spectra:
        my, mx = y.shape[-2:]
        half = y[..., :mx // 2 + 1]
        g["lowpass_moments"].append(np.stack(_moments(sfft.irfft2(half, s=(my, mx), norm="forward"))[2:], axis=-1))
        g["lowpass_autocorr"].append(_autocov_half(half, (my, mx), neighbourhood))
    floor = 1e-10 * np.sqrt(var) + 1e-300
    iu = np.triu_indices(K, 1)
    tiny = np.finfo(float).tiny

    def corr(a, ia, b, ib):  # centred (B, Ka, P), 1/sd (B, Ka); (B, Kb, P), (B, Kb) -> (B, Ka, Kb) correlations
        return np.einsum("bkp,blp->bkl", a, b) * (ia[:, :, None] * ib[:, None, :] / a.shape[-1])

    for s in range(S):
        cm = np.abs(bands[s]).reshape(B, K, -1)  # magnitudes (B, K, pixels of grid s), centred in place
        mu = cm.mean(axis=-1)
        cm -= mu[..., None]
        sd = np.sqrt(_sumsq(cm) / cm.shape[-1])
        im = _inverse_sd(sd, floor)
        g["magnitude_mean"].append(mu)
        g["magnitude_autocorr"].append(_autocov_half(sfft.rfft2(cm.reshape(bands[s].shape), norm="forward"),
                                                     bands[s].shape[-2:], neighbourhood).reshape(B, -1))
        cr, _, sd = _centred_sd(bands[s].real)
        ir = _inverse_sd(sd, floor)
        g["real_variance"].append(sd * sd)
        g["cross_orientation_magnitude"].append(corr(cm, im, cm, im)[:, iu[0], iu[1]])
        g["cross_orientation_real"].append(corr(cr, ir, cr, ir)[:, iu[0], iu[1]])
        if s + 1 < S:
            # against level s+1's bands on level s's grid; the band side is centred, so the parent
            # side needs only its mean and mean square (for its standard deviation)
            parent = parents[s].reshape(B, K, -1)
            pmag = np.abs(parent)
            g["cross_scale_magnitude"].append(corr(cm, im, pmag, _inverse_sd(_raw_sd(pmag), floor)).reshape(B, -1))
            np.maximum(pmag, tiny, out=pmag)
            inv = np.divide(1.0, pmag, out=pmag)  # 1/|p| (huge but finite where p = 0, so p^2/|p| = 0)
            pr, pi = parent.real, parent.imag
            d_re = pr * pr  # phase-doubled parent p^2/|p|: real part (p_r^2 - p_i^2)/|p|,
            d_re -= pi * pi
            d_re *= inv
            d_im = pr * pi  # imaginary part 2 p_r p_i/|p|
            d_im *= inv
            d_im += d_im
            c = np.empty((B, K, K, 2))  # (k, parent m, re/im)
            for j, part in enumerate((d_re, d_im)):
                c[..., j] = corr(cr, ir, part, _inverse_sd(_raw_sd(part), floor))
            g["cross_scale_real"].append(c.reshape(B, -1))
    # high-pass residual variance by Parseval (its spectrum is 0 at frequency 0)
    hp = spec.reshape(B, -1) * _masks(ny, nx, S, K)[0].reshape(-1)
    g["highpass_variance"].append((_sumsq(hp.real) + _sumsq(hp.imag))[:, None])
    return np.concatenate([v for name in GROUPS for v in g[name]], axis=-1)


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
        Pixels processed together (memory: about 20 x 16 bytes per pixel).

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
