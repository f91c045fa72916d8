"""Bayesian spectroscopy of an XMCD pair (after Yamasaki et al., STAM Methods 1, 75 (2021)).

Three decompositions, each sampled with the replica-exchange engine
(:mod:`xafsflow.bayes.remc`) and compared across numbers of components by the
Bayesian free energy (:mod:`xafsflow.bayes.free_energy`):

* each helicity spectrum mu+ and mu-: a two-step edge background (arctan steps
  at L3 and L2, statistical 2:1 heights, :func:`xafsflow.xas.sum_rules.edge_steps`)
  plus K components; K by free energy;
* the dichroism mu+ - mu-: K_pos components of positive and K_neg of negative
  area (the steps cancel); (K_pos, K_neg) on a grid by free energy.

Components: pseudo-Voigt of area A, centre c and Gaussian standard deviation s,
convolved with a Lorentzian of fixed FWHM 1 eV (core-hole lifetime;
:data:`xafsflow.bayes.models.LORENTZ_FWHM`), approximated after Thompson, Cox &
Hastings (1987). Default priors: c uniform over the fitted range; s
log-uniform from 0.05 to 2 eV (from beamline resolution to a broad multiplet; a
physical width, not one the noise could imitate); helicity areas Gamma(2) with
mean half the step-free area of the spectrum; dichroism areas uniform on
(0, A_max) or (-A_max, 0) with A_max the integral of |mu+ - mu-| over the
fitted range.

The edge steps are fixed, not sampled: positions (L3, L2 maxima of the helicity
average unless given), width, and height (given, e.g. 1 after the common
edge-jump normalization, or else each helicity's own post-edge level,
:func:`step_level`) are recorded with the result; their uncertainty is not in
the intervals. The dichroism is fitted with the steps removed (their
difference, when the two heights differ).

Each posterior draw gives p, q (from the dichroism's components) and r (from
the two helicities' components, i.e. the spectra with the steps removed), all
as exact window integrals of the components, and so one draw of the moments
(:func:`xafsflow.xas.sum_rules.moments`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from xafsflow.bayes import free_energy as fe
from xafsflow.bayes.models import COMP_PVOIGT_1EV, BG_NONE, SpectralModel, pvoigt_integral
from xafsflow.bayes.posterior import PosteriorSpec
from xafsflow.bayes.priors import prior_from_config
from xafsflow.errors import AnalysisInputError
from xafsflow.xas import sum_rules as sr

WIDTH_PRIOR = {"dist": "loguniform", "lo": 0.05, "hi": 2.0}


def helicity_model(K: int, e_lo: float, e_hi: float, area_mean: float, width: dict | None = None) -> SpectralModel:
    """K pseudo-Voigt components (area > 0, centre, Gaussian sd), centres ordered; steps removed beforehand."""
    pri = {"area": {"dist": "gamma", "shape": 2.0, "rate": 2.0 / area_mean},
           "centre": {"dist": "uniform", "lo": e_lo, "hi": e_hi}, "width": width or WIDTH_PRIOR}
    ps, names = [], []
    for k in range(1, K + 1):
        for key in ("area", "centre", "width"):
            ps.append(prior_from_config(pri[key], f"{key}_{k}"))
            names.append(f"{key}_{k}")
    return SpectralModel("xmcd_helicity", K, ps, names, COMP_PVOIGT_1EV, BG_NONE, 0)


def dichroism_model(k_pos: int, k_neg: int, e_lo: float, e_hi: float, area_max: float,
                    width: dict | None = None) -> SpectralModel:
    """k_pos components of positive area then k_neg of negative area.

    Not ordered: the kernel orders all centres together, which would tie the
    signs to energy; label switching within a sign group leaves p, q, r and the
    moments unchanged, and the evidence of the unordered model equals that of
    the ordered one. Draws are sorted within each sign group
    (:func:`order_within_signs`) before R-hat, ESS and storage.
    """
    ps, names = [], []
    for sign, count, tag in ((1, k_pos, "pos"), (-1, k_neg, "neg")):
        area = ({"dist": "uniform", "lo": 0.0, "hi": area_max} if sign > 0
                else {"dist": "uniform", "lo": -area_max, "hi": 0.0})
        pri = {"area": area, "centre": {"dist": "uniform", "lo": e_lo, "hi": e_hi}, "width": width or WIDTH_PRIOR}
        for k in range(1, count + 1):
            for key in ("area", "centre", "width"):
                ps.append(prior_from_config(pri[key], f"{key}_{tag}{k}"))
                names.append(f"{key}_{tag}{k}")
    return SpectralModel("xmcd_dichroism", k_pos + k_neg, ps, names, COMP_PVOIGT_1EV, BG_NONE, 0, ordered=False)


@dataclass
class HelicitySpec(PosteriorSpec):
    """A :class:`PosteriorSpec` whose K-component model is :func:`helicity_model`."""

    e_lo: float = 0.0
    e_hi: float = 1.0
    area_mean: float = 1.0
    width_prior: dict | None = None

    def build(self, K: int, x: np.ndarray) -> SpectralModel:
        return helicity_model(K, self.e_lo, self.e_hi, self.area_mean, self.width_prior)


@dataclass
class DichroismSpec(PosteriorSpec):
    """K is K_neg; ``n_pos`` (K_pos) is fixed per spec (the grid runs one spec per K_pos)."""

    n_pos: int = 1
    e_lo: float = 0.0
    e_hi: float = 1.0
    area_max: float = 1.0
    width_prior: dict | None = None

    def build(self, K: int, x: np.ndarray) -> SpectralModel:
        return dichroism_model(self.n_pos, K, self.e_lo, self.e_hi, self.area_max, self.width_prior)

    def relabel(self, samples: np.ndarray) -> np.ndarray:
        return order_within_signs(samples, self.n_pos)


def order_within_signs(samples: np.ndarray, n_pos: int) -> np.ndarray:
    """Dichroism draws (..., 3 (K_pos + K_neg)) with the components of each sign group sorted by centre.

    The unordered dichroism model is symmetric under permutations within a
    sign group, so sorting is a label-invariant view of each draw (the ordered
    model's posterior): its parameters get a meaningful R-hat and ESS, and the
    stored draws read as "first, second, ... positive component by energy".
    """
    s = np.asarray(samples, float)
    k = s.shape[-1] // 3
    comps = s.reshape(s.shape[:-1] + (k, 3)).copy()
    for lo, hi in ((0, n_pos), (n_pos, k)):
        if hi - lo > 1:
            grp = comps[..., lo:hi, :]
            order = np.argsort(grp[..., 1], axis=-1, kind="stable")
            comps[..., lo:hi, :] = np.take_along_axis(grp, order[..., None], axis=-2)
    return comps.reshape(s.shape)


@dataclass
class XmcdSpec:
    """What to run for one pair (sampler settings shared by the three decompositions)."""

    base: PosteriorSpec = field(default_factory=PosteriorSpec)  # settings, replicas, runs, tuning, convergence
    k_min: int = 1
    k_max: int = 4
    k_pos: tuple[int, int] = (1, 3)
    k_neg: tuple[int, int] = (1, 3)
    grid_limit: int = 5  # K_pos and K_neg each grow past their range (one at a time) up to this
    width_prior: dict | None = None
    n_holes: float | None = None  # required
    polarization: float | None = None  # required
    cos_incidence: float = 1.0
    l3: float | None = None  # step positions (eV); None: maxima of the helicity average
    l2: float | None = None
    step_width: float = 1.0
    step_height: float | None = None  # None: each helicity's own post-edge level (step_level)
    l3_window: tuple[float, float] | None = None
    l23_window: tuple[float, float] | None = None


@dataclass
class XmcdResult:
    energy: np.ndarray
    plus: object  # PosteriorResult
    minus: object
    dichroism: dict  # grid: k_pos, k_neg, log_z (2-D), p (2-D), selected (k_pos, k_neg), entry, per cell
    steps: dict  # l3, l2, width, height
    windows: dict  # l3, l23
    integrals: dict  # p, q, r as (chains, draws)
    moments: dict  # m_orb, m_spin_eff, ratio as (chains, draws)
    summary: dict  # per quantity: mean, sd, q2.5, q97.5, rhat, ess
    models: dict = field(default_factory=dict)


def check_pair(energy, mu_plus, mu_minus, source: str | None = None) -> None:
    """Refuse pairs the analysis cannot use: unequal lengths, non-finite values, energies not increasing."""
    e, mp, mm = (np.asarray(a, float) for a in (energy, mu_plus, mu_minus))
    if not (e.shape == mp.shape == mm.shape) or e.ndim != 1:
        raise AnalysisInputError(f"XMCD pair of unequal lengths: energy {e.shape}, mu+ {mp.shape}, mu- {mm.shape}",
                                 source)
    for name, a in (("energy", e), ("mu+", mp), ("mu-", mm)):
        bad = int(np.sum(~np.isfinite(a)))
        if bad:
            raise AnalysisInputError(f"{name} has {bad} non-finite value(s) (NaN or inf)", source)
    if np.any(np.diff(e) <= 0):
        raise AnalysisInputError("energy axis of the XMCD pair is not strictly increasing", source)


def check_expected_sign(energy, dichroism, l3_window, expected: str | None, source: str | None = None) -> float:
    """The L3 dichroism integral p; an AnalysisInputError when its sign contradicts ``expected``
    ('negative' or 'positive'): the helicities (or magnetization directions) are probably swapped."""
    p = sr.window_integral(energy, dichroism, *l3_window)
    if expected is not None:
        want = -1 if expected == "negative" else 1
        if np.sign(p) != want:
            raise AnalysisInputError(
                f"L3 dichroism integral p = {p:.4g} is {'positive' if p > 0 else 'negative'} but the sheet expects "
                f"{expected}: helicities swapped? (swap the files or fix xmcd_l3_sign)", source)
    return float(p)


def step_level(energy, mu, fraction: float = 0.15) -> float:
    """Post-edge level of one normalized helicity: the median over the top ``fraction`` of the energy range
    (at least 3 points) — the edge-step height when the sheet gives none."""
    e = np.asarray(energy, float)
    cut = e[-1] - fraction * (e[-1] - e[0])
    m = e >= cut
    if m.sum() < 3:
        m = np.zeros(e.size, bool)
        m[-3:] = True
    return float(np.median(np.asarray(mu, float)[m]))


def _component_window_integrals(samples: np.ndarray, window) -> np.ndarray:
    """Sum over components of their exact integrals over ``window``; samples (..., 3K) -> (...)."""
    comps = samples.reshape(samples.shape[:-1] + (-1, 3))
    return pvoigt_integral(comps[..., 0], comps[..., 1], comps[..., 2], window[0], window[1]).sum(axis=-1)


def _paired(a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Trim three (chains, draws) sets to common shape (each decomposition is an independent posterior)."""
    ch = min(a.shape[0], b.shape[0], c.shape[0])
    n = min(a.shape[1], b.shape[1], c.shape[1])
    return a[:ch, :n], b[:ch, :n], c[:ch, :n]


def summarize_draws(draws: np.ndarray) -> dict:
    """Mean, sd, 95 % interval, rank-normalized R-hat and bulk ESS of one quantity's (chains, draws)."""
    from xafsflow.bayes.diagnostics import ess_bulk, rank_normalized_rhat

    flat = draws.ravel()
    lo, hi = np.percentile(flat, [2.5, 97.5])
    rh = float(rank_normalized_rhat(draws)) if draws.shape[0] > 1 else float("nan")
    return {"mean": float(flat.mean()), "sd": float(flat.std(ddof=1)), "q2.5": float(lo), "q97.5": float(hi),
            "rhat": rh, "ess": float(ess_bulk(draws))}


def greedy_start(model: SpectralModel, k_pos: int, k_neg: int, x, y) -> np.ndarray | None:
    """A start for a dichroism cell: components peeled off the data one at a time, the k_pos positive ones at
    the largest positive residuals, then the k_neg negative ones at the largest negative residuals (height and
    half-maximum width from the residual), moved into the prior's support; None if outside the prior."""
    from xafsflow.bayes.models import _into_support, pvoigt

    resid = np.asarray(y, float).copy()
    comps = []
    for sign, count in ((1.0, k_pos), (-1.0, k_neg)):
        for _ in range(count):
            r = sign * resid
            i = int(np.argmax(r))
            height = float(r[i])
            if height <= 0:
                return None
            half = r >= height / 2
            lo = hi = i
            while lo > 0 and half[lo - 1]:
                lo -= 1
            while hi < x.size - 1 and half[hi + 1]:
                hi += 1
            # the Gaussian part of the width: what the 1 eV Lorentzian does not explain
            fwhm = max(float(x[hi] - x[lo]), 1e-3)
            sd = max(math.sqrt(max(fwhm**2 - 1.0, 0.0)) / 2.355, 0.1)
            area = height / float(pvoigt(np.array([0.0]), 1.0, 0.0, sd)[0])
            comp = [sign * area, float(x[i]), sd]
            comps.append(comp)
            resid -= sign * pvoigt(x, area, comp[1], sd)
    theta = np.array([_into_support(p, v) for p, v in zip(model.priors, np.ravel(comps))])
    return theta if np.isfinite(model.log_prior(theta)) else None


def _grid(x, y, spec: XmcdSpec, area_max, seed, scan_id, client, log, checkpoint_dir=None) -> dict:
    """Dichroism decompositions for every (K_pos, K_neg) on the grid; P(K_pos, K_neg | data).

    The grid grows past ``spec.k_pos`` / ``spec.k_neg``, one row or column at a
    time, while its top K_pos row (or top K_neg column) keeps a marginal
    probability >= ``spec.base.expand_p`` and the points support the new top
    cell, up to ``spec.grid_limit`` (each range's own top when larger; 1 keeps the grid as given).
    """
    from xafsflow.bayes.posterior import (_ladder, _Runner, _sample_k, check_spectrum, largest_supported_k,
                                          require_points)

    kp = list(range(spec.k_pos[0], spec.k_pos[1] + 1))
    kn = list(range(spec.k_neg[0], spec.k_neg[1] + 1))

    def cell_spec(k_pos):
        fields = {f: getattr(spec.base, f) for f in PosteriorSpec.__dataclass_fields__}
        fields.update(model="xmcd", k_min=kn[0], k_max=kn[-1])
        return DichroismSpec(**fields, n_pos=k_pos, e_lo=float(x[0]), e_hi=float(x[-1]), area_max=area_max,
                             width_prior=spec.width_prior)

    top = cell_spec(kp[-1])
    check_spectrum(x, y, top)
    # every cell of the grid is compared, none may be lowered: the top one has K_pos + K_neg components
    require_points(x.size, top.model, kp[-1] + kn[-1])
    base = _ladder(x, y, top, seed, f"{scan_id}/dichroism", None)  # one ladder start and b prior for all cells
    b_range = (float(base[1]), float(base[-1]))
    tune = spec.base.tuning.enabled and not spec.base.ladder
    cells: dict = {}
    runners: dict = {}

    def sample_row(a: int, ks: list[int]) -> None:
        """Cells (a, b) for b in ks; a row's chains share a runner (random streams, checkpoints)."""
        if a not in runners:
            ck = None if checkpoint_dir is None else str(Path(checkpoint_dir) / "dichroism" / f"pos{a}")

            def row_log(msg, a=a):
                log(f"K_pos={a}, " + re.sub(r"^K=", "K_neg=", msg))

            runners[a] = (cell_spec(a), _Runner(x, y, cell_spec(a), seed, f"{scan_id}/dichroism/pos{a}", client,
                                                ck, row_log))
        cs, runner = runners[a]
        pilots = runner.pilots(ks, base) if tune else {}
        for b in ks:
            start = greedy_start(cs.build(b, x), a, b, x, y) if spec.base.mode_starts else None
            ent = _sample_k(runner, b, base, pilots.get(b), start, x.size, b_range)
            ent["start"] = start
            cells[(a, b)] = ent

    def table():
        log_z = np.array([[cells[(a, b)]["log_z"] for b in kn] for a in kp])
        return log_z, fe.model_probabilities(log_z.ravel()).reshape(log_z.shape)

    for a in kp:
        sample_row(a, kn)
    log_z, p = table()
    lim_pos, lim_neg = max(spec.grid_limit, spec.k_pos[1]), max(spec.grid_limit, spec.k_neg[1])
    k_points = largest_supported_k("xmcd", x.size)  # a cell has K_pos + K_neg components
    while True:
        grow_neg = p[:, -1].sum() >= spec.base.expand_p and kn[-1] < lim_neg and kp[-1] + kn[-1] < k_points
        grow_pos = (p[-1, :].sum() >= spec.base.expand_p and kp[-1] < lim_pos
                    and kp[-1] + kn[-1] + int(grow_neg) < k_points)
        if not (grow_neg or grow_pos):
            break
        if grow_neg:
            kn.append(kn[-1] + 1)
            log(f"grid grows to K_neg = {kn[-1]} (P(K_neg = {kn[-1] - 1}) = {p[:, -1].sum():.3f})")
            for a in kp:
                sample_row(a, [kn[-1]])
        if grow_pos:
            kp.append(kp[-1] + 1)
            log(f"grid grows to K_pos = {kp[-1]} (P(K_pos = {kp[-1] - 1}) = {p[-1, :].sum():.3f})")
            sample_row(kp[-1], kn)
        log_z, p = table()
    i, j = np.unravel_index(int(np.argmax(p)), p.shape)
    return {"k_pos": kp, "k_neg": kn, "log_z": log_z, "p": p, "selected": (kp[i], kn[j]), "cells": cells,
            "bvals": base, "limits": (lim_pos, lim_neg)}


def analyse_pair(energy, mu_plus, mu_minus, spec: XmcdSpec, campaign_seed: int, scan_id: str, client=None,
                 source: str | None = None, fit_range: tuple[float, float] | None = None,
                 progress=None, expected_l3_sign: str | None = None,
                 checkpoint_dir: str | Path | None = None) -> XmcdResult:
    """Decompose both helicities and the dichroism, select the numbers of components, sample the moments.

    Parameters
    ----------
    energy, mu_plus, mu_minus : array_like
        The pair on one grid (eV; normalized by a common edge jump).
    spec : XmcdSpec
        Sampler settings, K ranges, sum-rule inputs (n_h, P_c, cos theta),
        edge steps and windows.
    campaign_seed, scan_id : int, str
        Random streams: ``SeedSequence([seed, blake2b(scan_id/part, "posterior", K, run)])``.
    fit_range : (float, float), optional
        Fitted energies (eV, absolute); default the whole pair.
    expected_l3_sign : {'negative', 'positive'}, optional
        Sign the L3 dichroism must have (swapped helicities are refused).
    checkpoint_dir : path, optional
        Where every chain checkpoints (``plus/``, ``minus/``,
        ``dichroism/pos<K_pos>/``): an interrupted analysis resumes there.
    """
    from xafsflow.bayes.posterior import analyse

    if spec.n_holes is None or spec.polarization is None:
        raise AnalysisInputError("the sum rules need n_holes and polarization (P_c)", source)
    check_pair(energy, mu_plus, mu_minus, source)
    e = np.asarray(energy, float)
    mp = np.asarray(mu_plus, float)
    mm = np.asarray(mu_minus, float)
    if fit_range is not None:
        m = (e >= fit_range[0]) & (e <= fit_range[1])
        if m.sum() < 10:
            raise AnalysisInputError(f"{int(m.sum())} points in the fitted range [{fit_range[0]:g}, {fit_range[1]:g}] "
                                     "eV: too few", source)
        e, mp, mm = e[m], mp[m], mm[m]
    avg = 0.5 * (mp + mm)
    try:
        l3, l2 = sr.find_step_positions(e, avg, spec.l3, spec.l2)
        w3, w23 = sr.default_windows(l3, l2, float(e[0]), float(e[-1]))
        w3 = tuple(spec.l3_window) if spec.l3_window is not None else w3
        w23 = tuple(spec.l23_window) if spec.l23_window is not None else w23
        for w in (w3, w23):
            if w[0] < e[0] - 1e-9 or w[1] > e[-1] + 1e-9 or not w[0] < w[1]:
                raise AnalysisInputError(f"integration window [{w[0]:g}, {w[1]:g}] eV is not ordered or reaches "
                                         f"outside the fitted data ({e[0]:g} to {e[-1]:g} eV)")
    except AnalysisInputError as exc:
        raise AnalysisInputError(exc.reason, source) from None
    check_expected_sign(e, mp - mm, w3, expected_l3_sign, source)
    heights = {name: (spec.step_height if spec.step_height is not None else step_level(e, mu))
               for name, mu in (("plus", mp), ("minus", mm))}
    steps = {name: sr.edge_steps(e, l3, l2, h, spec.step_width) for name, h in heights.items()}
    # the dichroism is fitted with the steps removed (their difference, when the heights differ)
    dich = (mp - steps["plus"]) - (mm - steps["minus"])
    log = progress or (lambda msg: None)

    results = {}
    for name, mu in (("plus", mp), ("minus", mm)):
        y = mu - steps[name]
        area_mean = max(0.5 * sr.window_integral(e, np.clip(y, 0, None), e[0], e[-1]), 1e-12)
        hs = HelicitySpec(**{f: getattr(spec.base, f) for f in PosteriorSpec.__dataclass_fields__},
                          e_lo=float(e[0]), e_hi=float(e[-1]), area_mean=area_mean, width_prior=spec.width_prior)
        hs = replace(hs, model="xmcd", k_min=spec.k_min, k_max=spec.k_max, mode_starts=spec.base.mode_starts)
        results[name] = analyse(e, y, hs, campaign_seed, f"{scan_id}/{name}", client=client, source=source,
                                progress=lambda msg, n=name: log(f"{n}: {msg}"),
                                checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / name)
        results[name + "_spec"] = hs
    area_max = max(sr.window_integral(e, np.abs(dich), e[0], e[-1]), 1e-12)
    grid = _grid(e, dich, spec, area_max, campaign_seed, scan_id, client, lambda msg: log(f"dichroism: {msg}"),
                 checkpoint_dir)

    sp = results["plus"].per_k[results["plus"].k_selected]["samples"]
    sm = results["minus"].per_k[results["minus"].k_selected]["samples"]
    sd = grid["cells"][grid["selected"]]["samples"]
    p = _component_window_integrals(sd, w3)
    q = _component_window_integrals(sd, w23)
    rp, rm = _component_window_integrals(sp, w23), _component_window_integrals(sm, w23)
    ch, n = min(rp.shape[0], rm.shape[0]), min(rp.shape[1], rm.shape[1])
    r = rp[:ch, :n] + rm[:ch, :n]
    p, q, r = _paired(p, q, r)
    mom = sr.moments(p, q, r, spec.n_holes, spec.polarization, spec.cos_incidence)
    summ = {name: summarize_draws(v) for name, v in (("p", p), ("q", q), ("r", r), *mom.items())}
    return XmcdResult(e, results["plus"], results["minus"], grid,
                      {"l3": l3, "l2": l2, "width": spec.step_width, "height_plus": heights["plus"],
                       "height_minus": heights["minus"]},
                      {"l3": list(w3), "l23": list(w23)}, {"p": p, "q": q, "r": r}, mom, summ,
                      {"plus": results["plus_spec"], "minus": results["minus_spec"]})


def exact_integrals(energy, mu_plus, mu_minus, steps, l3_window, l23_window) -> dict:
    """p, q, r and the moments' inputs from noiseless spectra (for simulation truth)."""
    p, q, r = sr.integrals(energy, mu_plus, mu_minus, steps, l3_window, l23_window)
    return {"p": p, "q": q, "r": r}


def health(res: XmcdResult) -> dict:
    """Sampler health of the three decompositions at their selected numbers of components.

    ``min_exchange``: smallest neighbour exchange rate; ``max_rhat``: largest
    R-hat of the label-invariant quantities (p, q, r, moments) and of the
    parameters of the three decompositions (helicity centres are ordered,
    dichroism draws sorted within sign groups); ``max_f_spread``: largest
    spread of F between independent runs (nats); ``k_at_limit``: a selected
    number of components at the top of its range.
    """
    ents = {"plus": res.plus.per_k[res.plus.k_selected], "minus": res.minus.per_k[res.minus.k_selected],
            "dichroism": res.dichroism["cells"][res.dichroism["selected"]]}
    min_ex = {k: float(np.min(v["exchange_rate"])) for k, v in ents.items()}
    rh = [v["rhat"] for v in ents.values()]
    rh_par = max((float(np.nanmax(r)) for r in rh if np.any(np.isfinite(r))), default=float("nan"))
    rh_q = max((s["rhat"] for s in res.summary.values() if math.isfinite(s["rhat"])), default=float("nan"))
    spread = {k: float(v.get("F_spread", 0.0)) for k, v in ents.items()}
    at_limit = []
    if res.plus.k_selected == max(res.plus.ks):
        at_limit.append(f"plus K={res.plus.k_selected}")
    if res.minus.k_selected == max(res.minus.ks):
        at_limit.append(f"minus K={res.minus.k_selected}")
    kp, kn = res.dichroism["selected"]
    if kp == res.dichroism["k_pos"][-1] or kn == res.dichroism["k_neg"][-1]:
        at_limit.append(f"dichroism (K_pos,K_neg)=({kp},{kn})")
    return {"min_exchange": min(min_ex.values()), "min_exchange_by_part": min_ex,
            "max_rhat_quantities": rh_q, "max_rhat_params": rh_par,
            "max_f_spread": max(spread.values()), "f_spread_by_part": spread, "k_at_limit": at_limit}
