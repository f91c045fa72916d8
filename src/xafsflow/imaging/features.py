"""Per-pixel features of a normalized micro-XAFS stack (energy, y, x), for segmentation.

Features (energies in eV, heights in units of the edge step):

``edge_energy``
    the energy at which the normalized spectrum crosses half the edge step
    (``half_step``, 0.5 of a normalized spectrum), the last upward crossing
    below the white line, linearly interpolated between the two energies around it;
``white_line_energy``
    the energy of the spectrum's maximum in the window, refined by the vertex
    of the parabola through the maximum and its two neighbours;
``white_line_height``
    the value of that parabola at its vertex.

All are looked for in the energy window ``window`` (eV relative to ``e0``), on
the spectrum smoothed along energy by a Gaussian of sd ``smooth_sigma_ev``
(weights renormalized on the uneven grid; 0 turns it off): a per-point noise
of 0.3 edge steps otherwise makes the maximum and the crossing follow the noise.
Pixels are masked (excluded) where the caller's mask says so, where a
feature is not finite, or where no half-step crossing lies below the white
line. Extra per-pixel maps (e.g. NMF abundances) join through ``extra``.
Features are standardized (zero mean, unit sd over the unmasked pixels) for the
MRF; the physical values, means and sds are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("edge_energy", "white_line_energy", "white_line_height")
UNITS = {"edge_energy": "eV", "white_line_energy": "eV", "white_line_height": "edge step"}


@dataclass
class FeatureMaps:
    """Standardized features of a map.

    Attributes
    ----------
    values : (ny, nx, d) float64
        Standardized features (0 where masked).
    physical : (ny, nx, d) float64
        The same in physical units (NaN where masked).
    names : list of str
    units : list of str
    mean, sd : (d,) float64
        Of the physical features over the unmasked pixels (values = (physical - mean) / sd).
    mask : (ny, nx) bool
        True where the pixel is used.
    notes : list of str
    """

    values: np.ndarray
    physical: np.ndarray
    names: list
    units: list
    mean: np.ndarray
    sd: np.ndarray
    mask: np.ndarray
    notes: list


def smoothing_matrix(energy, rows, sigma_ev: float) -> np.ndarray:
    """Rows ``rows`` of the Gaussian smoothing operator (sd ``sigma_ev``) on the grid ``energy``, rows summing to 1."""
    w = np.exp(-0.5 * ((energy[rows, None] - energy[None, :]) / sigma_ev) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def spectral_features(energy, norm, e0: float, *, features=FEATURES, window=(-15.0, 20.0),
                      half_step: float = 0.5, smooth_sigma_ev: float = 1.0) -> np.ndarray:
    """Physical features of every pixel of a normalized stack (NaN where not found).

    Parameters
    ----------
    energy : (E,) float, eV, increasing
    norm : (E, ny, nx) or (E, n) array
        Normalized absorption (edge step 1).
    e0 : float
        Reference energy (eV) of the window, e.g. the stack's median E0.
    features : sequence of str
        Names from :data:`FEATURES`, in the order wanted.
    window : (float, float)
        Energies (eV relative to ``e0``) searched.
    half_step : float
        The crossing level of ``edge_energy``.
    smooth_sigma_ev : float
        Sd (eV) of the Gaussian smoothing along energy (0: none).

    Returns
    -------
    (ny, nx, d) or (n, d) float64
    """
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {', '.join(FEATURES)}")
    energy = np.asarray(energy, dtype=np.float64)
    norm = np.asarray(norm)
    shape = norm.shape[1:]
    sel = np.flatnonzero((energy >= e0 + window[0]) & (energy <= e0 + window[1]))
    if sel.size < 3:
        raise ValueError(f"fewer than 3 energies in the window e0 + [{window[0]}, {window[1]}] eV "
                         f"(data {energy[0]:.1f} to {energy[-1]:.1f} eV)")
    e = energy[sel]
    if smooth_sigma_ev > 0:
        y = smoothing_matrix(energy, sel, smooth_sigma_ev) @ norm.reshape(energy.size, -1).astype(np.float64)
    else:
        y = norm[sel].reshape(sel.size, -1).astype(np.float64)
    npix = y.shape[1]
    cols = np.arange(npix)
    finite = np.all(np.isfinite(y), axis=0)
    y = np.where(finite, y, 0.0)
    k = np.argmax(y, axis=0)
    # parabola through (k-1, k, k+1) on a possibly uneven grid; at the window's ends the point itself
    inner = (k > 0) & (k < sel.size - 1)
    km, kp = np.clip(k - 1, 0, sel.size - 1), np.clip(k + 1, 0, sel.size - 1)
    x0, x1, x2 = e[km], e[k], e[kp]
    y0, y1, y2 = y[km, cols], y[k, cols], y[kp, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
        a = (d12 - d01) / (x2 - x0)
        b = d01 - a * (x0 + x1)
        ok = inner & (a < 0)
        wl_e = np.where(ok, -b / (2 * a), x1)
        wl_e = np.clip(wl_e, x0, x2)
        wl_h = np.where(ok, a * wl_e**2 + b * wl_e + (y1 - a * x1**2 - b * x1), y1)
    # last index below half_step before the maximum; the crossing lies between it and the next point
    below = (y < half_step) & (np.arange(sel.size)[:, None] < k[None, :])
    last = sel.size - 1 - np.argmax(below[::-1], axis=0)
    nxt = np.clip(last + 1, 0, sel.size - 1)
    ya, yb = y[last, cols], y[nxt, cols]
    found = below.any(axis=0) & (yb >= half_step)  # a crossing, not a spectrum that stays below
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = e[last] + (half_step - ya) * (e[nxt] - e[last]) / (yb - ya)
    edge = np.where(found & finite, edge, np.nan)
    out = {"edge_energy": edge, "white_line_energy": np.where(finite, wl_e, np.nan),
           "white_line_height": np.where(finite, wl_h, np.nan)}
    return np.stack([out[f] for f in features], axis=-1).reshape(shape + (len(features),))


def standardize(physical, names, mask=None, extra: dict | None = None) -> FeatureMaps:
    """Join ``extra`` maps to the physical features, mask, and standardize.

    Parameters
    ----------
    physical : (ny, nx, d) float
        Physical features (NaN where not found).
    names : sequence of str
        Their names.
    mask : (ny, nx) bool, optional
        True where the pixel may be used.
    extra : dict of name -> (ny, nx) array, optional
        More per-pixel features (e.g. NMF abundances), unit "1".

    Returns
    -------
    FeatureMaps
    """
    physical = np.asarray(physical, dtype=np.float64)
    names, units = list(names), [UNITS.get(n, "1") for n in names]
    if extra:
        for name, m in extra.items():
            m = np.asarray(m, dtype=np.float64)
            if m.shape != physical.shape[:2]:
                raise ValueError(f"extra feature {name!r} has shape {m.shape}, the map {physical.shape[:2]}")
            physical = np.concatenate([physical, m[..., None]], axis=-1)
            names.append(name)
            units.append("1")
    use = np.all(np.isfinite(physical), axis=-1)
    notes = []
    if mask is not None:
        use &= np.asarray(mask, bool)
    n_lost = int((~use).sum() - (0 if mask is None else (~np.asarray(mask, bool)).sum()))
    if n_lost > 0:
        notes.append(f"{n_lost} pixels masked: a feature was not found (no half-step crossing below the maximum, "
                     f"or non-finite data)")
    if not use.any():
        raise ValueError("no pixel has every feature")
    v = physical[use]
    mean, sd = v.mean(axis=0), v.std(axis=0)
    const = sd <= 1e-12 * np.maximum(1.0, np.abs(mean))
    if const.any():
        notes.append(f"constant features kept unscaled: {', '.join(n for n, c in zip(names, const) if c)}")
    sd = np.where(const, 1.0, sd)
    values = np.where(use[..., None], (physical - mean) / sd, 0.0)
    physical = np.where(use[..., None], physical, np.nan)
    return FeatureMaps(values=values, physical=physical, names=names, units=units, mean=mean, sd=sd, mask=use,
                       notes=notes)


def pixel_features(energy, norm, e0: float, *, features=FEATURES, window=(-15.0, 20.0), half_step: float = 0.5,
                   smooth_sigma_ev: float = 1.0, mask=None, extra: dict | None = None) -> FeatureMaps:
    """:func:`spectral_features` of a (energy, y, x) stack, then :func:`standardize`."""
    phys = spectral_features(energy, norm, e0, features=features, window=window, half_step=half_step,
                             smooth_sigma_ev=smooth_sigma_ev)
    return standardize(phys, features, mask, extra)
