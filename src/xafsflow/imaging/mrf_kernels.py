"""Colour-class site updates of a hidden Potts model (numba), with NumPy references.

Every kernel works on a *padded* block: arrays of shape ``(ny + 2, nx + 2, ...)``
whose outer ring of sites is read (as neighbours) but never written. The whole
map padded with one ring of empty sites is one such block; a Dask chunk with a
one-pixel halo taken from its neighbours is another, so one kernel serves the
single-array and the chunked sweep, and both give the same numbers.

Kernels release the GIL (so Dask threads run chunks at once) and split rows
over numba threads.

Sites carry a colour (``colour`` array, int8): sites of one colour are never
neighbours (two colours ``(y + x) % 2`` for 4-neighbours, four colours
``2 (y % 2) + x % 2`` for 8-neighbours), so all sites of a colour can be updated
at once (in parallel, or in separate chunks) and the result does not depend on
the order. Masked sites and the padding have colour -1: never updated, and with
``q = 0`` (mean field) or label -1 (Gibbs) they add nothing to a neighbour.

Gibbs sampling draws one uniform per site and update from a counter-based
generator (splitmix64 of the key, the site's *global* index and the update
counter), so a site's random stream does not depend on the chunk it is in.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53


def n_colours(neighbours: int) -> int:
    """Colour classes without two neighbours: 2 for 4-neighbours, 4 for 8-neighbours."""
    if neighbours not in (4, 8):
        raise ValueError(f"neighbours must be 4 or 8, not {neighbours}")
    return 2 if neighbours == 4 else 4


def site_colours(shape: tuple[int, int], neighbours: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Colour (int8) of every site of a ``shape`` map; -1 where ``mask`` is False (excluded)."""
    n_colours(neighbours)
    yy, xx = np.indices(shape)
    col = ((yy + xx) % 2) if neighbours == 4 else (2 * (yy % 2) + xx % 2)
    col = col.astype(np.int8)
    if mask is not None:
        col[~np.asarray(mask, bool)] = -1
    return col


# ------------------------------------------------------------ random streams
@njit(cache=True, inline="always")
def _splitmix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def _site_uniform(key, site, step):
    z = _splitmix64(key + _splitmix64(np.uint64(site) + _splitmix64(np.uint64(step))))
    return np.float64(z >> _S11) * _TWO_M53


def _splitmix64_np(x: np.ndarray) -> np.ndarray:
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def site_uniforms(key: int, sites: np.ndarray, step: int) -> np.ndarray:
    """Uniforms in [0, 1) of ``sites`` (global indices) at update ``step`` (NumPy; same as the kernel's)."""
    with np.errstate(over="ignore"):
        s = np.asarray(sites, dtype=np.int64).astype(np.uint64)
        st = _splitmix64_np(np.full(s.shape, step, dtype=np.uint64))
        z = _splitmix64_np(np.full(s.shape, key, dtype=np.uint64) + _splitmix64_np(s + st))
    return (z >> _S11).astype(np.float64) * _TWO_M53


# ------------------------------------------------------------- mean field
@njit(cache=True, parallel=True, nogil=True)
def mf_colour_update(q, h, colour, col, beta, eight):
    """Mean-field update, in place, of the interior sites of colour ``col``.

    q_i(c) <- softmax_c(h_i(c) + beta * sum_{j ~ i} q_j(c)).

    Parameters
    ----------
    q : (ny + 2, nx + 2, C) float64
        Class probabilities (0 at masked and padding sites); updated in place.
    h : (ny + 2, nx + 2, C) float64
        Per-site field: emission log-likelihood plus the class field.
    colour : (ny + 2, nx + 2) int8
        Site colours (-1: masked or padding).
    col : int
        The colour updated.
    beta : float
        Potts coupling (dimensionless, per neighbour pair).
    eight : bool
        8-neighbours (else 4).

    Returns
    -------
    float
        The largest |change| of any q_i(c) in this update, so a convergence check costs no extra pass over
        the map (a copy and a difference of the whole q took a quarter to a half of a sweep's time).
    """
    ny = q.shape[0] - 2
    nx = q.shape[1] - 2
    nc = q.shape[2]
    row_change = np.zeros(ny)
    for yy in prange(ny):
        y = yy + 1
        a = np.empty(nc)
        biggest = 0.0
        for x in range(1, nx + 1):
            if colour[y, x] != col:
                continue
            amax = -np.inf
            for c in range(nc):
                s = q[y - 1, x, c] + q[y + 1, x, c] + q[y, x - 1, c] + q[y, x + 1, c]
                if eight:
                    s = s + q[y - 1, x - 1, c] + q[y - 1, x + 1, c] + q[y + 1, x - 1, c] + q[y + 1, x + 1, c]
                a[c] = h[y, x, c] + beta * s
                if a[c] > amax:
                    amax = a[c]
            tot = 0.0
            for c in range(nc):
                a[c] = np.exp(a[c] - amax)
                tot += a[c]
            for c in range(nc):
                new = a[c] / tot
                d = abs(new - q[y, x, c])
                if d > biggest:
                    biggest = d
                q[y, x, c] = new
        row_change[yy] = biggest
    return row_change.max() if ny > 0 else 0.0


def neighbour_sum_np(q: np.ndarray, eight: bool) -> np.ndarray:
    """sum_{j ~ i} q_j for the interior sites of a padded block (NumPy; the kernel's order of terms)."""
    s = q[:-2, 1:-1] + q[2:, 1:-1] + q[1:-1, :-2] + q[1:-1, 2:]
    if eight:
        s = s + q[:-2, :-2] + q[:-2, 2:] + q[2:, :-2] + q[2:, 2:]
    return s


def mf_colour_update_np(q, h, colour, col, beta, eight):
    """NumPy reference of :func:`mf_colour_update`: returns the updated copy (the kernel's change is
    ``np.max(np.abs(new - q))``)."""
    q = q.copy()
    a = h[1:-1, 1:-1] + beta * neighbour_sum_np(q, eight)
    a = np.exp(a - a.max(axis=-1, keepdims=True))
    new = a / a.sum(axis=-1, keepdims=True)
    upd = colour[1:-1, 1:-1] == col
    inner = q[1:-1, 1:-1]
    inner[upd] = new[upd]
    return q


# ------------------------------------------------------------------ Gibbs
@njit(cache=True, parallel=True, nogil=True)
def gibbs_colour_update(z, h, colour, site, col, beta, eight, key, step):
    """Gibbs update, in place, of the interior sites of colour ``col``.

    z_i ~ P(c) proportional to exp(h_i(c) + beta * #{j ~ i : z_j = c}), drawn by
    inverting the cumulative sum with the site's uniform
    ``u(key, site_i, step)``.

    Parameters
    ----------
    z : (ny + 2, nx + 2) int32
        Labels (-1 at masked and padding sites); updated in place.
    h : (ny + 2, nx + 2, C) float64
        Per-site field.
    colour : (ny + 2, nx + 2) int8
        Site colours (-1: masked or padding).
    site : (ny + 2, nx + 2) int64
        Global site index (y * width + x of the whole map).
    col, beta, eight
        As in :func:`mf_colour_update`.
    key : uint64
        The chain's key (from its seed).
    step : int
        Update counter (sweep * colours + colour), so every update has its own uniforms.
    """
    ny = z.shape[0] - 2
    nx = z.shape[1] - 2
    nc = h.shape[2]
    for yy in prange(ny):
        y = yy + 1
        cnt = np.empty(nc)
        for x in range(1, nx + 1):
            if colour[y, x] != col:
                continue
            for c in range(nc):
                cnt[c] = 0.0
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                lab = z[y + dy, x + dx]
                if lab >= 0:
                    cnt[lab] += 1.0
            if eight:
                for dy, dx in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
                    lab = z[y + dy, x + dx]
                    if lab >= 0:
                        cnt[lab] += 1.0
            amax = -np.inf
            for c in range(nc):
                cnt[c] = h[y, x, c] + beta * cnt[c]
                if cnt[c] > amax:
                    amax = cnt[c]
            tot = 0.0
            for c in range(nc):
                tot += np.exp(cnt[c] - amax)
            u = _site_uniform(key, site[y, x], step) * tot
            acc = 0.0
            pick = nc - 1
            for c in range(nc):
                acc += np.exp(cnt[c] - amax)
                if u < acc:
                    pick = c
                    break
            z[y, x] = pick


def gibbs_colour_update_np(z, h, colour, site, col, beta, eight, key, step):
    """NumPy reference of :func:`gibbs_colour_update` (returns the updated copy)."""
    z = z.copy()
    nc = h.shape[2]
    onehot = (z[..., None] == np.arange(nc)).astype(np.float64)
    cnt = onehot[:-2, 1:-1] + onehot[2:, 1:-1] + onehot[1:-1, :-2] + onehot[1:-1, 2:]
    if eight:
        cnt = cnt + onehot[:-2, :-2] + onehot[:-2, 2:] + onehot[2:, :-2] + onehot[2:, 2:]
    a = h[1:-1, 1:-1] + beta * cnt
    p = np.exp(a - a.max(axis=-1, keepdims=True))
    cum = np.cumsum(p, axis=-1)
    u = site_uniforms(key, site[1:-1, 1:-1], step) * cum[..., -1]
    pick = np.minimum((cum <= u[..., None]).sum(axis=-1), nc - 1).astype(z.dtype)
    upd = colour[1:-1, 1:-1] == col
    inner = z[1:-1, 1:-1]
    inner[upd] = pick[upd]
    return z
