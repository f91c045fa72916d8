"""The domain-parameter product: alpha of one measured domain image, from the campaign's domain model.

The image (its scan store) is brought to the simulation's terms
(:func:`xafsflow.domains.prepare.prepare_image`: pixel size against the
simulation's length unit, optional background flattening, centred crop,
robust-percentile contrast to -1..1), its Portilla-Simoncelli statistics are
computed with the model's settings and projected on each sweep rate's PCA;
alpha and its prediction interval come from each rate's regression, the
headline (summary) from the model's prediction rate (the slowest sweep).

Writes ``<scan_id>.zarr`` (prepared image, statistics, scores, predictions),
``<scan_id>.tsv`` (one row per sweep rate) and ``<scan_id>.png`` (the image
and its place among the ensemble on PC1-PC2).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError
from xafsflow.io import store as st
from xafsflow.products import Product

PRODUCT = Product(
    name="domain_parameters",
    directory="domain-parameter",
    kinds=("domain_image",),
    params_key="domain_parameters",
    summary_fields=("alpha", "alpha_low", "alpha_high", "pc1", "sweep_rate"),
    description="anisotropy parameter alpha of a domain image from the campaign's TDGL/PSS/PCA model",
    module=__name__,
    version=2,  # 2: statistics of levels s >= 1 on the subsampled pyramid's grids
)


def add_arguments(p) -> None:
    """The campaign's model store."""
    p.add_argument("--model", required=True, help="the campaign's domain model store (domain-parameter/_model.zarr)")


def check(params: dict, n_points: int | None = None) -> list[str]:
    """Problems with a resolved ``domain_parameters`` block, found before any job runs.

    A missing ``length_unit_um`` is not one of them: it fails each image's job
    (listed in the summary) so that the rest of a campaign still runs.
    """
    problems = []
    if params["background_sigma"] is not None and params["background_sigma"] <= 0:
        problems.append("background_sigma must be positive (or null for no flattening)")
    return problems


def summary(attrs: dict) -> dict:
    """alpha, its interval and PC1 at the model's prediction rate."""
    def f(key):
        v = attrs.get(key)
        return "" if v is None else f"{v:.4g}"

    return {"alpha": f("alpha"), "alpha_low": f("alpha_low"), "alpha_high": f("alpha_high"), "pc1": f("pc1"),
            "sweep_rate": f("prediction_rate"), "flags": list(attrs.get("flags") or [])}


def run(args) -> str:
    """``xafsflow domain_parameters``: alpha of one domain image."""
    from xafsflow.products._common import load_params, scan_kind

    attrs = dict(st.open_store(args.scan_store).attrs)
    params = load_params(args, scan_kind(PRODUCT, attrs, args.scan_store))
    res = estimate(args.scan_store, args.model, args.out, args.tsv, args.png, params[PRODUCT.params_key],
                   args.scan_id or attrs.get("scan_id", "scan"), args.seed, args.params_hash)
    return (f"domain_parameters: alpha = {res['alpha']:.3f} [{res['alpha_low']:.3f}, {res['alpha_high']:.3f}] "
            f"-> {args.out}")


def estimate(scan_store, model_store, out, tsv, png, p: dict, scan_id: str, seed: int | None = None,
             params_hash: str | None = None) -> dict:
    """Prepare the image, predict alpha with every sweep rate's model, write store, TSV and PNG."""
    from xafsflow.domains.prepare import prepare_image
    from xafsflow.domains.pss import pss
    from xafsflow.products.domain_model import load_models

    g = st.open_store(scan_store)
    attrs = dict(g.attrs)
    src = next(iter(attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})), str(scan_store))
    models, mattrs = load_models(model_store)
    opts = mattrs["pss"]
    if p["length_unit_um"] is None:
        raise AnalysisInputError("the image's scale cannot be matched: set analysis.domain_image."
                                 "domain_parameters.length_unit_um (micrometres per simulation grid spacing)", src)
    try:
        img, record = prepare_image(g["image"][...], attrs.get("pixel_size_um"), p["length_unit_um"], opts["scales"],
                                    tuple(mattrs["percentiles"]), p["background_sigma"])
        stats = pss(img, **opts)
    except ValueError as exc:
        raise AnalysisInputError(f"domain image: {exc}", src) from None
    rates = sorted(models)
    preds = {r: models[r].predict(stats[None], interval_level=p["interval_level"]) for r in rates}
    rate = float(mattrs["prediction_rate"])
    head = preds[rate]
    flags = []
    lo_a, hi_a = _alpha_span(model_store)
    if not lo_a <= head["alpha"][0] <= hi_a:
        flags.append(f"alpha_outside_ensemble({head['alpha'][0]:.2f} not in [{lo_a:g}, {hi_a:g}])")
    res = {"alpha": float(head["alpha"][0]), "alpha_low": float(head["low"][0]), "alpha_high": float(head["high"][0]),
           "pc1": float(head["scores"][0, 0]), "prediction_rate": rate}
    prov = st.provenance("domain_parameters", [], {"domain_parameters": p}, seed, params_hash, [],
                         extra={"prepare": record, "model_store": str(model_store),
                                "model_provenance": mattrs.get(st.PROVENANCE_KEY, {}).get("config_hash"),
                                "scan_store_inputs": attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})})
    with st.atomic_store(out) as og:
        st.put_array(og, "image", img, ("y", "x"), attrs={"meaning": "prepared image (simulation terms, -1..1)"})
        st.put_array(og, "statistics", stats, ("statistic",))
        st.put_array(og, "sweep_rate", np.array(rates), ("sweep_rate",))
        st.put_array(og, "alpha_by_rate", np.array([preds[r]["alpha"][0] for r in rates]), ("sweep_rate",))
        st.put_array(og, "interval_by_rate", np.array([[preds[r]["low"][0], preds[r]["high"][0]] for r in rates]),
                     ("sweep_rate", "bound"), attrs={"level": p["interval_level"]})
        st.put_array(og, "scores_by_rate", np.array([preds[r]["scores"][0] for r in rates]),
                     ("sweep_rate", "component"))
        st.set_attrs(og, scan_id=scan_id, flags=flags, interval_level=p["interval_level"], **res,
                     **{st.PROVENANCE_KEY: prov})
    write_tsv(tsv, rates, preds, models)
    plot_image(png, img, model_store, models[rate], head, scan_id, rate)
    return res


def _alpha_span(model_store) -> tuple[float, float]:
    a = st.open_store(model_store)["alpha"][...]
    return float(a.min()), float(a.max())


def write_tsv(path, rates, preds, models) -> None:
    """One row per sweep rate: alpha, its interval, the PC scores and the model's R^2."""
    n_comp = preds[rates[0]]["scores"].shape[1]
    with open(Path(path), "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["sweep_rate", "alpha", "alpha_low", "alpha_high", "r2_test"]
                   + [f"pc{i + 1}" for i in range(n_comp)])
        for r in rates:
            pr = preds[r]
            w.writerow([f"{r:g}", f"{pr['alpha'][0]:.5g}", f"{pr['low'][0]:.5g}", f"{pr['high'][0]:.5g}",
                        f"{models[r].r2_test:.4f}"] + [f"{x:.5g}" for x in pr["scores"][0]])


def plot_image(path, img, model_store, model, head, scan_id, rate) -> None:
    """The prepared image, and its PC1-PC2 scores among the ensemble's runs (coloured by alpha)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = st.open_store(model_store)
    sel = np.flatnonzero(g["sweep_rate"][...] == rate)
    ens = model.scores(g["statistics"][...][sel])
    alpha = g["alpha"][...][sel]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    axes[0].imshow(img, cmap="gray", vmin=-1, vmax=1)
    axes[0].set_title(f"{scan_id} (prepared)")
    axes[0].axis("off")
    sc = axes[1].scatter(ens[:, 0], ens[:, 1], c=alpha, cmap="viridis", s=18)
    fig.colorbar(sc, ax=axes[1], label="alpha (ensemble)")
    axes[1].plot(head["scores"][0, 0], head["scores"][0, 1], "r*", ms=16,
                 label=f"{scan_id}: alpha {head['alpha'][0]:.2f} [{head['low'][0]:.2f}, {head['high'][0]:.2f}]")
    axes[1].set_xlabel("PC1")
    axes[1].set_ylabel("PC2")
    axes[1].set_title(f"among the ensemble (sweep rate {rate:g})")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
