"""The segment product: hidden Potts MRF grain segmentation of a normalized micro-XAFS stack.

Reads the normalized scan store (``norm`` (energy, y, x), ``edge_step`` (y, x),
attribute ``e0``), computes per-pixel features
(:mod:`xafsflow.imaging.features`) chunk by chunk, compares C classes over a
range and fits the chosen C (:mod:`xafsflow.imaging.mrf`), then writes
``<scan_id>.mrf.zarr`` (labels, class probabilities chunked like the map,
grains, features, parameters, the C curve, provenance), ``<scan_id>.mrf.tsv``
(one row per grain: connected region of one class at or above
``min_grain_area`` pixels) and ``<scan_id>.mrf.png``.

Per-grain spectroscopy (``grains`` block, :mod:`xafsflow.imaging.grain_spectra`)
runs inside this job, after the segmentation: the number of grains is known
only then, and each grain's posterior takes about a second, far less than a
Snakemake job's start-up, so one job per stack analyses all its grains, one
after the other, or one Dask task per grain when the job has a client
(``threads`` > 1). Each grain's chains have their own random streams (keyed by
scan id and grain id), so the result is the same either way. The grain
spectra are written under ``grain_spectra/g<id>`` of the store as spectra the
posterior product can take (``energy``, ``norm``, ``norm_sd``, attributes
``kind``, ``e0``); the table gets each grain's edge position with its interval
and edge group, and the figure a panel of the grain map coloured by the edge.

Pixels with a non-positive edge step, or whose features cannot be found, are
masked (label -1). With ``abundances: true`` the scan's NMF store
(``<scan_id>.nmf.zarr`` of the nmf product, ``--nmf-store``) adds its
abundance maps W (one feature ``abundance_<i>`` per component, unit: edge
steps); pixels the NMF excluded are masked too. The workflow then makes the
segment job depend on that store; a kind whose nmf product is disabled is
refused at dry run (:func:`check_kind`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError
from xafsflow.io import store as st
from xafsflow.products import Product

PRODUCT = Product(
    name="segment",
    directory="segmentation",
    kinds=("stack",),
    params_key="segment",
    summary_fields=("n_classes", "n_grains", "beta", "ari_gmm", "masked_fraction", "n_edge_groups"),
    description="grain segmentation of a micro-XAFS stack by a hidden Potts Markov random field",
    module=__name__,
    part="mrf",
)

_MRF_KEYS = ("neighbours", "beta", "beta_max", "em_iterations", "mf_sweeps", "tol", "reg_covar",
             "min_class_fraction", "min_pixels_per_param")


def add_arguments(p) -> None:
    """``xafsflow segment``: the common options and the NMF store the abundance features come from."""
    p.add_argument("--nmf-store", default=None,
                   help="the scan's nmf store (<scan_id>.nmf.zarr): its abundance maps W are features "
                        "when the segment block has abundances: true")


def check(params: dict, n_points: int | None = None) -> list[str]:
    """Problems with a resolved ``segment`` block, found without running anything."""
    problems = []
    if params["classes_min"] > params["classes_max"]:
        problems.append(f"class range [{params['classes_min']}, {params['classes_max']}] is empty "
                        "(classes_min > classes_max)")
    lo, hi = params["window"]
    if not lo < hi:
        problems.append(f"window [{lo}, {hi}] is not ordered (start below end)")
    if params["inference"] == "gibbs" and params["gibbs_burn"] >= params["gibbs_sweeps"]:
        problems.append(f"gibbs_burn ({params['gibbs_burn']}) must be below gibbs_sweeps ({params['gibbs_sweeps']})")
    if params["beta"] is not None and params["beta"] > params["beta_max"]:
        problems.append(f"beta ({params['beta']}) is above beta_max ({params['beta_max']})")
    gp = params["grains"]
    if gp["enabled"]:
        if gp["k_min"] > gp["k_max"]:
            problems.append(f"grains: K range [{gp['k_min']}, {gp['k_max']}] is empty (k_min > k_max)")
        for key, rng in (("fit_range", gp["fit_range"]), ("component_range", gp["component_range"]),
                         ("preedge.fit_range", gp["preedge"]["fit_range"])):
            if not rng[0] < rng[1]:
                problems.append(f"grains.{key} [{rng[0]}, {rng[1]}] is not ordered (start below end)")
        if 50 % gp["thin"] or gp["sweeps"] % 50 or gp["burn_in"] % 50:
            problems.append("grains: sweeps and burn_in must be multiples of 50 and thin must divide 50")
        try:
            from xafsflow.bayes.models import check_priors

            check_priors("xanes", gp["priors"])
        except Exception as exc:  # an InputError naming the prior
            problems.append(f"grains.priors: {getattr(exc, 'reason', exc)}")
    return problems


def check_kind(kind: str, params: dict) -> list[str]:
    """Problems across blocks of one kind's resolved parameters: abundances need the nmf product."""
    from xafsflow.products import get

    if params[PRODUCT.params_key]["abundances"] and not get("nmf").applies_to(kind, params):
        return [f"abundances: true needs the nmf product, which is disabled for {kind} scans "
                f"(analysis.{kind}.nmf.enabled: false); enable it or set abundances to false"]
    return []


def summary(attrs: dict) -> dict:
    """Summary fields (without the ``segment.`` prefix) and flags from the store's attributes."""
    def fmt(v, spec):
        return "" if v is None else format(v, spec)

    return {
        "n_classes": attrs.get("n_classes", ""),
        "n_grains": attrs.get("n_grains", ""),
        "beta": fmt(attrs.get("beta"), ".3f"),
        "ari_gmm": fmt(attrs.get("ari_gmm"), ".3f"),
        "masked_fraction": fmt(attrs.get("masked_fraction"), ".3f"),
        "n_edge_groups": attrs.get("n_edge_groups", ""),
        "flags": list(attrs.get("flags") or []),
    }


def run(args) -> str:
    """``xafsflow segment``: segment one stack store and write its store, TSV and PNG."""
    from xafsflow.products._common import load_params, scan_kind

    attrs = dict(st.open_store(args.scan_store).attrs)
    params = load_params(args, scan_kind(PRODUCT, attrs, args.scan_store))
    scan_id = args.scan_id or attrs.get("scan_id", "scan")
    extra_maps, extra_prov = None, None
    if params["segment"]["abundances"]:
        if not args.nmf_store:
            src = next(iter(attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})), str(args.scan_store))
            raise AnalysisInputError("segment: abundances: true needs the scan's nmf store (--nmf-store "
                                     "<scan_id>.nmf.zarr); make the nmf product first", src)
        extra_maps, extra_prov = abundance_maps(args.nmf_store, args.scan_store)
    kw = dict(extra_maps=extra_maps, provenance_extra=extra_prov)
    if args.threads > 1:
        from xafsflow.distributed import client

        with client(args.threads, args.mem_mb, dashboard=args.dashboard):
            out = run_segment(args.scan_store, args.out, args.tsv, args.png, params, scan_id, args.seed,
                              args.params_hash, **kw)
    else:
        out = run_segment(args.scan_store, args.out, args.tsv, args.png, params, scan_id, args.seed,
                          args.params_hash, **kw)
    return (f"segment: C = {out['n_classes']}, {out['n_grains']} grains, beta = {out['beta']:.3f} -> {args.out}")


# ------------------------------------------------------------------ steps
def abundance_maps(nmf_store, scan_store=None) -> tuple[dict, dict]:
    """The NMF abundance maps of a scan as extra features, and what provenance records of them.

    Returns ``({"abundance_<i>": (y, x) float64}, {"nmf_store": ..., "nmf_k": k, ...})``;
    pixels the NMF excluded (its ``mask``) are NaN, so :func:`~xafsflow.imaging.features.standardize`
    masks them. With ``scan_store``, the maps must have its (y, x) shape.
    """
    try:
        g = st.open_store(nmf_store)
    except Exception:
        raise AnalysisInputError("segment: cannot open the nmf store; make the nmf product first",
                                 str(nmf_store)) from None
    if "W" not in g or g["W"].ndim != 3:
        raise AnalysisInputError("segment: the nmf store has no abundance maps W (component, y, x)", str(nmf_store))
    W = np.asarray(g["W"][...], dtype=np.float64)
    excluded = np.asarray(g["mask"][...], bool) if "mask" in g else np.zeros(W.shape[1:], bool)
    if scan_store is not None:
        norm = st.open_store(scan_store)["norm"]
        if tuple(norm.shape[1:]) != W.shape[1:]:
            raise AnalysisInputError(f"segment: the nmf store's maps are {W.shape[1]} x {W.shape[2]} pixels, the "
                                     f"stack {norm.shape[1]} x {norm.shape[2]}: not this scan's nmf store",
                                     str(nmf_store))
    maps = {f"abundance_{i}": np.where(excluded, np.nan, W[i]) for i in range(W.shape[0])}
    attrs = dict(g.attrs)
    prov = {"nmf_store": str(nmf_store), "nmf_k": int(W.shape[0]),
            "nmf_config_hash": attrs.get(st.PROVENANCE_KEY, {}).get("config_hash"),
            "nmf_excluded_pixels": int(excluded.sum())}
    return maps, prov


def read_features(scan_store, p: dict, extra_maps: dict | None = None):
    """(FeatureMaps, map chunks (rows, cols), source name, scan attributes) of a normalized stack store.

    Features are computed one row chunk of the stack at a time; ``extra_maps``
    ({name: (y, x) map}, e.g. NMF abundances) join them before standardizing.
    """
    from xafsflow.imaging.features import spectral_features, standardize

    g = st.open_store(scan_store)
    attrs = dict(g.attrs)
    src = next(iter(attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})), str(scan_store))
    if "norm" not in g or g["norm"].ndim != 3:
        raise AnalysisInputError("the segment product needs a normalized (energy, y, x) stack store", src)
    energy = g["energy"][...]
    norm = g["norm"]
    ne, ny, nx = norm.shape
    rows = norm.chunks[1]
    e0 = attrs.get("e0")
    if e0 is None or not np.isfinite(e0):
        raise AnalysisInputError("the stack has no edge energy E0 (normalization failed?)", src)
    step = g["edge_step"][...] if "edge_step" in g else np.ones((ny, nx))
    phys = np.empty((ny, nx, len(p["features"])))
    try:
        for y0 in range(0, ny, rows):  # one row chunk of the stack in memory at a time
            block = norm[:, y0: y0 + rows, :]
            phys[y0: y0 + rows] = spectral_features(energy, block, float(e0), features=tuple(p["features"]),
                                                    window=tuple(p["window"]), half_step=p["half_step"],
                                                    smooth_sigma_ev=p["smooth_sigma_ev"])
        maps = standardize(phys, p["features"], mask=np.isfinite(step) & (step > 0), extra=extra_maps)
    except ValueError as exc:
        raise AnalysisInputError(f"features: {exc}", src) from None
    return maps, (rows, nx), src, attrs


def segment_features(maps, p: dict, seed: int, chunks=None):
    """The class selection over the C range (:class:`~xafsflow.imaging.mrf.ClassSelection`)."""
    from xafsflow.imaging import mrf

    kw = {k: p[k] for k in _MRF_KEYS}
    return mrf.select_classes(maps.values, maps.mask, classes_min=p["classes_min"], classes_max=p["classes_max"],
                              class_criterion=p["class_criterion"], seed=seed, chunks=chunks, **kw)


def grains(labels: np.ndarray, neighbours: int):
    """Connected regions of one class: (grain map, -1 outside any; list of (grain id, class, area)).

    See :func:`xafsflow.imaging.grain_spectra.find_grains`.
    """
    from xafsflow.imaging.grain_spectra import find_grains

    return find_grains(labels, neighbours)


def grain_spec(gp: dict, e0: float, centroid_window: tuple[float, float] | None = None):
    """The :class:`~xafsflow.bayes.posterior.PosteriorSpec` of grain spectra from the ``grains`` block
    (``centroid_window``: eV range of the pre-edge components in a grain's centroid, model preedge)."""
    from xafsflow.bayes.posterior import Convergence, LadderTuning, PosteriorSpec
    from xafsflow.bayes.settings import ChainSettings

    if gp["model"] == "preedge":
        # the pre-edge model builds its priors from its window and the resolution (as the posterior product)
        model = {"model": "preedge", "priors": {}, "resolution": gp["preedge"]["resolution"],
                 "centroid_window": centroid_window}
    else:
        lo, hi = gp["component_range"]
        model = {"model": "xanes",
                 "priors": dict(gp["priors"], centre={"dist": "uniform", "lo": e0 + lo, "hi": e0 + hi})}
    return PosteriorSpec(**model, k_min=gp["k_min"], k_max=gp["k_max"], k_limit=gp["k_max"],
                         replicas=gp["replicas"], runs=gp["runs"], e0=e0,
                         settings=ChainSettings(sweeps=gp["sweeps"], burn_in=gp["burn_in"], thin=gp["thin"],
                                                block=50, adapt_every=50, checkpoint_every=50),
                         tuning=LadderTuning(enabled=False), convergence=Convergence(enabled=False),
                         bootstrap_errors=False, noise_grid=100)


def _current_client():
    """The Dask client of this job (``threads`` > 1), else None."""
    try:
        from distributed import default_client

        return default_client()  # never starts a cluster: ValueError when there is none
    except (ImportError, ValueError):
        return None


def grain_step(scan_store, grain_map, analysed, gp: dict, campaign_seed: int, scan_id: str):
    """Grain spectra and their posteriors.

    Returns (energy, means, sems, counts, GrainPosteriors, seconds, notes): the spectra of
    the grains analysed (rows of ``means`` in the order of the results) and what was
    skipped and why (``notes``, also flags): a fit window with too few of the stack's
    energies skips every grain, a grain whose spectrum is not :func:`usable` is skipped
    alone. The segmentation itself never fails for its grains' spectroscopy.
    """
    import time

    from xafsflow.bayes.settings import BACKGROUND_PARAMS, MIN_POINTS_PER_PARAMETER
    from xafsflow.imaging import grain_spectra as gs

    t0 = time.perf_counter()
    g = st.open_store(scan_store)
    energy = g["energy"][...]
    e0 = float(g.attrs["e0"])
    norm = g["norm"]
    rows = norm.chunks[1]
    ny = norm.shape[1]
    empty = (energy, np.empty((0, energy.size)), np.empty((0, energy.size)), np.empty((0, energy.size), int), [])
    if not analysed:
        return (*empty, 0.0, [])
    model = gp["model"]
    window, range_name, cen_window = None, "fit_range", None
    if model == "preedge":
        from xafsflow.products.posterior import centroid_window, preedge_window

        try:
            lo, hi, _ = preedge_window(scan_store, gp["preedge"])
            cen_window = centroid_window(scan_store, gp["preedge"])
        except AnalysisInputError as exc:
            return (*empty, 0.0, [f"grains_skipped(model preedge: {exc.reason})"])
        window, range_name = (lo, hi), "preedge.fit_range"
    need = MIN_POINTS_PER_PARAMETER * (BACKGROUND_PARAMS[model] + 3 * gp["k_min"])  # k_max: lowered by the analysis
    n_fit = int(gs.fit_window(energy, e0, gp["fit_range"], window).sum())
    if n_fit < need:
        return (*empty, 0.0, [f"grains_skipped({range_name} holds {n_fit} energies, the model needs {need})"])
    blocks = ((y0, norm[:, y0: y0 + rows, :]) for y0 in range(0, ny, rows))
    means, sems, counts = gs.grain_mean_spectra(blocks, grain_map, [t[0] for t in analysed])
    keep = [i for i in range(len(analysed))
            if gs.usable(energy, means[i], sems[i], e0, gp["fit_range"], window) is None]
    notes = []
    if len(keep) < len(analysed):
        bad = [analysed[i][0] for i in range(len(analysed)) if i not in keep]
        notes.append(f"grains_skipped({len(bad)} without a finite spectrum or spread: {', '.join(map(str, bad[:5]))})")
    means, sems, counts = means[keep], sems[keep], counts[keep]
    results = gs.analyse_grains(energy, means, sems, [analysed[i] for i in keep], e0, gp["fit_range"],
                                grain_spec(gp, e0, cen_window), campaign_seed, scan_id, level=gp["level"],
                                client=_current_client(), weighted=gp["weighted"], window=window)
    return energy, means, sems, counts, results, time.perf_counter() - t0, notes


def run_segment(scan_store, out, tsv, png, params: dict, scan_id: str, campaign_seed: int,
                params_hash: str | None = None, extra_maps: dict | None = None,
                provenance_extra: dict | None = None) -> dict:
    """Segment one stack and write ``out`` (Zarr), ``tsv`` and ``png``; returns the store's main attributes.

    ``extra_maps`` ({name: (y, x) array}, NaN where unusable) are more features,
    e.g. the NMF abundances of :func:`abundance_maps`; ``provenance_extra`` is
    recorded in provenance (where they came from).
    """
    from sklearn.metrics import adjusted_rand_score

    from xafsflow.imaging import mrf
    from xafsflow.seeds import seed_sequence

    p = params["segment"]
    problems = check(p)
    maps, map_chunks, src, scan_attrs = read_features(scan_store, p, extra_maps)
    if problems:
        raise AnalysisInputError("segment: " + "; ".join(problems), src)
    ss = seed_sequence(campaign_seed, scan_id, "segment")
    gmm_seed, gibbs_key = (int(v) for v in ss.generate_state(2, dtype=np.uint64))
    gmm_seed %= 2**31 - 1
    ny, nx = maps.mask.shape
    chunks = map_chunks if ny * nx >= p["distributed_min_pixels"] else None
    try:
        sel = segment_features(maps, p, gmm_seed, chunks)
    except mrf.MRFInputError as exc:
        raise AnalysisInputError(f"segment: {exc}", src) from None
    best = sel.best
    probs, labels = best.probabilities, best.labels
    if p["inference"] == "gibbs":
        field = mrf.site_field(maps.values, best, maps.mask)
        _, probs = mrf.gibbs_sample(field, best.beta, maps.mask, neighbours=p["neighbours"],
                                    n_sweeps=p["gibbs_sweeps"], n_burn=p["gibbs_burn"], key=gibbs_key,
                                    init=labels, chunks=chunks)
        labels = np.where(maps.mask, np.argmax(probs, axis=-1), -1).astype(np.int32)
    grain_map, table = grains(labels, p["neighbours"])
    listed = [t for t in table if t[2] >= p["min_grain_area"]]
    gp = p["grains"]
    analysed = [t for t in listed if t[2] >= gp["min_area"]] if gp["enabled"] else []
    g_energy, g_means, g_sems, g_counts, g_res, g_seconds, g_notes = grain_step(
        scan_store, grain_map, analysed, gp, campaign_seed, scan_id)
    from xafsflow.imaging.grain_spectra import edge_groups

    groups = edge_groups([(r.edge["q_lo"], r.edge["q_hi"]) for r in g_res])
    m = maps.mask
    ari = float(adjusted_rand_score(best.gmm_labels[m], labels[m])) if m.any() else None
    flags = []
    if best.beta_at_bound:
        flags.append(f"beta_at_bound({best.beta:.2f})")
    if not best.converged:
        flags.append(f"not_converged(EM {best.n_iter} iterations)")
    if best.n_classes == p["classes_max"] and p["classes_max"] > p["classes_min"]:
        flags.append(f"classes_at_limit(C={best.n_classes})")
    if not all(sel.supported[sel.classes.index(best.n_classes):sel.classes.index(best.n_classes) + 1]):
        flags.append("classes_unsupported")
    flags += g_notes
    slow = [r.grain for r in g_res if not r.max_rhat <= 1.1]
    if slow:
        flags.append(f"grain_high_rhat({len(slow)} grains above 1.1: {', '.join(map(str, slow[:5]))})")
    attrs = {
        "scan_id": scan_id, "n_classes": best.n_classes, "n_grains": len(listed), "n_regions": len(table),
        "beta": best.beta, "ari_gmm": ari, "masked_fraction": float(1 - m.mean()),
        "class_criterion": p["class_criterion"], "inference": p["inference"], "neighbours": p["neighbours"],
        "em_iterations_done": best.n_iter, "converged": best.converged, "log_likelihood": best.log_likelihood,
        "feature_names": maps.names, "feature_units": maps.units, "feature_mean": maps.mean,
        "feature_sd": maps.sd, "notes": maps.notes + sel.notes, "flags": flags,
        "pixel_size_um": scan_attrs.get("pixel_size_um"),
        "n_grains_analysed": len(g_res), "n_edge_groups": (max(groups) + 1) if groups else None,
        "grain_seconds": g_seconds, "grain_model": gp["model"],
    }
    prov = st.provenance("segment", [], {"segment": p}, campaign_seed, params_hash, maps.notes + sel.notes,
                         extra={"scan_store_inputs": scan_attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {}),
                                "task_seeds": {"gmm": gmm_seed, "gibbs_key": gibbs_key},
                                "chunked": chunks is not None, **(provenance_extra or {})})
    rows = map_chunks[0]
    with st.atomic_store(out) as g:
        st.put_array(g, "labels", labels, ("y", "x"), chunks=(rows, nx),
                     attrs={"meaning": "MAP class of each pixel; -1 masked"})
        st.put_array(g, "probabilities", probs.astype(np.float32), ("y", "x", "class"),
                     chunks=(rows, nx, best.n_classes), attrs={"meaning": f"class posterior ({p['inference']})"})
        st.put_array(g, "gmm_labels", best.gmm_labels, ("y", "x"), chunks=(rows, nx),
                     attrs={"meaning": "Gaussian mixture without spatial prior (the initialisation)"})
        st.put_array(g, "grains", grain_map, ("y", "x"), chunks=(rows, nx),
                     attrs={"meaning": "connected region of one class (grain id of the table); -1 masked"})
        st.put_array(g, "features", maps.physical.astype(np.float32), ("y", "x", "feature"),
                     chunks=(rows, nx, len(maps.names)), attrs={"names": maps.names, "units": maps.units})
        st.put_array(g, "mask", maps.mask, ("y", "x"), chunks=(rows, nx))
        st.put_array(g, "class_means", best.means, ("class", "feature"),
                     attrs={"units": "standardized features (physical = value * feature_sd + feature_mean)"})
        st.put_array(g, "class_covariances", best.covariances, ("class", "feature", "feature_2"))
        st.put_array(g, "class_weights", best.weights, ("class",))
        curve = g.create_group("class_selection")
        st.put_array(curve, "C", np.array(sel.classes), ("C",))
        st.put_array(curve, "bic_mrf", np.array(sel.bic), ("C",))
        st.put_array(curve, "bic_gmm", np.array(sel.gmm_bic), ("C",))
        st.put_array(curve, "supported", np.array(sel.supported), ("C",))
        if gp["enabled"]:
            write_grain_spectra(g.create_group("grain_spectra"), g_energy, g_means, g_sems, g_counts, g_res, groups,
                                scan_id, scan_attrs, gp)
        st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})
    spectro = {r.grain: (r, grp) for r, grp in zip(g_res, groups)}
    from xafsflow.imaging.grain_spectra import POSITION

    write_tsv(tsv, listed, grain_map, maps, probs, scan_attrs.get("pixel_size_um"), spectro, gp["level"],
              POSITION[gp["model"]])
    plot_segment(png, maps, best, labels, sel, scan_id, grain_map, spectro)
    return attrs


def write_grain_spectra(gs_group, energy, means, sems, counts, results, groups, scan_id, scan_attrs, gp) -> None:
    """``grain_spectra``: the edge table of the analysed grains, and one ``g<id>`` group per grain holding its
    spectrum as a spectrum store the posterior product can take (energy, norm, norm_sd; kind, e0)."""
    from xafsflow.imaging.grain_spectra import POSITION

    n = len(results)
    q = POSITION[gp["model"]]  # edge (xanes e0) or centroid (pre-edge)
    st.set_attrs(gs_group, model=gp["model"], position=q)
    st.put_array(gs_group, "grain", np.array([r.grain for r in results], dtype=np.int64), ("grain",))
    for name, key in ((f"{q}_median", "median"), (f"{q}_q_lo", "q_lo"), (f"{q}_q_hi", "q_hi")):
        st.put_array(gs_group, name, np.array([r.edge[key] for r in results], float).reshape(n), ("grain",),
                     attrs={"units": "eV"})
    if q == "centroid":
        for name, key in (("intensity_median", "median"), ("intensity_q_lo", "q_lo"), ("intensity_q_hi", "q_hi")):
            st.put_array(gs_group, name, np.array([r.intensity[key] for r in results], float).reshape(n),
                         ("grain",), attrs={"units": "eV x normalized absorption"})
    st.put_array(gs_group, f"{q}_group", np.array(groups, dtype=np.int64).reshape(n), ("grain",),
                 attrs={"meaning": f"connected components of 'the {q} intervals overlap', 0 lowest"})
    prov = {"raw_inputs": scan_attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})}
    for i, r in enumerate(results):
        sub = gs_group.create_group(f"g{r.grain}")
        st.put_array(sub, "energy", energy, ("energy",), attrs={"units": "eV"})
        st.put_array(sub, "norm", means[i], ("energy",), attrs={"meaning": "mean of the grain's normalized pixels"})
        st.put_array(sub, "norm_sd", sems[i], ("energy",), attrs={"meaning": "sd of the grain's pixels / sqrt(n)"})
        st.put_array(sub, "n_pixels", counts[i], ("energy",))
        st.put_array(sub, f"{q}_draws", r.edge_draws, ("chain", "draw"), attrs={"units": "eV"})
        st.set_attrs(sub, kind="xanes", scan_id=f"{scan_id}_g{r.grain}", e0=float(scan_attrs["e0"]),
                     element=scan_attrs.get("element"), edge=scan_attrs.get("edge"), grain=r.grain, **{"class": r.cls},
                     area_px=r.area, **{f"{q}_eV": r.edge, f"{q}_group": int(groups[i])}, K=r.k_selected,
                     P_K=r.p_k, sigma_hat=r.sigma_hat, max_rhat=r.max_rhat, component_areas=r.component_areas,
                     log_evidence=r.log_z, model=gp["model"], intensity=r.intensity,
                     fit_range=[float(r.energy[0]), float(r.energy[-1])], weighted=gp["weighted"],
                     **{st.PROVENANCE_KEY: prov})


def write_tsv(path, listed, grain_map, maps, probs, pixel_size_um, spectro=None, level: float = 0.95,
              quantity: str = "edge") -> None:
    """One row per listed grain: id, class, area (pixels, um^2), centroid, mean features, mean class probability;
    for grains whose spectrum was analysed (``spectro``: grain id -> (GrainPosterior, edge group)) the posterior
    edge (median and central ``level`` interval, eV), its edge group, K, P(K), sigma-hat, R-hat and the
    components' median areas (empty for the others). ``quantity`` names the position columns: ``edge``
    (xanes e0) or ``centroid`` (pre-edge centroid, followed by the integrated intensity and its interval)."""
    spectro = spectro or {}
    a = 100 * (1 - level) / 2
    q = quantity
    centroid = q == "centroid"
    yy, xx = np.indices(grain_map.shape)
    with open(Path(path), "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["grain", "class", "area_px", "area_um2", "centroid_y", "centroid_x"]
                   + [f"mean_{n}" for n in maps.names] + ["mean_probability", f"{q}_eV", f"{q}_q{a:g}",
                                                          f"{q}_q{100 - a:g}", f"{q}_group", "K", "P_K", "sigma",
                                                          "max_rhat", "component_areas"]
                   + (["intensity", f"intensity_q{a:g}", f"intensity_q{100 - a:g}"] if centroid else []))
        for gid, c, area in listed:
            sel = grain_map == gid
            um2 = "" if pixel_size_um is None else f"{area * float(pixel_size_um) ** 2:.6g}"
            feats = [f"{v:.6g}" for v in np.nanmean(maps.physical[sel], axis=0)]
            post = [""] * (12 if centroid else 9)
            if gid in spectro:
                r, grp = spectro[gid]
                post = [f"{r.edge['median']:.3f}", f"{r.edge['q_lo']:.3f}", f"{r.edge['q_hi']:.3f}", grp,
                        r.k_selected, f"{r.p_k:.3f}", "" if r.sigma_hat is None else f"{r.sigma_hat:.4g}",
                        f"{r.max_rhat:.3f}", ";".join(f"{v:.4g}" for v in r.component_areas)]
                if centroid:
                    post += [f"{r.intensity[k]:.5g}" for k in ("median", "q_lo", "q_hi")]
            w.writerow([gid, c, area, um2, f"{yy[sel].mean():.2f}", f"{xx[sel].mean():.2f}"] + feats
                       + [f"{probs[sel][:, c].mean():.4f}"] + post)


def plot_segment(path, maps, best, labels, sel, scan_id: str, grain_map=None, spectro=None) -> None:
    """Feature map, GMM-only labels, MRF labels side by side, the BIC over C, and (with analysed grains)
    the grain map coloured by each grain's posterior edge, each grain marked with its edge group
    (grains of different groups have non-overlapping intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectro = spectro or {}
    fig, axes = plt.subplots(1, 5 if spectro else 4, figsize=(21 if spectro else 17, 4))
    feat = np.where(maps.mask, maps.physical[..., 0], np.nan)
    im = axes[0].imshow(feat, cmap="viridis")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label=f"{maps.names[0]} ({maps.units[0]})")
    axes[0].set_title(f"{scan_id}: {maps.names[0]}")
    from matplotlib.colors import ListedColormap

    nc = best.n_classes
    cmap = ListedColormap([plt.get_cmap("tab10")(c % 10) for c in range(nc)])  # class c: the c-th tab10 colour
    for ax, lab, title in ((axes[1], best.gmm_labels, "GMM only (no spatial prior)"),
                           (axes[2], labels, f"MRF, C = {nc}, beta = {best.beta:.2f}")):
        ax.imshow(np.ma.masked_less(lab, 0), cmap=cmap, vmin=-0.5, vmax=nc - 0.5, interpolation="nearest")
        ax.set_title(title)
    for ax in axes[:3]:
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[3]
    cs = np.array(sel.classes)
    ok = np.array(sel.supported, bool)
    for curve, style, name in ((sel.gmm_bic, "o-", "BIC, GMM"), (sel.bic, "s--", "BIC, MRF (mean-field-like)")):
        line, = ax.plot(cs, curve, style, label=name, mfc="none")
        ax.plot(cs[ok], np.asarray(curve)[ok], style[0], color=line.get_color())  # filled: supported C
    ax.set_title("filled: every class holds enough pixels", fontsize=8)
    ax.axvline(best.n_classes, color="0.5", lw=0.8)
    ax.set_xlabel("classes C")
    ax.set_ylabel("BIC")
    ax.legend(fontsize=7)
    if spectro:
        ax = axes[4]
        edge = np.full(grain_map.shape, np.nan)
        for gid, (r, _) in spectro.items():
            edge[grain_map == gid] = r.edge["median"]
        im = ax.imshow(edge, cmap="plasma", interpolation="nearest")
        q = next(iter(spectro.values()))[0].quantity
        label = "posterior pre-edge centroid (eV)" if q == "centroid" else "posterior edge e0 (eV)"
        fig.colorbar(im, ax=ax, shrink=0.8, label=label).formatter.set_useOffset(False)
        yy, xx = np.indices(grain_map.shape)
        for gid, (r, grp) in spectro.items():
            sel_g = grain_map == gid
            py, px = yy[sel_g], xx[sel_g]
            i = int(np.argmin((py - py.mean()) ** 2 + (px - px.mean()) ** 2))  # a pixel of the grain (not convex)
            ax.text(px[i], py[i], str(grp), ha="center", va="center", fontsize=8,
                    color="black", fontweight="bold", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.8})
        ax.set_title(f"grain {q}; number = {q} group\n(different numbers: intervals do not overlap)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
