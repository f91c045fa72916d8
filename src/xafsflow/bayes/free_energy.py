"""Bayesian free energy from replica energies; noise precision from the evidence.

Conventions (Nagata, Sugita & Okada 2012): E(theta) = (1/2N) sum (y - f)^2,
F(b) = -log int exp(-N b E(theta)) p(theta) dtheta, and the log evidence at
noise precision b is log Z(b) = (N/2) log(b / 2 pi) - F(b).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp


def stepping_stone(energies: np.ndarray, bvals: np.ndarray, n_points: int) -> np.ndarray:
    """F(b_l) at every ladder point by stepping-stone sampling.

    Z(b_{l+1}) / Z(b_l) = < exp(-N (b_{l+1} - b_l) E) >_{b_l}, estimated from the
    samples at b_l; F(b_0 = 0) = 0 because the prior is normalized.

    Parameters
    ----------
    energies : (S, L) energies E of each sweep (rows) at each ladder point (columns).
    bvals : (L,) ladder of precisions, b_0 = 0, increasing.
    n_points : N, the number of data points.
    """
    e = np.asarray(energies, float)
    s = e.shape[0]
    db = np.diff(bvals)
    logr = logsumexp(-n_points * db[None, :] * e[:, :-1], axis=0) - math.log(s)
    return np.concatenate([[0.0], -np.cumsum(logr)])


def _bar_pair(wf: np.ndarray, wr: np.ndarray) -> float:
    """Bennett acceptance ratio: Delta F = F_B - F_A from forward works (samples of A) and
    reverse works (samples of B), both in units of kT (here: nats)."""
    from scipy.optimize import brentq
    from scipy.special import expit

    na, nb = wf.size, wr.size
    m = math.log(na / nb)

    def g(df):
        # sum_A 1/(1+exp(m + wf - df)) - sum_B 1/(1+exp(-m + wr + df))
        return np.sum(expit(-(m + wf - df))) - np.sum(expit(-(-m + wr + df)))

    lo = float(min(wf.min(), -wr.max())) - 50.0
    hi = float(max(wf.max(), -wr.min())) + 50.0
    return brentq(g, lo, hi, xtol=1e-12, rtol=1e-14, maxiter=500)


def bridge(energies: np.ndarray, bvals: np.ndarray, n_points: int) -> np.ndarray:
    """F(b_l) at every ladder point by bridge sampling (Bennett's acceptance ratio) between neighbours.

    Uses the samples of both replicas of each pair, which has a much smaller
    variance than the one-sided stepping-stone estimate when neighbours overlap
    only moderately. F(b_0 = 0) = 0.
    """
    e = np.asarray(energies, float)
    out = [0.0]
    for l in range(bvals.size - 1):
        db = bvals[l + 1] - bvals[l]
        wf = n_points * db * e[:, l]  # u_{l+1} - u_l on samples of l
        wr = -n_points * db * e[:, l + 1]  # u_l - u_{l+1} on samples of l+1
        out.append(out[-1] + _bar_pair(wf, wr))
    return np.asarray(out)


def thermodynamic_integration(energies: np.ndarray, bvals: np.ndarray, n_points: int) -> np.ndarray:
    """F(b_l) = int_0^{b_l} N <E>_b db by the trapezoid rule over the ladder (a cross-check)."""
    m = n_points * np.asarray(energies, float).mean(axis=0)
    return np.concatenate([[0.0], np.cumsum(0.5 * (m[1:] + m[:-1]) * np.diff(bvals))])


def batch_means_error(energies: np.ndarray, bvals: np.ndarray, n_points: int, n_batches: int = 5,
                      estimator=None) -> np.ndarray:
    """Standard error of ``estimator`` (F at every ladder point) from ``n_batches`` contiguous batches.

    A cheap error for deciding whether to sample on (n_batches estimator calls
    instead of a bootstrap's hundred); the product reports the block bootstrap.
    """
    estimator = bridge if estimator is None else estimator
    e = np.asarray(energies, float)
    parts = np.array_split(e, n_batches)
    vals = np.array([estimator(part, bvals, n_points) for part in parts])
    return vals.std(axis=0, ddof=1) / math.sqrt(n_batches)


def block_bootstrap(energies: np.ndarray, bvals: np.ndarray, n_points: int, rng: np.random.Generator,
                    n_boot: int = 100, n_blocks: int = 20, estimator=None) -> np.ndarray:
    """Standard error of ``estimator`` (F at every ladder point) by a moving-block bootstrap.

    Sweeps are resampled in contiguous blocks (the same blocks for every replica,
    which keeps their correlation through exchanges).
    """
    estimator = bridge if estimator is None else estimator
    e = np.asarray(energies, float)
    s = e.shape[0]
    blen = max(1, s // n_blocks)
    nb = s // blen
    starts = rng.integers(0, s - blen + 1, size=(n_boot, nb))
    out = np.empty((n_boot, e.shape[1]))
    idx_base = np.arange(blen)
    for i in range(n_boot):
        idx = (starts[i][:, None] + idx_base[None, :]).ravel()
        out[i] = estimator(e[idx], bvals, n_points)
    return out.std(axis=0, ddof=1)


def free_energy_curve(energies: np.ndarray, bvals: np.ndarray, n_points: int, grid: np.ndarray) -> np.ndarray:
    """F(b) on an arbitrary grid of precisions within the ladder, by reweighting.

    At each grid point b the estimate combines the two ladder points around it:
    from below, F(b) = F(b_l) - log < exp(-N (b - b_l) E) >_{b_l}; from above,
    F(b) = F(b_{l+1}) - log < exp(+N (b_{l+1} - b) E) >_{b_{l+1}}. The two are
    averaged with weights that favour the nearer ladder point (linear in b).
    Above the top, only the estimate from the top replica (reweighting
    upward) is used: a ladder whose top was moved near the evidence peak
    (:mod:`xafsflow.bayes.ladder`) still gives log Z on the whole prior range
    of b, accurately where it matters (near the top, where log Z is already
    far below its peak further up).
    """
    e = np.asarray(energies, float)
    s = e.shape[0]
    f_ladder = bridge(e, bvals, n_points)
    grid = np.asarray(grid, float)
    out = np.empty_like(grid)
    for i, b in enumerate(grid):
        l = int(np.clip(np.searchsorted(bvals, b, side="right") - 1, 0, bvals.size - 2))
        lo, hi = bvals[l], bvals[l + 1]
        f_lo = f_ladder[l] - (logsumexp(-n_points * (b - lo) * e[:, l]) - math.log(s))
        f_hi = f_ladder[l + 1] - (logsumexp(n_points * (hi - b) * e[:, l + 1]) - math.log(s))
        w = (hi - b) / (hi - lo) if b <= hi else 0.0
        out[i] = w * f_lo + (1 - w) * f_hi
    return out


def log_evidence(free_energy, b, n_points: int):
    """log Z(b) = (N/2) log(b / 2 pi) - F(b)."""
    return 0.5 * n_points * np.log(np.asarray(b, float) / (2 * math.pi)) - np.asarray(free_energy, float)


def combine_runs(values, axis: int = 0):
    """Log of the mean of independent runs' evidence estimates, from their logs.

    Each run's Z (not log Z) is the consistently estimated quantity, so runs are
    averaged in Z: log Z = logsumexp(log Z_r) - log R. Where runs agree this is
    their mean; where a run stayed in a poorer local mode (which only ever loses
    evidence) the better runs dominate. For free energies use
    ``-combine_runs(-F_runs)``.
    """
    v = np.asarray(values, float)
    return logsumexp(v, axis=axis) - math.log(v.shape[axis])


def estimate_noise(energies, bvals: np.ndarray, n_points: int, n_grid: int = 400,
                   level: float = 0.95, b_range: tuple[float, float] | None = None) -> dict:
    """Noise level sigma-hat maximising log Z(b) (Tokuda et al. 2017), with an interval.

    log Z(b) is evaluated on a log-spaced grid over the ladder (b_1 .. b_max) by
    reweighting, for each independent run (``energies`` is one (S, L) array or
    a sequence of them), and the runs are combined with :func:`combine_runs`.
    The interval is the central ``level`` interval of the posterior of b under
    a log-uniform (scale-invariant) prior over that range, p(b | D)
    proportional to Z(b) / b, mapped to sigma = b^(-1/2). ``b_range`` sets the
    range instead of the ladder's: models compared by their b-marginal evidence
    need the same prior on b even when their ladders were tuned apart.
    """
    runs = [np.asarray(energies, float)] if np.ndim(energies) == 2 else [np.asarray(e, float) for e in energies]
    b_pos = bvals[bvals > 0]
    grid = np.geomspace(*(b_range or (b_pos[0], b_pos[-1])), n_grid)
    logz_runs = np.array([log_evidence(free_energy_curve(e, bvals, n_points, grid), grid, n_points) for e in runs])
    logz = combine_runs(logz_runs)
    i = int(np.argmax(logz))
    # posterior over log b (uniform prior in log b): weights Z(b) on the log grid
    w = np.exp(logz - logz.max())
    cdf = np.cumsum(w) / w.sum()
    lo_b = grid[min(np.searchsorted(cdf, (1 - level) / 2), grid.size - 1)]
    hi_b = grid[min(np.searchsorted(cdf, 1 - (1 - level) / 2), grid.size - 1)]
    # at the grid's ends, or above half the ladder's top (where log Z(b) is extrapolated from the top replica)
    at_edge = i == 0 or i == grid.size - 1 or grid[i] > 0.5 * b_pos[-1]
    return {
        "b_hat": float(grid[i]), "sigma_hat": float(grid[i] ** -0.5),
        "sigma_interval": (float(hi_b ** -0.5), float(lo_b ** -0.5)),
        "sigma_hat_runs": grid[np.argmax(logz_runs, axis=1)] ** -0.5,
        "log_evidence_max": float(logz[i]), "grid": grid, "log_evidence": logz, "at_ladder_edge": bool(at_edge),
        # log of int Z(b) p(b) db with p uniform in log b over the grid: the b-marginal evidence
        "log_evidence_marginal": float(logsumexp(logz) + math.log(np.log(grid[-1] / grid[0]) / (grid.size - 1))
                                       - math.log(np.log(grid[-1] / grid[0]))),
    }


def model_probabilities(log_z: np.ndarray) -> np.ndarray:
    """P(K | data) from log evidences with a uniform prior over the K range."""
    lz = np.asarray(log_z, float)
    return np.exp(lz - logsumexp(lz))
