"""Image stacks (energy, y, x) from TIFF or HDF5, and single domain images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xafsflow.errors import FileFormatError


def read_energies(path: str | Path) -> np.ndarray:
    """Energies (eV) of a TIFF stack's frames: one number per line ('#' comments allowed)."""
    path = Path(path)
    values = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise FileFormatError(f"cannot read energies file: {exc.strerror}", path) from None
    except UnicodeDecodeError:
        raise FileFormatError("energies file is not text", path) from None
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


def open_tiff_stack(path: str | Path, energies: np.ndarray, chunk_pixels: int, scratch: str | Path):
    """A lazy (energy, y, x) Dask array over a multi-page TIFF, in energy-complete chunks of
    about ``chunk_pixels`` pixels (see :func:`stack_chunks`).

    A TIFF is stored frame by frame, but every output chunk needs the whole
    energy axis. The TIFF is therefore first copied frame by frame into a
    row-chunked, uncompressed Zarr array under ``scratch`` (one frame in memory
    at a time), from which the energy-complete chunks are read, so a stack
    larger than memory goes through. (Memory-mapping the TIFF would avoid the
    copy, but its touched pages count against a job's memory limit.)

    Returns (dask array, metadata dict, object to close).
    """
    import dask.array as da
    import tifffile

    path = Path(path)
    try:
        tif = tifffile.TiffFile(str(path))
        series = tif.series[0]
        shape = tuple(series.shape)
        dtype = series.dtype
    except (OSError, ValueError, tifffile.TiffFileError, IndexError) as exc:
        raise FileFormatError(f"not a readable TIFF stack ({exc})", path) from None
    if len(shape) != 3:
        tif.close()
        raise FileFormatError(f"expected a 3-D (energy, y, x) stack, found shape {shape}", path)
    if shape[0] != energies.size:
        tif.close()
        raise FileFormatError(
            f"stack has {shape[0]} frames but the energies file gives {energies.size} energies", path
        )
    meta = {"tiff_shape": list(shape), "tiff_dtype": str(dtype)}
    chunks = stack_chunks(shape, chunk_pixels)
    import zarr

    frames = Path(scratch) / f"{path.name}.frames-{os.getpid()}.zarr"
    ny, nx = shape[1:]
    z = zarr.create_array(str(frames), shape=shape, dtype=dtype, chunks=(1, chunks[1], nx),
                          compressors=None, fill_value=0, overwrite=True)
    for i, page in enumerate(series.pages):
        z[i] = page.asarray()
    meta["read"] = "frame by frame via scratch copy"
    return da.from_zarr(z).rechunk(chunks), meta, _Scratch(tif, frames)


class _Scratch:
    """Closes the TIFF and removes the scratch copy."""

    def __init__(self, tif, directory: Path):
        self.tif, self.directory = tif, directory

    def close(self):
        import shutil

        self.tif.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def open_hdf5_stack(path: str | Path, dataset: str, energy: str | None, chunk_pixels: int = 4096):
    """An (energy, y, x) Dask array over an HDF5 dataset, its energies and metadata."""
    import dask.array as da
    import h5py

    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise FileFormatError(f"not a readable HDF5 file ({exc})", path) from None
    if dataset not in fh:
        raise FileFormatError(f"no dataset {dataset!r} (datasets: {', '.join(_datasets(fh))})", path)
    dset = fh[dataset]
    if dset.ndim != 3:
        raise FileFormatError(f"dataset {dataset!r} has shape {dset.shape}; expected (energy, y, x)", path)
    if energy is None:
        energy = dset.attrs.get("energy_dataset")
    if energy is None or energy not in fh:
        raise FileFormatError(
            f"energies of {dataset!r} not found: name the energy dataset in the sheet's 'energy' field", path
        )
    energies = np.asarray(fh[energy][...], dtype=np.float64).ravel()
    if energies.size != dset.shape[0]:
        raise FileFormatError(f"{energies.size} energies for {dset.shape[0]} frames", path)
    data = da.from_array(dset, chunks=stack_chunks(dset.shape, chunk_pixels), lock=True)
    return data, energies, {"dataset": dataset, "energy_dataset": energy}, fh


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
                page = tif.pages[0]
                tags = page.tags
                if "XResolution" in tags and "ResolutionUnit" in tags:
                    num, den = tags["XResolution"].value
                    unit = int(tags["ResolutionUnit"].value)
                    if num > 0 and unit in (2, 3):
                        per_unit = num / den  # pixels per inch (2) or per cm (3)
                        um = (25400.0 if unit == 2 else 10000.0) / per_unit
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
