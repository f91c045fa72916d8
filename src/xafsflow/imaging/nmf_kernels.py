"""The per-block HALS pass of :mod:`xafsflow.imaging.nmf` (numba), with its NumPy reference.

One pass over a block of pixels (rows of X) given the component spectra H:
update each row of W by one HALS sweep over the k columns (exact coordinate
descent: ``w_j <- max(0, w_j + ((X H^T)_j - (W H H^T)_j) / (H H^T)_jj)``, in
column order) and accumulate the block's ``W_b^T X_b`` (k, E) and
``W_b^T W_b`` (k, k) with the updated rows, in float64.

The numba kernel does this row by row in one read of the block (no float64
copy of the block, no (rows, k) temporaries): a row's update depends only on
its own spectrum, H and ``H H^T``. Non-finite entries count as zero and masked
rows get W = 0 and contribute nothing, as in :func:`hals_block_numpy`. It
releases the GIL, so a thread pool runs blocks at once. Summation order differs
from the NumPy reference (BLAS), so the two agree to float64 rounding (tested
to 1e-10 relative).
"""

from __future__ import annotations

import numpy as np
from numba import njit


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


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _hals_rows(x, mask, w, H, HHt, WtX, WtW):  # pragma: no cover - compiled
    n, n_e = x.shape
    k = H.shape[0]
    row = np.empty(n_e)
    xh = np.empty(k)
    for i in range(n):
        if mask[i]:
            for j in range(k):
                w[i, j] = 0.0
            continue
        for e in range(n_e):
            v = np.float64(x[i, e])
            row[e] = v if np.isfinite(v) else 0.0  # fast-math flags without nnan/ninf: isfinite is kept
        for j in range(k):
            s = 0.0
            for e in range(n_e):
                s += row[e] * H[j, e]
            xh[j] = s
        for j in range(k):
            d = HHt[j, j]
            if d > 0:
                s = 0.0
                for m in range(k):
                    s += w[i, m] * HHt[m, j]
                v = w[i, j] + (xh[j] - s) / d
                w[i, j] = v if v > 0.0 else 0.0
        for j in range(k):
            wj = w[i, j]
            if wj != 0.0:
                for e in range(n_e):
                    WtX[j, e] += wj * row[e]
                for m in range(k):
                    WtW[j, m] += wj * w[i, m]


def hals_block(x, mask, w, H, HHt=None):
    """Numba kernel of :func:`hals_block_numpy`; updates ``w`` (float64, C-contiguous) in place.

    ``x`` float32 or float64 (made C-contiguous if it is not); ``mask`` bool
    (n,) or None; ``HHt`` = ``H @ H.T`` when the caller has it. Returns
    (WtX, WtW).
    """
    H = np.ascontiguousarray(H, dtype=np.float64)
    if HHt is None:
        HHt = H @ H.T
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    m = np.zeros(x.shape[0], np.bool_) if mask is None else np.ascontiguousarray(mask, dtype=np.bool_)
    k, n_e = H.shape
    WtX = np.zeros((k, n_e))
    WtW = np.zeros((k, k))
    _hals_rows(x, m, w, H, np.ascontiguousarray(HHt), WtX, WtW)
    return WtX, WtW
