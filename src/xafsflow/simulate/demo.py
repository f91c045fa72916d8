"""The embedded demo campaign: simulated raw files in real formats, with their ground truth.

``write_demo(directory, seed)`` writes every file in :data:`DEMO_FILES` plus
``truth.json`` (the parameters every file was simulated with). Each file's
noise comes from its own stream, ``SeedSequence([seed, blake2b(file, "simulate")])``,
so the files do not depend on the order they are written in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xafsflow.seeds import rng
from xafsflow.simulate import forward as fw

DEMO_FILES = (
    "xanes_01.xdi",
    "xanes_02.dat",
    "exafs_01.xdi",
    "xmcd_01_plus.xdi",
    "xmcd_01_minus.xdi",
    "stack_01.tif",
    "stack_01_energies.txt",
    "stack_02.h5",
    "domain_01.png",
    "domain_02.tif",
    "truth.json",
)

_FACILITY = {"Facility": {"name": "xafsflow simulator"}, "Beamline": {"name": "demo"},
             "Mono": {"name": "Si 111", "d_spacing": "3.13553"}}


def xanes_grid(e0: float) -> np.ndarray:
    """Energy grid typical of a XANES scan: coarse pre-edge, 0.5 eV over the edge, coarse above."""
    return np.concatenate([
        np.arange(e0 - 200.0, e0 - 30.0, 5.0),
        np.arange(e0 - 30.0, e0 + 60.0, 0.5),
        np.arange(e0 + 60.0, e0 + 350.0, 3.0),
    ])


def _xanes_truth(e0, k_peaks, sigma, step, r):
    peaks = []
    # Peaks spread over the pre-edge and the first resonances, well separated.
    centres = np.sort(e0 + np.linspace(-6.0, 25.0, k_peaks) + r.uniform(-1.0, 1.0, k_peaks))
    for c in centres:
        peaks.append((float(r.uniform(0.6, 1.5)), float(c), float(r.uniform(1.2, 2.5))))
    return {
        "e0": e0, "gamma": 2.0, "wl_area": 6.0, "wl_shift": 3.0, "wl_fwhm": 4.0, "wl_eta": 0.5,
        "peaks": peaks, "K": k_peaks, "sigma": sigma, "edge_step": step,
    }


def _xanes(energy, t):
    return fw.xanes_normalized(energy, t["e0"], t["gamma"], t["wl_area"], t["wl_shift"], t["wl_fwhm"],
                               t["wl_eta"], t["peaks"])


def write_demo(directory: str | Path, seed: int = 20261127) -> dict:
    """Write the demo campaign's raw files and ``truth.json`` into ``directory``; return the truth."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    truth: dict = {"seed": seed, "scans": {}}
    truth["scans"].update(_write_xanes(d, seed))
    truth["scans"]["exafs_01"] = _write_exafs(d, seed)
    truth["scans"]["xmcd_01"] = _write_xmcd(d, seed)
    # Micro-XAFS stacks: three phases in Voronoi grains.
    for name, fmt in (("stack_01", "tiff"), ("stack_02", "hdf5")):
        r = rng(seed, name, "simulate")
        truth["scans"][name] = _write_stack(d, name, fmt, r)
    # Domain images: TDGL runs (xafsflow.domains.tdgl) with known alpha, at the demo model's slowest sweep.
    for name, alpha, ext in (("domain_01", 1.4, "png"), ("domain_02", 2.0, "tif")):
        truth["scans"][name] = _write_domain_image(d, seed, name, alpha, ext)
    (d / "truth.json").write_text(json.dumps(truth, indent=1, default=float))
    return truth


def _write_xanes(d: Path, seed: int) -> dict:
    """The two XANES scans (XDI with mu; plain columns with I0 and IT); return their truth entries."""
    from xafsflow.io.xdi_write import write_xdi

    scans = {}
    # XANES 1: Cu K-like, XDI, transmission mu given directly.
    r = rng(seed, "xanes_01.xdi", "simulate")
    t = _xanes_truth(8979.0, 3, 0.01, 0.8, r)
    e = xanes_grid(t["e0"])
    norm = _xanes(e, t)
    mu = fw.raw_absorption(e, norm, t["e0"], t["edge_step"], 0.35, -2.0e-4, 0.3) + r.normal(0, t["sigma"] * t["edge_step"], e.size)
    fw_fields = {"Element": {"symbol": "Cu", "edge": "K"}, **_FACILITY, "Sample": {"name": "demo Cu compound"}}
    write_xdi(d / "xanes_01.xdi", [("energy", "eV", e), ("mutrans", "", mu)], fw_fields,
              "simulated XANES: arctan step + pseudo-Voigt + 3 Gaussians\nnoise sigma 0.01 of the edge step")
    scans["xanes_01"] = {"kind": "xanes", "model": "xanes", **t}

    # XANES 2: Fe K-like, plain columns with i0/itrans (mu = ln(i0/itrans)).
    r = rng(seed, "xanes_02.dat", "simulate")
    t = _xanes_truth(7112.0, 2, 0.012, 1.1, r)
    e = xanes_grid(t["e0"])
    norm = _xanes(e, t)
    mu = fw.raw_absorption(e, norm, t["e0"], t["edge_step"], 0.6, -1.5e-4, 0.2) + r.normal(0, t["sigma"] * t["edge_step"], e.size)
    i0 = 2.0e5 * (1.0 + 0.05 * np.sin((e - e[0]) / 90.0))
    itrans = i0 * np.exp(-mu)
    with open(d / "xanes_02.dat", "w") as fh:
        fh.write("# simulated Fe K-edge XANES, transmission\n# energy_eV  I0  IT\n")
        for row in zip(e, i0, itrans):
            fh.write("  ".join(f"{x:.10g}" for x in row) + "\n")
    scans["xanes_02"] = {"kind": "xanes", "model": "xanes", **t}
    return scans


def _write_exafs(d: Path, seed: int) -> dict:
    """EXAFS: Cu K-like, two close first shells the Fourier transform blurs; return its truth entry."""
    from xafsflow.io.xdi_write import write_xdi

    r = rng(seed, "exafs_01.xdi", "simulate")
    e0 = 8979.0
    shells = [(6.0, 2.45, 0.006), (6.0, 2.62, 0.007), (6.0, 3.61, 0.010)]
    e = np.concatenate([np.arange(e0 - 200, e0 - 20, 5.0), np.arange(e0 - 20, e0 + 30, 0.5)])
    k_end = 14.0
    kgrid = np.arange(np.sqrt(30 / fw.KTOE), k_end, 0.05)
    e = np.concatenate([e, e0 + fw.KTOE * kgrid**2])
    k = np.sqrt(np.clip(e - e0, 0, None) / fw.KTOE)
    chi = fw.exafs_chi(k, shells)
    step = 1.2
    edge = fw.arctan_step(e, e0, 2.0)
    mu = 0.3 - 1.0e-4 * (e - e0) + step * edge * (1 + chi) * (1 - 0.25 * np.where(e > e0, ((e - e0) / 1000) ** 2, 0))
    sigma = 0.001
    mu = mu + r.normal(0, sigma * step, e.size)
    write_xdi(d / "exafs_01.xdi", [("energy", "eV", e), ("mutrans", "", mu)],
              {"Element": {"symbol": "Cu", "edge": "K"}, **_FACILITY}, "simulated EXAFS, three shells")
    return {"kind": "exafs", "e0": e0, "edge_step": step, "shells": shells, "s02": 0.9, "sigma": sigma}


def _write_xmcd(d: Path, seed: int) -> dict:
    """XMCD pair: Fe L2,3-like, fluorescence-yield mu for each helicity; return its truth entry."""
    from xafsflow.io.xdi_write import write_xdi

    r = rng(seed, "xmcd_01", "simulate")
    e = np.arange(680.0, 760.0, 0.2)
    l3, l2 = 707.0, 720.0
    base = 0.66 * fw.arctan_step(e, l3, 1.5) + 0.34 * fw.arctan_step(e, l2, 1.5)
    wl3 = fw.pseudo_voigt(e, 6.0, l3 + 1.0, 2.5, 0.6)
    wl2 = fw.pseudo_voigt(e, 2.5, l2 + 1.0, 3.0, 0.6)
    dichro = 0.15 * (fw.pseudo_voigt(e, 6.0, l3 + 1.0, 2.5, 0.6) * 1.0 - fw.pseudo_voigt(e, 2.5, l2 + 1.0, 3.0, 0.6) * 0.8)
    step = 0.5
    sig = 0.003
    norm_p = base + wl3 + wl2 + dichro
    norm_m = base + wl3 + wl2 - dichro
    mp = 0.2 + 1e-4 * (e - l3) + step * norm_p + r.normal(0, sig * step, e.size)
    mm = 0.2 + 1e-4 * (e - l3) + step * norm_m + r.normal(0, sig * step, e.size)
    xf = {"Element": {"symbol": "Fe", "edge": "L3"}, **_FACILITY}
    write_xdi(d / "xmcd_01_plus.xdi", [("energy", "eV", e), ("mufluor", "", mp)], xf, "XMCD, helicity +")
    write_xdi(d / "xmcd_01_minus.xdi", [("energy", "eV", e), ("mufluor", "", mm)], xf, "XMCD, helicity -")
    return {"kind": "xmcd", "l3": l3, "l2": l2, "edge_step": step, "sigma": sig}


# sweep rate of the demo's domain images: the slowest of the demo's domain model (config/config.yaml)
DEMO_DOMAIN_SWEEP_RATE = 0.01


def _write_domain_image(d: Path, seed: int, name: str, alpha: float, ext: str) -> dict:
    """One TDGL domain image (defaults of TDGLParams, 128x128), 8-bit grayscale PNG or float32 TIFF.

    One grid spacing is 0.05 um (the demo's ``length_unit_um``); returns its truth entry.
    """
    from dataclasses import asdict

    from xafsflow.domains.tdgl import TDGLParams
    from xafsflow.domains.tdgl import run as tdgl_run
    from xafsflow.seeds import seed_sequence

    p = TDGLParams(alpha=alpha, v=DEMO_DOMAIN_SWEEP_RATE)
    phi = tdgl_run(p, seed_sequence(seed, name, "simulate"))["image"]
    path = d / f"{name}.{ext}"
    if ext == "png":
        from PIL import Image

        gray = (np.clip((phi + 1.2) / 2.4, 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(gray, mode="L").save(path)
    else:
        import tifffile

        # 0.05 um pixels: 2e5 pixels per cm in the TIFF resolution tags.
        tifffile.imwrite(path, phi.astype(np.float32), resolution=(2.0e5, 2.0e5),
                         resolutionunit="CENTIMETER")
    return {"kind": "domain_image", "alpha": alpha, "pixel_size_um": 0.05, "tdgl": asdict(p)}


def _write_stack(d: Path, name: str, fmt: str, r: np.random.Generator) -> dict:
    ny, nx = 40, 48
    e0 = 7112.0
    energies = np.concatenate([np.arange(e0 - 80, e0 - 20, 6.0), np.arange(e0 - 20, e0 + 40, 1.0),
                               np.arange(e0 + 40, e0 + 180, 8.0)])
    phases = [  # (edge shift eV, white-line area) per phase
        (0.0, 2.0), (2.5, 5.0), (5.0, 1.0),
    ]
    spectra = np.stack([
        fw.xanes_normalized(energies, e0 + s, 2.0, a, 2.0, 4.0, 0.5, []) for s, a in phases
    ])
    n_grains = 9
    seeds_yx = np.column_stack([r.uniform(0, ny, n_grains), r.uniform(0, nx, n_grains)])
    grain_phase = np.arange(n_grains) % len(phases)
    yy, xx = np.mgrid[0:ny, 0:nx]
    dist = (yy[..., None] - seeds_yx[:, 0]) ** 2 + (xx[..., None] - seeds_yx[:, 1]) ** 2
    labels = grain_phase[np.argmin(dist, axis=-1)]
    thickness = 0.8 + 0.4 * r.random((ny, nx))
    sigma = 0.02
    norm = spectra[labels]  # (y, x, E)
    mu = 0.2 - 2e-4 * (energies - e0) + thickness[..., None] * norm
    mu = mu + r.normal(0, sigma, mu.shape)
    stack = np.moveaxis(mu, -1, 0).astype(np.float32)  # (E, y, x)
    if fmt == "tiff":
        import tifffile

        tifffile.imwrite(d / f"{name}.tif", stack, photometric="minisblack")
        np.savetxt(d / f"{name}_energies.txt", energies, fmt="%.3f", header="energy (eV) of each frame")
    else:
        import h5py

        with h5py.File(d / f"{name}.h5", "w") as fh:
            fh.create_dataset("exchange/data", data=stack, chunks=(stack.shape[0], 8, nx))
            fh.create_dataset("exchange/energy", data=energies)
    return {"kind": "stack", "e0": e0, "phases": phases, "labels": labels.tolist(), "sigma": sigma,
            "shape": [int(x) for x in stack.shape]}
