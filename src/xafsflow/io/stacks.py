"""Image stacks (energy, y, x) from TIFF or HDF5, and single domain images."""

from __future__ import annotations

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


def open_tiff_stack(path: str | Path, energies: np.ndarray, chunk_pixels: int):
    """A lazy (energy, y, x) Dask array over a multi-page TIFF, plus its metadata.

    Frames are read as needed, so a stack larger than memory streams through.
    """
    import dask.array as da
    import tifffile
    import zarr

    path = Path(path)
    try:
        tif = tifffile.TiffFile(str(path))
        series = tif.series[0]
        shape = tuple(series.shape)
        dtype = series.dtype
    except (OSError, ValueError, tifffile.TiffFileError, IndexError) as exc:
        raise FileFormatError(f"not a readable TIFF stack ({exc})", path) from None
    if len(shape) != 3:
        raise FileFormatError(f"expected a 3-D (energy, y, x) stack, found shape {shape}", path)
    if shape[0] != energies.size:
        raise FileFormatError(
            f"stack has {shape[0]} frames but the energies file gives {energies.size} energies", path
        )
    store = series.aszarr()
    arr = zarr.open_array(store, mode="r") if not hasattr(store, "keys") else zarr.open(store, mode="r")
    data = da.from_zarr(arr)
    meta = {"tiff_shape": list(shape), "tiff_dtype": str(dtype)}
    return data, meta, tif


def open_hdf5_stack(path: str | Path, dataset: str, energy: str | None):
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
    data = da.from_array(dset, chunks=(dset.shape[0], min(dset.shape[1], 64), dset.shape[2]), lock=True)
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
