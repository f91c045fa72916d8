"""Wall time of the posterior product on measured Fe K-edge XANES, both models, whole K range (issue 8).

    PYTHONPATH=src python benchmarks/bench_real_scan.py [--files fe2o3_rt feo_rt1] [--models xanes preedge]
                                                        [--schedules converge converge-nolinear fixed] [--threads 2]
                                                        [--seeds 20261127 7 ...]

For each file of ``../shared/data/xdi/`` and each model: ingest and normalize as
the workflow does (schema defaults), then ``run_posterior`` at the schema's
defaults (the ``xanes`` or ``preedge`` model, K from k_min up, growing past k_max
while P(K | data) stays above expand_p) on ``--threads`` Dask workers as the
``posterior`` rule runs it, with either the convergence stopping of the defaults
(``converge``: chains extended until F's SE, R-hat, ESS and run agreement hold or
the sweep budget is spent, which sets ``not_converged``), the same without
the conditional-linear moves (``converge-nolinear``, their peer), or the
fixed-length schedule (``fixed``: convergence off, exactly ``sweeps``). Prints per run: wall
time, the K tried and selected, P(K), worst exchange rate and R-hat of the
selected K, and the flags, so a run that did not converge is never read as a
result. No peer: the goal (issue 8) is a budget, under 2 minutes per real scan
on 2 cores with both models and every K converged, or a clear flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "xdi"


def run_one(path: Path, model: str, schedule: str, threads: int, seed: int = 20261127) -> dict:
    from xafsflow.campaign import kind_params
    from xafsflow.io.store import open_store
    from xafsflow.products.posterior import run_posterior
    from xafsflow.steps import ingest, normalize

    overrides = {"posterior": {"model": model}}
    if schedule == "fixed":
        overrides["posterior"]["convergence"] = {"enabled": False}
    if schedule == "converge-nolinear":  # the peer of the conditional-linear moves: the sampler without them
        overrides["posterior"]["linear_moves"] = False
    params = kind_params("xanes", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = ingest(path.stem, "xanes", "xdi", [str(path)], tmp / "raw.zarr", fields={"element": "Fe", "edge": "K"})
        store = normalize(raw, tmp / "scan.zarr", params)
        t0 = time.perf_counter()
        res = run_posterior(store, tmp / "post.zarr", tmp / "post.tsv", tmp / "post.png", params, path.stem, seed,
                            threads=threads)
        wall = time.perf_counter() - t0
        a = dict(open_store(tmp / "post.zarr").attrs)
    return {"file": path.stem, "model": model, "schedule": schedule, "wall_s": wall, "ks": res.ks,
            "K": res.k_selected, "P_K": float(max(res.p_k)), "min_exchange": a.get("min_exchange_rate"),
            "max_rhat": a.get("max_rhat"), "flags": a.get("flags", [])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", nargs="+", default=["fe2o3_rt", "feo_rt1"])
    ap.add_argument("--models", nargs="+", default=["xanes", "preedge"])
    ap.add_argument("--schedules", nargs="+", default=["converge", "fixed"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", nargs="+", type=int, default=[20261127],
                    help="campaign seeds: one run per seed, for the spread over repeated runs")
    args = ap.parse_args(argv)
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start", flush=True)
    for f in args.files:
        for model in args.models:
            for schedule, seed in ((s, e) for s in args.schedules for e in args.seeds):
                r = run_one(SHARED / f"{f}.xdi", model, schedule, args.threads, seed)
                print(f"{r['file']:10s} {r['model']:8s} {r['schedule']:9s} seed {seed} wall {r['wall_s']:7.1f} s  K tried "
                      f"{r['ks']} selected {r['K']} (P {r['P_K']:.2f})  min exchange {r['min_exchange']:.3f}  "
                      f"max R-hat {r['max_rhat']:.3f}  flags {'; '.join(r['flags']) or '-'}  "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
