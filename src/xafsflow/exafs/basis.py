"""Single-scattering EXAFS basis from FEFF: amplitude, phase and mean free path of one absorber-scatterer pair.

FEFF6L (shipped inside the xraylarch wheel) is run once per (absorber,
scatterer, edge, reference distance) on a small cluster: the absorber at the
origin and 12 scatterers at the reference distance on the fcc
(cuboctahedral) sites, so the muffin-tin potentials see a condensed
environment rather than an isolated dimer. Only the single-scattering path of
the first shell is kept (``NLEG 2``, ``RMAX`` just above the distance); its
per-atom amplitude |f| x reduction factor, total phase 2 delta_c + phi,
complex momentum Re(p) and mean free path lambda are then used for a shell at
any distance R (the standard transferability approximation).

The chi(k) of a shell follows the EXAFS equation exactly as xraylarch's
``FeffPathGroup`` writes it (third and fourth cumulants zero), with
deltaR = R - reff, so a basis column equals larch's path chi for the same
parameters (tested)::

    q   = sqrt(k^2 - dE0 / KTOE)
    p   = Re(p)(q) + i / lambda(q)
    chi = Im{ N S0^2 amp(q) / (q R^2)
              exp(-2 reff Im p - 2 p^2 sigma^2 + i (2 q reff + phase(q) + 2 p (deltaR - 2 sigma^2 / reff))) }

The FEFF output is cached in a directory (the campaign's resources) under a
name that hashes every input of the calculation, so it is computed once per
pair and reused by every scan and job.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError

KTOE = 3.809982110968585  # eV Angstrom^2 (E = KTOE k^2; 1 / larch's ETOK, so dE0 means the same)
# FEFF6 HOLE codes of the edges
_HOLES = {"K": 1, "L1": 2, "L2": 3, "L3": 4}
# bumped when the FEFF input written here changes (part of the cache key)
FEFF_INPUT_VERSION = 1


@dataclass(frozen=True)
class FeffPath:
    """Scattering functions of one single-scattering path (FEFF's feffNNNN.dat).

    Attributes
    ----------
    k : ndarray
        FEFF's k grid (1/Angstrom).
    amp : ndarray
        Per-atom amplitude |f_eff| x reduction factor (Angstrom).
    phase : ndarray
        Total phase 2 delta_c + phi (rad).
    rep : ndarray
        Real part of the complex photo-electron momentum (1/Angstrom).
    lam : ndarray
        Mean free path (Angstrom).
    reff : float
        Half path length of the FEFF calculation (Angstrom).
    absorber, scatterer, edge : str
        The pair and the edge.
    key : str
        Cache key of the calculation.
    """

    k: np.ndarray
    amp: np.ndarray
    phase: np.ndarray
    rep: np.ndarray
    lam: np.ndarray
    reff: float
    absorber: str
    scatterer: str
    edge: str
    key: str = ""


def atomic_number(symbol: str) -> int:
    """Z of an element symbol; an AnalysisInputError for an unknown one."""
    import xraydb

    try:
        return int(xraydb.atomic_number(str(symbol).strip().capitalize()))
    except (ValueError, TypeError, KeyError):
        raise AnalysisInputError(f"unknown element {symbol!r} for the FEFF basis (give a chemical symbol, e.g. Cu)") \
            from None


def fcc_cluster(r_ref: float) -> np.ndarray:
    """Positions (Angstrom) of the absorber (row 0) and 12 neighbours at distance ``r_ref`` on fcc sites."""
    a = r_ref / np.sqrt(2.0)
    sites = [(0.0, 0.0, 0.0)]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        for si in (1, -1):
            for sj in (1, -1):
                v = [0.0, 0.0, 0.0]
                v[i], v[j] = si * a, sj * a
                sites.append(tuple(v))
    return np.array(sites)


def feff_input(absorber: str, scatterer: str, edge: str, r_ref: float) -> str:
    """The feff.inp text of the pair's calculation (FEFF6 cards)."""
    if edge not in _HOLES:
        raise AnalysisInputError(f"edge {edge!r} has no FEFF basis here (use one of {', '.join(_HOLES)})")
    za, zs = atomic_number(absorber), atomic_number(scatterer)
    lines = [f"TITLE xafsflow single scattering {absorber}-{scatterer} {edge} edge, R = {r_ref:.4f}",
             f"HOLE {_HOLES[edge]} 1.0", "CONTROL 1 1 1 1", "PRINT 0 0 0 0",
             f"RMAX {r_ref + 0.05:.4f}", "NLEG 2", "POTENTIALS",
             f" 0 {za} {absorber}", f" 1 {zs} {scatterer}", "ATOMS"]
    for i, (x, y, z) in enumerate(fcc_cluster(r_ref)):
        lines.append(f" {x:.6f} {y:.6f} {z:.6f} {0 if i == 0 else 1}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def feff_executable() -> Path:
    """FEFF6L inside the installed xraylarch (found without importing larch)."""
    import importlib.util
    import platform

    spec = importlib.util.find_spec("larch")
    if spec is None or not spec.submodule_search_locations:
        raise AnalysisInputError("xraylarch is not installed: no FEFF for the sparse-structure basis")
    sub = {"Linux": "linux64", "Darwin": "darwin64", "Windows": "win64"}.get(platform.system(), "linux64")
    exe = Path(next(iter(spec.submodule_search_locations))) / "bin" / sub / "feff6l"
    return exe.with_suffix(".exe") if sub == "win64" else exe


def cache_key(absorber: str, scatterer: str, edge: str, r_ref: float) -> str:
    """File stem of a calculation in the cache: readable pair and edge, then a hash of every input."""
    text = json.dumps({"absorber": absorber, "scatterer": scatterer, "edge": edge, "r_ref": round(float(r_ref), 6),
                       "code": "feff6l", "input_version": FEFF_INPUT_VERSION}, sort_keys=True)
    return f"{absorber}-{scatterer}_{edge}_{hashlib.blake2b(text.encode(), digest_size=6).hexdigest()}"


def parse_feffdat(text: str) -> tuple[float, np.ndarray]:
    """(reff, columns) of a feffNNNN.dat: the 7 columns k, 2phc, |f|, phase, reduction, lambda, Re(p)."""
    reff = None
    rows = []
    in_arrays = False
    for line in text.splitlines():
        words = line.split()
        if not in_arrays:
            if "nleg, deg, reff" in line:
                reff = float(words[2])
            elif words[:2] == ["k", "real[2*phc]"]:
                in_arrays = True
            continue
        if len(words) == 7:
            rows.append([float(w) for w in words])
    if reff is None or len(rows) < 10:
        raise ValueError("not a FEFF path file (no reff or fewer than 10 rows)")
    return reff, np.array(rows)


def _path_from_text(text: str, absorber: str, scatterer: str, edge: str, key: str) -> FeffPath:
    reff, cols = parse_feffdat(text)
    return FeffPath(k=cols[:, 0], amp=cols[:, 2] * cols[:, 4], phase=cols[:, 1] + cols[:, 3], rep=cols[:, 6],
                    lam=cols[:, 5], reff=reff, absorber=absorber, scatterer=scatterer, edge=edge, key=key)


def run_feff(absorber: str, scatterer: str, edge: str, r_ref: float = 2.5, cache_dir: str | Path | None = None,
             executable: str | Path | None = None, timeout: float = 120.0) -> FeffPath:
    """The pair's single-scattering path: from the cache, or FEFF6L run once and cached.

    Parameters
    ----------
    absorber, scatterer : str
        Element symbols.
    edge : str
        K, L1, L2 or L3.
    r_ref : float
        Distance (Angstrom) of the FEFF calculation's neighbour shell.
    cache_dir : str or Path, optional
        Where calculations are kept (``<key>.dat``, ``<key>.json``); None: run in a
        temporary folder and keep nothing.
    executable : str or Path, optional
        FEFF6L (default: the one inside xraylarch).
    timeout : float
        Seconds before FEFF is given up.

    Returns
    -------
    FeffPath

    Raises
    ------
    AnalysisInputError
        Unknown element or edge, FEFF missing, failing or writing no path.
    """
    absorber = str(absorber).strip().capitalize()
    scatterer = str(scatterer).strip().capitalize()
    inp = feff_input(absorber, scatterer, edge, r_ref)  # checks the elements and edge first
    key = cache_key(absorber, scatterer, edge, r_ref)
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{key}.dat"
        if cached.is_file():
            try:
                return _path_from_text(cached.read_text(), absorber, scatterer, edge, key)
            except ValueError:
                pass  # a damaged cache entry: compute it again
    exe = Path(executable) if executable is not None else feff_executable()
    if not exe.is_file():
        raise AnalysisInputError(f"FEFF executable not found at {exe}")
    with tempfile.TemporaryDirectory(prefix="xafsflow-feff-") as tmp:
        Path(tmp, "feff.inp").write_text(inp)
        try:
            proc = subprocess.run([str(exe)], cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AnalysisInputError(f"FEFF failed for {absorber}-{scatterer} ({edge} edge): {exc}") from None
        out = Path(tmp, "feff0001.dat")
        if proc.returncode != 0 or not out.is_file():
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise AnalysisInputError(f"FEFF failed for {absorber}-{scatterer} ({edge} edge; exit status "
                                     f"{proc.returncode}, no feff0001.dat): {tail or 'no output'}")
        text = out.read_text()
        try:
            path = _path_from_text(text, absorber, scatterer, edge, key)
        except ValueError as exc:
            raise AnalysisInputError(f"FEFF output for {absorber}-{scatterer} ({edge} edge) unreadable: {exc}") \
                from None
    if cache_dir is not None:
        _cache_write(Path(cache_dir), key, text, inp)
    return path


def _cache_write(cache_dir: Path, key: str, text: str, inp: str) -> None:
    """Write a cache entry atomically (concurrent jobs computing the same pair write the same bytes)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, content in ((f"{key}.json", json.dumps({"feff.inp": inp, "code": "feff6l"}, indent=1)),
                          (f"{key}.dat", text)):
        tmp = cache_dir / f"{name}.tmp-{os.getpid()}"
        tmp.write_text(content)
        os.replace(tmp, cache_dir / name)


def _splines(path: FeffPath):
    from scipy.interpolate import UnivariateSpline

    return {name: UnivariateSpline(path.k, getattr(path, name), s=0) for name in ("amp", "phase", "rep", "lam")}


def shell_chi(path: FeffPath, k, r, sigma2, n=1.0, de0: float = 0.0, s02: float = 1.0, splines=None) -> np.ndarray:
    """chi(k) of shells at distances ``r`` with Debye-Waller factors ``sigma2`` (broadcast together).

    Parameters
    ----------
    path : FeffPath
        Scattering functions of the pair.
    k : array_like, shape (nk,)
        Wavenumbers (1/Angstrom) of the data.
    r, sigma2, n : array_like, broadcastable to (m,)
        Distance (Angstrom), sigma^2 (Angstrom^2) and coordination number of each shell.
    de0 : float
        E0 shift (eV) of the data relative to FEFF's.
    s02 : float
        Amplitude reduction factor.

    Returns
    -------
    ndarray, shape (nk, m)
        One column per shell (chi, not k-weighted).
    """
    k = np.asarray(k, dtype=float)
    r, sigma2, n = (np.atleast_1d(np.asarray(a, dtype=float)) for a in np.broadcast_arrays(r, sigma2, n))
    sp = splines if splines is not None else _splines(path)
    en = k * k - de0 / KTOE
    en = np.where(np.abs(en) < 1e-9, 1e-9, en)
    q = np.sign(en) * np.sqrt(np.abs(en))
    amp, pha, rep, lam = (sp[name](q) for name in ("amp", "phase", "rep", "lam"))
    p = rep + 1j / lam
    pp = p * p
    reff = path.reff
    dr = r[None, :] - reff
    arg = (-2 * reff * p.imag[:, None] - 2 * pp[:, None] * sigma2[None, :]
           + 1j * (2 * q[:, None] * reff + pha[:, None] + 2 * p[:, None] * (dr - 2 * sigma2[None, :] / reff)))
    cchi = (n * s02)[None, :] * amp[:, None] * np.exp(arg) / (q[:, None] * r[None, :] ** 2)
    return cchi.imag


@dataclass
class Basis:
    """Columns of the sparse model: k-weighted shells over an (R, sigma^2) grid, unit-normalized.

    Attributes
    ----------
    matrix : ndarray, shape (nk, nR * ns)
        Normalized columns (see :func:`basis_matrix`'s ``penalty``); column
        ``i * ns + j`` is R = r_grid[i], sigma^2 = sigma2_grid[j].
    norms : ndarray, shape (nR * ns,)
        Each column's norm before normalization: a coefficient c of the
        normalized column is N S0^2 = c / norm.
    r_grid, sigma2_grid : ndarray
        The grid (Angstrom, Angstrom^2).
    k : ndarray
        Wavenumbers of the rows (1/Angstrom).
    kweight : float
        k weight of the columns.
    de0 : float
        E0 shift (eV) the columns were built with.
    """

    matrix: np.ndarray
    norms: np.ndarray
    r_grid: np.ndarray
    sigma2_grid: np.ndarray
    k: np.ndarray
    kweight: float
    de0: float

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.r_grid), len(self.sigma2_grid)


def r_grid_of(r_range, r_step: float = 0.01) -> np.ndarray:
    """R grid (Angstrom) from r_range[0] to r_range[1] inclusive with step ``r_step``."""
    lo, hi = float(r_range[0]), float(r_range[1])
    return lo + r_step * np.arange(int(round((hi - lo) / r_step)) + 1)


def basis_matrix(path: FeffPath, k, r_grid, sigma2_grid, kweight: float = 2.0, de0: float = 0.0,
                 splines=None, penalty: str = "columns") -> Basis:
    """The normalized basis over ``r_grid`` x ``sigma2_grid`` at the data's ``k`` (see :class:`Basis`).

    ``penalty`` says what an L1 penalty on the coefficients weighs: ``columns``
    normalizes every column to unit norm (the penalty weighs each shell's signal
    size), ``coordination`` divides all columns by one common scale, their median
    norm (the penalty weighs N S0^2, so a broad shell, whose signal per neighbour
    is small, costs more than the two narrow shells it could imitate).
    """
    k = np.asarray(k, float)
    r_grid = np.asarray(r_grid, float)
    sigma2_grid = np.asarray(sigma2_grid, float)
    rr, ss = np.meshgrid(r_grid, sigma2_grid, indexing="ij")
    cols = shell_chi(path, k, rr.ravel(), ss.ravel(), de0=de0, splines=splines) * (k ** kweight)[:, None]
    norms = np.linalg.norm(cols, axis=0)
    norms = np.where(norms > 0, norms, 1.0)
    if penalty == "coordination":
        norms = np.full_like(norms, float(np.median(norms)))
    elif penalty != "columns":
        raise ValueError(f"penalty {penalty!r}: use columns or coordination")
    return Basis(matrix=cols / norms, norms=norms, r_grid=r_grid, sigma2_grid=sigma2_grid, k=k,
                 kweight=float(kweight), de0=float(de0))
