"""Replica-exchange (exchange) Monte Carlo for the spectral models (numba kernel).

L replicas sit on a ladder of noise precisions b_0 = 0 < b_1 < ... < b_{L-1}:
replica l samples p(theta) exp(-N b_l E(theta)) with E = (1/2N) sum (y - f)^2.
Replica 0 draws exact, independent samples from the prior every sweep. The
others make one Metropolis update per parameter per sweep (random walk, on a
log scale for positive parameters with the Jacobian in the ratio), one joint
move of all parameters once burn-in has a covariance for it, and, with
``ChainSettings.linear_moves``, a linear block move and a collapsed move (see
"Conditional-linear moves" below); then adjacent replicas try to exchange
(even pairs on even sweeps, odd on odd).

The model is updated incrementally: moving one Gaussian recomputes it only
where it or its previous position is not negligible (|x - centre| < Z_CUT sd,
Z_CUT = sqrt(2 ln 1e12) = 7.43: beyond that the Gaussian is below 1e-12 of its
peak and taken as zero); the residual and the sum of squares are updated by
the difference. On a uniform energy grid a Gaussian is filled by a
three-exponential recurrence instead of one exponential per point. The xanes
background is cached in parts (step, Lorentzian, Gaussian) so a move of one
background parameter recomputes only the part that parameter enters. Sums of
squares may be vectorized (reassociated); everything else keeps IEEE order.
Every ``refresh`` sweeps everything is recomputed from scratch so rounding
cannot drift.

Weighted likelihood: with per-point weights w_i (``run_chain(..., weights=w)``)
the data are y_i ~ N(f_i, sigma^2 / w_i^2), and every sum of squares above is
the weighted one, sum w_i^2 (y_i - f_i)^2, so E = (1/2N) sum w_i^2 r_i^2 and the
noise precision b = 1/sigma^2 is still the ladder's (sampled / estimated as
without weights). The log evidence then gains sum_i log w_i
(:mod:`xafsflow.bayes.posterior` adds it). Without weights the plain sums run
(the same code as before weights existed: bit-identical chains).

All random numbers come from one ``numpy.random.Generator`` (drawn in blocks of
sweeps in Python and passed to the kernel), so a chain is reproducible from its
seed and can be checkpointed and resumed exactly. :func:`sweep_reference` is a
NumPy implementation of the same block, used to test the kernel.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from xafsflow.bayes.settings import ChainSettings  # noqa: F401 - part of this module's API
from xafsflow.bayes.models import LORENTZ_FWHM, Z_CUT, SpectralModel

SQRT2PI = math.sqrt(2.0 * math.pi)


# ============================================================================ kernel
@njit(cache=True, inline="always")
def _dlogp(code, a, b, new, old):
    """log p(new) - log p(old) without the normalizing constants (they cancel); -inf outside the support."""
    if code == 1:
        return 0.0 if a <= new <= b else -np.inf
    if code == 2:
        return (math.log(old / new)) if a <= new <= b else -np.inf
    if code == 3:
        return -0.5 * ((new - a) * (new - a) - (old - a) * (old - a)) / (b * b)
    if code == 4:
        return ((a - 1.0) * math.log(new / old) - b * (new - old)) if new > 0 else -np.inf
    return 0.0


@njit(cache=True, inline="always")
def _cval(ct, p0, p1, p2, xi):
    if ct == 0:
        d = xi - p1
        return p0 * math.exp(-0.5 * p2 * d * d)
    z = (xi - p1) / p2
    return p0 / (p2 * SQRT2PI) * math.exp(-0.5 * z * z)


@njit(cache=True)
def _fill_pvoigt(p0, p1, p2, x, lo, hi, out, keep):
    """Pseudo-Voigt (area p0, centre p1, Gaussian sd p2, Lorentzian FWHM LORENTZ_FWHM) point by point;
    same formula as :func:`xafsflow.bayes.models.pvoigt`."""
    fg = 2.0 * math.sqrt(2.0 * math.log(2.0)) * p2
    fl = LORENTZ_FWHM
    f = (fg**5 + 2.69269 * fg**4 * fl + 2.42843 * fg**3 * fl**2 + 4.47163 * fg**2 * fl**3
         + 0.07842 * fg * fl**4 + fl**5) ** 0.2
    rho = fl / f
    eta = 1.36603 * rho - 0.47719 * rho**2 + 0.11116 * rho**3
    hw = 0.5 * f
    cl = p0 * eta * hw / math.pi
    cg = p0 * (1.0 - eta) * (2.0 / f) * math.sqrt(math.log(2.0) / math.pi)
    a = 4.0 * math.log(2.0) / (f * f)
    for i in range(lo, hi):
        d = x[i] - p1
        out[i] = keep * out[i] + (cl / (d * d + hw * hw) + cg * math.exp(-a * d * d))


@njit(cache=True, inline="always")
def _window(ct, x, p1, p2):
    if ct == 2:  # pseudo-Voigt: Lorentzian tails reach the whole grid
        return 0, x.size
    sd = 1.0 / math.sqrt(p2) if ct == 0 else p2
    lo = np.searchsorted(x, p1 - Z_CUT * sd)
    hi = np.searchsorted(x, p1 + Z_CUT * sd, side="right")
    return lo, hi


@njit(cache=True)
def _fill_component(ct, p0, p1, p2, x, lo, hi, dx, out, add):
    """out[lo:hi] = component at x[lo:hi] (``add``: out[lo:hi] += component).

    On a uniform grid (dx > 0) the Gaussian is computed by the recurrence
    g_{i+1} = g_i r_i, r_{i+1} = r_i q (three exponentials per window instead of
    one per point; relative error ~1e-14 over a window), run on even and odd
    points separately; otherwise point by point.
    """
    if hi <= lo:
        return
    keep = 1.0 if add else 0.0  # out is always finite, so 0 * out[i] is exactly 0
    if ct == 2:
        _fill_pvoigt(p0, p1, p2, x, lo, hi, out, keep)
        return
    if dx <= 0.0:
        for i in range(lo, hi):
            out[i] = keep * out[i] + _cval(ct, p0, p1, p2, x[i])
        return
    if ct == 0:
        a = 0.5 * p2
        amp = p0
    else:
        a = 0.5 / (p2 * p2)
        amp = p0 / (p2 * SQRT2PI)
    d0 = x[lo] - p1
    g = amp * math.exp(-a * d0 * d0)
    r = math.exp(-a * (2.0 * d0 * dx + dx * dx))
    q = math.exp(-2.0 * a * dx * dx)
    # two interleaved recurrences (even and odd points, ratio r_i r_{i+1} = r_i^2 q, which
    # grows by q^4 every two points) halve the chain of dependent multiplications
    g0, g1 = g, g * r
    r0 = r * r * q
    r1 = r0 * q * q
    q4 = q * q * q * q
    i = lo
    while i + 1 < hi:
        out[i] = keep * out[i] + g0
        out[i + 1] = keep * out[i + 1] + g1
        g0 *= r0
        g1 *= r1
        r0 *= q4
        r1 *= q4
        i += 2
    if i < hi:
        out[i] = keep * out[i] + g0


# The sums of squares may be reassociated (vectorized); nothing else in the kernel is.
@njit(cache=True, fastmath={"reassoc", "contract"})
def _dsse(old, new, resid, lo, hi):
    """Change of the sum of squares when f[lo:hi] goes from ``old`` to ``new`` (resid = y - f)."""
    acc = 0.0
    for i in range(lo, hi):
        d = old[i] - new[i]
        acc += d * (2.0 * resid[i] + d)
    return acc


@njit(cache=True, fastmath={"reassoc", "contract"})
def _sse(y, f):
    acc = 0.0
    for i in range(y.size):
        r = y[i] - f[i]
        acc += r * r
    return acc


@njit(cache=True, fastmath={"reassoc", "contract"})
def _sumsq(r):
    acc = 0.0
    for i in range(r.size):
        acc += r[i] * r[i]
    return acc


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dsse_w(old, new, resid, w2, lo, hi):
    """:func:`_dsse` of the weighted sum of squares sum w_i^2 r_i^2 (``w2`` = w^2)."""
    acc = 0.0
    for i in range(lo, hi):
        d = old[i] - new[i]
        acc += w2[i] * (d * (2.0 * resid[i] + d))
    return acc


@njit(cache=True, fastmath={"reassoc", "contract"})
def _sse_w(y, f, w2):
    acc = 0.0
    for i in range(y.size):
        r = y[i] - f[i]
        acc += w2[i] * (r * r)
    return acc


@njit(cache=True, fastmath={"reassoc", "contract"})
def _sumsq_w(r, w2):
    acc = 0.0
    for i in range(r.size):
        acc += w2[i] * (r[i] * r[i])
    return acc


def uniform_step(x: np.ndarray) -> float:
    """The grid step if ``x`` is uniform to 1e-9 of a step (then components use the recurrence), else 0."""
    if x.size < 3:
        return 0.0
    dx = (x[-1] - x[0]) / (x.size - 1)
    dev = np.max(np.abs(x - (x[0] + dx * np.arange(x.size))))
    return float(dx) if dx > 0 and dev <= 1e-9 * dx else 0.0


# The xanes background is kept in three parts per slot (arctan step with its height,
# unit-area Lorentzian, unit-area Gaussian) so that a move of one background
# parameter recomputes only the part it changes: the height, white-line area and
# mixing need no transcendental function at all.
@njit(cache=True)
def _bg_step(th, x, out):
    h, e0, gam = th[0], th[1], th[2]
    for i in range(x.size):
        out[i] = h * (0.5 + math.atan((x[i] - e0) / (0.5 * gam)) / math.pi)


@njit(cache=True)
def _bg_line(th, x, lor, gau):
    c = th[1] + th[4]
    hw = 0.5 * th[5]
    sig = th[5] / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    for i in range(x.size):
        e = x[i] - c
        lor[i] = hw / math.pi / (e * e + hw * hw)
        gau[i] = math.exp(-0.5 * (e / sig) ** 2) / (sig * SQRT2PI)


@njit(cache=True)
def _bg_sum(bgt, th, x, stp, lor, gau, out):
    if bgt == 2:
        # preedge: edge tail (arctan step) + line offset + slope (x - x_ref)
        off, slope, xref = th[3], th[4], th[5]
        for i in range(out.size):
            out[i] = stp[i] + off + slope * (x[i] - xref)
        return
    area, eta = th[3], th[6]
    for i in range(out.size):
        out[i] = stp[i] + area * (eta * lor[i] + (1.0 - eta) * gau[i])


@njit(cache=True)
def _bg_fill(bgt, th, x, parts, out):
    """out = background at x; ``parts`` (3, N) receives its step, Lorentzian and Gaussian."""
    if bgt == 0:
        for i in range(x.size):
            out[i] = 0.0
        return
    _bg_step(th, x, parts[0])
    if bgt == 1:
        _bg_line(th, x, parts[1], parts[2])
    _bg_sum(bgt, th, x, parts[0], parts[1], parts[2], out)


@njit(cache=True)
def _recompute(s, x, y, theta, resid, comp, bgv, bgp, win, sse, nb, K, ct, bgt, dx, w2, weighted):
    n = x.size
    _bg_fill(bgt, theta[s], x, bgp[s], bgv[s])
    for i in range(n):
        resid[s, i] = y[i] - bgv[s, i]
    for k in range(K):
        base = nb + 3 * k
        p0, p1, p2 = theta[s, base], theta[s, base + 1], theta[s, base + 2]
        for i in range(n):
            comp[s, k, i] = 0.0
        lo, hi = _window(ct, x, p1, p2)
        win[s, k, 0] = lo
        win[s, k, 1] = hi
        _fill_component(ct, p0, p1, p2, x, lo, hi, dx, comp[s, k], False)
        for i in range(lo, hi):
            resid[s, i] -= comp[s, k, i]
    if weighted:
        sse[s] = _sumsq_w(resid[s], w2)
    else:
        sse[s] = _sumsq(resid[s])


@njit(cache=True)
def _shift(th, chol, scale, z, codes, pa, pb, logm, nb, K, ordered, out):
    """out = th + scale * chol @ z in the moved coordinates (log th for positive parameters) on the free
    parameters whose row of ``chol`` has a nonzero diagonal; the others are copied.

    Returns (inside the prior's support and centres still ordered, log prior ratio, log Jacobian)."""
    dlp = 0.0
    ljac = 0.0
    for j in range(th.size):
        old = th[j]
        out[j] = old
        if codes[j] == 0 or chol[j, j] == 0.0:
            continue
        d = 0.0
        for i in range(j + 1):
            d += chol[j, i] * z[i]
        d *= scale
        if logm[j]:
            new = old * math.exp(d)
            ljac += d
        else:
            new = old + d
        dj = _dlogp(codes[j], pa[j], pb[j], new, old)
        if dj == -np.inf:
            return False, 0.0, 0.0
        dlp += dj
        out[j] = new
    if ordered and K > 1:
        for k in range(1, K):
            if out[nb + 3 * k + 1] <= out[nb + 3 * (k - 1) + 1]:
                return False, 0.0, 0.0
    return True, dlp, ljac


@njit(cache=True)
def _joint_move(l, s, bl, x, y, theta, resid, comp, bgv, bgp, win, sse, codes, pa, pb, logm,
                nb, K, ct, bgt, ordered, chol, jscale, jacc, jtried, z, u, buf_th, buf_f, buf_bg, tbg, dx,
                w2, weighted):
    """One Metropolis move of all free parameters at once: u' = u + jscale * chol @ z in the
    moved coordinates (log theta for positive parameters), with the Jacobian in the ratio."""
    P = theta.shape[1]
    N = x.size
    jtried[l] += 1
    ok, dlp, ljac = _shift(theta[s], chol[l], jscale[l], z, codes, pa, pb, logm, nb, K, ordered, buf_th)
    if not ok:
        return
    _bg_fill(bgt, buf_th, x, tbg, buf_bg)
    for i in range(N):
        buf_f[i] = buf_bg[i]
    for k in range(K):
        base = nb + 3 * k
        lo, hi = _window(ct, x, buf_th[base + 1], buf_th[base + 2])
        _fill_component(ct, buf_th[base], buf_th[base + 1], buf_th[base + 2], x, lo, hi, dx, buf_f, True)
    sse_new = _sse_w(y, buf_f, w2) if weighted else _sse(y, buf_f)
    lu = math.log(u) if u > 0 else -np.inf
    if lu < -0.5 * bl * (sse_new - sse[s]) + dlp + ljac:
        for j in range(P):
            theta[s, j] = buf_th[j]
        _recompute(s, x, y, theta, resid, comp, bgv, bgp, win, sse, nb, K, ct, bgt, dx, w2, weighted)
        jacc[l] += 1


# Conditional-linear moves. f is linear in some free parameters (heights, areas, offset, slope:
# ``model.linear_indices()``): given the others, beta -> f is a linear map, f = c + A^T beta, and
# the likelihood at precision b is Gaussian in beta with precision b G, G = A W A^T, and mean
# mu = G^-1 A W (y - c). Two Metropolis-Hastings moves use that Gaussian as their proposal:
#   * the linear block move draws all of beta from it at once (an independence proposal;
#     the acceptance ratio leaves the prior ratio only, up to the tiny diagonal jitter);
#   * the collapsed move first shifts the nonlinear parameters jointly (random walk with the
#     covariance of their burn-in draws, like the joint move) and then draws beta from the
#     Gaussian at the shifted values, so areas and background follow a centre, width or edge
#     at once instead of holding the move back. Its ratio includes q(beta | old) / q(beta' | new).
# Both are exact for any proposal Gaussian, so the ratio is always computed in full.
@njit(cache=True)
def _design(bgt, ct, th, x, nb, K, lin, m, dx, tmp_th, parts, buf, A, c, cw):
    """A[:m] = f per unit of each free linear parameter at ``th``; c = f with those parameters at 0;
    cw[i] = (lo, hi): column i is zero outside lo:hi (a component's window; the whole grid otherwise)."""
    N = x.size
    for j in range(th.size):
        tmp_th[j] = th[j]
    n_bg = 0
    for i in range(m):
        tmp_th[lin[i]] = 0.0
        if lin[i] < nb:
            n_bg += 1
    # both backgrounds are linear in all their heights: with all of them free, c has no background part
    # and the columns are the step, line, 1 and x - x_ref (one arctan pass)
    whole = bgt == 0 or (bgt == 1 and n_bg == 2) or (bgt == 2 and n_bg == 3)
    if whole:
        for n in range(N):
            c[n] = 0.0
        if bgt != 0:
            tmp_th[0] = 1.0
            _bg_step(tmp_th, x, parts[0])
            tmp_th[0] = 0.0
            if bgt == 1:
                _bg_line(tmp_th, x, parts[1], parts[2])
    else:
        _bg_fill(bgt, tmp_th, x, parts, c)
    for i in range(m):
        j = lin[i]
        for n in range(N):
            A[i, n] = 0.0
        cw[i, 0] = 0
        cw[i, 1] = N
        if j >= nb:
            lo, hi = _window(ct, x, th[j + 1], th[j + 2])
            _fill_component(ct, 1.0, th[j + 1], th[j + 2], x, lo, hi, dx, A[i], False)
            cw[i, 0] = lo
            cw[i, 1] = hi
        elif whole:
            for n in range(N):
                if j == 0:
                    A[i, n] = parts[0, n]
                elif bgt == 1:  # white-line area
                    A[i, n] = th[6] * parts[1, n] + (1.0 - th[6]) * parts[2, n]
                elif j == 3:  # offset
                    A[i, n] = 1.0
                else:  # slope
                    A[i, n] = x[n] - th[5]
        else:
            tmp_th[j] = 1.0
            _bg_fill(bgt, tmp_th, x, parts, buf)
            tmp_th[j] = 0.0
            for n in range(N):
                A[i, n] = buf[n] - c[n]
    for k in range(K):
        base = nb + 3 * k
        free = False
        for i in range(m):
            if lin[i] == base:
                free = True
        if not free:
            lo, hi = _window(ct, x, th[base + 1], th[base + 2])
            _fill_component(ct, th[base], th[base + 1], th[base + 2], x, lo, hi, dx, c, True)


@njit(cache=True)
def _design_current(s, bgt, th, x, nb, K, lin, m, comp, bgp, win, A, c, cw):
    """:func:`_design` at a replica's current state, from its cached curves (component k / its area,
    step / its height, the white line's parts): no transcendental function. False when the cache cannot
    give it (a fixed height or area, or one at exactly 0): then call :func:`_design`."""
    N = x.size
    n_bg = 0
    for i in range(m):
        j = lin[i]
        if th[j] == 0.0:
            return False
        if j < nb:
            n_bg += 1
    whole = bgt == 0 or (bgt == 1 and n_bg == 2) or (bgt == 2 and n_bg == 3)
    if not whole or m != n_bg + K:
        return False
    for n in range(N):
        c[n] = 0.0
    for i in range(m):
        j = lin[i]
        if j >= nb:
            k = (j - nb) // 3
            lo, hi = win[s, k, 0], win[s, k, 1]
            inv = 1.0 / th[j]
            for n in range(lo, hi):
                A[i, n] = comp[s, k, n] * inv
            cw[i, 0] = lo
            cw[i, 1] = hi
            continue
        cw[i, 0] = 0
        cw[i, 1] = N
        if j == 0:
            inv = 1.0 / th[0]
            for n in range(N):
                A[i, n] = bgp[s, 0, n] * inv
        elif bgt == 1:  # white-line area
            for n in range(N):
                A[i, n] = th[6] * bgp[s, 1, n] + (1.0 - th[6]) * bgp[s, 2, n]
        elif j == 3:  # offset
            for n in range(N):
                A[i, n] = 1.0
        else:  # slope
            for n in range(N):
                A[i, n] = x[n] - th[5]
    return True


@njit(cache=True)
def _gaussian(A, c, cw, y, w2, weighted, m, G, R, h, mu):
    """G = A W A^T (+ 1e-10 of its diagonal), R its lower Cholesky factor, mu = G^-1 A W (y - c);
    sums only where both columns are nonzero (``cw``, see :func:`_design`).

    Returns sum(log diag R), or nan when G is not positive definite (the move is then skipped)."""
    for i in range(m):
        for j in range(i + 1):
            acc = 0.0
            for n in range(max(cw[i, 0], cw[j, 0]), min(cw[i, 1], cw[j, 1])):
                acc += A[i, n] * A[j, n] * (w2[n] if weighted else 1.0)
            G[i, j] = acc
            G[j, i] = acc
        acc = 0.0
        for n in range(cw[i, 0], cw[i, 1]):
            acc += A[i, n] * (y[n] - c[n]) * (w2[n] if weighted else 1.0)
        h[i] = acc
    logdet = 0.0
    for j in range(m):
        sj = G[j, j] * (1.0 + 1e-10)
        for k in range(j):
            sj -= R[j, k] * R[j, k]
        if not sj > 0.0:
            return np.nan
        R[j, j] = math.sqrt(sj)
        logdet += math.log(R[j, j])
        for i in range(j + 1, m):
            si = G[i, j]
            for k in range(j):
                si -= R[i, k] * R[j, k]
            R[i, j] = si / R[j, j]
    # R v = h, then R^T mu = v
    for i in range(m):
        si = h[i]
        for k in range(i):
            si -= R[i, k] * mu[k]
        mu[i] = si / R[i, i]
    for i in range(m - 1, -1, -1):
        si = mu[i]
        for k in range(i + 1, m):
            si -= R[k, i] * mu[k]
        mu[i] = si / R[i, i]
    return logdet


@njit(cache=True)
def _log_q(beta, mu, R, m, bl, logdet):
    """log N(beta; mu, (b G)^-1) without the 2 pi term: m/2 log b + log det R - b/2 |R^T (beta - mu)|^2."""
    q = 0.0
    for i in range(m):
        t = 0.0
        for k in range(i, m):
            t += R[k, i] * (beta[k] - mu[k])
        q += t * t
    return 0.5 * m * math.log(bl) + logdet - 0.5 * bl * q


@njit(cache=True)
def _conditional_linear_move(l, s, bl, x, y, theta, resid, comp, bgv, bgp, win, sse, codes, pa, pb, logm,
                             nb, K, ct, bgt, ordered, lin, m, collapsed, cchol, cscale, acc, tried, z, zl, u,
                             buf_th, tmp_th, A, cvec, cw, G, R, vec, buf_f, buf_bg, tbg, dx, w2, weighted):
    """One linear block move (``collapsed`` False) or collapsed move (True) of replica ``l``; see above."""
    P = theta.shape[1]
    N = x.size
    tried[l] += 1
    h, mu, beta = vec[0], vec[1], vec[2]
    dlp = 0.0
    ljac = 0.0
    for j in range(P):
        buf_th[j] = theta[s, j]
    if collapsed:
        # cchol is zero on the linear parameters: they stay, to be redrawn below
        ok, dlp, ljac = _shift(theta[s], cchol[l], cscale[l], z, codes, pa, pb, logm, nb, K, ordered, buf_th)
        if not ok:
            return
        # reverse proposal: beta's Gaussian at the current nonlinear parameters
        if not _design_current(s, bgt, theta[s], x, nb, K, lin, m, comp, bgp, win, A, cvec, cw):
            _design(bgt, ct, theta[s], x, nb, K, lin, m, dx, tmp_th, tbg, buf_bg, A, cvec, cw)
        ld_old = _gaussian(A, cvec, cw, y, w2, weighted, m, G, R, h, mu)
        if ld_old != ld_old:
            return
        for i in range(m):
            beta[i] = theta[s, lin[i]]
        lq_old = _log_q(beta, mu, R, m, bl, ld_old)
    cached = not collapsed and _design_current(s, bgt, theta[s], x, nb, K, lin, m, comp, bgp, win, A, cvec, cw)
    if not cached:
        _design(bgt, ct, buf_th, x, nb, K, lin, m, dx, tmp_th, tbg, buf_bg, A, cvec, cw)
    ld = _gaussian(A, cvec, cw, y, w2, weighted, m, G, R, h, mu)
    if ld != ld:
        return
    if not collapsed:
        for i in range(m):
            beta[i] = theta[s, lin[i]]
        lq_old = _log_q(beta, mu, R, m, bl, ld)
    # beta' = mu + (R^T)^-1 zl / sqrt(b)
    sb = math.sqrt(bl)
    for i in range(m - 1, -1, -1):
        si = zl[i] / sb
        for k in range(i + 1, m):
            si -= R[k, i] * beta[k]
        beta[i] = si / R[i, i]
    for i in range(m):
        beta[i] += mu[i]
    lq_new = 0.5 * m * math.log(bl) + ld
    acc_q = 0.0
    for i in range(m):
        acc_q += zl[i] * zl[i]
    lq_new -= 0.5 * acc_q
    for i in range(m):
        j = lin[i]
        dj = _dlogp(codes[j], pa[j], pb[j], beta[i], theta[s, j])
        if dj == -np.inf:
            return
        dlp += dj
        buf_th[j] = beta[i]
    for n in range(N):
        buf_f[n] = cvec[n]
    for i in range(m):
        bi = beta[i]
        for n in range(cw[i, 0], cw[i, 1]):
            buf_f[n] += bi * A[i, n]
    sse_new = _sse_w(y, buf_f, w2) if weighted else _sse(y, buf_f)
    lu = math.log(u) if u > 0 else -np.inf
    if lu < -0.5 * bl * (sse_new - sse[s]) + dlp + ljac + lq_old - lq_new:
        if cached:
            # only heights and areas changed: rescale the cached curves (no transcendental function)
            for i in range(m):
                j = lin[i]
                r = buf_th[j] / theta[s, j]
                if j >= nb:
                    k = (j - nb) // 3
                    for n in range(win[s, k, 0], win[s, k, 1]):
                        comp[s, k, n] *= r
                elif j == 0:
                    for n in range(N):
                        bgp[s, 0, n] *= r
        for j in range(P):
            theta[s, j] = buf_th[j]
        if cached:
            if bgt != 0:
                _bg_sum(bgt, theta[s], x, bgp[s, 0], bgp[s, 1], bgp[s, 2], bgv[s])
            for n in range(N):
                resid[s, n] = y[n] - bgv[s, n]
            for k in range(K):
                for n in range(win[s, k, 0], win[s, k, 1]):
                    resid[s, n] -= comp[s, k, n]
            sse[s] = _sumsq_w(resid[s], w2) if weighted else _sumsq(resid[s])
        else:
            _recompute(s, x, y, theta, resid, comp, bgv, bgp, win, sse, nb, K, ct, bgt, dx, w2, weighted)
        acc[l] += 1


@njit(cache=True)
def run_block(x, y, bvals, theta, resid, comp, bgv, bgp, win, sse, slot_of, step,
              codes, pa, pb, logm, nb, K, ct, bgt, ordered,
              normals, uniforms, ex_u, prior_draws, sweep0,
              acc, tried, ex_acc, ex_tried, slot_dir, round_trips,
              energies_out, thin, samples_out, refresh, buf_new, buf_bg,
              chol, jscale, jacc, jtried, jnorm, ju, buf_th, buf_f, tbg, dx, w2, weighted,
              lin, lin_z, lin_u, cchol, cscale, lacc, ltried, cacc, ctried, lon, lw_th, lw_A, lw_c, lw_cw, lw_G,
              lw_R, lw_vec):
    """Run ``normals.shape[0]`` sweeps in place; returns the number of samples recorded.

    ``lin`` (the free linear parameters; empty: no conditional-linear moves): each replica
    makes a linear block move every sweep where ``lon`` > 0, and a collapsed move where ``cscale`` > 0;
    ``lin_z`` (sweeps, L, 3, P) and ``lin_u`` (sweeps, L, 2) are their random numbers.

    ``weighted``: sums of squares are weighted, sum w2_i r_i^2 (``w2`` = w^2 per point);
    otherwise ``w2`` is not read and the sums are the plain ones.
    """
    nsw = normals.shape[0]
    L = bvals.size
    P = theta.shape[1]
    N = x.size
    ns = 0
    for t in range(nsw):
        sweep = sweep0 + t
        # replica 0 (b = 0): an exact, independent draw from the prior
        s0 = slot_of[0]
        for j in range(P):
            theta[s0, j] = prior_draws[t, j]
        _recompute(s0, x, y, theta, resid, comp, bgv, bgp, win, sse, nb, K, ct, bgt, dx, w2, weighted)
        for l in range(1, L):
            s = slot_of[l]
            bl = bvals[l]
            for j in range(P):
                code = codes[j]
                if code == 0:
                    continue
                tried[l, j] += 1
                old = theta[s, j]
                if logm[j]:
                    new = old * math.exp(step[l, j] * normals[t, l, j])
                    ljac = math.log(new / old)
                else:
                    new = old + step[l, j] * normals[t, l, j]
                    ljac = 0.0
                dlp = _dlogp(code, pa[j], pb[j], new, old)
                if dlp == -np.inf:
                    continue
                dlp += ljac
                lu = math.log(uniforms[t, l, j]) if uniforms[t, l, j] > 0 else -np.inf
                if j < nb:
                    # xanes background: j = 0 height, 1 E0, 2 Gamma, 3 area, 4 shift, 5 fwhm, 6 eta;
                    # preedge: j = 0 height, 1 edge, 2 Gamma (the tail's step), 3 offset, 4 slope
                    new_step = j <= 2
                    new_line = bgt == 1 and (j == 1 or j == 4 or j == 5)
                    theta[s, j] = new
                    if j == 0:
                        ratio = new / old
                        for i in range(N):
                            tbg[0, i] = bgp[s, 0, i] * ratio
                    elif new_step:
                        _bg_step(theta[s], x, tbg[0])
                    if new_line:
                        _bg_line(theta[s], x, tbg[1], tbg[2])
                    _bg_sum(bgt, theta[s], x, tbg[0] if new_step else bgp[s, 0],
                            tbg[1] if new_line else bgp[s, 1], tbg[2] if new_line else bgp[s, 2], buf_bg)
                    theta[s, j] = old
                    if weighted:
                        dsse = _dsse_w(bgv[s], buf_bg, resid[s], w2, 0, N)
                    else:
                        dsse = _dsse(bgv[s], buf_bg, resid[s], 0, N)
                    if lu < -0.5 * bl * dsse + dlp:
                        theta[s, j] = new
                        for i in range(N):
                            resid[s, i] += bgv[s, i] - buf_bg[i]
                            bgv[s, i] = buf_bg[i]
                        if new_step:
                            bgp[s, 0, :] = tbg[0]
                        if new_line:
                            bgp[s, 1, :] = tbg[1]
                            bgp[s, 2, :] = tbg[2]
                        sse[s] += dsse
                        acc[l, j] += 1
                else:
                    k = (j - nb) // 3
                    q = (j - nb) - 3 * k
                    base = nb + 3 * k
                    if q == 1 and ordered and K > 1:
                        if k > 0 and new <= theta[s, base - 2]:
                            continue
                        if k < K - 1 and new >= theta[s, base + 4]:
                            continue
                    p0 = theta[s, base]
                    p1 = theta[s, base + 1]
                    p2 = theta[s, base + 2]
                    if q == 0:
                        p0 = new
                    elif q == 1:
                        p1 = new
                    else:
                        p2 = new
                    lo_n, hi_n = _window(ct, x, p1, p2)
                    lo_o = win[s, k, 0]
                    hi_o = win[s, k, 1]
                    lo = min(lo_n, lo_o)
                    hi = max(hi_n, hi_o)
                    for i in range(lo, lo_n):
                        buf_new[i] = 0.0
                    for i in range(hi_n, hi):
                        buf_new[i] = 0.0
                    _fill_component(ct, p0, p1, p2, x, lo_n, hi_n, dx, buf_new, False)
                    if weighted:
                        dsse = _dsse_w(comp[s, k], buf_new, resid[s], w2, lo, hi)
                    else:
                        dsse = _dsse(comp[s, k], buf_new, resid[s], lo, hi)
                    if lu < -0.5 * bl * dsse + dlp:
                        theta[s, j] = new
                        for i in range(lo, hi):
                            resid[s, i] += comp[s, k, i] - buf_new[i]
                            comp[s, k, i] = buf_new[i]
                        win[s, k, 0] = lo_n
                        win[s, k, 1] = hi_n
                        sse[s] += dsse
                        acc[l, j] += 1
            if jscale[l] > 0:
                _joint_move(l, s, bl, x, y, theta, resid, comp, bgv, bgp, win, sse, codes, pa, pb, logm,
                            nb, K, ct, bgt, ordered, chol, jscale, jacc, jtried, jnorm[t, l], ju[t, l],
                            buf_th, buf_f, buf_bg, tbg, dx, w2, weighted)
            m = lin.size
            if m > 0 and lon[l] > 0:
                _conditional_linear_move(l, s, bl, x, y, theta, resid, comp, bgv, bgp, win, sse, codes, pa, pb,
                                         logm, nb, K, ct, bgt, ordered, lin, m, False, cchol, cscale, lacc, ltried,
                                         lin_z[t, l, 0], lin_z[t, l, 0], lin_u[t, l, 0], buf_th, lw_th, lw_A, lw_c,
                                         lw_cw, lw_G, lw_R, lw_vec, buf_f, buf_bg, tbg, dx, w2, weighted)
            if m > 0 and cscale[l] > 0:
                _conditional_linear_move(l, s, bl, x, y, theta, resid, comp, bgv, bgp, win, sse, codes, pa,
                                         pb, logm, nb, K, ct, bgt, ordered, lin, m, True, cchol, cscale, cacc,
                                         ctried, lin_z[t, l, 1], lin_z[t, l, 2], lin_u[t, l, 1], buf_th, lw_th,
                                         lw_A, lw_c, lw_cw, lw_G, lw_R, lw_vec, buf_f, buf_bg, tbg, dx, w2, weighted)
        # exchanges between neighbours: even pairs on even sweeps, odd pairs on odd sweeps
        for l in range(sweep % 2, L - 1, 2):
            sa = slot_of[l]
            sb = slot_of[l + 1]
            ex_tried[l] += 1
            la = 0.5 * (bvals[l + 1] - bvals[l]) * (sse[sb] - sse[sa])
            lu = math.log(ex_u[t, l]) if ex_u[t, l] > 0 else -np.inf
            if lu < la:
                slot_of[l] = sb
                slot_of[l + 1] = sa
                ex_acc[l] += 1
        # round trips: a configuration that went from the bottom to the top and back
        sbot = slot_of[0]
        if slot_dir[sbot] == 2:
            round_trips[sbot] += 1
        slot_dir[sbot] = 1
        stop = slot_of[L - 1]
        if slot_dir[stop] == 1:
            slot_dir[stop] = 2
        if refresh > 0 and (sweep + 1) % refresh == 0:
            for s in range(L):
                _recompute(s, x, y, theta, resid, comp, bgv, bgp, win, sse, nb, K, ct, bgt, dx, w2, weighted)
        for l in range(L):
            energies_out[t, l] = sse[slot_of[l]] / (2.0 * N)
        if thin > 0 and (sweep + 1) % thin == 0:
            for l in range(L):
                for j in range(P):
                    samples_out[ns, l, j] = theta[slot_of[l], j]
            ns += 1
    return ns


# ===================================================================== numpy reference
def sweep_reference(x, y, bvals, state: "ChainState", model: SpectralModel, normals, uniforms, ex_u,
                    prior_draws, sweep0, thin, refresh, jnorm, ju, w2=None, lin=None, lin_z=None, lin_u=None):
    """NumPy implementation of :func:`run_block` (same random inputs, same updates).

    ``w2``: squared per-point weights (weighted sums of squares), None for the plain ones.
    ``lin``, ``lin_z``, ``lin_u``: the conditional-linear moves (see :func:`run_block`); None: none.
    Returns (energies (nsw, L), samples (n, L, P)); ``state`` is updated in place.
    """
    wsq = np.ones(x.size) if w2 is None else np.asarray(w2, float)
    codes, pa, pb, logm = model.kernel_arrays()
    from xafsflow.bayes.models import background, component, component_sd

    nb, K, ct = model.nb, model.K, model.comp_type
    L = bvals.size
    P = model.n_params
    N = x.size
    st = state

    def window(p1, p2):
        sd = component_sd(ct, p2)
        return int(np.searchsorted(x, p1 - Z_CUT * sd)), int(np.searchsorted(x, p1 + Z_CUT * sd, side="right"))

    def recompute(s):
        st.bgv[s] = background(model.bg_type, st.theta[s, :nb], x)
        st.comp[s] = 0.0
        for k in range(K):
            p = st.theta[s, nb + 3 * k: nb + 3 * k + 3]
            lo, hi = window(p[1], p[2])
            st.win[s, k] = lo, hi
            st.comp[s, k, lo:hi] = component(ct, p[0], p[1], p[2], x[lo:hi])
        # same summation order as the kernel for the residual
        r = y - st.bgv[s]
        for k in range(K):
            r = r - st.comp[s, k]
        st.resid[s] = r
        st.sse[s] = float(np.sum(wsq * (r * r)))

    from xafsflow.bayes.priors import Prior

    priors = [Prior(model.priors[j].dist, pa[j], pb[j]) for j in range(P)]

    def joint_reference(l, s, bl, z, u):
        st.jtried[l] += 1
        d = st.jscale[l] * (st.chol[l] @ z)
        old = st.theta[s]
        new = np.where(logm, old * np.exp(d), old + d)
        new = np.where(codes == 0, old, new)
        lp_new = np.array([float(priors[j].logpdf(new[j])) if codes[j] else 0.0 for j in range(P)])
        if np.any(lp_new == -np.inf):
            return
        lp_old = np.array([float(priors[j].logpdf(old[j])) if codes[j] else 0.0 for j in range(P)])
        if model.ordered and K > 1 and np.any(np.diff(new[nb + 1::3]) <= 0):
            return
        ljac = float(np.sum(np.where(logm & (codes != 0), d, 0.0)))
        f = model.background(x, new)
        for k in range(K):
            p = new[nb + 3 * k: nb + 3 * k + 3]
            lo, hi = window(p[1], p[2])
            f[lo:hi] += component(ct, p[0], p[1], p[2], x[lo:hi])
        sse_new = float(np.sum(wsq * (y - f) ** 2))
        lu = math.log(u) if u > 0 else -np.inf
        if lu < -0.5 * bl * (sse_new - st.sse[s]) + float(np.sum(lp_new - lp_old)) + ljac:
            st.theta[s] = new
            recompute(s)
            st.jacc[l] += 1
    lin = np.zeros(0, np.int64) if lin is None else np.asarray(lin)
    m = lin.size

    def design(th):
        """(A (m, N), c (N,)): f = c + A^T theta[lin]."""
        th0 = th.copy()
        th0[lin] = 0.0
        c = model.background(x, th0)
        A = np.zeros((m, N))
        for i, j in enumerate(lin):
            if j < nb:
                e = th0.copy()
                e[j] = 1.0
                A[i] = model.background(x, e) - c
            else:
                lo, hi = window(th[j + 1], th[j + 2])
                A[i, lo:hi] = component(ct, 1.0, th[j + 1], th[j + 2], x[lo:hi])
        for k in range(K):
            base = nb + 3 * k
            if base not in lin:
                lo, hi = window(th[base + 1], th[base + 2])
                c[lo:hi] += component(ct, th[base], th[base + 1], th[base + 2], x[lo:hi])
        return A, c

    def gaussian(th):
        """(mu, R, log det R) of beta's Gaussian at th, or None when G is not positive definite."""
        A, c = design(th)
        G = (A * wsq) @ A.T
        G[np.diag_indices(m)] *= 1.0 + 1e-10
        try:
            R = np.linalg.cholesky(G)
        except np.linalg.LinAlgError:
            return None
        mu = np.linalg.solve(G, (A * wsq) @ (y - c))
        return mu, R, float(np.sum(np.log(np.diag(R)))), A, c

    def log_q(beta, g, bl):
        mu, R, ld = g[:3]
        return 0.5 * m * math.log(bl) + ld - 0.5 * bl * float(np.sum((R.T @ (beta - mu)) ** 2))

    def linear_reference(l, s, bl, collapsed, z, zl, u):
        if collapsed:
            st.ctried[l] += 1
        else:
            st.ltried[l] += 1
        old = st.theta[s]
        new = old.copy()
        dlp = ljac = 0.0
        if collapsed:
            moved = (codes != 0) & (np.diag(st.cchol[l]) != 0)
            d = st.cscale[l] * (st.cchol[l] @ z)
            new = np.where(moved, np.where(logm, old * np.exp(d), old + d), old)
            for j in np.flatnonzero(moved):
                lpn = float(priors[j].logpdf(new[j]))
                if lpn == -np.inf:
                    return
                dlp += lpn - float(priors[j].logpdf(old[j]))
            ljac = float(np.sum(np.where(moved & logm, d, 0.0)))
            if model.ordered and K > 1 and np.any(np.diff(new[nb + 1::3]) <= 0):
                return
            g_old = gaussian(old)
            if g_old is None:
                return
        g = gaussian(new)
        if g is None:
            return
        lq_old = log_q(old[lin], g_old if collapsed else g, bl)
        mu, R, ld, A, c = g
        beta = mu + np.linalg.solve(R.T, zl[:m] / math.sqrt(bl))
        lq_new = 0.5 * m * math.log(bl) + ld - 0.5 * float(np.sum(zl[:m] ** 2))
        for i, j in enumerate(lin):
            lpn = float(priors[j].logpdf(beta[i]))
            if lpn == -np.inf:
                return
            dlp += lpn - float(priors[j].logpdf(old[j]))
        new[lin] = beta
        sse_new = float(np.sum(wsq * (y - c - beta @ A) ** 2))
        lu = math.log(u) if u > 0 else -np.inf
        if lu < -0.5 * bl * (sse_new - st.sse[s]) + dlp + ljac + lq_old - lq_new:
            st.theta[s] = new
            recompute(s)
            if collapsed:
                st.cacc[l] += 1
            else:
                st.lacc[l] += 1

    energies = np.empty((normals.shape[0], L))
    samples = []
    for t in range(normals.shape[0]):
        sweep = sweep0 + t
        s0 = st.slot_of[0]
        st.theta[s0] = prior_draws[t]
        recompute(s0)
        for l in range(1, L):
            s = st.slot_of[l]
            bl = bvals[l]
            for j in range(P):
                if codes[j] == 0:
                    continue
                st.tried[l, j] += 1
                old = st.theta[s, j]
                if logm[j]:
                    new = old * math.exp(st.step[l, j] * normals[t, l, j])
                    ljac = math.log(new / old)
                else:
                    new = old + st.step[l, j] * normals[t, l, j]
                    ljac = 0.0
                lpn = float(priors[j].logpdf(new))
                if lpn == -np.inf:
                    continue
                dlp = lpn - float(priors[j].logpdf(old)) + ljac
                lu = math.log(uniforms[t, l, j]) if uniforms[t, l, j] > 0 else -np.inf
                th_new = st.theta[s].copy()
                th_new[j] = new
                if j < nb:
                    bg_new = background(model.bg_type, th_new[:nb], x)
                    d = st.bgv[s] - bg_new
                    dsse = float(np.sum(wsq * (d * (2 * st.resid[s] + d))))
                    if lu < -0.5 * bl * dsse + dlp:
                        st.theta[s, j] = new
                        st.resid[s] += d
                        st.bgv[s] = bg_new
                        st.sse[s] += dsse
                        st.acc[l, j] += 1
                else:
                    k, q = divmod(j - nb, 3)
                    base = nb + 3 * k
                    if q == 1 and model.ordered and K > 1:
                        if (k > 0 and new <= st.theta[s, base - 2]) or (k < K - 1 and new >= st.theta[s, base + 4]):
                            continue
                    p = th_new[base: base + 3]
                    lo_n, hi_n = window(p[1], p[2])
                    lo, hi = min(lo_n, st.win[s, k, 0]), max(hi_n, st.win[s, k, 1])
                    cn = np.zeros(hi - lo)
                    cn[lo_n - lo: hi_n - lo] = component(ct, p[0], p[1], p[2], x[lo_n:hi_n])
                    d = st.comp[s, k, lo:hi] - cn
                    dsse = float(np.sum(wsq[lo:hi] * (d * (2 * st.resid[s, lo:hi] + d))))
                    if lu < -0.5 * bl * dsse + dlp:
                        st.theta[s, j] = new
                        st.resid[s, lo:hi] += d
                        st.comp[s, k, lo:hi] = cn
                        st.win[s, k] = lo_n, hi_n
                        st.sse[s] += dsse
                        st.acc[l, j] += 1
            if st.jscale[l] > 0:
                joint_reference(l, s, bl, jnorm[t, l], ju[t, l])
            if m > 0 and st.lon[l] > 0:
                linear_reference(l, s, bl, False, None, lin_z[t, l, 0], lin_u[t, l, 0])
            if m > 0 and st.cscale[l] > 0:
                linear_reference(l, s, bl, True, lin_z[t, l, 1], lin_z[t, l, 2], lin_u[t, l, 1])
        for l in range(sweep % 2, L - 1, 2):
            sa, sb = st.slot_of[l], st.slot_of[l + 1]
            st.ex_tried[l] += 1
            la = 0.5 * (bvals[l + 1] - bvals[l]) * (st.sse[sb] - st.sse[sa])
            lu = math.log(ex_u[t, l]) if ex_u[t, l] > 0 else -np.inf
            if lu < la:
                st.slot_of[l], st.slot_of[l + 1] = sb, sa
                st.ex_acc[l] += 1
        sbot = st.slot_of[0]
        if st.slot_dir[sbot] == 2:
            st.round_trips[sbot] += 1
        st.slot_dir[sbot] = 1
        if st.slot_dir[st.slot_of[L - 1]] == 1:
            st.slot_dir[st.slot_of[L - 1]] = 2
        if refresh > 0 and (sweep + 1) % refresh == 0:
            for s in range(L):
                recompute(s)
        energies[t] = st.sse[st.slot_of] / (2.0 * N)
        if thin > 0 and (sweep + 1) % thin == 0:
            samples.append(st.theta[st.slot_of].copy())
    return energies, np.array(samples).reshape(-1, L, P)


# ====================================================================== chain driver
@dataclass
class ChainState:
    """Everything a chain needs to continue exactly where it stopped."""

    theta: np.ndarray  # (L, P) per slot
    resid: np.ndarray  # (L, N)
    comp: np.ndarray  # (L, K, N)
    bgv: np.ndarray  # (L, N)
    bgp: np.ndarray  # (L, 3, N) background parts (step, Lorentzian, Gaussian); (L, 3, 0) without background
    win: np.ndarray  # (L, K, 2) int64
    sse: np.ndarray  # (L,)
    slot_of: np.ndarray  # (L,) int64: slot holding temperature l
    step: np.ndarray  # (L, P) per temperature
    acc: np.ndarray  # (L, P) int64
    tried: np.ndarray
    ex_acc: np.ndarray  # (L-1,)
    ex_tried: np.ndarray
    slot_dir: np.ndarray  # (L,)
    round_trips: np.ndarray  # (L,)
    chol: np.ndarray  # (L, P, P) joint-move proposal factor per temperature (moved coordinates)
    jscale: np.ndarray  # (L,) joint-move scale; 0 = no joint moves yet
    jacc: np.ndarray  # (L,)
    jtried: np.ndarray  # (L,)
    burn: np.ndarray  # (n, L, P) recent burn-in draws for the joint-move covariance
    cchol: np.ndarray  # (L, P, P) collapsed-move factor (nonlinear parameters only)
    cscale: np.ndarray  # (L,) collapsed-move scale; 0 = none yet
    lacc: np.ndarray  # (L,) linear block moves accepted / tried
    ltried: np.ndarray
    cacc: np.ndarray  # (L,) collapsed moves accepted / tried
    ctried: np.ndarray
    lon: np.ndarray  # (L,) 1: linear block moves on; 0: off (never accepted there during burn-in)

    ARRAYS = ("theta", "resid", "comp", "bgv", "bgp", "win", "sse", "slot_of", "step", "acc", "tried",
              "ex_acc", "ex_tried", "slot_dir", "round_trips", "chol", "jscale", "jacc", "jtried", "burn",
              "cchol", "cscale", "lacc", "ltried", "cacc", "ctried", "lon")

    def copy(self) -> "ChainState":
        return ChainState(*(getattr(self, a).copy() for a in self.ARRAYS))


def initial_state(x, y, model: SpectralModel, bvals: np.ndarray, rng: np.random.Generator,
                  start: np.ndarray | None = None, weights: np.ndarray | None = None) -> ChainState:
    """Every slot starts from its own prior draw; step sizes start from the prior's scale.

    With ``start`` (a parameter vector, e.g. a candidate built from the K - 1
    solution), the coldest third of the replicas start there instead, so a mode
    the prior draws would rarely reach is in the chain from the beginning; the
    hotter replicas still start from the prior. ``weights``: see :func:`run_chain`.
    """
    L, P, N, K = bvals.size, model.n_params, x.size, model.K
    theta = model.sample_prior(rng, L)
    if start is not None:
        start = np.asarray(start, float)
        if start.shape != (P,) or not np.isfinite(model.log_prior(start)):
            raise ValueError("a start must be a parameter vector inside the prior's support")
        theta[L - max(1, (L - 1) // 3):] = start
    st = ChainState(
        theta=theta, resid=np.zeros((L, N)), comp=np.zeros((L, K, N)), bgv=np.zeros((L, N)),
        bgp=np.zeros((L, 3, N if model.bg_type else 0)),
        win=np.zeros((L, K, 2), np.int64), sse=np.zeros(L), slot_of=np.arange(L, dtype=np.int64),
        step=np.zeros((L, P)), acc=np.zeros((L, P), np.int64), tried=np.zeros((L, P), np.int64),
        ex_acc=np.zeros(max(L - 1, 1), np.int64), ex_tried=np.zeros(max(L - 1, 1), np.int64),
        slot_dir=np.zeros(L, np.int64), round_trips=np.zeros(L, np.int64),
        chol=np.zeros((L, P, P)), jscale=np.zeros(L), jacc=np.zeros(L, np.int64), jtried=np.zeros(L, np.int64),
        burn=np.zeros((0, L, P)), cchol=np.zeros((L, P, P)), cscale=np.zeros(L),
        lacc=np.zeros(L, np.int64), ltried=np.zeros(L, np.int64), cacc=np.zeros(L, np.int64),
        ctried=np.zeros(L, np.int64), lon=np.ones(L),
    )
    for j, p in enumerate(model.priors):
        if p.log_moves:
            scale = 0.3
        elif p.dist == "uniform":
            scale = 0.1 * (p.b - p.a)
        elif p.dist == "normal":
            scale = 0.3 * p.b
        else:
            scale = 0.0
        # colder replicas need smaller steps: start from the prior scale shrunk with sqrt(b_1/b_l)
        for l in range(L):
            shrink = 1.0 if l <= 1 or bvals[1] <= 0 else math.sqrt(bvals[1] / bvals[l])
            st.step[l, j] = scale * max(shrink, 1e-3)
    dx = uniform_step(np.ascontiguousarray(x, dtype=np.float64))
    w2, weighted = squared_weights(weights, N)
    for s in range(L):
        _recompute(s, x, y, st.theta, st.resid, st.comp, st.bgv, st.bgp, st.win, st.sse, model.nb, K,
                   model.comp_type, model.bg_type, dx, w2, weighted)
    return st


def check_weights(weights, n: int, source: str | None = None) -> np.ndarray:
    """Per-point likelihood weights as a float array of length ``n``: finite and positive, else an error.

    Raises :class:`xafsflow.errors.AnalysisInputError` naming what is wrong.
    """
    from xafsflow.errors import AnalysisInputError

    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise AnalysisInputError(f"weights must be one per point ({n}), got shape {w.shape}", source)
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        raise AnalysisInputError(f"{int(bad.sum())} weight(s) are not finite and positive (first at point "
                                 f"{int(np.argmax(bad))}); a per-point uncertainty must be > 0", source)
    return w


def normalize_weights(weights, n: int, source: str | None = None) -> np.ndarray:
    """Relative weights rescaled so that mean(w^2) = 1 (then sigma is the rms noise; see :func:`run_chain`)."""
    w = check_weights(weights, n, source)
    return w / math.sqrt(float(np.mean(w * w)))


def squared_weights(weights, n: int) -> tuple[np.ndarray, bool]:
    """(w^2 as a contiguous float64 array, whether the likelihood is weighted) for the kernel."""
    if weights is None:
        return np.ones(n), False
    w = check_weights(weights, n)
    return np.ascontiguousarray(w * w), True


@dataclass
class ChainResult:
    bvals: np.ndarray
    energies: np.ndarray  # (sweeps, L) E = SSE / 2N after burn-in
    samples: np.ndarray  # (n, L, P)
    acceptance: np.ndarray  # (L, P) production acceptance rates (nan where fixed)
    exchange_rate: np.ndarray  # (L-1,)
    round_trips: np.ndarray  # (L,)
    step: np.ndarray
    n_points: int
    joint_acceptance: np.ndarray | None = None  # (L,) production acceptance of the joint moves
    linear_acceptance: np.ndarray | None = None  # (L,) of the linear block moves (nan: none tried)
    collapsed_acceptance: np.ndarray | None = None  # (L,) of the collapsed moves (nan: none tried)
    state: "ChainState | None" = None  # where the chain stopped (to extend it)
    rng_state: dict | None = None
    sweep: int = 0


def _draw_block(rng, model, L, P, nsw, linear: bool = False):
    normals = rng.standard_normal((nsw, L, P))
    uniforms = rng.random((nsw, L, P))
    ex_u = rng.random((nsw, max(L - 1, 1)))
    prior = model.sample_prior(rng, nsw)
    jnorm = rng.standard_normal((nsw, L, P))
    ju = rng.random((nsw, L))
    # drawn last and only with conditional-linear moves, so chains without them are unchanged
    lin_z = rng.standard_normal((nsw, L, 3, P)) if linear else np.zeros((nsw, L, 3, 0))
    lin_u = rng.random((nsw, L, 2)) if linear else np.zeros((nsw, L, 2))
    return normals, uniforms, ex_u, prior, jnorm, ju, lin_z, lin_u


@dataclass
class _Workspace:
    """The model's kernel arrays and the kernel's scratch buffers, allocated once per chain."""

    kernel_arrays: tuple  # (codes, pa, pb, logm)
    buf_new: np.ndarray  # (N,)
    buf_bg: np.ndarray  # (N,)
    buf_th: np.ndarray  # (P,)
    buf_f: np.ndarray  # (N,)
    tbg: np.ndarray  # (3, N)
    dx: float  # uniform grid step (0 when the grid is not uniform)
    w2: np.ndarray | None = None  # squared per-point weights (None: unweighted)
    lin: np.ndarray | None = None  # free linear parameters (empty: no conditional-linear moves)
    lin_scratch: tuple = ()  # (th (P,), A (P, N), c (N,), cw (P, 2), G (P, P), R (P, P), vec (3, P))

    @property
    def weighted(self) -> bool:
        return self.w2 is not None

    @property
    def w2_kernel(self) -> np.ndarray:
        return self.w2 if self.w2 is not None else self.buf_new  # not read when unweighted


def make_workspace(x, model: SpectralModel, weights=None, linear_moves: bool = True) -> _Workspace:
    """The kernel's arrays and scratch buffers for ``model`` on the grid ``x`` (``weights``: see :func:`run_chain`;
    ``linear_moves``: conditional-linear moves on the model's linear parameters)."""
    P, N = model.n_params, x.size
    w2, weighted = squared_weights(weights, N)
    lin = model.linear_indices() if linear_moves else np.zeros(0, np.int64)
    scratch = (np.zeros(P), np.zeros((P, N)), np.zeros(N), np.zeros((P, 2), np.int64), np.zeros((P, P)),
               np.zeros((P, P)), np.zeros((3, P)))
    return _Workspace(model.kernel_arrays(), np.zeros(N), np.zeros(N), np.zeros(P), np.zeros(N), np.zeros((3, N)),
                      uniform_step(x), w2 if weighted else None, lin, scratch)


def run_chain(x, y, model: SpectralModel, bvals, settings: ChainSettings, seed: np.random.SeedSequence,
              checkpoint: str | Path | None = None, use_kernel: bool = True, progress=None,
              resume: ChainResult | None = None, start: np.ndarray | None = None,
              weights: np.ndarray | None = None) -> ChainResult:
    """Run one replica-exchange chain: burn-in with step adaptation, then production.

    ``weights`` (one positive number per point, used as given; None: all 1)
    make the likelihood y_i ~ N(f_i, 1 / (b w_i^2)): the recorded energies are
    E = sum w_i^2 (y_i - f_i)^2 / 2N. :func:`normalize_weights` scales relative
    weights to mean(w^2) = 1; :func:`xafsflow.bayes.posterior.analyse` does so.

    With ``checkpoint`` set, the full state (including the random generator) is
    saved every ``settings.checkpoint_every`` sweeps and at the end, and a chain
    that finds a matching checkpoint resumes from it, giving exactly the result
    of an uninterrupted run. The production length is not part of the match, so
    a chain asked for more sweeps than it has continues from where it stopped;
    ``resume`` (a previous result of the same chain) does the same in memory.
    ``start``: see :func:`initial_state`.
    """
    settings.check()
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    bvals = np.ascontiguousarray(bvals, dtype=np.float64)
    L, P, N = bvals.size, model.n_params, x.size
    ident = _identity(x, y, model, bvals, settings, seed, start, weights)
    resumed = _load_checkpoint(checkpoint, ident) if checkpoint else None
    if resume is not None and (resumed is None or resumed[2] < resume.sweep):
        rng = np.random.default_rng()
        rng.bit_generator.state = resume.rng_state
        resumed = (resume.state.copy(), rng, resume.sweep, [resume.energies], [resume.samples])
    if resumed is not None:
        st, rng, sweep, energies, samples = resumed
    else:
        rng = np.random.default_rng(seed)
        st = initial_state(x, y, model, bvals, rng, start, weights)
        sweep, energies, samples = 0, [], []
    total = settings.burn_in + settings.sweeps
    work = make_workspace(x, model, weights, settings.linear_moves)
    nblk = settings.block
    while sweep < total:
        draws = _draw_block(rng, model, L, P, nblk, work.lin.size > 0)
        burning = sweep < settings.burn_in
        thin = 1 if burning else settings.thin  # every burn-in sweep feeds the joint-move covariance
        e_out, s_out = _run_one_block(x, y, bvals, model, settings, st, draws, sweep, thin, work, use_kernel)
        sweep += nblk
        if burning:
            _end_burn_in_block(st, model, settings, sweep, s_out)
        else:
            energies.append(e_out)
            samples.append(s_out)
        if checkpoint and (sweep % settings.checkpoint_every == 0 or sweep == total):
            _save_checkpoint(checkpoint, ident, st, rng, sweep, energies, samples)
        if progress is not None:
            progress(sweep, total)
    res = _chain_result(st, bvals, energies, samples, L, P, N)
    res.state, res.rng_state, res.sweep = st.copy(), rng.bit_generator.state, sweep
    return res


def _run_one_block(x, y, bvals, model: SpectralModel, settings: ChainSettings, st: ChainState, draws, sweep: int,
                   thin: int, work: _Workspace, use_kernel: bool):
    """Advance the chain by one block of sweeps (kernel or NumPy reference); return its energies and kept draws."""
    normals, uniforms, ex_u, prior, jnorm, ju, lin_z, lin_u = draws
    L, P = bvals.size, model.n_params
    nblk = settings.block
    codes, pa, pb, logm = work.kernel_arrays
    e_out = np.empty((nblk, L))
    s_out = np.empty((nblk // thin, L, P))
    if use_kernel:
        ns = run_block(x, y, bvals, st.theta, st.resid, st.comp, st.bgv, st.bgp, st.win, st.sse, st.slot_of,
                       st.step,
                       codes, pa, pb, logm, model.nb, model.K, model.comp_type, model.bg_type, model.ordered,
                       normals, uniforms, ex_u, prior, sweep,
                       st.acc, st.tried, st.ex_acc, st.ex_tried, st.slot_dir, st.round_trips,
                       e_out, thin, s_out, settings.refresh, work.buf_new, work.buf_bg,
                       st.chol, st.jscale, st.jacc, st.jtried, jnorm, ju, work.buf_th, work.buf_f, work.tbg, work.dx,
                       work.w2_kernel, work.weighted, work.lin, lin_z, lin_u, st.cchol, st.cscale, st.lacc,
                       st.ltried, st.cacc, st.ctried, st.lon, *work.lin_scratch)
        s_out = s_out[:ns]
    else:
        e_out, s_out = sweep_reference(x, y, bvals, st, model, normals, uniforms, ex_u, prior, sweep,
                                       thin, settings.refresh, jnorm, ju, work.w2, work.lin, lin_z, lin_u)
    return e_out, s_out


def _end_burn_in_block(st: ChainState, model: SpectralModel, settings: ChainSettings, sweep: int,
                       s_out: np.ndarray) -> None:
    """After a burn-in block (``sweep`` sweeps done): keep its draws, adapt, and reset counters at the end."""
    st.burn = np.concatenate([st.burn, s_out])[-settings.joint_window:]
    if sweep % settings.adapt_every == 0:
        _adapt(st, settings.target_acceptance)
        _adapt_joint(st, model, settings, sweep)
    if sweep == settings.burn_in:
        for a in ("acc", "tried", "ex_acc", "ex_tried", "round_trips", "jacc", "jtried", "lacc", "ltried", "cacc",
                  "ctried"):
            getattr(st, a)[...] = 0
        st.burn = st.burn[:0]


def _chain_result(st: ChainState, bvals, energies: list, samples: list, L: int, P: int, N: int) -> ChainResult:
    """Production energies and draws with the acceptance and exchange rates of the final state."""
    with np.errstate(invalid="ignore", divide="ignore"):
        accr = np.where(st.tried > 0, st.acc / np.maximum(st.tried, 1), np.nan)
        exr = st.ex_acc / np.maximum(st.ex_tried, 1)
        lrate = np.where(st.ltried > 0, st.lacc / np.maximum(st.ltried, 1), np.nan)
        crate = np.where(st.ctried > 0, st.cacc / np.maximum(st.ctried, 1), np.nan)
    return ChainResult(bvals, np.concatenate(energies) if energies else np.empty((0, L)),
                       np.concatenate(samples) if samples else np.empty((0, L, P)),
                       accr, exr[: L - 1], st.round_trips.copy(), st.step.copy(), N,
                       st.jacc / np.maximum(st.jtried, 1), lrate, crate)


def _adapt_joint(st: ChainState, model: SpectralModel, settings: "ChainSettings", sweep: int = 0) -> None:
    """Joint moves: proposal covariance from recent burn-in draws (moved coordinates), scale
    adapted toward ``joint_target`` acceptance; starts once ``joint_min`` draws are there."""
    n = st.burn.shape[0]
    if n < settings.joint_min:
        return
    codes, _, _, logm = model.kernel_arrays()
    free = codes != 0
    u = st.burn.copy()
    u[:, :, logm] = np.log(np.maximum(u[:, :, logm], 1e-300))
    d = int(free.sum())
    if settings.linear_moves:
        _adapt_collapsed(st, model, settings, u, free, sweep)
    for l in range(1, st.theta.shape[0]):
        full = _proposal_factor(u[:, l], free)
        if full is None:
            continue
        st.chol[l] = full
        st.jscale[l] = _adapted_scale(st.jscale[l], st.jacc[l], st.jtried[l], d, settings.joint_target)
    st.jacc[...] = 0
    st.jtried[...] = 0


def _adapted_scale(scale: float, accepted: int, tried: int, d: int, target: float) -> float:
    """A joint proposal's scale: 2.38 / sqrt(d) to start, then a Robbins-Monro step toward ``target``."""
    if scale == 0:
        return 2.38 / math.sqrt(d)
    if tried > 0:
        return scale * math.exp(2.0 * (accepted / tried - target))
    return scale


def _proposal_factor(u: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """(P, P) lower Cholesky factor of the covariance of the draws ``u`` (n, P) over the parameters in
    ``mask`` (a tiny ridge added), zero elsewhere; None when it is not positive definite."""
    d = int(mask.sum())
    cov = np.cov(u[:, mask], rowvar=False).reshape(d, d)
    cov += np.eye(d) * (1e-10 * np.trace(cov) / d + 1e-300)
    try:
        c = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None
    full = np.zeros((u.shape[1], u.shape[1]))
    full[np.ix_(mask, mask)] = c
    return full


OFF_AFTER = 50  # see _adapt_collapsed


def _adapt_collapsed(st: ChainState, model: SpectralModel, settings: "ChainSettings", u: np.ndarray,
                     free: np.ndarray, sweep: int) -> None:
    """Collapsed moves: covariance of the nonlinear free parameters' recent burn-in draws (moved
    coordinates: the marginal the move walks on); scale adapted toward ``joint_target``.

    In the second half of burn-in, block moves are switched off for the rest of the chain at the hottest
    temperatures up to the first one where one was accepted since the last adaptation (``OFF_AFTER`` tries
    at least), and collapsed moves with them where they fared no better: there the likelihood's Gaussian
    reaches far beyond the prior's support and the moves would only cost time. Decided in burn-in only, so
    the production chain is a fixed Markov kernel.
    """
    nonlin = free.copy()
    nonlin[model.linear_indices()] = False
    d = int(nonlin.sum())
    if model.linear_indices().size == 0:
        return
    if sweep >= settings.burn_in // 2:
        # off from the hot end up to the first temperature where the block move was accepted: a cold replica
        # may still sit where the Gaussian misses the support early on, a hot one always does
        dead = (st.ltried >= OFF_AFTER) & (st.lacc == 0)
        n_dead = int(np.argmin(dead[1:])) if not dead[1:].all() else dead.size - 1
        st.lon[1: 1 + n_dead] = 0.0
        # the collapsed move only where the block move is off too (elsewhere it needs a smaller scale instead)
        st.cscale[(st.ctried >= OFF_AFTER) & (st.cacc == 0) & (st.lon == 0)] = -1.0
    for l in range(1, st.theta.shape[0] if d else 0):
        full = None if st.cscale[l] < 0 else _proposal_factor(u[:, l], nonlin)
        if full is None:
            continue
        st.cchol[l] = full
        st.cscale[l] = _adapted_scale(st.cscale[l], st.cacc[l], st.ctried[l], d, settings.joint_target)
    st.cacc[...] = 0
    st.ctried[...] = 0
    st.lacc[...] = 0
    st.ltried[...] = 0


def _adapt(st: ChainState, target: float) -> None:
    """Robbins-Monro step on log step size toward the target acceptance; counters restart."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(st.tried > 0, st.acc / np.maximum(st.tried, 1), target)
    st.step *= np.exp(2.0 * (rate - target))
    st.acc[...] = 0
    st.tried[...] = 0


def _identity(x, y, model, bvals, settings, seed, start=None, weights=None) -> str:
    """What a checkpoint must match to be resumed: everything but the production length."""
    import hashlib

    h = hashlib.sha256()
    for a in (x, y, bvals) + (() if start is None else (np.asarray(start, float),)):
        h.update(np.ascontiguousarray(a).tobytes())
    if weights is not None:
        h.update(b"weights")
        h.update(np.ascontiguousarray(weights, dtype=np.float64).tobytes())
    kept = {k: v for k, v in vars(settings).items() if k != "sweeps"}
    h.update(json.dumps([model.name, model.K, [(p.dist, p.a, p.b) for p in model.priors],
                         kept, list(seed.entropy) if np.ndim(seed.entropy) else [seed.entropy],
                         list(seed.spawn_key)], default=str).encode())
    return h.hexdigest()


def _save_checkpoint(path, ident, st: ChainState, rng, sweep, energies, samples) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    arrays = {f"state_{a}": getattr(st, a) for a in ChainState.ARRAYS}
    arrays["energies"] = np.concatenate(energies) if energies else np.empty((0, st.theta.shape[0]))
    arrays["samples"] = (np.concatenate(samples) if samples
                         else np.empty((0, st.theta.shape[0], st.theta.shape[1])))
    meta = json.dumps({"ident": ident, "sweep": sweep, "rng": rng.bit_generator.state,
                       "n_energy_blocks": len(energies)}, default=int)
    with open(tmp, "wb") as fh:
        np.savez(fh, meta=np.array(meta), **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path, ident):
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta["ident"] != ident:
                return None
            st = ChainState(*(z[f"state_{a}"].copy() for a in ChainState.ARRAYS))
            energies = [z["energies"].copy()] if z["energies"].size else []
            samples = [z["samples"].copy()] if z["samples"].size else []
    except (OSError, ValueError, KeyError):
        return None  # unreadable (e.g. half-written by a killed job): start over
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    return st, rng, int(meta["sweep"]), energies, samples
