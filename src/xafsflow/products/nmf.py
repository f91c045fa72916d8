"""The nmf product: nonnegative matrix factorization of a normalized micro-XAFS stack.

Reads the scan store's per-pixel normalized spectra (``norm``, (energy, y, x))
and edge steps, masks pixels whose edge step is below ``mask_fraction`` of the
median (no sample, too thin, or not normalizable), factorizes the remaining
pixels x energies matrix for k = k_min..k_max with
:func:`xafsflow.imaging.nmf.select_k` (distributed HALS over chunks of pixels),
chooses k by the error-curve gain criterion and writes
``segmentation/<scan_id>.nmf.zarr``: ``H`` (k, energy), ``W`` (k, y, x)
chunked like the input, the error curve of the chosen k, the k-selection
curve, the mask and provenance; a TSV of the components and a PNG.

Scheduler: a distributed cluster (:func:`xafsflow.distributed.client`) and
the Dask runner of :func:`~xafsflow.imaging.nmf.nmf` when the stack (float64)
exceeds a quarter of the step's memory; otherwise the in-process runner (the
stack read once into memory, a pool of the rule's threads over row tiles; a
small stack is done before a cluster would have started). Recorded in
provenance.
"""

from __future__ import annotations

import csv
import sys

import numpy as np

from xafsflow.errors import AnalysisInputError
from xafsflow.io import store as st
from xafsflow.products import Product

PRODUCT = Product(
    name="nmf",
    directory="segmentation",
    kinds=("stack",),
    params_key="nmf",
    part="nmf",
    summary_fields=("k", "error", "masked_fraction", "edges_eV"),
    description="NMF of a micro-XAFS stack's pixels x energies matrix (distributed HALS; k by the error curve)",
    module=__name__,
)


def add_arguments(p) -> None:
    """``xafsflow nmf`` has only the common options."""


def check(params: dict, n_points: int | None = None) -> list[str]:
    """Problems with a resolved ``nmf`` block, found without running anything."""
    problems = []
    if params["k_min"] > params["k_max"]:
        problems.append(f"k range [{params['k_min']}, {params['k_max']}] is empty (k_min > k_max)")
    if n_points is not None and params["k_max"] > n_points:
        problems.append(f"k_max = {params['k_max']} exceeds the {n_points} energies of the stack")
    return problems


def summary(attrs: dict) -> dict:
    """Summary fields (without the ``nmf.`` prefix) and flags from the store's attributes."""
    edges = attrs.get("edge_positions") or []
    err = attrs.get("final_error")
    frac = attrs.get("masked_fraction")
    return {
        "k": attrs.get("k_selected", ""),
        "error": "" if err is None else f"{err:.4g}",
        "masked_fraction": "" if frac is None else f"{frac:.3f}",
        "edges_eV": ";".join(f"{e:.1f}" for e in edges),
        "flags": list(attrs.get("flags") or []),
    }


def run(args) -> str:
    """``xafsflow nmf``: factorize one stack scan store and write its store, TSV and PNG."""
    from xafsflow.products._common import load_params, scan_kind

    attrs = dict(st.open_store(args.scan_store).attrs)
    params = load_params(args, scan_kind(PRODUCT, attrs, args.scan_store))
    scan_id = args.scan_id or attrs.get("scan_id", "scan")
    out = run_nmf(args.scan_store, args.out, args.tsv, args.png, params["nmf"], scan_id, args.seed,
                  threads=args.threads, mem_mb=args.mem_mb, params_hash=args.params_hash, dashboard=args.dashboard)
    return (f"nmf: k = {out['k']} (relative error {out['error']:.4g}, {out['masked']} pixels masked) -> {args.out}")


def stack_inputs(scan_store, mask_fraction: float):
    """(energy, lazy X (npix, E), mask (npix,), mask threshold, (E, ny, nx), chunks, source file)."""
    import dask.array as da

    from xafsflow.imaging.pixels import edge_step_mask

    g = st.open_store(scan_store)
    attrs = dict(g.attrs)
    src = next(iter(attrs.get(st.PROVENANCE_KEY, {}).get("raw_inputs", {})), str(scan_store))
    if "norm" not in g or "edge_step" not in g:
        raise AnalysisInputError("scan store has no per-pixel normalized stack (norm, edge_step): normalize it first",
                                 src)
    energy = g["energy"][...]
    norm = g["norm"]
    ne, ny, nx = norm.shape
    mask, threshold = edge_step_mask(g["edge_step"][...].ravel(), mask_fraction)
    if mask.all():
        raise AnalysisInputError(f"every pixel is masked (edge step below {mask_fraction:g} of the median, or not "
                                 "normalized): nothing to factorize; check the normalization windows", src)
    X = da.from_zarr(norm).reshape(ne, ny * nx).T  # whole-row chunks: one pixel block per chunk
    return energy, X, mask, threshold, (ne, ny, nx), norm.chunks, src


def run_nmf(scan_store, out, tsv, png, p: dict, scan_id: str, campaign_seed, threads: int = 1,
            mem_mb: int = 2000, params_hash: str | None = None, dashboard: bool = False) -> dict:
    """Factorize one stack and write ``out`` (Zarr), ``tsv`` and ``png``; returns a small report dict."""
    import time
    from contextlib import nullcontext

    from xafsflow.imaging.nmf import select_k

    energy, X, mask, threshold, shape, chunks, src = stack_inputs(scan_store, p["mask_fraction"])
    ne, ny, nx = shape
    n_used = int((~mask).sum())
    k_max = min(p["k_max"], n_used, ne)
    if p["k_min"] > k_max:
        raise AnalysisInputError(f"k_min = {p['k_min']} exceeds the {n_used} unmasked pixels or {ne} energies", src)
    big = 8 * ne * ny * nx > mem_mb * 1e6 / 4
    scheduler = "distributed" if big else "threads (in process)"

    def progress(k, it, err):
        if it == 1 or it % 25 == 0:
            print(f"nmf {scan_id}: k={k} iteration {it} relative error {err:.6g}", file=sys.stderr, flush=True)

    if scheduler == "distributed":
        from xafsflow.distributed import client

        ctx = client(threads, mem_mb, dashboard=dashboard)
    else:
        ctx = nullcontext()
    t0 = time.perf_counter()
    with ctx:
        k, ks, errs, fits = select_k(X, p["k_min"], k_max, mask=mask, energy=energy, max_iter=p["max_iter"],
                                     tol=p["tol"], k_gain=p["k_gain"], init=p["init"], progress=progress,
                                     runner="dask" if big else "threads", threads=threads)
        fit = fits[k]
        seconds = time.perf_counter() - t0
        flags = []
        if k == k_max and k_max > p["k_min"]:
            flags.append(f"k_at_limit(k={k})")
        if not fit.converged:
            flags.append(f"not_converged({fit.iterations} iterations)")
        if mask.mean() > 0.9:
            flags.append(f"mostly_masked({100 * mask.mean():.0f} %)")
        attrs = {
            "scan_id": scan_id, "k_selected": int(k), "final_error": float(fit.errors[-1]),
            "iterations": int(fit.iterations), "converged": bool(fit.converged),
            "edge_positions": [float(x) for x in fit.edge_positions],
            "masked_pixels": int(mask.sum()), "masked_fraction": float(mask.mean()),
            "mask_threshold_edge_step": threshold, "counts": fit.counts, "flags": flags,
            "k_criterion": f"smallest k with e(k) - e(k+1) < {p['k_gain']:g} e(k) (relative error e)",
            "seconds": seconds, "scheduler": scheduler,
        }
        write_store(out, energy, fit, ks, errs, mask, shape, chunks, attrs, p, campaign_seed, params_hash,
                    scan_store)
    W = st.open_store(out)["W"][...]
    write_tsv(tsv, energy, fit.H, fit.edge_positions, W, mask.reshape(ny, nx))
    plot_nmf(png, energy, fit.H, W, mask.reshape(ny, nx), ks, errs, fit.errors, k, scan_id)
    return {"k": k, "error": float(fit.errors[-1]), "masked": int(mask.sum())}


def write_store(out, energy, fit, ks, errs, mask, shape, chunks, attrs, p, seed, params_hash, scan_store) -> None:
    """H (k, energy), W (k, y, x) chunked like the input, error curves, mask; provenance."""
    import dask.array as da

    ne, ny, nx = shape
    k = fit.H.shape[0]
    inprov = dict(st.open_store(scan_store).attrs).get(st.PROVENANCE_KEY, {})
    prov = st.provenance("nmf", [], {"nmf": p}, seed, params_hash, [],
                         extra={"raw_inputs": inprov.get("raw_inputs", {}), "scheduler": attrs["scheduler"],
                                "negative_entries_kept": fit.counts.get("negative"),
                                "init": f"{p['init']} (deterministic: no random numbers)"})
    with st.atomic_store(out) as g:
        st.put_array(g, "energy", energy, ("energy",), attrs={"units": "eV"})
        st.put_array(g, "component", np.arange(k), ("component",))
        st.put_array(g, "H", fit.H, ("component", "energy"),
                     attrs={"meaning": "component spectra, mean 1 over the top tenth of energies (post-edge)"})
        target = st.create_array(g, "W", (k, ny, nx), np.float32, ("component", "y", "x"),
                                 (1,) + tuple(chunks[1:]),
                                 attrs={"meaning": "abundance of each component (fraction of the edge step)"})
        Wd = fit.W if isinstance(fit.W, da.Array) else da.from_array(fit.W)
        da.store(Wd.T.reshape(k, ny, nx).astype(np.float32).rechunk((1,) + tuple(chunks[1:])), target, lock=False)
        st.put_array(g, "edge_position", fit.edge_positions, ("component",), attrs={"units": "eV"})
        st.put_array(g, "error", fit.errors, ("iteration",),
                     attrs={"meaning": "relative reconstruction error ||X - WH|| / ||X|| after each iteration"})
        st.put_array(g, "k", np.asarray(ks), ("k",))
        st.put_array(g, "k_error", errs, ("k",), attrs={"meaning": "final relative error of each k tried"})
        st.put_array(g, "mask", mask.reshape(ny, nx).astype(np.uint8), ("y", "x"),
                     attrs={"meaning": "1: excluded (edge step below the threshold, or not normalized)"})
        st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})


def write_tsv(path, energy, H, edges, W, mask2d) -> None:
    """One row per component: half-height edge, energy of its maximum, mean abundance, dominant pixels."""
    keep = ~mask2d.astype(bool)
    dom = np.argmax(W, axis=0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["component", "edge_eV", "max_eV", "mean_abundance", "dominant_fraction"])
        for j in range(H.shape[0]):
            w.writerow([j, f"{edges[j]:.2f}", f"{energy[int(np.argmax(H[j]))]:.2f}",
                        f"{float(W[j][keep].mean()):.4f}", f"{float((dom[keep] == j).mean()):.4f}"])


def plot_nmf(path, energy, H, W, mask2d, ks, errs, curve, k, scan_id) -> None:
    """Component spectra, abundance maps, the k-selection curve and the chosen k's error curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncomp = H.shape[0]
    fig, axes = plt.subplots(1, 3 + ncomp, figsize=(4 * (3 + ncomp), 3.6))
    for j in range(ncomp):
        axes[0].plot(energy, H[j], lw=1.2, label=f"component {j}")
    axes[0].set_xlabel("energy (eV)")
    axes[0].set_title(f"{scan_id}: k = {k}")
    axes[0].legend(fontsize=7)
    axes[1].plot(ks, errs, "o-")
    axes[1].axvline(k, color="r", lw=0.8)
    axes[1].set_xlabel("k")
    axes[1].set_ylabel("relative error")
    axes[1].set_title("k selection")
    axes[2].semilogy(np.arange(1, curve.size + 1), curve)
    axes[2].set_xlabel("iteration")
    axes[2].set_title("error (chosen k)")
    for j in range(ncomp):
        m = np.ma.masked_where(mask2d.astype(bool), W[j])
        im = axes[3 + j].imshow(m, cmap="viridis")
        axes[3 + j].set_title(f"abundance {j}")
        fig.colorbar(im, ax=axes[3 + j], shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
