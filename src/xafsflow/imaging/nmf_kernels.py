"""The per-block HALS pass of :mod:`xafsflow.imaging.nmf` (numba), with its NumPy reference.

One pass over a block of pixels (rows of X) given the component spectra H:
update each row of W by one HALS sweep over the k columns (exact coordinate
descent: ``w_j <- max(0, w_j + ((X H^T)_j - (W H H^T)_j) / (H H^T)_jj)``, in
column order) and accumulate the block's ``W_b^T X_b`` (k, E) and
``W_b^T W_b`` (k, k) with the updated rows, in float64.

The numba kernel does this row by row in one read of the block (no float64
copy of the block, no (rows, k) temporaries): a row's update depends only on
its own spectrum, H and ``H H^T``. Non-finite entries count as zero and masked
rows get W = 0 and contribute nothing, as in :func:`hals_block_numpy` (defined in
:mod:`xafsflow.imaging.nmf`, which does not import numba, and used by the Dask
runner's workers). It
releases the GIL, so a thread pool runs blocks at once. Summation order differs
from the NumPy reference (BLAS), so the two agree to float64 rounding (tested
to 1e-10 relative).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from xafsflow.imaging.nmf import hals_block_numpy  # the reference, beside the kernel (numba-free module)

__all__ = ["hals_block", "hals_block_numpy"]


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
