"""Repeated scans of one helicity: their average, its per-point uncertainty, and deviating repeats.

Beamlines record several alternating-helicity repeats; each helicity's repeats
are put on the first repeat's energy grid (linear interpolation, stated in the
warnings when a grid differs), averaged point by point, and the spread between
them gives the per-point uncertainty of the average (sd / sqrt(n)). A repeat
whose deviation from the mean of the others is well beyond the scatter of the
repeats (root-mean-square deviation more than ``max_ratio`` times the median of
all repeats' deviations) is named in a warning; it is kept in the average (the
user decides).
"""

from __future__ import annotations

import numpy as np

from xafsflow.errors import AnalysisInputError


def average_repeats(energies: list, spectra: list, names: list[str] | None = None,
                    max_ratio: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Average repeated scans of one helicity.

    Parameters
    ----------
    energies, spectra : list of 1-D arrays
        Each repeat's energies (eV, increasing) and mu (same length as its energies).
    names : list of str, optional
        Names of the repeats (file names) for the warnings.
    max_ratio : float
        A repeat whose RMS deviation from the mean of the others exceeds this
        multiple of the median over repeats is reported.

    Returns
    -------
    energy, mean, sd_of_mean, warnings
        The first repeat's grid, the average, its per-point standard error
        (NaN-free; zero for a single repeat) and warnings.
    """
    n = len(spectra)
    names = names or [f"repeat {i + 1}" for i in range(n)]
    if n == 0 or len(energies) != n:
        raise AnalysisInputError("average_repeats needs one energy array per repeat")
    e0 = np.asarray(energies[0], float)
    warnings: list[str] = []
    rows = []
    for e, mu, name in zip(energies, spectra, names):
        e = np.asarray(e, float)
        mu = np.asarray(mu, float)
        if e.shape != mu.shape:
            raise AnalysisInputError(f"{e.size} energies but {mu.size} values", name)
        if not np.all(np.isfinite(mu)):
            raise AnalysisInputError(f"{int(np.sum(~np.isfinite(mu)))} non-finite value(s) (NaN or inf)", name)
        if e.shape == e0.shape and np.allclose(e, e0, atol=1e-3):
            rows.append(mu)
            continue
        if e[0] > e0[0] + 1e-6 or e[-1] < e0[-1] - 1e-6:
            raise AnalysisInputError(f"energies {e[0]:g}-{e[-1]:g} eV do not cover the first repeat's "
                                     f"{e0[0]:g}-{e0[-1]:g} eV; cannot interpolate", name)
        warnings.append(f"{name}: on another energy grid, interpolated onto the first repeat's")
        rows.append(np.interp(e0, e, mu))
    stack = np.vstack(rows)
    mean = stack.mean(axis=0)
    if n == 1:
        return e0, mean, np.zeros_like(mean), warnings
    sd = stack.std(axis=0, ddof=1) / np.sqrt(n)
    if n >= 3:
        dev = np.array([np.sqrt(np.mean((stack[i] - np.delete(stack, i, axis=0).mean(axis=0)) ** 2))
                        for i in range(n)])
        ref = float(np.median(dev))
        for i in np.flatnonzero(dev > max_ratio * ref):
            warnings.append(f"{names[i]} deviates from the other repeats (RMS {dev[i]:.3g}, {dev[i] / ref:.1f} times "
                            "the median repeat's): check it")
    return e0, mean, sd, warnings
