"""Hidden Potts Markov-random-field segmentation of per-pixel feature maps (Wada et al., JPSJ 90, 044003, 2021).

Model
-----
Each unmasked pixel i of a (y, x) map has a hidden class z_i in {0..C-1} and an
observed feature vector x_i (d standardized features). The prior is a Potts
model with a class field alpha_c and a coupling beta >= 0 between 4- (or 8-)
neighbours::

    P(z) ∝ exp( sum_i alpha_{z_i} + beta * sum_{i~j} [z_i = z_j] ),

and the emissions are multivariate Gaussians, x_i | z_i = c ~ N(mu_c, Sigma_c).

Inference
---------
* Initialisation: a Gaussian mixture without spatial prior (scikit-learn
  ``GaussianMixture``, full covariances) gives mu, Sigma, alpha = log(weights)
  and the starting probabilities q_i(c); its labels are the "GMM-only" result.
* E-step: mean-field sweeps q_i(c) ∝ exp(alpha_c + log N(x_i | c) + beta sum_{j~i} q_j(c)),
  by colour classes (see :mod:`xafsflow.imaging.mrf_kernels`).
* M-step: mu_c, Sigma_c as q-weighted moments (+ ``reg_covar`` on the
  diagonal, see below); then (alpha, beta) by Newton steps on the mean-field-like
  pseudo-likelihood of Celeux, Forbes & Peyrard (Pattern Recognition 36, 131,
  2003): sum_i sum_c q_i(c) log softmax_c(alpha_c + beta m_i(c)) with
  m_i(c) = sum_{j~i} q_j(c) — concave in (alpha, beta), one reduction per step.
  beta is kept in [0, ``beta_max``]; reaching the bound is reported.
* Number of classes: over a C range, two BIC curves are computed: the
  Gaussian mixture's (no spatial prior), and the MRF fit's with the mean-field-like
  log-likelihood of Forbes & Peyrard (IEEE PAMI 25, 1089, 2003),
  LL = sum_i log sum_c softmax_c(alpha_c + beta m_i(c)) N(x_i | c),
  BIC = -2 LL + k log n with k = (C - 1) + C d + C d (d + 1)/2 + 1 (beta).
  C is chosen by the GMM's BIC by default (``class_criterion``; see
  :func:`select_classes` for why), and both curves are returned.
* Gibbs sampling (optional, :func:`gibbs_sample`) draws labels from the posterior
  at the fitted parameters; the frequency of each class over the kept sweeps
  is the sampled posterior probability.

Regularisation and bad input (recorded in the result's ``notes``)
------------------------------------------------------------------
* Too few unmasked pixels for C classes (fewer than ``min_pixels_per_param``
  times the parameters of the model): :class:`MRFInputError` for a single C;
  in a C range such a C is skipped and recorded.
* Singular covariances (a class whose features are constant or collinear):
  ``reg_covar`` (in standardized feature units^2) is added to every class
  covariance's diagonal, as scikit-learn does; the smallest eigenvalue seen is
  recorded.
* C larger than the data supports: a class whose total probability falls
  below ``min_class_fraction`` of the pixels (or d + 1 pixels) is reported and
  that C is marked unsupported (excluded from the choice).

Distribution
------------
With Dask arrays (or ``chunks=``) the map is split into chunks that each get a
one-pixel halo from their neighbours before every colour's update
(``dask.array.map_overlap``), so the chunked sweep performs exactly the
arithmetic of the single-array sweep: for fixed parameters the two are
bit-identical; the M-step's sums are reduced per chunk (float64), so a whole
fit agrees across chunkings to rounding (tested to 1e-9). Gibbs uses per-site
random streams keyed by (seed, global site index, update), so chunked Gibbs is
identical to single-array Gibbs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xafsflow.imaging import mrf_kernels as kern

_LOG_2PI = np.log(2.0 * np.pi)


class MRFInputError(ValueError):
    """Input the MRF cannot fit (too few pixels for C classes, no usable features)."""


@dataclass
class MRFResult:
    """One fitted hidden Potts model.

    Attributes
    ----------
    labels : (ny, nx) int32
        MAP class of each pixel (argmax of ``probabilities``); -1 where masked.
    probabilities : (ny, nx, C) float64
        Class posterior probabilities (mean-field, or Gibbs frequencies); 0 where masked.
    means, covariances, weights : arrays (C, d), (C, d, d), (C,)
        Emission parameters (standardized feature units) and the class field as
        probabilities, softmax(alpha).
    beta : float
        Potts coupling.
    gmm_labels, gmm_probabilities
        The initialising Gaussian mixture's labels / responsibilities (no spatial prior).
    log_likelihood : float
        Mean-field-like log-likelihood (see the module docstring).
    bic : float
    n_iter : int
        EM iterations done.
    converged : bool
    beta_at_bound : bool
        beta was clipped at 0 or ``beta_max``.
    notes : list of str
        Regularisation and problems met (for provenance).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    beta: float
    gmm_labels: np.ndarray
    gmm_probabilities: np.ndarray
    log_likelihood: float
    bic: float
    n_iter: int
    converged: bool
    beta_at_bound: bool
    min_class_fraction_seen: float
    min_eigenvalue: float
    n_pixels: int
    neighbours: int
    notes: list = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return int(self.means.shape[0])


@dataclass
class ClassSelection:
    """The C range compared: BIC of each C (MRF and GMM-only), the chosen fit."""

    classes: list
    bic: list
    gmm_bic: list
    supported: list
    notes: list
    best: MRFResult

    @property
    def n_classes(self) -> int:
        return self.best.n_classes


# ---------------------------------------------------------------- helpers
def n_parameters(n_classes: int, n_features: int) -> int:
    """Free parameters of the model: field (C - 1), means C d, covariances C d (d + 1)/2, beta 1."""
    c, d = n_classes, n_features
    return (c - 1) + c * d + c * d * (d + 1) // 2 + 1


def emission_loglik(x: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """log N(x_i | mu_c, Sigma_c) for every site and class.

    Parameters
    ----------
    x : (..., d) float64
        Feature vectors (non-finite rows give non-finite output; mask them).
    means : (C, d)
    covariances : (C, d, d), positive definite

    Returns
    -------
    (..., C) float64
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    out = np.empty(x.shape[:-1] + (means.shape[0],))
    for c in range(means.shape[0]):
        chol = np.linalg.cholesky(covariances[c])
        r = (x - means[c]).reshape(-1, d)
        sol = np.linalg.solve(chol, r.T)  # L^-1 (x - mu)
        maha = np.sum(sol * sol, axis=0).reshape(x.shape[:-1])
        out[..., c] = -0.5 * (d * _LOG_2PI + maha) - np.sum(np.log(np.diag(chol)))
    return out


def _softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=-1, keepdims=True)


def _pad(a: np.ndarray, value) -> np.ndarray:
    widths = [(1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, widths, constant_values=value)


# --------------------------------------------------- per-block statistics
def _block_field(x, valid, means, covariances, alpha):
    """h = log N(x | c) + alpha_c on valid sites, 0 elsewhere (one block)."""
    h = np.zeros(x.shape[:-1] + (means.shape[0],))
    v = np.asarray(valid, bool).reshape(x.shape[:-1])
    if v.any():
        h[v] = emission_loglik(x[v], means, covariances) + alpha
    return h


def _block_moments(q, x, valid):
    """(sum q, sum q x, sum q x x^T) over a block's valid sites."""
    v = np.asarray(valid, bool).reshape(q.shape[:-1])
    qv, xv = q[v], x[v]
    return np.stack([qv.sum(axis=0)]), qv.T @ xv, np.einsum("nc,nd,ne->cde", qv, xv, xv)


def _block_pl_terms(q, m, valid, alpha, beta):
    """Gradient and Hessian of the pseudo-likelihood in (alpha_1..alpha_{C-1}, beta), and its value (one block)."""
    v = np.asarray(valid, bool).reshape(q.shape[:-1])
    qv, mv = q[v], m[v]
    nc = qv.shape[-1]
    a = alpha + beta * mv
    p = _softmax(a)
    logp = a - a.max(axis=-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    value = float(np.sum(qv * logp))
    k = nc  # C - 1 field entries + beta
    # features phi_ic = (e_c for c >= 1, m_ic)
    g = np.empty(k)
    g[: nc - 1] = (qv - p)[:, 1:].sum(axis=0)
    g[nc - 1] = np.sum((qv - p) * mv)
    pm = np.sum(p * mv, axis=-1)  # E_p[m]
    hess = np.empty((k, k))
    pa = p[:, 1:]
    hess[: nc - 1, : nc - 1] = -(np.diag(pa.sum(axis=0)) - pa.T @ pa)
    cross = -(np.sum(pa * mv[:, 1:], axis=0) - pa.T @ pm)
    hess[: nc - 1, nc - 1] = cross
    hess[nc - 1, : nc - 1] = cross
    hess[nc - 1, nc - 1] = -(np.sum(p * mv * mv) - np.sum(pm * pm))
    return g, hess, value


def _block_mf_loglik(q, m, h_emis, valid, alpha, beta):
    """sum_i log sum_c softmax_c(alpha_c + beta m_ic) N(x_i | c) over a block."""
    v = np.asarray(valid, bool).reshape(q.shape[:-1])
    a = alpha + beta * m[v]
    a = a - a.max(axis=-1, keepdims=True)
    lprior = a - np.log(np.exp(a).sum(axis=-1, keepdims=True))
    t = lprior + h_emis[v]
    tmax = t.max(axis=-1, keepdims=True)
    return float(np.sum(tmax[:, 0] + np.log(np.exp(t - tmax).sum(axis=-1))))


# ------------------------------------------------------- map backends
class _LocalMap:
    """The whole map in memory, padded with one ring of empty sites (the reference for :class:`_GridMap`)."""

    def __init__(self, x, valid, neighbours):
        self.x = x
        self.valid = valid
        self.eight = neighbours == 8
        self.ncol = kern.n_colours(neighbours)
        self.colour = _pad(kern.site_colours(valid.shape, neighbours, valid), -1)
        self.site = _pad(np.arange(valid.size, dtype=np.int64).reshape(valid.shape), 0)

    def from_numpy(self, a):
        return np.ascontiguousarray(a)

    def to_numpy(self, a):
        return a

    def field(self, means, covs, alpha):
        return _field_task(self.x, self.valid, means, covs, alpha)

    def field_numpy(self, h):
        return h[1:-1, 1:-1]

    def sweeps(self, q, h, beta, n):
        qp = _pad(q, 0.0)
        for _ in range(n):
            for col in range(self.ncol):
                kern.mf_colour_update(qp, h, self.colour, col, float(beta), self.eight)
        return qp[1:-1, 1:-1].copy()

    def gibbs(self, z, h, beta, key, step0):
        zp = _pad(z, -1)
        for col in range(self.ncol):
            kern.gibbs_colour_update(zp, h, self.colour, self.site, col, float(beta), self.eight, key, step0 + col)
        return zp[1:-1, 1:-1].copy()

    def moments(self, q):
        return _block_moments(q, self.x, self.valid)

    def pl_terms(self, q, alpha, beta):
        return _pl_task(self.valid, alpha, beta, self.eight, q, *[None] * 8)

    def mf_loglik(self, q, h_emis, alpha, beta):
        return _loglik_task(self.valid, h_emis, alpha, beta, self.eight, q, *[None] * 8)

    def max_change(self, a, b):
        return _max_change_task(a, b)


def _with_halo(centre, nbrs, fill):
    """``centre`` padded by one ring taken from its 8 neighbour blocks (``fill`` where there is none).

    ``nbrs`` = (n, s, w, e, nw, ne, sw, se), each a block or None at the map's edge.
    """
    n, s, w, e, nw, ne, sw, se = nbrs
    by, bx = centre.shape[:2]
    out = np.full((by + 2, bx + 2) + centre.shape[2:], fill, dtype=centre.dtype)
    out[1:-1, 1:-1] = centre
    if n is not None:
        out[0, 1:-1] = n[-1]
    if s is not None:
        out[-1, 1:-1] = s[0]
    if w is not None:
        out[1:-1, 0] = w[:, -1]
    if e is not None:
        out[1:-1, -1] = e[:, 0]
    if nw is not None:
        out[0, 0] = nw[-1, -1]
    if ne is not None:
        out[0, -1] = ne[-1, 0]
    if sw is not None:
        out[-1, 0] = sw[0, -1]
    if se is not None:
        out[-1, -1] = se[0, 0]
    return out


def _mf_task(h_pad, colour_pad, col, beta, eight, centre, *nbrs):
    """One chunk's mean-field update of colour ``col`` after the halo exchange."""
    qp = _with_halo(centre, nbrs, 0.0)
    kern.mf_colour_update(qp, h_pad, colour_pad, col, beta, eight)
    return qp[1:-1, 1:-1].copy()


def _gibbs_task(h_pad, colour_pad, site_pad, col, beta, eight, key, step, centre, *nbrs):
    """One chunk's Gibbs update of colour ``col`` after the halo exchange."""
    zp = _with_halo(centre, nbrs, -1)
    kern.gibbs_colour_update(zp, h_pad, colour_pad, site_pad, col, beta, eight, key, step)
    return zp[1:-1, 1:-1].copy()


def _field_task(x, valid, means, covs, alpha):
    return _pad(_block_field(x, valid, means, covs, alpha), 0.0)


def _pl_task(valid, alpha, beta, eight, centre, *nbrs):
    return _block_pl_terms(centre, kern.neighbour_sum_np(_with_halo(centre, nbrs, 0.0), eight), valid, alpha, beta)


def _loglik_task(valid, h_pad, alpha, beta, eight, centre, *nbrs):
    m = kern.neighbour_sum_np(_with_halo(centre, nbrs, 0.0), eight)
    return _block_mf_loglik(centre, m, h_pad[1:-1, 1:-1], valid, alpha, beta)


def _unpad(a):
    return a[1:-1, 1:-1]


def _max_change_task(a, b):
    return float(np.max(np.abs(a - b))) if a.size else 0.0


class _GridMap:
    """The map as a grid of chunks, each a Dask task; every colour's update first exchanges a one-pixel halo.

    A chunk's update task takes its own block and the edges of its 8
    neighbours (the halo), so the graph of one sweep has one task per chunk and
    colour. Runs on whatever Dask scheduler is active (a distributed client,
    threads, or synchronous).
    """

    def __init__(self, x, valid, neighbours, chunks):
        import dask
        import dask.array as da

        self.dask = dask
        ny, nx = valid.shape
        cy, cx = da.core.normalize_chunks(chunks, (ny, nx))
        self.ys = np.concatenate([[0], np.cumsum(cy)])
        self.xs = np.concatenate([[0], np.cumsum(cx)])
        self.shape = (ny, nx)
        self.grid = (len(cy), len(cx))
        self.eight = neighbours == 8
        self.ncol = kern.n_colours(neighbours)
        colour = kern.site_colours((ny, nx), neighbours, valid)
        site = np.arange(ny * nx, dtype=np.int64).reshape(ny, nx)
        # static blocks are persisted once (on a distributed client they stay on the workers)
        self.x = self._persist({k: x[sl] for k, sl in self._slices()})
        self.valid = self._persist({k: valid[sl] for k, sl in self._slices()})
        self.colour = self._persist({k: _pad(colour[sl], -1) for k, sl in self._slices()})
        self.site = self._persist({k: _pad(site[sl], 0) for k, sl in self._slices()})

    def _persist(self, blocks: dict) -> dict:
        keys = list(blocks)
        return dict(zip(keys, self.dask.persist(*[self.dask.delayed(np.ascontiguousarray(blocks[k])) for k in keys])))

    def _slices(self):
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                yield (i, j), (slice(self.ys[i], self.ys[i + 1]), slice(self.xs[j], self.xs[j + 1]))

    def _nbrs(self, blocks, i, j):
        out = []
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
            out.append(blocks.get((i + di, j + dj)))
        return out

    def from_numpy(self, a):
        return self._persist({k: a[sl] for k, sl in self._slices()})

    def to_numpy(self, blocks):
        vals = self.dask.compute(blocks)[0]
        first = next(iter(vals.values()))
        out = np.empty(self.shape + first.shape[2:], dtype=first.dtype)
        for k, sl in self._slices():
            out[sl] = vals[k]
        return out

    def field(self, means, covs, alpha):
        t = self.dask.delayed(_field_task, pure=True)
        return self.dask.persist({k: t(self.x[k], self.valid[k], means, covs, alpha) for k, _ in self._slices()})[0]

    def _layer(self, blocks, task, static):
        t = self.dask.delayed(task, pure=True)
        return {(i, j): t(*static(i, j), blocks[(i, j)], *self._nbrs(blocks, i, j)) for (i, j), _ in self._slices()}

    def sweeps(self, q, h, beta, n):
        for _ in range(n):
            for col in range(self.ncol):
                q = self._layer(q, _mf_task, lambda i, j: (h[(i, j)], self.colour[(i, j)], col, float(beta),
                                                           self.eight))
        return self.dask.persist(q)[0]

    def gibbs(self, z, h, beta, key, step0):
        for col in range(self.ncol):
            z = self._layer(z, _gibbs_task, lambda i, j: (h[(i, j)], self.colour[(i, j)], self.site[(i, j)], col,
                                                          float(beta), self.eight, key, step0 + col))
        return self.dask.persist(z)[0]

    def moments(self, q):
        t = self.dask.delayed(_block_moments, pure=True)
        parts = self.dask.compute(*[t(q[k], self.x[k], self.valid[k]) for k, _ in self._slices()])
        return tuple(sum(p[r] for p in parts) for r in range(3))

    def pl_terms(self, q, alpha, beta):
        parts = self.dask.compute(*self._layer(q, _pl_task, lambda i, j: (self.valid[(i, j)], alpha, beta,
                                                                            self.eight)).values())
        return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)

    def mf_loglik(self, q, h_emis, alpha, beta):
        return sum(self.dask.compute(*self._layer(q, _loglik_task, lambda i, j: (
            self.valid[(i, j)], h_emis[(i, j)], alpha, beta, self.eight)).values()))

    def max_change(self, a, b):
        t = self.dask.delayed(_max_change_task, pure=True)
        return max(self.dask.compute(*[t(a[k], b[k]) for k, _ in self._slices()]))

    def field_numpy(self, h):
        return {k: self.dask.delayed(_unpad)(v) for k, v in h.items()}


# ------------------------------------------------------------ the fit
def _prepare(features, mask):
    """(x as float64 with masked rows zeroed, valid mask, notes)."""
    try:
        import dask.array as da

        is_dask = isinstance(features, da.Array)
    except ImportError:  # pragma: no cover - dask is a dependency
        is_dask = False
    x = np.asarray(features.compute() if is_dask else features, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise MRFInputError(f"features must be (y, x, d), got shape {x.shape}")
    valid = np.all(np.isfinite(x), axis=-1)
    if mask is not None:
        m = np.asarray(mask.compute() if hasattr(mask, "compute") else mask, bool)
        if m.shape != valid.shape:
            raise MRFInputError(f"mask shape {m.shape} differs from the map's {valid.shape}")
        valid &= m
    x = np.where(valid[..., None], x, 0.0)
    return x, valid, (features.chunks[:2] if is_dask else None)


def check_pixels(n_pixels: int, n_classes: int, n_features: int, min_pixels_per_param: float = 5.0) -> str | None:
    """Why ``n_pixels`` cannot support C classes of d features, or None if they can."""
    k = n_parameters(n_classes, n_features)
    need = int(np.ceil(min_pixels_per_param * k))
    if n_pixels < need:
        return (f"{n_pixels} unmasked pixels are too few for {n_classes} classes of {n_features} features "
                f"({k} parameters; need at least {need})")
    return None


def gmm_init(x_valid: np.ndarray, n_classes: int, seed: int, reg_covar: float = 1e-6, n_init: int = 2,
             max_pixels: int = 20000):
    """A Gaussian mixture (no spatial prior) on the valid pixels' features: (means, covariances, weights, bic).

    Classes are ordered by their mean of the first feature, so labels are
    comparable between runs. At most ``max_pixels`` pixels (chosen with the
    seed) fit the mixture; the BIC is on all of them.
    """
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), n_classes]))
    sub = x_valid if len(x_valid) <= max_pixels else x_valid[np.sort(rng.choice(len(x_valid), max_pixels, False))]
    gm = GaussianMixture(n_components=n_classes, covariance_type="full", reg_covar=reg_covar, n_init=n_init,
                         random_state=int(rng.integers(2**31 - 1)), max_iter=300)
    gm.fit(sub)
    order = np.argsort(gm.means_[:, 0], kind="stable")
    return gm.means_[order], gm.covariances_[order], gm.weights_[order], float(gm.bic(x_valid))


def fit_mrf(features, n_classes: int, mask=None, *, neighbours: int = 4, beta=None, beta_max: float = 4.0,
            em_iterations: int = 50, mf_sweeps: int = 5, tol: float = 1e-4, reg_covar: float = 1e-6,
            min_class_fraction: float = 0.005, min_pixels_per_param: float = 5.0, newton_steps: int = 3,
            seed: int | None = None, chunks=None) -> MRFResult:
    """Fit a hidden Potts model with Gaussian emissions by mean-field EM.

    Parameters
    ----------
    features : (ny, nx, d) array (NumPy or Dask)
        Standardized per-pixel features; non-finite rows are masked.
    n_classes : int
        C.
    mask : (ny, nx) bool, optional
        True where the pixel is used.
    neighbours : 4 or 8
    beta : float or None
        Fixed coupling; None estimates it (mean-field-like pseudo-likelihood).
    beta_max : float
        Upper bound of the estimated beta.
    em_iterations : int
        Most EM iterations.
    mf_sweeps : int
        Mean-field sweeps (every colour once) per E-step.
    tol : float
        Convergence: largest change of any q_i(c) over an EM iteration.
    reg_covar : float
        Added to every covariance's diagonal (standardized units^2).
    min_class_fraction : float
        A class with less total probability (fraction of pixels) is "unsupported".
    min_pixels_per_param : float
        Pixels needed per model parameter.
    newton_steps : int
        Newton steps on (alpha, beta) per EM iteration.
    seed : int, optional
        Seed of the Gaussian-mixture initialisation (None: 0).
    chunks : tuple, optional
        (y, x) chunks: run on Dask with halos (a Dask ``features`` uses its own chunks).

    Returns
    -------
    MRFResult
    """
    x, valid, dask_chunks = _prepare(features, mask)
    chunks = dask_chunks if chunks is None else chunks
    ny, nx, d = x.shape
    n = int(valid.sum())
    nc = int(n_classes)
    if nc < 1:
        raise MRFInputError(f"n_classes must be at least 1, not {nc}")
    why = check_pixels(n, nc, d, min_pixels_per_param)
    if why:
        raise MRFInputError(why)
    notes: list[str] = []
    seed = 0 if seed is None else int(seed)
    means, covs, weights, _ = gmm_init(x[valid], nc, seed, reg_covar)
    alpha = np.log(np.maximum(weights, 1e-300))
    alpha -= alpha[0]
    fixed_beta = beta is not None
    beta = float(beta) if fixed_beta else 0.5
    if nc == 1:
        beta, fixed_beta = 0.0, True
    m = _map(x, valid, neighbours, chunks)
    h = m.field(means, covs, alpha)
    gmm_q = np.where(valid[..., None], _softmax(m.to_numpy(m.field_numpy(h))), 0.0)
    q = m.from_numpy(gmm_q)
    converged = False
    min_eig = np.inf
    it = 0
    change = np.inf
    for it in range(1, em_iterations + 1):
        q_new = m.sweeps(q, h, beta, mf_sweeps)
        change = m.max_change(q_new, q)
        q = q_new
        # M-step: emissions
        nk, sx, sxx = m.moments(q)
        nk = nk[0]
        safe = np.maximum(nk, 1e-300)
        means = sx / safe[:, None]
        covs = sxx / safe[:, None, None] - np.einsum("cd,ce->cde", means, means)
        covs = 0.5 * (covs + np.transpose(covs, (0, 2, 1)))
        min_eig = min(min_eig, float(np.min(np.linalg.eigvalsh(covs))))
        covs = covs + reg_covar * np.eye(d)
        # M-step: field and coupling
        alpha, beta = _newton_field_beta(m, q, alpha, beta, fixed_beta, beta_max, newton_steps)
        h = m.field(means, covs, alpha)
        if change < tol:
            converged = True
            break
    q = m.sweeps(q, h, beta, mf_sweeps)  # the probabilities at the final parameters
    ll = m.mf_loglik(q, m.field(means, covs, np.zeros(nc)), alpha, beta)
    q = m.to_numpy(q)
    k = n_parameters(nc, d) - (1 if nc == 1 else 0)
    bic = -2.0 * ll + k * np.log(n)
    frac = q[valid].sum(axis=0) / n
    if min_eig <= 10 * reg_covar:
        notes.append(f"C={nc}: a class covariance was (nearly) singular (smallest eigenvalue {min_eig:.3g}); "
                     f"regularised with reg_covar={reg_covar:g}")
    if np.min(frac) < min_class_fraction or np.min(frac) * n < d + 1:
        notes.append(f"C={nc}: class {int(np.argmin(frac))} holds only {np.min(frac):.4f} of the pixels "
                     f"(below min_class_fraction={min_class_fraction:g}): more classes than the data support")
    at_bound = (not fixed_beta) and (beta <= 0.0 or beta >= beta_max)
    if at_bound:
        notes.append(f"C={nc}: estimated beta at its bound ({beta:g}; bounds [0, {beta_max:g}])")
    if not converged:
        notes.append(f"C={nc}: EM not converged after {em_iterations} iterations (last change {change:.3g})")
    labels = np.where(valid, np.argmax(q, axis=-1), -1).astype(np.int32)
    gmm_labels = np.where(valid, np.argmax(gmm_q, axis=-1), -1).astype(np.int32)
    return MRFResult(labels=labels, probabilities=q, means=means, covariances=covs,
                     weights=_softmax(alpha), beta=float(beta), gmm_labels=gmm_labels, gmm_probabilities=gmm_q,
                     log_likelihood=float(ll), bic=float(bic), n_iter=it, converged=converged,
                     beta_at_bound=bool(at_bound), min_class_fraction_seen=float(np.min(frac)),
                     min_eigenvalue=float(min_eig), n_pixels=n, neighbours=neighbours, notes=notes)


def _map(x, valid, neighbours, chunks):
    return _LocalMap(x, valid, neighbours) if chunks is None else _GridMap(x, valid, neighbours, chunks)


def _newton_field_beta(m, q, alpha, beta, fixed_beta, beta_max, steps):
    """Newton steps on the mean-field-like pseudo-likelihood in (alpha_1..alpha_{C-1}, beta); alpha_0 = 0."""
    nc = alpha.size
    if nc == 1:
        return alpha, beta
    theta = np.append(alpha[1:], beta)
    for _ in range(steps):
        g, hess, _ = m.pl_terms(q, np.concatenate([[0.0], theta[:-1]]), theta[-1])
        if fixed_beta:
            g, hess = g[:-1], hess[:-1, :-1]
        hess = hess - 1e-9 * np.eye(len(g))  # concave: -H is positive semi-definite
        step = -np.linalg.solve(hess, g)
        if fixed_beta:
            step = np.append(step, 0.0)
        step = np.clip(step, -2.0, 2.0)  # damp far from the optimum
        theta = theta + step
        theta[-1] = min(max(theta[-1], 0.0), beta_max)
    return np.concatenate([[0.0], theta[:-1]]), float(theta[-1])


def select_classes(features, mask=None, *, classes_min: int = 2, classes_max: int = 5,
                   class_criterion: str = "gmm_bic", **fit_kw) -> ClassSelection:
    """Fit C = classes_min..classes_max and choose C by a BIC among the supported fits.

    ``class_criterion``: ``gmm_bic`` (default) takes the C of lowest BIC of the
    Gaussian mixture without spatial prior; ``mrf_bic`` the C of lowest BIC of the
    MRF's mean-field-like log-likelihood (Forbes & Peyrard 2003). Both curves
    are returned. On our synthetic validation maps the mean-field-like BIC
    over-splits (it prefers 4 classes on a 3-class map: the neighbours' field
    makes a split class look well predicted, and no partition function pays for
    it), hence the default.

    Returns
    -------
    ClassSelection
        The BIC curves (MRF and GMM-only; NaN where a C was skipped), which Cs
        were supported, the notes, and the chosen fit.
    """
    if classes_min > classes_max:
        raise MRFInputError(f"empty class range [{classes_min}, {classes_max}]")
    if class_criterion not in ("gmm_bic", "mrf_bic"):
        raise MRFInputError(f"class_criterion must be gmm_bic or mrf_bic, not {class_criterion!r}")
    x, valid, _ = _prepare(features, mask)
    classes, bics, gbics, supported, notes, fits = [], [], [], [], [], {}
    for nc in range(classes_min, classes_max + 1):
        classes.append(nc)
        why = check_pixels(int(valid.sum()), nc, x.shape[-1], fit_kw.get("min_pixels_per_param", 5.0))
        if why:
            notes.append(f"C={nc} skipped: {why}")
            bics.append(float("nan"))
            gbics.append(float("nan"))
            supported.append(False)
            continue
        res = fit_mrf(features, nc, mask, **fit_kw)
        fits[nc] = res
        bics.append(res.bic)
        gbics.append(gmm_init(x[valid], nc, fit_kw.get("seed") or 0, fit_kw.get("reg_covar", 1e-6))[3])
        ok = not any("more classes than the data support" in s for s in res.notes)
        supported.append(ok)
        notes.extend(res.notes)
    usable = [c for c, s in zip(classes, supported) if s]
    if not usable:
        if not fits:
            raise MRFInputError("; ".join(notes) or "no class count could be fitted")
        usable = list(fits)
        notes.append("no C in the range was supported by the data; choosing among all fitted")
    curve = gbics if class_criterion == "gmm_bic" else bics
    best = min(usable, key=lambda c: curve[classes.index(c)])
    return ClassSelection(classes=classes, bic=bics, gmm_bic=gbics, supported=supported, notes=notes,
                          best=fits[best])


# ------------------------------------------------------------------ Gibbs
def gibbs_sample(field, beta: float, mask=None, *, neighbours: int = 4, n_sweeps: int = 100, n_burn: int = 50,
                 key: int = 0, init=None, chunks=None):
    """Gibbs sampling of the Potts posterior at fixed parameters.

    Parameters
    ----------
    field : (ny, nx, C) float64
        h_i(c) = alpha_c + log N(x_i | c) (e.g. from :func:`site_field`).
    beta : float
    mask : (ny, nx) bool, optional
    n_sweeps, n_burn : int
        Total sweeps and the first ones not counted.
    key : int
        The chain's key (a 64-bit integer, e.g. from ``SeedSequence.generate_state``).
    init : (ny, nx) int, optional
        Starting labels (default: argmax of the field).
    chunks : tuple, optional
        (y, x) chunks: run on Dask with halos (identical result).

    Returns
    -------
    labels : (ny, nx) int32
        The last sample (-1 where masked).
    frequencies : (ny, nx, C) float64
        Fraction of kept sweeps in each class.
    """
    h = np.asarray(field, dtype=np.float64)
    ny, nx, nc = h.shape
    valid = np.ones((ny, nx), bool) if mask is None else np.asarray(mask, bool)
    z = np.argmax(h, axis=-1) if init is None else np.asarray(init)
    z = np.where(valid, z, -1).astype(np.int32)
    key = np.uint64(key % 2**64)
    counts = np.zeros((ny, nx, nc))
    m = _map(np.zeros((ny, nx, 1)), valid, neighbours, chunks)
    hm = m.from_numpy(_pad(h, 0.0)) if chunks is None else m._persist({k: _pad(h[sl], 0.0) for k, sl in m._slices()})
    zm = m.from_numpy(z)
    ncol = kern.n_colours(neighbours)
    for s in range(n_sweeps):
        zm = m.gibbs(zm, hm, beta, key, s * ncol)
        if s >= n_burn:
            counts += m.to_numpy(zm)[..., None] == np.arange(nc)
    kept = max(n_sweeps - n_burn, 1)
    return m.to_numpy(zm), np.where(valid[..., None], counts / kept, 0.0)


def site_field(features, result: MRFResult, mask=None) -> np.ndarray:
    """h_i(c) = log(weight_c) + log N(x_i | c) at a fit's parameters (0 where masked)."""
    x, valid, _ = _prepare(features, mask)
    return _block_field(x, valid, result.means, result.covariances, np.log(result.weights))


def mean_field(field, beta: float, mask=None, *, neighbours: int = 4, n_sweeps: int = 50, init=None,
               chunks=None) -> np.ndarray:
    """Mean-field probabilities at fixed parameters: ``n_sweeps`` colour sweeps from ``init`` (default softmax(field)).

    With ``chunks`` the sweeps run on Dask with halos; the result is bit-identical.
    """
    h = np.asarray(field, dtype=np.float64)
    ny, nx, nc = h.shape
    valid = np.ones((ny, nx), bool) if mask is None else np.asarray(mask, bool)
    q0 = _softmax(h) if init is None else np.asarray(init, dtype=np.float64)
    q0 = np.where(valid[..., None], q0, 0.0)
    m = _map(np.zeros((ny, nx, 1)), valid, neighbours, chunks)
    hm = _pad(h, 0.0) if chunks is None else m._persist({k: _pad(h[sl], 0.0) for k, sl in m._slices()})
    return m.to_numpy(m.sweeps(m.from_numpy(q0), hm, beta, n_sweeps))
