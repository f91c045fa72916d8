"""How many components a measured spectrum asks for: best least-squares fit of the posterior's model at each K.

    PYTHONPATH=src python benchmarks/xanes_residual_profile.py [--files fe2o3_rt feo_rt1] [--model xanes]
                                                               [--k-max 8] [--starts 60] [--fit-range LO HI]

For each file of ``../shared/data/xdi/``: ingest and normalize as the workflow
does (schema defaults), take the posterior product's fitted window and model
(``xanes`` over E0 + fit_range, or ``preedge``) and, for K = 0 .. k_max, the
best of ``--starts`` bounded least-squares fits (``scipy.optimize.least_squares``;
starts drawn from the model's default prior, bounds the prior's support) of
f(E; theta) = the model's own NumPy ``evaluate``. Prints the rms residual per K,
the rough noise level from second differences (``noise_scale``) and BIC =
N ln(rms^2) + P ln N. Not a timing benchmark: it records why the posterior's
K keeps growing on measured XANES (issue 8) — while the best fit's rms stays
above the noise level, every added Gaussian buys tens of nats of likelihood,
more than its Occam factor.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "xdi"


def bounds(prior) -> tuple[float, float]:
    if prior.dist in ("uniform", "loguniform"):
        return prior.a, prior.b
    if prior.dist == "gamma":
        return 0.0, np.inf
    return -np.inf, np.inf  # normal


def best_fit(model, x, y, rng, starts: int) -> float:
    """Smallest rms residual over ``starts`` least-squares fits from prior draws (fixed parameters held)."""
    from scipy.optimize import least_squares

    free = np.array([p.dist != "fixed" for p in model.priors])
    lo, hi = np.array([bounds(p) for p in model.priors]).T
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    margin = 1e-9 * span
    best = np.inf
    for theta0 in model.sample_prior(rng, starts):

        def resid(t, theta0=theta0):
            th = theta0.copy()
            th[free] = t
            return model.evaluate(x, th) - y

        t0 = np.clip(theta0[free], lo[free] + margin[free], hi[free] - margin[free])  # strictly inside
        try:
            r = least_squares(resid, t0, bounds=(lo[free], hi[free]))
        except ValueError:
            continue
        best = min(best, math.sqrt(2 * r.cost / x.size))
    return best


def main() -> None:
    from xafsflow.bayes.posterior import noise_scale
    from xafsflow.campaign import kind_params
    from xafsflow.products.posterior import fitted_window, model_priors, spec_from_params
    from xafsflow.steps import ingest, normalize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", nargs="+", default=["fe2o3_rt", "feo_rt1"])
    ap.add_argument("--model", default="xanes", choices=["xanes", "preedge"])
    ap.add_argument("--k-max", type=int, default=8)
    ap.add_argument("--starts", type=int, default=60)
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--fit-range", nargs=2, type=float, default=None,
                    help="fitted range (eV; the model's reference) instead of the schema default")
    args = ap.parse_args()
    params = kind_params("xanes", None)
    p = dict(params["posterior"], model=args.model)
    if args.fit_range is not None:
        if args.model == "preedge":
            p["preedge"] = dict(p["preedge"], fit_range=list(args.fit_range))
        else:
            p["fit_range"] = list(args.fit_range)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files:
            raw = ingest(name, "xanes", "xdi", [str(SHARED / f"{name}.xdi")], Path(tmp) / f"{name}.raw.zarr", fields={})
            store = normalize(raw, Path(tmp) / f"{name}.zarr", params)
            x, y, e0, _, _ = fitted_window(store, p)
            spec = spec_from_params(dict(p, priors=model_priors(p, x, y, "xanes")), e0)
            rng = np.random.default_rng(np.random.SeedSequence([args.seed, len(name)]))
            print(f"{name} ({args.model}): N = {x.size}, E0 = {e0:.2f} eV, noise from second differences "
                  f"{noise_scale(y):.4f}")
            print("   K  P    rms      BIC")
            for K in range(0, args.k_max + 1):
                model = spec.build(K, x)
                rms = best_fit(model, x, y, rng, args.starts)
                bic = x.size * math.log(rms**2) + model.n_params * math.log(x.size)
                print(f"  {K:2d} {model.n_params:3d}  {rms:.5f}  {bic:8.1f}", flush=True)


if __name__ == "__main__":
    main()
