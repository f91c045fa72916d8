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
would still exchange often once merged. Refinement never moves b_0 = 0 or the
top; only :func:`move_top` moves the top (below).

The top of the ladder follows the data (``top_factor``): log Z(b) = (N/2)
log(b / 2 pi) - F(b) with dF/db = N <E>_b, so the evidence over the noise
precision peaks where 2 b <E>_b = 1 (:func:`evidence_peak`, from the pilot's
mean energies). On measured spectra the model misfit puts that peak orders of
magnitude below the starting top 10 / (rough noise sd)^2, and replicas above
it only sample a glassy, nearly frozen landscape nobody uses; the pilot moves
the top to ``top_factor`` times the peak (never above the starting top), which
frees those replicas for the pairs below the peak that exchange too rarely.
With Gaussian residuals (<E>_b = sigma^2/2 + P/(2 N b)) log Z at 4 b_hat lies
about 0.8 (N - P) nats below its peak: no posterior weight of b is lost.

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


def evidence_peak(bvals: np.ndarray, mean_energy: np.ndarray) -> float | None:
    """Precision b-hat at which log Z(b) peaks, from the replicas' mean energies <E>_b.

    d log Z / db = N (1 / (2 b) - <E>_b), so the peak is where 2 b <E>_b
    crosses 1 (interpolated linearly in b, in which 2 b <E>_b is nearly
    linear once <E>_b approaches its floor, after the last replica still below 1).
    None when every replica is below 1 (the peak lies above the ladder).
    """
    b = np.asarray(bvals, float)[1:]
    g = 2.0 * b * np.asarray(mean_energy, float)[1:] - 1.0
    below = np.nonzero(g < 0)[0]
    if below.size == 0:
        return float(b[0])
    i = int(below[-1])
    if i == b.size - 1:
        return None
    t = -g[i] / (g[i + 1] - g[i])
    return float(b[i] + t * (b[i + 1] - b[i]))


def move_top(bvals: np.ndarray, exchange_rate: np.ndarray, top: float,
             unmeasured: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """The ladder with its top at ``top``, and the exchange rates of its pairs as far as they were measured.

    Points at or above ``top`` are dropped (the pair ending at the new top takes the measured rate of the
    pair that contained it); when ``top`` lies above the ladder, points are added geometrically at the
    last pair's ratio (at least 1.5), their pairs given the rate ``unmeasured`` (pass the tuning target: such a pair is
    neither split nor merged away by :func:`refine_ladder` before it has been measured).
    """
    b = np.asarray(bvals, float)
    rates = np.asarray(exchange_rate, float)
    if top <= b[-1]:
        n_keep = max(int(np.searchsorted(b, top * (1 - 1e-9))), 2)  # b_0 and at least one point below
        kept = b[:n_keep]
        if top <= kept[-1]:
            return b, rates
        return np.append(kept, top), rates[: n_keep].copy()
    # the last pair's ratio, but not finer than 1.5: above the peak the energy's spread is about sqrt(P/2) / b,
    # so a pair a factor 1.5 apart has distance ~0.4 sqrt(P/2) (on target for P near 20); refinement splits it
    # later where needed
    ratio = max(b[-1] / b[-2] if b[-2] > 0 else 2.0, 1.5)
    n = max(int(math.ceil(math.log(top / b[-1]) / math.log(ratio))), 1)
    extra = b[-1] * (top / b[-1]) ** (np.arange(1, n + 1) / n)
    return np.concatenate([b, extra]), np.concatenate([rates, np.full(n, float(unmeasured))])


def remap_state(state, old_b: np.ndarray, new_b: np.ndarray):
    """A chain state for a new ladder: each new temperature takes the state at the nearest old one.

    Nearness is in log b (b_0 = 0 maps to b_0). Configurations, step sizes and
    joint- and collapsed-move factors are copied; counters start from zero.
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
        burn=state.burn[:, src].copy(), cchol=state.cchol[src].copy(), cscale=state.cscale[src].copy(),
        lacc=np.zeros(L, np.int64), ltried=np.zeros(L, np.int64), cacc=np.zeros(L, np.int64),
        ctried=np.zeros(L, np.int64), lon=state.lon[src].copy(),
    )


def tune_ladder(x, y, model, bvals, settings, seed: np.random.SeedSequence, target: float = 0.3,
                rounds: int = 4, sweeps_per_round: int = 1000, max_replicas: int = 64,
                warmup: int = 2000, weights=None, top_factor: float | None = None,
                merge_above: float = 0.6) -> dict:
    """Tune a ladder on a pilot chain: warm-up, then rounds each ending with :func:`refine_ladder`.

    The pilot first runs ``warmup`` sweeps on the starting ladder (step-size and
    joint-move adaptation as in burn-in), so that the exchange rates it then
    measures are those of an equilibrated chain, not of replicas still sinking
    from prior draws. Each round runs ``sweeps_per_round`` sweeps, measures
    every pair's exchange acceptance over its second half, and refines the
    ladder: replicas are added in pairs below ``target`` (up to
    ``max_replicas``) and dropped where neighbours exchange so often that one
    of them is redundant. It stops once every pair reaches ``target``. The
    pilot's draws are discarded. With ``top_factor``, after the warm-up and
    in every round the top moves to ``top_factor`` times the evidence peak
    b-hat measured there (:func:`evidence_peak`, :func:`move_top`; never above
    the starting top, and only when it moves by more than a factor 1.5).

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
    merge_above : float
        :func:`refine_ladder`'s threshold for dropping a point.
    top_factor : float, optional
        Top of the ladder relative to the measured evidence peak (None: the
        top stays where it is, e.g. at 1/sigma^2 for a fixed noise level).

    Returns
    -------
    dict
        ``bvals`` (the tuned ladder), ``exchange_rate`` (per pair, measured in
        the last round, on the ladder returned when the pilot stopped on
        target, else on the ladder it replaced), ``rounds`` (list of
        ``(n_replicas, min rate)``), ``sweeps`` (pilot sweeps run) and
        ``b_hat`` (the last evidence peak measured, None without
        ``top_factor`` or when it lay above the ladder). With ``top_factor``
        the returned ladder also has a replica at ``b_hat``
        (:func:`with_point`), where the posterior will be read.
    """
    from xafsflow.bayes import remc

    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    bvals = np.ascontiguousarray(bvals, dtype=np.float64)
    rng = np.random.default_rng(seed)
    st = remc.initial_state(x, y, model, bvals, rng, weights=weights)
    P = model.n_params
    work = remc.make_workspace(x, model, weights, settings.linear_moves)
    sweep = 0

    def advance(n_sweeps, energies=None):
        nonlocal sweep
        for _ in range(max(1, n_sweeps // settings.block)):
            draws = remc._draw_block(rng, model, bvals.size, P, settings.block, work.lin.size > 0)
            e_out, s_out = remc._run_one_block(x, y, bvals, model, settings, st, draws, sweep, 1, work, True)
            sweep += settings.block
            st.burn = np.concatenate([st.burn, s_out])[-settings.joint_window:]
            remc._adapt(st, settings.target_acceptance)
            remc._adapt_joint(st, model, settings)
            if energies is not None:
                energies.append(e_out)

    b_start_top = float(bvals[-1])
    b_hat = None

    def new_top(energies) -> float | None:
        """Where the top should be after these energies, or None to leave it."""
        nonlocal b_hat
        if not top_factor or not energies:
            return None
        b_hat = evidence_peak(bvals, np.concatenate(energies).mean(axis=0))
        # a peak above the ladder (the chain found better fits since the top moved): raise the top a step
        top = min(top_factor * (bvals[-1] if b_hat is None else b_hat), b_start_top)
        return top if not bvals[-1] / 1.5 <= top <= 1.5 * bvals[-1] else None

    late: list = []
    if top_factor:
        advance(warmup // 2)
        advance(warmup - warmup // 2, late)
    else:
        advance(warmup)
    top = new_top(late)
    if top is not None:
        new_b, _ = move_top(bvals, np.ones(bvals.size - 1), top)
        st = remap_state(st, bvals, new_b)
        bvals = new_b
    history, rates = [], np.zeros(max(bvals.size - 1, 1))
    for r in range(rounds):
        advance(sweeps_per_round // 2)
        st.ex_acc[...] = 0
        st.ex_tried[...] = 0
        late = []
        advance(sweeps_per_round - sweeps_per_round // 2, late)
        rates = st.ex_acc[: bvals.size - 1] / np.maximum(st.ex_tried[: bvals.size - 1], 1)
        history.append((int(bvals.size), float(rates.min())))
        top = new_top(late)
        if (rates.min() >= target and top is None) or r == rounds - 1:
            break
        cut_b, cut_rates = (bvals, rates) if top is None else move_top(bvals, rates, top, unmeasured=target)
        new_b = refine_ladder(cut_b, cut_rates, target, max_replicas, merge_above)
        st = remap_state(st, bvals, new_b)
        bvals = new_b
    if top_factor and b_hat is not None:
        bvals = with_point(bvals, b_hat)
    return {"bvals": bvals, "exchange_rate": rates, "rounds": history, "sweeps": sweep, "b_hat": b_hat}


def with_point(bvals: np.ndarray, b: float, tolerance: float = 0.05) -> np.ndarray:
    """The ladder with a replica at ``b`` unless one lies within ``tolerance`` (relative) of it.

    The posterior is read at the replica nearest the evidence peak b-hat; on a
    ladder spaced for exchange (neighbours a factor 2-3 apart near the top)
    that replica can sit far enough from b-hat to widen or narrow every
    interval by 20-40 %, so the pilot puts one at its b-hat.
    """
    b_arr = np.asarray(bvals, float)
    if not 0 < b < b_arr[-1] or np.min(np.abs(np.log(b_arr[1:] / b))) <= math.log1p(tolerance):
        return b_arr
    return np.sort(np.append(b_arr, b))


