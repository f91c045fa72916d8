"""Nonnegative matrix factorization of a pixels x energies matrix, distributed over chunks of pixels.

X (npix, E) ~ W H with W >= 0 (npix, k) the abundances and H >= 0 (k, E) the
component spectra, by HALS (hierarchical alternating least squares: exact
coordinate descent, one column of W then one row of H at a time; the same
updates as scikit-learn's ``NMF(solver="cd")`` without regularization).

Distribution: X is chunked along pixels only. Each chunk updates its own rows
of W (a row depends only on its own pixel's spectrum and H) and contributes
``W_b^T X_b`` (k, E) and ``W_b^T W_b`` (k, k), in float64; these are summed by a
tree reduction and only they travel to the client, which updates H. W's
blocks stay on the workers between iterations (persisted); X is read again
each iteration, so a stack larger than the workers' memory goes through.

Two runners, same numbers (tested to 1e-6 relative): ``dask`` (above; the
path for stacks larger than memory and for a distributed cluster) and
``threads``, for a matrix that fits in memory with no cluster: X stays in
memory and a thread pool runs the numba per-block pass
(:mod:`xafsflow.imaging.nmf_kernels`, which releases the GIL) over row tiles,
summing the tiles' ``W_b^T X_b``, ``W_b^T W_b`` in tile order — no Dask graph
is built per iteration. The Dask runner's workers do the same pass with its
NumPy reference (:func:`hals_block_numpy`, tile by tile; no numba in workers,
whose memory limit may be small).

Initialization (deterministic, no random numbers): by default SPA — H from
the k purest pixels found by successive projection in the top-k SVD subspace,
W fitted to that H chunk by chunk before H moves (see :func:`nmf`); or NNDSVDa
(Boutsidis & Gallopoulos 2008, zeros filled with the mean of X). Both use the
exact truncated SVD of X obtained through its E x E Gram matrix ``X^T X``
(one tree-reduced pass; E is small for spectra), which does not depend on the
chunking beyond rounding — a documented alternative to a randomized SVD,
which is needed only when E is large.

Error: relative reconstruction error ``||X - W H||_F / ||X||_F`` after each
iteration, from the reduced quantities alone
(``||X||^2 - 2 <H, W^T X> + <W^T W, H H^T>``). It never increases (HALS is
coordinate descent on it).

Masked pixels (``mask`` True) are excluded: their rows of X and W are zero
and they contribute nothing. Non-finite entries are set to zero. Negative
entries of X (noise about a zero normalized pre-edge) are kept and counted:
the least-squares objective is defined for them and W, H stay nonnegative,
while clipping them to zero would add a positive pre-edge bias that varies
with each pixel's noise and looks like one more component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

_INIT_EPS = 1e-6  # NNDSVD entries below this are treated as zero (then filled with the mean)


@dataclass
class NMFResult:
    """One factorization.

    Attributes
    ----------
    W : numpy.ndarray or dask.array.Array, shape (npix, k)
        Abundances (zero on masked pixels); a Dask array (blocks aligned with
        X's pixel chunks) when X was one.
    H : numpy.ndarray, shape (k, E)
        Component spectra, each scaled to mean 1 over the top tenth of the
        energy grid (the post-edge of normalized XANES), so W holds fractions
        of an edge step; sorted by edge position (see :func:`edge_position`).
    errors : numpy.ndarray
        Relative reconstruction error after each iteration.
    iterations : int
    converged : bool
        Stopped on the relative-change tolerance (not on ``max_iter``).
    edge_positions : numpy.ndarray, shape (k,)
        Half-height edge energy of each component (eV, or energy index when no
        energies were given).
    counts : dict
        ``pixels`` used, ``masked`` pixels, ``negative`` entries (kept) and
        ``non_finite`` entries (set to zero).
    """

    W: object
    H: np.ndarray
    errors: np.ndarray
    iterations: int
    converged: bool
    edge_positions: np.ndarray
    counts: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- blocks
def _clean(xb, mb, count: bool = True) -> tuple[np.ndarray, int, int]:
    """A block of X as float64 with masked rows and non-finite entries zero; negative entries kept
    (and counted, with the non-finite ones, when ``count``)."""
    x = np.array(xb, dtype=np.float64, copy=True)
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad:
        x[bad] = 0.0
    if mb is not None:
        x[np.asarray(mb, dtype=bool)] = 0.0
    n_neg = int(np.count_nonzero(x < 0)) if count else 0
    return x, n_neg, n_bad


def _block_gram(xb, mb):
    """Gram matrix, column sums, and clipped/non-finite counts of one block."""
    x, n_neg, n_bad = _clean(xb, mb)
    return x.T @ x, x.sum(axis=0), np.array([n_neg, n_bad], dtype=np.int64)


def _block_u_norms(xb, mb, V, s):
    """Squared norms of the positive and negative parts of this block's rows of U = X V / s."""
    x, _, _ = _clean(xb, mb)
    u = (x @ V) / s
    return np.stack([np.sum(np.maximum(u, 0) ** 2, axis=0), np.sum(np.minimum(u, 0) ** 2, axis=0)])


def _block_init_w(xb, mb, V, s, w_scale, sign, avg):
    """NNDSVDa rows of W for one block (see :func:`_nndsvda_from_svd`)."""
    x, _, _ = _clean(xb, mb)
    u = (x @ V) / s
    w = np.where(sign > 0, np.maximum(u, 0), np.maximum(-u, 0)) * w_scale
    w[w < _INIT_EPS] = 0.0
    w[w == 0] = avg
    if mb is not None:
        w[np.asarray(mb, dtype=bool)] = 0.0
    return w


def _block_spa(xb, mb, V, P, offset):
    """Largest residual norm (after projector P) of this block's rows of X V / row sum, its global index and row.

    Rows are scaled to unit sum over energies, so pixels are compared by
    composition, not thickness; masked and zero rows never win.
    """
    x, _, _ = _clean(xb, mb)
    tot = x.sum(axis=1)
    ok = tot > 0
    if not ok.any():
        return (-1.0, -1, np.zeros(V.shape[1]))
    y = np.zeros((x.shape[0], V.shape[1]))
    y[ok] = (x[ok] @ V) / tot[ok, None]
    r = np.linalg.norm(y @ P, axis=1)
    r[~ok] = -1.0
    i = int(np.argmax(r))  # first of equal maxima: the lowest global index
    return (float(r[i]), offset + i, y[i])


_W_START_SWEEPS = 50  # HALS sweeps of W alone (H fixed) for the SPA start: W close to its least-squares optimum


def _block_w_given_h(xb, mb, H):
    """This block's rows of W fitted to a fixed H by HALS sweeps from zero (no communication)."""
    x, _, _ = _clean(xb, mb)
    return _hals_update_w(x, np.zeros((x.shape[0], H.shape[0])), H, _W_START_SWEEPS)


def _best(*cands):
    """The candidate with the largest norm, the lowest index among equals (independent of the chunking)."""
    return max(cands, key=lambda c: (c[0], -c[1]))


def _spa_components(best_of, V, k: int) -> np.ndarray:
    """H (k, E) by successive projection: ``best_of(P)`` returns the best row of X V under projector P.

    Whatever runs ``best_of`` (Dask blocks or in-process tiles), only the projector and the winning
    k-vector move between the passes.
    """
    P = np.eye(k)
    rows = []
    for _ in range(k):
        best = best_of(P)
        rows.append(best[2])
        u = (best[2] @ P) / max(best[0], 1e-300)
        P = P - np.outer(u, u)
    H = np.maximum(np.array(rows) @ V.T, 0.0)
    H[H < _INIT_EPS * max(H.max(), 1e-300)] = 0.0
    return H


def _hals_update_w(x, w, H, n_sweeps):
    """HALS sweeps over the columns of W for rows ``x`` given H (in place on ``w``)."""
    HHt = H @ H.T
    XHt = x @ H.T  # fixed while H is: computed once for all sweeps
    for _ in range(n_sweeps):
        for j in range(H.shape[0]):
            if HHt[j, j] > 0:
                w[:, j] = np.maximum(w[:, j] + (XHt[:, j] - w @ HHt[:, j]) / HHt[j, j], 0.0)
    return w


def hals_block_numpy(x, mask, w, H):
    """NumPy reference: one HALS sweep of W's rows for block ``x`` (n, E) given H (k, E).

    Parameters
    ----------
    x : numpy.ndarray, shape (n, E)
        Block of X (any float dtype); non-finite entries count as zero.
    mask : numpy.ndarray of bool, shape (n,), or None
        True for rows excluded (W = 0 there, no contribution).
    w : numpy.ndarray, shape (n, k)
        Current rows of W (not modified).
    H : numpy.ndarray, shape (k, E)
        Component spectra.

    Returns
    -------
    w_new : numpy.ndarray, shape (n, k), float64
    WtX : numpy.ndarray, shape (k, E), float64
        ``w_new^T x``.
    WtW : numpy.ndarray, shape (k, k), float64
        ``w_new^T w_new``.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = 0.0
    if mask is not None:
        x[np.asarray(mask, dtype=bool)] = 0.0
    w = np.array(w, dtype=np.float64, copy=True)
    HHt = H @ H.T
    XHt = x @ H.T
    for j in range(H.shape[0]):
        if HHt[j, j] > 0:
            w[:, j] = np.maximum(w[:, j] + (XHt[:, j] - w @ HHt[:, j]) / HHt[j, j], 0.0)
    if mask is not None:
        w[np.asarray(mask, dtype=bool)] = 0.0
    return w, w.T @ x, w.T @ w


def _block_step(xb, mb, wb, H):
    """Update this block's rows of W; return them with W_b^T X_b and W_b^T W_b.

    The Dask runner's task: :func:`hals_block_numpy` over tiles of
    :data:`TILE_ROWS` rows, so the float64 temporaries are one tile's whatever
    the chunk. NumPy, not the numba kernel: importing numba and loading the
    kernel costs a worker some 150 MB (measured: 171 MB -> 324 MB resident),
    more than a small worker memory limit leaves.
    """
    n, k = xb.shape[0], H.shape[0]
    w = np.empty((n, k))
    WtX, WtW = np.zeros((k, xb.shape[1])), np.zeros((k, k))
    for i0 in range(0, n, TILE_ROWS):
        sl = slice(i0, min(i0 + TILE_ROWS, n))
        w[sl], a, b = hals_block_numpy(xb[sl], None if mb is None else np.asarray(mb)[sl], wb[sl], H)
        WtX += a
        WtW += b
    return w, (WtX, WtW)


def _hals_update_h(H, WtX, WtW):
    """One HALS sweep over the rows of H given W^T X and W^T W (returns a new H)."""
    H = H.copy()
    for j in range(H.shape[0]):
        if WtW[j, j] > 0:
            H[j] = np.maximum(H[j] + (WtX[j] - WtW[j] @ H) / WtW[j, j], 0.0)
    return H


def _relative_error(xx: float, H, WtX, WtW) -> float:
    err2 = xx - 2.0 * float(np.sum(H * WtX)) + float(np.sum(WtW * (H @ H.T)))
    return float(np.sqrt(max(err2, 0.0) / xx)) if xx > 0 else 0.0


def _add(*parts):
    """Elementwise sum of tuples of arrays (one level of the tree reduction)."""
    if isinstance(parts[0], tuple):
        return tuple(sum(p[i] for p in parts) for i in range(len(parts[0])))
    return sum(parts)


def _tree_sum(items: list, split_every: int = 8):
    return _tree_sum_with(items, _add, split_every)


def _tree_sum_with(items: list, combine, split_every: int = 8):
    """Tree reduction of delayed items with ``combine`` (in block order, so deterministic)."""
    from dask import delayed

    items = list(items)
    while len(items) > 1:
        items = [delayed(combine)(*items[i:i + split_every]) for i in range(0, len(items), split_every)]
    return items[0]


# ------------------------------------------------------------------------------ init
def _svd_from_gram(G: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k right singular vectors V (E, k) and singular values s (k,) of X from G = X^T X."""
    evals, evecs = np.linalg.eigh(G)
    order = np.argsort(evals)[::-1][:k]
    s = np.sqrt(np.maximum(evals[order], 0.0))
    s[s <= 0] = np.finfo(float).tiny
    return evecs[:, order], s


def _nndsvda_from_svd(V, s, u_norms2, avg):
    """H and the per-column (scale, sign) of W of NNDSVDa, from V, s and the norms of U's parts.

    Column j > 0 of W takes the positive or negative part of u_j (whichever,
    with the matching part of v_j, has the larger product of norms) normalized;
    the first takes |u_1|. Entries below 1e-6 are filled with ``avg``.
    """
    k = s.size
    H = np.zeros((k, V.shape[0]))
    w_scale = np.zeros(k)
    sign = np.ones(k)
    H[0] = np.sqrt(s[0]) * np.abs(V[:, 0])
    # first column: |u_1| (sign-invariant), scaled by sqrt(s_1); taken from the positive or negative part
    # whichever is larger (u_1 has one sign up to rounding)
    sign[0] = 1.0 if u_norms2[0, 0] >= u_norms2[1, 0] else -1.0
    w_scale[0] = np.sqrt(s[0])
    for j in range(1, k):
        v = V[:, j]
        vp, vn = np.maximum(v, 0), np.maximum(-v, 0)
        up_n, un_n = np.sqrt(u_norms2[0, j]), np.sqrt(u_norms2[1, j])
        vp_n, vn_n = np.linalg.norm(vp), np.linalg.norm(vn)
        m_p, m_n = up_n * vp_n, un_n * vn_n
        if m_p > m_n:
            u_n, vv, sigma, sg = up_n, vp / max(vp_n, 1e-300), m_p, 1.0
        else:
            u_n, vv, sigma, sg = un_n, vn / max(vn_n, 1e-300), m_n, -1.0
        lbd = np.sqrt(s[j] * sigma)
        H[j] = lbd * vv
        w_scale[j] = lbd / max(u_n, 1e-300)
        sign[j] = sg
    H[H < _INIT_EPS] = 0.0
    H[H == 0] = avg
    return H, w_scale, sign


def nndsvda_init(X: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NNDSVDa initial (W, H) of an in-memory X (npix, E), from the SVD through X^T X.

    The same definition the distributed :func:`nmf` uses (one chunk).
    """
    x, _, _ = _clean(X, mask)
    n = x.shape[0] - (0 if mask is None else int(np.sum(mask)))
    V, s = _svd_from_gram(x.T @ x, k)
    avg = float(x.sum()) / max(n * x.shape[1], 1)
    u_norms2 = _block_u_norms(x, None, V, s)
    H, w_scale, sign = _nndsvda_from_svd(V, s, u_norms2, avg)
    W = _block_init_w(x, mask, V, s, w_scale, sign, avg)
    return W, H


# --------------------------------------------------------------------------- sorting
def edge_position(H: np.ndarray, energy: np.ndarray | None = None) -> np.ndarray:
    """Half-height edge energy of each component: where it first rises to half its maximum.

    Linear interpolation between grid points; energy index when ``energy`` is None.
    """
    H = np.atleast_2d(H)
    e = np.arange(H.shape[1], dtype=float) if energy is None else np.asarray(energy, dtype=float)
    pos = np.empty(H.shape[0])
    for j, h in enumerate(H):
        half = 0.5 * float(np.max(h))
        i = int(np.argmax(h >= half)) if half > 0 else 0
        if i == 0 or half <= 0:
            pos[j] = e[0]
        else:
            f = (half - h[i - 1]) / (h[i] - h[i - 1])
            pos[j] = e[i - 1] + f * (e[i] - e[i - 1])
    return pos


def _scales_and_order(H: np.ndarray, energy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row scales (H row / scale has mean 1 over the top tenth of energies, else max 1) and sort order.

    Order: by half-height edge position, ties by the spectrum's centroid then index.
    """
    k, E = H.shape
    top = H[:, E - max(1, E // 10):].mean(axis=1)
    mx = H.max(axis=1)
    scale = np.where(top > 1e-6 * np.maximum(mx, 1e-300), top, np.where(mx > 0, mx, 1.0))
    Hs = H / scale[:, None]
    pos = edge_position(Hs, energy)
    e = np.arange(E, dtype=float) if energy is None else np.asarray(energy, dtype=float)
    centroid = (Hs * e).sum(axis=1) / np.maximum(Hs.sum(axis=1), 1e-300)
    order = np.lexsort((np.arange(k), np.round(centroid, 9), np.round(pos, 9)))
    return scale, order, pos[order]


# ---------------------------------------------------------------------- distributed
def _pixel_blocks(X, mask):
    """Delayed (npix_b, E) blocks of X and (npix_b,) blocks of the mask, aligned."""
    import dask.array as da

    if not isinstance(X, da.Array):
        X = da.from_array(np.asarray(X), chunks=(X.shape[0], X.shape[1]))
    if X.ndim != 2:
        raise ValueError(f"X must be (pixels, energies), got shape {X.shape}")
    if len(X.chunks[1]) != 1:
        X = X.rechunk({1: -1})
    xb = list(X.to_delayed()[:, 0])
    if mask is None:
        mb = [None] * len(xb)
    else:
        m = mask if isinstance(mask, da.Array) else da.from_array(np.asarray(mask, dtype=bool), chunks=-1)
        m = m.astype(bool).rechunk((X.chunks[0],))
        mb = list(m.to_delayed())
    return X, xb, mb


def spa_select(Y: np.ndarray, k: int) -> list[int]:
    """Successive projection (Gillis & Vavasis 2014) on in-memory rows Y (already scaled): k row indices."""
    P = np.eye(Y.shape[1])
    chosen = []
    for _ in range(k):
        r = np.linalg.norm(Y @ P, axis=1)
        i = int(np.argmax(r))
        chosen.append(i)
        u = (Y[i] @ P) / max(r[i], 1e-300)
        P = P - np.outer(u, u)
    return chosen


#: Rows per tile of the in-process runner (one kernel call per tile and iteration).
TILE_ROWS = 4096
#: ``runner="auto"`` runs in process when X's bytes are at most this (and no distributed client is active).
IN_MEMORY_MAX_BYTES = 2e9


def _active_client() -> bool:
    """A ``distributed.Client`` is the current scheduler."""
    try:
        from distributed import default_client
        default_client()
        return True
    except (ImportError, ValueError):
        return False


def _choose_runner(X, runner: str, max_bytes: float) -> str:
    import dask.array as da

    if runner not in ("auto", "threads", "dask"):
        raise ValueError(f"unknown runner {runner!r} (auto, threads or dask)")
    if runner != "auto":
        return runner
    if not isinstance(X, da.Array):
        return "threads"
    return "dask" if (_active_client() or X.nbytes > max_bytes) else "threads"


def nmf(X, k: int, mask=None, energy=None, max_iter: int = 500, tol: float = 1e-5, init: str = "spa",
        progress: Callable[[int, float], None] | None = None, target_error: float | None = None,
        runner: str = "auto", threads: int | None = None,
        in_memory_max_bytes: float = IN_MEMORY_MAX_BYTES) -> NMFResult:
    """Distributed HALS NMF of X (npix, E) ~ W H, chunked over pixels.

    Parameters
    ----------
    X : dask.array.Array or numpy.ndarray, shape (npix, E)
        Data (nonnegative up to noise; negative entries are kept), one spectrum per
        row, chunked along pixels only (the energy axis is made one chunk).
        float32 is fine; every reduction is float64.
    k : int
        Number of components.
    mask : array_like of bool, shape (npix,), optional
        True for pixels excluded from the factorization (W = 0 there).
    energy : array_like, shape (E,), optional
        Energies (eV) for the edge positions that order the components.
    max_iter : int
        Maximum number of iterations (one sweep of W then one of H).
    tol : float
        Stop when the relative error's relative decrease in one iteration,
        ``(e_{t-1} - e_t) / e_t``, falls below ``tol`` (0: run ``max_iter``).
    init : {"spa", "nndsvda"}
        ``spa``: H starts from k pixels found by the successive projection
        algorithm in the top-k SVD subspace (rows scaled to unit sum, so
        thickness does not count), W from zero. XANES components share the
        same post-edge, so many exact factorizations exist; starting at the
        purest pixels selects the one whose spectra are those of the purest
        regions (the truth when pure regions exist); W is then fitted to that H
        alone (50 HALS sweeps per chunk, no communication) before H moves, so
        the iterations start at, and stay near, that solution. ``nndsvda``: NNDSVDa.
    progress : callable, optional
        Called as ``progress(iteration, relative_error)`` after each iteration.
    target_error : float, optional
        Also stop once the relative error is at or below this (benchmarks
        compare solvers at the same error).
    runner : {"auto", "threads", "dask"}
        ``dask``: one Dask task per pixel chunk and iteration, W's blocks
        persisted, X read again each iteration (stacks larger than memory, a
        distributed cluster). ``threads``: X held in memory (as given, float32
        stays float32), a thread pool over tiles of :data:`TILE_ROWS` rows.
        ``auto``: ``threads`` for a NumPy X, or a Dask X of at most
        ``in_memory_max_bytes`` when no ``distributed.Client`` is active;
        else ``dask``. Same result to float64 rounding (tested to 1e-6).
    threads : int, optional
        Threads of the ``threads`` runner (default: Dask's ``num_workers``
        setting, else the CPU count).
    in_memory_max_bytes : float
        Largest X (bytes, as stored) that ``auto`` holds in memory.

    Returns
    -------
    NMFResult
        W as a Dask array of persisted blocks when X is a Dask array, else NumPy.

    Notes
    -----
    The ``dask`` runner uses the current Dask scheduler (a ``distributed.Client``
    if one is active); never creates a cluster. For the same chunking the result is
    bit-identical; for another chunking it differs only by float64 rounding
    in the sums (tested to 1e-6 relative against :func:`nmf_reference`).
    """
    import dask
    import dask.array as da
    from dask import delayed

    is_dask = isinstance(X, da.Array)
    if _choose_runner(X, runner, in_memory_max_bytes) == "threads":
        return _nmf_threads(X, k, mask, energy, max_iter, tol, init, progress, target_error, threads)
    X, xb, mb = _pixel_blocks(X, mask)
    npix, E = X.shape
    if not 1 <= k <= min(npix, E):
        raise ValueError(f"k = {k} components needs 1 <= k <= min(pixels, energies) = {min(npix, E)}")
    n_masked = 0 if mask is None else int(np.sum(np.asarray(mask)))
    n_used = npix - n_masked
    if n_used < k:
        raise ValueError(f"only {n_used} unmasked pixels for k = {k} components")

    # pass 1: Gram matrix (exact SVD through X^T X), sums and counts
    G, colsum, cnt = dask.compute(_tree_sum([delayed(_block_gram, nout=3)(x, m) for x, m in zip(xb, mb)]))[0]
    xx = float(np.trace(G))
    if xx <= 0:
        raise ValueError("X is zero on every unmasked pixel: nothing to factorize")
    V, s = _svd_from_gram(G, k)
    avg = float(colsum.sum()) / (n_used * E)
    # pass 2: norms of U's positive and negative parts, for NNDSVD's choice of sign per component
    u_norms2 = dask.compute(_tree_sum([delayed(_block_u_norms)(x, m, V, s) for x, m in zip(xb, mb)]))[0]
    if init == "nndsvda":
        H, w_scale, sign = _nndsvda_from_svd(V, s, u_norms2, avg)
        W_blocks = [delayed(_block_init_w)(x, m, V, s, w_scale, sign, avg) for x, m in zip(xb, mb)]
    elif init == "spa":
        offsets = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]])
        # one pass over X per component; only (norm, index, k-vector) travel
        H = _spa_components(lambda P: dask.compute(_tree_sum_with([delayed(_block_spa)(x, m, V, P, int(o))
                                                                   for x, m, o in zip(xb, mb, offsets)], _best))[0],
                            V, k)
        W_blocks = [delayed(_block_w_given_h)(x, m, H) for x, m in zip(xb, mb)]
    else:
        raise ValueError(f"unknown init {init!r} (spa or nndsvda)")
    (W_blocks,) = dask.persist(W_blocks)

    state = {"W": W_blocks}

    def sweep(H):
        outs = [delayed(_block_step, nout=2)(x, m, w, H) for x, m, w in zip(xb, mb, state["W"])]
        new_W = [o[0] for o in outs]
        total = _tree_sum([o[1] for o in outs])
        # no graph optimization: culling re-tokenizes the graph each iteration and costs more than the work
        new_W, total = dask.persist(new_W, total, optimize_graph=False)
        WtX, WtW = dask.compute(total, optimize_graph=False)[0]
        state["W"] = new_W
        return WtX, WtW

    H, errors, converged = _iterate(sweep, H, xx, max_iter, tol, progress, target_error)
    W_blocks = state["W"]

    scale, order, pos = _scales_and_order(H, energy)
    H_out = (H / scale[:, None])[order]
    col = (scale, order)

    def _finish(w, col=col):
        return (w * col[0][None, :])[:, col[1]]

    W_blocks = [delayed(_finish)(w) for w in W_blocks]
    parts = [da.from_delayed(w, shape=(c, k), dtype=np.float64) for w, c in zip(W_blocks, X.chunks[0])]
    W = da.concatenate(parts, axis=0)
    if is_dask:
        (W,) = dask.persist(W)
    else:
        W = W.compute()
    return NMFResult(W=W, H=H_out, errors=np.asarray(errors), iterations=len(errors), converged=converged,
                     edge_positions=pos, counts={"pixels": n_used, "masked": n_masked,
                                                 "negative": int(cnt[0]), "non_finite": int(cnt[1])})


def _iterate(sweep, H, xx: float, max_iter: int, tol: float, progress, target_error):
    """The iterations shared by both runners: ``sweep(H)`` updates W and returns (W^T X, W^T W); then H."""
    errors: list[float] = []
    converged = False
    for it in range(1, max_iter + 1):
        WtX, WtW = sweep(H)
        H = _hals_update_h(H, WtX, WtW)
        errors.append(_relative_error(xx, H, WtX, WtW))
        if progress is not None:
            progress(it, errors[-1])
        if tol > 0 and it >= 2 and errors[-2] - errors[-1] < tol * errors[-1]:
            converged = True
            break
        if target_error is not None and errors[-1] <= target_error:
            break
    return H, errors, converged


def _default_threads() -> int:
    import os

    import dask

    n = dask.config.get("num_workers", None)
    return max(1, int(n) if n else (os.cpu_count() or 1))


def _nmf_threads(X, k, mask, energy, max_iter, tol, init, progress, target_error, threads) -> NMFResult:
    """The in-process runner of :func:`nmf`: X in memory, a thread pool over row tiles, the numba kernel."""
    from concurrent.futures import ThreadPoolExecutor

    import dask.array as da

    from xafsflow.imaging.nmf_kernels import hals_block

    dask_in = isinstance(X, da.Array)
    chunks = X.chunks[0] if dask_in else None
    x = X.compute() if dask_in else np.asarray(X)
    if x.ndim != 2:
        raise ValueError(f"X must be (pixels, energies), got shape {x.shape}")
    x = np.ascontiguousarray(x if x.dtype in (np.float32, np.float64) else x.astype(np.float64))
    npix, E = x.shape
    if not 1 <= k <= min(npix, E):
        raise ValueError(f"k = {k} components needs 1 <= k <= min(pixels, energies) = {min(npix, E)}")
    if isinstance(mask, da.Array):
        mask = mask.compute()
    m = np.zeros(npix, bool) if mask is None else np.asarray(mask, dtype=bool).reshape(npix)
    n_masked = int(m.sum())
    n_used = npix - n_masked
    if n_used < k:
        raise ValueError(f"only {n_used} unmasked pixels for k = {k} components")
    tiles = [(i, min(i + TILE_ROWS, npix)) for i in range(0, npix, TILE_ROWS)]
    n_threads = max(1, min(int(threads) if threads else _default_threads(), len(tiles)))

    with ThreadPoolExecutor(n_threads) as pool:
        def tile_map(fn):
            return list(pool.map(fn, tiles))

        # pass 1: Gram matrix, sums and counts, tile by tile (float64 copies of one tile at a time)
        parts = tile_map(lambda t: _block_gram(x[t[0]:t[1]], m[t[0]:t[1]]))
        G, colsum, cnt = (sum(p[i] for p in parts) for i in range(3))
        xx = float(np.trace(G))
        if xx <= 0:
            raise ValueError("X is zero on every unmasked pixel: nothing to factorize")
        V, s = _svd_from_gram(G, k)
        avg = float(colsum.sum()) / (n_used * E)
        W = np.zeros((npix, k))
        if init == "nndsvda":
            u_norms2 = sum(tile_map(lambda t: _block_u_norms(x[t[0]:t[1]], m[t[0]:t[1]], V, s)))
            H, w_scale, sign = _nndsvda_from_svd(V, s, u_norms2, avg)

            def start(t):
                W[t[0]:t[1]] = _block_init_w(x[t[0]:t[1]], m[t[0]:t[1]], V, s, w_scale, sign, avg)
        elif init == "spa":
            H = _spa_components(lambda P: _best(*tile_map(lambda t: _block_spa(x[t[0]:t[1]], m[t[0]:t[1]], V, P,
                                                                                 t[0]))), V, k)

            def start(t):
                W[t[0]:t[1]] = _block_w_given_h(x[t[0]:t[1]], m[t[0]:t[1]], H)
        else:
            raise ValueError(f"unknown init {init!r} (spa or nndsvda)")
        tile_map(start)

        def sweep(H):
            HHt = H @ H.T
            parts = tile_map(lambda t: hals_block(x[t[0]:t[1]], m[t[0]:t[1]], W[t[0]:t[1]], H, HHt))
            return sum(p[0] for p in parts), sum(p[1] for p in parts)  # in tile order: deterministic

        H, errors, converged = _iterate(sweep, H, xx, max_iter, tol, progress, target_error)

    scale, order, pos = _scales_and_order(H, energy)
    W_out = (W * scale[None, :])[:, order]
    if dask_in:
        W_out = da.from_array(W_out, chunks=(chunks, k))
    return NMFResult(W=W_out, H=(H / scale[:, None])[order], errors=np.asarray(errors), iterations=len(errors),
                     converged=converged, edge_positions=pos,
                     counts={"pixels": n_used, "masked": n_masked, "negative": int(cnt[0]), "non_finite": int(cnt[1])})


def initial_factors(X: np.ndarray, k: int, mask=None, init: str = "spa") -> tuple[np.ndarray, np.ndarray]:
    """In-memory (W, H) start of :func:`nmf` (same definitions, one chunk)."""
    if init == "nndsvda":
        return nndsvda_init(X, k, mask)
    x, _, _ = _clean(X, mask)
    V, _ = _svd_from_gram(x.T @ x, k)
    tot = x.sum(axis=1)
    ok = tot > 0
    Y = np.zeros((x.shape[0], k))
    Y[ok] = (x[ok] @ V) / tot[ok, None]
    H = np.maximum(Y[spa_select(Y, k)] @ V.T, 0.0)
    H[H < _INIT_EPS * max(H.max(), 1e-300)] = 0.0
    return _block_w_given_h(x, mask, H), H


def nmf_reference(X: np.ndarray, k: int, mask=None, energy=None, max_iter: int = 500, tol: float = 1e-5,
                  init="spa") -> NMFResult:
    """Single-chunk, in-memory NumPy HALS NMF: the reference :func:`nmf` is tested against.

    Whole-matrix updates (W^T X and W^T W computed at once), the same
    initialization (:func:`initial_factors`, or ``init`` = (W, H)), stopping rule,
    scaling and ordering.
    """
    x, n_neg, n_bad = _clean(X, mask)
    m = np.zeros(x.shape[0], bool) if mask is None else np.asarray(mask, dtype=bool)
    W, H = (initial_factors(X, k, mask, init) if isinstance(init, str)
            else (np.array(init[0], float), np.array(init[1], float)))
    xx = float(np.sum(x * x))
    errors: list[float] = []
    converged = False
    for it in range(1, max_iter + 1):
        # W: coordinate descent on each column given H
        HHt, XHt = H @ H.T, x @ H.T
        for j in range(k):
            if HHt[j, j] > 0:
                W[:, j] = np.maximum(W[:, j] - (W @ HHt[:, j] - XHt[:, j]) / HHt[j, j], 0.0)
        W[m] = 0.0
        # H: coordinate descent on each row given W
        WtW, WtX = W.T @ W, W.T @ x
        for j in range(k):
            if WtW[j, j] > 0:
                H[j] = np.maximum(H[j] - (WtW[j] @ H - WtX[j]) / WtW[j, j], 0.0)
        errors.append(float(np.linalg.norm(x - W @ H) / np.sqrt(xx)))
        if tol > 0 and it >= 2 and errors[-2] - errors[-1] < tol * errors[-1]:
            converged = True
            break
    scale, order, pos = _scales_and_order(H, energy)
    return NMFResult(W=(W * scale[None, :])[:, order], H=(H / scale[:, None])[order], errors=np.asarray(errors),
                     iterations=len(errors), converged=converged, edge_positions=pos,
                     counts={"pixels": int((~m).sum()), "masked": int(m.sum()), "negative": n_neg,
                             "non_finite": n_bad})


# ------------------------------------------------------------------------ choice of k
def choose_k(ks, errors, gain: float) -> int:
    """The number of components by the error-curve criterion.

    The smallest k in ``ks`` (ascending) whose next k lowers the relative
    reconstruction error by less than the fraction ``gain`` of it
    (``e(k) - e(k+1) < gain * e(k)``): past the true number of components the
    extra component only fits noise, which lowers the error by about 1/(2E)
    of itself, while a missing component leaves structured residual far above
    the noise. Per-pixel normalization leaves weaker structure too (each
    pixel's fitted pre-edge line extrapolated over the scan, a random ramp),
    which an extra component fits for a gain of some 10-20 %; the product's
    default gain, 0.25, treats such gains as no new phase. The largest k when
    every step gains more.
    """
    ks = list(ks)
    for i in range(len(ks) - 1):
        if errors[i] - errors[i + 1] < gain * errors[i]:
            return ks[i]
    return ks[-1]


def select_k(X, k_min: int, k_max: int, mask=None, energy=None, max_iter: int = 500, tol: float = 1e-5,
             k_gain: float = 0.25, init: str = "spa", progress: Callable[[int, int, float], None] | None = None,
             **runner_options):
    """Fit k = k_min..k_max, choose k by :func:`choose_k`; returns (k, ks, final errors, {k: NMFResult}).

    ``runner_options``: ``runner``, ``threads``, ``in_memory_max_bytes`` of :func:`nmf`. With the
    ``threads`` runner a Dask X is read into memory once for all k.
    """
    import dask.array as da

    ks = list(range(k_min, k_max + 1))
    if isinstance(X, da.Array) and _choose_runner(X, runner_options.get("runner", "auto"),
                                                  runner_options.get("in_memory_max_bytes",
                                                                     IN_MEMORY_MAX_BYTES)) == "threads":
        X = da.from_array(X.compute(), chunks=X.chunks)  # read once; W still comes back as a Dask array
    fits = {}
    for k in ks:
        cb = None if progress is None else (lambda it, e, k=k: progress(k, it, e))
        fits[k] = nmf(X, k, mask=mask, energy=energy, max_iter=max_iter, tol=tol, init=init, progress=cb,
                      **runner_options)
    errs = [float(fits[k].errors[-1]) for k in ks]
    return choose_k(ks, errs, k_gain), ks, np.asarray(errs), fits


# --------------------------------------------------------------------------- scoring
def match_components(H, W, H_true, F_true, mean_spectrum) -> dict:
    """Match estimated components to true ones (Hungarian assignment) and score them.

    Parameters
    ----------
    H : numpy.ndarray, shape (k, E)
        Estimated spectra.
    W : numpy.ndarray, shape (npix, k)
        Estimated abundances of the pixels scored.
    H_true : numpy.ndarray, shape (p, E)
        True spectra.
    F_true : numpy.ndarray, shape (npix, p)
        True abundances of the same pixels.
    mean_spectrum : numpy.ndarray, shape (E,)
        Mean spectrum of all pixels, subtracted before the cosine (raw cosines
        of XANES are near 1 even for wrong answers when edges differ by eV).

    Returns
    -------
    dict
        ``pairs`` [(estimated, true)], ``cosine`` (mean-subtracted cosine of each
        pair's spectra) and ``correlation`` (Pearson correlation of each pair's
        abundance maps), maximizing the summed cosine plus correlation.
    """
    from scipy.optimize import linear_sum_assignment

    def unit(a):
        a = np.asarray(a, float) - mean_spectrum
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)

    cos = unit(H) @ unit(H_true).T
    corr = np.array([[np.corrcoef(W[:, i], F_true[:, j])[0, 1] if np.std(W[:, i]) > 0 and np.std(F_true[:, j]) > 0
                      else 0.0 for j in range(F_true.shape[1])] for i in range(W.shape[1])])
    rows, cols = linear_sum_assignment(-(cos + corr))
    return {"pairs": list(zip(rows.tolist(), cols.tolist())), "cosine": cos[rows, cols],
            "correlation": corr[rows, cols]}
