"""Per-pixel edge normalization of a stack block in one pass (numba); the NumPy reference is
:func:`xafsflow.xas.normalize.normalize_edge` (with :func:`~xafsflow.xas.normalize.find_e0`).

:func:`normalize_pixels` does for every column of an (E, m) block what
``normalize_edge`` does for it, with the same definitions and the same
refusals, but reads each pixel's spectrum once and writes its outputs once:

* E0 (optional): the derivative of the smoothed, uniformly resampled spectrum
  is a fixed linear map of the measured spectrum (the operator of
  :func:`xafsflow.imaging.pixels._e0_operator`, stored here row by row as
  the span of its nonzero entries: about 1 400 of its 30 000 entries for the
  benchmark's 100-point micro-XANES grid), applied to a tile of pixels at
  once (per pixel the sum runs over the row's entries in order), then the
  first maximum over the searched rows and the parabolic refinement, as
  ``find_e0``;
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

Pixels are processed in tiles of ``TILE`` (256): the E0 operator, the
finiteness scan and the norm/flat rows loop over the tile's pixels innermost,
on contiguous row views of the (E, m) arrays (vectorized by LLVM); the window
fits run pixel by pixel, reading only the windows' points, with each window's
centre, scale and moments computed once per block (cached by first index).
The result is bit for bit that of a pixel-by-pixel loop. The kernel releases
the GIL (Dask threads run chunks at once) and is single-threaded itself.
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
def _window_moments(energy, lo, hi, degree, moments):
    """The pixel-independent part of a least-squares polynomial of ``degree`` over energy[lo:hi]: the centre
    c and scale s of x = (E - c) / s (returned) and the moments sum x^p (p <= 2 degree) into ``moments``."""
    n = hi - lo
    acc = 0.0
    for k in range(lo, hi):
        acc += energy[k]
    centre = acc / n
    scale = max(abs(energy[lo] - centre), abs(energy[hi - 1] - centre))
    n_m = 2 * degree + 1
    for p in range(n_m):
        moments[p] = 0.0
    for k in range(lo, hi):
        x = (energy[k] - centre) / scale
        xp = 1.0
        for p in range(n_m):
            moments[p] += xp
            xp *= x
    return centre, scale


@njit(cache=True, nogil=True)
def _fit_column(energy, mu, j, lo, hi, degree, centre, scale, moments, coef, normal):
    """Least-squares polynomial to mu[lo:hi, j] in x = (E - centre) / scale, with the window's moments from
    :func:`_window_moments`: coefficients (increasing powers of x) into coef[:degree + 1]."""
    for p in range(degree + 1):
        coef[p] = 0.0
    for k in range(lo, hi):
        x = (energy[k] - centre) / scale
        v = np.float64(mu[k, j])
        xp = 1.0
        for p in range(degree + 1):
            coef[p] += xp * v
            xp *= x
    for p in range(degree + 1):
        for q in range(degree + 1):
            normal[p, q] = moments[p + q]
    _solve_inplace(normal, coef, degree + 1)


@njit(cache=True, nogil=True)
def _cached_window(energy, lo, hi, degree, ends, centres, scales, moments):
    """Row ``lo`` of a cache of windows by first index: (centre, scale) of energy[lo:hi], its moments in
    moments[lo]; computed when the cached window starting at ``lo`` does not also end at ``hi``."""
    if ends[lo] != hi:
        centres[lo], scales[lo] = _window_moments(energy, lo, hi, degree, moments[lo])
        ends[lo] = hi
    return centres[lo], scales[lo]


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
def _parabola(op_grid, h, row, y0, y1, y2):
    """find_e0's refinement: vertex of the parabola through the maximum and its neighbours (half a step at most)."""
    if row < 0:
        return np.nan
    curv = y0 - 2.0 * y1 + y2
    shift = 0.5 * (y0 - y2) / curv if curv < 0 else 0.0
    shift = min(max(shift, -0.5), 0.5)
    return op_grid[row] + shift * h


TILE = 256  # pixels processed together: the per-pixel scratch of a tile stays in L1/L2 cache


@njit(cache=True, nogil=True)
def _e0_tile(mu, j0, tn, op_ptr, op_first, op_val, op_grid, h, acc, prev, prev2, best, y0, y2, row, e0):
    """E0 of pixels j0 .. j0 + tn - 1 of ``mu`` (E, m) into e0[:tn], as ``find_e0`` (NaN where no maximum is
    found, e.g. a non-finite spectrum). Each operator row is applied to the tile's pixels at once (pixels
    innermost: contiguous reads of one energy's row, vectorized multiply-adds); per pixel the sum runs over
    the row's entries in order, as in a pixel-by-pixel loop. acc, prev, prev2, best, y0, y2 (tn,) float64 and
    row (tn,) int64 are scratch."""
    n_rows = op_grid.size
    for t in range(tn):
        best[t] = -np.inf
        row[t] = -1
        prev[t] = 0.0
        prev2[t] = 0.0
    for r in range(n_rows):
        c = op_first[r] - op_ptr[r]
        q0, q1 = op_ptr[r], op_ptr[r + 1]
        if q1 == q0:
            for t in range(tn):
                acc[t] = 0.0
        else:  # the first term assigns (0.0 + w x is w x), the others add, in the row's order
            w = op_val[q0]
            mrow = mu[c + q0, j0:j0 + tn]  # a view indexed by the loop counter: no wraparound, so it vectorizes
            for t in range(tn):
                acc[t] = w * np.float64(mrow[t])
            for q in range(q0 + 1, q1):
                w = op_val[q]
                mrow = mu[c + q, j0:j0 + tn]
                for t in range(tn):
                    acc[t] += w * np.float64(mrow[t])
        if r >= 2:  # row r - 1 is a candidate (rows 1 .. R - 2); the first maximum wins
            for t in range(tn):
                if prev[t] > best[t]:
                    best[t] = prev[t]
                    row[t] = r - 1
                    y0[t] = prev2[t]
                    y2[t] = acc[t]
        prev2, prev, acc = prev, acc, prev2  # rotate the three rows' buffers
    for t in range(tn):
        e0[t] = _parabola(op_grid, h, row[t], y0[t], best[t], y2[t])


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
    tile = min(TILE, max(m, 1))
    peak = np.empty(tile)
    nonfinite = np.empty(tile)
    e0t = np.empty(tile)
    acc = np.empty(tile)
    prev = np.empty(tile)
    prev2 = np.empty(tile)
    best = np.empty(tile)
    y0 = np.empty(tile)
    y2 = np.empty(tile)
    row = np.empty(tile, np.int64)
    # per pixel of the tile: pre-edge line a0 + a1 (E - c0) / s0, post-edge polynomial in (E - c1) / s1, 1 / step
    a0 = np.empty(tile)
    a1 = np.empty(tile)
    c0 = np.empty(tile)
    is0 = np.empty(tile)
    c1 = np.empty(tile)
    is1 = np.empty(tile)
    b0 = np.empty(tile)
    b1 = np.empty(tile)
    b2 = np.empty(tile)
    b3 = np.empty(tile)
    ist = np.empty(tile)
    c_pre = np.empty(2)
    c_post = np.zeros(4)
    normal = np.empty((4, 4))
    # windows' centres, scales and moments by first index (pixels of a block share a few windows)
    end_pre = np.full(n_e + 1, -1, np.int64)
    end_post = np.full(n_e + 1, -1, np.int64)
    ctr_pre = np.empty(n_e + 1)
    ctr_post = np.empty(n_e + 1)
    sc_pre = np.empty(n_e + 1)
    sc_post = np.empty(n_e + 1)
    mom_pre = np.empty((n_e + 1, 7))
    mom_post = np.empty((n_e + 1, 7))
    need_post = max(min_points, nnorm + 1)
    e_first, e_last = energy[0], energy[n_e - 1]
    for j0 in range(0, m, tile):
        tn = min(tile, m - j0)
        for t in range(tn):
            peak[t] = 0.0
            nonfinite[t] = 0.0  # stays 0 unless a value is inf or NaN
        for k in range(n_e):  # pixels innermost: one contiguous row of the block per energy
            mrow = mu[k, j0:j0 + tn]
            for t in range(tn):
                v = np.float64(mrow[t])
                nonfinite[t] += v * 0.0
                peak[t] = max(peak[t], abs(v))
        if find_e0:
            _e0_tile(mu, j0, tn, op_ptr, op_first, op_val, op_grid, h, acc, prev, prev2, best, y0, y2, row, e0t)
        for t in range(tn):  # windows, fits and edge step, one pixel at a time (only window points are read)
            j = j0 + t
            ok = nonfinite[t] == 0.0
            e0 = np.nan
            if find_e0:
                e0 = e0t[t]
                ok = ok and np.isfinite(e0)
            elif ok:
                e0 = e0_given[j]
                ok = np.isfinite(e0) and e_first <= e0 <= e_last
            step = np.nan
            if ok:  # windows (normalize_edge's rule)
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
                c0[t], s0 = _cached_window(energy, a, b, 1, end_pre, ctr_pre, sc_pre, mom_pre)
                _fit_column(energy, mu, j, a, b, 1, c0[t], s0, mom_pre[a], c_pre, normal)
                hi = e_last if np.isnan(norm2) else min(e0 + norm2, e_last)
                a = _first_at_or_above(energy, e0 + norm1)
                b = _first_above(energy, hi)
                ok = b - a >= need_post
            if ok:
                c1[t], s1 = _cached_window(energy, a, b, nnorm, end_post, ctr_post, sc_post, mom_post)
                _fit_column(energy, mu, j, a, b, nnorm, c1[t], s1, mom_post[a], c_post, normal)
                pre0 = c_pre[0] + c_pre[1] * ((e0 - c0[t]) / s0)
                x = (e0 - c1[t]) / s1
                post0 = 0.0
                xp = 1.0
                for p in range(nnorm + 1):
                    post0 += c_post[p] * xp
                    xp *= x
                step = post0 - pre0
                ok = np.isfinite(step) and step > step_floor * peak[t]
            if ok:
                e0_out[j] = e0
                step_out[j] = step
                e0t[t] = e0
                a0[t], a1[t], is0[t], is1[t], ist[t] = c_pre[0], c_pre[1], 1.0 / s0, 1.0 / s1, 1.0 / step
                b0[t] = c_post[0]
                b1[t] = c_post[1] if nnorm >= 1 else 0.0
                b2[t] = c_post[2] if nnorm >= 2 else 0.0
                b3[t] = c_post[3] if nnorm >= 3 else 0.0
            else:  # a refused pixel: every output NaN (a NaN 1 / step makes norm and flat NaN below)
                e0_out[j] = np.nan
                step_out[j] = np.nan
                e0t[t] = 0.0
                a0[t] = a1[t] = c0[t] = is0[t] = c1[t] = is1[t] = b0[t] = b1[t] = b2[t] = b3[t] = 0.0
                ist[t] = np.nan
        for k in range(n_e):  # norm and flat, pixels innermost (contiguous rows, no branch but the flat select)
            ek = energy[k]
            mrow = mu[k, j0:j0 + tn]
            nrow = norm_out[k, j0:j0 + tn]
            frow = flat_out[k, j0:j0 + tn]
            for t in range(tn):
                pre = a0[t] + a1[t] * ((ek - c0[t]) * is0[t])
                x = (ek - c1[t]) * is1[t]
                post = ((b3[t] * x + b2[t]) * x + b1[t]) * x + b0[t]  # Horner, zero-padded to degree 3
                nv = (np.float64(mrow[t]) - pre) * ist[t]
                nrow[t] = nv
                frow[t] = nv - ((post - pre) * ist[t] - 1.0) if ek >= e0t[t] else nv
