"""EXAFS background removal (chi(k) with xraylarch's ``autobk``) and the Fourier transform |chi(R)|.

Both wrap xraylarch, the field's reference implementation: the point of this
module is that every parameter is explicit (no larch defaults picked up
silently) and returned with the result, so a product can record it in its
provenance. xraylarch is imported inside the functions (it takes ~2 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xafsflow.errors import AnalysisInputError

# hbar^2 / (2 m_e) in eV Angstrom^2: E - E0 = KTOE k^2
KTOE = 3.809982110968585


@dataclass
class ChiK:
    """chi(k) of one spectrum.

    Attributes
    ----------
    k : ndarray
        Photo-electron wavenumber (1/Angstrom), uniform grid.
    chi : ndarray
        EXAFS oscillation chi(k) (dimensionless, not k-weighted).
    e0 : float
        Edge energy used for k (eV).
    edge_step : float
        Edge step used to normalize (units of mu).
    background : ndarray
        The spline background mu0(E) on the input energy grid.
    params : dict
        Every autobk parameter that was used (for provenance).
    """

    k: np.ndarray
    chi: np.ndarray
    e0: float
    edge_step: float
    background: np.ndarray
    params: dict = field(default_factory=dict)


def k_of_energy(energy, e0: float) -> np.ndarray:
    """Wavenumber k (1/Angstrom) of energies ``energy`` (eV) above ``e0`` (eV); 0 below."""
    return np.sqrt(np.clip(np.asarray(energy, float) - e0, 0.0, None) / KTOE)


def extract_chi(energy, mu, e0: float, edge_step: float | None = None, rbkg: float = 1.0, kweight: float = 2.0,
                kmin: float = 0.0, kmax: float | None = None, dk: float = 0.1, window: str = "hanning",
                nclamp: int = 3, clamp_lo: float = 0.0, clamp_hi: float = 1.0, kstep: float = 0.05,
                need_kmax: float | None = None) -> ChiK:
    """chi(k) by larch ``autobk`` with every parameter given explicitly.

    Parameters
    ----------
    energy, mu : array_like
        Energy (eV, increasing) and raw absorption.
    e0 : float
        Edge energy (eV): k = sqrt((E - e0) / KTOE).
    edge_step : float, optional
        Edge step; None lets larch's ``pre_edge`` find it.
    rbkg : float
        R (Angstrom) below which chi(R) is background (the spline's resolution).
    kweight : float
        k weight of the transform autobk minimizes.
    kmin, kmax : float
        k range (1/Angstrom) of the spline; kmax None: the end of the data.
    dk : float
        Taper (1/Angstrom) of the autobk window.
    window : str
        Window name (larch: hanning, kaiser, parzen, welch, sine, gaussian).
    nclamp, clamp_lo, clamp_hi : int, float, float
        End-point clamps of the spline (points, low- and high-k weights).
    kstep : float
        k grid step (1/Angstrom) of the output.
    need_kmax : float, optional
        The largest k a later fit needs: an AnalysisInputError when the data end below it.

    Returns
    -------
    ChiK
    """
    energy = np.asarray(energy, dtype=float)
    mu = np.asarray(mu, dtype=float)
    if energy.ndim != 1 or energy.shape != mu.shape or energy.size < 10:
        raise AnalysisInputError("chi(k) extraction needs one spectrum of at least 10 points")
    k_end = float(k_of_energy(energy[-1], e0))
    for name, value in (("kmax", kmax), ("end of k_range", need_kmax)):
        if value is not None and value > k_end + 1e-6:
            raise AnalysisInputError(
                f"the energy range ends at k = {k_end:.2f} 1/A (E - E0 = {energy[-1] - e0:.0f} eV), below the "
                f"configured {name} = {value:g} 1/A (needs E0 + {KTOE * value ** 2:.0f} eV): lower {name} or "
                f"measure further")
    from larch import Group
    from larch.xafs import autobk

    params = dict(rbkg=float(rbkg), kweight=float(kweight), kmin=float(kmin), kmax=None if kmax is None else float(kmax),
                  dk=float(dk), win=str(window), nclamp=int(nclamp), clamp_lo=float(clamp_lo),
                  clamp_hi=float(clamp_hi), kstep=float(kstep), ek0=float(e0),
                  edge_step=None if edge_step is None else float(edge_step))
    g = Group()
    autobk(energy, mu, group=g, **params)
    if not hasattr(g, "chi"):
        raise AnalysisInputError("autobk found no chi(k) (is this an absorption edge?)")
    used_step = edge_step if edge_step is not None else getattr(g, "edge_step")
    return ChiK(k=np.asarray(g.k, float), chi=np.asarray(g.chi, float), e0=float(g.ek0),
                edge_step=float(used_step), background=np.asarray(g.bkg, float),
                params=dict(params, method="larch.xafs.autobk"))


def chi_r(k, chi, kmin: float, kmax: float, kweight: float = 2.0, dk: float = 1.0, window: str = "hanning",
          rmax: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """|chi(R)|: larch ``xftf`` of k^kweight chi(k) through the stated window.

    Parameters
    ----------
    k, chi : array_like
        Uniform k grid (1/Angstrom) and chi(k).
    kmin, kmax, dk : float
        Window range and taper (1/Angstrom).
    kweight : float
        k weight.
    window : str
        Window name (larch).
    rmax : float
        Largest R returned (Angstrom).

    Returns
    -------
    r : ndarray
        R (Angstrom; not phase corrected).
    mag : ndarray
        |chi(R)| (Angstrom^-(kweight+1)).
    """
    from larch import Group
    from larch.xafs import xftf

    k = np.asarray(k, float)
    g = Group()
    xftf(k, np.asarray(chi, float), group=g, kmin=kmin, kmax=kmax, kweight=kweight, dk=dk, window=window,
         rmax_out=rmax, kstep=float(k[1] - k[0]))
    return np.asarray(g.r, float), np.asarray(g.chir_mag, float)
