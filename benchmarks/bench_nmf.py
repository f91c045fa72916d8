"""NMF: xafsflow's distributed HALS against scikit-learn NMF (cd solver) on the same matrix, to the same error.

A 256 x 256 pixel x 120 energy matrix (k = 4 reference-like XANES phases mixed with Dirichlet fractions,
Gaussian noise sd 0.01): scikit-learn's ``NMF(solver="cd", init="nndsvda")`` runs to its own convergence
(tol 1e-4); xafsflow's :func:`xafsflow.imaging.nmf.nmf` (float32 input) then runs until its relative
error is at or below scikit-learn's: by default its in-process runner (``--runner threads``: a pool of
``--threads`` threads over 4096-row tiles, numba kernel), or ``--runner dask`` (Dask threaded scheduler,
chunks of 8192 pixels). Both in memory, on the same number of cores: scikit-learn's BLAS limited to
``--threads`` threads (threadpoolctl; ``--sklearn-blas`` to change), ours to 1 BLAS thread inside its ``--threads`` threads. Prints wall
times, the ratio, the errors, the load average, and the spread over repeats.

    PYTHONPATH=src python benchmarks/bench_nmf.py [--repeats 3] [--pixels 256] [--runner threads] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def matrix(n_side: int, n_e: int = 120, k: int = 4, seed: int = 0) -> np.ndarray:
    from xafsflow.simulate import forward as fw

    r = np.random.default_rng(seed)
    e = np.linspace(7680.0, 7800.0, n_e)
    H = np.stack([fw.xanes_normalized(e, 7720.0 + 2.5 * j, 2.5, 1.0 + j, 3.0 + j, 4.0, 0.4, []) for j in range(k)])
    W = r.dirichlet(np.full(k, 0.3), n_side * n_side)
    return (W @ H + r.normal(0, 0.01, (W.shape[0], n_e))).astype(np.float32), e


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pixels", type=int, default=256, help="pixels per side")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--runner", choices=("threads", "dask"), default="threads")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sklearn-blas", type=int, default=None, help="scikit-learn's BLAS threads (default --threads)")
    a = ap.parse_args()
    import os
    import dask
    import dask.array as da
    from sklearn.decomposition import NMF
    from threadpoolctl import threadpool_limits

    from xafsflow.imaging.nmf import nmf

    X, e = matrix(a.pixels, k=a.k)
    x64 = np.maximum(X.astype(np.float64), 0.0)  # scikit-learn refuses negative entries
    norm = np.linalg.norm(x64)
    t_sk, t_ours, ratios = [], [], []
    for rep in range(a.repeats):
        with threadpool_limits(limits=a.sklearn_blas or a.threads):
            t0 = time.perf_counter()
            sk = NMF(a.k, solver="cd", init="nndsvda", tol=1e-4, max_iter=1000)
            W = sk.fit_transform(x64)
            t_sk.append(time.perf_counter() - t0)
        e_sk = np.linalg.norm(x64 - W @ sk.components_) / norm
        with dask.config.set(scheduler="threads", num_workers=a.threads), threadpool_limits(limits=1):
            t0 = time.perf_counter()
            x32 = x64.astype(np.float32)
            data = x32 if a.runner == "threads" else da.from_array(x32, chunks=(8192, X.shape[1]))
            out = nmf(data, a.k, energy=e, max_iter=1000, tol=0, target_error=e_sk, runner=a.runner,
                      threads=a.threads)
            t_ours.append(time.perf_counter() - t0)
        ratios.append(t_ours[-1] / t_sk[-1])
        print(f"repeat {rep}: scikit-learn {t_sk[-1]:.2f} s ({sk.n_iter_} iterations, error {e_sk:.6f}); "
              f"xafsflow {t_ours[-1]:.2f} s ({out.iterations} iterations, error {out.errors[-1]:.6f}); "
              f"ratio {ratios[-1]:.2f}; load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{a.pixels}x{a.pixels}x{X.shape[1]} k={a.k} runner={a.runner} threads={a.threads} "
          f"(scikit-learn BLAS threads {a.sklearn_blas or a.threads}): scikit-learn median {np.median(t_sk):.2f} s "
          f"[{min(t_sk):.2f}-{max(t_sk):.2f}], xafsflow median {np.median(t_ours):.2f} s "
          f"[{min(t_ours):.2f}-{max(t_ours):.2f}], ratio xafsflow/scikit-learn median {np.median(ratios):.2f} "
          f"[{min(ratios):.2f}-{max(ratios):.2f}]")


if __name__ == "__main__":
    main()
