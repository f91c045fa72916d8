"""The posterior product: Bayesian spectral decomposition of one normalized XANES scan or 1-D spectrum.

Kind ``xanes``: model ``xanes`` by default, fitted over E0 + ``fit_range`` (eV
relative to E0). Kind ``spectrum``: model ``peaks`` (K Gaussians, Nagata et al.
2012) by default and only, fitted over ``fit_range`` in absolute x (null: the
whole spectrum), with default priors scaled to the data
(:func:`xafsflow.bayes.models.peaks_default_priors`); configured priors
override them family by family.

Science in :mod:`xafsflow.bayes` (no I/O); this module reads the scan store,
runs :func:`xafsflow.bayes.posterior.analyse` and writes the product's store,
TSV and PNG, and tells the workflow what it needs (registry entry, parameter
checks before any job runs, summary fields).
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError, InputError
from xafsflow.io import store as st
from xafsflow.products import Product

PRODUCT = Product(
    name="posterior",
    directory="posterior",
    kinds=("xanes", "spectrum"),
    params_key="posterior",
    summary_fields=("K", "P_K", "sigma", "max_rhat", "min_exchange", "centroid"),
    description="Bayesian spectral decomposition of a normalized XANES scan or a 1-D spectrum (replica exchange, "
                "free energy)",
    module=__name__,
    kind_defaults={"spectrum": {"model": "peaks", "fit_range": None}},
    kind_schema={"spectrum": {
        "model": {"enum": ["peaks"], "description": "peaks: K Gaussians a exp(-b (x - mu)^2 / 2) (a spectrum has no "
                                                    "edge for the xanes model)"},
        "fit_range": {"type": ["array", "null"],
                      "description": "Fitted x range, absolute (in the spectrum's x units, not relative to an edge); "
                                     "null fits the whole spectrum."},
    }},
)
# kinds whose fit_range is relative to the edge energy E0 (the others' is absolute in x)
_EDGE_KINDS = ("xanes", "exafs")



def add_arguments(p) -> None:
    """Options of ``xafsflow posterior`` beyond the common ones."""
    p.add_argument("--checkpoint-dir", default=None, help="where chains checkpoint (kept until the product is complete)")


def spec_from_params(p: dict, e0: float | None):
    """A :class:`~xafsflow.bayes.posterior.PosteriorSpec` from the validated ``posterior`` block."""
    from xafsflow.bayes.posterior import Convergence, LadderTuning, PosteriorSpec

    return PosteriorSpec(model=p["model"], k_min=p["k_min"], k_max=p["k_max"], replicas=p["replicas"],
                         runs=p["runs"], sigma=p["sigma"], ladder=p["ladder"], b_max_factor=p["b_max_factor"],
                         settings=chain_settings(p), priors=p.get("priors") or {}, e0=e0,
                         tuning=LadderTuning(**p["tuning"]), convergence=Convergence(**p["convergence"]),
                         k_limit=p["k_limit"], expand_p=p["expand_p"], mode_starts=p["mode_starts"],
                         resolution=p["preedge"]["resolution"])


def chain_settings(p: dict):
    """The sampler's :class:`~xafsflow.bayes.remc.ChainSettings`; an AnalysisInputError if inconsistent."""
    from xafsflow.bayes.settings import ChainSettings

    settings = ChainSettings(sweeps=p["sweeps"], burn_in=p["burn_in"], thin=p["thin"], block=p["block"],
                             adapt_every=p["block"], target_acceptance=p["target_acceptance"],
                             linear_moves=p["linear_moves"],
                             checkpoint_every=p["checkpoint_every"])
    try:
        settings.check()
    except ValueError as exc:
        raise AnalysisInputError(f"posterior settings: {exc}") from None
    return settings


def check(params: dict, n_points: int | None = None) -> list[str]:
    """Problems with a resolved ``posterior`` block, found without running anything.

    Parameters
    ----------
    params : dict
        The validated ``posterior`` block of one scan.
    n_points : int, optional
        Data rows of the scan's raw file, when it exists: an upper bound on the
        points in the fitted range, so a k_min no spectrum of this file can
        support is refused before any job runs (a k_max beyond the points is
        lowered by the analysis, recorded in the store as ``k_max_by_points``).

    Returns
    -------
    list of str
        One message per problem, in the words the job itself would use.
    """
    from xafsflow.bayes.models import check_priors
    from xafsflow.bayes.posterior import points_problem

    problems = []
    try:
        chain_settings(params)
    except AnalysisInputError as exc:
        problems.append(exc.reason)
    if params["k_min"] > params["k_max"]:
        problems.append(f"K range [{params['k_min']}, {params['k_max']}] is empty (k_min > k_max)")
    block = params["block"]
    for key in ("tuning.sweeps", "tuning.warmup", "convergence.max_sweeps"):
        sect, name = key.split(".")
        if params[sect][name] % block:
            problems.append(f"{key} ({params[sect][name]}) must be a multiple of block ({block})")
    if params["convergence"]["max_sweeps"] < params["sweeps"]:
        problems.append(f"convergence.max_sweeps ({params['convergence']['max_sweeps']}) is below sweeps "
                        f"({params['sweeps']})")
    for key, rng in (("fit_range", params["fit_range"]), ("preedge.fit_range", params["preedge"]["fit_range"])):
        if rng is not None and not rng[0] < rng[1]:
            problems.append(f"{key} [{rng[0]}, {rng[1]}] is not ordered (start below end)")
    if params["ladder"] is not None and params["sigma"] is not None:
        top = max(params["ladder"])
        if abs(top * params["sigma"] ** 2 - 1.0) > 1e-9:
            problems.append(f"with a fixed sigma the ladder must end at 1/sigma^2 = {1 / params['sigma'] ** 2:g}")
    try:
        check_priors(params["model"], params.get("priors") or {})
    except InputError as exc:
        problems.append(exc.reason)
    problem = None if n_points is None else points_problem(n_points, params["model"], params["k_min"])
    if problem:  # a k_max beyond the points is lowered by the analysis
        problems.append(problem)
    return problems


def fitted_data(scan_store, fit_range) -> tuple[np.ndarray, np.ndarray, float | None, str]:
    """(x, normalized y) over the fitted range, E0 (None for a spectrum) and the raw file name.

    XANES: E0 + fit_range (eV). Spectrum: fit_range in absolute x, or the whole spectrum when None.
    """
    g = st.open_store(scan_store)
    attrs = dict(g.attrs)
    src = next(iter(attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})), str(scan_store))
    kind = attrs.get("kind")
    if kind not in _EDGE_KINDS + ("spectrum",):
        raise AnalysisInputError(f"the posterior product needs a XANES scan or a spectrum, this is {kind!r}", src)
    e = g["energy"][...]
    y = g["norm"][...]
    unit = dict(g["energy"].attrs).get("units", "eV")
    e0 = float(attrs["e0"]) if kind in _EDGE_KINDS else None
    if fit_range is None:
        return e, y, e0, src
    lo, hi = (e0 + fit_range[0], e0 + fit_range[1]) if e0 is not None else (fit_range[0], fit_range[1])
    m = (e >= lo) & (e <= hi)
    if m.sum() == 0:
        raise AnalysisInputError(f"no data points in the fitted range [{lo:.6g}, {hi:.6g}] ({unit}; data from "
                                 f"{e[0]:.6g} to {e[-1]:.6g})", src)
    return e[m], y[m], e0, src


def point_uncertainty(scan_store, x: np.ndarray) -> np.ndarray:
    """The store's per-point uncertainty ``norm_sd`` at the fitted energies ``x`` (an error if it has none).

    Used as likelihood weights 1 / norm_sd when ``uncertainty_weights`` is set.
    """
    g = st.open_store(scan_store)
    attrs = dict(g.attrs)
    src = next(iter(attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})), str(scan_store))
    if "norm_sd" not in g:
        raise AnalysisInputError("uncertainty_weights: true needs a per-point uncertainty norm_sd in the store "
                                 "(a grain spectrum of the segment product has one); set it to false", src)
    e = g["energy"][...]
    sd = np.asarray(g["norm_sd"][...], float)
    idx = np.searchsorted(e, x)
    if np.any(idx >= e.size) or not np.array_equal(e[np.minimum(idx, e.size - 1)], x):
        raise AnalysisInputError("norm_sd: the fitted energies are not points of the store's energy axis", src)
    sd = sd[idx]
    bad = ~np.isfinite(sd) | (sd <= 0)
    if bad.any():
        raise AnalysisInputError(f"norm_sd: {int(bad.sum())} point(s) in the fitted range have no positive "
                                 f"uncertainty (first at {x[int(np.argmax(bad))]:.6g})", src)
    return sd


def preedge_window(scan_store, pe: dict) -> tuple[float, float, str]:
    """The pre-edge model's fitted range (eV) and how it was set.

    ``pe`` is the ``preedge`` block: ``fit_range`` relative to the tabulated edge
    energy of the scan's element and edge (``reference: tabulated``; a wide white
    line moves the fitted E0 away from the pre-edge, the table does not) or
    absolute (``reference: absolute``).
    """
    ref, note = _preedge_reference(scan_store, pe)
    lo, hi = pe["fit_range"]
    return ref + float(lo), ref + float(hi), note


def centroid_window(scan_store, pe: dict) -> tuple[float, float]:
    """The energy range (eV) whose components make the pre-edge centroid and intensity
    (``preedge.centroid_window``, on the same reference as ``fit_range``)."""
    ref, _ = _preedge_reference(scan_store, pe)
    lo, hi = pe["centroid_window"]
    return ref + float(lo), ref + float(hi)


def _preedge_reference(scan_store, pe: dict) -> tuple[float, str]:
    """(energy the pre-edge ranges are relative to, how it was set): the tabulated edge, or 0 (absolute)."""
    from xafsflow.steps import tabulated_edge

    if pe["reference"] == "absolute":
        return 0.0, "absolute"
    attrs = dict(st.open_store(scan_store).attrs)
    src = next(iter(attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})), str(scan_store))
    edge = str(attrs.get("edge") or "")
    if edge and edge.upper() != "K":
        raise AnalysisInputError(
            f"the preedge model's fit range is relative to the tabulated K edge (the 1s -> 3d pre-edge of K-edge "
            f"XANES), but this scan's edge is {edge}: use it on K-edge scans, or set preedge.reference: absolute "
            "with fit_range in eV if a component decomposition of this range is really meant", src)
    tab = tabulated_edge(attrs.get("element"), attrs.get("edge"))
    if tab is None:
        raise AnalysisInputError(
            f"the preedge model's fit range is relative to the tabulated edge, but element/edge "
            f"({attrs.get('element')!r}, {attrs.get('edge')!r}) give none: set element and edge in the scan sheet "
            "or use preedge.reference: absolute", src)
    return float(tab), f"{attrs['element']} {attrs['edge']} tabulated edge {tab:.1f} eV"


def fitted_window(scan_store, p: dict):
    """(x, y, E0, raw file, range note) the model of the ``posterior`` block ``p`` is fitted to."""
    if p["model"] != "preedge":
        x, y, e0, src = fitted_data(scan_store, p["fit_range"])
        return x, y, e0, src, None
    lo, hi, note = preedge_window(scan_store, p["preedge"])
    x, y, e0, src = fitted_data(scan_store, None)
    m = (x >= lo) & (x <= hi)
    if m.sum() == 0:
        raise AnalysisInputError(f"no data points in the pre-edge range [{lo:.6g}, {hi:.6g}] eV ({note}; data "
                                 f"from {x[0]:.6g} to {x[-1]:.6g})", src)
    return x[m], y[m], e0, src, f"[{lo:.2f}, {hi:.2f}] eV ({note})"


def model_priors(p: dict, x: np.ndarray, y: np.ndarray, kind: str) -> dict:
    """The priors given to the model: for a spectrum, defaults scaled to the data, then the config's by family."""
    given = p.get("priors") or {}
    if kind in _EDGE_KINDS:
        return dict(given)  # the xanes and preedge models build their own defaults from the fitted range
    from xafsflow.bayes.models import peaks_default_priors

    return {**peaks_default_priors(x, y), **given}


def quality_flags(res, q: dict, spec=None, x=None) -> list[str]:
    """The product's flags for ``summary.tsv`` (thresholds from the ``quality`` block).

    With ``spec`` and ``x`` given, a ``preedge`` fit whose selected components
    include one with its median centre within ``range_end_margin`` eV of either
    end of the fitted range is flagged: such a component models the edge onset
    (or the range cut), not a pre-edge transition, and moves the centroid.
    """
    flags = []
    ent = res.per_k[res.k_selected]
    p_sel = float(res.p_k[res.ks.index(res.k_selected)])
    if p_sel < q["min_p_k"]:
        flags.append(f"uncertain_K(P={p_sel:.2f})")
    rh = np.nanmax(ent["rhat"]) if np.any(np.isfinite(ent["rhat"])) else np.nan
    if np.isfinite(rh) and rh > q["max_rhat"]:
        flags.append(f"high_rhat({rh:.2f})")
    mex = float(np.min(ent["exchange_rate"]))
    if mex < q["min_exchange"]:
        flags.append(f"low_exchange({mex:.2f})")
    spread = ent.get("F_spread", 0.0)
    if spread > q["max_f_spread"]:
        flags.append(f"runs_disagree(dF={spread:.1f})")
    if res.noise is not None and res.noise["at_ladder_edge"]:
        flags.append("sigma_at_ladder_edge")
    if q["k_at_limit"] and res.k_selected == max(res.ks):
        flags.append(f"k_at_limit(K={res.k_selected})")
    end = _component_at_range_end(ent, spec, x, res.k_selected, q["range_end_margin"]) if spec is not None else None
    if end is not None:
        flags.append(f"component_at_range_end({end:.1f})")
    if spec is not None and spec.model == "preedge" and spec.centroid_window is not None:
        if np.all(np.isnan(_preedge_draws(ent, spec)[1])):  # no centroid to report: say so, not just "nan"
            flags.append("no_component_in_centroid_window")
    conv = ent.get("convergence")
    if conv is not None and not conv["converged"] and conv.get("enabled", True):
        flags.append(f"not_converged({','.join(conv['failing'])} after {conv['sweeps']} sweeps)")
    return flags


def _component_at_range_end(ent: dict, spec, x, K: int, margin: float) -> float | None:
    """Median centre (eV) of a pre-edge component within ``margin`` of the range ends, else None."""
    if spec.model != "preedge" or margin <= 0 or K == 0:
        return None
    model = spec.build(K, x)
    lo, hi = float(x[0]), float(x[-1])
    flat = np.asarray(ent["samples"]).reshape(-1, model.n_params)
    centres = np.median(flat[:, model.nb + 1::3], axis=0)
    near = [c for c in centres if c - lo < margin or hi - c < margin]
    return float(near[0]) if near else None


def run(args) -> str:
    """``xafsflow posterior``: analyse one scan store and write its store, TSV and PNG."""
    from xafsflow.products._common import load_params, scan_kind

    attrs = dict(st.open_store(args.scan_store).attrs)
    params = load_params(args, scan_kind(PRODUCT, attrs, args.scan_store))
    res = run_posterior(args.scan_store, args.out, args.tsv, args.png, params,
                        args.scan_id or attrs.get("scan_id", "scan"), args.seed, threads=args.threads,
                        mem_mb=args.mem_mb, params_hash=args.params_hash, checkpoint_dir=args.checkpoint_dir,
                        dashboard=args.dashboard)
    return f"posterior: K = {res.k_selected} (P = {res.p_k[res.ks.index(res.k_selected)]:.3f}) -> {args.out}"


def summary(attrs: dict) -> dict:
    """Summary fields (without the ``posterior.`` prefix) and flags from the store's attributes."""
    sig = attrs.get("sigma_hat", attrs.get("sigma_fixed"))
    return {
        "K": attrs.get("k_selected", ""),
        "P_K": _fmt(attrs.get("p_k_selected"), ".3f"),
        "sigma": _fmt(sig, ".4g"),
        "max_rhat": _fmt(attrs.get("max_rhat"), ".3f"),
        "min_exchange": _fmt(attrs.get("min_exchange_rate"), ".3f"),
        "centroid": _fmt((attrs.get("preedge_centroid") or {}).get("median"), ".2f"),
        "flags": list(attrs.get("flags") or []),
    }


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def run_posterior(scan_store, out, tsv, png, params: dict, scan_id: str, campaign_seed: int,
                  threads: int = 1, mem_mb: int = 2000, params_hash: str | None = None,
                  checkpoint_dir: str | Path | None = None, dashboard: bool = False):
    """Analyse one scan and write ``out`` (Zarr), ``tsv`` and ``png``; returns the PosteriorResult."""
    from xafsflow.bayes.posterior import analyse

    p = params["posterior"]
    kind = dict(st.open_store(scan_store).attrs).get("kind")
    x, y, e0, src, window = fitted_window(scan_store, p)
    try:
        spec = spec_from_params(dict(p, priors=model_priors(p, x, y, kind)), e0)
    except InputError as exc:
        raise AnalysisInputError(exc.reason, src) from None
    if spec.model == "preedge":
        spec = dataclasses.replace(spec, centroid_window=centroid_window(scan_store, p["preedge"]))
    x_label = _x_label(scan_store)
    weights = 1.0 / point_uncertainty(scan_store, x) if p.get("uncertainty_weights") else None

    def progress(message):
        print(f"posterior {scan_id}: {message}", file=sys.stderr, flush=True)

    if threads > 1:
        from xafsflow.distributed import client

        with client(threads, mem_mb, dashboard=dashboard) as c:
            res = analyse(x, y, spec, campaign_seed, scan_id, client=c, checkpoint_dir=checkpoint_dir, source=src,
                          progress=progress, weights=weights)
    else:
        res = analyse(x, y, spec, campaign_seed, scan_id, checkpoint_dir=checkpoint_dir, source=src,
                      progress=progress, weights=weights)
    flags = quality_flags(res, p["quality"], spec, x)
    write_store(out, res, x, y, e0, spec, p, scan_id, campaign_seed, params_hash, flags, scan_store, window)
    write_tsv(tsv, res, spec)
    plot_posterior(png, res, x, y, spec, scan_id, x_label)
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the product is complete
    return res


def _x_label(scan_store) -> str:
    units = dict(st.open_store(scan_store)["energy"].attrs).get("units", "eV")
    return "energy (eV)" if units == "eV" else f"x ({units})"


def write_store(out, res, x, y, e0, spec, p, scan_id, seed, params_hash, flags, scan_store, window=None):
    """The product store: per K samples, traces, rates and free energies; P(K), sigma-hat.

    Laid out for users' own tools: every coordinate array is named after its
    dimension (``energy``, ``K``, ``b_grid``), so ``xarray.open_zarr`` indexes by
    them; each ``K<k>`` group holds ``posterior`` (one (chain, draw) array per
    parameter) and ``sample_stats`` (``energy``) groups as ArviZ expects.
    """
    ks = res.ks
    sel = res.per_k[res.k_selected]
    attrs = {
        "scan_id": scan_id, "model": spec.model, "k_selected": res.k_selected,
        "p_k_selected": float(res.p_k[ks.index(res.k_selected)]), "e0": e0, "n_points": res.n_points,
        "sigma_fixed": res.sigma_fixed, "flags": flags,
        "max_rhat": float(np.nanmax(sel["rhat"])) if np.any(np.isfinite(sel["rhat"])) else None,
        "min_exchange_rate": float(np.min(sel["exchange_rate"])),
        "conventions": "E = sum((y-f)^2)/(2N); F(K,b) = -log int exp(-N b E) p(theta) dtheta; "
                       "log Z = (N/2) log(b/2pi) - F; centres ordered, prior normalized over the ordered region",
        "weighted": res.weights is not None,
        "k_max_by_points": res.k_max_by_points,
    }
    if res.weights is not None:
        attrs["conventions"] = ("weighted: y_i ~ N(f_i, sigma^2 / w_i^2), w_i = 1/norm_sd_i scaled to mean(w^2) = 1; "
                                "E = sum(w^2 (y-f)^2)/(2N); F(K,b) = -log int exp(-N b E) p(theta) dtheta; "
                                "log Z = (N/2) log(b/2pi) + sum(log w) - F; centres ordered")
        attrs["log_weight_sum"] = res.log_weight_sum
    if spec.model == "preedge":
        attrs["fit_window"] = window
        attrs["centroid_window"] = list(spec.centroid_window) if spec.centroid_window else None
        attrs.update({f"preedge_{k}": v for k, v in preedge_summary(sel, spec).items()})
    if res.noise is not None:
        attrs.update(sigma_hat=res.noise["sigma_hat"], sigma_interval_95=list(res.noise["sigma_interval"]))
    if spec.model == "peaks":  # the priors actually used (data-scaled defaults for a spectrum)
        from xafsflow.bayes.models import NAGATA_PRIORS

        attrs["priors"] = {**NAGATA_PRIORS, **spec.priors}
    units = dict(st.open_store(scan_store)["energy"].attrs).get("units", "eV")
    prov = st.provenance("posterior", [], {"posterior": p}, seed, params_hash, [],
                         extra={"scan_store_inputs": dict(st.open_store(scan_store).attrs).get(
                             st.PROVENANCE_KEY, {}).get("raw_inputs", {}),
                             "task_seeds": {f"K{o['K']}_run{o['run']}": o["seed_entropy"]
                                            for K in ks for o in res.per_k[K]["runs"]}})
    with st.atomic_store(out) as g:
        st.put_array(g, "energy", x, ("energy",), attrs={"units": units})
        st.put_array(g, "norm", y, ("energy",))
        if res.weights is not None:
            st.put_array(g, "weights", res.weights, ("energy",),
                         attrs={"meaning": "likelihood weights w (1/norm_sd scaled to mean(w^2) = 1)"})
        st.put_array(g, "b", res.bvals, ("replica",),
                     attrs={"meaning": "starting precision ladder, b = 1/sigma^2 (each K's tuned one: K<k>/b)"})
        st.put_array(g, "K", np.array(ks), ("K",))
        for name, key in (("free_energy", "F"), ("free_energy_err", "F_err"), ("log_evidence", "log_z"),
                          ("log_evidence_err", "log_z_err")):
            st.put_array(g, name, [res.per_k[K][key] for K in ks], ("K",))
        st.put_array(g, "p_K", res.p_k, ("K",))
        for K in ks:
            _write_k_group(g.create_group(f"K{K}"), K, res.per_k[K], spec)
        st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})


def _write_k_group(sub, K: int, ent: dict, spec) -> None:
    """One K: ArviZ groups (posterior, sample_stats) and the sampler's diagnostics."""
    t = ent["target_index"]
    bvals = ent["bvals"]
    post = sub.create_group("posterior")
    for j, name in enumerate(ent["names"]):
        st.put_array(post, name, ent["samples"][:, :, j], ("chain", "draw"))
    st.set_attrs(post, b=float(bvals[t]), parameters=ent["names"])
    stats = sub.create_group("sample_stats")
    thin = spec.settings.thin
    e_draws = np.stack([o["energies"][thin - 1:: thin, t][: ent["samples"].shape[1]] for o in ent["runs"]])
    st.put_array(stats, "energy", e_draws, ("chain", "draw"), attrs={"meaning": "E = SSE / 2N of each draw"})
    every = max(1, ent["runs"][0]["energies"].shape[0] // 500)
    st.put_array(sub, "energy_trace", np.stack([o["energies"][::every] for o in ent["runs"]]),
                 ("chain", "sweep", "replica"), attrs={"every": every})
    st.put_array(sub, "b", bvals, ("replica",), attrs={"meaning": "this K's precision ladder (frozen after tuning)"})
    st.put_array(sub, "acceptance", ent["acceptance"], ("replica", "parameter"))
    st.put_array(sub, "exchange_rate", ent["exchange_rate"], ("pair",))
    st.put_array(sub, "round_trips", ent["round_trips"], ("replica",))
    st.put_array(sub, "free_energy_ladder", ent["F_ladder"], ("replica",))
    st.put_array(sub, "free_energy_ladder_err", ent["F_ladder_err"], ("replica",))
    st.put_array(sub, "free_energy_ti_ladder", ent["F_ti"], ("replica",),
                 attrs={"method": "thermodynamic integration (cross-check)"})
    st.put_array(sub, "free_energy_ss_ladder", ent["F_ss"], ("replica",),
                 attrs={"method": "one-sided stepping stones (cross-check)"})
    st.put_array(sub, "free_energy_runs", ent["F_runs"][:, t], ("chain",))
    for name in ("rhat", "ess_bulk", "ess_tail"):
        st.put_array(sub, name, ent[name], ("parameter",), attrs={"parameters": ent["names"]})
    if "noise" in ent:  # its own group: a coordinate here would be inherited by posterior/ in a datatree
        noise = sub.create_group("noise")
        st.put_array(noise, "b_grid", ent["noise"]["grid"], ("b_grid",))
        st.put_array(noise, "log_evidence_b", ent["noise"]["log_evidence"], ("b_grid",))
    if spec.model == "preedge":
        derived = sub.create_group("derived")
        inten, cen = _preedge_draws(ent, spec)
        st.put_array(derived, "intensity", inten, ("chain", "draw"),
                     attrs={"meaning": "integrated pre-edge intensity, sum of component areas", "units": "eV"})
        st.put_array(derived, "centroid", cen, ("chain", "draw"),
                     attrs={"meaning": "area-weighted mean of the component centres", "units": "eV"})
    pilot = ent.get("pilot")
    if pilot is not None:
        st.put_array(sub, "pilot_exchange_rate", pilot["exchange_rate"], ("pilot_pair",),
                     attrs={"meaning": "exchange acceptance per pair in the pilot's last round"})
    conv = dict(ent.get("convergence") or {})
    st.set_attrs(sub, K=K, F=ent["F"], F_err=ent["F_err"], log_evidence=ent["log_z"],
                 target_replica=t, sigma_hat=ent.get("noise", {}).get("sigma_hat"), convergence=conv,
                 pilot_rounds=None if pilot is None else pilot["rounds"], started_from_fewer=ent.get("start") is not None)


def _preedge_draws(ent: dict, spec) -> tuple[np.ndarray, np.ndarray]:
    """(chain, draw) integrated intensity and centroid of one K's samples."""
    from xafsflow.bayes.models import PREEDGE_BG_NAMES, preedge_moments

    return preedge_moments(ent["samples"], len(PREEDGE_BG_NAMES), spec.centroid_window)


def preedge_summary(ent: dict, spec) -> dict:
    """Median and 95 % interval of the pre-edge intensity and centroid at one K."""
    out = {}
    for name, v in zip(("intensity", "centroid"), _preedge_draws(ent, spec)):
        q = np.percentile(v.ravel(), [2.5, 50, 97.5])
        out[name] = {"median": float(q[1]), "q2.5": float(q[0]), "q97.5": float(q[2]), "sd": float(np.std(v))}
    return out


def write_tsv(path, res, spec=None) -> None:
    """Median, mean, sd, 2.5/97.5 % quantiles and R-hat of every parameter at the selected K
    (for the preedge model also the integrated intensity and the centroid)."""
    from xafsflow.bayes.posterior import summarize

    ent = res.per_k[res.k_selected]
    names, samples, rhats = list(ent["names"]), ent["samples"], list(ent["rhat"])
    if spec is not None and spec.model == "preedge":
        from xafsflow.bayes.diagnostics import rank_normalized_rhat as rank_rhat

        inten, cen = _preedge_draws(ent, spec)
        samples = np.concatenate([samples, inten[..., None], cen[..., None]], axis=-1)
        names += ["intensity", "centroid"]
        rhats += [float(rank_rhat(inten)), float(rank_rhat(cen))]
    rows = summarize(samples, names)
    ent = dict(ent, rhat=rhats)
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["parameter", "median", "mean", "sd", "q2.5", "q97.5", "rhat"])
        for r, rh in zip(rows, ent["rhat"]):
            w.writerow([r["parameter"]] + [f"{r[k]:.6g}" for k in ("median", "mean", "sd", "q2.5", "q97.5")]
                       + [f"{rh:.4f}"])


def plot_posterior(path, res, x, y, spec, scan_id: str, x_label: str = "energy (eV)") -> None:
    """Data with the posterior-mean fit and components, P(K | data), and the peak positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = res.k_selected
    ent = res.per_k[K]
    model = spec.build(K, x)
    flat = ent["samples"].reshape(-1, model.n_params)
    pick = flat[:: max(1, len(flat) // 200)]
    fits = np.array([model.evaluate(x, t) for t in pick])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    ax.plot(x, y, "k.", ms=3, label="data")
    ax.plot(x, fits.mean(axis=0), "r-", lw=1.2, label="posterior mean fit")
    # posterior means of the curves, not curves at the mean parameters (the tail's height and
    # width lie on a curved ridge, so the curve at their means is off the data)
    bgc = np.mean([model.background(x, t) for t in pick], axis=0)
    if model.nb:
        ax.plot(x, bgc, "b--", lw=0.8, label="edge tail + line" if spec.model == "preedge" else "step + white line")
    for k, c in enumerate(np.mean([model.components(x, t) for t in pick], axis=0)):
        ax.plot(x, c, lw=0.8, label=f"component {k + 1}")
    ax.set_xlabel(x_label)
    ax.ticklabel_format(axis="x", useOffset=False)
    ax.locator_params(axis="x", nbins=5)
    ax.set_title(f"{scan_id}: K = {K}")
    ax.legend(fontsize=7)
    axes[1].bar(res.ks, res.p_k, color="0.4")
    axes[1].set_xlabel("K")
    axes[1].set_ylabel("P(K | data)")
    ci = [model.centre_index(k) for k in range(K)]
    for k, j in enumerate(ci):
        axes[2].hist(flat[:, j], bins=40, alpha=0.6, label=model.names[j])
    axes[2].set_xlabel("peak position")
    if spec.model == "preedge" and spec.centroid_window is not None:  # the components in centroid and intensity
        lo, hi = spec.centroid_window
        axes[0].axvspan(max(lo, x[0]), min(hi, x[-1]), color="0.9", zorder=0)
        axes[2].axvspan(lo, hi, color="0.9", zorder=0, label="centroid window")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
