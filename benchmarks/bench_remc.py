"""Replica-exchange Monte Carlo on the Nagata benchmark, side by side with dynesty.

    .venv/bin/python benchmarks/bench_remc.py [--remc-only] [--rslice]

1. Metropolis proposals per second per core and sweeps per second of the numba
   kernel (N = 301, K = 3, L = 32), with 1 process and with 2 processes at once.
2. Wall time until F(3) has a standard error below 0.1 nats (spread of
   independent runs), next to dynesty's wall time to a log evidence with
   logzerr below 0.1 on the same model, priors and ordering; the ratio.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from xafsflow.bayes import free_energy as fe  # noqa: E402
from xafsflow.bayes import nagata  # noqa: E402
from xafsflow.bayes.models import peaks_model  # noqa: E402
from xafsflow.bayes.remc import ChainSettings, run_chain  # noqa: E402

X = nagata.X
SIGMA = 0.1
LADDER = np.concatenate([[0.0], np.geomspace(1e-2, 1 / SIGMA**2, 31)])


def data(seed=2012):
    return nagata.data(seed, SIGMA)[1]


def chain(args):
    seed, sweeps, burn = args
    y = data()
    # the proposal count below is that of the single-parameter and joint moves: conditional-linear moves
    # (on by default since 2026-12-03; bench_linear_moves.py measures them) are left out here
    s = ChainSettings(sweeps=sweeps, burn_in=burn, thin=10, linear_moves=False)
    t = time.perf_counter()
    r = run_chain(X, y, peaks_model(3), LADDER, s, np.random.SeedSequence([seed]))
    dt = time.perf_counter() - t
    return dt, fe.bridge(r.energies, LADDER, X.size)[-1]


def throughput(nproc: int, sweeps=4000, burn=1000):
    # per sweep and replica above b_0: 9 single-parameter proposals and 1 joint move
    proposals = (sweeps + burn) * (LADDER.size - 1) * 10
    with ProcessPoolExecutor(nproc) as ex:
        list(ex.map(chain, [(0, 100, 50)] * nproc))  # compile / warm the numba cache in each process
        t = time.perf_counter()
        out = list(ex.map(chain, [(i + 1, sweeps, burn) for i in range(nproc)]))
        wall = time.perf_counter() - t
    per_chain = np.mean([o[0] for o in out])
    return proposals / per_chain, (sweeps + burn) / per_chain, nproc * proposals / wall


def remc_time_to_error(target=0.1, runs=12):
    # the error is the spread of independent runs; 12 of them (4 fixed seeds understated it)
    sweeps = 1000
    while True:
        t = time.perf_counter()
        with ProcessPoolExecutor(2) as ex:
            out = list(ex.map(chain, [(100 + i, sweeps, 1000) for i in range(runs)]))
        wall = time.perf_counter() - t
        f = np.array([o[1] for o in out])
        se = f.std(ddof=1) / math.sqrt(runs)
        if se < target or sweeps >= 64000:
            return wall, se, sweeps, f.mean()
        sweeps *= 2


def dynesty_time_to_error(target=0.1):
    import dynesty

    loglike, ptform = nagata.dynesty_problem(X, data(), SIGMA)
    # logzerr falls as nlive^-1/2 at a cost proportional to nlive: measure two sizes and
    # extrapolate the wall time to logzerr = target from the larger one (time * (err/target)^2)
    out = []
    for nlive in (500, 1000):
        t = time.perf_counter()
        s = dynesty.NestedSampler(loglike, ptform, 9, nlive=nlive, sample="rwalk", rstate=np.random.default_rng(1))
        s.run_nested(dlogz=0.05, print_progress=False)
        wall = time.perf_counter() - t
        out.append((nlive, wall, float(s.results.logzerr[-1]), float(s.results.logz[-1])))
        print(f"  dynesty nlive {nlive}: {wall:.1f} s, logZ {out[-1][3]:.3f} +- {out[-1][2]:.3f}", flush=True)
    nlive, wall, err, logz = out[-1]
    return wall * (err / target) ** 2 if err > target else wall, err, nlive, logz


def main():
    import numba

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numba {numba.__version__}, {platform.platform()}")
    for nproc in (1, 2):
        pps, sps, total = throughput(nproc)
        print(f"{nproc} process(es): {pps:.3g} proposals/s per core, {sps:.1f} sweeps/s per chain, "
              f"{total:.3g} proposals/s in all")
    wall_r, se_r, sweeps, f = remc_time_to_error()
    logz_r = fe.log_evidence(f, 1 / SIGMA**2, X.size)
    print(f"REMC: F(3) SE {se_r:.3f} nats (spread of 12 runs) x {sweeps} sweeps (2 processes): {wall_r:.1f} s; "
          f"log Z = {logz_r:.2f}")
    if "--remc-only" in sys.argv:
        return
    if "--rslice" in sys.argv:
        # the reference evidence: slice nested sampling with many live points (slow: tens of minutes)
        import dynesty

        loglike, ptform = nagata.dynesty_problem(X, data(), SIGMA)
        t = time.perf_counter()
        s = dynesty.NestedSampler(loglike, ptform, 9, nlive=2000, sample="rslice", rstate=np.random.default_rng(1))
        s.run_nested(dlogz=0.01, print_progress=False)
        lz, err = float(s.results.logz[-1]), float(s.results.logzerr[-1])
        print(f"dynesty rslice nlive 2000: log Z {lz:.3f} +- {err:.3f} ({time.perf_counter() - t:.0f} s); "
              f"REMC - rslice = {logz_r - lz:+.3f} (combined SE {math.hypot(se_r, err):.3f})")
    wall_d, err_d, nlive, logz_d = dynesty_time_to_error()
    print(f"dynesty: logzerr {err_d:.3f} with nlive {nlive}; wall time to logzerr 0.1 (extrapolated): "
          f"{wall_d:.1f} s; log Z = {logz_d:.2f}")
    print(f"ratio dynesty / REMC wall time to SE < 0.1 nats: {wall_d / wall_r:.1f}")


if __name__ == "__main__":
    main()
