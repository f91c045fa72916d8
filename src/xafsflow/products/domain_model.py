"""The domain model: a campaign-level product (TDGL ensemble, PSS, PCA, regression of alpha).

One store per campaign, ``domain-parameter/_model.zarr`` (+ ``_model.png``,
``_model.tsv``), made from the kind-level ``analysis.domain_image.domain_model``
block (sheet overrides do not apply to a campaign-wide product) and rerun only
when that block, the seed or the product version change. It holds the
ensemble's images (one chunked array, a chunk per Dask task), its parameters
(alpha, sweep rate, seeds), the statistics, and per sweep rate the
standardization, PCA and the regression of alpha on the leading PC(s) with
R^2 on the 80 % test split. The ``domain_parameters`` product applies it to
each measured image.

Science in :mod:`xafsflow.domains` (no I/O).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError
from xafsflow.io import store as st
from xafsflow.products import Product

PRODUCT = Product(
    name="domain_model",
    directory="domain-parameter",
    kinds=("domain_image",),
    params_key="domain_model",
    summary_fields=("r2_test", "n_runs"),
    description="campaign-level TDGL ensemble, texture statistics, PCA and regression of alpha (domain images)",
    module=__name__,
    campaign_level=True,
    campaign_id="_model",
    version=2,  # 2: statistics of levels s >= 1 on the subsampled pyramid's grids
)


def add_arguments(p) -> None:
    """No options beyond the common ones."""


def tdgl_base(p: dict):
    """The ensemble's shared :class:`~xafsflow.domains.tdgl.TDGLParams` (alpha set per run)."""
    from xafsflow.domains.tdgl import TDGLParams

    return TDGLParams(alpha=0.0, beta=p["beta"], gamma=p["gamma"], h0=p["h0"], n=p["grid"],
                      thickness=p["thickness"], dt=p["dt"], stabilizer=p["stabilizer"], phi_max=p["phi_max"],
                      precision=p["precision"])


def check(params: dict, n_points: int | None = None) -> list[str]:
    """Problems with a resolved ``domain_model`` block, found before any job runs."""
    problems = []
    lo, hi = params["alpha_range"]
    if not 0 < lo < hi:
        problems.append(f"alpha_range [{lo}, {hi}] must be positive and ordered")
    bound = tdgl_base(params).time_step_bound(max(lo, hi))
    if params["dt"] > bound:
        problems.append(f"dt {params['dt']} exceeds the energy-stable bound {bound:.4g} at alpha {hi} "
                        f"(1/(L/2 - c), stabilizer c = {params['stabilizer']}, phi_max {params['phi_max']}): "
                        "lower dt or raise the stabilizer")
    if params["h0"] / params["gamma"] > params["phi_max"]:
        problems.append(f"h0/gamma = {params['h0'] / params['gamma']:.3g} exceeds phi_max {params['phi_max']} "
                        "(the field alone pushes |phi| past the bound)")
    from xafsflow.domains.pss import check_image

    try:
        check_image(np.arange(params["grid"] ** 2, dtype=float).reshape(params["grid"], -1), params["scales"],
                    params["neighbourhood"])
    except ValueError as exc:
        problems.append(f"grid {params['grid']}: {exc}")
    n_train = max(3, round(params["train_fraction"] * params["n_alpha"]))
    if n_train < params["n_pcs"] + 2 or n_train >= params["n_alpha"]:
        problems.append(f"{params['n_alpha']} runs per sweep rate and train_fraction {params['train_fraction']} "
                        f"give {n_train} training runs: need at least n_pcs + 2 = {params['n_pcs'] + 2} and "
                        "some runs left to test")
    if params["n_pcs"] > params["n_components"]:
        problems.append(f"n_pcs ({params['n_pcs']}) exceeds n_components ({params['n_components']})")
    return problems


def summary(attrs: dict) -> dict:
    """R^2 (test split) of the sweep rate used for predictions, ensemble size."""
    r2 = attrs.get("r2_test_by_rate") or {}
    rate = attrs.get("prediction_rate")
    return {"r2_test": "" if rate is None else f"{r2.get(str(rate), float('nan')):.4f}",
            "n_runs": attrs.get("n_runs", ""), "flags": list(attrs.get("flags") or [])}


def run(args) -> str:
    """``xafsflow domain_model``: simulate the ensemble, fit the models, write store, TSV and PNG."""
    from xafsflow.products._common import load_params

    params = load_params(args, "domain_image")
    problems = check(params[PRODUCT.params_key])
    if problems:
        raise AnalysisInputError("domain_model: " + "; ".join(problems), "configuration")
    res = build_model(params[PRODUCT.params_key], args.seed, args.out, args.tsv, args.png, threads=args.threads,
                      mem_mb=args.mem_mb, params_hash=args.params_hash, dashboard=args.dashboard)
    return (f"domain_model: {res['n_runs']} runs, R^2 (test) by sweep rate "
            + ", ".join(f"{k}: {v:.3f}" for k, v in res["r2_test_by_rate"].items()) + f" -> {args.out}")


def build_model(p: dict, seed: int, out, tsv, png, threads: int = 1, mem_mb: int = 2000,
                params_hash: str | None = None, dashboard: bool = False) -> dict:
    """Simulate, compute statistics, fit one model per sweep rate; write ``out`` (Zarr), ``tsv``, ``png``."""
    from xafsflow.domains import pss, regression, tdgl
    from xafsflow.domains.prepare import normalize_contrast
    from xafsflow.seeds import rng

    alphas = np.linspace(p["alpha_range"][0], p["alpha_range"][1], p["n_alpha"])
    images, prm = tdgl.ensemble(alphas, p["sweep_rates"], tdgl_base(p), seed, runs_per_task=p["runs_per_task"])
    opts = dict(scales=p["scales"], orientations=p["orientations"], neighbourhood=p["neighbourhood"])
    # statistics per chunk, beside the images: the same tasks feed both
    stats = images.map_blocks(lambda b: pss.pss(normalize_contrast(b, p["percentiles"]), **opts),
                              drop_axis=[1, 2], new_axis=[1], dtype=np.float64,
                              chunks=(images.chunks[0], (len(pss.statistic_names(**opts)),)))
    with st.atomic_store(out) as g:
        target = st.create_array(g, "images", images.shape, np.float32, ("run", "y", "x"),
                                 (1, images.shape[1], images.shape[2]),  # one image a chunk: tasks never share one
                                 attrs={"meaning": "TDGL phi at h = 0 (end of the sweep)"})
        stat_arr = np.empty(stats.shape)
        _compute(images, target, stats, stat_arr, threads, mem_mb, dashboard)
        models = regression.fit_per_sweep_rate(stat_arr, prm["alpha"], prm["v"], p["train_fraction"],
                                               p["n_pcs"], p["n_components"], rng(seed, "domain_model", "split"))
        write_model(g, p, prm, stat_arr, models, opts, seed, params_hash)
    rates = sorted(models)
    write_tsv(tsv, models)
    plot_model(png, prm, stat_arr, models)
    return {"n_runs": int(prm["alpha"].size), "r2_test_by_rate": {r: models[r].r2_test for r in rates}}


def _compute(images, target, stats, stat_arr, threads, mem_mb, dashboard) -> None:
    import dask.array as da

    if threads > 1:
        from xafsflow.distributed import client

        with client(threads, mem_mb, dashboard=dashboard):
            stat_arr[...] = da.compute(da.store(images, target, lock=False, compute=False), stats)[1]
    else:
        stat_arr[...] = da.compute(da.store(images, target, lock=False, compute=False), stats,
                                   scheduler="synchronous")[1]


def write_model(g, p, prm, stat_arr, models, opts, seed, params_hash) -> None:
    """Parameters, statistics and each sweep rate's model into the open store ``g``."""
    from xafsflow.domains.pss import statistic_groups, statistic_names

    st.put_array(g, "alpha", prm["alpha"], ("run",))
    st.put_array(g, "sweep_rate", prm["v"], ("run",))
    st.put_array(g, "statistics", stat_arr, ("run", "statistic"),
                 attrs={"names": statistic_names(**opts), "groups": statistic_groups(**opts)})
    rates = sorted(models)
    for rate in rates:
        m = models[rate]
        sub = g.create_group(f"rate_{rate:g}")
        st.put_array(sub, "mean", m.mean, ("statistic",))
        st.put_array(sub, "scale", m.scale, ("statistic",))
        st.put_array(sub, "components", m.components, ("component", "statistic"))
        st.put_array(sub, "explained", m.explained, ("component",))
        st.put_array(sub, "coef", m.coef, ("coefficient",), attrs={"meaning": "intercept, then one slope per PC"})
        st.put_array(sub, "xtx_inv", m.xtx_inv, ("coefficient", "coefficient2"))
        st.put_array(sub, "train", m.train, ("train",))
        st.put_array(sub, "test", m.test, ("test",))
        st.set_attrs(sub, sweep_rate=rate, n_pcs=m.n_pcs, resid_sd=m.resid_sd, dof=m.dof, r2_test=m.r2_test,
                     r2_train=m.r2_train)
    slowest = min(rates)
    flags = [f"low_r2({r:g}: {models[r].r2_test:.2f})" for r in rates if models[r].r2_test < 0.9]
    prov = st.provenance("domain_model", [], {"domain_model": p}, seed, params_hash, [],
                         extra={"task_seeds": prm["seed_entropy"]})
    st.set_attrs(g, n_runs=int(prm["alpha"].size), sweep_rates=rates, prediction_rate=slowest,
                 r2_test_by_rate={f"{r}": models[r].r2_test for r in rates}, pss=opts, percentiles=p["percentiles"],
                 n_pcs=p["n_pcs"], grid=p["grid"], flags=flags,
                 regression=("alpha ~ PC1" if p["n_pcs"] == 1 else f"alpha ~ PC1..PC{p['n_pcs']}")
                 + f", trained on {p['train_fraction']:.0%} of each sweep rate's runs, R^2 on the rest",
                 **{st.PROVENANCE_KEY: prov})


def load_models(store) -> tuple[dict, dict]:
    """(``{sweep rate: DomainModel}``, store attributes) of a model store."""
    from xafsflow.domains.regression import DomainModel

    g = st.open_store(store)
    attrs = dict(g.attrs)
    models = {}
    for rate in attrs["sweep_rates"]:
        sub = g[f"rate_{rate:g}"]
        a = dict(sub.attrs)
        models[float(rate)] = DomainModel(
            mean=sub["mean"][...], scale=sub["scale"][...], components=sub["components"][...],
            explained=sub["explained"][...], n_pcs=a["n_pcs"], coef=sub["coef"][...], xtx_inv=sub["xtx_inv"][...],
            resid_sd=a["resid_sd"], dof=a["dof"], r2_test=a["r2_test"], r2_train=a["r2_train"],
            train=sub["train"][...], test=sub["test"][...])
    return models, attrs


def write_tsv(path, models) -> None:
    """One row per sweep rate: R^2 on the test and training splits, sizes, PC1's share of the variance."""
    with open(Path(path), "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["sweep_rate", "r2_test", "r2_train", "n_train", "n_test", "n_pcs", "pc1_explained"])
        for rate in sorted(models):
            m = models[rate]
            w.writerow([f"{rate:g}", f"{m.r2_test:.4f}", f"{m.r2_train:.4f}", len(m.train), len(m.test), m.n_pcs,
                        f"{m.explained[0]:.4f}"])


def plot_model(path, prm, stat_arr, models) -> None:
    """PC1 against alpha for each sweep rate, the fitted line, train and test runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted(models)
    fig, axes = plt.subplots(1, len(rates), figsize=(4.5 * len(rates), 4), squeeze=False)
    for ax, rate in zip(axes[0], rates):
        m = models[rate]
        sel = np.flatnonzero(prm["v"] == rate)
        pcs = m.scores(stat_arr[sel])
        a = prm["alpha"][sel]
        ax.plot(pcs[m.test, 0], a[m.test], "o", mfc="none", color="0.4", label="test runs")
        ax.plot(pcs[m.train, 0], a[m.train], "o", color="C3", label="training runs")
        if m.n_pcs == 1:
            xs = np.linspace(pcs[:, 0].min(), pcs[:, 0].max(), 50)
            ax.plot(xs, m.coef[0] + m.coef[1] * xs, "C0-", label="alpha ~ PC1")
        ax.set_xlabel(f"PC1 ({m.explained[0]:.0%} of the variance)")
        ax.set_ylabel("alpha")
        ax.set_title(f"sweep rate {rate:g}: R$^2$ (test) = {m.r2_test:.3f}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
