"""Sparse modelling of EXAFS (after Setoyama et al., JPSJ 89, 074602 (2020)).

k^w chi(k) is modelled as a nonnegative sparse combination of single-scattering
shells on a dense (R, sigma^2) grid (:mod:`xafsflow.exafs.basis`):

1. **Penalty by cross-validation.** Nonnegative LASSO on the normalized columns,
   minimizing ``||y - A c||^2 / (2 n) + alpha |c|_1`` (scikit-learn's objective)
   by an exact active-set solver on the Gram matrix (:func:`nonneg_lasso_gram`;
   scikit-learn's coordinate descent, :func:`lasso_sklearn`, is the reference it
   is tested against, and 15-20 times slower on this grid), over ``n_alphas`` penalties log-spaced
   from ``alpha_max`` (the smallest alpha with c = 0) down to
   ``alpha_ratio * alpha_max``. The folds are *contiguous blocks of k*
   (neighbouring k points are correlated: autobk's spline and the
   interpolation to the k grid mix them, so leaving out scattered single points
   would let the neighbours predict them and favour too small a penalty).
   Each penalty is scored by the held-out error of its support refitted by NNLS
   (``cv_refit``, the estimator reported). The selected alpha minimizes the mean
   held-out error; with ``one_se`` the largest alpha whose mean error is within
   one standard error of the minimum.
2. **E0 shift.** FEFF's E0 and the data's differ by a few eV, which biases R
   (a shift dE0 moves k by about dE0 / (2 KTOE k), which a shell absorbs as
   dR ~ R dE0 / (2 KTOE k^2): 0.03 A for 5 eV at R = 2.55 A, k = 8). dE0 is found in an outer 1-D search (a grid over
   ``de0_range`` then a bounded Brent refinement) minimizing the LASSO objective
   at the CV penalty; the penalty is then chosen again by CV at that dE0.
3. **Debiasing.** The LASSO selects; it does not measure (its coefficients are
   shrunk). The selected support is refitted by plain nonnegative least squares
   (``scipy.optimize.nnls``); a coefficient c of normalized column j reads as
   N S0^2 = c / norm_j.
4. **Shells.** Grid points with weight are merged into one shell while
   consecutive ones are at most ``merge_distance`` apart in R (summed over
   sigma^2): N S0^2 is the shell's sum, R and sigma^2 the N-weighted means.
   Shells below ``min_fraction`` of the largest are dropped (noise).
5. **Uncertainties by a moving-block bootstrap over k.** The fitted k points are
   resampled in blocks of ``block_k`` (1/Angstrom, so the correlation within a
   block is kept), the LASSO (same alpha and dE0) and NNLS refit repeated, and
   each shell's R, N S0^2 and sigma^2 recomputed from the coefficient mass inside
   the shell's R window; the standard deviations over the replicates are the
   reported uncertainties, and the fraction of replicates with mass in the
   window is the shell's support. dE0 is held at its fit (the spread of R
   therefore leaves out the E0-R correlation). The spread across CV folds is
   not used: the training sets share (K - 2)/(K - 1) of their data, so it understates
   the uncertainty.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from xafsflow.errors import AnalysisInputError
from xafsflow.exafs.basis import Basis, FeffPath, _splines, basis_matrix


@dataclass(frozen=True)
class SparseSpec:
    """Settings of the sparse fit (the product's schema keys, same defaults).

    Attributes
    ----------
    k_range : tuple of float
        Fitted k range (1/Angstrom).
    kweight : float
        k weight of data and columns.
    r_range : tuple of float
        R grid range (Angstrom).
    r_step : float
        R grid step (Angstrom).
    sigma2_grid : tuple of float
        Debye-Waller factors of the grid (Angstrom^2).
    folds : int
        Cross-validation folds (contiguous k blocks).
    n_alphas : int
        Penalties on the CV path.
    alpha_ratio : float
        Smallest penalty relative to alpha_max.
    one_se : bool
        Choose the largest penalty within one standard error of the CV minimum.
    penalty : str
        ``columns`` (unit-norm columns) or ``coordination`` (L1 on N S0^2); see
        :func:`xafsflow.exafs.basis.basis_matrix`.
    cv_refit : bool
        Score each penalty in CV by the NNLS refit of its support (the estimator
        reported) instead of the shrunk LASSO coefficients.
    de0_range : tuple of float
        Searched E0 shift (eV).
    de0_step : float
        Step of the coarse dE0 grid (eV) before the Brent refinement.
    merge_distance : float
        Largest R gap (Angstrom) between grid points of one shell.
    min_fraction : float
        Shells with N S0^2 below this fraction of the largest are dropped.
    bootstrap : int
        Block-bootstrap replicates (0: no uncertainties).
    block_k : float
        Bootstrap block length (1/Angstrom).
    """

    k_range: tuple = (3.0, 14.0)
    kweight: float = 2.0
    r_range: tuple = (1.5, 5.5)
    r_step: float = 0.01
    sigma2_grid: tuple = (0.002, 0.005, 0.009, 0.015)
    folds: int = 5
    n_alphas: int = 30
    alpha_ratio: float = 1e-4
    one_se: bool = False
    penalty: str = "columns"
    cv_refit: bool = True
    de0_range: tuple = (-15.0, 15.0)
    de0_step: float = 2.0
    merge_distance: float = 0.05
    min_fraction: float = 0.05
    bootstrap: int = 50
    block_k: float = 1.0


@dataclass
class Shell:
    """One merged shell: R (Angstrom), N S0^2, sigma^2 (Angstrom^2), with bootstrap sds and support."""

    r: float
    n: float
    sigma2: float
    r_lo: float
    r_hi: float
    r_sd: float = float("nan")
    n_sd: float = float("nan")
    sigma2_sd: float = float("nan")
    support: float = float("nan")


@dataclass
class SparseResult:
    """Everything the product stores (arrays over the fitted k points and the grid)."""

    k: np.ndarray
    y: np.ndarray
    fit: np.ndarray
    basis: Basis
    coef_map: np.ndarray          # N S0^2 per grid point (nR, ns), after the NNLS refit
    lasso_map: np.ndarray         # N S0^2 per grid point at the selected alpha (shrunk)
    alphas: np.ndarray
    cv_mean: np.ndarray
    cv_se: np.ndarray
    alpha: float
    alpha_min: float
    de0: float
    de0_grid: np.ndarray
    de0_objective: np.ndarray
    shells: list[Shell] = field(default_factory=list)
    boot_seed: list[int] | None = None


def nonneg_lasso_gram(gram: np.ndarray, corr: np.ndarray, alpha: float, start: np.ndarray | None = None,
                      kkt_tol: float = 1e-10, max_iter: int | None = None) -> np.ndarray:
    """Exact nonnegative LASSO by an active-set method on the Gram matrix (Lawson-Hanson, with a linear term).

    Minimizes ``c^T G c / 2 - (b - alpha)^T c`` over c >= 0, which is the LASSO objective
    ``||y - A c||^2 / (2 n) + alpha |c|_1`` (up to a constant) with G = A^T A / n and
    b = A^T y / n. The solution is sparse, so the active set stays small and each step
    solves one small linear system: on the highly correlated columns of a dense R grid
    this takes a few dozen steps where coordinate descent needs thousands of sweeps
    (benchmarks/bench_sparse.py); tests compare it with scikit-learn's coordinate descent.

    Parameters
    ----------
    gram : ndarray, shape (p, p)
        A^T A / n.
    corr : ndarray, shape (p,)
        A^T y / n.
    alpha : float
        L1 penalty.
    start : ndarray, optional
        A feasible (nonnegative) starting point, e.g. the solution at a nearby alpha.
    kkt_tol : float
        Optimality tolerance on the gradient, relative to max |b - alpha|.
    max_iter : int, optional
        Largest number of active-set changes (default 10 p).

    Returns
    -------
    ndarray, shape (p,)
    """
    g = np.asarray(corr, float) - alpha
    p = g.size
    c = np.zeros(p) if start is None else np.clip(np.asarray(start, float), 0.0, None).copy()
    passive = c > 0
    thresh = kkt_tol * max(float(np.abs(g).max()), 1e-300)
    last_added = -1
    for _ in range(max_iter or 10 * p):
        c, passive, dropped = _passive_solve(gram, g, c, passive)
        if last_added >= 0 and last_added in dropped:
            break  # degenerate step (numerically zero gain): the current point is optimal within tolerance
        nz = np.nonzero(c)[0]
        w = g - gram[:, nz] @ c[nz]  # only the few nonzero coefficients contribute
        w[passive] = -np.inf
        j = int(np.argmax(w))
        if w[j] <= thresh:
            break
        passive[j] = True
        last_added = j
    return c


def _passive_solve(gram, g, c, passive):
    """Minimize on the passive set, stepping back to the boundary while a coefficient would turn negative."""
    dropped: set[int] = set()
    while passive.any():
        idx = np.nonzero(passive)[0]
        sub = gram[np.ix_(idx, idx)]
        try:
            z = np.linalg.solve(sub, g[idx])
        except np.linalg.LinAlgError:
            z = np.linalg.lstsq(sub, g[idx], rcond=None)[0]
        if np.all(z > 0):
            c = np.zeros_like(c)
            c[idx] = z
            return c, passive, dropped
        neg = z <= 0
        ci = c[idx]
        ratios = ci[neg] / (ci[neg] - z[neg])
        step = float(np.min(ratios))
        c = c.copy()
        c[idx] = ci + step * (z - ci)
        # the blocking coefficient(s) reach zero; anything else numerically zero leaves too
        tiny = 1e-14 * max(1.0, float(np.abs(c).max()))
        gone = np.union1d(idx[neg][ratios <= step], idx[c[idx] <= tiny])
        c[gone] = 0.0
        passive = passive.copy()
        passive[gone] = False
        dropped.update(int(i) for i in gone)
    return np.zeros_like(c), passive, dropped


def lasso_sklearn(a: np.ndarray, y: np.ndarray, alpha: float, cd_tol: float = 1e-6, cd_max_iter: int = 100000) -> np.ndarray:
    """Nonnegative LASSO by scikit-learn's coordinate descent (the reference the active-set solver is tested on)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    m = Lasso(alpha=alpha, positive=True, fit_intercept=False, max_iter=cd_max_iter, tol=cd_tol, precompute=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(a, y)
    return np.asarray(m.coef_, float)


def _fit_lasso(a: np.ndarray, y: np.ndarray, alpha: float, warm=None) -> np.ndarray:
    n = len(y)
    return nonneg_lasso_gram(a.T @ a / n, a.T @ y / n, alpha, warm)


def lasso_objective(a: np.ndarray, y: np.ndarray, coef: np.ndarray, alpha: float) -> float:
    """scikit-learn's LASSO objective ||y - A c||^2 / (2 n) + alpha |c|_1."""
    r = y - a @ coef
    return float(r @ r / (2 * len(y)) + alpha * np.abs(coef).sum())


def alpha_grid(a: np.ndarray, y: np.ndarray, n_alphas: int = 30, alpha_ratio: float = 1e-4) -> np.ndarray:
    """Penalties from alpha_max = max(A^T y) / n (all coefficients zero for nonnegative LASSO) down, log-spaced."""
    amax = float(np.max(a.T @ y)) / len(y)
    if amax <= 0:
        raise AnalysisInputError("no basis column correlates positively with the data (is chi(k) all noise?)")
    return amax * np.logspace(0, np.log10(alpha_ratio), n_alphas)


def contiguous_folds(n: int, folds: int) -> list[np.ndarray]:
    """Index blocks of ``n`` points split into ``folds`` contiguous, nearly equal parts."""
    return np.array_split(np.arange(n), folds)


def lasso_path_gram(a: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Coefficients (p, n_alphas) along decreasing ``alphas``, each solve started from the previous one."""
    n = len(y)
    gram, corr = a.T @ a / n, a.T @ y / n
    out = np.zeros((a.shape[1], len(alphas)))
    c = None
    for i, al in enumerate(alphas):
        c = nonneg_lasso_gram(gram, corr, al, c)
        out[:, i] = c
    return out


def cross_validate(a: np.ndarray, y: np.ndarray, alphas: np.ndarray, folds: int = 5,
                   refit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over contiguous-k folds of the held-out mean squared error, per alpha."""
    errs = np.empty((folds, len(alphas)))
    for f, test in enumerate(contiguous_folds(len(y), folds)):
        train = np.setdiff1d(np.arange(len(y)), test)
        coefs = lasso_path_gram(a[train], y[train], alphas)
        if refit:  # score the estimator that is reported: the LASSO's support refitted by NNLS
            coefs = np.column_stack([nnls_refit(a[train], y[train], coefs[:, i] > 0) for i in range(len(alphas))])
        pred = a[test] @ coefs
        errs[f] = np.mean((y[test, None] - pred) ** 2, axis=0)
    return errs.mean(axis=0), errs.std(axis=0, ddof=1) / np.sqrt(folds)


def select_alpha(alphas: np.ndarray, cv_mean: np.ndarray, cv_se: np.ndarray, one_se: bool = False) -> tuple[float, float]:
    """(selected alpha, alpha at the CV minimum); one_se: the largest alpha with mean <= min + se at the min."""
    i = int(np.argmin(cv_mean))
    if not one_se:
        return float(alphas[i]), float(alphas[i])
    ok = np.nonzero(cv_mean <= cv_mean[i] + cv_se[i])[0]
    return float(np.max(alphas[ok])), float(alphas[i])


def nnls_refit(a: np.ndarray, y: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Nonnegative least squares on the columns in ``support`` (boolean); zeros elsewhere."""
    from scipy.optimize import nnls

    coef = np.zeros(a.shape[1])
    idx = np.nonzero(support)[0]
    if idx.size:
        coef[idx], _ = nnls(a[:, idx], y, maxiter=50 * max(idx.size, 10))
    return coef


def merge_shells(coef_map: np.ndarray, r_grid: np.ndarray, sigma2_grid: np.ndarray, merge_distance: float = 0.05,
                 min_fraction: float = 0.05) -> list[Shell]:
    """Shells from a map of N S0^2 over (R, sigma^2): runs of grid points at most ``merge_distance`` apart."""
    w = coef_map.sum(axis=1)
    idx = np.nonzero(w > 0)[0]
    groups: list[list[int]] = []
    for i in idx:
        if groups and r_grid[i] - r_grid[groups[-1][-1]] <= merge_distance + 1e-9:
            groups[-1].append(i)
        else:
            groups.append([i])
    shells = []
    for g in groups:
        sub = coef_map[g]
        n = float(sub.sum())
        r = float((sub.sum(axis=1) * r_grid[g]).sum() / n)
        s2 = float((sub.sum(axis=0) * sigma2_grid).sum() / n)
        shells.append(Shell(r=r, n=n, sigma2=s2, r_lo=float(r_grid[g[0]]), r_hi=float(r_grid[g[-1]])))
    if shells:
        top = max(s.n for s in shells)
        shells = [s for s in shells if s.n >= min_fraction * top]
    return shells


def _window_stats(coef_map, r_grid, sigma2_grid, lo, hi):
    m = (r_grid >= lo - 1e-9) & (r_grid <= hi + 1e-9)
    sub = coef_map[m]
    n = float(sub.sum())
    if n <= 0:
        return np.nan, 0.0, np.nan
    return float((sub.sum(axis=1) * r_grid[m]).sum() / n), n, float((sub.sum(axis=0) * sigma2_grid).sum() / n)


def block_bootstrap_indices(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Moving-block bootstrap: ``n`` indices from blocks of ``block`` consecutive points with random starts."""
    block = max(1, min(block, n))
    starts = rng.integers(0, n - block + 1, size=int(np.ceil(n / block)))
    return np.concatenate([np.arange(s, s + block) for s in starts])[:n]


def _fit_at(a: np.ndarray, y: np.ndarray, alpha: float, warm=None) -> tuple[np.ndarray, np.ndarray]:
    lasso = _fit_lasso(a, y, alpha, warm)
    return lasso, nnls_refit(a, y, lasso > 0)


def fit_sparse(k, chi, path: FeffPath, spec: SparseSpec = SparseSpec(), rng: np.random.Generator | None = None,
               progress=None) -> SparseResult:
    """Sparse radial distribution of one chi(k) with the pair's FEFF basis (see the module docstring).

    Parameters
    ----------
    k, chi : array_like
        chi(k) on its k grid (1/Angstrom; chi not k-weighted).
    path : FeffPath
        The absorber-scatterer scattering functions.
    spec : SparseSpec
        Grid, CV, dE0 and bootstrap settings.
    rng : numpy.random.Generator, optional
        Generator of the bootstrap (required when ``spec.bootstrap`` > 0).
    progress : callable, optional
        Called with one-line messages.

    Returns
    -------
    SparseResult
    """
    from scipy.optimize import minimize_scalar

    say = progress or (lambda msg: None)
    k = np.asarray(k, float)
    chi = np.asarray(chi, float)
    kmin, kmax = spec.k_range
    m = (k >= kmin - 1e-9) & (k <= kmax + 1e-9)
    if m.sum() < 3 * spec.folds:
        raise AnalysisInputError(f"only {int(m.sum())} chi(k) points in k = [{kmin:g}, {kmax:g}] 1/A "
                                 f"(need {3 * spec.folds} for {spec.folds} folds)")
    if kmax > path.k[-1]:
        raise AnalysisInputError(f"k_range ends at {kmax:g} 1/A, beyond FEFF's k grid (up to {path.k[-1]:g} 1/A)")
    if spec.r_range[0] >= spec.r_range[1]:
        raise AnalysisInputError(f"r_range {list(spec.r_range)} is not ordered")
    kf = k[m]
    y = chi[m] * kf ** spec.kweight
    from xafsflow.exafs.basis import r_grid_of

    r_grid = r_grid_of(spec.r_range, spec.r_step)
    s2 = np.asarray(spec.sigma2_grid, float)
    splines = _splines(path)

    def basis(de0):
        return basis_matrix(path, kf, r_grid, s2, spec.kweight, de0, splines=splines, penalty=spec.penalty)

    b0 = basis(0.0)
    alphas = alpha_grid(b0.matrix, y, spec.n_alphas, spec.alpha_ratio)
    mean0, se0 = cross_validate(b0.matrix, y, alphas, spec.folds, spec.cv_refit)
    alpha0, _ = select_alpha(alphas, mean0, se0, spec.one_se)
    say(f"CV at dE0 = 0: alpha = {alpha0:.3g}")

    # dE0: coarse grid, then Brent inside the best grid cell
    lo, hi = spec.de0_range
    grid = np.arange(lo, hi + 1e-9, spec.de0_step) if hi > lo else np.array([lo])
    objective = []
    warm = None
    for d in grid:
        bm = basis(d).matrix
        warm = _fit_lasso(bm, y, alpha0, warm)
        objective.append(lasso_objective(bm, y, warm, alpha0))
    objective = np.array(objective)
    best = float(grid[int(np.argmin(objective))])
    if hi > lo:
        def obj(d):
            bm = basis(d).matrix
            return lasso_objective(bm, y, _fit_lasso(bm, y, alpha0), alpha0)

        res = minimize_scalar(obj, bounds=(max(lo, best - spec.de0_step), min(hi, best + spec.de0_step)),
                              method="bounded", options={"xatol": 0.02})
        de0 = float(res.x) if res.fun <= objective.min() else best
    else:
        de0 = best
    say(f"dE0 = {de0:.2f} eV")

    b = basis(de0)
    mean, se = cross_validate(b.matrix, y, alphas, spec.folds, spec.cv_refit)
    alpha, alpha_min = select_alpha(alphas, mean, se, spec.one_se)
    lasso, coef = _fit_at(b.matrix, y, alpha)
    shape = b.shape
    coef_map = (coef / b.norms).reshape(shape)
    lasso_map = (lasso / b.norms).reshape(shape)
    shells = merge_shells(coef_map, r_grid, s2, spec.merge_distance, spec.min_fraction)
    say(f"alpha = {alpha:.3g}: {int((coef > 0).sum())} grid points, {len(shells)} shells")

    if spec.bootstrap > 0 and shells:
        if rng is None:
            raise ValueError("a bootstrap needs rng")
        dk = float(np.median(np.diff(kf)))
        block = max(1, int(round(spec.block_k / dk)))
        stats = np.full((spec.bootstrap, len(shells), 3), np.nan)
        for i in range(spec.bootstrap):
            idx = block_bootstrap_indices(len(y), block, rng)
            _, cb = _fit_at(b.matrix[idx], y[idx], alpha, warm=lasso)
            cmap = (cb / b.norms).reshape(shape)
            for j, sh in enumerate(shells):
                stats[i, j] = _window_stats(cmap, r_grid, s2, sh.r_lo - spec.merge_distance,
                                            sh.r_hi + spec.merge_distance)
        for j, sh in enumerate(shells):
            present = stats[:, j, 1] > 0
            sh.support = float(present.mean())
            if present.sum() >= 2:
                sh.r_sd = float(np.nanstd(stats[present, j, 0], ddof=1))
                sh.sigma2_sd = float(np.nanstd(stats[present, j, 2], ddof=1))
            sh.n_sd = float(np.std(stats[:, j, 1], ddof=1))
        say(f"bootstrap: {spec.bootstrap} replicates in blocks of {block} k points")
    return SparseResult(k=kf, y=y, fit=b.matrix @ coef, basis=b, coef_map=coef_map, lasso_map=lasso_map,
                        alphas=alphas, cv_mean=mean, cv_se=se, alpha=alpha, alpha_min=alpha_min, de0=de0,
                        de0_grid=grid, de0_objective=objective, shells=shells)
