"""XMCD sum rules at transition-metal L2,3 edges (Chen et al., PRL 75, 152 (1995)).

With mu+ and mu- the absorption for the two helicities (normalized by a common
edge jump), and the edge steps removed from their sum:

    p = int_{L3} (mu+ - mu-) dE
    q = int_{L3 + L2} (mu+ - mu-) dE
    r = int_{L3 + L2} (mu+ + mu- - 2 step) dE

    m_orb      = -4 q n_h / (3 r)            (Bohr magnetons per atom)
    m_spin_eff = -(6 p - 4 q) n_h / r

where n_h is the number of 3d holes. ``m_spin_eff`` is the effective spin
moment m_spin + 7 <T_z>: it includes the magnetic dipole term, which the sum
rule cannot separate from the spin moment. A degree of circular polarization
P_c < 1 and an incidence angle theta between the beam and the magnetization
(projection cos theta) both scale the measured dichroism, so p and q are
divided by P_c cos(theta). The ratio m_orb / m_spin_eff = 2 q / (9 p - 6 q)
needs neither n_h, nor r, nor P_c.

The edge steps: two arctan steps at the L3 and L2 positions with the
statistical 2:1 height ratio (2/3 of the total step at L3, 1/3 at L2).
Energies in eV; mu dimensionless (normalized), integrals in eV.
"""

from __future__ import annotations

import math

import numpy as np

from xafsflow.errors import AnalysisInputError


def arctan_step(energy, position: float, width: float) -> np.ndarray:
    """Unit arctan step 1/2 + arctan((E - position) / (width / 2)) / pi (``width``: full width, eV)."""
    return 0.5 + np.arctan((np.asarray(energy, float) - position) / (0.5 * width)) / math.pi


def edge_steps(energy, l3: float, l2: float, height: float = 1.0, width: float = 1.0) -> np.ndarray:
    """Two-step edge background of ONE helicity: height (2/3 step at ``l3`` + 1/3 step at ``l2``).

    Parameters
    ----------
    energy : array_like
        Energies (eV).
    l3, l2 : float
        Step positions (eV), conventionally the L3 and L2 peak maxima.
    height : float
        Total step height (normalized units; 1 after the common edge-jump normalization).
    width : float
        Full width of each arctan step (eV).
    """
    return height * (2.0 / 3.0 * arctan_step(energy, l3, width) + 1.0 / 3.0 * arctan_step(energy, l2, width))


def _step_antiderivative(e, position, width):
    u = e - position
    a = 0.5 * width
    return 0.5 * u + (u * math.atan(u / a) - 0.5 * a * math.log(u * u + a * a)) / math.pi


def edge_steps_integral(lo: float, hi: float, l3: float, l2: float, height: float = 1.0,
                        width: float = 1.0) -> float:
    """Exact integral (eV) of :func:`edge_steps` from ``lo`` to ``hi``."""
    def one(pos):
        return _step_antiderivative(hi, pos, width) - _step_antiderivative(lo, pos, width)

    return height * (2.0 / 3.0 * one(l3) + 1.0 / 3.0 * one(l2))


def window_integral(energy, y, lo: float, hi: float) -> float:
    """Trapezoid integral of y(E) from ``lo`` to ``hi`` (eV), y linearly interpolated at the window's ends.

    The window must lie inside the energy range (an AnalysisInputError otherwise).
    """
    e = np.asarray(energy, float)
    y = np.asarray(y, float)
    if not lo < hi:
        raise AnalysisInputError(f"integration window [{lo:g}, {hi:g}] eV is not ordered")
    if lo < e[0] - 1e-9 or hi > e[-1] + 1e-9:
        raise AnalysisInputError(f"integration window [{lo:g}, {hi:g}] eV reaches outside the data "
                                 f"({e[0]:g} to {e[-1]:g} eV)")
    inside = (e > lo) & (e < hi)
    xs = np.concatenate([[lo], e[inside], [hi]])
    ys = np.concatenate([[np.interp(lo, e, y)], y[inside], [np.interp(hi, e, y)]])
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))


def integrals(energy, mu_plus, mu_minus, steps, l3_window, l23_window) -> tuple[float, float, float]:
    """(p, q, r) of the sum rules from spectra on one energy grid (trapezoid, eV).

    Parameters
    ----------
    energy : array_like
        Energies (eV), increasing.
    mu_plus, mu_minus : array_like
        Normalized absorption of the two helicities.
    steps : array_like
        Edge-step background of ONE helicity (removed twice from mu+ + mu-),
        e.g. :func:`edge_steps`.
    l3_window, l23_window : (float, float)
        Integration windows (eV): over L3 only, and over L3 + L2.
    """
    mp = np.asarray(mu_plus, float)
    mm = np.asarray(mu_minus, float)
    diff = mp - mm
    total = mp + mm - 2.0 * np.asarray(steps, float)
    p = window_integral(energy, diff, *l3_window)
    q = window_integral(energy, diff, *l23_window)
    r = window_integral(energy, total, *l23_window)
    return p, q, r


def moments(p, q, r, n_holes: float, polarization: float, cos_incidence: float = 1.0) -> dict:
    """Orbital and effective spin moments (Bohr magnetons per atom) from the sum-rule integrals.

    Parameters
    ----------
    p, q, r : float or array_like
        Integrals (eV): p over L3 and q over L3 + L2 of mu+ - mu-, r over
        L3 + L2 of mu+ + mu- with the edge steps removed. Arrays (e.g. one value
        per posterior sample) broadcast.
    n_holes : float
        Number of 3d holes n_h.
    polarization : float
        Degree of circular polarization P_c (0 < P_c <= 1).
    cos_incidence : float
        cos(theta), theta the angle between the beam and the magnetization.

    Returns
    -------
    dict
        ``m_orb`` = -4 q' n_h / (3 r), ``m_spin_eff`` = -(6 p' - 4 q') n_h / r
        (includes the magnetic dipole term 7 <T_z>), and ``ratio`` =
        m_orb / m_spin_eff, with p' = p / (P_c cos theta), q' = q / (P_c cos theta).
    """
    if not 0 < polarization <= 1:
        raise AnalysisInputError(f"degree of circular polarization P_c = {polarization} is not in (0, 1]")
    if not 0 < cos_incidence <= 1:
        raise AnalysisInputError(f"cos(incidence angle) = {cos_incidence} is not in (0, 1]")
    scale = polarization * cos_incidence
    p = np.asarray(p, float) / scale
    q = np.asarray(q, float) / scale
    r = np.asarray(r, float)
    m_orb = -4.0 * q * n_holes / (3.0 * r)
    m_spin = -(6.0 * p - 4.0 * q) * n_holes / r
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = 2.0 * q / (9.0 * p - 6.0 * q)
    return {"m_orb": m_orb, "m_spin_eff": m_spin, "ratio": ratio}


def default_windows(l3: float, l2: float, e_lo: float, e_hi: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Default windows (eV): L3 from max(e_lo, l3 - 10) to the midpoint of l3 and l2; L3 + L2 on to
    min(e_hi, l2 + 12)."""
    lo = max(e_lo, l3 - 10.0)
    mid = 0.5 * (l3 + l2)
    hi = min(e_hi, l2 + 12.0)
    return (lo, mid), (lo, hi)


def find_step_positions(energy, mu_average, l3: float | None = None, l2: float | None = None,
                        min_splitting: float = 8.0, max_splitting: float = 25.0) -> tuple[float, float]:
    """L3 and L2 step positions (eV): given, or the maxima of the helicity average.

    L3: the global maximum (the L3 white line is the strongest feature); L2: the
    maximum between L3 + ``min_splitting`` and L3 + ``max_splitting`` eV (the
    spin-orbit splitting of 3d metals is 10-20 eV).
    """
    e = np.asarray(energy, float)
    y = np.asarray(mu_average, float)
    if l3 is None:
        l3 = float(e[int(np.argmax(y))])
    if l2 is None:
        m = (e >= l3 + min_splitting) & (e <= l3 + max_splitting)
        if not m.any():
            raise AnalysisInputError(f"no data {min_splitting:g}-{max_splitting:g} eV above L3 ({l3:g} eV) to find L2; "
                                     "give sum_rules.l2")
        l2 = float(e[m][int(np.argmax(y[m]))])
    if not l3 < l2:
        raise AnalysisInputError(f"step positions L3 = {l3:g} eV and L2 = {l2:g} eV are not ordered")
    return float(l3), float(l2)
