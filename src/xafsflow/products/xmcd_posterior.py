"""The XMCD posterior product: Bayesian decomposition of an XMCD pair and sum-rule moments with intervals.

Kind ``xmcd``. Rule and CLI name ``xmcd_posterior`` (the ``posterior`` rule is the
XANES / spectrum product); its stores share the ``posterior`` directory:
``results/<campaign>/posterior/<scan_id>.zarr`` (+ ``.tsv``, ``.png``).

Science in :mod:`xafsflow.bayes.xmcd` and :mod:`xafsflow.xas.sum_rules` (no
I/O); this module reads the normalized pair (``norm_plus``, ``norm_minus``:
each helicity minus its own pre-edge line, both over the average's edge jump),
runs :func:`xafsflow.bayes.xmcd.analyse_pair` and writes the store, TSV and PNG.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError, InputError
from xafsflow.io import store as st
from xafsflow.products import Product

PRODUCT = Product(
    name="xmcd_posterior",
    directory="posterior",
    kinds=("xmcd",),
    params_key="xmcd_posterior",
    summary_fields=("K_plus", "K_minus", "K_pos", "K_neg", "m_orb", "m_orb_sd", "m_spin_eff", "m_spin_eff_sd",
                    "ratio", "ratio_q2.5", "ratio_q97.5", "max_rhat", "min_exchange"),
    description="Bayesian decomposition of an XMCD pair (both helicities and the dichroism) and sum-rule "
                "moments with credible intervals",
    module=__name__,
)

QUANTITIES = ("p", "q", "r", "m_orb", "m_spin_eff", "ratio")


def add_arguments(p) -> None:
    """Options of ``xafsflow xmcd_posterior`` beyond the common ones."""
    p.add_argument("--checkpoint-dir", default=None, help="where chains checkpoint (kept until the product is complete)")


def check(params: dict, n_points: int | None = None) -> list[str]:
    """Problems with a resolved ``xmcd_posterior`` block, found before any job runs."""
    from xafsflow.products.posterior import chain_settings

    problems = []
    try:
        chain_settings(params)
    except AnalysisInputError as exc:
        problems.append(exc.reason.replace("posterior settings", "settings"))
    if params["k_min"] > params["k_max"]:
        problems.append(f"K range [{params['k_min']}, {params['k_max']}] is empty (k_min > k_max)")
    for key in ("k_pos", "k_neg"):
        lo, hi = params[key]
        if not 1 <= lo <= hi:
            problems.append(f"{key} range [{lo}, {hi}] is empty or starts below 1")
    for key in ("fit_range", "l3_window", "l23_window"):
        if params[key] is not None and not params[key][0] < params[key][1]:
            problems.append(f"{key} {params[key]} is not ordered (start below end)")
    lo, hi = params["width_prior"]
    if not 0 < lo < hi:
        problems.append(f"width_prior [{lo}, {hi}] eV must satisfy 0 < lo < hi")
    block = params["block"]
    for key in ("tuning.sweeps", "tuning.warmup", "convergence.max_sweeps"):
        sect, name = key.split(".")
        if params[sect][name] % block:
            problems.append(f"{key} ({params[sect][name]}) must be a multiple of block ({block})")
    from xafsflow.bayes.posterior import points_problem

    k_top = max(params["k_max"], params["k_pos"][1] + params["k_neg"][1])  # components of the largest model
    problem = None if n_points is None else points_problem(n_points, "xmcd", k_top)
    if problem:
        problems.append(problem)
    return problems


def row_problems(params: dict) -> list[str]:
    """Values every XMCD row needs (config block or the row's overrides), checked when the sheet is read."""
    problems = []
    if params["n_holes"] is None:
        problems.append("n_holes (number of 3d holes) is missing: set analysis.xmcd.xmcd_posterior.n_holes or "
                        "this row's overrides (xmcd_posterior.n_holes=...)")
    if params["polarization"] is None:
        problems.append("polarization (degree of circular polarization P_c) is missing: set "
                        "analysis.xmcd.xmcd_posterior.polarization or this row's overrides "
                        "(xmcd_posterior.polarization=...)")
    return problems


def spec_from_params(p: dict):
    """An :class:`~xafsflow.bayes.xmcd.XmcdSpec` from the validated block."""
    from xafsflow.bayes.posterior import Convergence, LadderTuning, PosteriorSpec
    from xafsflow.bayes.xmcd import XmcdSpec
    from xafsflow.products.posterior import chain_settings

    base = PosteriorSpec(model="xmcd", replicas=p["replicas"], runs=p["runs"], b_max_factor=p["b_max_factor"],
                         settings=chain_settings(p), tuning=LadderTuning(**p["tuning"]),
                         convergence=Convergence(**p["convergence"]), k_limit=max(p["k_limit"], p["k_max"]),
                         mode_starts=p["mode_starts"])
    return XmcdSpec(base=base, k_min=p["k_min"], k_max=p["k_max"], k_pos=tuple(p["k_pos"]), k_neg=tuple(p["k_neg"]),
                    grid_limit=p["grid_limit"],
                    width_prior={"dist": "loguniform", "lo": p["width_prior"][0], "hi": p["width_prior"][1]},
                    n_holes=p["n_holes"], polarization=p["polarization"],
                    cos_incidence=math.cos(math.radians(p["incidence_angle"])), l3=p["l3"], l2=p["l2"],
                    step_width=p["step_width"], step_height=p["step_height"],
                    l3_window=p["l3_window"], l23_window=p["l23_window"])


def quality_flags(res, health: dict, q: dict) -> list[str]:
    """Flags for ``summary.tsv``: the sampler-health criteria that do not hold."""
    flags = []
    if health["min_exchange"] < q["min_exchange"]:
        flags.append(f"low_exchange({health['min_exchange']:.2f})")
    rh = max(v for v in (health["max_rhat_quantities"], health["max_rhat_params"]) if math.isfinite(v)) \
        if any(math.isfinite(v) for v in (health["max_rhat_quantities"], health["max_rhat_params"])) \
        else float("nan")
    if math.isfinite(rh) and rh > q["max_rhat"]:
        flags.append(f"high_rhat({rh:.3f})")
    if health["max_f_spread"] > q["max_f_spread"]:
        flags.append(f"runs_disagree(dF={health['max_f_spread']:.1f})")
    if q["k_at_limit"] and health["k_at_limit"]:
        flags.append("k_at_limit(" + "; ".join(health["k_at_limit"]) + ")")
    for name, r in (("plus", res.plus), ("minus", res.minus)):
        p_sel = float(r.p_k[r.ks.index(r.k_selected)])
        if p_sel < q["min_p_k"]:
            flags.append(f"uncertain_K_{name}(P={p_sel:.2f})")
    p_cell = float(np.max(res.dichroism["p"]))
    if p_cell < q["min_p_k"]:
        flags.append(f"uncertain_K_dichroism(P={p_cell:.2f})")
    return flags


def read_pair(scan_store):
    """(energy, norm_plus, norm_minus, e0, source, normalization provenance) from a normalized XMCD store."""
    g = st.open_store(scan_store)
    attrs = dict(g.attrs)
    src = next(iter(attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})), str(scan_store))
    if attrs.get("kind") != "xmcd" or "norm_plus" not in g:
        raise AnalysisInputError(f"the xmcd_posterior product needs a normalized XMCD pair, this is "
                                 f"{attrs.get('kind')!r}", src)
    norm = attrs.get(st.PROVENANCE_KEY, {}).get("params", {}).get("normalize", {})
    return (g["energy"][...], g["norm_plus"][...], g["norm_minus"][...], float(attrs["e0"]), src,
            {"e0": float(attrs["e0"]), "edge_step": attrs.get("edge_step"), "normalize": norm})


def run(args) -> str:
    """``xafsflow xmcd_posterior``: analyse one XMCD pair store and write its store, TSV and PNG."""
    from xafsflow.products._common import load_params, scan_kind

    attrs = dict(st.open_store(args.scan_store).attrs)
    params = load_params(args, scan_kind(PRODUCT, attrs, args.scan_store))
    res, flags = run_xmcd_posterior(args.scan_store, args.out, args.tsv, args.png, params,
                                    args.scan_id or attrs.get("scan_id", "scan"), args.seed, threads=args.threads,
                                    mem_mb=args.mem_mb, params_hash=args.params_hash, dashboard=args.dashboard,
                                    checkpoint_dir=args.checkpoint_dir)
    m = res.summary
    return (f"xmcd_posterior: K+ = {res.plus.k_selected}, K- = {res.minus.k_selected}, (K_pos, K_neg) = "
            f"{res.dichroism['selected']}; m_orb/m_spin_eff = {m['ratio']['mean']:.3f} "
            f"[{m['ratio']['q2.5']:.3f}, {m['ratio']['q97.5']:.3f}] -> {args.out}")


def summary(attrs: dict) -> dict:
    """Summary fields (without the ``xmcd_posterior.`` prefix) and flags from the store's attributes."""
    mom = attrs.get("moments") or {}

    def g(q, key, spec=".4g"):
        v = mom.get(q, {}).get(key)
        return "" if v is None else format(v, spec)

    sel = attrs.get("k_dichroism_selected") or ["", ""]
    return {
        "K_plus": attrs.get("k_plus_selected", ""), "K_minus": attrs.get("k_minus_selected", ""),
        "K_pos": sel[0], "K_neg": sel[1],
        "m_orb": g("m_orb", "mean"), "m_orb_sd": g("m_orb", "sd"),
        "m_spin_eff": g("m_spin_eff", "mean"), "m_spin_eff_sd": g("m_spin_eff", "sd"),
        "ratio": g("ratio", "mean"), "ratio_q2.5": g("ratio", "q2.5"), "ratio_q97.5": g("ratio", "q97.5"),
        "max_rhat": "" if attrs.get("max_rhat") is None else format(attrs["max_rhat"], ".3f"),
        "min_exchange": "" if attrs.get("min_exchange_rate") is None else format(attrs["min_exchange_rate"], ".3f"),
        "flags": list(attrs.get("flags") or []),
    }


def run_xmcd_posterior(scan_store, out, tsv, png, params: dict, scan_id: str, campaign_seed: int,
                       threads: int = 1, mem_mb: int = 2000, params_hash: str | None = None, dashboard: bool = False,
                       checkpoint_dir: str | Path | None = None):
    """Analyse one pair and write ``out`` (Zarr), ``tsv`` and ``png``; returns (XmcdResult, flags).

    With ``checkpoint_dir`` the chains checkpoint there (an interrupted job resumes where it stopped);
    the folder is removed once the product is written.
    """
    from xafsflow.bayes.xmcd import analyse_pair, health

    p = params["xmcd_posterior"]
    energy, mp, mm, e0, src, norm_prov = read_pair(scan_store)
    missing = [k for k in ("n_holes", "polarization") if p[k] is None]
    if missing:
        raise AnalysisInputError(f"{' and '.join(missing)} missing: set them in the config's xmcd_posterior block "
                                 "or the sheet's overrides column", src)
    try:
        spec = spec_from_params(p)
    except InputError as exc:
        raise AnalysisInputError(exc.reason, src) from None
    fit = None if p["fit_range"] is None else (e0 + p["fit_range"][0], e0 + p["fit_range"][1])

    def progress(message):
        print(f"xmcd_posterior {scan_id}: {message}", file=sys.stderr, flush=True)

    kw = dict(source=src, fit_range=fit, progress=progress, expected_l3_sign=p["expected_l3_sign"],
              checkpoint_dir=checkpoint_dir)
    if threads > 1:
        from xafsflow.distributed import client

        with client(threads, mem_mb, dashboard=dashboard) as c:
            res = analyse_pair(energy, mp, mm, spec, campaign_seed, scan_id, client=c, **kw)
    else:
        res = analyse_pair(energy, mp, mm, spec, campaign_seed, scan_id, **kw)
    h = health(res)
    flags = quality_flags(res, h, p["quality"])
    mask = (energy >= res.energy[0]) & (energy <= res.energy[-1])
    write_store(out, res, h, flags, mp[mask], mm[mask], p, spec, scan_id, campaign_seed, params_hash, scan_store,
                norm_prov)
    write_tsv(tsv, res)
    plot_xmcd(png, res, mp[mask], mm[mask], scan_id)
    if checkpoint_dir is not None:
        import shutil

        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the product is complete
    return res, flags


def write_store(out, res, h, flags, mp, mm, p, spec, scan_id, seed, params_hash, scan_store, norm_prov):
    """The product store, laid out like the XANES posterior's for each decomposition.

    Groups ``plus``, ``minus`` (one ``K<k>`` group per K, ``posterior`` and
    ``sample_stats`` as ArviZ reads them), ``dichroism`` (one ``Kpos<a>_Kneg<b>``
    group per grid cell) and ``moments`` (p, q, r, m_orb, m_spin_eff, ratio as
    (chain, draw)).
    """
    from xafsflow.products.posterior import _write_k_group

    sel = res.dichroism["selected"]
    attrs = {
        "scan_id": scan_id, "model": "xmcd: helicities K pseudo-Voigt (1 eV Lorentzian) + fixed two-step edge; "
                                     "dichroism K_pos positive + K_neg negative pseudo-Voigt",
        "k_plus_selected": res.plus.k_selected, "k_minus_selected": res.minus.k_selected,
        "k_dichroism_selected": list(sel), "flags": flags,
        "p_k_plus_selected": float(res.plus.p_k[res.plus.ks.index(res.plus.k_selected)]),
        "p_k_minus_selected": float(res.minus.p_k[res.minus.ks.index(res.minus.k_selected)]),
        "p_k_dichroism_selected": float(np.max(res.dichroism["p"])),
        "moments": res.summary, "steps": res.steps, "windows": res.windows,
        "n_holes": spec.n_holes, "polarization": spec.polarization, "cos_incidence": spec.cos_incidence,
        "health": {k: v for k, v in h.items()},
        "max_rhat": max([v for v in (h["max_rhat_quantities"], h["max_rhat_params"]) if math.isfinite(v)],
                        default=None),
        "min_exchange_rate": h["min_exchange"],
        "sum_rules": "Chen et al. PRL 75, 152 (1995): m_orb = -4 q n_h / (3 r), m_spin_eff = -(6 p - 4 q) n_h / r "
                     "(m_spin_eff includes the magnetic dipole term 7<T_z>); p, q divided by P_c cos(theta)",
        "normalization": "each helicity minus its own pre-edge line, both divided by the edge jump of the "
                         "helicity average (common edge-jump normalization)",
    }
    prov = st.provenance("xmcd_posterior", [], {"xmcd_posterior": p}, seed, params_hash, [],
                         extra={"scan_store_inputs": dict(st.open_store(scan_store).attrs).get(
                             st.PROVENANCE_KEY, {}).get("raw_inputs", {}),
                             "normalization": norm_prov, "windows": res.windows, "steps": res.steps,
                             "task_seeds": "SeedSequence([seed, blake2b(scan_id/part, 'posterior', K, run)]), "
                                           "part in plus, minus, dichroism/pos<K_pos>"})
    with st.atomic_store(out) as g:
        st.put_array(g, "energy", res.energy, ("energy",), attrs={"units": "eV"})
        st.put_array(g, "norm_plus", mp, ("energy",))
        st.put_array(g, "norm_minus", mm, ("energy",))
        from xafsflow.xas.sum_rules import edge_steps

        for name in ("plus", "minus"):
            st.put_array(g, f"edge_steps_{name}", edge_steps(res.energy, res.steps["l3"], res.steps["l2"],
                                                             res.steps[f"height_{name}"], res.steps["width"]),
                         ("energy",), attrs={"meaning": "two-step background of this helicity (fixed, removed "
                                                        "before fitting)"})
        for name, r in (("plus", res.plus), ("minus", res.minus)):
            sub = g.create_group(name)
            st.put_array(sub, "K", np.array(r.ks), ("K",))
            st.put_array(sub, "p_K", r.p_k, ("K",))
            st.put_array(sub, "log_evidence", [r.per_k[K]["log_z"] for K in r.ks], ("K",))
            st.put_array(sub, "free_energy", [r.per_k[K]["F"] for K in r.ks], ("K",))
            for K in r.ks:
                _write_k_group(sub.create_group(f"K{K}"), K, r.per_k[K], spec.base)
            st.set_attrs(sub, k_selected=r.k_selected,
                         sigma_hat=None if r.noise is None else r.noise["sigma_hat"])
        d = g.create_group("dichroism")
        st.put_array(d, "K_pos", np.array(res.dichroism["k_pos"]), ("K_pos",))
        st.put_array(d, "K_neg", np.array(res.dichroism["k_neg"]), ("K_neg",))
        st.put_array(d, "p_K", res.dichroism["p"], ("K_pos", "K_neg"))
        st.put_array(d, "log_evidence", res.dichroism["log_z"], ("K_pos", "K_neg"))
        for (a, b), ent in res.dichroism["cells"].items():
            _write_k_group(d.create_group(f"Kpos{a}_Kneg{b}"), a + b, ent, spec.base)
        st.set_attrs(d, selected=list(sel), grid_limits=list(res.dichroism["limits"]))
        mo = g.create_group("moments")
        for name in QUANTITIES:
            arr = res.integrals[name] if name in res.integrals else res.moments[name]
            st.put_array(mo, name, arr, ("chain", "draw"))
        st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})


def write_tsv(path, res) -> None:
    """Moments and integrals (mean, sd, 95 % interval, R-hat) and the selected numbers of components."""
    with open(Path(path), "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["quantity", "mean", "sd", "q2.5", "q97.5", "rhat"])
        for name in QUANTITIES:
            s = res.summary[name]
            w.writerow([name] + [f"{s[k]:.6g}" for k in ("mean", "sd", "q2.5", "q97.5")] + [f"{s['rhat']:.4f}"])
        w.writerow(["K_plus", res.plus.k_selected, "", "", "", ""])
        w.writerow(["K_minus", res.minus.k_selected, "", "", "", ""])
        w.writerow(["K_pos", res.dichroism["selected"][0], "", "", "", ""])
        w.writerow(["K_neg", res.dichroism["selected"][1], "", "", "", ""])


def _fit_and_best(model, samples, x, y):
    """Posterior-mean fit curve (mean over up to 200 draws of the curves: label switching leaves it intact)
    and the draw of smallest squared error among them (its components are drawn)."""
    flat = samples.reshape(-1, model.n_params)
    pick = flat[:: max(1, len(flat) // 200)]
    curves = np.array([model.evaluate(x, t) for t in pick])
    best = pick[int(np.argmin(np.sum((curves - y) ** 2, axis=1)))]
    return curves.mean(axis=0), best


def plot_xmcd(path, res, mp, mm, scan_id: str) -> None:
    """Data, posterior-mean fits and components of both helicities and the dichroism; moment posteriors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xafsflow.bayes.xmcd import dichroism_model
    from xafsflow.xas.sum_rules import edge_steps

    e = res.energy
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    all_steps = {}
    for ax, name, r, mu in ((axes[0, 0], "plus", res.plus, mp), (axes[0, 1], "minus", res.minus, mm)):
        steps = edge_steps(e, res.steps["l3"], res.steps["l2"], res.steps[f"height_{name}"], res.steps["width"])
        all_steps[name] = steps
        model = res.models[name].build(r.k_selected, e)
        fit, theta = _fit_and_best(model, r.per_k[r.k_selected]["samples"], e, mu - steps)
        ax.plot(e, mu, "k.", ms=3, label=f"mu{'+' if name == 'plus' else '-'}")
        ax.plot(e, steps + fit, "r-", lw=1.2, label="posterior mean fit")
        ax.plot(e, steps, "b--", lw=0.8, label="edge steps")
        for c in model.components(e, theta):
            ax.plot(e, steps + c, lw=0.7)
        ax.set_title(f"{scan_id} {name}: K = {r.k_selected}")
        ax.set_xlabel("energy (eV)")
        ax.legend(fontsize=7)
    a, b = res.dichroism["selected"]
    dm = dichroism_model(a, b, float(e[0]), float(e[-1]), 1.0, None)
    dich = (mp - all_steps["plus"]) - (mm - all_steps["minus"])
    fit, theta = _fit_and_best(dm, res.dichroism["cells"][(a, b)]["samples"], e, dich)
    ax = axes[1, 0]
    ax.plot(e, dich, "k.", ms=3, label="mu+ - mu- (steps removed)")
    ax.plot(e, fit, "r-", lw=1.2, label="posterior mean fit")
    for c in dm.components(e, theta):
        ax.plot(e, c, lw=0.7)
    for lo, hi in (res.windows["l3"],):
        ax.axvspan(lo, hi, color="0.9", zorder=0, label="L3 window")
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_title(f"dichroism: (K_pos, K_neg) = ({a}, {b})")
    ax.set_xlabel("energy (eV)")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for name in ("m_orb", "m_spin_eff"):
        s = res.summary[name]
        ax.hist(res.moments[name].ravel(), bins=40, alpha=0.6,
                label=f"{name} = {s['mean']:.3f} +/- {s['sd']:.3f}")
    ax.set_xlabel("moment (Bohr magnetons per atom)")
    r = res.summary["ratio"]
    ax.set_title(f"m_orb / m_spin_eff = {r['mean']:.3f} [{r['q2.5']:.3f}, {r['q97.5']:.3f}]")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
