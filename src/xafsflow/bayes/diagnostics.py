"""Convergence diagnostics for MCMC draws: rank-normalized R-hat, bulk and tail ESS.

Implementation of the diagnostics of Vehtari, Gelman, Simpson, Carpenter and
Bürkner (2021), "Rank-normalization, folding, and localization: an improved
R-hat for assessing convergence of MCMC", Bayesian Analysis 16, 667-718.

Every public function takes ``chains``, an array of shape ``(chains, draws)``
(one parameter) or ``(chains, draws, *shape)`` (one value per parameter,
computed independently). A 2-D input gives a Python ``float``; otherwise an
array of shape ``shape``.

Definitions (S = total number of draws, M chains of N draws after splitting):

* **Split chains.** Each chain is cut into its first and last ``draws // 2``
  draws (the middle draw of an odd-length chain is dropped), giving 2x the
  chains. A single chain therefore still gives two chains to compare.
* **Rank normalization.** Draws are ranked jointly over all chains (ties get
  their average rank r) and mapped to ``z = Phi^-1((r - 3/8) / (S + 1/4))``
  (Blom's offsets).
* **Folding.** ``|theta - median(theta)|``, with the median of the split draws.
* **Split-R-hat.** With chain means m_j, within-chain variances s_j^2 (``ddof=1``),
  ``W = mean(s_j^2)``, ``B/N = var(m_j, ddof=1)``,
  ``var+ = (N - 1)/N W + B/N`` and ``R-hat = sqrt(var+ / W)``.
  :func:`rank_normalized_rhat` is the larger of the split-R-hat of the
  rank-normalized draws (bulk) and of the rank-normalized folded draws (tails).
* **ESS.** Per-chain autocovariances ``c_j(t)`` are computed by FFT (zero padded
  to at least 2N, normalized by 1/N, i.e. ``s_j^2 rho_j(t)`` with the 1/N
  variance, as in the reference implementations), and combined with the
  between-chain variance: ``rho(t) = 1 - (W - mean_j c_j(t)) / var+`` for
  t >= 1, ``rho(0) = 1``. Geyer's initial monotone sequence is then applied to
  the pair sums ``P_k = rho(2k) + rho(2k + 1)``: the sum stops before the first
  pair with ``P_k <= 0`` (pairs are considered while ``2k + 1 <= N - 3`` for
  even N, ``N - 2`` for odd N, so the last autocorrelations, the noisiest, are
  never used), every ``P_k`` is replaced by the minimum of ``P_0 .. P_k``, and
  ``tau = -1 + 2 sum_k P_k + rho(2K)`` where ``rho(2K)``, the even lag of the
  pair where the sum stopped, is added once (and only if positive when that
  pair was negative; this reduces the variance for antithetic chains).
  ``ESS = S / max(tau, 1 / log10 S)``, i.e. at most ``S log10 S``.
  These conventions (1/N autocovariance, the even-lag term, the cap and the
  lag limit) are those of the Stan reference implementation the paper
  describes, so results agree with ArviZ and the ``posterior`` R package.
* :func:`ess_bulk` is the ESS of the rank-normalized split chains;
  :func:`ess_tail` the smaller ESS of the split indicators
  ``theta <= q`` for the 5 % and 95 % quantiles q (linear interpolation,
  "type 7", over all draws).

Edge cases: a parameter whose draws are all equal (or contain NaN) gives NaN
R-hat and ESS; so does a tail indicator that is constant. Fewer than 4 draws
per chain give NaN everywhere. Chains that are each constant but at different
values give an infinite R-hat. No warnings are emitted in any of these cases.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as _fft
from scipy import special as _special
from scipy import stats as _stats

__all__ = [
    "MIN_DRAWS",
    "ess",
    "ess_bulk",
    "ess_tail",
    "rank_normalize",
    "rank_normalized_rhat",
    "split_chains",
    "split_rhat",
]

#: Minimum number of draws per chain; fewer gives NaN diagnostics.
MIN_DRAWS = 4

_TAIL_PROBS = (0.05, 0.95)


# ----------------------------------------------------------------- input shape


def _as_3d(chains) -> tuple[np.ndarray, tuple[int, ...]]:
    """Return ``chains`` as float64 of shape (chains, draws, parameters) and the parameter shape."""
    x = np.asarray(chains, dtype=float)
    if x.ndim < 2:
        raise ValueError(
            f"chains must have shape (chains, draws) or (chains, draws, ...); got shape {x.shape}")
    if x.shape[0] < 1:
        raise ValueError("chains must hold at least one chain")
    shape = x.shape[2:]
    return x.reshape(x.shape[0], x.shape[1], int(np.prod(shape, dtype=int))), shape


def _out(values: np.ndarray, shape: tuple[int, ...]):
    """Shape a per-parameter result like the input: float for 2-D input, else array."""
    values = np.asarray(values, dtype=float)
    if shape == ():
        return float(values.reshape(-1)[0])
    return values.reshape(shape)


def _invalid(x: np.ndarray) -> np.ndarray:
    """Parameters whose diagnostics are undefined: NaN draws or all draws equal."""
    nan = np.isnan(x).any(axis=(0, 1))
    with np.errstate(invalid="ignore"):
        flat = np.ptp(x, axis=(0, 1)) == 0
    return nan | flat


# ------------------------------------------------------------------ transforms


def _split(x: np.ndarray) -> np.ndarray:
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _rank_normalize(x: np.ndarray) -> np.ndarray:
    m, n, p = x.shape
    size = m * n
    ranks = _stats.rankdata(x.reshape(size, p), method="average", axis=0)
    z = _special.ndtri((ranks - 0.375) / (size + 0.25))
    return z.reshape(m, n, p)


def split_chains(chains) -> np.ndarray:
    """Split every chain into its first and second half.

    Parameters
    ----------
    chains : array_like, shape (chains, draws) or (chains, draws, ...)
        MCMC draws.

    Returns
    -------
    numpy.ndarray, shape (2 * chains, draws // 2, ...)
        The first halves of all chains, then the second halves. For an odd
        number of draws the middle draw of each chain is dropped.
    """
    x = np.asarray(chains, dtype=float)
    _as_3d(x)
    return _split(x)


def rank_normalize(chains) -> np.ndarray:
    """Rank-normalize draws jointly over all chains (per parameter).

    Parameters
    ----------
    chains : array_like, shape (chains, draws) or (chains, draws, ...)
        MCMC draws; must not contain NaN.

    Returns
    -------
    numpy.ndarray
        Same shape: ``Phi^-1((r - 3/8) / (S + 1/4))`` with r the average rank of
        each draw among all S draws of its parameter.
    """
    x = np.asarray(chains, dtype=float)
    x3, shape = _as_3d(x)
    return _rank_normalize(x3).reshape(x.shape)


# ---------------------------------------------------------------------- R-hat


def _rhat(x: np.ndarray) -> np.ndarray:
    """Split-R-hat formula on already split chains x (M, N, P); no validity checks."""
    n = x.shape[1]
    means = x.mean(axis=1)
    chain_var = x.var(axis=1, ddof=1)
    chain_var[np.ptp(x, axis=1) == 0] = 0.0       # exact zero for a constant chain
    within = chain_var.mean(axis=0)
    between = means.var(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[2])
    var_plus = (n - 1) / n * within + between
    out = np.full(x.shape[2], np.nan)
    ok = within > 0
    out[ok] = np.sqrt(var_plus[ok] / within[ok])
    out[~ok & (between > 0)] = np.inf
    return out


def split_rhat(chains):
    """Classic split-R-hat (no rank normalization), per parameter.

    Parameters
    ----------
    chains : array_like, shape (chains, draws) or (chains, draws, ...)
        MCMC draws.

    Returns
    -------
    float or numpy.ndarray
        ``sqrt(var+ / W)`` of the split chains; NaN for a constant parameter,
        NaN draws or fewer than :data:`MIN_DRAWS` draws per chain.
    """
    x, shape = _as_3d(chains)
    out = np.full(x.shape[2], np.nan)
    if x.shape[1] >= MIN_DRAWS:
        ok = ~_invalid(x)
        if ok.any():
            out[ok] = _rhat(_split(x[:, :, ok]))
    return _out(out, shape)


def rank_normalized_rhat(chains):
    """Rank-normalized split-R-hat of Vehtari et al. (2021), per parameter.

    The larger of the split-R-hat of the rank-normalized draws (location, the
    bulk) and of the rank-normalized folded draws ``|theta - median|`` (scale,
    the tails). Values above 1.01 indicate that the chains have not mixed.

    Parameters
    ----------
    chains : array_like, shape (chains, draws) or (chains, draws, ...)
        MCMC draws. A single chain is compared between its two halves.

    Returns
    -------
    float or numpy.ndarray
        R-hat per parameter. NaN for a constant parameter, NaN draws or fewer
        than :data:`MIN_DRAWS` draws per chain; ``inf`` when every split chain
        is constant but they are not all equal. If only one of the two
        components is defined (the folded draws are all equal, as for a
        two-valued parameter split evenly), that component is returned.
    """
    x, shape = _as_3d(chains)
    out = np.full(x.shape[2], np.nan)
    if x.shape[1] >= MIN_DRAWS:
        ok = ~_invalid(x)
        if ok.any():
            s = _split(x[:, :, ok])
            bulk = _rhat(_rank_normalize(s))
            folded = np.abs(s - np.median(s, axis=(0, 1)))
            tail = _rhat(_rank_normalize(folded))
            out[ok] = np.fmax(bulk, tail)
    return _out(out, shape)


# ------------------------------------------------------------------------ ESS


def _autocov(x: np.ndarray) -> np.ndarray:
    """Autocovariance of each chain at every lag, 1/N normalized, by FFT along axis 1."""
    n = x.shape[1]
    xc = x - x.mean(axis=1, keepdims=True)
    nfft = _fft.next_fast_len(2 * n, real=True)
    f = _fft.rfft(xc, n=nfft, axis=1)
    acov = _fft.irfft(f.real ** 2 + f.imag ** 2, n=nfft, axis=1)[:, :n]
    return acov / n


def _ess(x: np.ndarray) -> np.ndarray:
    """Multi-chain ESS of chains x (M, N, P) as given (no split, no ranks); no validity checks.

    Parameters with zero total variance give NaN.
    """
    m, n, p = x.shape
    total = m * n
    acov = _autocov(x)
    within = acov[:, 0].mean(axis=0) * n / (n - 1)
    var_plus = within * (n - 1) / n
    if m > 1:
        var_plus = var_plus + x.mean(axis=1).var(axis=0, ddof=1)
    out = np.full(p, np.nan)
    ok = var_plus > 0
    if not ok.any():
        return out
    acov, within, var_plus = acov[:, :, ok], within[ok], var_plus[ok]

    # Combined autocorrelation rho(t) for the lags the pair sums can use.
    n_pairs = max((n - 3) // 2, 0) + 1          # pairs k = 0 .. K_lim
    lags = 2 * n_pairs
    rho = np.empty((lags, acov.shape[2]))
    rho[0] = 1.0
    if lags > 1:
        rho[1:] = 1.0 - (within - acov[:, 1:lags].mean(axis=0)) / var_plus
    pairs = rho[0::2] + rho[1::2]                # P_k, shape (n_pairs, P)

    # Truncation: the first pair with P_k <= 0, else the last pair considered.
    nonpos = ~(pairs > 0)
    stop = np.where(nonpos.any(axis=0), nonpos.argmax(axis=0), n_pairs - 1)
    cols = np.arange(pairs.shape[1])
    # Initial monotone sequence: running minimum, summed over k < stop.
    mono = np.minimum.accumulate(pairs, axis=0)
    csum = np.concatenate([np.zeros((1, mono.shape[1])), np.cumsum(mono, axis=0)])
    head = csum[stop, cols]
    even = rho[2 * stop, cols]
    last = np.where(pairs[stop, cols] >= 0, even, np.maximum(even, 0.0))
    tau = -1.0 + 2.0 * head + last
    tau = np.maximum(tau, 1.0 / np.log10(total))
    res = total / tau
    res[np.isnan(rho).any(axis=0)] = np.nan
    out[ok] = res
    return out


def ess(chains):
    """Effective sample size of the chains as given, with Geyer's initial monotone sequence.

    The chains are neither split nor rank-normalized: pass
    :func:`split_chains` output for the split-chain ESS of the mean. The
    autocorrelation combines all chains with the between-chain variance
    (Vehtari et al. 2021, section 3.2), so chains that disagree lower the ESS.

    Parameters
    ----------
    chains : array_like, shape (chains, draws) or (chains, draws, ...)
        MCMC draws, at least :data:`MIN_DRAWS` per chain.

    Returns
    -------
    float or numpy.ndarray
        ESS per parameter, at most ``S log10 S`` for S draws in total. NaN for
        a constant parameter, NaN draws or fewer than :data:`MIN_DRAWS` draws.
    """
    x, shape = _as_3d(chains)
    out = np.full(x.shape[2], np.nan)
    if x.shape[1] >= MIN_DRAWS:
        ok = ~_invalid(x) & np.isfinite(x).all(axis=(0, 1))
        if ok.any():
            out[ok] = _ess(x[:, :, ok])
    return _out(out, shape)


def ess_bulk(chains):
    """Bulk effective sample size: ESS of the rank-normalized split chains.

    Measures the sampling efficiency for the location of the distribution
    (mean, median); defined even without finite moments.

    Parameters
    ----------
    chains : array_like, shape (chains, draws) or (chains, draws, ...)
        MCMC draws.

    Returns
    -------
    float or numpy.ndarray
        Bulk ESS per parameter. NaN for a constant parameter, NaN draws or
        fewer than :data:`MIN_DRAWS` draws per chain.
    """
    x, shape = _as_3d(chains)
    out = np.full(x.shape[2], np.nan)
    if x.shape[1] >= MIN_DRAWS:
        ok = ~_invalid(x)
        if ok.any():
            out[ok] = _ess(_rank_normalize(_split(x[:, :, ok])))
    return _out(out, shape)


def ess_tail(chains):
    """Tail effective sample size: the smaller ESS of the 5 % and 95 % quantile indicators.

    For each of q_0.05 and q_0.95 (quantiles over all draws, linear
    interpolation) the indicator ``theta <= q`` is split and its ESS computed.

    Parameters
    ----------
    chains : array_like, shape (chains, draws) or (chains, draws, ...)
        MCMC draws.

    Returns
    -------
    float or numpy.ndarray
        Tail ESS per parameter. NaN for a constant parameter, NaN draws, fewer
        than :data:`MIN_DRAWS` draws per chain, or when an indicator is
        constant (a parameter with at least 95 % of its draws at its minimum).
    """
    x, shape = _as_3d(chains)
    out = np.full(x.shape[2], np.nan)
    if x.shape[1] >= MIN_DRAWS:
        ok = ~_invalid(x)
        if ok.any():
            v = x[:, :, ok]
            with np.errstate(invalid="ignore"):   # infinite draws: NaN quantile
                q = np.quantile(v.reshape(-1, v.shape[2]), _TAIL_PROBS, axis=0)
            low = _split((v <= q[0]).astype(float))
            high = _split((v <= q[1]).astype(float))
            both = np.concatenate([low, high], axis=2)
            res = np.full(both.shape[2], np.nan)
            good = ~_invalid(both)
            if good.any():
                res[good] = _ess(both[:, :, good])
            out[ok] = np.minimum(res[: v.shape[2]], res[v.shape[2]:])
    return _out(out, shape)
