"""Sparse-structure fit of one scan next to xraylarch feffit of a four-shell Cu model, on the same chi(k).

    .venv/bin/python benchmarks/bench_sparse.py [--repeats 3]

Data: the real Cu foil ``../shared/data/xdi/cu_metal_rt.xdi``, normalized by
xafsflow, chi(k) by larch autobk (rbkg 1), k = 3..14, k-weight 2.

1. Sparse fit (``xafsflow.exafs.sparse.fit_sparse``): grid 401 R (1.5..5.5 A,
   step 0.01) x 4 sigma^2, 5 contiguous-k folds, 30 penalties, dE0 search, NNLS
   refit, no bootstrap (FEFF already cached: its one run, ~0.1 s, is timed apart).
2. larch ``feffit`` of fcc Cu's first four single-scattering shells with the
   same FEFF path (degeneracies 12, 6, 24, 12; S0^2, E0, four dR and four sigma^2
   free), fitted in R space (1.5..5.5 A) with a hanning window over k = 3..14.
3. The solver choice: the cross-validation path (5 folds x 30 penalties) with
   the exact active-set solver vs scikit-learn's coordinate descent (lasso_path,
   positive=True, tol 1e-4), and the held-out error curves' largest difference.

Prints each repeat, the medians, the ratios and the spread (smallest and
largest per-repeat ratio).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from xafsflow.exafs.basis import basis_matrix, r_grid_of, run_feff  # noqa: E402
from xafsflow.exafs.sparse import SparseSpec, alpha_grid, contiguous_folds, cross_validate, fit_sparse  # noqa: E402

SHARED = Path(os.environ.get("XAFSFLOW_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
KMIN, KMAX, KW = 3.0, 14.0, 2


def cu_chi():
    from xafsflow.io.xdi import read_xdi
    from xafsflow.xas.background import extract_chi
    from xafsflow.xas.normalize import normalize_edge

    x = read_xdi(SHARED / "xdi" / "cu_metal_rt.xdi")
    e, mu = x.column("energy"), x.column("mutrans")
    n = normalize_edge(e, mu)
    c = extract_chi(e, mu, n.e0, n.edge_step)
    return c.k, c.chi


def time_sparse(k, chi, path):
    t = time.perf_counter()
    res = fit_sparse(k, chi, path, SparseSpec(bootstrap=0))
    return time.perf_counter() - t, res


def time_feffit(k, chi, feffdat: str):
    from larch import Group
    from larch.fitting import guess, param_group
    from larch.xafs import feffit, feffit_dataset, feffit_transform, feffpath

    pars = param_group(amp=guess(0.9), del_e0=guess(3.0),
                       dr1=guess(0.05), dr2=guess(1.11), dr3=guess(1.92), dr4=guess(2.6),
                       ss1=guess(0.008), ss2=guess(0.012), ss3=guess(0.012), ss4=guess(0.012))
    import shutil

    paths = {}
    for i, deg in zip(range(1, 5), (12, 6, 24, 12)):
        # larch names a path's parameters by a hash of its file name and geometry: four shells read from one
        # file would share them (and be fitted as one shell), so each shell reads its own copy
        own = str(Path(feffdat).with_name(f"shell{i}.dat"))
        shutil.copyfile(feffdat, own)
        paths[f"p{i}"] = feffpath(own, label=f"shell{i}", degen=deg, s02="amp", e0="del_e0", deltar=f"dr{i}",
                                  sigma2=f"ss{i}")
    trans = feffit_transform(kmin=KMIN, kmax=KMAX, kweight=KW, dk=1.0, window="hanning", rmin=1.5, rmax=5.5,
                             fitspace="r")
    data = Group(k=k, chi=chi)
    t = time.perf_counter()
    out = feffit(pars, feffit_dataset(data=data, paths=paths, transform=trans))
    dt = time.perf_counter() - t
    p = out.params
    reff = paths["p1"]._feffdat.reff
    shells = [(reff + p[f"dr{i}"].value, p["amp"].value * deg, p[f"ss{i}"].value)
              for i, deg in zip(range(1, 5), (12, 6, 24, 12))]
    return dt, shells


def time_cv(a, y, alphas, solver: str):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lasso_path

    t = time.perf_counter()
    if solver == "active-set":
        mean, _ = cross_validate(a, y, alphas, 5, refit=False)
    else:
        errs = []
        for test in contiguous_folds(len(y), 5):
            train = np.setdiff1d(np.arange(len(y)), test)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                _, coefs, _ = lasso_path(a[train], y[train], alphas=alphas, positive=True, max_iter=20000, tol=1e-4)
            errs.append(np.mean((y[test, None] - a[test] @ coefs) ** 2, axis=0))
        mean = np.mean(errs, axis=0)
    return time.perf_counter() - t, mean


def spread(ratios):
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    k, chi = cu_chi()
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        path = run_feff("Cu", "Cu", "K", 2.5, cache_dir=cache)
        print(f"FEFF6L run (once per pair, then cached): {time.perf_counter() - t:.2f} s")
        feffdat = str(Path(cache) / f"{path.key}.dat")
        sparse_t, feffit_t = [], []
        for rep in range(args.repeats):
            ts, res = time_sparse(k, chi, path)
            tf, fshells = time_feffit(k, chi, feffdat)
            sparse_t.append(ts)
            feffit_t.append(tf)
            print(f"repeat {rep + 1}: sparse {ts:.2f} s, feffit {tf:.2f} s, ratio sparse/feffit {ts / tf:.2f}")
        print("sparse shells (R, N*S0^2, sigma2):", [(round(s.r, 3), round(s.n, 2), round(s.sigma2, 4))
                                                     for s in res.shells], f"dE0 {res.de0:.2f}")
        print("feffit shells (R, N*S0^2, sigma2):", [(round(r, 3), round(n, 2), round(s2, 4)) for r, n, s2 in fshells])
        ratios = [a / b for a, b in zip(sparse_t, feffit_t)]
        print(f"median: sparse {np.median(sparse_t):.2f} s, feffit {np.median(feffit_t):.2f} s, "
              f"ratio {np.median(sparse_t) / np.median(feffit_t):.2f} (per repeat {spread(ratios)})")

        m = (k >= KMIN - 1e-9) & (k <= KMAX + 1e-9)
        kf = k[m]
        y = chi[m] * kf**KW
        a = basis_matrix(path, kf, r_grid_of((1.5, 5.5)), (0.002, 0.005, 0.009, 0.015), KW, res.de0).matrix
        alphas = alpha_grid(a, y, 30, 1e-4)
        act, skl = [], []
        for rep in range(args.repeats):
            ta, ma = time_cv(a, y, alphas, "active-set")
            tk, mk = time_cv(a, y, alphas, "sklearn")
            act.append(ta)
            skl.append(tk)
            print(f"CV path repeat {rep + 1}: active set {ta:.2f} s, scikit-learn {tk:.2f} s, ratio {tk / ta:.1f}; "
                  f"largest relative difference of the CV curves {np.max(np.abs(ma - mk) / mk):.2e}")
        r2 = [b / a_ for a_, b in zip(act, skl)]
        print(f"median: active set {np.median(act):.2f} s, scikit-learn {np.median(skl):.2f} s, "
              f"speed-up {np.median(skl) / np.median(act):.1f} (per repeat {spread(r2)})")


if __name__ == "__main__":
    main()
