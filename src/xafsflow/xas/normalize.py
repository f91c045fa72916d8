"""XAFS edge finding and edge-step normalization.

This module turns measured absorption spectra :math:`\\mu(E)` into
edge-step-normalized spectra, the usual first step of any XANES or EXAFS
analysis:

1. find the edge energy :math:`E_0` (:func:`find_e0`);
2. fit a straight line to the pre-edge region and a low-order polynomial to
   the post-edge region, both defined relative to :math:`E_0`;
3. divide the pre-edge-subtracted spectrum by the edge step
   :math:`\\Delta\\mu = \\mathrm{post}(E_0) - \\mathrm{pre}(E_0)`
   (:func:`normalize_edge`), optionally for a whole image stack with dask
   (:func:`normalize_stack`).

Every function works on one spectrum ``mu`` of shape ``(E,)`` or on many
spectra at once, ``mu`` of shape ``(E, n)`` sharing one energy grid, with
one :math:`E_0` per column. There is no Python loop over spectra: because
each column has its own fit windows, the fits are done as batched weighted
least squares, the windows entering as 0/1 weights.

Energies are in eV throughout; ``mu`` is in whatever units it comes in
(usually dimensionless absorbance, :math:`\\ln(I_0/I_t)`), and the
normalized outputs are dimensionless (edge step = 1).

Only NumPy and SciPy are imported at module import; dask is imported inside
:func:`normalize_stack`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from xafsflow.errors import AnalysisInputError

__all__ = [
    "EdgeNormalization",
    "MIN_WINDOW_POINTS",
    "PRE_EDGE_MIN_GAP",
    "find_e0",
    "edge_step_stability",
    "normalize_edge",
    "normalize_stack",
]

#: Fewest measured points accepted in the pre-edge or the post-edge window
#: (after clamping to the data; the post-edge window also needs ``nnorm + 1``).
MIN_WINDOW_POINTS = 3

#: When a pre-edge window that starts at the first measured point holds fewer
#: than :data:`MIN_WINDOW_POINTS` points, its upper end (pre2) is moved up to
#: this many eV below e0 (pre-edge peaks of K edges lie within about 15 eV of
#: e0; for a scan starting 30 eV below e0 this is larch's default pre2).
PRE_EDGE_MIN_GAP = 15.0

#: :func:`edge_step_stability` skips an alternative post-edge window holding
#: fewer points than this (the configured window only needs MIN_WINDOW_POINTS).
_MIN_ALTERNATIVE_POINTS = 5

#: :func:`find_e0` ignores this many measured points at each end of the grid.
_N_END_SKIP = 3

#: :func:`normalize_edge` refuses an edge step not above this fraction of
#: ``max |mu|`` (a step that small is rounding error, e.g. of a flat spectrum).
_STEP_ROUNDING_FLOOR = 1e-10

#: Upper bound on the number of points of the uniform grid used by
#: :func:`find_e0` (bounds memory for very finely sampled data).
_MAX_UNIFORM_POINTS = 16384


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _check_energy(energy: Any) -> np.ndarray:
    """Return ``energy`` as a 1-D float array, or raise AnalysisInputError."""
    e = np.asarray(energy, dtype=float)
    if e.ndim != 1:
        raise AnalysisInputError(f"energy must be 1-D, got shape {e.shape}")
    if e.size < 2:
        raise AnalysisInputError(f"energy has {e.size} point(s); a spectrum needs many more")
    bad = ~np.isfinite(e)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnalysisInputError(
            f"energy contains {int(bad.sum())} non-finite value(s) (first at index {i}: {e[i]!r})"
        )
    de = np.diff(e)
    if np.any(de <= 0):
        i = int(np.flatnonzero(de <= 0)[0])
        raise AnalysisInputError(
            "energy must be strictly increasing: "
            f"energy[{i}] = {e[i]:g} eV, energy[{i + 1}] = {e[i + 1]:g} eV"
        )
    return e


def _check_mu(mu: Any, n_energy: int) -> np.ndarray:
    """Return ``mu`` as a float array of shape ``(E, ...)``, or raise."""
    m = np.asarray(mu, dtype=float)
    if m.ndim == 0 or m.shape[0] != n_energy:
        raise AnalysisInputError(
            f"mu must have shape (E,) or (E, n) with E = len(energy) = {n_energy}, got shape {m.shape}"
        )
    bad = ~np.isfinite(m)
    if bad.any():
        idx = np.argwhere(bad)[0]
        where = f"index {tuple(int(i) for i in idx)}" if m.ndim > 1 else f"index {int(idx[0])}"
        raise AnalysisInputError(
            f"mu contains {int(bad.sum())} non-finite value(s) (first at {where})"
        )
    return m


def _check_float(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise AnalysisInputError(f"{name} must be finite, got {value!r}")
    return v


def _check_nnorm(nnorm: Any) -> int:
    if isinstance(nnorm, bool) or not isinstance(nnorm, (int, np.integer)):
        raise AnalysisInputError(f"nnorm must be an integer 0..3, got {nnorm!r}")
    if not 0 <= int(nnorm) <= 3:
        raise AnalysisInputError(f"nnorm (post-edge polynomial degree) must be 0..3, got {nnorm}")
    return int(nnorm)


def _check_ranges(pre1, pre2, norm1, norm2) -> tuple[float, float, float, float | None]:
    pre1 = _check_float("pre1", pre1)
    pre2 = _check_float("pre2", pre2)
    norm1 = _check_float("norm1", norm1)
    if pre1 >= pre2:
        raise AnalysisInputError(f"pre-edge range needs pre1 < pre2, got pre1={pre1:g}, pre2={pre2:g} eV")
    if norm2 is not None:
        norm2 = _check_float("norm2", norm2)
        if norm1 >= norm2:
            raise AnalysisInputError(
                f"post-edge range needs norm1 < norm2, got norm1={norm1:g}, norm2={norm2:g} eV"
            )
    return pre1, pre2, norm1, norm2


def _check_smooth(smooth_ev: Any) -> float:
    s = _check_float("smooth_ev", smooth_ev)
    if s < 0:
        raise AnalysisInputError(f"smooth_ev must be >= 0 eV, got {s:g}")
    return s


# ---------------------------------------------------------------------------
# edge energy
# ---------------------------------------------------------------------------


def _uniform_grid(energy: np.ndarray) -> tuple[np.ndarray, float]:
    """Uniform grid spanning ``energy`` with the finest measured step (bounded)."""
    span = energy[-1] - energy[0]
    h = float(np.min(np.diff(energy)))
    h = max(h, span / (_MAX_UNIFORM_POINTS - 1))
    npts = int(np.floor(span / h + 1e-9)) + 1
    return energy[0] + h * np.arange(npts), h


def _interp_columns(x_new: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear interpolation of every column of ``y`` (shape (E, n)) onto ``x_new``."""
    i = np.clip(np.searchsorted(x, x_new, side="right") - 1, 0, x.size - 2)
    t = (x_new - x[i]) / (x[i + 1] - x[i])
    return y[i] * (1.0 - t)[:, None] + y[i + 1] * t[:, None]


def _find_e0_2d(energy: np.ndarray, mu2: np.ndarray, smooth_ev: float) -> np.ndarray:
    """Edge energies (n,) of validated ``mu2`` (E, n); see :func:`find_e0`."""
    n_e = energy.size
    if n_e < 2 * _N_END_SKIP + 3:
        raise AnalysisInputError(
            f"too few energy points ({n_e}) to find the edge; need at least {2 * _N_END_SKIP + 3}"
        )
    grid, h = _uniform_grid(energy)
    mu_u = _interp_columns(grid, energy, mu2)
    if smooth_ev > 0:
        mu_u = gaussian_filter1d(mu_u, sigma=smooth_ev / h, axis=0, mode="nearest", truncate=4.0)
    deriv = np.gradient(mu_u, h, axis=0)

    # interior: uniform points between the (N+1)-th measured point and the
    # (N+1)-th from the end; the parabola neighbours then always exist.
    lo = int(np.searchsorted(grid, energy[_N_END_SKIP], side="left"))
    hi = int(np.searchsorted(grid, energy[-1 - _N_END_SKIP], side="right"))
    lo = max(lo, 1)
    hi = min(hi, grid.size - 1)
    if hi - lo < 1:  # pragma: no cover - guarded by the point count above
        raise AnalysisInputError("energy grid too short to find the edge")
    imax = lo + np.argmax(deriv[lo:hi], axis=0)  # (n,)

    cols = np.arange(mu2.shape[1])
    y0 = deriv[imax - 1, cols]
    y1 = deriv[imax, cols]
    y2 = deriv[imax + 1, cols]
    curv = y0 - 2.0 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curv < 0, 0.5 * (y0 - y2) / curv, 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    return grid[imax] + shift * h


def find_e0(energy, mu, smooth_ev: float = 0.5) -> np.ndarray | float:
    """Edge energy: the energy of the steepest rise of ``mu``.

    Parameters
    ----------
    energy : array_like, shape (E,)
        Photon energy in eV, finite and strictly increasing.
    mu : array_like, shape (E,) or (E, n)
        Absorption coefficient (any units); several spectra as columns.
    smooth_ev : float, default 0.5
        Standard deviation, in eV, of the Gaussian smoothing applied before
        differentiating. ``0`` disables smoothing.

    Returns
    -------
    float or ndarray, shape (n,)
        :math:`E_0` in eV: a float for 1-D ``mu``, one value per column for
        2-D ``mu``.

    Raises
    ------
    AnalysisInputError
        Non-finite values, energy not strictly increasing, shape mismatch,
        or fewer than ``2 * 3 + 3 = 9`` energy points.

    Notes
    -----
    The procedure is exactly:

    1. Build a uniform grid from ``energy[0]`` in steps of
       ``h = max(min(diff(energy)), (energy[-1] - energy[0]) / 16383)`` eV
       (the finest measured step, bounded so the grid has at most 16384
       points) and linearly interpolate every column of ``mu`` onto it.
    2. Smooth along energy with a Gaussian of standard deviation
       ``smooth_ev`` eV, i.e. ``smooth_ev / h`` grid steps
       (:func:`scipy.ndimage.gaussian_filter1d`, ``mode='nearest'``,
       truncated at 4 sigma).
    3. Differentiate with second-order central differences
       (:func:`numpy.gradient`).
    4. Take the maximum of the derivative over the interior of the grid,
       i.e. uniform points between the 4th measured energy and the 4th
       measured energy from the end (the first and last 3 measured points
       are ignored, where padding and sparse end sampling bias the
       derivative).
    5. Refine with the vertex of the parabola through the maximum and its two
       uniform-grid neighbours (shift limited to half a step).
    """
    e = _check_energy(energy)
    m = _check_mu(mu, e.size)
    s = _check_smooth(smooth_ev)
    m2 = m.reshape(e.size, -1)
    e0 = _find_e0_2d(e, m2, s)
    if m.ndim == 1:
        return float(e0[0])
    return e0.reshape(m.shape[1:])


# ---------------------------------------------------------------------------
# batched weighted polynomial fits
# ---------------------------------------------------------------------------


def _window_moments(
    energy: np.ndarray, mu2: np.ndarray, weights: np.ndarray, max_degree: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted power moments of each column's window, for fits up to ``max_degree``.

    Parameters
    ----------
    energy : (E,) eV
    mu2 : (E, n)
    weights : (E, n) 0/1 window masks (each with at least two distinct energies).
    max_degree : highest polynomial degree to be fitted from these moments.

    Returns
    -------
    x : (E, n) scaled variable ``(E - centre) / scale`` (in [-1, 1] inside the window).
    centre, scale : (n,) eV; the window's mean energy and largest ``|E - centre|``.
    moments : (2 * max_degree + 1, n) ``sum w x^k``.
    rhs : (max_degree + 1, n) ``sum w x^k mu``.

    The normal equations of a degree-``d`` fit (``d <= max_degree``) are the
    Hankel matrix of ``moments[:2d+1]`` and ``rhs[:d+1]`` (see
    :func:`_solve_degree`), so one pass over the data serves every degree and
    memory stays O(E * n) whatever the degree.
    """
    wsum = weights.sum(axis=0)
    centre = (weights * energy[:, None]).sum(axis=0) / wsum
    dist = np.abs(energy[:, None] - centre[None, :])
    # > 0: every window holds at least MIN_WINDOW_POINTS distinct energies
    scale = np.max(np.where(weights > 0, dist, 0.0), axis=0)
    x = (energy[:, None] - centre[None, :]) / scale[None, :]

    n_p = max_degree + 1
    moments = np.empty((2 * max_degree + 1, x.shape[1]))
    rhs = np.empty((n_p, x.shape[1]))
    wx = weights.copy()  # w * x^k
    for k in range(2 * max_degree + 1):  # loop over powers, not spectra
        moments[k] = wx.sum(axis=0)
        if k < n_p:
            rhs[k] = np.einsum("en,en->n", wx, mu2)
        wx *= x
    return x, centre, scale, moments, rhs


def _solve_degree(moments: np.ndarray, rhs: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares coefficients (n, degree+1), increasing powers of the scaled variable."""
    n_p = degree + 1
    hankel = np.add.outer(np.arange(n_p), np.arange(n_p))  # (p, q) -> p + q
    normal = np.moveaxis(moments[hankel], -1, 0)  # (n, p, q)
    return np.linalg.solve(normal, rhs[:n_p].T[:, :, None])[:, :, 0]  # (n, p)


def _window_fit(
    energy: np.ndarray, mu2: np.ndarray, weights: np.ndarray, degree: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares polynomial per column, each over its own window.

    Parameters
    ----------
    energy : (E,) eV
    mu2 : (E, n)
    weights : (E, n) 0/1 window masks (at least ``degree + 1`` points each).
    degree : polynomial degree.

    Returns
    -------
    coef : (n, degree+1) coefficients in the scaled variable
        ``x = (E - centre) / scale``, increasing powers.
    centre, scale : (n,) eV.
    values : (E, n) the fitted polynomial evaluated on the whole grid.
    """
    x, centre, scale, moments, rhs = _window_moments(energy, mu2, weights, degree)
    coef = _solve_degree(moments, rhs, degree)
    values = np.zeros_like(x)  # Horner evaluation on the whole grid
    for k in range(degree, -1, -1):
        values = values * x + coef[:, k][None, :]
    return coef, centre, scale, values


def _poly_eval(coef: np.ndarray, centre: np.ndarray, scale: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Evaluate scaled-variable polynomials (n, p) at one energy per column (n,)."""
    x = (at - centre) / scale
    return np.einsum("np,np->n", coef, x[:, None] ** np.arange(coef.shape[1]))


def _to_e0_basis(coef: np.ndarray, centre: np.ndarray, scale: np.ndarray, e0: np.ndarray) -> np.ndarray:
    """Convert coefficients in ``x = (E - c)/s`` to powers of ``u = E - e0`` (eV).

    With ``x = (u - d)/s``, ``d = c - e0``:
    ``sum_k a_k s^-k (u - d)^k = sum_j u^j sum_{k>=j} a_k s^-k C(k, j) (-d)^(k-j)``.
    Returns shape (p, n).
    """
    from math import comb

    n_p = coef.shape[1]
    d = centre - e0
    out = np.zeros((n_p, coef.shape[0]))
    for k in range(n_p):  # loop over polynomial degree (<= 4), not spectra
        ak = coef[:, k] / scale**k
        for j in range(k + 1):
            out[j] += ak * comb(k, j) * (-d) ** (k - j)
    return out


# ---------------------------------------------------------------------------
# normalization
# ---------------------------------------------------------------------------


@dataclass
class EdgeNormalization:
    """Result of :func:`normalize_edge`.

    Arrays "shaped like mu" have shape ``mu.shape`` = ``(E,)`` or ``(E, n)``;
    per-spectrum scalars have shape ``mu.shape[1:]`` (``()`` for one
    spectrum, ``(n,)`` for columns).

    Attributes
    ----------
    e0 : ndarray, shape mu.shape[1:]
        Edge energy used, eV (given or found with :func:`find_e0`).
    edge_step : ndarray, shape mu.shape[1:]
        ``post(e0) - pre(e0)``, in units of ``mu``.
    pre_edge : ndarray, shape mu.shape
        Pre-edge line evaluated on the whole energy grid (units of ``mu``).
    post_edge : ndarray, shape mu.shape
        Post-edge polynomial evaluated on the whole energy grid.
    norm : ndarray, shape mu.shape
        ``(mu - pre_edge) / edge_step``, dimensionless.
    flat : ndarray, shape mu.shape
        ``norm`` below ``e0``; at and above ``e0``,
        ``norm - ((post_edge - pre_edge) / edge_step - 1)``, i.e. the
        post-edge curvature removed so the post-edge oscillates about 1.
    pre_coeffs : ndarray, shape (2,) + mu.shape[1:]
        Pre-edge line as ``pre(E) = sum_k pre_coeffs[k] * (E - e0)**k``
        (``E`` in eV): ``pre_coeffs[0]`` = pre(e0), ``pre_coeffs[1]`` =
        slope per eV.
    post_coeffs : ndarray, shape (nnorm + 1,) + mu.shape[1:]
        Post-edge polynomial in powers of ``(E - e0)`` (eV), increasing
        order; ``post_coeffs[0]`` = post(e0).
    params : dict
        Settings as given: ``pre1``, ``pre2``, ``norm1``, ``norm2`` (eV
        relative to e0; ``norm2`` None = up to the last energy), ``nnorm``,
        ``smooth_ev``, ``e0_given`` (bool), ``min_window_points``; and the
        windows actually fitted (see :func:`normalize_edge`, "Windows"):
        ``pre1_used``, ``pre2_used``, ``norm1_used``, ``norm2_used`` (eV
        relative to e0, inclusive; ``norm2_used`` is the last energy when
        ``norm2`` is None), ``pre_points``, ``post_points`` (measured points
        in each window), each a float/int for one spectrum or an array of
        shape ``mu.shape[1:]``; ``clamped``, the list of settings moved in at
        least one spectrum (among ``"pre1"``, ``"pre2"``, ``"norm2"``), and
        ``clamp_warnings``, one sentence per entry of ``clamped``.
    """

    e0: np.ndarray
    edge_step: np.ndarray
    pre_edge: np.ndarray
    post_edge: np.ndarray
    norm: np.ndarray
    flat: np.ndarray
    pre_coeffs: np.ndarray
    post_coeffs: np.ndarray
    params: dict = field(default_factory=dict)


def _e0_columns(energy: np.ndarray, m: np.ndarray, m2: np.ndarray, e0, smooth_ev: float) -> np.ndarray:
    """Per-column e0 (n,) from a given scalar/array, or found."""
    n = m2.shape[1]
    if e0 is None:
        return _find_e0_2d(energy, m2, smooth_ev)
    e0a = np.asarray(e0, dtype=float)
    if e0a.ndim == 0:
        e0a = np.full(n, float(e0a))
    else:
        if e0a.shape != m.shape[1:]:
            raise AnalysisInputError(
                f"e0 must be a scalar or have shape mu.shape[1:] = {m.shape[1:]}, got {e0a.shape}"
            )
        e0a = e0a.reshape(n)
    bad = ~np.isfinite(e0a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnalysisInputError(f"e0 is not finite ({e0a[i]!r}) for spectrum {i}")
    out = (e0a < energy[0]) | (e0a > energy[-1])
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise AnalysisInputError(
            f"e0 = {e0a[i]:g} eV (spectrum {i}) is outside the energy range "
            f"[{energy[0]:g}, {energy[-1]:g}] eV"
        )
    return e0a


def _window_error(name, lo, hi, count, need, e0, energy, cols, hint) -> AnalysisInputError:
    """The refusal of a window holding too few points (first affected column ``cols[0]``)."""
    i = int(cols[0])
    others = f" ({cols.size} spectra affected)" if cols.size > 1 else ""
    return AnalysisInputError(
        f"{name} window [e0{lo[i] - e0[i]:+.2f}, e0{hi[i] - e0[i]:+.2f}] = [{lo[i]:.2f}, {hi[i]:.2f}] eV "
        f"contains {int(count[i])} point(s), fewer than {need}, "
        f"for spectrum {i} with e0 = {e0[i]:.2f} eV "
        f"(data span [{energy[0]:.2f}, {energy[-1]:.2f}] eV){others}: {hint}"
    )


@dataclass
class _Windows:
    """Fit windows actually used, per column (absolute eV, inclusive), with their masks."""

    pre_lo: np.ndarray
    pre_hi: np.ndarray
    post_lo: np.ndarray
    post_hi: np.ndarray
    w_pre: np.ndarray  # (E, n) 0/1
    w_post: np.ndarray  # (E, n) 0/1
    clamped: dict  # "pre1" / "pre2" / "norm2" -> (n,) bool


def _pre_window(e: np.ndarray, e0c: np.ndarray, pre1: float, pre2: float):
    """Pre-edge window [lo, hi] per column, clamped to the data; raise if too few points."""
    lo_cfg, hi = e0c + pre1, e0c + pre2
    at_start = lo_cfg <= e[0]  # the window reaches (or passes) the first point
    lo = np.where(at_start, e[0], lo_cfg)
    count = ((e[:, None] >= lo[None, :]) & (e[:, None] <= hi[None, :])).sum(axis=0)
    # a window at the start of the data holding too few points: pre2 moves up
    # to PRE_EDGE_MIN_GAP below e0 (never closer, never down)
    extended = at_start & (count < MIN_WINDOW_POINTS) & (e0c - PRE_EDGE_MIN_GAP > hi)
    hi = np.where(extended, e0c - PRE_EDGE_MIN_GAP, hi)
    mask = (e[:, None] >= lo[None, :]) & (e[:, None] <= hi[None, :])
    count = mask.sum(axis=0)
    few = np.flatnonzero(count < MIN_WINDOW_POINTS)
    if few.size:
        i = few[0]
        if at_start[i]:
            hint = (f"the scan starts {e[0] - e0c[i]:+.2f} eV from e0 and the window is extended "
                    f"at most to e0-{PRE_EDGE_MIN_GAP:g} eV (or to pre2 = {pre2:g} eV if closer); "
                    f"measure at least {MIN_WINDOW_POINTS} points below e0{hi[i] - e0c[i]:+.2f} eV, "
                    "or set pre2 closer to e0 if the pre-edge line may use points that close to the edge")
        else:
            hint = f"widen it (pre1 = {pre1:g}, pre2 = {pre2:g} eV relative to e0)"
        raise _window_error("pre-edge", lo, hi, count, MIN_WINDOW_POINTS, e0c, e, few, hint)
    return lo, hi, mask, {"pre1": lo_cfg < e[0], "pre2": extended}


def _post_window(e: np.ndarray, e0c: np.ndarray, norm1: float, norm2, nnorm: int):
    """Post-edge window [lo, hi] per column, clamped to the data; raise if too few points."""
    lo = e0c + norm1
    if norm2 is None:
        hi = np.full_like(e0c, e[-1])
        clamped = np.zeros(e0c.shape, dtype=bool)
    else:
        hi_cfg = e0c + norm2
        clamped = hi_cfg > e[-1]
        hi = np.where(clamped, e[-1], hi_cfg)
    mask = (e[:, None] >= lo[None, :]) & (e[:, None] <= hi[None, :])
    count = mask.sum(axis=0)
    need = max(MIN_WINDOW_POINTS, nnorm + 1)
    few = np.flatnonzero(count < need)
    if few.size:
        i = int(few[0])
        if lo[i] > e[-1]:
            others = f" ({few.size} spectra affected)" if few.size > 1 else ""
            raise AnalysisInputError(
                f"post-edge window starts at e0{norm1:+g} = {lo[i]:.2f} eV, beyond the last energy "
                f"{e[-1]:.2f} eV (e0{e[-1] - e0c[i]:+.2f}), so it contains 0 points, fewer than {need}, "
                f"for spectrum {i} with e0 = {e0c[i]:.2f} eV{others}: lower norm1 (now {norm1:g} eV "
                "relative to e0) or measure further above the edge"
            )
        hint = f"lower norm1 (now {norm1:g} eV relative to e0)"
        if need > MIN_WINDOW_POINTS:
            hint += f" or nnorm (a degree-{nnorm} polynomial needs {need} points)"
        raise _window_error("post-edge", lo, hi, count, need, e0c, e, few, hint)
    return lo, hi, mask, {"norm2": clamped}


def _edge_windows(e: np.ndarray, e0c: np.ndarray, pre1, pre2, norm1, norm2, nnorm) -> _Windows:
    """Pre-edge and post-edge windows, clamped to the data and checked to hold enough points.

    The rule (per column):

    * pre-edge: ``[e0 + pre1, e0 + pre2]``; if ``e0 + pre1`` is below the
      first energy the window starts at the first energy. If such a window
      then holds fewer than :data:`MIN_WINDOW_POINTS` points, its upper end
      moves up to ``e0 - PRE_EDGE_MIN_GAP`` (if that is above ``e0 + pre2``).
    * post-edge: ``[e0 + norm1, e0 + norm2]``; ``norm2`` beyond the last
      energy (or None) means the last energy. ``norm1`` is never moved.
    * any window still holding fewer than :data:`MIN_WINDOW_POINTS` points
      (``max(MIN_WINDOW_POINTS, nnorm + 1)`` for the post-edge) is refused.

    Clamping the outer ends (pre1, norm2) selects the same points as the
    configured window, so fits are unchanged by it; only the extension of
    pre2 changes which points are fitted.
    """
    pre_lo, pre_hi, w_pre, c_pre = _pre_window(e, e0c, pre1, pre2)
    post_lo, post_hi, w_post, c_post = _post_window(e, e0c, norm1, norm2, nnorm)
    return _Windows(pre_lo, pre_hi, post_lo, post_hi, w_pre.astype(float), w_post.astype(float),
                    {**c_pre, **c_post})


def _window_params(win: _Windows, e0c: np.ndarray, scalar_shape: tuple, pre1, pre2, norm2) -> dict:
    """``res.params`` entries describing the windows used and what was clamped."""

    def shaped(a):
        a = np.asarray(a).reshape(scalar_shape)
        return a.item() if a.ndim == 0 else a

    n = e0c.size
    cfg = {"pre1": pre1, "pre2": pre2, "norm2": norm2}
    used = {"pre1": win.pre_lo - e0c, "pre2": win.pre_hi - e0c, "norm2": win.post_hi - e0c}
    what = {
        "pre1": "pre-edge window starts before the data: pre1 clamped to the first energy",
        "pre2": (f"pre-edge window held fewer than {MIN_WINDOW_POINTS} points: pre2 moved up "
                 f"to e0-{PRE_EDGE_MIN_GAP:g} eV"),
        "norm2": "post-edge window ends beyond the data: norm2 clamped to the last energy",
    }
    clamped, warnings = [], []
    for key in ("pre1", "pre2", "norm2"):
        hit = win.clamped[key]
        if not hit.any():
            continue
        clamped.append(key)
        vals = used[key][hit]
        now = f"{vals[0]:+.2f} eV" if vals.min() == vals.max() else f"{vals.min():+.2f}..{vals.max():+.2f} eV"
        where = f" in {int(hit.sum())} of {n} spectra" if n > 1 else ""
        warnings.append(f"{what[key]} ({key} = {cfg[key]:g} -> {now} relative to e0){where}")
    return {
        "pre1_used": shaped(used["pre1"]),
        "pre2_used": shaped(used["pre2"]),
        "norm1_used": shaped(win.post_lo - e0c),
        "norm2_used": shaped(used["norm2"]),
        "pre_points": shaped(win.w_pre.sum(axis=0).astype(int)),
        "post_points": shaped(win.w_post.sum(axis=0).astype(int)),
        "clamped": clamped,
        "clamp_warnings": warnings,
    }


def _check_edge_step(step: np.ndarray, m2: np.ndarray, e0c: np.ndarray, pre1, pre2, norm1, norm2) -> None:
    """Refuse a non-finite edge step or one not above rounding error of the spectrum."""
    # A step within rounding error of zero (a flat spectrum gives +-1e-16) is
    # no step: refuse it rather than divide by rounding noise.
    floor = _STEP_ROUNDING_FLOOR * np.max(np.abs(m2), axis=0)
    bad = ~np.isfinite(step) | (step <= floor)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnalysisInputError(
            f"edge step post(e0) - pre(e0) = {step[i]:.6g} is not positive "
            f"(above rounding error, {floor[i]:.1g}) for spectrum {i} "
            f"(e0 = {e0c[i]:.2f} eV, pre-edge [e0{pre1:+g}, e0{pre2:+g}] eV, post-edge "
            f"[e0{norm1:+g}, {'last energy' if norm2 is None else f'e0{norm2:+g}'}] eV): "
            "is this an absorption edge, with mu rising through it?"
            + (f" ({int(bad.sum())} spectra affected)" if bad.sum() > 1 else "")
        )


def normalize_edge(
    energy,
    mu,
    e0=None,
    pre1: float = -150.0,
    pre2: float = -30.0,
    norm1: float = 100.0,
    norm2: float | None = None,
    nnorm: int = 2,
    smooth_ev: float = 0.5,
) -> EdgeNormalization:
    """Pre-edge subtraction and edge-step normalization.

    Parameters
    ----------
    energy : array_like, shape (E,)
        Photon energy, eV, finite and strictly increasing.
    mu : array_like, shape (E,) or (E, n)
        Absorption; several spectra on the same grid as columns (any
        trailing shape is accepted and treated as flattened columns).
    e0 : float or array_like of shape mu.shape[1:], optional
        Edge energy per spectrum, eV. ``None`` finds it with
        :func:`find_e0` (with ``smooth_ev``).
    pre1, pre2 : float, default -150, -30
        Pre-edge window, eV relative to e0: a straight line is fitted by
        least squares to ``mu`` over ``e0 + pre1 <= E <= e0 + pre2``
        (clamped to the data, see Notes).
    norm1, norm2 : float, default 100, None
        Post-edge window, eV relative to e0: a polynomial of degree
        ``nnorm`` in energy is fitted to ``mu`` over
        ``e0 + norm1 <= E <= e0 + norm2``; ``norm2=None`` extends it to the
        last energy, as does a ``norm2`` beyond it.
    nnorm : int, default 2
        Degree of the post-edge polynomial, 0..3.
    smooth_ev : float, default 0.5
        Gaussian smoothing (sigma, eV) for :func:`find_e0` when ``e0`` is
        None.

    Returns
    -------
    EdgeNormalization
        ``edge_step = post(e0) - pre(e0)``; ``norm = (mu - pre) / step``;
        ``flat`` = ``norm`` for ``E < e0`` and
        ``norm - ((post - pre) / step - 1)`` for ``E >= e0``.

    Raises
    ------
    AnalysisInputError
        Non-finite ``energy``/``mu``/``e0``; energy not strictly increasing;
        shape mismatch; e0 outside the energy range; fewer than 3 points in
        the pre-edge or post-edge window after clamping (fewer than
        ``nnorm + 1`` in the post-edge window; the message names the window,
        its point count, the e0 used and what to change); edge step
        non-finite or not above rounding error
        (``1e-10 * max |mu|`` of the spectrum); ``nnorm`` not in 0..3;
        reversed windows.

    Notes
    -----
    Windows. Both are inclusive at both ends and are clamped to the data
    (as larch's ``pre_edge`` does), separately for each spectrum:

    * the pre-edge window starts at the first energy when ``e0 + pre1`` is
      below it; if it then holds fewer than 3 points (a XANES-only scan
      starting near ``e0 + pre2``), its upper end moves up to
      ``e0 - PRE_EDGE_MIN_GAP`` = e0 - 15 eV (never closer to e0, never
      down);
    * the post-edge window ends at the last energy when ``e0 + norm2`` is
      beyond it (``norm2=None`` always does); ``norm1`` is never moved, so a
      window starting beyond the data is refused;
    * a window holding fewer than ``MIN_WINDOW_POINTS`` = 3 points (the
      post-edge also ``nnorm + 1``) is refused.

    Moving ``pre1`` or ``norm2`` to the data selects the same points, so the
    fit is the same; moving ``pre2`` adds points. Which settings moved is in
    ``params["clamped"]`` and ``params["clamp_warnings"]``; a window that
    needed no clamping gives bit-for-bit the result of the unclamped rule.

    Fits. Each column has its own
    windows (they move with its e0), so the fits are batched weighted least
    squares: window masks are 0/1 weights, the normal equations are built
    from weighted power moments (:func:`numpy.einsum`, no per-spectrum
    loop) in a per-column centred and scaled energy
    ``x = (E - c) / s`` (``c`` the mean energy of the window, ``s`` its
    largest ``|E - c|``) and solved with one batched
    :func:`numpy.linalg.solve`. One spectrum goes through the same code as
    ``(E, 1)``.
    """
    e = _check_energy(energy)
    m = _check_mu(mu, e.size)
    nnorm = _check_nnorm(nnorm)
    pre1, pre2, norm1, norm2 = _check_ranges(pre1, pre2, norm1, norm2)
    smooth_ev = _check_smooth(smooth_ev)

    m2 = m.reshape(e.size, -1)
    e0c = _e0_columns(e, m, m2, e0, smooth_ev)

    win = _edge_windows(e, e0c, pre1, pre2, norm1, norm2, nnorm)

    c_pre, ctr_pre, sc_pre, pre_edge = _window_fit(e, m2, win.w_pre, 1)
    c_post, ctr_post, sc_post, post_edge = _window_fit(e, m2, win.w_post, nnorm)

    pre_at_e0 = _poly_eval(c_pre, ctr_pre, sc_pre, e0c)
    post_at_e0 = _poly_eval(c_post, ctr_post, sc_post, e0c)
    step = post_at_e0 - pre_at_e0
    _check_edge_step(step, m2, e0c, pre1, pre2, norm1, norm2)

    norm = (m2 - pre_edge) / step
    above = e[:, None] >= e0c[None, :]
    flat = np.where(above, norm - ((post_edge - pre_edge) / step - 1.0), norm)

    shape = m.shape
    scalar_shape = m.shape[1:]
    pre_coeffs = _to_e0_basis(c_pre, ctr_pre, sc_pre, e0c)
    post_coeffs = _to_e0_basis(c_post, ctr_post, sc_post, e0c)

    return EdgeNormalization(
        e0=e0c.reshape(scalar_shape),
        edge_step=step.reshape(scalar_shape),
        pre_edge=pre_edge.reshape(shape),
        post_edge=post_edge.reshape(shape),
        norm=norm.reshape(shape),
        flat=flat.reshape(shape),
        pre_coeffs=pre_coeffs.reshape((2,) + scalar_shape),
        post_coeffs=post_coeffs.reshape((nnorm + 1,) + scalar_shape),
        params={
            "pre1": pre1,
            "pre2": pre2,
            "norm1": norm1,
            "norm2": norm2,
            "nnorm": nnorm,
            "smooth_ev": smooth_ev,
            "e0_given": e0 is not None,
            "min_window_points": MIN_WINDOW_POINTS,
            **_window_params(win, e0c, scalar_shape, pre1, pre2, norm2),
        },
    )


# ---------------------------------------------------------------------------
# edge-step stability
# ---------------------------------------------------------------------------


def edge_step_stability(
    energy,
    mu,
    e0,
    pre1: float = -150.0,
    pre2: float = -30.0,
    norm1: float = 100.0,
    norm2: float | None = None,
    nnorm: int = 2,
) -> dict:
    """How much the edge step depends on the choice of post-edge fit.

    The edge step :math:`\\Delta\\mu = \\mathrm{post}(E_0) - \\mathrm{pre}(E_0)`
    is recomputed, with the same pre-edge line, for every post-edge
    polynomial degree in ``{nnorm - 1, nnorm, nnorm + 1}`` (clipped to 0..3)
    crossed with three post-edge windows (eV relative to ``e0``)::

        [norm1, norm2]                       the configured window
        [norm1, norm1 + 2/3 * span]          its first two thirds
        [norm1 + 1/3 * span, norm2]          its last two thirds

    with ``span = norm2 - norm1`` (``norm2=None``: the last energy minus
    ``e0``). A clean spectrum gives nearly the same step for all of them; a
    post-edge region that is not a smooth curve (a glitch, a jump between
    sub-scans, a second edge) makes the step depend on the window.

    Parameters
    ----------
    energy : array_like, shape (E,)
        Photon energy, eV, finite and strictly increasing.
    mu : array_like, shape (E,)
        One absorption spectrum (any units).
    e0 : float
        Edge energy, eV, inside the energy range (e.g. the ``e0`` of
        :func:`normalize_edge`).
    pre1, pre2 : float, default -150, -30
        Pre-edge window, eV relative to ``e0`` (inclusive); a straight line.
    norm1, norm2 : float, default 100, None
        Configured post-edge window, eV relative to ``e0`` (inclusive);
        ``None`` = up to the last energy.
    nnorm : int, default 2
        Configured post-edge polynomial degree, 0..3.

    Returns
    -------
    dict
        ``edge_step`` : float
            The step of the configured fit (degree ``nnorm`` over
            ``[norm1, norm2]``), in units of ``mu``; identical to
            :func:`normalize_edge`'s ``edge_step`` with the same settings.
        ``steps`` : ndarray, shape (m,)
            The step of every alternative that was fitted (units of
            ``mu``), degree-major (increasing degree), windows in the order
            above; ``m <= 9``, the configured fit included.
        ``relative_change`` : float
            ``(max(steps) - min(steps)) / |edge_step|``, dimensionless
            (``inf`` if ``edge_step`` is 0).
        ``alternatives`` : list of (int, float, float)
            ``(degree, lo, hi)`` for each entry of ``steps``, ``lo``/``hi``
            in eV relative to ``e0``.

    Raises
    ------
    AnalysisInputError
        Invalid input as for :func:`normalize_edge` (non-finite values,
        energy not strictly increasing, ``mu`` not 1-D of length E, ``e0``
        outside the data, reversed windows, ``nnorm`` not in 0..3), or
        windows refused by :func:`normalize_edge` (too few points after
        clamping). The sign of the step is not checked.

    Notes
    -----
    The pre-edge and the configured post-edge windows are those of
    :func:`normalize_edge`, clamped to the data the same way; ``span`` uses
    the clamped ``norm2``. An alternative window holding fewer than 5
    measured points is skipped, and so is a degree the configured window
    cannot determine (fewer than ``degree + 1`` points).
    Cost: one pass over the data for the weighted power moments of the
    three windows (up to degree 2 * (nnorm + 1)), then one small batched
    solve per degree; no per-alternative pass over the spectrum.
    """
    e = _check_energy(energy)
    m = _check_mu(mu, e.size)
    if m.ndim != 1:
        raise AnalysisInputError(f"mu must be one spectrum of shape (E,), got shape {m.shape}")
    nnorm = _check_nnorm(nnorm)
    pre1, pre2, norm1, norm2 = _check_ranges(pre1, pre2, norm1, norm2)
    m2 = m[:, None]
    e0c = _e0_columns(e, m, m2, _check_float("e0", e0), 0.0)  # validates; e0 is given

    e0f = float(e0c[0])
    # the windows of normalize_edge (clamped to the data, checked the same way)
    win = _edge_windows(e, e0c, pre1, pre2, norm1, norm2, nnorm)
    c_pre, ctr_pre, sc_pre, _ = _window_fit(e, m2, win.w_pre, 1)
    pre_at_e0 = float(_poly_eval(c_pre, ctr_pre, sc_pre, e0c)[0])

    # post-edge windows as absolute energies, the configured one (clamped) first
    hi_abs = float(win.post_hi[0])
    span = (hi_abs - e0f) - norm1
    lo = np.array([e0f + norm1, e0f + norm1, e0f + norm1 + span / 3.0])
    hi = np.array([hi_abs, e0f + norm1 + 2.0 * span / 3.0, hi_abs])
    masks = (e[:, None] >= lo[None, :]) & (e[:, None] <= hi[None, :])  # (E, 3)
    counts = masks.sum(axis=0)
    usable = counts >= _MIN_ALTERNATIVE_POINTS
    usable[0] = True  # the configured window holds enough points (checked above)
    # skipped windows get a harmless stand-in so the batched solve stays regular
    weights = np.where(usable[None, :], masks, masks[:, :1]).astype(float)
    # a degree is fitted only if the configured window determines it (at least
    # degree + 1 points; always true for nnorm); the alternatives used then
    # hold at least _MIN_ALTERNATIVE_POINTS = 5 >= degree + 1 points.
    degrees = sorted({min(max(nnorm + d, 0), 3) for d in (-1, 0, 1)} & set(range(int(counts[0]))))
    _, centre, scale, moments, rhs = _window_moments(
        e, np.repeat(m2, 3, axis=1), weights, degrees[-1]
    )
    x0 = (e0f - centre) / scale  # e0 in each window's scaled variable

    steps, alternatives = [], []
    nominal = np.nan
    for deg in degrees:  # at most 3 degrees; each a (3, deg+1, deg+1) batched solve
        coef = _solve_degree(moments[: 2 * deg + 1], rhs, deg)
        post_at_e0 = np.einsum("wp,wp->w", coef, x0[:, None] ** np.arange(deg + 1))
        step = post_at_e0 - pre_at_e0
        for k in np.flatnonzero(usable):
            steps.append(float(step[k]))
            alternatives.append((deg, float(lo[k] - e0f), float(hi[k] - e0f)))
        if deg == nnorm:
            nominal = float(step[0])
    steps_a = np.asarray(steps)
    spread = float(steps_a.max() - steps_a.min())
    relative_change = spread / abs(nominal) if nominal != 0 else float("inf")
    return {
        "edge_step": nominal,
        "steps": steps_a,
        "relative_change": relative_change,
        "alternatives": alternatives,
    }


# ---------------------------------------------------------------------------
# dask image stacks
# ---------------------------------------------------------------------------


def _stack_block(mu_block: np.ndarray, e0_block, energy: np.ndarray, params: dict) -> np.ndarray:
    """Normalize one (E, m) block; pack e0, step, norm, flat into (2 + 2E, m)."""
    res = normalize_edge(energy, mu_block, e0=None if e0_block is None else e0_block[0], **params)
    return np.concatenate(
        [res.e0[None, :], res.edge_step[None, :], res.norm, res.flat], axis=0
    )


def _stack_block_found(mu_block: np.ndarray, energy: np.ndarray, params: dict) -> np.ndarray:
    """As :func:`_stack_block` with e0 found per column."""
    return _stack_block(mu_block, None, energy, params)


def normalize_stack(
    energy,
    mu,
    e0=None,
    pre1: float = -150.0,
    pre2: float = -30.0,
    norm1: float = 100.0,
    norm2: float | None = None,
    nnorm: int = 2,
    smooth_ev: float = 0.5,
    **unknown,
) -> dict:
    """Normalize a stack of spectra (e.g. every pixel of an XANES image) with dask.

    Parameters
    ----------
    energy : array_like, shape (E,)
        Photon energy, eV, strictly increasing.
    mu : dask.array.Array or array_like, shape (E, npix)
        One spectrum per column. It should be chunked only along pixels
        (each chunk holding the whole energy axis); if the energy axis is
        split it is rechunked to a single chunk.
    e0 : float or array_like of shape (npix,), optional
        Edge energy per pixel (eV); None finds it per pixel.
    pre1, pre2, norm1, norm2, nnorm, smooth_ev
        As for :func:`normalize_edge` (same defaults).
    **unknown
        Any other keyword is refused with :class:`AnalysisInputError` (so a
        misspelt setting from a config fails clearly rather than as a
        ``TypeError``).

    Returns
    -------
    dict of dask.array.Array
        ``e0`` and ``edge_step`` of shape (npix,), ``norm`` and ``flat`` of
        shape (E, npix), chunked like ``mu`` along pixels. They are lazy and
        come from one blockwise computation: compute them together
        (``dask.compute(*out.values())``) to run it once.

    Raises
    ------
    AnalysisInputError
        Eagerly for a bad energy grid, wrong shape, unknown parameters, or
        invalid settings (``nnorm``, ranges); per-pixel problems (too few
        window points, non-positive step, non-finite mu) are raised when the
        affected block is computed.

    Notes
    -----
    Windows are clamped to the data per pixel exactly as in
    :func:`normalize_edge` (each pixel's e0 moves its windows); which
    windows were clamped is not returned here (call :func:`normalize_edge`
    on a pixel's spectrum to see its ``params``).
    Applies :func:`normalize_edge` to each block with
    :func:`dask.array.map_blocks`; each block returns a packed
    ``(2 + 2E, m)`` array (e0, step, norm rows, flat rows) that is then
    sliced, so one block is fitted once whatever is computed from it.
    """
    import dask.array as da

    if unknown:
        raise AnalysisInputError(f"unknown normalization parameter(s): {sorted(unknown)}")
    e = _check_energy(energy)
    # validate settings eagerly, before building the graph
    pre1, pre2, norm1, norm2 = _check_ranges(pre1, pre2, norm1, norm2)
    params = {
        "pre1": pre1, "pre2": pre2, "norm1": norm1, "norm2": norm2,
        "nnorm": _check_nnorm(nnorm), "smooth_ev": _check_smooth(smooth_ev),
    }

    arr = mu if isinstance(mu, da.Array) else da.asarray(np.asarray(mu, dtype=float))
    if arr.ndim != 2 or arr.shape[0] != e.size:
        raise AnalysisInputError(
            f"mu must have shape (E, npix) with E = len(energy) = {e.size}, got {arr.shape}"
        )
    if len(arr.chunks[0]) != 1:
        arr = arr.rechunk({0: -1})
    arr = arr.astype(float)
    n_e = e.size
    out_chunks = ((2 + 2 * n_e,), arr.chunks[1])

    if e0 is None:
        packed = da.map_blocks(
            _stack_block_found, arr, energy=e, params=params,
            chunks=out_chunks, dtype=float, meta=np.empty((0, 0)),
        )
    else:
        e0a = e0 if isinstance(e0, da.Array) else np.asarray(e0, dtype=float)
        if e0a.ndim == 0:
            e0a = np.full(arr.shape[1], float(e0a))
        if tuple(e0a.shape) != (arr.shape[1],):
            raise AnalysisInputError(
                f"e0 must be a scalar or have shape (npix,) = ({arr.shape[1]},), got {tuple(e0a.shape)}"
            )
        e0d = da.asarray(e0a).astype(float).reshape(1, arr.shape[1]).rechunk(((1,), arr.chunks[1]))
        packed = da.map_blocks(
            _stack_block, arr, e0d, energy=e, params=params,
            chunks=out_chunks, dtype=float, meta=np.empty((0, 0)),
        )
    return {
        "e0": packed[0],
        "edge_step": packed[1],
        "norm": packed[2 : 2 + n_e],
        "flat": packed[2 + n_e :],
    }
