"""Mixing per second with and without the conditional-linear moves, on measured Fe K-edge spectra.

    PYTHONPATH=src python benchmarks/bench_linear_moves.py [--seeds 4] [--sweeps 4000] [--cases ...]

Peer: the same sampler with ``linear_moves=False`` (single-parameter Metropolis
updates, one joint move per sweep, replica exchange), on the same data, ladder,
sweeps and seeds, in the same run. Each case is one measured spectrum
(``../shared/data/xdi/``, ingested and normalized as the workflow does) and one
K of one model, on the geometric starting ladder of the posterior product (32
replicas, top 10 / sigma_d^2). For every seed, two independent chains of
``sweeps`` burn-in + ``sweeps`` production; reported per variant, as median and
range over the seeds: wall time of the pair, the worst rank-normalized split
R-hat over the parameters at the top replica between the two chains, and the
smallest bulk ESS per second. The ratio is ESS/s with over without.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "xdi"
CASES = {"feo_preedge_K3": ("feo_rt1", "preedge", 3), "fe2o3_preedge_K3": ("fe2o3_rt", "preedge", 3),
         "fe2o3_xanes_K3": ("fe2o3_rt", "xanes", 3)}


def spectrum(name: str, model: str, tmp: Path):
    from xafsflow.campaign import kind_params
    from xafsflow.products.posterior import fitted_window, model_priors, spec_from_params
    from xafsflow.steps import ingest, normalize

    params = kind_params("xanes", {"posterior": {"model": model}})
    raw = ingest(name, "xanes", "xdi", [str(SHARED / f"{name}.xdi")], tmp / f"{name}.raw.zarr",
                 fields={"element": "Fe", "edge": "K"})
    store = normalize(raw, tmp / f"{name}.zarr", params)
    p = params["posterior"]
    x, y, e0, _, _ = fitted_window(store, p)
    return x, y, spec_from_params(dict(p, priors=model_priors(p, x, y, "xanes")), e0)


def pair(x, y, model, bvals, sweeps: int, seed: int, linear: bool) -> tuple[float, float, float]:
    from xafsflow.bayes.diagnostics import ess_bulk, rank_normalized_rhat
    from xafsflow.bayes.remc import ChainSettings, run_chain

    s = ChainSettings(sweeps=sweeps, burn_in=sweeps, linear_moves=linear)
    t = time.perf_counter()
    runs = [run_chain(x, y, model, bvals, s, np.random.SeedSequence([seed, r])) for r in range(2)]
    wall = time.perf_counter() - t
    free = np.array([p.code != 0 for p in model.priors])
    ch = np.stack([r.samples[:, -1, free] for r in runs])
    return wall, float(np.nanmax(rank_normalized_rhat(ch))), float(np.nanmin(ess_bulk(ch))) / wall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--sweeps", type=int, default=4000)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    a = ap.parse_args(argv)
    from xafsflow.bayes.posterior import auto_ladder, noise_scale
    from xafsflow.bayes.remc import run_chain, ChainSettings

    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases:
            name, model_name, K = CASES[case]
            x, y, spec = spectrum(name, model_name, Path(tmp))
            model = spec.build(K, x)
            bvals = auto_ladder(x, y, model, 32, 10.0 / noise_scale(y) ** 2, np.random.default_rng(0))
            warm = ChainSettings(sweeps=50, burn_in=50, checkpoint_every=50)
            for lin in (False, True):  # compile both paths before timing
                run_chain(x, y, model, bvals, ChainSettings(**{**vars(warm), "linear_moves": lin}),
                          np.random.SeedSequence(0))
            res = {lin: np.array([pair(x, y, model, bvals, a.sweeps, seed, lin) for seed in range(a.seeds)])
                   for lin in (False, True)}
            print(f"{case}: N = {x.size}, P = {model.n_params}, {a.seeds} seeds x 2 chains x "
                  f"({a.sweeps} + {a.sweeps}) sweeps")
            for lin in (False, True):
                r = res[lin]
                print(f"  linear_moves={str(lin):5s} wall {np.median(r[:, 0]):6.1f} s [{r[:, 0].min():.1f}, "
                      f"{r[:, 0].max():.1f}]  worst R-hat {np.median(r[:, 1]):.3f} [{r[:, 1].min():.3f}, "
                      f"{r[:, 1].max():.3f}]  min bulk ESS/s {np.median(r[:, 2]):.2f} [{r[:, 2].min():.2f}, "
                      f"{r[:, 2].max():.2f}]")
            ratio = res[True][:, 2] / res[False][:, 2]
            print(f"  ESS/s ratio with / without (per seed): median {np.median(ratio):.2f} "
                  f"[{ratio.min():.2f}, {ratio.max():.2f}]", flush=True)


if __name__ == "__main__":
    main()
