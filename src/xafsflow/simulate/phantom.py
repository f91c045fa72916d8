"""A phantom battery electrode as a micro-XANES stack, with its ground truth.

Voronoi grains of Co K-edge phases (reference-like spectra of three states of
charge: the edge shifting by a few eV with a changing white line and a weak
pre-edge peak): some grains pure in one phase, the others mixtures of two or
three phases whose fractions vary smoothly across the grain; some grains
empty (no sample: a flat, edgeless background). Thickness varies from pixel
to pixel; Gaussian noise on the absorbance.

Truth per pixel: ``fractions`` (phase, y, x) summing to 1 on the sample and 0
on empty pixels, ``grain_id``, ``grain_class`` per grain (``empty``, ``pure``,
``mixed``), ``label`` (0 empty, 1 + the phase with the largest fraction),
``thickness`` (edge step) and the phases' normalized spectra.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xafsflow.seeds import rng
from xafsflow.simulate import forward as fw

CO_K_EDGE = 7709.0
# (edge shift eV, white-line area, white-line shift eV) of three states of charge
PHASES = ((12.0, 2.5, 4.0), (14.5, 4.0, 5.0), (17.0, 1.5, 3.0))
DEMO_NOISE = 0.01  # sd of the absorbance noise; the edge step is 0.6-1.2


def phantom_energies() -> np.ndarray:
    """Energy grid (eV): coarse pre-edge, 0.5 eV through the edge, coarse post-edge (about 100 points)."""
    e0 = CO_K_EDGE
    return np.concatenate([np.arange(e0 - 60, e0 - 5, 5.0), np.arange(e0 - 5, e0 + 35, 0.5),
                           np.arange(e0 + 35, e0 + 120, 6.0)])


def phase_spectra(energies: np.ndarray) -> np.ndarray:
    """Normalized XANES of the phases (phase, E)."""
    return np.stack([
        fw.xanes_normalized(energies, CO_K_EDGE + s, 2.5, a, w, 4.0, 0.4, [(0.08, CO_K_EDGE + 0.5, 1.0)])
        for s, a, w in PHASES
    ])


def simulate_phantom(seed: int, ny: int = 64, nx: int = 64, n_grains: int = 28, noise: float = DEMO_NOISE,
                     empty_fraction: float = 0.12, pure_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, dict]:
    """Raw absorbance stack (E, y, x) float32, its energies (eV) and the truth (arrays).

    Parameters
    ----------
    seed : int
        Campaign seed; the phantom's stream is ``SeedSequence([seed, blake2b("phantom", "simulate")])``.
    ny, nx : int
        Pixels.
    n_grains : int
        Voronoi grains.
    noise : float
        Gaussian sd of the absorbance (edge steps 0.6-1.2).
    empty_fraction, pure_fraction : float
        Probability that a grain is empty, and that a sample grain is pure.
    """
    r = rng(seed, "phantom", "simulate")
    energies = phantom_energies()
    spectra = phase_spectra(energies)
    n_ph = spectra.shape[0]
    seeds_yx = np.column_stack([r.uniform(0, ny, n_grains), r.uniform(0, nx, n_grains)])
    yy, xx = np.mgrid[0:ny, 0:nx]
    dist = (yy[..., None] - seeds_yx[:, 0]) ** 2 + (xx[..., None] - seeds_yx[:, 1]) ** 2
    grain = np.argmin(dist, axis=-1)
    fractions = np.zeros((n_ph, ny, nx))
    classes = []
    u = r.random(n_grains)
    for g in range(n_grains):
        inside = grain == g
        if u[g] < empty_fraction:
            classes.append("empty")
            continue
        if u[g] < empty_fraction + (1 - empty_fraction) * pure_fraction or g < n_ph:
            p = g % n_ph if g < n_ph else int(r.integers(n_ph))  # every phase has a pure grain
            fractions[p, inside] = 1.0
            classes.append("pure")
            continue
        classes.append("mixed")
        members = r.choice(n_ph, size=int(r.integers(2, n_ph + 1)), replace=False)
        base = r.dirichlet(np.full(members.size, 2.0))
        # fractions vary linearly across the grain (a reaction front), then renormalized
        direction = r.normal(size=2)
        direction /= np.linalg.norm(direction)
        coord = (yy[inside] - seeds_yx[g, 0]) * direction[0] + (xx[inside] - seeds_yx[g, 1]) * direction[1]
        coord = coord / max(np.abs(coord).max(), 1.0)
        tilt = r.normal(0, 0.5, members.size)
        f = np.clip(base[:, None] + 0.5 * tilt[:, None] * coord[None, :], 0.02, None)
        f /= f.sum(axis=0, keepdims=True)
        fractions[members[:, None], np.flatnonzero(inside.ravel())[None, :] // nx,
                  np.flatnonzero(inside.ravel())[None, :] % nx] = f
    sample = fractions.sum(axis=0) > 0
    thickness = np.where(sample, 0.6 + 0.6 * r.random((ny, nx)), 0.0)
    norm = np.einsum("pyx,pe->eyx", fractions, spectra)
    de = (energies - CO_K_EDGE)[:, None, None]
    mu = 0.3 - 2e-4 * de + thickness[None] * norm + r.normal(0, noise, (energies.size, ny, nx))
    label = np.where(sample, 1 + np.argmax(fractions, axis=0), 0)
    truth = {"energies": energies, "spectra": spectra, "fractions": fractions, "grain_id": grain,
             "grain_class": classes, "label": label, "thickness": thickness, "noise": noise,
             "edge": CO_K_EDGE, "phases": [list(p) for p in PHASES], "seed": seed}
    return mu.astype(np.float32), energies, truth


def write_phantom(directory: str | Path, seed: int, fmt: str = "hdf5", **kwargs) -> dict:
    """Write the phantom as ``phantom.h5`` (datasets ``exchange/data``, ``exchange/energy``) or
    ``phantom.tif`` + ``phantom_energies.txt``, and its truth ``phantom_truth.json``.

    Returns the truth (arrays as NumPy). Keyword arguments go to :func:`simulate_phantom`.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stack, energies, truth = simulate_phantom(seed, **kwargs)
    if fmt == "hdf5":
        import h5py

        with h5py.File(d / "phantom.h5", "w") as fh:
            fh.create_dataset("exchange/data", data=stack, chunks=(stack.shape[0], 8, stack.shape[2]))
            fh.create_dataset("exchange/energy", data=energies)
    elif fmt == "tiff":
        import tifffile

        tifffile.imwrite(d / "phantom.tif", stack, photometric="minisblack")
        np.savetxt(d / "phantom_energies.txt", energies, fmt="%.3f", header="energy (eV) of each frame")
    else:
        raise ValueError(f"unknown phantom format {fmt!r} (hdf5 or tiff)")
    out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in truth.items()}
    (d / "phantom_truth.json").write_text(json.dumps(out))
    return truth


def read_truth(path: str | Path) -> dict:
    """``phantom_truth.json`` with its arrays as NumPy."""
    t = json.loads(Path(path).read_text())
    for k in ("energies", "spectra", "fractions", "grain_id", "label", "thickness"):
        t[k] = np.asarray(t[k])
    return t


def normalized_spectra(truth: dict, normalize: dict) -> np.ndarray:
    """The phases' spectra as a pure, noiseless pixel of unit thickness reaches the NMF.

    Each phase's raw absorbance (the phantom's pre-edge line plus the spectrum)
    through :func:`xafsflow.xas.normalize.normalize_edge` with the keywords
    ``normalize`` (the same normalization as the data): per-pixel
    normalization is a linear map (for a fixed e0) that changes the spectra
    slightly (pre-edge line fitted over the arctan tail), so components are
    scored against these.
    """
    from xafsflow.xas.normalize import normalize_edge

    e = np.asarray(truth["energies"], dtype=float)
    raw = 0.3 - 2e-4 * (e - truth["edge"])[:, None] + np.asarray(truth["spectra"]).T
    return normalize_edge(e, raw, **normalize).norm.T
