"""Scanning transmission X-ray microscope (STXM) stacks in the ALS / aXis2000 layout.

A stack is a folder with

- ``<stem>.hdr``: the scan header, a brace-and-semicolon text format
  (``Key = value;`` and ``Key = { ... };``); the pixel axes are ``PAxis`` /
  ``QAxis`` blocks (``Name = "Sample X"``, ``Points = (n, x1, ..., xn)``) and
  the energies the ``StackAxis`` block (``Points = (n, e1, ..., en)``, eV);
- ``<stem>_a000.xim`` ... one per energy in the header's order: rows of
  tab-separated transmitted-intensity counts (y lines of x values);
- ``i0.xsp`` (or another name): the incident intensity, two columns (energy eV, counts);
- optionally a ``.msk`` pixel mask: y lines of x characters, ``O`` for pixels
  kept and any other character (a blank) for pixels excluded.

Everything comes from the files: energies and pixel size from the header,
the frame count from it too (a missing or extra ``.xim`` is an error).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from xafsflow.errors import FileFormatError

_POINTS = re.compile(r"Points\s*=\s*\(([^)]*)\)", re.S)
_NAME = re.compile(r'Name\s*=\s*"([^"]*)"')


def _axis(text: str, key: str, path: Path) -> tuple[str, np.ndarray]:
    """(name, points) of the axis block ``key`` (PAxis, QAxis, StackAxis) of a header."""
    m = re.search(rf"\b{key}\s*=\s*\{{", text)
    if m is None:
        raise FileFormatError(f"header has no {key} block", path)
    name_m = _NAME.search(text, m.end())
    pts_m = _POINTS.search(text, m.end())
    if pts_m is None or name_m is None:
        raise FileFormatError(f"{key} block has no Name or Points", path)
    try:
        values = [float(v) for v in pts_m.group(1).replace("\n", " ").split(",") if v.strip()]
    except ValueError:
        raise FileFormatError(f"{key} Points are not numbers", path) from None
    n = int(values[0])
    pts = np.asarray(values[1:])
    if n != pts.size:
        raise FileFormatError(f"{key} says {n} points but lists {pts.size}", path)
    return name_m.group(1), pts


def read_header(path: str | Path) -> dict:
    """Energies (eV), pixel axes (um) and pixel size of a ``.hdr`` STXM header."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise FileFormatError(f"cannot read STXM header: {exc.strerror}", path) from None
    if "ScanDefinition" not in text:
        raise FileFormatError("not an STXM scan header (no ScanDefinition)", path)
    ename, energies = _axis(text, "StackAxis", path)
    if "energy" not in ename.lower():
        raise FileFormatError(f"StackAxis is {ename!r}, not Energy: not an energy stack", path)
    xname, xs = _axis(text, "PAxis", path)
    yname, ys = _axis(text, "QAxis", path)
    if energies.size < 2:
        raise FileFormatError("fewer than 2 energies in StackAxis", path)
    step = float(np.median(np.abs(np.diff(xs)))) if xs.size > 1 else None
    return {"energies": energies, "x": xs, "y": ys, "x_name": xname, "y_name": yname,
            "pixel_size_um": step, "shape": (energies.size, ys.size, xs.size)}


def _read_xim(path: Path, ny: int, nx: int) -> np.ndarray:
    try:
        img = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"not a readable .xim image ({exc})", path) from None
    if img.shape != (ny, nx):
        raise FileFormatError(f"image is {img.shape[0]} x {img.shape[1]}, the header says {ny} x {nx}", path)
    return img


def read_i0(path: str | Path, energies: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """I0 counts at ``energies`` from a two-column ``.xsp`` file (interpolated, with a warning, if the grids differ)."""
    path = Path(path)
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"not a readable I0 spectrum ({exc})", path) from None
    if data.shape[1] < 2:
        raise FileFormatError("I0 spectrum needs two columns (energy eV, counts)", path)
    e, i0 = data[:, 0], data[:, 1]
    if np.any(i0 <= 0) or not np.all(np.isfinite(i0)):
        raise FileFormatError("I0 has non-positive or non-finite counts", path)
    warnings = []
    if e.size == energies.size and np.allclose(e, energies, atol=1e-3):
        return i0, warnings
    order = np.argsort(e)
    if energies.min() < e.min() - 1e-3 or energies.max() > e.max() + 1e-3:
        raise FileFormatError(f"I0 covers {e.min():.3f}-{e.max():.3f} eV, the stack "
                              f"{energies.min():.3f}-{energies.max():.3f} eV", path)
    warnings.append(f"{path.name}: I0 on another energy grid; interpolated onto the stack's")
    return np.interp(energies, e[order], i0[order]), warnings


def read_mask(path: str | Path, ny: int, nx: int) -> np.ndarray:
    """Excluded pixels (True) of a ``.msk`` file: ``O`` keeps a pixel, any other character excludes it."""
    path = Path(path)
    lines = path.read_text().split("\n")
    lines = [ln for ln in lines[:ny]]
    if len(lines) < ny:
        raise FileFormatError(f"mask has {len(lines)} lines, the stack {ny}", path)
    out = np.ones((ny, nx), bool)
    for i, ln in enumerate(lines):
        row = ln.ljust(nx)[:nx]  # trailing blanks may be stripped by editors: they exclude
        out[i] = np.array([c != "O" for c in row])
    return out


def read_stxm(hdr: str | Path, i0: str | Path | None = None, mask: str | Path | None = None) -> dict:
    """Read an STXM stack: transmitted counts (E, y, x), energies, I0, optional mask and metadata.

    Parameters
    ----------
    hdr : path
        The ``.hdr`` header; the frames are ``<stem>_aNNN.xim`` beside it.
    i0 : path, optional
        Incident-intensity spectrum; default ``i0.xsp`` beside the header if present.
    mask : path, optional
        Pixel mask; default the single ``.msk`` beside the header if there is exactly one.

    Returns
    -------
    dict
        ``counts`` float64 (E, y, x), ``energies`` (eV), ``i0`` (E,) or None,
        ``mask`` (y, x) bool or None, ``meta`` (header facts, files used),
        ``warnings``.
    """
    hdr = Path(hdr)
    h = read_header(hdr)
    ne, ny, nx = h["shape"]
    frames = sorted(hdr.parent.glob(f"{hdr.stem}_a*.xim"))
    if len(frames) != ne:
        raise FileFormatError(f"the header lists {ne} energies but {len(frames)} {hdr.stem}_a*.xim images exist",
                              hdr)
    counts = np.empty((ne, ny, nx))
    for i, f in enumerate(frames):
        if f.name != f"{hdr.stem}_a{i:03d}.xim":
            raise FileFormatError(f"image {i} of the stack is missing (found {f.name})", hdr)
        counts[i] = _read_xim(f, ny, nx)
    warnings: list[str] = []
    if i0 is None and (hdr.parent / "i0.xsp").exists():
        i0 = hdr.parent / "i0.xsp"
    i0_counts = None
    if i0 is not None:
        i0_counts, w = read_i0(i0, h["energies"])
        warnings += w
    if mask is None:
        masks = sorted(hdr.parent.glob("*.msk"))
        mask = masks[0] if len(masks) == 1 else None
    pix_mask = None if mask is None else read_mask(mask, ny, nx)
    meta = {"header": hdr.name, "x_axis": h["x_name"], "y_axis": h["y_name"], "shape": [ne, ny, nx],
            "pixel_size_um": h["pixel_size_um"], "energy_range_eV": [float(h["energies"][0]),
                                                                     float(h["energies"][-1])],
            "i0_file": None if i0 is None else str(i0), "mask_file": None if mask is None else str(mask)}
    return {"counts": counts, "energies": h["energies"], "i0": i0_counts, "mask": pix_mask, "meta": meta,
            "warnings": warnings, "files": [str(f) for f in frames]}
