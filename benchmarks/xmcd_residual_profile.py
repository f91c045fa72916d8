"""How many components the measured Fe L2,3 helicity spectra ask for: best least-squares fit per K.

    PYTHONPATH=src python benchmarks/xmcd_residual_profile.py [--k-max 8] [--starts 20]

The real pair of ``../shared/data/xmcd/`` goes through ingest and normalize as
in ``tests/test_xmcd.py`` (a scan-sheet row; pre-edge [-25, -8] eV, nnorm 1,
norm1 25 eV). For each helicity and K = 0 .. k_max, the best of ``--starts``
bounded least-squares fits (``scipy.optimize.least_squares``; starts: areas
Gamma(2), centres uniform over the data, Gaussian sd log-uniform over the
product's width prior 0.05-2 eV) of four variants of the helicity model:

* ``product``: the xmcd_posterior model - fixed edge steps (L3/L2 maxima of the
  helicity average, 1 eV wide, the helicity's post-edge level) plus K
  pseudo-Voigts of fixed 1 eV FWHM Lorentzian;
* ``free steps``: step positions (+-4 eV), width (0.2-8 eV), height
  (0.5-1.5 x the level) and a post-edge slope fitted too;
* ``free lorentz``: the product's steps, one Lorentzian FWHM (0.05-1.5 eV)
  shared by all components fitted;
* ``both``: free steps and free Lorentzian.

Prints rms residual per K and variant next to the noise level from second
differences (``noise_scale``). Not a timing benchmark: it records why the
helicities' K reaches ``k_limit`` on this pair (issue 9) - while the best fit's
rms stays far above the noise, every added component buys likelihood.
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

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHEET = ("scan_id\tkind\tpath\tformat\tenergy\ti0\tifluor\toverrides\n"
         "fe_pf\txmcd\t../shared/data/xmcd/fe_l23_pf_1.txt;../shared/data/xmcd/fe_l23_pf_2.txt\tcolumns\t"
         "col1\tcol2\tcol3\txmcd_posterior.n_holes=3.39; xmcd_posterior.polarization=1.0\n")
CONFIG = ("campaign: fe\nscans: sheet.tsv\nanalysis:\n"
          "  xmcd:\n    normalize: {pre1: -25.0, pre2: -8.0, norm1: 25.0, nnorm: 1}\n")
VARIANTS = {"product": (False, False), "free steps": (True, False), "free lorentz": (False, True),
            "both": (True, True)}


def real_pair(tmp: Path):
    """(energy, mu_plus, mu_minus) of the real pair, normalized as the workflow does."""
    from xafsflow.campaign import load_campaign
    from xafsflow.products.xmcd_posterior import read_pair
    from xafsflow.steps import ingest, normalize

    work = tmp / "work"
    work.mkdir()
    (tmp / "shared").symlink_to(SHARED)
    (work / "sheet.tsv").write_text(SHEET)
    (work / "campaign.yaml").write_text(CONFIG)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        scan = load_campaign(work / "campaign.yaml").scan("fe_pf")
        raw = ingest(scan.scan_id, scan.kind, scan.format, scan.paths, work / "raw.zarr", fields=scan.fields)
        store = normalize(raw, work / "fe_pf.zarr", scan.params)
    finally:
        os.chdir(cwd)
    e, mp, mm, *_ = read_pair(store)
    return e, mp, mm


def best_fit(e, mu, K: int, l3: float, l2: float, h0: float, free_steps: bool, free_lorentz: bool,
             rng, starts: int) -> float:
    """Smallest rms residual over ``starts`` bounded least-squares fits of one variant."""
    from scipy.optimize import least_squares

    from xafsflow.bayes.models import LORENTZ_FWHM, pvoigt
    from xafsflow.bayes.xmcd import WIDTH_PRIOR
    from xafsflow.xas.sum_rules import edge_steps, window_integral

    # extra parameters first: [dl3, dl2, step width, step height, slope] and/or [Lorentzian FWHM]
    lo_x = ([-4.0, -4.0, 0.2, 0.5 * h0, -0.05] if free_steps else []) + ([0.05] if free_lorentz else [])
    hi_x = ([4.0, 4.0, 8.0, 1.5 * h0, 0.05] if free_steps else []) + ([1.5] if free_lorentz else [])
    s_lo, s_hi = WIDTH_PRIOR["lo"], WIDTH_PRIOR["hi"]
    lo = np.r_[lo_x, np.tile([0.0, e[0], s_lo], K)]
    hi = np.r_[hi_x, np.tile([np.inf, e[-1], s_hi], K)]
    nx = len(lo_x)

    def curve(t):
        if free_steps:
            bg = edge_steps(e, l3 + t[0], l2 + t[1], t[3], t[2]) + t[4] * np.clip(e - l3, 0.0, None)
        else:
            bg = edge_steps(e, l3, l2, h0, 1.0)
        fl = t[nx - 1] if free_lorentz else LORENTZ_FWHM
        for k in range(K):
            bg = bg + pvoigt(e, *t[nx + 3 * k: nx + 3 * k + 3], lorentz_fwhm=fl)
        return bg

    if lo.size == 0:
        return math.sqrt(np.mean((curve(lo) - mu) ** 2))
    area_mean = max(0.5 * window_integral(e, np.clip(mu - edge_steps(e, l3, l2, h0, 1.0), 0, None), e[0], e[-1]), 1e-6)
    best = np.inf
    for _ in range(starts):
        comps = np.c_[rng.gamma(2.0, area_mean / 2.0, K), rng.uniform(e[0], e[-1], K),
                      np.exp(rng.uniform(math.log(s_lo), math.log(s_hi), K))].ravel()
        extra = ([0.0, 0.0, 1.0, h0, 0.0] if free_steps else []) + ([0.5] if free_lorentz else [])
        span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
        t0 = np.clip(np.r_[extra, comps], lo + 1e-6 * span, hi - 1e-6 * span)
        r = least_squares(lambda t: curve(t) - mu, t0, bounds=(lo, hi))
        best = min(best, math.sqrt(2.0 * r.cost / e.size))
    return best


def main() -> None:
    from xafsflow.bayes.posterior import noise_scale
    from xafsflow.bayes.xmcd import step_level
    from xafsflow.xas.sum_rules import find_step_positions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k-max", type=int, default=8)
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--seed", type=int, default=20261203)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        e, mp, mm = real_pair(Path(tmp))
    l3, l2 = find_step_positions(e, 0.5 * (mp + mm))
    for name, mu in (("plus", mp), ("minus", mm)):
        h0 = step_level(e, mu)
        print(f"{name}: N = {e.size}, steps at {l3:.2f} / {l2:.2f} eV, level {h0:.3f}, noise from second "
              f"differences {noise_scale(mu):.4f}")
        print("   K  " + "  ".join(f"{v:>12s}" for v in VARIANTS))
        for K in range(args.k_max + 1):
            rms = []
            for i, (fs, fl) in enumerate(VARIANTS.values()):
                rng = np.random.default_rng(np.random.SeedSequence([args.seed, K, i, len(name)]))
                rms.append(best_fit(e, mu, K, l3, l2, h0, fs, fl, rng, args.starts))
            print(f"  {K:2d}  " + "  ".join(f"{v:12.4f}" for v in rms), flush=True)


if __name__ == "__main__":
    main()
