"""The sparse-structure product: a sparse radial distribution of one EXAFS scan (Setoyama et al. 2020).

chi(k) by larch ``autobk`` (:mod:`xafsflow.xas.background`), the pair's FEFF
single-scattering basis (:mod:`xafsflow.exafs.basis`, cached in the campaign's
resources), the cross-validated nonnegative LASSO with NNLS refit, dE0 search,
merged shells and block-bootstrap uncertainties (:mod:`xafsflow.exafs.sparse`).
This module reads the scan store, calls the library and writes the product's
store, TSV (shells) and PNG.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError, InputError
from xafsflow.io import store as st
from xafsflow.products import Product

PRODUCT = Product(
    name="sparse_structure",
    directory="sparse-structure",
    kinds=("exafs",),
    params_key="sparse_structure",
    summary_fields=("n_shells", "r1", "n1", "sigma2_1", "de0", "alpha"),
    description="Sparse EXAFS modelling: FEFF single-scattering basis, cross-validated nonnegative LASSO, shells",
    module=__name__,
)


def add_arguments(p) -> None:
    """Options of ``xafsflow sparse_structure`` beyond the common ones."""
    p.add_argument("--feff-cache", default=None,
                   help="folder of cached FEFF calculations (the campaign's resources; default: none kept)")


def spec_from_params(p: dict):
    """The library's :class:`~xafsflow.exafs.sparse.SparseSpec` from the validated block."""
    from xafsflow.exafs.sparse import SparseSpec

    return SparseSpec(k_range=tuple(p["k_range"]), kweight=p["kweight"], r_range=tuple(p["r_range"]),
                      r_step=p["r_step"], sigma2_grid=tuple(p["sigma2_grid"]), folds=p["folds"],
                      n_alphas=p["n_alphas"], alpha_ratio=p["alpha_ratio"], one_se=p["one_se"],
                      penalty=p["penalty"], cv_refit=p["cv_refit"], de0_range=tuple(p["de0_range"]),
                      de0_step=p["de0_step"], merge_distance=p["merge_distance"], min_fraction=p["min_fraction"],
                      bootstrap=p["bootstrap"], block_k=p["block_k"])


def check(params: dict, n_points: int | None = None) -> list[str]:
    """Problems with a resolved ``sparse_structure`` block, found without running anything."""
    problems = []
    for key in ("k_range", "r_range", "de0_range"):
        lo, hi = params[key]
        if not lo < hi and not (key == "de0_range" and lo == hi):
            problems.append(f"{key} [{lo}, {hi}] is not ordered (start below end)")
    n_r = (params["r_range"][1] - params["r_range"][0]) / params["r_step"]
    if n_r * len(params["sigma2_grid"]) > 20000:
        problems.append(f"the basis grid has {int(n_r) * len(params['sigma2_grid'])} columns (over 20000): "
                        f"coarsen r_step or shorten r_range/sigma2_grid")
    ab = params["autobk"]
    if ab["kmax"] is not None and ab["kmax"] < params["k_range"][1]:
        problems.append(f"autobk.kmax ({ab['kmax']}) is below the end of k_range ({params['k_range'][1]})")
    return problems


def summary(attrs: dict) -> dict:
    """Summary fields (without the ``sparse_structure.`` prefix) and flags from the store's attributes."""
    first = attrs.get("first_shell") or {}
    return {
        "n_shells": attrs.get("n_shells", ""),
        "r1": _fmt(first.get("r"), ".3f"),
        "n1": _fmt(first.get("n"), ".2f"),
        "sigma2_1": _fmt(first.get("sigma2"), ".4f"),
        "de0": _fmt(attrs.get("de0"), ".2f"),
        "alpha": _fmt(attrs.get("alpha"), ".3g"),
        "flags": list(attrs.get("flags") or []),
    }


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def run(args) -> str:
    """``xafsflow sparse_structure``: fit one EXAFS scan store and write its store, TSV and PNG."""
    from xafsflow.products._common import load_params, scan_kind

    attrs = dict(st.open_store(args.scan_store).attrs)
    params = load_params(args, scan_kind(PRODUCT, attrs, args.scan_store))
    res = run_sparse_structure(args.scan_store, args.out, args.tsv, args.png, params,
                               args.scan_id or attrs.get("scan_id", "scan"), args.seed,
                               params_hash=args.params_hash, feff_cache=args.feff_cache)
    return f"sparse_structure: {len(res.shells)} shells, dE0 = {res.de0:.2f} eV -> {args.out}"


def quality_flags(res, spec, p: dict) -> list[str]:
    """Flags for ``summary.tsv``: dE0 at its search bound, shells at the grid's edges, weakly supported shells."""
    flags = []
    lo, hi = spec.de0_range
    if hi > lo and min(abs(res.de0 - lo), abs(res.de0 - hi)) < 0.05:
        flags.append(f"de0_at_bound({res.de0:.1f})")
    if not res.shells:
        flags.append("no_shells")
    r_grid, s2 = res.basis.r_grid, res.basis.sigma2_grid
    for i, sh in enumerate(res.shells, 1):
        if sh.r_lo <= r_grid[0] + 1e-9 or sh.r_hi >= r_grid[-1] - 1e-9:
            flags.append(f"shell{i}_at_r_edge({sh.r:.2f})")
        if len(s2) > 1 and sh.sigma2 >= s2[-1] - 1e-12:
            flags.append(f"shell{i}_at_sigma2_edge")
        if np.isfinite(sh.support) and sh.support < p["quality"]["min_support"]:
            flags.append(f"shell{i}_weak(support={sh.support:.2f})")
    return flags


def run_sparse_structure(scan_store, out, tsv, png, params: dict, scan_id: str, campaign_seed: int,
                         params_hash: str | None = None, feff_cache: str | Path | None = None):
    """Fit one scan and write ``out`` (Zarr), ``tsv`` and ``png``; returns the SparseResult.

    Every input problem (energy range short of the fitted k range, unknown
    element, FEFF failing) raises an AnalysisInputError naming the scan's raw
    file before anything is written.
    """
    from xafsflow.exafs.basis import run_feff
    from xafsflow.exafs.sparse import fit_sparse
    from xafsflow.seeds import seed_sequence
    from xafsflow.xas.background import chi_r, extract_chi

    p = params["sparse_structure"]
    g = st.open_store(scan_store)
    attrs = dict(g.attrs)
    prov_in = attrs.get(st.PROVENANCE_KEY, {})
    src = next(iter(prov_in.get("raw_inputs", {})), str(scan_store))
    st.check_writable(out, tsv, png)
    spec = spec_from_params(p)
    problems = check(p)
    if problems:
        raise AnalysisInputError(f"sparse_structure: {problems[0]}", src)
    absorber = p["absorber"] or attrs.get("element")
    edge = p["edge"] or attrs.get("edge") or "K"
    if not absorber:
        raise AnalysisInputError("the scan names no element: set sparse_structure.absorber", src)
    scatterer = p["scatterer"] or absorber
    energy = g["energy"][...]
    mu = g["mu"][...]
    ab = p["autobk"]
    e0 = float(ab["e0"]) if ab["e0"] is not None else float(attrs["e0"])

    def progress(message):
        print(f"sparse_structure {scan_id}: {message}", file=sys.stderr, flush=True)

    try:
        chik = extract_chi(energy, mu, e0, attrs.get("edge_step"), rbkg=ab["rbkg"], kweight=ab["kweight"],
                           kmin=ab["kmin"], kmax=ab["kmax"], dk=ab["dk"], window=ab["window"], nclamp=ab["nclamp"],
                           clamp_lo=ab["clamp_lo"], clamp_hi=ab["clamp_hi"], need_kmax=spec.k_range[1])
        path = run_feff(absorber, scatterer, edge, p["r_ref"], cache_dir=feff_cache)
        ss = seed_sequence(campaign_seed, scan_id, "sparse_structure", "bootstrap")
        res = fit_sparse(chik.k, chik.chi, path, spec, rng=np.random.default_rng(ss), progress=progress)
    except InputError as exc:
        raise AnalysisInputError(f"scan {scan_id}: {exc.reason}", src) from None
    res.boot_seed = [int(v) for v in np.atleast_1d(ss.entropy)]
    ft = p["ft"]
    kmin, kmax = spec.k_range
    r, mag_data = chi_r(chik.k, chik.chi, kmin, kmax, spec.kweight, ft["dk"], ft["window"], ft["rmax"])
    fit_chi = np.zeros_like(chik.k)
    inside = (chik.k >= kmin - 1e-9) & (chik.k <= kmax + 1e-9)
    fit_chi[inside] = res.fit / res.k ** spec.kweight
    _, mag_fit = chi_r(chik.k, fit_chi, kmin, kmax, spec.kweight, ft["dk"], ft["window"], ft["rmax"])
    flags = quality_flags(res, spec, p)
    write_store(out, res, chik, path, r, mag_data, mag_fit, p, scan_id, campaign_seed, params_hash, flags, prov_in,
                absorber, scatterer, edge)
    write_tsv(tsv, res)
    plot(png, res, r, mag_data, mag_fit, scan_id, f"{absorber}-{scatterer}")
    return res


def _shell_dicts(shells) -> list[dict]:
    keys = ("r", "n", "sigma2", "r_sd", "n_sd", "sigma2_sd", "support", "r_lo", "r_hi")
    return [{k: (None if not np.isfinite(getattr(s, k)) else float(getattr(s, k))) for k in keys} for s in shells]


def write_store(out, res, chik, path, r, mag_data, mag_fit, p, scan_id, seed, params_hash, flags, prov_in,
                absorber, scatterer, edge) -> None:
    """The product store: chi(k), basis grid, coefficient maps, CV curve, fit, |chi(R)|, shells."""
    shells = _shell_dicts(res.shells)
    attrs = {
        "scan_id": scan_id, "absorber": absorber, "scatterer": scatterer, "edge": edge, "feff_key": path.key,
        "feff_reff": path.reff, "alpha": res.alpha, "alpha_cv_min": res.alpha_min, "de0": res.de0,
        "e0": chik.e0, "edge_step": chik.edge_step, "n_shells": len(shells), "shells": shells,
        "first_shell": shells[0] if shells else None, "flags": flags,
        "conventions": "coefficients are N*S0^2 per grid point (basis normalization undone); chi(k) of a shell as "
                       "larch FeffPathGroup with deltaR = R - reff; LASSO objective ||y - A c||^2/(2n) + alpha |c|_1 "
                       "on y = k^kweight chi(k); uncertainties: sd over a moving-block bootstrap over k "
                       "(dE0 held fixed)",
    }
    prov = st.provenance("sparse_structure", [], {"sparse_structure": p, "autobk_used": chik.params}, seed,
                         params_hash, [], extra={"scan_store_inputs": prov_in.get("raw_inputs", {}),
                                                 "bootstrap_seed_entropy": res.boot_seed,
                                                 "feff": {"key": path.key, "code": "feff6l", "reff": path.reff}})
    with st.atomic_store(out) as g:
        st.put_array(g, "k", chik.k, ("k",), attrs={"units": "1/angstrom"})
        st.put_array(g, "chi", chik.chi, ("k",), attrs={"meaning": "chi(k) from autobk (not k-weighted)"})
        st.put_array(g, "k_fit", res.k, ("k_fit",), attrs={"units": "1/angstrom"})
        st.put_array(g, "kchi_data", res.y, ("k_fit",), attrs={"meaning": f"k^{p['kweight']} chi(k), fitted"})
        st.put_array(g, "kchi_fit", res.fit, ("k_fit",), attrs={"meaning": "sparse model (NNLS refit)"})
        st.put_array(g, "r_grid", res.basis.r_grid, ("r_grid",), attrs={"units": "angstrom"})
        st.put_array(g, "sigma2_grid", res.basis.sigma2_grid, ("sigma2_grid",), attrs={"units": "angstrom^2"})
        st.put_array(g, "coef_map", res.coef_map, ("r_grid", "sigma2_grid"),
                     attrs={"meaning": "N*S0^2 per grid point after the NNLS refit of the LASSO support"})
        st.put_array(g, "lasso_map", res.lasso_map, ("r_grid", "sigma2_grid"),
                     attrs={"meaning": "N*S0^2 per grid point of the LASSO at the selected alpha (shrunk)"})
        st.put_array(g, "alpha", res.alphas, ("alpha",))
        st.put_array(g, "cv_mean", res.cv_mean, ("alpha",), attrs={"meaning": "held-out MSE, mean over folds"})
        st.put_array(g, "cv_se", res.cv_se, ("alpha",), attrs={"meaning": "standard error over folds"})
        st.put_array(g, "de0_grid", res.de0_grid, ("de0_grid",), attrs={"units": "eV"})
        st.put_array(g, "de0_objective", res.de0_objective, ("de0_grid",))
        st.put_array(g, "r", r, ("r",), attrs={"units": "angstrom", "window": p["ft"]})
        st.put_array(g, "chir_data", mag_data, ("r",), attrs={"meaning": "|chi(R)| of the data"})
        st.put_array(g, "chir_fit", mag_fit, ("r",), attrs={"meaning": "|chi(R)| of the sparse model"})
        for key in ("r", "n", "sigma2", "r_sd", "n_sd", "sigma2_sd", "support"):
            st.put_array(g, f"shell_{key}", np.array([np.nan if s[key] is None else s[key] for s in shells]),
                         ("shell",))
        st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})


def write_tsv(path, res) -> None:
    """One row per shell: R, N*S0^2, sigma^2, their bootstrap sds and the bootstrap support."""
    with open(Path(path), "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["shell", "R", "R_sd", "N_S02", "N_S02_sd", "sigma2", "sigma2_sd", "support"])
        for i, s in enumerate(res.shells, 1):
            w.writerow([i] + [f"{v:.6g}" for v in (s.r, s.r_sd, s.n, s.n_sd, s.sigma2, s.sigma2_sd, s.support)])


def plot(path, res, r, mag_data, mag_fit, scan_id: str, pair: str) -> None:
    """k^w chi(k) with the fit; the CV curve; the coefficient map over R against |chi(R)|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(res.k, res.y, "k-", lw=1, label="data")
    ax.plot(res.k, res.fit, "r-", lw=1, label="sparse model")
    ax.set_xlabel("k (1/A)")
    ax.set_ylabel(f"k^{res.basis.kweight:g} chi(k)")
    ax.set_title(f"{scan_id}: {pair}, dE0 = {res.de0:.1f} eV")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.errorbar(res.alphas, res.cv_mean, yerr=res.cv_se, fmt=".-", color="0.3", ms=3)
    ax.axvline(res.alpha, color="r", lw=1, label=f"selected alpha = {res.alpha:.2g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha")
    ax.set_ylabel("held-out MSE (contiguous k folds)")
    ax.legend(fontsize=8)
    ax = axes[2]
    w = res.coef_map.sum(axis=1)
    nz = w > 0
    ax.vlines(res.basis.r_grid[nz], 0, w[nz], color="C0", lw=2, label="N S0^2 per grid point")
    for s in res.shells:
        ax.annotate(f"{s.r:.2f}", (s.r, s.n), fontsize=7, ha="center", va="bottom")
    ax.set_xlabel("R (A)")
    ax.set_ylabel("N S0^2")
    ax2 = ax.twinx()
    ax2.plot(r, mag_data, "k-", lw=0.8, label="|chi(R)| data (no phase correction)")
    ax2.plot(r, mag_fit, "r--", lw=0.8, label="|chi(R)| model")
    ax2.set_ylabel("|chi(R)|")
    ax.set_xlim(0, r[-1])
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
