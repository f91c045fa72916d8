"""Image stacks (energy, y, x) from TIFF or HDF5, and single domain images.

Stacks are read frame by frame (:class:`TiffPages`, :class:`TiffFolder`,
:class:`Hdf5Frames`) and streamed by :func:`stream_frames` into a scratch Zarr
array, applying the optional corrections of
:mod:`xafsflow.imaging.corrections` to one frame at a time, so memory stays
bounded whatever the stack's size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xafsflow.errors import FileFormatError


def _energy_lines(path: Path) -> list[str]:
    """Lines of an energies file; a FileFormatError if it cannot be read as text."""
    try:
        return path.read_text().splitlines()
    except OSError as exc:
        raise FileFormatError(f"cannot read energies file: {exc.strerror}", path) from None
    except UnicodeDecodeError:
        raise FileFormatError("energies file is not text", path) from None


def read_energies(path: str | Path) -> np.ndarray:
    """Energies (eV) of a TIFF stack's frames: one number per line ('#' comments allowed)."""
    path = Path(path)
    values = []
    lines = _energy_lines(path)
    for i, line in enumerate(lines, start=1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        toks = s.split()
        try:
            v = float(toks[0])
        except ValueError:
            raise FileFormatError(f"{toks[0]!r} is not an energy in eV", path, i) from None
        if not np.isfinite(v):
            raise FileFormatError("non-finite energy", path, i)
        values.append(v)
    if len(values) < 2:
        raise FileFormatError("fewer than 2 energies", path)
    return np.asarray(values, dtype=np.float64)


def stack_chunks(shape: tuple[int, int, int], chunk_pixels: int) -> tuple[int, int, int]:
    """Chunks of an (energy, y, x) stack: whole energy axis, whole rows, about ``chunk_pixels`` pixels."""
    ne, ny, nx = shape
    rows = max(1, min(ny, chunk_pixels // max(nx, 1)))
    return (ne, rows, nx)


class _Scratch:
    """Closes the frame source and removes the scratch copy."""

    def __init__(self, source, directory: Path):
        self.source, self.directory = source, directory

    def close(self):
        import shutil

        self.source.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _datasets(fh) -> list[str]:
    names: list[str] = []
    fh.visititems(lambda n, o: names.append(n) if hasattr(o, "shape") else None)
    return names


def read_image(path: str | Path) -> tuple[np.ndarray, dict]:
    """A grayscale domain image (TIFF or PNG) as float64 (y, x), with its metadata.

    RGB(A) images are refused (convert them to grayscale first); the pixel size is
    taken from TIFF resolution tags when present (micrometres).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    meta: dict = {}
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                img = tif.asarray()
                um = tiff_pixel_size(tif)
                if um is not None:
                    meta["pixel_size_from_file"] = um
        elif suffix == ".png":
            import matplotlib.image as mpimg

            img = mpimg.imread(str(path))
        else:
            raise FileFormatError(f"unsupported image type {suffix!r} (use TIFF or PNG)", path)
    except FileFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a format error
        raise FileFormatError(f"not a readable image ({exc})", path) from None
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        raise FileFormatError(f"colour image (shape {img.shape}); domain images must be grayscale", path)
    if img.ndim != 2:
        raise FileFormatError(f"expected a 2-D grayscale image, found shape {img.shape}", path)
    img = img.astype(np.float64)
    if not np.all(np.isfinite(img)):
        raise FileFormatError("image has non-finite pixels", path)
    return img, meta


# ----------------------------------------------------------------- frame sources
_UM_PER_UNIT = {"um": 1.0, "micron": 1.0, "microns": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3,
                "m": 1e6, "cm": 1e4}


def tiff_pixel_size(tif) -> float | None:
    """Pixel size (um) of an open :class:`tifffile.TiffFile` from its resolution tags, or None.

    ``ResolutionUnit`` inch or centimetre; or, for ImageJ files (unit "none"),
    the ImageJ ``unit`` (micron, nm, mm) with XResolution in pixels per unit.
    """
    tags = tif.pages[0].tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if num <= 0 or den <= 0:
        return None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 1
    if unit in (2, 3):
        return (25400.0 if unit == 2 else 10000.0) * den / num  # pixels per inch (2) or per cm (3)
    ij = tif.imagej_metadata or {}
    scale = _UM_PER_UNIT.get(str(ij.get("unit", "")).strip().lower())
    if scale is None:
        return None
    return scale * den / num


def natural_key(name: str) -> list:
    """Sort key ordering embedded numbers by value (``e2.tif`` before ``e10.tif``)."""
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def folder_tiffs(folder: str | Path) -> list[Path]:
    """The TIFF files (``.tif``/``.tiff``, any case) of ``folder`` in natural sort order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileFormatError("a tiff_folder stack's path must be a folder of per-energy TIFF images", folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".tif", ".tiff")]
    if not files:
        raise FileFormatError("no .tif/.tiff images in the folder", folder)
    return sorted(files, key=lambda p: natural_key(p.name))


def read_folder_energies(path: str | Path, folder: str | Path) -> tuple[list[Path], np.ndarray]:
    """Frames and energies (eV) of a folder of per-energy TIFFs from its energies file.

    The file holds either one energy per line, for the folder's TIFFs in natural
    sort order (:func:`natural_key`), or lines ``<file name> <energy>`` naming
    every TIFF of the folder once (frames then in the file's line order).
    ``#`` starts a comment.

    Returns
    -------
    (list of Path, (E,) float64)
        Frame files and their energies, in the same order.
    """
    path = Path(path)
    tiffs = folder_tiffs(folder)
    lines = _energy_lines(path)
    rows = []
    for i, line in enumerate(lines, start=1):
        s = line.split("#", 1)[0].strip()
        if s:
            rows.append((i, s.split()))
    if not rows:
        raise FileFormatError("energies file has no energies", path)
    widths = {len(t) for _, t in rows}
    if widths not in ({1}, {2}):
        raise FileFormatError("each line must be '<energy>' or '<file> <energy>', the same form on every line",
                              path, rows[0][0])
    energies = []
    for i, toks in rows:
        try:
            v = float(toks[-1])
        except ValueError:
            raise FileFormatError(f"{toks[-1]!r} is not an energy in eV", path, i) from None
        if not np.isfinite(v):
            raise FileFormatError("non-finite energy", path, i)
        energies.append(v)
    if widths == {1}:
        if len(energies) != len(tiffs):
            raise FileFormatError(f"{len(energies)} energies for {len(tiffs)} TIFF images in {Path(folder).name}/: "
                                  "give one energy per image (natural sort order of the file names)", path)
        return tiffs, np.asarray(energies)
    by_name = {p.name: p for p in tiffs}
    files, seen = [], set()
    for i, toks in rows:
        if toks[0] not in by_name:
            raise FileFormatError(f"{toks[0]!r} is not a TIFF image in {Path(folder).name}/", path, i)
        if toks[0] in seen:
            raise FileFormatError(f"{toks[0]!r} listed twice", path, i)
        seen.add(toks[0])
        files.append(by_name[toks[0]])
    missing = [n for n in by_name if n not in seen]
    if missing:
        raise FileFormatError(f"{len(missing)} TIFF image(s) of the folder have no energy (e.g. {missing[0]!r}): "
                              "list every image or move the others out", path)
    return files, np.asarray(energies)


def _as_frame(img, where, k: int) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 2:
        raise FileFormatError(f"frame {k} has shape {img.shape}; expected a 2-D grayscale image", where)
    return img


class TiffPages:
    """Frames of a multi-page TIFF (one page per energy)."""

    def __init__(self, path: str | Path):
        import tifffile

        self.path = Path(path)
        try:
            self.tif = tifffile.TiffFile(str(self.path))
            series = self.tif.series[0]
            shape = tuple(series.shape)
        except (OSError, ValueError, tifffile.TiffFileError, IndexError) as exc:
            raise FileFormatError(f"not a readable TIFF stack ({exc})", self.path) from None
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            self.tif.close()
            raise FileFormatError(f"expected a 3-D (energy, y, x) stack, found shape {shape}", self.path)
        self.series = series
        self.n, self.shape, self.dtype = shape[0], shape[1:], series.dtype
        # a 3- or 4-frame stack may have been written as one planar multi-sample page: read it whole
        self._whole = series.asarray().reshape(shape) if len(series.pages) != shape[0] else None
        self.pixel_size_um = tiff_pixel_size(self.tif)
        self.meta = {"tiff_shape": list(shape), "tiff_dtype": str(self.dtype)}

    def frame(self, k: int) -> np.ndarray:
        if self._whole is not None:
            return self._whole[k]
        return _as_frame(self.series.pages[k].asarray(), self.path, k)

    def close(self):
        self.tif.close()


class TiffFolder:
    """Frames of a folder of single-image TIFFs, one per energy, in the given order."""

    def __init__(self, files: list[Path]):
        import tifffile

        self.files = [Path(f) for f in files]
        try:
            with tifffile.TiffFile(str(self.files[0])) as tif:
                first = tif.asarray()
                self.pixel_size_um = tiff_pixel_size(tif)
        except (OSError, ValueError, tifffile.TiffFileError, IndexError) as exc:
            raise FileFormatError(f"not a readable TIFF image ({exc})", self.files[0]) from None
        first = _as_frame(first, self.files[0], 0)
        self.n, self.shape, self.dtype = len(self.files), first.shape, first.dtype
        self.meta = {"folder": str(self.files[0].parent), "files": [f.name for f in self.files],
                     "tiff_dtype": str(self.dtype)}

    def frame(self, k: int) -> np.ndarray:
        import tifffile

        f = self.files[k]
        try:
            img = tifffile.imread(str(f))
        except (OSError, ValueError, tifffile.TiffFileError, IndexError) as exc:
            raise FileFormatError(f"not a readable TIFF image ({exc})", f) from None
        img = _as_frame(img, f, k)
        if img.shape != self.shape:
            raise FileFormatError(f"image is {img.shape[0]} x {img.shape[1]}, the first image "
                                  f"{self.shape[0]} x {self.shape[1]}: all frames must have one size", f)
        return img

    def close(self):
        pass


AXES = ("energy", "y", "x")


def parse_axes(text: str | None) -> tuple[str, ...]:
    """Axis order of an HDF5 stack dataset: a permutation of energy, y, x written ``energy,y,x`` (the default)."""
    if not text:
        return AXES
    axes = tuple(a.strip().lower() for a in str(text).replace(" ", ",").split(",") if a.strip())
    axes = tuple("energy" if a in ("e", "energy") else a for a in axes)
    if sorted(axes) != sorted(AXES):
        raise ValueError(f"axes {text!r}: give the dataset's axis order as a permutation of energy, y, x "
                         "(e.g. 'y,x,energy')")
    return axes


class Hdf5Frames:
    """Frames of an HDF5/NeXus dataset, energies and pixel size from the datasets the sheet names.

    Parameters
    ----------
    path : HDF5 file.
    dataset : path of the 3-D image stack.
    energy : path of the energies (eV); default the dataset's ``energy_dataset`` attribute.
    axes : axis order of ``dataset`` (see :func:`parse_axes`), default energy, y, x.
    pixel_size : path of a scalar pixel size; its ``units`` attribute (um, nm, mm, m;
        default um) converts it to micrometres.
    """

    def __init__(self, path, dataset: str, energy: str | None = None, axes: str | None = None,
                 pixel_size: str | None = None):
        import h5py

        self.path = Path(path)
        try:
            self.fh = h5py.File(self.path, "r")
        except OSError as exc:
            raise FileFormatError(f"not a readable HDF5 file ({exc})", self.path) from None
        try:
            self._open(dataset, energy, axes, pixel_size)
        except BaseException:
            self.fh.close()
            raise

    def _open(self, dataset, energy, axes, pixel_size):
        fh, path = self.fh, self.path
        if dataset not in fh or not hasattr(fh[dataset], "shape"):
            raise FileFormatError(f"no dataset {dataset!r} (datasets: {', '.join(_datasets(fh))}): "
                                  "give the image stack's path in the sheet's 'dataset'", path)
        dset = fh[dataset]
        try:
            self.axes = parse_axes(axes)
        except ValueError as exc:
            raise FileFormatError(str(exc), path) from None
        if dset.ndim != 3:
            raise FileFormatError(f"dataset {dataset!r} has shape {dset.shape}; expected 3 axes "
                                  f"({', '.join(self.axes)})", path)
        if energy is None:
            energy = dset.attrs.get("energy_dataset")
            energy = energy.decode() if isinstance(energy, bytes) else energy
        if energy is None or energy not in fh:
            raise FileFormatError(f"energies of {dataset!r} not found: name the energy dataset in the sheet's "
                                  f"'energy' field (datasets: {', '.join(_datasets(fh))})", path)
        self.energies = np.asarray(fh[energy][...], dtype=np.float64).ravel()
        sizes = dict(zip(self.axes, dset.shape))
        self.dset, self.n, self.shape, self.dtype = dset, sizes["energy"], (sizes["y"], sizes["x"]), dset.dtype
        if self.energies.size != self.n:
            raise FileFormatError(f"{self.energies.size} energies in {energy!r} for {self.n} frames along the "
                                  f"{self.axes.index('energy')}. axis of {dataset!r} ({dset.shape}, axes "
                                  f"{','.join(self.axes)}): fix the sheet's 'axes' or the energy dataset", path)
        self.pixel_size_um = None
        if pixel_size:
            self.pixel_size_um = _hdf5_pixel_size(fh, pixel_size, path)
        self.meta = {"dataset": dataset, "energy_dataset": energy, "axes": list(self.axes),
                     "dataset_shape": list(dset.shape), "pixel_size_dataset": pixel_size}

    def frame(self, k: int) -> np.ndarray:
        index = tuple(k if a == "energy" else slice(None) for a in self.axes)
        img = self.dset[index]
        rest = [a for a in self.axes if a != "energy"]
        return img if rest == ["y", "x"] else img.T

    def close(self):
        self.fh.close()


def _hdf5_pixel_size(fh, name: str, path: Path) -> float:
    if name not in fh:
        raise FileFormatError(f"no pixel size dataset {name!r}: fix the sheet's 'pixel_size_dataset'", path)
    d = fh[name]
    v = np.asarray(d[...], dtype=np.float64).ravel()
    if v.size < 1 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise FileFormatError(f"pixel size {name!r} must hold one positive number (or one per axis)", path)
    if v.size > 1 and not np.allclose(v, v[0]):
        raise FileFormatError(f"pixel size {name!r} differs between axes ({v.tolist()}); non-square pixels "
                              "are not supported", path)
    units = d.attrs.get("units", d.attrs.get("unit", "um"))
    units = units.decode() if isinstance(units, bytes) else str(units)
    scale = _UM_PER_UNIT.get(units.strip().lower())
    if scale is None:
        raise FileFormatError(f"pixel size {name!r} has units {units!r}; use um, nm, mm or m", path)
    return float(v[0] * scale)


def frame_order(energies: np.ndarray, where) -> tuple[np.ndarray, bool]:
    """Order in which to take the frames so that the energies increase.

    Increasing energies keep their order; a strictly decreasing list is
    reversed (frames with it); anything else (repeats, or a list that goes up
    and down) is an error. Returns (indices, reversed?).
    """
    e = np.asarray(energies, dtype=np.float64)
    d = np.diff(e)
    if np.all(d > 0):
        return np.arange(e.size), False
    if np.all(d < 0):
        return np.arange(e.size)[::-1], True
    k = int(np.flatnonzero(d == 0)[0]) if np.any(d == 0) else None
    if k is not None:
        raise FileFormatError(f"energy {e[k]:g} eV repeats (frames {k} and {k + 1}); each frame needs its own "
                              "energy", where)
    k = int(np.flatnonzero(np.sign(d) != np.sign(d[0]))[0])
    raise FileFormatError(f"energies are not monotonic (frame {k + 1}: {e[k + 1]:g} eV after {e[k]:g} eV): list "
                          "them in the frames' order, increasing (or strictly decreasing)", where)


def stream_frames(source, order, scratch: str | Path, chunk_pixels: int, energies=None, od=None,
                  flat=None, dark=None, i0_region=None, register_ref: int | None = None, upsample: int = 10,
                  nonpositive: str = "error"):
    """Stream a stack's frames, corrected one at a time, into a scratch Zarr array.

    Parameters
    ----------
    source : TiffPages, TiffFolder or Hdf5Frames
        Gives ``n``, ``shape`` and ``frame(k)``.
    order : (E,) ints
        Source frame of each output frame (increasing energy).
    scratch : directory
        Where the row-chunked scratch array goes (removed by the returned closer).
    chunk_pixels : int
        Pixels per energy-complete output chunk (see :func:`stack_chunks`).
    energies : (E,) eV in output order, for messages only.
    od : None, "i0_region" or "flat_dark"
        Conversion of transmitted intensity to optical density (none: frames are mu already).
    flat, dark : TiffPages or 2-D arrays, for ``od="flat_dark"``
        One frame for every energy, or (TiffPages with ``n`` frames) one per source frame; dark optional.
    i0_region : (slice, slice), for ``od="i0_region"``
    register_ref : int, optional
        Output index of the reference frame of the drift registration (off when None).
    upsample : int
        Sub-pixel factor of the registration (1 / upsample pixel).
    nonpositive : {"error", "mask"}
        Non-positive intensities (with ``od``) and non-finite values: raise, or set those pixels
        to NaN (excluded downstream), counted in the returned metadata.

    Returns
    -------
    (dask array (E, y, x) float32, metadata dict, closer)
        Metadata: what was applied, masked pixel counts, the registration shifts (E, 2) (dy, dx) px.
    """
    import shutil

    import dask.array as da
    import zarr

    from xafsflow.imaging import corrections as cor

    if nonpositive not in cor.NONPOSITIVE_POLICIES:
        raise ValueError(f"bad_pixels must be one of {cor.NONPOSITIVE_POLICIES}, not {nonpositive!r}")
    ne, (ny, nx) = len(order), source.shape
    chunks = stack_chunks((ne, ny, nx), chunk_pixels)
    files = getattr(source, "files", None)
    where = getattr(source, "path", None) or files[0].parent

    def where_of(j: int):
        return files[int(order[j])] if files is not None else where

    label = (lambda j: f"frame {j} ({energies[j]:g} eV)") if energies is not None else (lambda j: f"frame {j}")
    frames_dir = Path(scratch) / f"stack.frames-{os.getpid()}-{id(source)}.zarr"
    z = zarr.create_array(str(frames_dir), shape=(ne, ny, nx), dtype=np.float32, chunks=(1, chunks[1], nx),
                          compressors=None, fill_value=np.nan, overwrite=True)

    def side_frame(src, k, what):
        if src is None:
            return 0.0
        if isinstance(src, np.ndarray):
            img = src
        else:
            img = src.frame(0 if src.n == 1 else k)
        if img.shape != (ny, nx):
            raise FileFormatError(f"{what} frame is {img.shape}, the stack's frames {(ny, nx)}: they must match",
                                  getattr(src, "path", where))
        return np.asarray(img, dtype=np.float64)

    masked_any = np.zeros((ny, nx), bool)
    n_masked = 0
    i0_means = []

    def corrected(j: int) -> np.ndarray:
        nonlocal n_masked
        k = int(order[j])
        f = np.asarray(source.frame(k), dtype=np.float64)
        try:
            if od == "i0_region":
                f, i0, nb = cor.od_from_i0_region(f, i0_region, nonpositive)
                i0_means.append(i0)
            elif od == "flat_dark":
                f, nb = cor.od_from_flat_dark(f, side_frame(flat, k, "flat"), side_frame(dark, k, "dark"),
                                              nonpositive)
            else:
                bad = ~np.isfinite(f)
                nb = int(bad.sum())
                if nb and nonpositive == "error":
                    raise ValueError(f"{nb} NaN or infinite value(s): fix the file, or set bad_pixels to 'mask' "
                                     "to exclude those pixels")
                if bad.all():
                    raise ValueError("no finite value: the frame is empty or unreadable; remove it (and its "
                                     "energy) or fix the file")
                if np.all(f[~bad] <= 0):
                    raise ValueError("no positive value: a stack without an optical density correction must "
                                     "hold absorbance (mu); for transmitted intensity give i0_region or flat")
                f = np.where(bad, np.nan, f)
        except ValueError as exc:
            raise FileFormatError(f"{label(j)}: {exc}", where_of(j)) from None
        n_masked += nb
        return f

    try:
        ref = None
        if register_ref is not None:
            if not 0 <= register_ref < ne:
                raise FileFormatError(f"registration reference frame {register_ref} is outside 0..{ne - 1}", where)
            ref = corrected(register_ref)
            i0_means.clear()
            n_masked = 0
        shifts = np.zeros((ne, 2))
        for j in range(ne):
            f = corrected(j)
            if ref is not None:
                shifts[j] = cor.measure_shift(ref, f, upsample) if j != register_ref else 0.0
                f = cor.apply_shift(f, shifts[j])
            masked_any |= ~np.isfinite(f)
            z[j] = f.astype(np.float32)
        border = cor.invalid_border((ny, nx), shifts) if ref is not None else np.zeros((ny, nx), bool)
        excluded = masked_any | border
        if excluded.all():
            raise FileFormatError("every pixel is masked (non-finite or non-positive in some frame, or outside "
                                  "the registered field): nothing is left to analyse; check the corrections "
                                  "and the frames", where)
    except BaseException:
        shutil.rmtree(frames_dir, ignore_errors=True)
        raise
    data = da.from_zarr(z).rechunk(chunks)
    if border.any():
        data = da.where(da.from_array(border, chunks=chunks[1:])[None], np.float32(np.nan), data)
    meta = {"read": "frame by frame via scratch copy", "excluded_pixels": int(excluded.sum()),
            "masked_values": int(n_masked)}
    if od == "i0_region":
        meta["i0_region_mean"] = [float(v) for v in i0_means]
    if ref is not None:
        meta["registration_shifts"] = shifts
        meta["registration_border_pixels"] = int(border.sum())
    return data, meta, _Scratch(source, frames_dir)


def _register_index(text, n: int, where) -> int | None:
    if text is None or str(text).strip() == "":
        return None
    t = str(text).strip().lower()
    named = {"first": 0, "middle": n // 2, "last": n - 1}
    if t in named:
        return named[t]
    try:
        k = int(t)
    except ValueError:
        raise FileFormatError(f"register {text!r}: give the reference frame as first, middle, last or a 0-based "
                              "index in increasing energy", where) from None
    if not 0 <= k < n:
        raise FileFormatError(f"register {text!r}: the reference frame must be in 0..{n - 1}", where)
    return k


def _side_source(path: str, n: int, what: str):
    """A flat or dark frame file: one frame, or one per frame of the stack (``n``)."""
    src = TiffPages(path)
    if src.n not in (1, n):
        src.close()
        raise FileFormatError(f"{what} file has {src.n} frames: give one frame, or one per stack frame ({n})", path)
    if src.n == 1:
        img = np.asarray(src.frame(0), dtype=np.float64)
        src.close()
        return img
    return src


def open_stack(fmt: str, path: str | Path, fields: dict, energies_file: str | Path | None, chunk_pixels: int,
               scratch: str | Path):
    """Open a ``tiff_stack``, ``tiff_folder`` or ``hdf5_stack`` with the sheet's corrections.

    Frames are taken in increasing energy (a strictly decreasing energy list is
    reversed with its frames; any other order is an error), corrected one at a
    time and streamed into scratch (:func:`stream_frames`). The sheet fields
    used: ``energy`` (energies file, or HDF5 energy dataset), ``dataset``,
    ``axes``, ``pixel_size_dataset``, ``pixel_size``, ``i0_region``, ``flat``,
    ``dark``, ``register``, ``register_upsample`` (default 10) and
    ``bad_pixels`` (``error`` default, or ``mask``).

    Returns
    -------
    (dask array (E, y, x) float32, energies (E,) eV increasing, metadata, closer)
    """
    from xafsflow.imaging.corrections import parse_region

    path = Path(path)
    if fmt == "tiff_stack":
        energies = read_energies(energies_file)
        source = TiffPages(path)
        if source.n != energies.size:
            source.close()
            raise FileFormatError(f"stack has {source.n} frames but the energies file gives {energies.size} "
                                  "energies: give one energy per frame", energies_file)
    elif fmt == "tiff_folder":
        files, energies = read_folder_energies(energies_file, path)
        source = TiffFolder(files)
    elif fmt == "hdf5_stack":
        source = Hdf5Frames(path, fields["dataset"], fields.get("energy"), fields.get("axes"),
                            fields.get("pixel_size_dataset"))
        energies = source.energies
    else:
        raise ValueError(f"unknown stack format {fmt!r}")
    side: list = []
    try:
        if energies.size < 2:
            raise FileFormatError(f"{energies.size} frame(s): a stack needs at least 2 energies", path)
        order, reversed_ = frame_order(energies, energies_file if fmt != "hdf5_stack" else path)
        energies = energies[order]
        meta = dict(source.meta, frames=int(source.n), warnings=[])
        if reversed_:
            meta["warnings"].append("energies were strictly decreasing: frames reversed into increasing energy")
        meta["energy_order"] = "reversed" if reversed_ else "as given"
        if source.pixel_size_um is not None:
            meta["pixel_size_um"] = source.pixel_size_um
            sheet = fields.get("pixel_size")
            if sheet is not None and abs(float(sheet) - source.pixel_size_um) > 0.01 * source.pixel_size_um:
                meta["warnings"].append(f"sheet pixel_size {float(sheet):g} um differs from the file's "
                                        f"{source.pixel_size_um:g} um; the sheet's is used")
        kw: dict = {"nonpositive": fields.get("bad_pixels") or "error"}
        corr: dict = {"bad_pixels": kw["nonpositive"]}
        if fields.get("i0_region") and fields.get("flat"):
            raise FileFormatError("give either i0_region or flat (and dark), not both", path)
        if fields.get("dark") and not fields.get("flat"):
            raise FileFormatError("a dark frame needs a flat frame: give 'flat' too (or use i0_region)", path)
        if fields.get("i0_region"):
            try:
                kw["i0_region"] = parse_region(fields["i0_region"], source.shape)
            except ValueError as exc:
                raise FileFormatError(str(exc), path) from None
            kw["od"] = "i0_region"
            corr["optical_density"] = f"-ln(I / mean of I over {fields['i0_region']} in each frame)"
        elif fields.get("flat"):
            kw["od"] = "flat_dark"
            kw["flat"] = _side_source(fields["flat"], source.n, "flat")
            side.append(kw["flat"])
            if fields.get("dark"):
                kw["dark"] = _side_source(fields["dark"], source.n, "dark")
                side.append(kw["dark"])
            corr["optical_density"] = "-ln((I - dark) / (flat - dark))" if fields.get("dark") else "-ln(I / flat)"
            corr["flat"], corr["dark"] = fields["flat"], fields.get("dark")
        ref = _register_index(fields.get("register"), energies.size, path)
        if ref is not None:
            kw["register_ref"] = ref
            up = fields.get("register_upsample")
            kw["upsample"] = 10 if up is None else int(up)
            if kw["upsample"] < 1:
                raise FileFormatError(f"register_upsample {up!r}: give a whole number >= 1 (default 10)", path)
            corr["registration"] = {"method": "phase correlation (skimage), Fourier shift",
                                    "reference_frame": ref, "reference_energy_eV": float(energies[ref]),
                                    "upsample": kw["upsample"]}
        data, smeta, closer = stream_frames(source, order, scratch, chunk_pixels, energies=energies, **kw)
    except BaseException:
        source.close()
        raise
    finally:
        for s in side:
            if not isinstance(s, np.ndarray):
                s.close()
    meta.update(smeta)
    meta["corrections"] = corr
    return data, energies, meta, closer
