"""Posterior analysis of one spectrum: every K in a range, replica exchange, free energy, P(K | data).

Each (K, run) is one task with its own random stream
``SeedSequence([campaign_seed, blake2b(scan_id, "posterior", K, run)])``, so the
result does not depend on how tasks are spread over workers. Tasks run on a Dask
client when one is given, else one after the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xafsflow.bayes import free_energy as fe
from xafsflow.bayes.models import SpectralModel, peaks_model, xanes_model
from xafsflow.bayes.remc import ChainSettings, run_chain
from xafsflow.errors import AnalysisInputError
from xafsflow.seeds import seed_sequence


@dataclass
class PosteriorSpec:
    """What to run for one spectrum."""

    model: str = "xanes"  # or "peaks"
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

    def build(self, K: int, x: np.ndarray) -> SpectralModel:
        if self.model == "peaks":
            return peaks_model(K, self.priors or None)
        e0 = self.e0
        if e0 is None:
            raise AnalysisInputError("the xanes model needs the edge energy e0 for its default priors")
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
    p_max = (0 if spec.model == "peaks" else 7) + 3 * spec.k_max  # background + 3 per component
    if x.size < 3 * p_max:
        raise AnalysisInputError(
            f"{x.size} points cannot support K up to {spec.k_max} ({p_max} parameters; need at least "
            f"{3 * p_max} points): lower k_max or widen the fitted range", source)
    if spec.replicas < 3:
        raise AnalysisInputError(f"need at least 3 replicas, got {spec.replicas}", source)
    return x, y


def noise_scale(y: np.ndarray) -> float:
    """Rough noise sd from second differences (MAD), used only to place the ladder's top."""
    d = np.diff(y, 2) / math.sqrt(6.0)
    return float(np.median(np.abs(d)) / 0.6745) if d.size else 1.0


def auto_ladder(x, y, model: SpectralModel, L: int, b_max: float, rng: np.random.Generator) -> np.ndarray:
    """b_0 = 0, then L-1 precisions geometric from b_1 to b_max.

    b_1 is set from the data: N b_1 times the spread of E over prior draws is
    about 1, so the first exchange (with the exact prior draws) is accepted
    often; geometric spacing then keeps neighbour exchange rates roughly
    constant at high b, where the spread of N b E is about P/2.
    """
    draws = model.sample_prior(rng, 2000)
    f = np.stack([model.evaluate(x, t) for t in draws])
    e = 0.5 * np.mean((y[None, :] - f) ** 2, axis=1)
    spread = np.subtract(*np.percentile(e, [75, 25]))
    b1 = 1.0 / (x.size * max(spread, 1e-300))
    b1 = min(b1, b_max * 1e-4)
    return np.concatenate([[0.0], np.geomspace(b1, b_max, L - 1)])


def _task(x, y, spec: PosteriorSpec, K: int, run: int, bvals, campaign_seed: int, scan_id: str,
          checkpoint_dir: str | None):
    model = spec.build(K, x)
    ss = seed_sequence(campaign_seed, scan_id, "posterior", K, run)
    ckpt = None if checkpoint_dir is None else str(Path(checkpoint_dir) / f"K{K}_run{run}.npz")
    r = run_chain(x, y, model, bvals, spec.settings, ss, checkpoint=ckpt)
    return {"K": K, "run": run, "energies": r.energies, "samples": r.samples, "acceptance": r.acceptance,
            "exchange_rate": r.exchange_rate, "round_trips": r.round_trips, "step": r.step,
            "names": model.names, "seed_entropy": [int(v) for v in np.atleast_1d(ss.entropy)],
            "checkpoint": ckpt}


def rhat(chains: np.ndarray) -> np.ndarray:
    """Split R-hat (Gelman-Rubin on half-chains) per parameter; ``chains`` is (runs, draws, P)."""
    m, n, p = chains.shape
    half = n // 2
    if half < 2:
        return np.full(p, np.nan)
    c = np.concatenate([chains[:, :half], chains[:, half: 2 * half]], axis=0)
    w = c.var(axis=1, ddof=1).mean(axis=0)
    b = half * c.mean(axis=1).var(axis=0, ddof=1)
    var = (half - 1) / half * w + b / half
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(var / w)


@dataclass
class PosteriorResult:
    ks: list[int]
    bvals: np.ndarray
    n_points: int
    per_k: dict  # K -> dict of arrays and numbers
    p_k: np.ndarray
    k_selected: int
    sigma_fixed: float | None
    noise: dict | None  # of the selected K (estimated noise)


def _ladder(x, y, spec: PosteriorSpec, campaign_seed: int, scan_id: str, source: str | None) -> np.ndarray:
    """The precisions b_0 = 0 < b_1 < ... of the replicas: the spec's explicit ladder or an automatic one."""
    rng = np.random.default_rng(seed_sequence(campaign_seed, scan_id, "posterior", "ladder"))
    if spec.ladder:
        bvals = np.concatenate([[0.0], np.sort(np.asarray(spec.ladder, float))])
    else:
        b_max = 1.0 / spec.sigma**2 if spec.sigma else spec.b_max_factor / noise_scale(y) ** 2
        bvals = auto_ladder(x, y, spec.build(spec.k_max, x), spec.replicas, b_max, rng)
    if spec.sigma and not math.isclose(bvals[-1], 1.0 / spec.sigma**2, rel_tol=1e-9):
        raise AnalysisInputError(f"with a fixed sigma the ladder must end at 1/sigma^2 = {1 / spec.sigma**2:g}", source)
    return bvals


def _run_tasks(x, y, spec: PosteriorSpec, ks: list[int], bvals, campaign_seed: int, scan_id: str, client,
               checkpoint_dir, progress) -> list[dict]:
    """Run every (K, run) task, on the Dask client when one is given, else one after the other."""
    jobs = [(K, r) for K in ks for r in range(spec.runs)]
    ck = None if checkpoint_dir is None else str(checkpoint_dir)
    if client is not None:
        futs = [client.submit(_task, x, y, spec, K, r, bvals, campaign_seed, scan_id, ck, pure=False,
                              key=f"posterior-{scan_id}-K{K}-run{r}") for K, r in jobs]
        return client.gather(futs)
    outs = []
    for i, (K, r) in enumerate(jobs):
        outs.append(_task(x, y, spec, K, r, bvals, campaign_seed, scan_id, ck))
        if progress:
            progress(i + 1, len(jobs))
    return outs


def _evaluate_k(runs: list[dict], spec: PosteriorSpec, bvals, n: int, boot_rng: np.random.Generator) -> dict:
    """One K's runs combined: free energies and their errors, noise or fixed-sigma evidence, samples, R-hat."""
    f_runs = np.array([fe.bridge(o["energies"], bvals, n) for o in runs])  # (runs, L)
    ss_runs = np.array([fe.stepping_stone(o["energies"], bvals, n) for o in runs])
    ti_runs = np.array([fe.thermodynamic_integration(o["energies"], bvals, n) for o in runs])
    boot = np.array([fe.block_bootstrap(o["energies"], bvals, n, boot_rng) for o in runs])
    f = -fe.combine_runs(-f_runs)  # mean of the runs' Z: a run left in a poorer mode only loses evidence
    # error of the mean over runs: bootstrap within runs, and the spread between runs when there are several
    err_boot = np.sqrt((boot**2).sum(axis=0)) / len(runs)
    err_spread = f_runs.std(axis=0, ddof=1) / math.sqrt(len(runs)) if len(runs) > 1 else np.zeros_like(f)
    f_err = np.maximum(err_boot, err_spread)
    entry = {
        "runs": runs, "F_ladder": f, "F_ladder_err": f_err, "F_runs": f_runs, "F_ti": ti_runs.mean(axis=0), "F_ss": ss_runs.mean(axis=0),
        "exchange_rate": np.mean([o["exchange_rate"] for o in runs], axis=0),
        "acceptance": np.mean([o["acceptance"] for o in runs], axis=0),
        "round_trips": np.sum([o["round_trips"] for o in runs], axis=0), "names": runs[0]["names"],
    }
    if spec.sigma:
        entry["target_index"] = bvals.size - 1
        entry["log_z"] = float(fe.log_evidence(f[-1], bvals[-1], n))
        entry["log_z_err"] = float(f_err[-1])
    else:
        noise = fe.estimate_noise([o["energies"] for o in runs], bvals, n)
        entry["noise"] = noise
        entry["target_index"] = int(np.argmin(np.abs(np.log(bvals[1:] / noise["b_hat"])))) + 1
        entry["log_z"] = noise["log_evidence_marginal"]
        entry["log_z_err"] = float(f_err[entry["target_index"]])
    t = entry["target_index"]
    chains = np.stack([o["samples"][:, t, :] for o in runs])  # (runs, draws, P)
    entry["samples"] = chains
    entry["rhat"] = rhat(chains) if len(runs) > 1 else np.full(chains.shape[-1], np.nan)
    entry["F"] = float(f[t])
    entry["F_err"] = float(f_err[t])
    entry["F_spread"] = float(np.ptp(f_runs[:, t]))  # between independent runs at the selected b
    return entry


def analyse(x, y, spec: PosteriorSpec, campaign_seed: int, scan_id: str, client=None,
            checkpoint_dir: str | Path | None = None, source: str | None = None, progress=None) -> PosteriorResult:
    """Sample every K in [k_min, k_max] (``runs`` independent chains each) and compare them."""
    x, y = check_spectrum(x, y, spec, source)
    n = x.size
    bvals = _ladder(x, y, spec, campaign_seed, scan_id, source)
    ks = list(range(spec.k_min, spec.k_max + 1))
    outs = _run_tasks(x, y, spec, ks, bvals, campaign_seed, scan_id, client, checkpoint_dir, progress)
    per_k = {}
    boot_rng = np.random.default_rng(seed_sequence(campaign_seed, scan_id, "posterior", "bootstrap"))
    for K in ks:
        runs = sorted((o for o in outs if o["K"] == K), key=lambda o: o["run"])
        per_k[K] = _evaluate_k(runs, spec, bvals, n, boot_rng)
    log_z = np.array([per_k[K]["log_z"] for K in ks])
    p_k = fe.model_probabilities(log_z)
    k_sel = ks[int(np.argmax(p_k))]
    return PosteriorResult(ks, bvals, n, per_k, p_k, k_sel, spec.sigma, per_k[k_sel].get("noise"))


def summarize(samples: np.ndarray, names: list[str]) -> list[dict]:
    """Median, mean, sd and the 2.5 / 97.5 % quantiles of each parameter (samples pooled over runs)."""
    flat = samples.reshape(-1, samples.shape[-1])
    q = np.percentile(flat, [2.5, 50, 97.5], axis=0)
    return [{"parameter": nm, "median": q[1, j], "mean": flat[:, j].mean(), "sd": flat[:, j].std(ddof=1),
             "q2.5": q[0, j], "q97.5": q[2, j]} for j, nm in enumerate(names)]
