"""Posterior analysis of one spectrum: every K in a range, replica exchange, free energy, P(K | data).

Each (K, run) is one task with its own random stream
``SeedSequence([campaign_seed, blake2b(scan_id, "posterior", K, run)])``, so the
result does not depend on how tasks are spread over workers. Tasks run on a Dask
client when one is given, else one after the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from xafsflow.bayes import free_energy as fe
from xafsflow.bayes.models import SpectralModel, peaks_model, preedge_model, xanes_model
from xafsflow.bayes.remc import ChainSettings, run_chain
from xafsflow.bayes.settings import BACKGROUND_PARAMS, MIN_POINTS_PER_PARAMETER
from xafsflow.errors import AnalysisInputError
from xafsflow.seeds import seed_sequence


@dataclass
class LadderTuning:
    """Pilot tuning of each K's ladder before its chains (see :mod:`xafsflow.bayes.ladder`)."""

    enabled: bool = True
    target: float = 0.3  # exchange acceptance each neighbour pair should reach
    max_replicas: int = 64
    rounds: int = 4
    sweeps: int = 1000  # per round
    warmup: int = 2000
    top_factor: float | None = 4.0  # top moves to this times the evidence peak (None: stays; fixed sigma: stays)
    merge_above: float = 0.6  # a point is dropped where its two pairs would still exchange this often merged


@dataclass
class Convergence:
    """When a K's chains have sampled enough: checked after each segment of production sweeps."""

    enabled: bool = True
    max_f_se: float = 0.2  # standard error of F at the selected b (nats)
    max_rhat: float = 1.01  # rank-normalized split R-hat, every parameter
    min_ess: float = 200.0  # bulk and tail effective sample size, every parameter (all runs together)
    max_f_spread: float = 1.0  # independent runs' F at the selected b (nats)
    max_sweeps: int = 32000  # production sweeps per chain before giving up (flag not_converged)


@dataclass
class PosteriorSpec:
    """What to run for one spectrum."""

    model: str = "xanes"  # or "peaks", "preedge"
    k_min: int = 1
    k_max: int = 4
    replicas: int = 32
    runs: int = 2
    sigma: float | None = None  # fixed noise sd; None estimates it
    ladder: list[float] | None = None  # explicit precisions b_1..b_{L-1} (b_0 = 0 is added)
    b_max_factor: float = 10.0  # noise estimation: b_max = factor / sigma_d^2
    settings: ChainSettings = field(default_factory=ChainSettings)
    priors: dict = field(default_factory=dict)
    e0: float | None = None  # xanes: edge energy for the default priors
    tuning: LadderTuning = field(default_factory=lambda: LadderTuning())
    convergence: Convergence = field(default_factory=lambda: Convergence())
    k_limit: int = 8  # K grows past k_max (up to k_limit) while the largest K tried keeps P(K | data) >= expand_p
    expand_p: float = 0.01
    mode_starts: bool = True  # K's chains start (coldest third) from the K - 1 solution + a residual peak
    resolution: float = 1.0  # preedge: energy resolution FWHM (eV), the narrowest component
    centroid_window: tuple[float, float] | None = None  # preedge: eV range of the components in the centroid
    bootstrap_errors: bool = True  # errors of F by block bootstrap (False: batch means, 20x cheaper, e.g. per grain)
    noise_grid: int = 400  # points of the b grid on which log Z(b) is maximised for sigma-hat

    def relabel(self, samples: np.ndarray) -> np.ndarray:
        """Draws (..., P) in a label-invariant order, on which R-hat and ESS are computed and which are stored.

        The identity here: the kernel keeps the components' centres ordered.
        Models whose components may switch labels override it.
        """
        return samples

    def build(self, K: int, x: np.ndarray) -> SpectralModel:
        if self.model == "peaks":
            return peaks_model(K, self.priors or None)
        e0 = self.e0
        if e0 is None:
            raise AnalysisInputError(f"the {self.model} model needs the edge energy e0 for its default priors")
        if self.model == "preedge":
            return preedge_model(K, float(x[0]), float(x[-1]), self.resolution, e0, self.priors or None)
        return xanes_model(K, float(x[0]), float(x[-1]), e0, self.priors or None)


def check_spectrum(x, y, spec: PosteriorSpec, source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Refuse data the sampler cannot use, with a message saying what is wrong."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.ndim != 1 or x.shape != y.shape:
        raise AnalysisInputError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}", source)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        bad = int(np.sum(~np.isfinite(x) | ~np.isfinite(y)))
        raise AnalysisInputError(f"spectrum has {bad} non-finite value(s) (NaN or inf)", source)
    if np.any(np.diff(x) <= 0):
        i = int(np.argmax(np.diff(x) <= 0))
        raise AnalysisInputError(f"energy axis is not strictly increasing at point {i + 1}", source)
    if not 1 <= spec.k_min <= spec.k_max:
        raise AnalysisInputError(f"K range [{spec.k_min}, {spec.k_max}] is empty or starts below 1", source)
    require_points(x.size, spec.model, spec.k_min, source)  # a k_max beyond the points is lowered by analyse
    if spec.replicas < 3:
        raise AnalysisInputError(f"need at least 3 replicas, got {spec.replicas}", source)
    return x, y


def noise_scale(y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Rough noise sd from second differences (MAD), used only to place the ladder's top.

    With ``weights``, of the weighted second differences (the scale of sigma in y_i ~ N(f_i, sigma^2 / w_i^2)).
    """
    d = np.diff(y, 2) / math.sqrt(6.0)
    if weights is not None:
        d = d * np.asarray(weights, float)[1:-1]
    return float(np.median(np.abs(d)) / 0.6745) if d.size else 1.0


def auto_ladder(x, y, model: SpectralModel, L: int, b_max: float, rng: np.random.Generator,
                weights: np.ndarray | None = None) -> np.ndarray:
    """b_0 = 0, then L-1 precisions geometric from b_1 to b_max.

    b_1 is set from the data: N b_1 times the spread of E over prior draws is
    about 1, so the first exchange (with the exact prior draws) is accepted
    often; geometric spacing then keeps neighbour exchange rates roughly
    constant at high b, where the spread of N b E is about P/2.
    """
    draws = model.sample_prior(rng, 2000)
    f = np.stack([model.evaluate(x, t) for t in draws])
    if weights is None:
        e = 0.5 * np.mean((y[None, :] - f) ** 2, axis=1)
    else:
        e = 0.5 * np.mean(np.asarray(weights, float) ** 2 * (y[None, :] - f) ** 2, axis=1)
    spread = np.subtract(*np.percentile(e, [75, 25]))
    b1 = 1.0 / (x.size * max(spread, 1e-300))
    b1 = min(b1, b_max * 1e-4)
    return np.concatenate([[0.0], np.geomspace(b1, b_max, L - 1)])


def _pilot_task(x, y, spec: PosteriorSpec, K: int, bvals, campaign_seed: int, scan_id: str,
                weights=None) -> dict:
    """Tune K's ladder on a pilot chain (its own random stream)."""
    from xafsflow.bayes.ladder import tune_ladder

    t = spec.tuning
    ss = seed_sequence(campaign_seed, scan_id, "posterior", K, "ladder")
    out = tune_ladder(x, y, spec.build(K, x), bvals, spec.settings, ss, target=t.target, rounds=t.rounds,
                      sweeps_per_round=t.sweeps, max_replicas=t.max_replicas, warmup=t.warmup, weights=weights,
                      top_factor=None if spec.sigma else t.top_factor, merge_above=t.merge_above)
    return dict(out, K=K)


def _task(x, y, spec: PosteriorSpec, K: int, run: int, bvals, campaign_seed: int, scan_id: str,
          checkpoint_dir: str | None, sweeps: int | None = None, start=None, resume=None, weights=None):
    """One chain (K, run), ``sweeps`` production sweeps long (continuing ``resume`` when given)."""
    from dataclasses import replace

    model = spec.build(K, x)
    ss = seed_sequence(campaign_seed, scan_id, "posterior", K, run)
    ckpt = None if checkpoint_dir is None else str(Path(checkpoint_dir) / f"K{K}_run{run}.npz")
    settings = spec.settings if sweeps is None else replace(spec.settings, sweeps=sweeps)
    r = run_chain(x, y, model, bvals, settings, ss, checkpoint=ckpt, start=start,
                  resume=None if resume is None else resume["chain"], weights=weights)
    return {"K": K, "run": run, "energies": r.energies, "samples": r.samples, "acceptance": r.acceptance,
            "exchange_rate": r.exchange_rate, "round_trips": r.round_trips, "step": r.step,
            "names": model.names, "seed_entropy": [int(v) for v in np.atleast_1d(ss.entropy)],
            "checkpoint": ckpt, "chain": r, "sweeps": settings.sweeps}


def rhat(chains: np.ndarray) -> np.ndarray:
    """Rank-normalized split R-hat per parameter; ``chains`` is (runs, draws, P)."""
    from xafsflow.bayes.diagnostics import rank_normalized_rhat

    return np.atleast_1d(rank_normalized_rhat(chains))


@dataclass
class PosteriorResult:
    ks: list[int]
    bvals: np.ndarray  # the starting ladder (each K's own is per_k[K]["bvals"])
    n_points: int
    per_k: dict  # K -> dict of arrays and numbers
    p_k: np.ndarray
    k_selected: int
    sigma_fixed: float | None
    noise: dict | None  # of the selected K (estimated noise)
    weights: np.ndarray | None = None  # per-point likelihood weights used (mean(w^2) = 1), None: unweighted
    log_weight_sum: float = 0.0  # sum(log w), included in every log evidence
    k_max_by_points: int | None = None  # k_max lowered to the largest K the points support (None: not lowered)


def _ladder(x, y, spec: PosteriorSpec, campaign_seed: int, scan_id: str, source: str | None,
            weights=None) -> np.ndarray:
    """The precisions b_0 = 0 < b_1 < ... of the replicas: the spec's explicit ladder or an automatic one."""
    rng = np.random.default_rng(seed_sequence(campaign_seed, scan_id, "posterior", "ladder"))
    if spec.ladder:
        bvals = np.concatenate([[0.0], np.sort(np.asarray(spec.ladder, float))])
    else:
        b_max = 1.0 / spec.sigma**2 if spec.sigma else spec.b_max_factor / noise_scale(y, weights) ** 2
        bvals = auto_ladder(x, y, spec.build(spec.k_max, x), spec.replicas, b_max, rng, weights)
    if spec.sigma and not math.isclose(bvals[-1], 1.0 / spec.sigma**2, rel_tol=1e-9):
        raise AnalysisInputError(f"with a fixed sigma the ladder must end at 1/sigma^2 = {1 / spec.sigma**2:g}", source)
    return bvals


class _Runner:
    """Runs pilot and chain tasks, on a Dask client when one is given, else in this process."""

    def __init__(self, x, y, spec, campaign_seed, scan_id, client, checkpoint_dir, log, weights=None):
        self.x, self.y, self.spec, self.seed, self.scan_id = x, y, spec, campaign_seed, scan_id
        self.weights = weights
        self.client = client
        self.ck = None if checkpoint_dir is None else str(checkpoint_dir)
        self.log = log or (lambda msg: None)

    def _map(self, fn, arg_list, keys):
        if self.client is None:
            return [fn(*a) for a in arg_list]
        futs = [self.client.submit(fn, *a, pure=False, key=k) for a, k in zip(arg_list, keys)]
        return self.client.gather(futs)

    def pilots(self, ks, bvals) -> dict:
        args = [(self.x, self.y, self.spec, K, bvals, self.seed, self.scan_id, self.weights) for K in ks]
        keys = [f"posterior-{self.scan_id}-K{K}-ladder" for K in ks]
        return {o["K"]: o for o in self._map(_pilot_task, args, keys)}

    def chains(self, K, bvals, sweeps, starts, previous=None) -> list[dict]:
        runs = range(self.spec.runs)
        if previous is not None and self.client is not None:
            # a chain's state and energy traces are megabytes: sent as data, not inside the task graph
            previous = self.client.scatter(list(previous), hash=False)
        args = [(self.x, self.y, self.spec, K, r, bvals, self.seed, self.scan_id, self.ck, sweeps, starts[r],
                 None if previous is None else previous[r], self.weights) for r in runs]
        keys = [f"posterior-{self.scan_id}-K{K}-run{r}-{sweeps}" for r in runs]
        return sorted(self._map(_task, args, keys), key=lambda o: o["run"])


def _evaluate_k(runs: list[dict], spec: PosteriorSpec, bvals, n: int, boot_rng: np.random.Generator | None,
                b_range: tuple[float, float] | None = None, log_w: float | None = None) -> dict:
    """One K's runs combined: free energies and their errors, noise or fixed-sigma evidence, samples, R-hat.

    Errors of F by a block bootstrap within each run; without ``boot_rng`` by
    batch means (cheap, for deciding whether to sample on). ``log_w`` (weighted
    likelihood): sum(log w_i), added to every log evidence so that weighted
    evidences remain densities of y (F itself is unchanged).
    """
    from xafsflow.bayes.diagnostics import ess_bulk, ess_tail

    f_runs = np.array([fe.bridge(o["energies"], bvals, n) for o in runs])  # (runs, L)
    ss_runs = np.array([fe.stepping_stone(o["energies"], bvals, n) for o in runs])
    ti_runs = np.array([fe.thermodynamic_integration(o["energies"], bvals, n) for o in runs])
    if boot_rng is None:
        boot = np.array([fe.batch_means_error(o["energies"], bvals, n, guess=f) for o, f in zip(runs, f_runs)])
    else:
        boot = np.array([fe.block_bootstrap(o["energies"], bvals, n, boot_rng, guess=f) for o, f in zip(runs, f_runs)])
    f = -fe.combine_runs(-f_runs)  # mean of the runs' Z: a run left in a poorer mode only loses evidence
    # error of the mean over runs: bootstrap within runs, and the spread between runs when there are several
    err_boot = np.sqrt((boot**2).sum(axis=0)) / len(runs)
    err_spread = f_runs.std(axis=0, ddof=1) / math.sqrt(len(runs)) if len(runs) > 1 else np.zeros_like(f)
    f_err = np.maximum(err_boot, err_spread)
    entry = {
        "runs": runs, "bvals": bvals, "F_ladder": f, "F_ladder_err": f_err, "F_runs": f_runs,
        "F_ti": ti_runs.mean(axis=0), "F_ss": ss_runs.mean(axis=0),
        "exchange_rate": np.mean([o["exchange_rate"] for o in runs], axis=0),
        "acceptance": np.mean([o["acceptance"] for o in runs], axis=0),
        "round_trips": np.sum([o["round_trips"] for o in runs], axis=0), "names": runs[0]["names"],
        "sweeps": runs[0]["sweeps"],
    }
    if spec.sigma:
        entry["target_index"] = bvals.size - 1
        entry["log_z"] = float(fe.log_evidence(f[-1], bvals[-1], n))
        entry["log_z_err"] = float(f_err[-1])
    else:
        noise = fe.estimate_noise([o["energies"] for o in runs], bvals, n, b_range=b_range, n_grid=spec.noise_grid,
                                  f_ladders=list(f_runs))
        entry["noise"] = noise
        entry["target_index"] = int(np.argmin(np.abs(np.log(bvals[1:] / noise["b_hat"])))) + 1
        entry["log_z"] = noise["log_evidence_marginal"]
        entry["log_z_err"] = float(f_err[entry["target_index"]])
    if log_w is not None:
        entry["log_z"] += log_w
        if "noise" in entry:
            nz = entry["noise"]
            nz["log_evidence"] = nz["log_evidence"] + log_w
            for key in ("log_evidence_max", "log_evidence_marginal"):
                nz[key] += log_w
    t = entry["target_index"]
    chains = spec.relabel(np.stack([o["samples"][:, t, :] for o in runs]))  # (runs, draws, P)
    entry["samples"] = chains
    entry["rhat"] = rhat(chains)
    entry["ess_bulk"] = np.atleast_1d(ess_bulk(chains))
    entry["ess_tail"] = np.atleast_1d(ess_tail(chains))
    entry["F"] = float(f[t])
    entry["F_err"] = float(f_err[t])
    entry["F_spread"] = float(np.ptp(f_runs[:, t]))  # between independent runs at the selected b
    return entry


def convergence_report(entry: dict, conv: Convergence, free: np.ndarray) -> dict:
    """Which convergence criteria one K's chains meet (``free``: mask of sampled parameters)."""

    def worst(a, fn):
        a = np.asarray(a, float)[free]
        a = a[np.isfinite(a)]
        return float(fn(a)) if a.size else float("nan")

    r = {"f_se": entry["F_err"], "f_spread": entry["F_spread"], "rhat": worst(entry["rhat"], np.max),
         "ess_bulk": worst(entry["ess_bulk"], np.min), "ess_tail": worst(entry["ess_tail"], np.min),
         "min_exchange": float(np.min(entry["exchange_rate"])), "sweeps": entry["sweeps"]}
    failing = []
    if not r["f_se"] <= conv.max_f_se:
        failing.append("f_se")
    if len(entry["runs"]) > 1 and not r["f_spread"] <= conv.max_f_spread:
        failing.append("f_spread")
    if not r["rhat"] <= conv.max_rhat:
        failing.append("rhat")
    if not (r["ess_bulk"] >= conv.min_ess and r["ess_tail"] >= conv.min_ess):
        failing.append("ess")
    r["failing"] = failing
    r["converged"] = not failing
    return r


def _format_progress(K: int, r: dict) -> str:
    return (f"K={K} sweeps={r['sweeps']} SE(F)={r['f_se']:.3f} dF(runs)={r['f_spread']:.2f} "
            f"R-hat={r['rhat']:.3f} ESS(bulk,tail)={r['ess_bulk']:.0f},{r['ess_tail']:.0f} "
            f"min exchange={r['min_exchange']:.2f}" + (" converged" if r["converged"] else
                                                       f" (not yet: {', '.join(r['failing'])})"))


def mode_start(model: SpectralModel, prev_model: SpectralModel, prev_entry: dict, x, y,
               weights=None) -> np.ndarray | None:
    """A start for K components: the best K - 1 draw plus a component at the largest residual peak.

    The K - 1 draw with the smallest squared error (among up to 400 at the
    selected b) is kept, and the new component is placed where the data exceed
    that fit most, with the residual's height and a width from the residual
    peak's half-maximum points; all clipped into the prior's support. Returns
    None when no such start lies inside the prior.
    """
    flat = prev_entry["samples"].reshape(-1, prev_model.n_params)
    pick = flat[:: max(1, flat.shape[0] // 400)]
    w2 = 1.0 if weights is None else np.asarray(weights, float) ** 2
    sse = np.array([np.sum(w2 * (y - prev_model.evaluate(x, t)) ** 2) for t in pick])
    best = pick[int(np.argmin(sse))]
    resid = y - prev_model.evaluate(x, best)
    i = int(np.argmax(resid))
    height = float(resid[i])
    if height <= 0:
        return None
    half = resid >= height / 2
    lo = i
    while lo > 0 and half[lo - 1]:
        lo -= 1
    hi = i
    while hi < x.size - 1 and half[hi + 1]:
        hi += 1
    sd = max((x[hi] - x[lo]) / 2.355, 0.5 * float(np.min(np.diff(x))))
    new = model.component_from_peak(float(x[i]), height, sd)
    theta = model.with_component(best, new)
    return theta if np.isfinite(model.log_prior(theta)) else None


def _sample_k(runner: _Runner, K: int, bvals, pilot: dict | None, start, n: int, b_range,
              log_w: float | None = None) -> dict:
    """Chains of one K, extended segment by segment until they converge or the budget is spent."""
    spec = runner.spec
    if pilot is not None:
        bvals = pilot["bvals"]
    starts = [start] * spec.runs
    sweeps = spec.settings.sweeps
    runs = runner.chains(K, bvals, sweeps, starts)
    free = spec.build(K, runner.x).kernel_arrays()[0] != 0
    while spec.convergence.enabled and sweeps < spec.convergence.max_sweeps:
        report = convergence_report(_evaluate_k(runs, spec, bvals, n, None, b_range, log_w), spec.convergence,
                                    free)
        runner.log(_format_progress(K, report))
        if report["converged"]:
            break
        sweeps = min(2 * sweeps, spec.convergence.max_sweeps)  # doubling: few evaluations, little waste
        sweeps -= sweeps % spec.settings.block
        runs = runner.chains(K, bvals, sweeps, starts, previous=runs)
    # the reported errors: a block bootstrap of the final chains (or batch means when the spec says so)
    boot_rng = (np.random.default_rng(seed_sequence(runner.seed, runner.scan_id, "posterior", "bootstrap", K))
                if spec.bootstrap_errors else None)
    entry = _evaluate_k(runs, spec, bvals, n, boot_rng, b_range, log_w)
    report = convergence_report(entry, spec.convergence, free)
    runner.log(_format_progress(K, report))
    report["enabled"] = spec.convergence.enabled
    entry["convergence"] = report
    entry["pilot"] = pilot
    entry["start"] = start
    for o in runs:  # the chain states were only needed to extend them
        o.pop("chain", None)
    return entry


def _next_k(per_k: dict, spec: PosteriorSpec, n: int) -> int | None:
    """The next K to sample: through [k_min, k_max], then past it while the largest K keeps evidence."""
    ks = sorted(per_k)
    top = ks[-1]
    if top < spec.k_max:
        return top + 1
    p = fe.model_probabilities(np.array([per_k[K]["log_z"] for K in ks]))
    if p[-1] >= spec.expand_p and top < max(spec.k_limit, spec.k_max) and MIN_POINTS_PER_PARAMETER * n_parameters(spec.model, top + 1) <= n:
        return top + 1
    return None


def n_parameters(model: str, K: int) -> int:
    """Free parameters of ``model`` with K components (background + 3 per component)."""
    return BACKGROUND_PARAMS[model] + 3 * K


def points_problem(n: int, model: str, K: int) -> str | None:
    """Why ``n`` points cannot support ``model`` with K components (MIN_POINTS_PER_PARAMETER each), or None."""
    p = n_parameters(model, K)
    if n >= MIN_POINTS_PER_PARAMETER * p:
        return None
    return (f"{n} points cannot support K = {K} ({p} parameters; need at least {MIN_POINTS_PER_PARAMETER * p} "
            "points): lower the K range or widen the fitted range")


def require_points(n: int, model: str, K: int, source: str | None = None) -> None:
    """Refuse ``n`` points for a model with K components (:func:`points_problem`)."""
    problem = points_problem(n, model, K)
    if problem:
        raise AnalysisInputError(problem, source)


def largest_supported_k(model: str, n: int) -> int:
    """The largest K whose parameters ``n`` points support (MIN_POINTS_PER_PARAMETER each); 0 if none."""
    return max(0, (n // MIN_POINTS_PER_PARAMETER - BACKGROUND_PARAMS[model]) // 3)



def analyse(x, y, spec: PosteriorSpec, campaign_seed: int, scan_id: str, client=None,
            checkpoint_dir: str | Path | None = None, source: str | None = None, progress=None,
            weights=None) -> PosteriorResult:
    """Sample K = k_min, k_min + 1, ... (``runs`` independent chains each) and compare them by evidence.

    For each K: a pilot tunes its ladder (unless an explicit ladder is given or
    tuning is off); its chains start, in their coldest third, from the K - 1
    solution with a component added at the largest residual peak; they are
    extended (doubling) until :class:`Convergence` holds or its sweep budget is
    spent. K goes past ``k_max`` (up to ``k_limit``) while the largest K tried
    keeps P(K | data) >= ``expand_p``. A ``k_max`` beyond what the points support
    (``MIN_POINTS_PER_PARAMETER`` per parameter) is lowered to the largest K they
    do (``PosteriorResult.k_max_by_points``); a ``k_min`` beyond it is an error.
    ``progress(message)`` gets one line per K and segment.

    ``weights`` (one positive number per point, e.g. 1 / the per-point
    uncertainty): relative weights of a heteroscedastic likelihood
    y_i ~ N(f_i, sigma^2 / w_i^2). They are rescaled to mean(w^2) = 1, so sigma
    (sampled / estimated as without weights, or ``spec.sigma``) is the rms noise
    level; every log evidence includes sum(log w_i), so evidences of weighted
    fits are densities of y and compare with each other and with unweighted
    ones. None: the unweighted likelihood (bit-identical to before weights).
    """
    x, y = check_spectrum(x, y, spec, source)
    n = x.size
    k_top = largest_supported_k(spec.model, n)
    capped = None
    if k_top < spec.k_max:  # a coarse grid or a short range: compare the K the data can support
        capped = k_top
        spec = replace(spec, k_max=k_top)
        if progress is not None:
            progress(f"k_max lowered to {k_top}: {n} points support at most {n_parameters(spec.model, k_top)} "
                     f"parameters")
    if weights is not None:
        from xafsflow.bayes.remc import normalize_weights

        weights = normalize_weights(weights, n, source)
    log_w = None if weights is None else float(np.sum(np.log(weights)))
    base = _ladder(x, y, spec, campaign_seed, scan_id, source, weights)
    b_range = (float(base[1]), float(base[-1]))  # one prior on b for every K's marginal evidence
    runner = _Runner(x, y, spec, campaign_seed, scan_id, client, checkpoint_dir, progress, weights)
    tune = spec.tuning.enabled and not spec.ladder
    pilots = runner.pilots(list(range(spec.k_min, spec.k_max + 1)), base) if tune else {}
    per_k: dict = {}
    K = spec.k_min
    while K is not None:
        if tune and K not in pilots:
            pilots.update(runner.pilots([K], base))
        start = None
        if spec.mode_starts and K - 1 in per_k:
            start = mode_start(spec.build(K, x), spec.build(K - 1, x), per_k[K - 1], x, y, weights)
        per_k[K] = _sample_k(runner, K, base, pilots.get(K), start, n, b_range, log_w)
        K = _next_k(per_k, spec, n)
    ks = sorted(per_k)
    log_z = np.array([per_k[K]["log_z"] for K in ks])
    p_k = fe.model_probabilities(log_z)
    k_sel = ks[int(np.argmax(p_k))]
    return PosteriorResult(ks, base, n, per_k, p_k, k_sel, spec.sigma, per_k[k_sel].get("noise"), weights,
                           0.0 if log_w is None else log_w, capped)


def summarize(samples: np.ndarray, names: list[str]) -> list[dict]:
    """Median, mean, sd and the 2.5 / 97.5 % quantiles of each parameter (samples pooled over runs)."""
    flat = samples.reshape(-1, samples.shape[-1])
    q = np.percentile(flat, [2.5, 50, 97.5], axis=0)
    return [{"parameter": nm, "median": q[1, j], "mean": flat[:, j].mean(), "sd": flat[:, j].std(ddof=1),
             "q2.5": q[0, j], "q97.5": q[2, j]} for j, nm in enumerate(names)]
