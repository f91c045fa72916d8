"""Bayesian free energy from replica energies; noise precision from the evidence.

Conventions (Nagata, Sugita & Okada 2012): E(theta) = (1/2N) sum (y - f)^2,
F(b) = -log int exp(-N b E(theta)) p(theta) dtheta, and the log evidence at
noise precision b is log Z(b) = (N/2) log(b / 2 pi) - F(b).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
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
    reverse works (samples of B), both in units of kT (here: nats). SciPy reference of
    :func:`_bar_newton`, which :func:`bridge` uses."""
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


@njit(cache=True)
def _expit(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@njit(cache=True)
def _bar_newton(wf, wr, guess, has_guess):
    """The root of Bennett's equation (see :func:`_bar_pair`) by Newton's method kept inside a
    bracket that shrinks to the sign change (bisection when a step would leave it).

    g(df) = sum_A s(df - m - wf) - sum_B s(m - wr - df), s the logistic function, increases with
    df, so one root; g' = sum s (1 - s) over both. Starts at ``guess`` when ``has_guess`` (e.g. the
    estimate from all samples, when resampling), else at the middle of the Jarzynski bounds
    [-mean(wr), mean(wf)]."""
    na, nb = wf.size, wr.size
    m = math.log(na / nb)
    lo = min(wf.min(), -wr.max()) - 50.0
    hi = max(wf.max(), -wr.min()) + 50.0
    df = guess if has_guess else 0.5 * (wf.mean() - wr.mean())
    if not lo < df < hi:
        df = 0.5 * (lo + hi)
    for _ in range(200):
        gv = 0.0
        dg = 0.0
        for i in range(na):
            t = _expit(df - m - wf[i])
            gv += t
            dg += t * (1.0 - t)
        for j in range(nb):
            t = _expit(m - wr[j] - df)
            gv -= t
            dg += t * (1.0 - t)
        if gv > 0.0:
            hi = df
        elif gv < 0.0:
            lo = df
        else:
            return df
        new = df - gv / dg if dg > 0.0 else 0.5 * (lo + hi)
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - df) <= 1e-13 * max(1.0, abs(df)) or hi - lo <= 1e-13 * max(1.0, abs(df)):
            return new
        df = new
    return df


def bridge(energies: np.ndarray, bvals: np.ndarray, n_points: int, guess: np.ndarray | None = None) -> np.ndarray:
    """F(b_l) at every ladder point by bridge sampling (Bennett's acceptance ratio) between neighbours.

    Uses the samples of both replicas of each pair, which has a much smaller
    variance than the one-sided stepping-stone estimate when neighbours overlap
    only moderately. F(b_0 = 0) = 0. ``guess``: F at every ladder point from a
    previous estimate (speeds up resampling; the result does not depend on it).
    """
    e = np.asarray(energies, float)
    out = [0.0]
    for l in range(bvals.size - 1):
        db = bvals[l + 1] - bvals[l]
        wf = n_points * db * e[:, l]  # u_{l+1} - u_l on samples of l
        wr = -n_points * db * e[:, l + 1]  # u_l - u_{l+1} on samples of l+1
        g0 = 0.0 if guess is None else float(guess[l + 1] - guess[l])
        out.append(out[-1] + _bar_newton(np.ascontiguousarray(wf), np.ascontiguousarray(wr), g0, guess is not None))
    return np.asarray(out)


# The error estimates resample at most this many sweeps per run, evenly thinned from longer chains:
# consecutive sweeps' energies are strongly correlated, so thinning loses little, and a thinned
# estimator's error can only be larger (conservative); it makes a 32 000-sweep bootstrap 8 times cheaper.
MAX_ERROR_SAMPLES = 4000


def thinned(energies: np.ndarray, max_samples: int | None = None) -> np.ndarray:
    """Every k-th row of ``energies`` (sweeps, L), k the smallest step leaving at most ``max_samples`` rows."""
    e = np.asarray(energies, float)
    k = -(-e.shape[0] // (MAX_ERROR_SAMPLES if max_samples is None else max_samples))
    return e[::k] if k > 1 else e


def thermodynamic_integration(energies: np.ndarray, bvals: np.ndarray, n_points: int) -> np.ndarray:
    """F(b_l) = int_0^{b_l} N <E>_b db by the trapezoid rule over the ladder (a cross-check)."""
    m = n_points * np.asarray(energies, float).mean(axis=0)
    return np.concatenate([[0.0], np.cumsum(0.5 * (m[1:] + m[:-1]) * np.diff(bvals))])


def batch_means_error(energies: np.ndarray, bvals: np.ndarray, n_points: int, n_batches: int = 5,
                      guess: np.ndarray | None = None) -> np.ndarray:
    """Standard error of the bridge estimate of F at every ladder point from ``n_batches`` contiguous batches.

    A cheap error for deciding whether to sample on (n_batches bridge calls
    instead of a bootstrap's hundred); the product reports the block bootstrap.
    Energies beyond ``MAX_ERROR_SAMPLES`` sweeps are thinned first (:func:`thinned`);
    ``guess``: the bridge estimate of F from all of them (:func:`bridge`), if known.
    """
    e = thinned(energies)
    guess = bridge(e, bvals, n_points) if guess is None else guess
    vals = np.array([bridge(part, bvals, n_points, guess) for part in np.array_split(e, n_batches)])
    return vals.std(axis=0, ddof=1) / math.sqrt(n_batches)


def block_bootstrap(energies: np.ndarray, bvals: np.ndarray, n_points: int, rng: np.random.Generator,
                    n_boot: int = 100, n_blocks: int = 20, guess: np.ndarray | None = None) -> np.ndarray:
    """Standard error of the bridge estimate of F at every ladder point by a moving-block bootstrap.

    Sweeps are resampled in contiguous blocks (the same blocks for every replica,
    which keeps their correlation through exchanges). Energies beyond
    ``MAX_ERROR_SAMPLES`` sweeps are thinned first (:func:`thinned`); ``guess``:
    the bridge estimate of F from all of them, if known.
    """
    e = thinned(energies)
    guess = bridge(e, bvals, n_points) if guess is None else guess
    s = e.shape[0]
    blen = max(1, s // n_blocks)
    nb = s // blen
    starts = rng.integers(0, s - blen + 1, size=(n_boot, nb))
    out = np.empty((n_boot, e.shape[1]))
    idx_base = np.arange(blen)
    for i in range(n_boot):
        idx = (starts[i][:, None] + idx_base[None, :]).ravel()
        out[i] = bridge(e[idx], bvals, n_points, guess)
    return out.std(axis=0, ddof=1)


def free_energy_curve(energies: np.ndarray, bvals: np.ndarray, n_points: int, grid: np.ndarray,
                      f_ladder: np.ndarray | None = None) -> np.ndarray:
    """F(b) on an arbitrary grid of precisions within the ladder, by reweighting.

    At each grid point b the estimate combines the two ladder points around it:
    from below, F(b) = F(b_l) - log < exp(-N (b - b_l) E) >_{b_l}; from above,
    F(b) = F(b_{l+1}) - log < exp(+N (b_{l+1} - b) E) >_{b_{l+1}}. The two are
    averaged with weights that favour the nearer ladder point (linear in b).
    Above the top, only the estimate from the top replica (reweighting
    upward) is used: a ladder whose top was moved near the evidence peak
    (:mod:`xafsflow.bayes.ladder`) still gives log Z on the whole prior range
    of b, accurately where it matters (near the top, where log Z is already
    far below its peak further up). ``f_ladder``: :func:`bridge` of these
    energies, when already computed.
    """
    e = np.asarray(energies, float)
    s = e.shape[0]
    f_ladder = bridge(e, bvals, n_points) if f_ladder is None else f_ladder
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
                   level: float = 0.95, b_range: tuple[float, float] | None = None, f_ladders=None) -> dict:
    """Noise level sigma-hat maximising log Z(b) (Tokuda et al. 2017), with an interval.

    log Z(b) is evaluated on a log-spaced grid over the ladder (b_1 .. b_max) by
    reweighting, for each independent run (``energies`` is one (S, L) array or
    a sequence of them), and the runs are combined with :func:`combine_runs`.
    The interval is the central ``level`` interval of the posterior of b under
    a log-uniform (scale-invariant) prior over that range, p(b | D)
    proportional to Z(b) / b, mapped to sigma = b^(-1/2). ``b_range`` sets the
    range instead of the ladder's: models compared by their b-marginal evidence
    need the same prior on b even when their ladders were tuned apart.
    ``f_ladders``: each run's :func:`bridge` estimate, when already computed.
    """
    runs = [np.asarray(energies, float)] if np.ndim(energies) == 2 else [np.asarray(e, float) for e in energies]
    b_pos = bvals[bvals > 0]
    grid = np.geomspace(*(b_range or (b_pos[0], b_pos[-1])), n_grid)
    f_ladders = [None] * len(runs) if f_ladders is None else f_ladders
    logz_runs = np.array([log_evidence(free_energy_curve(e, bvals, n_points, grid, f), grid, n_points)
                          for e, f in zip(runs, f_ladders)])
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
