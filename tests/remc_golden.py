"""Cases of the unweighted REMC golden file (tests/data/remc_unweighted_golden.npz).

The golden file was written from main *before* weighted likelihoods entered the
kernel (``python tests/remc_golden.py``); ``weights=None`` must reproduce it bit
for bit (tests/test_weighted_likelihood.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xafsflow.bayes.models import peaks_model, preedge_model, xanes_model
from xafsflow.bayes.posterior import Convergence, LadderTuning, PosteriorSpec, analyse
from xafsflow.bayes.remc import ChainSettings, run_chain

GOLDEN = Path(__file__).parent / "data" / "remc_unweighted_golden.npz"
# linear_moves=False: the conditional-linear moves came after the file was written
SETTINGS = ChainSettings(sweeps=60, burn_in=60, thin=5, block=20, adapt_every=20, refresh=30, checkpoint_every=20,
                         joint_min=20, joint_window=40, linear_moves=False)
LADDER = np.concatenate([[0.0], np.geomspace(0.5, 1e4, 5)])


def chain_case(which: str):
    """(x, y, model) of a small chain: peaks K=2, xanes K=1, preedge K=1."""
    rng = np.random.default_rng({"peaks": 1, "xanes": 2, "preedge": 3}[which])
    if which == "peaks":
        x = np.linspace(0.0, 3.0, 60)
        y = 1.0 * np.exp(-40 * (x - 1.0) ** 2 / 2) + 0.7 * np.exp(-60 * (x - 2.0) ** 2 / 2) + rng.normal(0, 0.05, x.size)
        return x, y, peaks_model(2)
    if which == "xanes":
        x = np.arange(-10.0, 30.0, 0.5)
        truth = xanes_model(1, -10, 30, 0.0)
        theta = np.array([1.0, 0.0, 2.0, 5.0, 3.0, 4.0, 0.5, 1.0, 10.0, 2.0])
        return x, truth.evaluate(x, theta) + rng.normal(0, 0.02, x.size), xanes_model(1, -10, 30, 0.0)
    x = np.arange(7100.0, 7120.0, 0.25)
    model = preedge_model(1, x[0], x[-1], 1.0, 7124.0)
    theta = np.array([0.8, 7124.0, 4.0, 0.02, 0.001, x[0], 0.12, 7112.5, 0.7])
    return x, model.evaluate(x, theta) + rng.normal(0, 0.005, x.size), model


def analyse_case():
    """A whole small analysis (tuned ladder, estimated noise, K = 1..2) of the xanes case."""
    x, y, _ = chain_case("xanes")
    spec = PosteriorSpec(model="xanes", k_min=1, k_max=2, replicas=8, runs=2, e0=0.0,
                         # conditional-linear moves came later too
                         settings=ChainSettings(sweeps=100, burn_in=100, checkpoint_every=100, linear_moves=False),
                         # the ladder's top stays put as when the file was written (top_factor came later):
                         # the file pins the unweighted kernel path, not the pilot
                         tuning=LadderTuning(warmup=100, sweeps=100, rounds=1, top_factor=None),
                         convergence=Convergence(enabled=False), k_limit=2)
    return x, y, spec


def compute(weights_kw: dict | None = None) -> dict:
    """Every array the golden file holds (``weights_kw`` passed to run_chain / analyse when given)."""
    kw = weights_kw or {}
    out = {}
    for which in ("peaks", "xanes", "preedge"):
        x, y, model = chain_case(which)
        r = run_chain(x, y, model, LADDER, SETTINGS, np.random.SeedSequence(11), **kw)
        out[f"{which}_energies"] = r.energies
        out[f"{which}_samples"] = r.samples
    x, y, spec = analyse_case()
    res = analyse(x, y, spec, 5, "golden", **kw)
    out["analyse_log_z"] = np.array([res.per_k[K]["log_z"] for K in res.ks])
    out["analyse_samples_k1"] = res.per_k[1]["samples"]
    out["analyse_sigma_hat"] = np.array([res.noise["sigma_hat"]])
    return out


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(GOLDEN, **compute())
    print("wrote", GOLDEN, GOLDEN.stat().st_size, "bytes")
