"""Spectral models: a background plus K identical components.

``peaks`` (Nagata, Sugita & Okada 2012): f(x) = sum_k a_k exp(-b_k (x - mu_k)^2 / 2).

``xanes`` (Iwamitsu et al. 2020): f(E) = H [1/2 + (1/pi) arctan((E - E0)/(Gamma/2))]
+ pseudo-Voigt white line (area A, centre E0 + dE, FWHM w, mixing eta)
+ sum_k Gaussians (area a_k, centre c_k, standard deviation s_k). K counts the Gaussians.

``preedge`` (the pre-edge region of a K edge, after Wilke et al., Am. Mineral. 86,
714, 2001): f(E) = H [1/2 + (1/pi) arctan((E - E_edge)/(Gamma/2))] (the low-energy
tail of the edge) + c0 + c1 (E - E_ref) + sum_k Gaussians (area, centre, sd), the
widths bounded below by the energy resolution. E_ref (the fit range's start) is fixed.

Components are identical up to their parameters, so the sampler keeps their
centres ordered (c_1 < c_2 < ...). The ordered prior K! prod_k p(theta_k) is
normalized over the ordered region; since the likelihood is symmetric under
permutations, the evidence of the ordered model equals that of the unordered
one (the K! copies of each posterior mode are counted once, with K! times the
prior density).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xafsflow.bayes.priors import FIXED, Prior, prior_from_config

# component types / background types shared with the numba kernel
COMP_GAUSS_AB, COMP_GAUSS_AREA = 0, 1
# pseudo-Voigt (area, centre, Gaussian sd) with a fixed Lorentzian FWHM of LORENTZ_FWHM (eV), for
# L-edge multiplets (xafsflow.bayes.xmcd); its Lorentzian tails are never cut (window = whole grid)
COMP_PVOIGT_1EV = 2
LORENTZ_FWHM = 1.0
BG_NONE, BG_XANES, BG_PREEDGE = 0, 1, 2
# A Gaussian is taken as zero beyond Z_CUT standard deviations from its centre,
# where exp(-z^2/2) < 1e-12 of its peak.
Z_CUT = math.sqrt(2.0 * math.log(1e12))

XANES_BG_NAMES = ("step", "e0", "gamma", "wl_area", "wl_shift", "wl_fwhm", "wl_eta")
PREEDGE_BG_NAMES = ("tail_step", "tail_edge", "tail_gamma", "offset", "slope", "x_ref")
# Gaussian FWHM / sd
FWHM_PER_SD = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class SpectralModel:
    """A model with ``nb`` background parameters followed by K components of 3 parameters."""

    name: str
    K: int
    priors: list[Prior]
    names: list[str]
    comp_type: int
    bg_type: int
    nb: int
    ordered: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        return self.nb + 3 * self.K

    def centre_index(self, k: int) -> int:
        return self.nb + 3 * k + 1

    def linear_indices(self) -> np.ndarray:
        """Indices of the free parameters f is linear in: the background's heights (step, white-line
        area; edge-tail height, offset, slope) and each component's first parameter (area or height)."""
        bg = {BG_XANES: (0, 3), BG_PREEDGE: (0, 3, 4)}.get(self.bg_type, ())
        idx = list(bg) + [self.nb + 3 * k for k in range(self.K)]
        return np.array([j for j in idx if self.priors[j].code != FIXED], dtype=np.int64)

    def component_from_peak(self, centre: float, height: float, sd: float) -> np.ndarray:
        """The 3 parameters of a component of peak ``height`` and standard deviation ``sd`` (x units) at
        ``centre``, moved into the prior's support of the last component."""
        if self.comp_type == COMP_GAUSS_AREA:
            vals = [height * sd * math.sqrt(2 * math.pi), centre, sd]
        elif self.comp_type == COMP_PVOIGT_1EV:
            vals = [height / float(pvoigt(np.array([0.0]), 1.0, 0.0, sd)[0]), centre, sd]
        else:
            vals = [height, centre, 1.0 / sd**2]
        pri = self.priors[self.nb + 3 * (self.K - 1): self.nb + 3 * self.K]
        return np.array([_into_support(p, v) for p, v in zip(pri, vals)])

    def with_component(self, theta_fewer: np.ndarray, new: np.ndarray) -> np.ndarray:
        """A parameter vector of this model from one with a component fewer plus ``new`` (centres ordered)."""
        theta_fewer = np.asarray(theta_fewer, float)
        if theta_fewer.size != self.n_params - 3:
            raise ValueError(f"expected {self.n_params - 3} parameters, got {theta_fewer.size}")
        comps = np.vstack([theta_fewer[self.nb:].reshape(-1, 3), np.asarray(new, float)[None, :]])
        comps = comps[np.argsort(comps[:, 1], kind="stable")]
        return np.concatenate([theta_fewer[: self.nb], comps.ravel()])

    # ------------------------------------------------------------------ numpy reference
    def components(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """(K, N) component curves (no cut)."""
        x = np.asarray(x, float)
        out = np.empty((self.K, x.size))
        for k in range(self.K):
            p0, p1, p2 = theta[self.nb + 3 * k: self.nb + 3 * k + 3]
            out[k] = component(self.comp_type, p0, p1, p2, x)
        return out

    def background(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return background(self.bg_type, theta[: self.nb], np.asarray(x, float))

    def evaluate(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """f(x; theta) = background + sum of components."""
        return self.background(x, theta) + self.components(x, theta).sum(axis=0)

    def log_prior(self, theta: np.ndarray) -> float:
        """Log density of the ordered prior (includes log K! when the centres are ordered and free)."""
        lp = sum(float(p.logpdf(v)) for p, v in zip(self.priors, theta))
        if self._orders():
            c = theta[[self.centre_index(k) for k in range(self.K)]]
            if np.any(np.diff(c) <= 0):
                return -np.inf
            lp += math.lgamma(self.K + 1)
        return lp

    def _orders(self) -> bool:
        return self.ordered and self.K > 1 and self.priors[self.centre_index(0)].code != FIXED

    def sample_prior(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` exact draws from the (ordered) prior, shape (n, P)."""
        out = np.empty((n, self.n_params))
        for j, p in enumerate(self.priors):
            out[:, j] = p.sample(rng, n)
        if self._orders():
            comps = out[:, self.nb:].reshape(n, self.K, 3)
            order = np.argsort(comps[:, :, 1], axis=1)
            comps = np.take_along_axis(comps, order[:, :, None], axis=1)
            out[:, self.nb:] = comps.reshape(n, 3 * self.K)
        return out

    def kernel_arrays(self):
        """(codes, a, b, log_moves) arrays for the numba kernel."""
        codes = np.array([p.code for p in self.priors], dtype=np.int64)
        a = np.array([p.a for p in self.priors], dtype=np.float64)
        b = np.array([p.b for p in self.priors], dtype=np.float64)
        logm = np.array([p.log_moves for p in self.priors], dtype=np.bool_)
        return codes, a, b, logm


def pvoigt_shape(sd: float, lorentz_fwhm: float = LORENTZ_FWHM) -> tuple[float, float]:
    """(FWHM, Lorentzian fraction eta) of the pseudo-Voigt approximating a Voigt profile.

    Thompson, Cox & Hastings, J. Appl. Cryst. 20, 79 (1987): a Gaussian of
    standard deviation ``sd`` convolved with a Lorentzian of FWHM ``lorentz_fwhm``
    is approximated (to about 1 % of the peak) by eta L(f) + (1 - eta) G(f), both
    of unit area and FWHM f.
    """
    fg = 2.0 * math.sqrt(2.0 * math.log(2.0)) * sd
    fl = lorentz_fwhm
    f = (fg**5 + 2.69269 * fg**4 * fl + 2.42843 * fg**3 * fl**2 + 4.47163 * fg**2 * fl**3
         + 0.07842 * fg * fl**4 + fl**5) ** 0.2
    rho = fl / f
    return f, 1.36603 * rho - 0.47719 * rho**2 + 0.11116 * rho**3


def pvoigt(x: np.ndarray, area: float, centre: float, sd: float, lorentz_fwhm: float = LORENTZ_FWHM) -> np.ndarray:
    """Pseudo-Voigt of total ``area`` (Gaussian sd ``sd`` eV convolved with a Lorentzian of FWHM ``lorentz_fwhm``)."""
    f, eta = pvoigt_shape(sd, lorentz_fwhm)
    d = np.asarray(x, float) - centre
    hw = 0.5 * f
    lor = hw / math.pi / (d * d + hw * hw)
    gau = (2.0 / f) * math.sqrt(math.log(2.0) / math.pi) * np.exp(-4.0 * math.log(2.0) * d * d / (f * f))
    return area * (eta * lor + (1.0 - eta) * gau)


def pvoigt_integral(area, centre, sd, lo: float, hi: float, lorentz_fwhm: float = LORENTZ_FWHM):
    """Exact integral of :func:`pvoigt` from ``lo`` to ``hi`` (arrays of parameters broadcast)."""
    from scipy.special import erf

    area, centre, sd = (np.asarray(v, float) for v in (area, centre, sd))
    fg = 2.0 * math.sqrt(2.0 * math.log(2.0)) * sd
    fl = lorentz_fwhm
    f = (fg**5 + 2.69269 * fg**4 * fl + 2.42843 * fg**3 * fl**2 + 4.47163 * fg**2 * fl**3
         + 0.07842 * fg * fl**4 + fl**5) ** 0.2
    rho = fl / f
    eta = 1.36603 * rho - 0.47719 * rho**2 + 0.11116 * rho**3
    hw = 0.5 * f
    lor = (np.arctan((hi - centre) / hw) - np.arctan((lo - centre) / hw)) / math.pi
    s = f / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    gau = 0.5 * (erf((hi - centre) / (math.sqrt(2.0) * s)) - erf((lo - centre) / (math.sqrt(2.0) * s)))
    return area * (eta * lor + (1.0 - eta) * gau)


def component(comp_type: int, p0: float, p1: float, p2: float, x: np.ndarray) -> np.ndarray:
    if comp_type == COMP_PVOIGT_1EV:
        return pvoigt(x, p0, p1, p2)
    if comp_type == COMP_GAUSS_AB:
        d = x - p1
        return p0 * np.exp(-0.5 * p2 * d * d)
    z = (x - p1) / p2
    return p0 / (p2 * math.sqrt(2 * math.pi)) * np.exp(-0.5 * z * z)


def component_sd(comp_type: int, p2: float) -> float:
    if comp_type == COMP_PVOIGT_1EV:
        return math.inf  # Lorentzian tails: the window is the whole grid
    return 1.0 / math.sqrt(p2) if comp_type == COMP_GAUSS_AB else p2


def background(bg_type: int, bg: np.ndarray, x: np.ndarray) -> np.ndarray:
    if bg_type == BG_NONE:
        return np.zeros_like(x)
    if bg_type == BG_PREEDGE:
        h, edge, gam, off, slope, xref = bg
        return h * (0.5 + np.arctan((x - edge) / (0.5 * gam)) / math.pi) + off + slope * (x - xref)
    h, e0, gam, area, shift, fwhm, eta = bg
    step = h * (0.5 + np.arctan((x - e0) / (0.5 * gam)) / math.pi)
    e = x - (e0 + shift)
    hw = 0.5 * fwhm
    lor = hw / math.pi / (e * e + hw * hw)
    sig = fwhm / (2 * math.sqrt(2 * math.log(2)))
    gau = np.exp(-0.5 * (e / sig) ** 2) / (sig * math.sqrt(2 * math.pi))
    return step + area * (eta * lor + (1 - eta) * gau)


def _into_support(p: Prior, v: float) -> float:
    """``v`` moved just inside the support of prior ``p``."""
    if p.dist == "fixed":
        return p.a
    if p.dist in ("uniform", "loguniform"):
        pad = 1e-6 * (p.b - p.a)
        return float(min(max(v, p.a + pad), p.b - pad))
    if p.dist == "gamma":
        return float(max(v, 1e-12))
    return float(v)


# --------------------------------------------------------------------------- builders
NAGATA_PRIORS = {
    "a": {"dist": "gamma", "shape": 5.0, "rate": 5.0},
    "mu": {"dist": "normal", "mean": 1.5, "sd": math.sqrt(0.2)},
    "b": {"dist": "gamma", "shape": 5.0, "rate": 0.04},
}


def peaks_model(K: int, priors: dict | None = None) -> SpectralModel:
    """Sum of K Gaussians a exp(-b (x - mu)^2 / 2); default priors of the Nagata 2012 benchmark."""
    pri = {**NAGATA_PRIORS, **(priors or {})}
    ps, names = [], []
    for k in range(1, K + 1):
        for key in ("a", "mu", "b"):
            ps.append(prior_from_config(pri[key], f"{key}_{k}"))
            names.append(f"{key}_{k}")
    return SpectralModel("peaks", K, ps, names, COMP_GAUSS_AB, BG_NONE, 0)


def peaks_default_priors(x, y) -> dict:
    """Proper default priors of the ``peaks`` model scaled to a spectrum (x, y) of any units.

    Centres ``mu`` uniform over the fitted x range; amplitudes ``a`` Gamma with
    shape 2 and mean max|y| (positive peaks); precisions ``b`` (1/sd^2)
    log-uniform from 1/(x span)^2 (one peak as wide as the range) to
    1/(3 median dx)^2 (a peak three points wide). The bare :func:`peaks_model`
    keeps :data:`NAGATA_PRIORS` (the benchmark's own priors).
    """
    from xafsflow.errors import AnalysisInputError

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.size < 3:
        raise AnalysisInputError(f"{x.size} points: default peak priors need at least 3")
    lo, hi = float(np.min(x)), float(np.max(x))
    span = hi - lo
    dx = float(np.median(np.diff(np.sort(x))))
    amp = float(np.max(np.abs(y)))
    if not (span > 0 and dx > 0):
        raise AnalysisInputError("x has no spread: default peak priors need distinct x values")
    if not amp > 0:
        raise AnalysisInputError("y is zero everywhere: no scale for the default peak amplitudes")
    b_lo, b_hi = 1.0 / span**2, 1.0 / (3.0 * dx) ** 2
    if not b_lo < b_hi:
        raise AnalysisInputError(f"x span {span:g} is below 3 median steps ({3 * dx:g}): too few points for "
                                 "default peak widths; give a prior for b")
    return {
        "a": {"dist": "gamma", "shape": 2.0, "rate": 2.0 / amp},
        "mu": {"dist": "uniform", "lo": lo, "hi": hi},
        "b": {"dist": "loguniform", "lo": b_lo, "hi": b_hi},
    }


def xanes_default_priors(e_lo: float, e_hi: float, e0: float) -> dict:
    """Proper default priors for the ``xanes`` model of a normalized spectrum fitted over [e_lo, e_hi] eV."""
    span = e_hi - e_lo
    return {
        "step": {"dist": "uniform", "lo": 0.5, "hi": 1.5},
        "e0": {"dist": "uniform", "lo": e0 - 5.0, "hi": e0 + 5.0},
        "gamma": {"dist": "loguniform", "lo": 0.2, "hi": 15.0},
        "wl_area": {"dist": "uniform", "lo": 0.0, "hi": 30.0},
        "wl_shift": {"dist": "uniform", "lo": -5.0, "hi": 15.0},
        "wl_fwhm": {"dist": "loguniform", "lo": 0.5, "hi": 20.0},
        "wl_eta": {"dist": "uniform", "lo": 0.0, "hi": 1.0},
        # Gamma(2, 1): mean 2 eV x (normalized mu), little mass at undetectably small areas,
        # so an extra component cannot hide at zero area at no Occam cost
        "area": {"dist": "gamma", "shape": 2.0, "rate": 1.0},
        "centre": {"dist": "uniform", "lo": e_lo, "hi": e_hi},
        "width": {"dist": "loguniform", "lo": 0.3, "hi": max(0.6, span / 8)},
    }


def xanes_model(K: int, e_lo: float, e_hi: float, e0: float, priors: dict | None = None) -> SpectralModel:
    """arctan step + pseudo-Voigt white line + K Gaussians, for a normalized spectrum."""
    pri = {**xanes_default_priors(e_lo, e_hi, e0), **(priors or {})}
    ps, names = _background_then_areas(pri, XANES_BG_NAMES, K)
    return SpectralModel("xanes", K, ps, names, COMP_GAUSS_AREA, BG_XANES, len(XANES_BG_NAMES))


def _background_then_areas(pri: dict, bg_names, K: int) -> tuple[list[Prior], list[str]]:
    """Priors and names: the background's parameters, then (area, centre, width) of K components."""
    ps = [prior_from_config(pri[n], n) for n in bg_names]
    names = list(bg_names)
    for k in range(1, K + 1):
        for key in ("area", "centre", "width"):
            ps.append(prior_from_config(pri[key], f"{key}_{k}"))
            names.append(f"{key}_{k}")
    return ps, names


def preedge_default_priors(e_lo: float, e_hi: float, resolution: float, e0: float) -> dict:
    """Proper default priors for the ``preedge`` model of a normalized spectrum fitted over [e_lo, e_hi] eV.

    Parameters
    ----------
    e_lo, e_hi : float
        Fitted range (eV).
    resolution : float
        Energy resolution, FWHM (eV): the narrowest component allowed (its sd is resolution / 2.355).
    e0 : float
        The scan's edge energy (eV, from normalization).

    Notes
    -----
    The edge tail's step is centred within 2 eV of the scan's E0. Mostly only its
    low-energy tail lies in the range, where it is about H Gamma / (2 pi (E0 - E)):
    the data fix the product H Gamma, not each, so both are log-uniform and the
    sampler's joint moves (in log coordinates) follow that straight ridge. Component
    areas are Gamma(2, 10), mean 0.2 eV x (normalized mu), the size of pre-edge
    peaks of 3d transition-metal oxides; widths (sd) log-uniform from the
    resolution's to 3 eV.
    """
    sd_lo = resolution / FWHM_PER_SD
    return {
        "tail_step": {"dist": "loguniform", "lo": 0.05, "hi": 1.5},
        "tail_edge": {"dist": "uniform", "lo": e0 - 2.0, "hi": e0 + 2.0},
        "tail_gamma": {"dist": "loguniform", "lo": 0.5, "hi": 20.0},
        "offset": {"dist": "uniform", "lo": -0.3, "hi": 0.3},
        "slope": {"dist": "uniform", "lo": -0.05, "hi": 0.05},
        "area": {"dist": "gamma", "shape": 2.0, "rate": 10.0},
        "centre": {"dist": "uniform", "lo": e_lo, "hi": e_hi},
        "width": {"dist": "loguniform", "lo": sd_lo, "hi": max(3.0, 2.0 * sd_lo)},
    }


def preedge_model(K: int, e_lo: float, e_hi: float, resolution: float, e0: float,
                  priors: dict | None = None) -> SpectralModel:
    """Edge tail (arctan) + line + K Gaussians of width at least the resolution, for a pre-edge region.

    ``x_ref`` (the line's reference energy) is fixed at ``e_lo``; configured
    priors replace the defaults family by family (:func:`preedge_default_priors`).
    """
    pri = {**preedge_default_priors(e_lo, e_hi, resolution, e0), **(priors or {})}
    pri["x_ref"] = {"dist": "fixed", "value": float(e_lo)}
    ps, names = _background_then_areas(pri, PREEDGE_BG_NAMES, K)
    return SpectralModel("preedge", K, ps, names, COMP_GAUSS_AREA, BG_PREEDGE, len(PREEDGE_BG_NAMES))


def preedge_moments(samples: np.ndarray, nb: int, window: tuple[float, float] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Integrated intensity (sum of areas) and area-weighted centroid of each sample.

    Parameters
    ----------
    samples : ndarray, shape (..., nb + 3 K)
        Parameter vectors of a model with Gaussian-area components.
    nb : int
        Background parameters before the components.
    window : (float, float), optional
        Energy range (eV) of the pre-edge transitions: only components whose
        median centre (over all samples; the centres are ordered, so a label
        is one component) lies inside count. Components outside model the
        background's own structure or the edge onset (Wilke et al. 2001 take
        the centroid of the pre-edge peaks only). None: every component.

    Returns
    -------
    intensity, centroid : ndarray, shape (...)
        eV x (normalized mu) and eV; with no component inside the window,
        intensity 0 and centroid NaN.
    """
    comps = np.asarray(samples, float)[..., nb:]
    comps = comps.reshape(comps.shape[:-1] + (-1, 3))
    area, centre = comps[..., 0], comps[..., 1]
    if window is not None:
        med = np.median(centre.reshape(-1, centre.shape[-1]), axis=0)
        inside = (med >= window[0]) & (med <= window[1])
        area, centre = area[..., inside], centre[..., inside]
    total = area.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = (area * centre).sum(axis=-1) / total
    return total, centroid


MODEL_FAMILIES = {
    "peaks": ("a", "mu", "b"),
    "xanes": XANES_BG_NAMES + ("area", "centre", "width"),
    "preedge": PREEDGE_BG_NAMES[:-1] + ("area", "centre", "width"),
}


def check_priors(model: str, priors: dict) -> None:
    """Refuse configured priors that name no parameter family of ``model`` or are improper.

    Runs before any data are read (``snakemake -n``), so it checks each prior on
    its own; priors that depend on the data (default centre ranges) are built later.
    """
    from xafsflow.errors import AnalysisInputError

    families = MODEL_FAMILIES[model]
    for name, spec in priors.items():
        if name not in families:
            raise AnalysisInputError(f"prior of {name}: the {model} model has no parameter family {name!r} "
                                     f"(use {', '.join(families)})")
        prior_from_config(spec, name)
