"""Adapting the precision ladder of a replica-exchange chain to the data.

Scheme (feedback from measured exchange acceptance, in the spirit of
Katzgraber et al. 2006 and Vousden, Farr & Mandel 2016): when the energy
distributions of neighbours are roughly Gaussian with equal spread, the
exchange acceptance of a pair is a = erfc(d / 2), where d is the pair's
distance in units of the energy spread. Distances add along the ladder, so the
measured acceptances give each pair's distance d_i = 2 erfcinv(a_i).
:func:`refine_ladder` splits every pair below the target acceptance into
ceil(d_i / d*) pairs (d* = 2 erfcinv(target)), geometrically in b (linearly on
the first segment, which starts at b_0 = 0), and drops a point whose two pairs
would still exchange often once merged. b_0 = 0 and the top b_max never move.

The ladder is tuned on short pilot chains before sampling and then frozen, so
every production chain samples a fixed-ladder target.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc, erfcinv

# acceptances are clipped to this range before inversion: a pair that never (or
# always) exchanged in a short pilot still has a finite distance
_A_MIN, _A_MAX = 0.005, 0.995


def pair_distances(exchange_rate: np.ndarray) -> np.ndarray:
    """Distances d_i = 2 erfcinv(a_i) of neighbour pairs from their exchange acceptance a_i."""
    a = np.clip(np.asarray(exchange_rate, float), _A_MIN, _A_MAX)
    return 2.0 * erfcinv(a)


def expected_acceptance(distance: float) -> float:
    """Exchange acceptance of a pair at ``distance`` (the inverse of :func:`pair_distances`)."""
    return float(erfc(distance / 2.0))


def _between(lo: float, hi: float, m: int) -> list[float]:
    """m - 1 points splitting (lo, hi) evenly: geometric, or linear when lo is b_0 = 0."""
    f = np.arange(1, m) / m
    return list(lo + f * (hi - lo)) if lo <= 0 else list(lo * (hi / lo) ** f)


def refine_ladder(bvals: np.ndarray, exchange_rate: np.ndarray, target: float = 0.3,
                  max_replicas: int = 64, merge_above: float = 0.6) -> np.ndarray:
    """A ladder with replicas added where neighbours exchange too rarely and removed where too often.

    Every pair below ``target`` is split into ceil(d_i / d*) pairs (d from
    :func:`pair_distances`, d* the distance of ``target``), worst pairs first
    while the count stays within ``max_replicas``; then, where two adjacent
    pairs would still exchange with acceptance >= ``merge_above`` once merged,
    the point between them is dropped (b_0 = 0 and the top are never moved).
    Unlike a full re-placement this never takes points away from a bottleneck,
    which matters on measured spectra, where the posterior can change mode
    abruptly at some b and acceptance there is not the smooth function of the
    spacing the equalizing formula assumes.
    """
    bvals = np.asarray(bvals, float)
    d = pair_distances(exchange_rate)
    d_star = 2.0 * float(erfcinv(target))
    splits = np.where(np.asarray(exchange_rate) < target, np.ceil(d / d_star).astype(int), 1)
    budget = max_replicas - bvals.size
    for i in np.argsort(d)[::-1]:  # worst pairs first
        extra = splits[i] - 1
        if extra > budget:
            splits[i] = 1 + max(budget, 0)
        budget -= splits[i] - 1
    points, new_d, kept = [bvals[0]], [], []
    for i in range(bvals.size - 1):
        inner = _between(bvals[i], bvals[i + 1], splits[i])
        points += inner + [bvals[i + 1]]
        new_d += [d[i] / splits[i]] * splits[i]
        kept += [False] * len(inner) + [True]  # inserted points are new; they are not merged away
    out, dist = [points[0]], [0.0]
    for k in range(1, len(points)):
        dist[-1] += new_d[k - 1]
        last = k == len(points) - 1
        if not last and kept[k - 1] and expected_acceptance(dist[-1] + new_d[k]) >= merge_above:
            continue  # merge: drop this point
        out.append(points[k])
        dist.append(0.0)
    return np.array(out)


def remap_state(state, old_b: np.ndarray, new_b: np.ndarray):
    """A chain state for a new ladder: each new temperature takes the state at the nearest old one.

    Nearness is in log b (b_0 = 0 maps to b_0). Configurations, step sizes and
    joint-move factors are copied; counters start from zero.
    """
    from xafsflow.bayes.remc import ChainState

    old_b, new_b = np.asarray(old_b, float), np.asarray(new_b, float)
    src = np.zeros(new_b.size, dtype=np.int64)
    lo = np.log(old_b[1:])
    for k in range(1, new_b.size):
        src[k] = 1 + int(np.argmin(np.abs(lo - math.log(new_b[k]))))
    slots = state.slot_of[src]  # the configuration now at each source temperature
    L, P = new_b.size, state.theta.shape[1]
    return ChainState(
        theta=state.theta[slots].copy(), resid=state.resid[slots].copy(), comp=state.comp[slots].copy(),
        bgv=state.bgv[slots].copy(), bgp=state.bgp[slots].copy(), win=state.win[slots].copy(),
        sse=state.sse[slots].copy(), slot_of=np.arange(L, dtype=np.int64), step=state.step[src].copy(),
        acc=np.zeros((L, P), np.int64), tried=np.zeros((L, P), np.int64),
        ex_acc=np.zeros(max(L - 1, 1), np.int64), ex_tried=np.zeros(max(L - 1, 1), np.int64),
        slot_dir=np.zeros(L, np.int64), round_trips=np.zeros(L, np.int64), chol=state.chol[src].copy(),
        jscale=state.jscale[src].copy(), jacc=np.zeros(L, np.int64), jtried=np.zeros(L, np.int64),
        burn=state.burn[:, src].copy(),
    )


def tune_ladder(x, y, model, bvals, settings, seed: np.random.SeedSequence, target: float = 0.3,
                rounds: int = 4, sweeps_per_round: int = 1000, max_replicas: int = 64,
                warmup: int = 2000, weights=None) -> dict:
    """Tune a ladder on a pilot chain: warm-up, then rounds each ending with :func:`refine_ladder`.

    The pilot first runs ``warmup`` sweeps on the starting ladder (step-size and
    joint-move adaptation as in burn-in), so that the exchange rates it then
    measures are those of an equilibrated chain, not of replicas still sinking
    from prior draws. Each round runs ``sweeps_per_round`` sweeps, measures
    every pair's exchange acceptance over its second half, and refines the
    ladder: replicas are added in pairs below ``target`` (up to
    ``max_replicas``) and dropped where neighbours exchange so often that one
    of them is redundant. It stops once every pair reaches ``target``. The
    pilot's draws are discarded.

    Parameters
    ----------
    x, y : ndarray
        The spectrum (eV and normalized absorption).
    model : SpectralModel
        The model at this K.
    bvals : ndarray
        Starting ladder (b_0 = 0, top b_max; both kept).
    settings : ChainSettings
        Block length and adaptation settings of the chain.
    seed : SeedSequence
        The pilot's own random stream.
    weights : ndarray, optional
        Per-point likelihood weights (:func:`xafsflow.bayes.remc.run_chain`).

    Returns
    -------
    dict
        ``bvals`` (the tuned ladder), ``exchange_rate`` (per pair, measured in
        the last round, on the ladder returned when the pilot stopped on
        target, else on the ladder it replaced), ``rounds`` (list of
        ``(n_replicas, min rate)``) and ``sweeps`` (pilot sweeps run).
    """
    from xafsflow.bayes import remc

    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    bvals = np.ascontiguousarray(bvals, dtype=np.float64)
    rng = np.random.default_rng(seed)
    st = remc.initial_state(x, y, model, bvals, rng, weights=weights)
    P = model.n_params
    work = remc.make_workspace(x, model, weights)
    sweep = 0

    def advance(n_sweeps):
        nonlocal sweep
        for _ in range(max(1, n_sweeps // settings.block)):
            draws = remc._draw_block(rng, model, bvals.size, P, settings.block)
            _, s_out = remc._run_one_block(x, y, bvals, model, settings, st, draws, sweep, 1, work, True)
            sweep += settings.block
            st.burn = np.concatenate([st.burn, s_out])[-settings.joint_window:]
            remc._adapt(st, settings.target_acceptance)
            remc._adapt_joint(st, model, settings)

    advance(warmup)
    history, rates = [], np.zeros(max(bvals.size - 1, 1))
    for r in range(rounds):
        advance(sweeps_per_round // 2)
        st.ex_acc[...] = 0
        st.ex_tried[...] = 0
        advance(sweeps_per_round - sweeps_per_round // 2)
        rates = st.ex_acc[: bvals.size - 1] / np.maximum(st.ex_tried[: bvals.size - 1], 1)
        history.append((int(bvals.size), float(rates.min())))
        if rates.min() >= target or r == rounds - 1:
            break
        new_b = refine_ladder(bvals, rates, target, max_replicas)
        st = remap_state(st, bvals, new_b)
        bvals = new_b
    return {"bvals": bvals, "exchange_rate": rates, "rounds": history, "sweeps": sweep}


