"""Forward models used to simulate data with known parameters.

All energies in eV, wavenumbers in 1/Angstrom, distances in Angstrom.
"""

from __future__ import annotations

import numpy as np

# hbar^2 / (2 m_e) in eV Angstrom^2: k = sqrt((E - E0) / KTOE)
KTOE = 3.8099821161548593


def arctan_step(energy, e0, gamma):
    """Arctan absorption step 1/2 + (1/pi) arctan((E - e0)/(gamma/2)), from 0 to 1."""
    return 0.5 + np.arctan((np.asarray(energy) - e0) / (0.5 * gamma)) / np.pi


def gaussian(energy, area, centre, width):
    """Gaussian of unit-area shape times ``area``; ``width`` is the standard deviation (eV)."""
    x = (np.asarray(energy) - centre) / width
    return area * np.exp(-0.5 * x * x) / (width * np.sqrt(2 * np.pi))


def pseudo_voigt(energy, area, centre, fwhm, eta):
    """Area-normalized pseudo-Voigt: eta * Lorentzian + (1 - eta) * Gaussian, common FWHM (eV)."""
    e = np.asarray(energy) - centre
    hw = 0.5 * fwhm
    lor = hw / np.pi / (e * e + hw * hw)
    sig = fwhm / (2 * np.sqrt(2 * np.log(2)))
    gau = np.exp(-0.5 * (e / sig) ** 2) / (sig * np.sqrt(2 * np.pi))
    return area * (eta * lor + (1 - eta) * gau)


def xanes_normalized(energy, e0, gamma, wl_area, wl_shift, wl_fwhm, wl_eta, peaks):
    """Normalized XANES: arctan step + pseudo-Voigt white line + Gaussian peaks.

    ``peaks`` is a sequence of (area, centre, width) with width the Gaussian sd.
    """
    y = arctan_step(energy, e0, gamma) + pseudo_voigt(energy, wl_area, e0 + wl_shift, wl_fwhm, wl_eta)
    for area, centre, width in peaks:
        y = y + gaussian(energy, area, centre, width)
    return y


def raw_absorption(energy, normalized, e0, step, pre_offset, pre_slope, post_curve=0.0):
    """Turn a normalized spectrum into raw-looking mu: pre-edge line plus a drooping post-edge.

    mu = pre_offset + pre_slope (E - e0) + step * normalized * (1 - post_curve ((E - e0)/1000)^2 [E > e0])
    """
    e = np.asarray(energy) - e0
    droop = 1.0 - post_curve * np.where(e > 0, (e / 1000.0) ** 2, 0.0)
    return pre_offset + pre_slope * e + step * normalized * droop


def exafs_chi(k, shells, s02=0.9):
    """Toy single-scattering chi(k) of Gaussian shells (for demo data only).

    Each shell is (N, R, sigma2) and contributes
    S0^2 N / (k R^2) |f(k)| exp(-2 k^2 sigma2) exp(-2 R / lambda) sin(2 k R + phi(k))
    with a smooth backscattering amplitude |f| = 0.8 exp(-((k - 4)/8)^2) and
    phase phi = -0.15 k - 1.2 and mean free path lambda = 8 A. FEFF-based
    models belong to the sparse-structure product.
    """
    k = np.asarray(k, dtype=float)
    chi = np.zeros_like(k)
    safe = np.where(k > 0.05, k, 0.05)
    amp_f = 0.8 * np.exp(-(((safe - 4.0) / 8.0) ** 2))
    for n, r, s2 in shells:
        chi += (
            s02 * n / (safe * r * r) * amp_f * np.exp(-2 * safe**2 * s2) * np.exp(-2 * r / 8.0)
            * np.sin(2 * safe * r - 0.15 * safe - 1.2)
        )
    return np.where(k > 0, chi, 0.0)
