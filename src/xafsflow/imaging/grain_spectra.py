"""Micro to meso: the XANES of each grain of a segmented micro-XAFS stack, with posterior edge positions.

A grain is a connected region of one class of the MRF label map (4- or
8-neighbours, as the segmentation's Potts neighbourhood). For every grain of at
least ``min_area`` pixels:

1. its spectrum is the mean of its pixels' normalized spectra and its per-point
   uncertainty the pixels' spread, sd / sqrt(n) (:func:`grain_mean_spectra`,
   one pass over the stack's row blocks, sums in float64);
2. the XANES model (:func:`xafsflow.bayes.models.xanes_model`: arctan step +
   pseudo-Voigt white line + K Gaussians) is sampled by replica exchange
   (:func:`xafsflow.bayes.posterior.analyse`) with the likelihood weighted by
   1 / uncertainty (relative weights; the overall noise level is still
   estimated), over a small K range and priors that keep the edge identifiable
   (the white line above the edge, a bounded step width);
3. the edge position is the arctan step's centre ``e0`` of the selected K, with
   its central credible interval (:func:`edge_summary`); grains whose intervals
   overlap, directly or through others, form one edge group (:func:`edge_groups`),
   so two grains in different groups are told apart by their edge.

With the pre-edge model (``spec.model == "preedge"``: edge tail + line + K
Gaussians over a window below the edge) the grain's position is instead the
area-weighted pre-edge centroid (:func:`xafsflow.bayes.models.preedge_moments`),
reported with the integrated intensity; groups are formed the same way.

No file I/O here: :mod:`xafsflow.products.segment` reads the stack, writes the
grain spectra into the segment store and the rows into its table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Parameter the edge position is read from (the xanes model's arctan centre, eV).
EDGE_PARAMETER = "e0"

#: What a grain's position is, by model: the xanes edge or the pre-edge centroid.
POSITION = {"xanes": "edge", "preedge": "centroid"}


def find_grains(labels: np.ndarray, neighbours: int = 4) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Connected regions of one class.

    Parameters
    ----------
    labels : ndarray of int, shape (y, x)
        Class of each pixel, -1 masked.
    neighbours : {4, 8}
        Connectivity.

    Returns
    -------
    grain_map : ndarray of int32, shape (y, x)
        Grain id of each pixel, -1 outside any grain (masked).
    table : list of (grain id, class, area in pixels)
        Grains numbered class by class, each class's regions in scan order.
    """
    from scipy import ndimage

    if neighbours not in (4, 8):
        raise ValueError(f"neighbours must be 4 or 8, got {neighbours}")
    structure = ndimage.generate_binary_structure(2, 1 if neighbours == 4 else 2)
    out = np.full(labels.shape, -1, dtype=np.int32)
    table = []
    for c in range(int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0):
        lab, n = ndimage.label(labels == c, structure=structure)
        for k in range(1, n + 1):
            sel = lab == k
            gid = len(table)
            out[sel] = gid
            table.append((gid, c, int(sel.sum())))
    return out, table


def grain_mean_spectra(blocks, grain_map: np.ndarray, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean spectrum of each grain's pixels and its per-point standard error, in one pass over the stack.

    Parameters
    ----------
    blocks : iterable of (y0, ndarray (E, rows, x))
        The normalized stack in row blocks starting at row ``y0`` (e.g. its Zarr row chunks).
    grain_map : ndarray of int, shape (y, x)
        Grain id of each pixel (-1: none).
    ids : sequence of int
        The grains wanted.

    Returns
    -------
    mean, sem : ndarray, shape (G, E)
        Mean over the grain's pixels (normalized units) and the standard error of that mean,
        sd / sqrt(n) with the pixels' sample sd (ddof 1); non-finite pixel values are left out
        point by point; NaN where a point has fewer than 2 finite pixels.
    n : ndarray of int, shape (G, E)
        Pixels averaged at each point.
    """
    ids = [int(g) for g in ids]
    index = np.full(int(max(grain_map.max(), max(ids, default=-1))) + 2, -1, dtype=np.int64)
    for i, g in enumerate(ids):
        index[g] = i
    s = s2 = cnt = None
    for y0, block in blocks:
        block = np.asarray(block, dtype=np.float64)
        ne, rows = block.shape[0], block.shape[1]
        if s is None:
            s, s2, cnt = (np.zeros((len(ids), ne)) for _ in range(3))
        gm = grain_map[y0: y0 + rows].ravel()
        which = index[np.where(gm >= 0, gm, index.size - 1)]
        keep = which >= 0
        if not keep.any():
            continue
        v = block.reshape(ne, -1)[:, keep]  # (E, pixels)
        w = which[keep]
        ok = np.isfinite(v)
        v0 = np.where(ok, v, 0.0)
        for arr, val in ((s, v0), (s2, v0 * v0), (cnt, ok.astype(np.float64))):
            np.add.at(arr, w, val.T)
    if s is None:
        raise ValueError("no stack blocks given")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / cnt
        var = np.maximum(s2 - cnt * mean * mean, 0.0) / (cnt - 1)
        sem = np.sqrt(var / cnt)
    sem = np.where(cnt >= 2, sem, np.nan)
    return np.where(cnt >= 1, mean, np.nan), sem, cnt.astype(np.int64)


@dataclass
class GrainPosterior:
    """One grain's spectrum and the posterior of its edge."""

    grain: int
    cls: int
    area: int
    energy: np.ndarray  # fitted energies (eV)
    spectrum: np.ndarray  # mean normalized spectrum there
    uncertainty: np.ndarray  # its per-point standard error
    edge: dict  # the position's median, q_lo, q_hi, level, sd (eV): the edge e0, or the pre-edge centroid
    k_selected: int
    p_k: float
    sigma_hat: float | None  # rms noise level of the weighted fit (normalized units)
    max_rhat: float
    component_areas: list = field(default_factory=list)  # median area of each component (eV x normalized)
    edge_draws: np.ndarray | None = None  # (chain, draw) of the position at the selected K
    log_z: float = float("nan")
    quantity: str = "edge"  # what ``edge`` summarizes: "edge" (xanes e0) or "centroid" (pre-edge)
    intensity: dict | None = None  # preedge: integrated intensity's median, q_lo, q_hi, level, sd (eV x norm.)


def edge_summary(draws: np.ndarray, level: float = 0.95) -> dict:
    """Median and central ``level`` interval (eV) of the edge draws."""
    a = (1.0 - level) / 2.0
    q = np.percentile(np.asarray(draws, float).ravel(), [100 * a, 50, 100 * (1 - a)])
    return {"median": float(q[1]), "q_lo": float(q[0]), "q_hi": float(q[2]), "level": float(level),
            "sd": float(np.std(draws))}


def edge_groups(intervals) -> list[int]:
    """Group of each interval: connected components of "the intervals overlap", numbered by position.

    Two grains in different groups have disjoint intervals, and so does every
    pair across the gap between groups; within a group each interval overlaps
    at least one other of the group (not necessarily all).

    Parameters
    ----------
    intervals : sequence of (lo, hi)

    Returns
    -------
    list of int
        Group number of each interval, 0 for the lowest energies.
    """
    iv = [(float(lo), float(hi)) for lo, hi in intervals]
    order = sorted(range(len(iv)), key=lambda i: iv[i][0])
    out = [0] * len(iv)
    group, reach = -1, -np.inf
    for i in order:
        lo, hi = iv[i]
        if lo > reach:
            group += 1
            reach = hi
        else:
            reach = max(reach, hi)
        out[i] = group
    return out


def fit_window(energy: np.ndarray, e0: float, fit_range, window=None) -> np.ndarray:
    """Mask of the energies within ``e0 + fit_range`` (eV), or within the absolute ``window`` (lo, hi) if given."""
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
    else:
        lo, hi = e0 + float(fit_range[0]), e0 + float(fit_range[1])
    return (energy >= lo) & (energy <= hi)


def grain_posterior(grain: int, cls: int, area: int, energy: np.ndarray, spectrum: np.ndarray,
                    uncertainty: np.ndarray, spec, campaign_seed: int, key: str, level: float = 0.95,
                    weighted: bool = True) -> GrainPosterior:
    """The posterior of one grain's spectrum and its position (xanes: edge e0; preedge: pre-edge centroid).

    Parameters
    ----------
    grain, cls, area : int
        Grain id, class and area (pixels), carried into the result.
    energy, spectrum, uncertainty : ndarray, shape (N,)
        The fitted energies (eV), mean normalized spectrum and its per-point standard error.
    spec : xafsflow.bayes.posterior.PosteriorSpec
        Model (``xanes`` or ``preedge``), K range, priors and chain settings.
    campaign_seed : int
        Seed; each grain's chains have their own streams, keyed by ``key`` (e.g. "<scan>/g<id>").
    level : float
        Credible level of the edge interval.
    weighted : bool
        Weights 1 / uncertainty in the likelihood (False: all points alike).
    """
    from xafsflow.bayes.models import COMP_GAUSS_AREA, PREEDGE_BG_NAMES, preedge_moments
    from xafsflow.bayes.posterior import analyse

    if spec.model not in POSITION:
        raise ValueError(f"grain spectra take the models {sorted(POSITION)}, not {spec.model!r}")
    weights = 1.0 / uncertainty if weighted else None
    res = analyse(energy, spectrum, spec, campaign_seed, key, weights=weights)
    ent = res.per_k[res.k_selected]
    names = list(ent["names"])
    intensity = None
    if spec.model == "preedge":
        total, draws = preedge_moments(ent["samples"], len(PREEDGE_BG_NAMES), spec.centroid_window)
        intensity = edge_summary(total, level)
    else:
        draws = ent["samples"][:, :, names.index(EDGE_PARAMETER)]
    model = spec.build(res.k_selected, energy)
    flat = ent["samples"].reshape(-1, model.n_params)
    areas = []
    if model.comp_type == COMP_GAUSS_AREA:
        areas = [float(np.median(flat[:, model.nb + 3 * k])) for k in range(res.k_selected)]
    rh = ent["rhat"][np.isfinite(ent["rhat"])]
    return GrainPosterior(
        grain=int(grain), cls=int(cls), area=int(area), energy=energy, spectrum=spectrum, uncertainty=uncertainty,
        edge=edge_summary(draws, level), k_selected=int(res.k_selected),
        p_k=float(res.p_k[res.ks.index(res.k_selected)]),
        sigma_hat=None if res.noise is None else float(res.noise["sigma_hat"]),
        max_rhat=float(rh.max()) if rh.size else float("nan"), component_areas=areas, edge_draws=draws,
        log_z=float(ent["log_z"]), quantity=POSITION[spec.model], intensity=intensity)


def usable(energy: np.ndarray, mean: np.ndarray, sem: np.ndarray, e0: float, fit_range, window=None) -> str | None:
    """Why a grain spectrum cannot be analysed over ``e0 + fit_range`` or ``window`` (None when it can)."""
    m = fit_window(energy, e0, fit_range, window)
    y, u = mean[m], sem[m]
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(u))):
        return "points without a finite mean or spread in the fit window"
    if not np.all(u > 0):
        return "points of zero spread in the fit window"
    return None


def analyse_grains(energy: np.ndarray, means: np.ndarray, sems: np.ndarray, grains, e0: float, fit_range, spec,
                   campaign_seed: int, scan_id: str, level: float = 0.95, client=None,
                   weighted: bool = True, window=None) -> list[GrainPosterior]:
    """The posterior of every grain, one after the other or one Dask task per grain.

    Every grain's spectrum must be :func:`usable` (else a ValueError naming the grain).

    Parameters
    ----------
    energy : ndarray, shape (E,)
        The stack's energies (eV).
    means, sems : ndarray, shape (G, E)
        Grain spectra and their standard errors (:func:`grain_mean_spectra`).
    grains : sequence of (grain id, class, area)
        The G grains, in the rows' order.
    e0 : float
        The stack's edge energy (eV): the fit window is ``e0 + fit_range`` and the
        xanes model's default priors centre there.
    client : distributed.Client, optional
        Spread the grains over its workers (each grain's result depends only on its
        own random streams, so it is the same either way).
    window : (lo, hi), optional
        Absolute fitted range (eV) replacing ``e0 + fit_range`` (the pre-edge model's window).
    """
    m = fit_window(energy, e0, fit_range, window)
    x = energy[m]
    tasks = []
    for i, (gid, cls, area) in enumerate(grains):
        y, u = means[i, m], sems[i, m]
        why = usable(energy, means[i], sems[i], e0, fit_range, window)
        if why is not None:
            raise ValueError(f"grain {gid}: {why}")
        tasks.append((gid, cls, area, x, y, u, spec, campaign_seed, f"{scan_id}/g{gid}", level, weighted))
    if client is None:
        return [grain_posterior(*t) for t in tasks]
    futs = [client.submit(grain_posterior, *t, pure=False, key=f"grain-posterior-{t[8]}") for t in tasks]
    return client.gather(futs)
