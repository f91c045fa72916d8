"""Per-pixel edge normalization of a stack block in one pass (numba); the NumPy reference is
:func:`xafsflow.xas.normalize.normalize_edge` (with :func:`~xafsflow.xas.normalize.find_e0`).

:func:`normalize_pixels` does for every column of an (E, m) block what
``normalize_edge`` does for it, with the same definitions and the same
refusals, but reads each pixel's spectrum once and writes its outputs once:

* E0 (optional): the derivative of the smoothed, uniformly resampled spectrum
  is a fixed linear map of the measured spectrum (the operator of
  :func:`xafsflow.imaging.pixels._e0_operator`, stored here row by row as
  the span of its nonzero entries: about 1 400 of its 30 000 entries for the
  benchmark's 100-point micro-XANES grid), applied to four pixels at once
  (four independent sums per row), then the first maximum over the searched
  rows and the parabolic refinement, as ``find_e0``;
* the windows (``normalize_edge``'s rule: inclusive, clamped to the data,
  pre2 extended when a window at the start of the scan holds too few points),
  which are contiguous index ranges of the sorted energies;
* the pre-edge line and the post-edge polynomial: normal equations of the
  same centred and scaled variable ``x = (E - c) / s`` accumulated over the
  window's points only, solved by Gaussian elimination with partial pivoting
  (at most 4 x 4);
* the edge step, its refusal (not finite, or not above ``1e-10 max |mu|``),
  ``norm`` and ``flat``, written in the output's dtype (float32 cubes need no
  float64 copy).

A pixel ``normalize_edge`` would refuse (non-finite mu or e0, e0 outside the
energies, a window with too few points, no positive edge step) gets NaN in
every output instead. Results equal the NumPy reference up to rounding
(summation order); ``tests/test_pixel_kernels.py`` compares them to 1e-10.

Pixels are processed one at a time, each spectrum copied to a contiguous
float64 buffer; consecutive pixels share cache lines of the (E, m) arrays.
The kernel releases the GIL (Dask threads run chunks at once) and is
single-threaded itself.
"""

from __future__ import annotations

import numpy as np
from numba import njit

@njit(cache=True, nogil=True)
def _solve_inplace(a, b, n):
    """Solve a[:n, :n] x = b[:n] in place (x in b) by Gaussian elimination with partial pivoting."""
    for col in range(n):
        piv = col
        big = abs(a[col, col])
        for r in range(col + 1, n):
            if abs(a[r, col]) > big:
                big = abs(a[r, col])
                piv = r
        if piv != col:
            for c in range(n):
                t = a[col, c]
                a[col, c] = a[piv, c]
                a[piv, c] = t
            t = b[col]
            b[col] = b[piv]
            b[piv] = t
        for r in range(col + 1, n):
            f = a[r, col] / a[col, col]
            for c in range(col, n):
                a[r, c] -= f * a[col, c]
            b[r] -= f * b[col]
    for r in range(n - 1, -1, -1):
        s = b[r]
        for c in range(r + 1, n):
            s -= a[r, c] * b[c]
        b[r] = s / a[r, r]


@njit(cache=True, nogil=True)
def _fit(energy, spec, lo, hi, degree, coef, normal, moments):
    """Least-squares polynomial of ``degree`` to spec[lo:hi] in x = (E - c) / s; coefficients
    (increasing powers) into coef[:degree + 1]; returns (c, s)."""
    n = hi - lo
    acc = 0.0
    for k in range(lo, hi):
        acc += energy[k]
    centre = acc / n
    scale = max(abs(energy[lo] - centre), abs(energy[hi - 1] - centre))
    n_m = 2 * degree + 1
    for p in range(n_m):
        moments[p] = 0.0
    for p in range(degree + 1):
        coef[p] = 0.0
    for k in range(lo, hi):
        x = (energy[k] - centre) / scale
        v = spec[k]
        xp = 1.0
        for p in range(degree + 1):
            moments[p] += xp
            coef[p] += xp * v
            xp *= x
        for p in range(degree + 1, n_m):
            moments[p] += xp
            xp *= x
    for p in range(degree + 1):
        for q in range(degree + 1):
            normal[p, q] = moments[p + q]
    _solve_inplace(normal, coef, degree + 1)
    return centre, scale


@njit(cache=True, nogil=True)
def _first_at_or_above(energy, value):
    """Index of the first energy >= value (len(energy) if none)."""
    lo, hi = 0, energy.size
    while lo < hi:
        mid = (lo + hi) // 2
        if energy[mid] >= value:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True)
def _first_above(energy, value):
    """Index of the first energy > value (len(energy) if none)."""
    lo, hi = 0, energy.size
    while lo < hi:
        mid = (lo + hi) // 2
        if energy[mid] > value:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True)
def _e0_four(mu, j0, op_ptr, op_first, op_val, op_grid, h, quad, e0_four):
    """E0 of pixels j0 .. j0 + 3 of ``mu`` (E, m) into e0_four (4,), as ``find_e0`` (NaN where no maximum is
    found, e.g. a non-finite spectrum; columns beyond m are zeros). Four independent sums per operator row
    keep the multiply-adds in flight; ``quad`` (E, 4) is scratch."""
    n_e, m = mu.shape
    n_rows = op_grid.size
    tn = min(4, m - j0)
    for k in range(n_e):
        for t in range(4):
            quad[k, t] = np.float64(mu[k, j0 + t]) if t < tn else 0.0
    best0 = best1 = best2 = best3 = -np.inf
    row0 = row1 = row2 = row3 = -1
    pp0 = pp1 = pp2 = pp3 = 0.0  # rows r - 2 and r - 1
    p0 = p1 = p2 = p3 = 0.0
    y00 = y01 = y02 = y03 = 0.0  # neighbours of the maximum (below, at, above)
    y10 = y11 = y12 = y13 = 0.0
    y20 = y21 = y22 = y23 = 0.0
    for r in range(n_rows):
        a0 = a1 = a2 = a3 = 0.0
        c = op_first[r] - op_ptr[r]
        for q in range(op_ptr[r], op_ptr[r + 1]):
            w = op_val[q]
            a0 += w * quad[c + q, 0]
            a1 += w * quad[c + q, 1]
            a2 += w * quad[c + q, 2]
            a3 += w * quad[c + q, 3]
        if r >= 2:  # row r - 1 is a candidate (rows 1 .. R - 2); the first maximum wins
            if p0 > best0:
                best0, row0, y00, y10, y20 = p0, r - 1, pp0, p0, a0
            if p1 > best1:
                best1, row1, y01, y11, y21 = p1, r - 1, pp1, p1, a1
            if p2 > best2:
                best2, row2, y02, y12, y22 = p2, r - 1, pp2, p2, a2
            if p3 > best3:
                best3, row3, y03, y13, y23 = p3, r - 1, pp3, p3, a3
        pp0, pp1, pp2, pp3 = p0, p1, p2, p3
        p0, p1, p2, p3 = a0, a1, a2, a3
    e0_four[0] = _parabola(op_grid, h, row0, y00, y10, y20)
    e0_four[1] = _parabola(op_grid, h, row1, y01, y11, y21)
    e0_four[2] = _parabola(op_grid, h, row2, y02, y12, y22)
    e0_four[3] = _parabola(op_grid, h, row3, y03, y13, y23)


@njit(cache=True, nogil=True)
def _parabola(op_grid, h, row, y0, y1, y2):
    """find_e0's refinement: vertex of the parabola through the maximum and its neighbours (half a step at most)."""
    if row < 0:
        return np.nan
    curv = y0 - 2.0 * y1 + y2
    shift = 0.5 * (y0 - y2) / curv if curv < 0 else 0.0
    shift = min(max(shift, -0.5), 0.5)
    return op_grid[row] + shift * h


@njit(cache=True, nogil=True)
def normalize_pixels(energy, mu, e0_given, find_e0, op_ptr, op_first, op_val, op_grid, h,
                     pre1, pre2, norm1, norm2, nnorm, min_points, pre_min_gap, step_floor,
                     e0_out, step_out, norm_out, flat_out):
    """Normalize every column of ``mu`` (E, m) as ``normalize_edge`` does; NaN where it would refuse.

    Parameters
    ----------
    energy : (E,) float64, eV, strictly increasing.
    mu : (E, m) float32 or float64.
    e0_given : (m,) float64, eV; used when ``find_e0`` is False.
    find_e0 : bool; find E0 with the operator (rows of ``find_e0``'s derivative on the searched grid).
    op_ptr, op_first, op_val : the operator (R, E) by row, each a contiguous span of energies: row r is
        ``op_val[op_ptr[r]:op_ptr[r + 1]]`` applied to the energies from index ``op_first[r]`` on; its rows
        are uniform-grid points ``op_grid`` (R,), eV, the first and last only neighbours of the searched rows.
    h : uniform grid step, eV.
    pre1, pre2, norm1 : windows, eV relative to e0; norm2 : eV, or NaN for "to the last energy".
    nnorm : post-edge polynomial degree (0..3).
    min_points, pre_min_gap, step_floor : ``MIN_WINDOW_POINTS``, ``PRE_EDGE_MIN_GAP`` (eV) and
        ``_STEP_ROUNDING_FLOOR`` of :mod:`xafsflow.xas.normalize`.
    e0_out, step_out : (m,) float64 outputs (eV; units of mu).
    norm_out, flat_out : (E, m) outputs (float32 or float64).
    """
    n_e, m = mu.shape
    quad = np.empty((n_e, 4))
    e0_four = np.empty(4)
    spec = np.empty(n_e)
    c_pre = np.empty(2)
    c_post = np.zeros(4)
    normal = np.empty((4, 4))
    moments = np.empty(7)
    need_post = max(min_points, nnorm + 1)
    e_first, e_last = energy[0], energy[n_e - 1]
    for j in range(m):
        peak = 0.0
        nonfinite = 0.0  # stays 0 unless a value is inf or NaN
        for k in range(n_e):
            v = np.float64(mu[k, j])
            spec[k] = v
            nonfinite += v * 0.0
            peak = max(peak, abs(v))
        ok = nonfinite == 0.0
        e0 = np.nan
        if find_e0:
            if j % 4 == 0:
                _e0_four(mu, j, op_ptr, op_first, op_val, op_grid, h, quad, e0_four)
            e0 = e0_four[j % 4]
            ok = ok and np.isfinite(e0)
        elif ok:
            e0 = e0_given[j]
            ok = np.isfinite(e0) and e_first <= e0 <= e_last
        step = np.nan
        if ok:  # windows (normalize_edge's rule), fits, edge step
            lo_cfg = e0 + pre1
            hi = e0 + pre2
            at_start = lo_cfg <= e_first
            lo = e_first if at_start else lo_cfg
            a = _first_at_or_above(energy, lo)
            b = _first_above(energy, hi)
            if at_start and b - a < min_points and e0 - pre_min_gap > hi:
                b = _first_above(energy, e0 - pre_min_gap)
            ok = b - a >= min_points
        if ok:
            c0, s0 = _fit(energy, spec, a, b, 1, c_pre, normal, moments)
            hi = e_last if np.isnan(norm2) else min(e0 + norm2, e_last)
            a = _first_at_or_above(energy, e0 + norm1)
            b = _first_above(energy, hi)
            ok = b - a >= need_post
        if ok:
            c1, s1 = _fit(energy, spec, a, b, nnorm, c_post, normal, moments)
            pre0 = c_pre[0] + c_pre[1] * ((e0 - c0) / s0)
            x = (e0 - c1) / s1
            post0 = 0.0
            xp = 1.0
            for p in range(nnorm + 1):
                post0 += c_post[p] * xp
                xp *= x
            step = post0 - pre0
            ok = np.isfinite(step) and step > step_floor * peak
        if not ok:
            e0_out[j] = np.nan
            step_out[j] = np.nan
            for k in range(n_e):
                norm_out[k, j] = np.nan
                flat_out[k, j] = np.nan
            continue
        e0_out[j] = e0
        step_out[j] = step
        a0, a1, is0, is1, ist = c_pre[0], c_pre[1], 1.0 / s0, 1.0 / s1, 1.0 / step
        b0 = c_post[0]
        b1 = c_post[1] if nnorm >= 1 else 0.0
        b2 = c_post[2] if nnorm >= 2 else 0.0
        b3 = c_post[3] if nnorm >= 3 else 0.0
        for k in range(n_e):
            ek = energy[k]
            pre = a0 + a1 * ((ek - c0) * is0)
            x = (ek - c1) * is1
            post = ((b3 * x + b2) * x + b1) * x + b0  # Horner, zero-padded to degree 3
            nv = (spec[k] - pre) * ist
            norm_out[k, j] = nv
            flat_out[k, j] = nv - ((post - pre) * ist - 1.0) if ek >= e0 else nv
