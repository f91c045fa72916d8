"""Per-pixel helpers for (energy, y, x) stacks: normalization that tolerates empty pixels, edge-step mask,
optical density.

A stack has pixels with no sample (or too thin, or saturated): their
spectra have no edge, and :func:`xafsflow.xas.normalize.normalize_edge`
rightly refuses them. Here such pixels get NaN (and are counted) instead of
failing the whole stack; the mask of :func:`edge_step_mask` then excludes
them from what follows.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from xafsflow.errors import AnalysisInputError

#: Largest operator (uniform-grid rows x energies) :func:`find_e0_block` builds; finer grids use
#: :func:`xafsflow.xas.normalize.find_e0` (8 MB of float64).
_E0_OPERATOR_MAX = 1_000_000
_e0_operators: dict = {}


def _e0_operator(energy: np.ndarray, smooth_ev: float):
    """The linear map from mu (E,) to the derivative on the part of the uniform grid that find_e0 searches.

    find_e0's interpolation onto a uniform grid, Gaussian smoothing
    (``mode='nearest'``) and central differences are all linear in mu, so
    their composition is one matrix D: applied to the identity it gives D
    exactly, and ``D @ mu`` replaces three passes over every pixel of a block
    by one matrix product. Returns (D rows lo-1 .. hi, grid, lo, hi, h) or
    None when the operator would be too large. Cached per energy grid.
    """
    from scipy.ndimage import gaussian_filter1d

    from xafsflow.xas import normalize as nz

    key = (energy.tobytes(), float(smooth_ev))
    cached = _e0_operators.get(key)  # one lookup: another thread may clear the cache between two
    if cached is not None:
        return cached
    grid, h = nz._uniform_grid(energy)
    if grid.size * energy.size > _E0_OPERATOR_MAX or energy.size < 2 * nz._N_END_SKIP + 3:
        return None
    d = nz._interp_columns(grid, energy, np.eye(energy.size))
    if smooth_ev > 0:
        d = gaussian_filter1d(d, sigma=smooth_ev / h, axis=0, mode="nearest", truncate=4.0)
    d = np.gradient(d, h, axis=0)
    lo = max(int(np.searchsorted(grid, energy[nz._N_END_SKIP], side="left")), 1)
    hi = min(int(np.searchsorted(grid, energy[-1 - nz._N_END_SKIP], side="right")), grid.size - 1)
    if hi - lo < 1:
        return None
    op = (np.ascontiguousarray(d[lo - 1:hi + 1]), grid, lo, hi, h)
    if len(_e0_operators) > 16:
        _e0_operators.clear()
    _e0_operators[key] = op
    return op


def find_e0_block(energy: np.ndarray, mu_block: np.ndarray, smooth_ev: float = 0.5) -> np.ndarray:
    """Edge energies (m,) of the finite columns of ``mu_block`` (E, m), eV, as :func:`~xafsflow.xas.normalize.find_e0`.

    The same definition (uniform grid, Gaussian smoothing, steepest rise,
    parabolic refinement) in matrix form: the derivative of every pixel on the
    searched grid is one product ``D @ mu_block`` with D built once per energy
    grid (:func:`_e0_operator`). Agrees with ``find_e0`` up to float64
    rounding (tested to 1e-9 eV on noisy stacks).
    """
    from xafsflow.xas.normalize import find_e0

    e = np.asarray(energy, dtype=float)
    op = _e0_operator(e, smooth_ev)
    if op is None:
        return np.atleast_1d(find_e0(e, mu_block, smooth_ev=smooth_ev))
    D, grid, lo, hi, h = op
    deriv = D @ np.asarray(mu_block, dtype=float)  # rows lo-1 .. hi of find_e0's derivative
    j = 1 + np.argmax(deriv[1:-1], axis=0)  # row of the maximum over lo .. hi-1
    cols = np.arange(deriv.shape[1])
    y0, y1, y2 = deriv[j - 1, cols], deriv[j, cols], deriv[j + 1, cols]
    curv = y0 - 2.0 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curv < 0, 0.5 * (y0 - y2) / curv, 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    return grid[lo - 1 + j] + shift * h


def _e0_operator_rows(energy: np.ndarray, smooth_ev: float):
    """:func:`_e0_operator` row by row as spans of energies (the zeros before each row's first and after its
    last nonzero entry dropped), and the rows' grid energies.

    Returns (ptr, first, val, grid_rows, h) -- row r is ``val[ptr[r]:ptr[r + 1]]`` applied to the energies
    from index ``first[r]`` on -- or None when the operator is not built (very fine grids).
    """
    key = ("rows", energy.tobytes(), float(smooth_ev))
    cached = _e0_operators.get(key)
    if cached is not None:
        return cached
    op = _e0_operator(energy, smooth_ev)
    if op is None:
        return None
    D, grid, lo, hi, h = op
    ptr, first, val = [0], [], []
    for row in D:
        nzi = np.flatnonzero(row)
        a, b = (int(nzi[0]), int(nzi[-1]) + 1) if nzi.size else (0, 0)
        first.append(a)
        val.extend(row[a:b])
        ptr.append(ptr[-1] + b - a)
    spans = (np.asarray(ptr, np.int64), np.asarray(first, np.int64), np.asarray(val, float),
             np.ascontiguousarray(grid[lo - 1:hi + 1]), float(h))
    _e0_operators[key] = spans
    return spans


@lru_cache(maxsize=None)
def _edge_defaults() -> dict:
    """normalize_edge's keyword defaults (read once: every block asks)."""
    import inspect

    from xafsflow.xas.normalize import normalize_edge

    return {k: p.default for k, p in inspect.signature(normalize_edge).parameters.items()
            if p.default is not inspect.Parameter.empty}


def normalize_block_into(mu_block: np.ndarray, energy: np.ndarray, params: dict, e0_out: np.ndarray,
                         step_out: np.ndarray, norm_out: np.ndarray, flat_out: np.ndarray) -> None:
    """:func:`normalize_edge` on every column of an (E, m) block, into preallocated outputs; NaN where it refuses.

    Parameters
    ----------
    mu_block : numpy.ndarray, shape (E, m), float32 or float64
        Absorption (any units); read as float64.
    energy : numpy.ndarray, shape (E,)
        eV, strictly increasing.
    params : dict
        ``normalize_edge``'s keywords (``e0`` None, a scalar or an (m,) array, eV; missing keys take
        its defaults).
    e0_out, step_out : numpy.ndarray, shape (m,), float64
        E0 (eV) and edge step (units of mu).
    norm_out, flat_out : numpy.ndarray, shape (E, m), float32 or float64
        Normalized and flattened spectra (dimensionless).

    Notes
    -----
    One pass of :func:`xafsflow.imaging.pixel_kernels.normalize_pixels` (numba; E0 as ``find_e0`` through
    the operator of :func:`_e0_operator`, the windows and fits of ``normalize_edge``). On energy grids too
    fine for the operator, E0 comes from :func:`~xafsflow.xas.normalize.find_e0` first.
    """
    from xafsflow.imaging.pixel_kernels import normalize_pixels
    from xafsflow.xas import normalize as nz

    kw = {**_edge_defaults(), **params}  # a copy: the cached defaults stay untouched
    e = np.ascontiguousarray(energy, dtype=float)
    n_e, m = mu_block.shape
    if mu_block.dtype not in (np.float32, np.float64):
        mu_block = mu_block.astype(np.float64)
    mu_block = np.ascontiguousarray(mu_block)
    op = None
    e0_given = np.zeros(m)
    if kw["e0"] is None:
        op = _e0_operator_rows(e, float(kw["smooth_ev"]))
        if op is None:  # fine grid: find_e0 on the finite columns
            e0_given = np.full(m, np.nan)
            fin = np.all(np.isfinite(mu_block), axis=0)
            if fin.any():
                try:
                    e0_given[fin] = np.atleast_1d(nz.find_e0(e, mu_block[:, fin], smooth_ev=kw["smooth_ev"]))
                except AnalysisInputError:  # too few energies to find an edge: every pixel refused, as before
                    pass
    else:
        e0_given = np.ascontiguousarray(np.broadcast_to(np.asarray(kw["e0"], dtype=float), (m,)))
    if op is None:
        op = (np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), 1.0)
        find = False
    else:
        find = True
    ptr, idx, val, grid_rows, h = op
    norm2 = np.nan if kw["norm2"] is None else float(kw["norm2"])
    normalize_pixels(e, mu_block, e0_given, find, ptr, idx, val, grid_rows, h, float(kw["pre1"]),
                     float(kw["pre2"]), float(kw["norm1"]), norm2, int(kw["nnorm"]), int(nz.MIN_WINDOW_POINTS),
                     float(nz.PRE_EDGE_MIN_GAP), float(nz._STEP_ROUNDING_FLOOR), e0_out, step_out, norm_out,
                     flat_out)


def start_kernel_warmup(energy: np.ndarray, params: dict, in_dtype, cube_dtype):
    """Load :func:`normalize_block_into`'s compiled kernel in a background thread; returns the thread.

    A fresh process spends about a second on numba's first call (its type registries, the cached machine
    code, the E0 operator of the energy grid) while both Dask threads would wait for it; started before
    the stores are opened and the graph is built, that work overlaps them. The call is the step's own
    (same energies, settings and dtypes) on four zero pixels; whatever it raises, the real call raises again.
    """
    import threading

    def warm():
        n_e = np.size(energy)
        try:
            normalize_block_into(np.zeros((n_e, 4), in_dtype), energy, params, np.empty(4), np.empty(4),
                                 np.empty((n_e, 4), cube_dtype), np.empty((n_e, 4), cube_dtype))
        except Exception:  # noqa: BLE001 -- a warm-up only
            pass

    thread = threading.Thread(target=warm, name="normalize-kernel-warmup", daemon=True)
    thread.start()
    return thread


def _normalize_block_tolerant(mu_block: np.ndarray, energy: np.ndarray, params: dict) -> np.ndarray:
    """:func:`normalize_edge` on an (E, m) block, packed (2 + 2E, m) float64; columns it refuses become NaN.

    See :func:`normalize_block_into` (one numba pass per block).
    """
    n_e, m = mu_block.shape
    packed = np.empty((2 + 2 * n_e, m))
    normalize_block_into(mu_block, energy, params, packed[0], packed[1], packed[2:2 + n_e], packed[2 + n_e:])
    return packed


def _normalize_block_numpy(mu_block: np.ndarray, energy: np.ndarray, params: dict) -> np.ndarray:
    """The NumPy path of :func:`_normalize_block_tolerant` (batched ``normalize_edge``), kept as a reference.

    The block is fitted at once; when it is refused, it is split in halves
    recursively, so a few bad pixels cost O(bad x log m) vectorized fits.
    """
    from xafsflow.xas.normalize import normalize_edge

    n_e, m = mu_block.shape
    mu_block = np.asarray(mu_block, dtype=float)
    finite = np.all(np.isfinite(mu_block), axis=0)
    if m == 0:
        return np.full((2 + 2 * n_e, 0), np.nan)
    if not finite.all():
        out = np.full((2 + 2 * n_e, m), np.nan)  # allocated only here: a worker's memory is tight
        idx = np.flatnonzero(finite)
        if idx.size:
            out[:, idx] = _normalize_block_numpy(mu_block[:, idx], energy, params)
        return out
    kw = dict(params)
    if kw.get("e0") is None:  # found per pixel, in matrix form over the block (same definition as find_e0)
        kw["e0"] = find_e0_block(energy, mu_block, kw.get("smooth_ev", 0.5))
    try:
        res = normalize_edge(energy, mu_block, **kw)
    except AnalysisInputError:
        if m == 1:
            return np.full((2 + 2 * n_e, 1), np.nan)
        if np.ndim(params.get("e0")) == 0 and params.get("e0") is not None:
            return _normalize_block_fixed_e0(mu_block, energy, params)
        h = m // 2
        return np.concatenate([_normalize_block_numpy(mu_block[:, :h], energy, params),
                               _normalize_block_numpy(mu_block[:, h:], energy, params)], axis=1)
    packed = np.empty((2 + 2 * n_e, m))
    packed[0] = res.e0
    packed[1] = res.edge_step
    packed[2:2 + n_e] = res.norm.reshape(n_e, m)
    packed[2 + n_e:] = res.flat.reshape(n_e, m)
    return packed


def _normalize_block_fixed_e0(mu_block: np.ndarray, energy: np.ndarray, params: dict) -> np.ndarray:
    """A refused block with one fixed e0, in one pass: the normalization is then linear in mu.

    Every pixel gets the same windows, so pre-edge line, post-edge polynomial
    and edge step are linear in mu: add ``c`` times a unit arctan step at e0
    (large enough that every pixel has a positive step), normalize once, and
    subtract ``c`` times the step's own fits. Pixels whose own step is not
    positive (above rounding, as :func:`normalize_edge` requires) get NaN.
    """
    from xafsflow.xas.normalize import normalize_edge

    e0 = float(params["e0"])
    n_e, m = mu_block.shape
    unit = 0.5 + np.arctan((energy - e0) / 0.5) / np.pi
    c = 10.0 * (float(np.max(np.abs(mu_block))) + 1.0)
    both = normalize_edge(energy, mu_block + c * unit[:, None], **params)
    ref = normalize_edge(energy, unit, **params)
    pre = both.pre_edge - c * ref.pre_edge[:, None]
    post = both.post_edge - c * ref.post_edge[:, None]
    step = np.asarray(both.edge_step, dtype=float) - c * float(ref.edge_step)
    good = step > 1e-10 * np.max(np.abs(mu_block), axis=0)
    out = np.full((2 + 2 * n_e, m), np.nan)
    s = np.where(good, step, np.nan)
    norm = (mu_block - pre) / s
    above = energy[:, None] >= e0
    flat = np.where(above, norm - ((post - pre) / s - 1.0), norm)
    out[0] = np.where(good, e0, np.nan)
    out[1] = s
    out[2:2 + n_e] = norm
    out[2 + n_e:] = flat
    return out


def _f64_rows(rows: np.ndarray) -> np.ndarray:
    """The float64 values (...) stored bit for bit in two float32 rows (2, ...) of a packed block (a view)."""
    return np.ascontiguousarray(rows).reshape(-1).view(np.float64).reshape(rows.shape[1:])


def _normalize_block_packed(mu_block: np.ndarray, energy: np.ndarray, params: dict, cube_dtype) -> np.ndarray:
    """:func:`normalize_block_into` on an (E, ...) block, packed along the first axis.

    float64: (2 + 2E, ...) -- e0, edge step, norm rows, flat rows. float32:
    (4 + 2E, ...) -- rows 0-1 hold e0 and rows 2-3 the edge step as float64,
    bit for bit (read with :func:`_f64_rows`), then norm and flat rows.
    """
    n_e, rest = mu_block.shape[0], mu_block.shape[1:]
    mu2 = mu_block.reshape(n_e, -1)
    m = mu2.shape[1]
    if np.dtype(cube_dtype) == np.float64:
        packed = np.empty((2 + 2 * n_e, m))
        normalize_block_into(mu2, energy, params, packed[0], packed[1], packed[2:2 + n_e], packed[2 + n_e:])
    else:
        packed = np.empty((4 + 2 * n_e, m), np.float32)
        normalize_block_into(mu2, energy, params, _f64_rows(packed[0:2]), _f64_rows(packed[2:4]),
                             packed[4:4 + n_e], packed[4 + n_e:])
    return packed.reshape(packed.shape[0], *rest)


def _stack_in_blocks(energy, mu, params: dict):
    """``mu`` as a Dask array (E, ...) whose blocks hold the whole energy axis, float32 or float64 as read,
    after eager validation of the energies, shape and settings (``normalize_stack`` on a one-pixel stand-in)."""
    import dask.array as da

    from xafsflow.xas.normalize import normalize_stack

    arr = mu if isinstance(mu, da.Array) else da.asarray(np.asarray(mu, dtype=float))
    normalize_stack(energy, da.zeros((arr.shape[0] if arr.ndim else 0, 1)), **params)
    if arr.ndim < 2:
        raise AnalysisInputError(f"mu must have shape (E, npix) or (E, ny, nx), got {arr.shape}")
    if len(arr.chunks[0]) != 1:
        arr = arr.rechunk({0: -1})
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(float)
    return arr


def normalize_stack_tolerant(energy, mu, cube_dtype=np.float64, **params) -> dict:
    """As :func:`xafsflow.xas.normalize.normalize_stack`, but pixels it cannot normalize get NaN.

    Parameters
    ----------
    energy : array_like, shape (E,)
        eV, strictly increasing.
    mu : dask.array.Array or array_like, shape (E, npix) or (E, ny, nx)
        Chunked along pixels only (an energy axis in several chunks is
        rechunked); float32 or float64 blocks are read as they are (no
        float64 copy).
    cube_dtype : numpy.float64 or numpy.float32
        dtype of ``norm`` and ``flat`` (computed in float64, rounded once when written).
    **params
        ``normalize_stack``'s keywords (validated eagerly by it).

    Returns
    -------
    dict of dask.array.Array
        ``e0``, ``edge_step`` (``mu.shape[1:]``) float64 and ``norm``,
        ``flat`` (``mu.shape``) ``cube_dtype``, chunked as ``mu`` along pixels;
        NaN in every output for a pixel with non-finite mu or one that
        :func:`normalize_edge` refuses (no positive edge step, too few window
        points). Count them with ``isnan(edge_step)``. All four come from one
        blockwise computation (one numba pass per block,
        :func:`normalize_block_into`): compute them together.
    """
    import dask.array as da

    e = np.asarray(energy, dtype=float)
    arr = _stack_in_blocks(energy, mu, params)
    n_e, dt = e.size, np.dtype(cube_dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"cube_dtype must be float32 or float64, not {cube_dtype!r}")
    head = 2 if dt == np.float64 else 4
    packed = da.map_blocks(_normalize_block_packed, arr, energy=e, params=dict(params), cube_dtype=dt,
                           chunks=((head + 2 * n_e,), *arr.chunks[1:]), dtype=dt,
                           meta=np.empty((0,) * arr.ndim, dt))
    if dt == np.float64:
        e0, step = packed[0], packed[1]
    else:
        e0, step = [packed[i:i + 2].map_blocks(_f64_rows, drop_axis=0, chunks=arr.chunks[1:], dtype=np.float64,
                                               meta=np.empty((0,) * (arr.ndim - 1))) for i in (0, 2)]
    return {"e0": e0, "edge_step": step, "norm": packed[head:head + n_e], "flat": packed[head + n_e:]}


def normalize_stack_into(energy, mu, norm_out, flat_out, **params) -> tuple[np.ndarray, np.ndarray]:
    """:func:`normalize_stack_tolerant` writing ``norm`` and ``flat`` block by block into arrays it is given.

    Each Dask block is read, normalized (one pass of :func:`normalize_block_into`) and written into
    ``norm_out`` and ``flat_out`` by the task that computed it: one task per block, nothing of the cubes
    travels through the scheduler, and only the two per-pixel maps are gathered.

    Parameters
    ----------
    energy : array_like, shape (E,)
        eV, strictly increasing.
    mu : dask.array.Array or array_like, shape (E, ...)
        The whole energy axis in one chunk (rechunked otherwise); float32 or float64 blocks read as they are
        (an in-memory array is one block).
    norm_out, flat_out : array-like, shape ``mu.shape``
        Anything that takes ``out[index] = block`` (a Zarr array; a NumPy array with a local scheduler only:
        a distributed worker would write into its own copy), float32 or float64. For a chunked target (a
        Zarr array) the blocks of ``mu`` must cover whole chunks of it (whole shards of a sharded array), so
        that no two tasks write one chunk.
    **params
        ``normalize_stack``'s keywords (validated eagerly).

    Returns
    -------
    e0, edge_step : numpy.ndarray, shape ``mu.shape[1:]``, float64
        eV and units of mu; NaN (as in ``norm`` and ``flat``) for pixels that cannot be normalized.
    """
    import dask.array as da

    e = np.asarray(energy, dtype=float)
    mu = _stack_in_blocks(energy, mu, params)
    for name, out in (("norm_out", norm_out), ("flat_out", flat_out)):
        if tuple(out.shape) != tuple(mu.shape):
            raise ValueError(f"{name} has shape {tuple(out.shape)}, mu {tuple(mu.shape)}: they must be equal")
    for name, out in (("norm_out", norm_out), ("flat_out", flat_out)):
        target_chunks = getattr(out, "shards", None) or getattr(out, "chunks", None)  # the unit of writing
        if target_chunks is None:
            continue
        for axis, (blocks, size) in enumerate(zip(mu.chunks[1:], target_chunks[1:]), start=1):
            edges = np.cumsum(blocks)[:-1]
            if np.any(edges % size):
                raise ValueError(f"the blocks of mu along axis {axis} ({blocks[:3]}...) do not cover whole "
                                 f"chunks of {name} ({size}): rechunk mu to multiples of {size}")
    params = dict(params)

    def block(mu_block, block_info=None):
        where = tuple(slice(lo, hi) for lo, hi in block_info[0]["array-location"])
        n_e, rest = mu_block.shape[0], mu_block.shape[1:]
        mu2 = mu_block.reshape(n_e, -1)
        maps = np.empty((2, mu2.shape[1]))
        norm = np.empty(mu2.shape, norm_out.dtype)
        flat = np.empty(mu2.shape, flat_out.dtype)
        normalize_block_into(mu2, e, params, maps[0], maps[1], norm, flat)
        norm_out[where] = norm.reshape(mu_block.shape)
        flat_out[where] = flat.reshape(mu_block.shape)
        return maps.reshape(2, *rest)

    maps = da.map_blocks(block, mu, chunks=((2,), *mu.chunks[1:]), dtype=np.float64,
                         meta=np.empty((0,) * mu.ndim))
    e0, step = maps.compute()
    return e0, step


def edge_step_mask(edge_step: np.ndarray, fraction: float) -> tuple[np.ndarray, float]:
    """Pixels to exclude: edge step below ``fraction`` of the median step, or not finite.

    Parameters
    ----------
    edge_step : numpy.ndarray
        Per-pixel edge step (absorbance units of the raw stack; NaN where not normalized).
    fraction : float
        Threshold as a fraction of the median of the finite, positive steps.

    Returns
    -------
    mask : numpy.ndarray of bool
        True for excluded pixels.
    threshold : float
        The step below which pixels are excluded (NaN when no step is usable).
    """
    s = np.asarray(edge_step, dtype=float)
    good = np.isfinite(s) & (s > 0)
    if not good.any():
        return np.ones(s.shape, bool), float("nan")
    threshold = float(fraction) * float(np.median(s[good]))
    return ~good | (s < threshold), threshold


def optical_density(counts: np.ndarray, i0: np.ndarray) -> tuple[np.ndarray, int]:
    """Optical density -ln(I / I0) of transmitted counts (E, y, x) with I0 per energy (E,).

    Non-positive counts (no transmission measured) give NaN, counted in the
    second return value; the pixel is then excluded downstream.
    """
    I = np.asarray(counts, dtype=np.float64)
    i0 = np.asarray(i0, dtype=np.float64).reshape(-1, *([1] * (I.ndim - 1)))
    bad = ~(I > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        od = -np.log(np.where(bad, np.nan, I) / i0)
    return od, int(bad.sum())
