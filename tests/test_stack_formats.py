"""Stack formats (tiff_folder, HDF5/NeXus with axes and pixel size), optional corrections (optical density
from an I0 region or flat/dark frames, drift registration) and bad stack input, through the ingest step.

Every case is a small synthetic stack with known energies, pixel size, optical density or shifts; the real
STXM stack of ../shared/data goes through the tiff_folder path with an I0 region and registration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import fourier_shift, gaussian_filter

from xafsflow.errors import FileFormatError
from xafsflow.io.store import PROVENANCE_KEY, open_store
from xafsflow.steps import ingest

ENERGIES = np.array([7100.0, 7110.0, 7115.0, 7120.0, 7140.0, 7160.0])
NY, NX = 24, 20


@pytest.fixture(autouse=True)
def _scratch(tmp_path, monkeypatch):
    """Scratch copies go to a folder of their own, checked empty after every failure."""
    d = tmp_path / "scratch"
    d.mkdir()
    monkeypatch.setenv("XAFSFLOW_SCRATCH", str(d))
    return d


def _mu(ne=ENERGIES.size, ny=NY, nx=NX, seed=0):
    """A positive absorbance stack (E, y, x) with an edge that rises with energy and smooth texture."""
    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.random((ny, nx)), 2)
    tex = 0.2 + (tex - tex.min()) / np.ptp(tex)
    step = np.linspace(0.1, 1.0, ne)
    return (step[:, None, None] * tex[None]).astype(np.float32)


def _write_folder(folder: Path, frames, names, pixel_size_um=None):
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    kw = {}
    if pixel_size_um is not None:  # pixels per centimetre
        kw = {"resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um), "resolutionunit": "CENTIMETER"}
    for f, n in zip(frames, names):
        tifffile.imwrite(folder / n, np.asarray(f), **kw)


def _ingest(tmp_path, fmt, path, fields=None, energies=None, out="raw.zarr", chunk_pixels=100):
    return open_store(ingest("s1", "stack", fmt, [str(path)], tmp_path / out, fields=fields or {},
                             energies=None if energies is None else str(energies), chunk_pixels=chunk_pixels,
                             seed=1))


def read_provenance(g) -> dict:
    return dict(g.attrs)[PROVENANCE_KEY]


def _nothing_written(tmp_path, scratch, out="raw.zarr"):
    assert not (tmp_path / out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(out + ".")]  # no temporaries
    assert not list(scratch.iterdir())  # scratch copy removed


# ------------------------------------------------------------------------------------------ formats
def test_tiff_folder_natural_order_energies_and_pixel_size(tmp_path):
    mu = _mu()
    names = [f"e{i + 1}.tif" for i in range(ENERGIES.size)]  # e1 ... e6; natural order as e10 would sort
    _write_folder(tmp_path / "stk", mu, names, pixel_size_um=0.25)
    (tmp_path / "energies.txt").write_text("# eV\n" + "\n".join(f"{e:.1f}" for e in ENERGIES) + "\n")
    g = _ingest(tmp_path, "tiff_folder", tmp_path / "stk", energies=tmp_path / "energies.txt")
    np.testing.assert_array_equal(g["energy"][...], ENERGIES)
    np.testing.assert_array_equal(g["mu"][...], mu)
    attrs = dict(g.attrs)
    assert attrs["pixel_size_um"] == pytest.approx(0.25, rel=1e-6)
    prov = read_provenance(g)
    assert prov["parameters"]["energies_eV"] == ENERGIES.tolist()
    assert prov["parameters"]["pixel_size_from"] == "file"
    assert prov["parameters"]["corrections"] == {"bad_pixels": "error"}  # nothing applied unless asked


def test_tiff_folder_natural_sort_beyond_nine_frames(tmp_path):
    e = 7000.0 + np.arange(12)
    mu = _mu(ne=12)
    _write_folder(tmp_path / "stk", mu, [f"img_{i}.tiff" for i in range(12)])  # img_10 after img_9
    (tmp_path / "e.txt").write_text("\n".join(map(str, e)))
    g = _ingest(tmp_path, "tiff_folder", tmp_path / "stk", energies=tmp_path / "e.txt",
                fields={"pixel_size": 0.5})
    np.testing.assert_array_equal(g["mu"][...], mu)
    assert dict(g.attrs)["pixel_size_um"] == 0.5
    assert read_provenance(g)["parameters"]["pixel_size_from"] == "sheet"


def test_tiff_folder_file_energy_pairs_decreasing_are_reversed(tmp_path):
    mu = _mu()
    names = [f"frame_{c}.tif" for c in "abcdef"]
    _write_folder(tmp_path / "stk", mu, names)
    # listed from the highest energy down, each file with its own energy
    lines = [f"{names[k]} {ENERGIES[k]}" for k in range(ENERGIES.size)[::-1]]
    (tmp_path / "e.txt").write_text("\n".join(lines) + "\n")
    g = _ingest(tmp_path, "tiff_folder", tmp_path / "stk", energies=tmp_path / "e.txt")
    np.testing.assert_array_equal(g["energy"][...], ENERGIES)
    np.testing.assert_array_equal(g["mu"][...], mu)  # each frame stays with its energy
    prov = read_provenance(g)
    assert any("reversed" in w for w in prov["warnings"])


def test_hdf5_axes_and_pixel_size_dataset(tmp_path):
    import h5py

    mu = _mu()
    with h5py.File(tmp_path / "s.nxs", "w") as fh:
        fh["entry/data/data"] = np.transpose(mu, (1, 2, 0))  # (y, x, energy)
        fh["entry/data/energy"] = ENERGIES
        fh["entry/instrument/pixel_size"] = 80.0
        fh["entry/instrument/pixel_size"].attrs["units"] = "nm"
    fields = {"dataset": "entry/data/data", "energy": "entry/data/energy", "axes": "y,x,energy",
              "pixel_size_dataset": "entry/instrument/pixel_size"}
    g = _ingest(tmp_path, "hdf5_stack", tmp_path / "s.nxs", fields)
    np.testing.assert_array_equal(g["mu"][...], mu)
    np.testing.assert_array_equal(g["energy"][...], ENERGIES)
    assert dict(g.attrs)["pixel_size_um"] == pytest.approx(0.08)
    # x before y: frames are transposed back to (y, x)
    with h5py.File(tmp_path / "t.h5", "w") as fh:
        fh["d"] = np.transpose(mu, (0, 2, 1))
        fh["e"] = ENERGIES
    g2 = _ingest(tmp_path, "hdf5_stack", tmp_path / "t.h5", {"dataset": "d", "energy": "e", "axes": "energy,x,y"},
                 out="raw2.zarr")
    np.testing.assert_array_equal(g2["mu"][...], mu)


def test_multipage_tiff_with_imagej_pixel_size(tmp_path):
    import tifffile

    mu = _mu()
    tifffile.imwrite(tmp_path / "s.tif", mu, imagej=True, resolution=(1 / 0.04, 1 / 0.04),
                     metadata={"unit": "micron", "axes": "ZYX"})
    (tmp_path / "e.txt").write_text("\n".join(map(str, ENERGIES)))
    g = _ingest(tmp_path, "tiff_stack", tmp_path / "s.tif", energies=tmp_path / "e.txt")
    np.testing.assert_array_equal(g["mu"][...], mu)
    assert dict(g.attrs)["pixel_size_um"] == pytest.approx(0.04, rel=1e-5)


# -------------------------------------------------------------------------------------- corrections
def test_optical_density_from_i0_region_is_minus_ln_ratio(tmp_path):
    mu = _mu().astype(np.float64)
    mu[:, :6, :5] = 0.0  # empty corner: no sample
    i0 = np.linspace(900.0, 1200.0, ENERGIES.size)  # incident intensity changes with energy
    counts = i0[:, None, None] * np.exp(-mu)
    _write_folder(tmp_path / "stk", counts.astype(np.float32), [f"{i}.tif" for i in range(ENERGIES.size)])
    (tmp_path / "e.txt").write_text("\n".join(map(str, ENERGIES)))
    g = _ingest(tmp_path, "tiff_folder", tmp_path / "stk", {"i0_region": "x=0:5, y=0:6"}, tmp_path / "e.txt")
    stored = counts.astype(np.float32).astype(np.float64)
    expect = -np.log(stored / stored[:, :6, :5].mean(axis=(1, 2))[:, None, None])
    np.testing.assert_allclose(g["mu"][...], expect, rtol=0, atol=2e-6)  # float32 store
    np.testing.assert_allclose(g["mu"][...], mu, rtol=0, atol=2e-6)  # and the truth
    prov = read_provenance(g)["parameters"]["corrections"]
    assert "x=0:5, y=0:6" in prov["optical_density"]
    np.testing.assert_allclose(dict(g.attrs)["file_metadata"]["i0_region_mean"], i0, rtol=1e-6)


@pytest.mark.parametrize("per_frame", [False, True])
def test_optical_density_from_flat_and_dark(tmp_path, per_frame):
    import tifffile

    rng = np.random.default_rng(3)
    mu = _mu().astype(np.float64)
    dark = 50.0 + 5.0 * rng.random((NY, NX))
    flat2d = 1000.0 + 200.0 * rng.random((NY, NX))
    flat = np.stack([flat2d * (1 + 0.05 * k) for k in range(ENERGIES.size)]) if per_frame else flat2d
    counts = dark + (flat - dark) * np.exp(-mu)
    _write_folder(tmp_path / "stk", counts, [f"{i}.tif" for i in range(ENERGIES.size)])
    tifffile.imwrite(tmp_path / "flat.tif", flat)
    tifffile.imwrite(tmp_path / "dark.tif", dark)
    (tmp_path / "e.txt").write_text("\n".join(map(str, ENERGIES)))
    g = _ingest(tmp_path, "tiff_folder", tmp_path / "stk",
                {"flat": str(tmp_path / "flat.tif"), "dark": str(tmp_path / "dark.tif")}, tmp_path / "e.txt")
    expect = -np.log((counts - dark) / (flat - dark))
    np.testing.assert_allclose(g["mu"][...], expect, rtol=0, atol=1e-6)
    np.testing.assert_allclose(g["mu"][...], mu, rtol=0, atol=1e-6)
    assert read_provenance(g)["parameters"]["corrections"]["optical_density"] == "-ln((I - dark) / (flat - dark))"


def test_registration_recovers_known_subpixel_shifts(tmp_path):
    import tifffile

    rng = np.random.default_rng(7)
    ny, nx = 64, 64
    base = gaussian_filter(rng.random((ny, nx)), 2.0)
    base = 0.3 + base / base.max()
    shifts = np.array([[0.0, 0.0], [0.35, -1.2], [-2.6, 0.8], [1.75, 2.25], [-0.45, -3.1], [3.3, 1.05]])
    frames = []
    for k, s in enumerate(shifts):
        img = np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(base), s)))
        frames.append((img * (0.5 + 0.1 * k)).astype(np.float32))  # contrast changes with energy
    tifffile.imwrite(tmp_path / "s.tif", np.stack(frames))
    (tmp_path / "e.txt").write_text("\n".join(map(str, ENERGIES)))
    g = _ingest(tmp_path, "tiff_stack", tmp_path / "s.tif", {"register": "first"}, tmp_path / "e.txt")
    measured = g["registration_shift"][...]
    np.testing.assert_allclose(measured, -shifts, atol=0.1)  # the shift that undoes each drift
    # registered frames line up with the reference inside the valid field
    mu = g["mu"][...]
    valid = np.all(np.isfinite(mu), axis=0)
    assert valid.sum() > 0.7 * ny * nx and not valid.all()  # the wrapped border is excluded
    for k in range(1, len(shifts)):
        ratio = mu[k][valid] / (0.5 + 0.1 * k) - mu[0][valid] / 0.5
        assert np.max(np.abs(ratio)) < 0.02 * base.max()
    reg = read_provenance(g)["parameters"]["corrections"]["registration"]
    assert reg["upsample"] == 10 and reg["reference_frame"] == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3 frames written as one planar page, read back too
def test_registration_upsample_is_configurable(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    base = gaussian_filter(rng.random((48, 48)), 2.0) + 0.5
    frames = [np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(base), (0.0, s)))) for s in (0.0, 0.5, 1.3)]
    tifffile.imwrite(tmp_path / "s.tif", np.stack(frames).astype(np.float32))
    (tmp_path / "e.txt").write_text("1\n2\n3\n")
    g = _ingest(tmp_path, "tiff_stack", tmp_path / "s.tif", {"register": "0", "register_upsample": 1},
                tmp_path / "e.txt")
    assert set(np.abs(g["registration_shift"][...]).ravel()) <= {0.0, 1.0, 2.0}  # whole pixels only


def test_bad_pixels_mask_sets_nan_and_counts(tmp_path):
    mu = _mu().astype(np.float64)
    mu[2, 3, 4] = np.nan
    mu[4, 10, 1] = np.inf
    _write_folder(tmp_path / "stk", mu.astype(np.float32), [f"{i}.tif" for i in range(ENERGIES.size)])
    (tmp_path / "e.txt").write_text("\n".join(map(str, ENERGIES)))
    g = _ingest(tmp_path, "tiff_folder", tmp_path / "stk", {"bad_pixels": "mask"}, tmp_path / "e.txt")
    out = g["mu"][...]
    assert np.isnan(out[2, 3, 4]) and np.isnan(out[4, 10, 1])
    meta = dict(g.attrs)["file_metadata"]
    assert meta["masked_values"] == 2 and meta["excluded_pixels"] == 2
    assert read_provenance(g)["parameters"]["corrections"]["bad_pixels"] == "mask"


# ---------------------------------------------------------------------------------------- bad input
def _folder_case(tmp_path, frames, energies_text, fields=None):
    _write_folder(tmp_path / "stk", frames, [f"{i}.tif" for i in range(len(frames))])
    (tmp_path / "e.txt").write_text(energies_text)
    return lambda: _ingest(tmp_path, "tiff_folder", tmp_path / "stk", fields, tmp_path / "e.txt")


def _counts():
    return (1000.0 * np.exp(-_mu())).astype(np.float32)


def _half_nan():
    """Left half NaN in frame 1, right half in frame 4: every pixel is missing somewhere."""
    mu = _mu().astype(np.float64)
    mu[1, :, : NX // 2] = np.nan
    mu[4, :, NX // 2:] = np.nan
    return mu


BAD = {
    "too few energies": (lambda: _mu(), "\n".join(map(str, ENERGIES[:-1])), None,
                         ["5 energies for 6 TIFF images", "one energy per image"]),
    "not monotonic": (lambda: _mu(), "\n".join(map(str, ENERGIES[[0, 1, 3, 2, 4, 5]])), None,
                      ["not monotonic", "7120 eV", "increasing"]),
    "repeated energy": (lambda: _mu(), "\n".join(map(str, ENERGIES[[0, 1, 1, 3, 4, 5]])), None,
                        ["repeats", "its own energy"]),
    "NaN in a frame": (lambda: np.where(np.arange(NX) == 3, np.nan, _mu()), "\n".join(map(str, ENERGIES)), None,
                       ["frame 0 (7100 eV)", "NaN or infinite", "bad_pixels to 'mask'"]),
    "empty frame": (lambda: _mu() * np.array([1, 1, 1, np.nan, 1, 1])[:, None, None],
                    "\n".join(map(str, ENERGIES)), {"bad_pixels": "mask"}, ["frame 3 (7120 eV)", "no finite value"]),
    "negative frame": (lambda: _mu() * np.array([1, 1, -1, 1, 1, 1])[:, None, None], "\n".join(map(str, ENERGIES)),
                       None, ["frame 2 (7115 eV)", "no positive value", "i0_region or flat"]),
    "negative intensity": (lambda: _counts() * np.where(np.arange(NX) == 0, -1, 1), "\n".join(map(str, ENERGIES)),
                           {"i0_region": "x=5:10, y=0:4"}, ["frame 0", "non-positive", "'mask'"]),
    "I0 region dark": (lambda: np.full((ENERGIES.size, NY, NX), -5.0, np.float32), "\n".join(map(str, ENERGIES)),
                       {"i0_region": "x=0:2, y=0:2", "bad_pixels": "mask"}, ["I0 region", "empty, illuminated"]),
    "all masked": (lambda: _half_nan(), "\n".join(map(str, ENERGIES)), {"bad_pixels": "mask"},
                   ["every pixel is masked", "check the corrections"]),
    "region outside": (lambda: _counts(), "\n".join(map(str, ENERGIES)), {"i0_region": "x=0:50, y=0:4"},
                       ["does not fit", "24 x 20"]),
    "dark without flat": (lambda: _counts(), "\n".join(map(str, ENERGIES)), {"dark": "d.tif"}, ["needs a flat"]),
    "reference outside": (lambda: _mu(), "\n".join(map(str, ENERGIES)), {"register": "9"}, ["0..5"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_stack_input_raises_and_writes_nothing(tmp_path, _scratch, case):
    frames, energies, fields, words = BAD[case]
    run = _folder_case(tmp_path, frames(), energies, fields)
    with pytest.raises(FileFormatError) as err:
        run()
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    _nothing_written(tmp_path, _scratch)


# ------------------------------------------------------------------------------------------ real data
STXM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stxm" / "als_fe_l23_71214098"
if not STXM.exists():
    STXM = Path("/work/shared/data/stxm/als_fe_l23_71214098")


@pytest.mark.skipif(not (STXM / "71214098.hdr").exists(), reason="shared STXM data not present")
def test_real_stxm_frames_as_tiff_folder_with_i0_region_and_registration(tmp_path):
    """The shared STXM counts as per-energy TIFFs named by energy, listed '<file> <energy>' from the highest
    energy down, with its empty top-left corner (about 308 counts in every frame) as the I0 region.

    The authors aligned this stack frame to frame, so every measured drift is within one upsampled step
    (0.1 px) of zero, and OD equals -ln(I / corner mean) on the raw counts.
    """
    import tifffile

    from xafsflow.io.stxm import read_header

    h = read_header(STXM / "71214098.hdr")
    e = h["energies"]
    sel = np.arange(0, e.size, 4)  # every 4th frame keeps the test fast
    folder = tmp_path / "frames"
    folder.mkdir()
    counts = {}
    for k in sel:
        counts[k] = np.loadtxt(STXM / f"71214098_a{k:03d}.xim")
        tifffile.imwrite(folder / f"fe_{k}.tif", counts[k].astype(np.float32))
    (tmp_path / "energies.txt").write_text("".join(f"fe_{k}.tif {e[k]:.3f}\n" for k in sel[::-1]))
    g = _ingest(tmp_path, "tiff_folder", folder, {"i0_region": "x=0:20, y=0:20", "register": "middle",
                                                   "pixel_size": h["pixel_size_um"]}, tmp_path / "energies.txt",
                chunk_pixels=4500)
    np.testing.assert_allclose(g["energy"][...], np.round(e[sel], 3))
    shifts = g["registration_shift"][...]
    assert np.max(np.abs(shifts)) <= 0.1 + 1e-9
    mu = g["mu"][...]
    valid = np.all(np.isfinite(mu), axis=0)
    j = len(sel) // 2  # the reference frame: not shifted
    c = counts[sel[j]].astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu[j][valid], -np.log(c / c[:20, :20].mean())[valid], rtol=0, atol=2e-6)
    assert abs(np.nanmean(mu[:, :20, :20])) < 0.01  # the empty corner has no absorbance
    assert dict(g.attrs)["pixel_size_um"] == pytest.approx(0.08)


# -------------------------------------------------------------------------------------------- workflow
@pytest.mark.workflow
def test_tiff_folder_stack_through_the_workflow(tmp_path):
    """A tiny campaign: one tiff_folder stack of transmitted counts, OD from an I0 region, registration,
    through Snakemake's ingest and normalize rules."""
    import tifffile

    from conftest import REPO, run_snakemake

    rng = np.random.default_rng(5)
    e = np.arange(7050.0, 7250.0, 5.0)
    ny, nx = 16, 16
    thick = np.zeros((ny, nx))
    thick[5:, :] = 0.5 + gaussian_filter(rng.random((ny - 5, nx)), 1.5)  # rows 0-4 empty
    edge = 0.3 + 0.7 / (1 + np.exp(-(e - 7120.0) / 3.0))
    i0 = 1e4 * (1 + 0.001 * (e - e[0]))
    counts = i0[:, None, None] * np.exp(-edge[:, None, None] * thick[None])
    folder = tmp_path / "raw" / "stk"
    _write_folder(folder, counts.astype(np.float32), [f"E{k}.tif" for k in range(e.size)])
    (tmp_path / "raw" / "stk_energies.txt").write_text("\n".join(f"{v:.1f}" for v in e) + "\n")
    sheet = tmp_path / "scans.tsv"
    sheet.write_text("scan_id\tkind\tpath\tformat\tenergy\ti0_region\tregister\telement\tedge\toverrides\n"
                     "tf\tstack\traw/stk\ttiff_folder\traw/stk_energies.txt\tx=0:16, y=0:5\tfirst\tCo\tK\t"
                     "normalize.pre1=-60; normalize.pre2=-25; normalize.norm1=40; normalize.nnorm=1\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"campaign: tf\nseed: 1\nscans: {sheet}\nresults: results\n")
    target = "results/tf/scans/tf.zarr"
    p = run_snakemake(tmp_path, "--profile", str(REPO / "profiles" / "local"), "--configfile", str(cfg),
                      "--cores", "2", target)
    assert p.returncode == 0, p.stderr[-3000:]
    g = open_store(tmp_path / target)
    step = g["edge_step"][...]
    assert np.all(np.isnan(step[:5]))  # no sample: not normalized
    np.testing.assert_allclose(step[5:], 0.7 * thick[5:], rtol=0.02)
    raw = open_store(tmp_path / "results/tf/raw/tf.zarr")
    assert np.all(np.abs(raw["registration_shift"][...]) <= 0.1)  # the frames did not drift
    assert "i0_region" not in str(read_provenance(g)["warnings"])


# ------------------------------------------------------------------------------------------- the sheet
SHEET_HEADER = "scan_id\tkind\tpath\tformat\tenergy\ti0_region\tflat\tdark\tregister\tregister_upsample\n"


@pytest.mark.parametrize("cells, field, words", [
    ("stk\t\t\t\t\t\t", "energy", "energies file"),
    ("stk\tnope.txt\t\t\t\t\t", "energy", "does not exist"),
    ("stk\te.txt\tx=0:5\t\t\t\t", "i0_region", "does not match"),
    ("stk\te.txt\t\t\td.tif\t\t", "dark", "needs a flat"),
    ("stk\te.txt\tx=0:5, y=0:5\tf.tif\t\t\t", "flat", "not both"),
    ("stk\te.txt\t\tmissing.tif\t\t\t", "flat", "does not exist"),
    ("stk\te.txt\t\t\t\tsecond\t", "register", "does not match"),
    ("stk\te.txt\t\t\t\tfirst\t0", "register_upsample", "less than the minimum"),
])
def test_bad_stack_sheet_rows_stop_before_any_job(tmp_path, monkeypatch, cells, field, words):
    from xafsflow.campaign import load_campaign
    from xafsflow.errors import ScanSheetError

    monkeypatch.chdir(tmp_path)
    _write_folder(tmp_path / "stk", _mu(), [f"{i}.tif" for i in range(ENERGIES.size)])
    (tmp_path / "e.txt").write_text("\n".join(map(str, ENERGIES)))
    for f in ("d.tif", "f.tif"):
        (tmp_path / f).write_bytes(b"")
    path, rest = cells.split("\t", 1)
    (tmp_path / "scans.tsv").write_text(f"{SHEET_HEADER}a\tstack\t{path}\ttiff_folder\t{rest}\n")
    with pytest.raises(ScanSheetError) as err:
        load_campaign({"campaign": "t", "scans": "scans.tsv"})
    msg = str(err.value)
    assert f"field {field!r}" in msg and words in msg, msg


@pytest.mark.skipif(not (STXM / "71214098.hdr").exists(), reason="shared STXM data not present")
def test_real_stxm_with_everything_masked_writes_nothing(tmp_path):
    """The shared STXM stack with a mask file excluding every pixel: an error, no store."""
    d = tmp_path / "stxm"
    d.mkdir()
    for f in STXM.iterdir():
        if f.suffix != ".msk":
            (d / f.name).symlink_to(f)
    (d / "all.msk").write_text("\n".join(" " * 150 for _ in range(150)))
    with pytest.raises(FileFormatError, match="every pixel is masked"):
        ingest("s1", "stack", "stxm", [str(d / "71214098.hdr")], tmp_path / "raw.zarr", chunk_pixels=4500)
    assert not (tmp_path / "raw.zarr").exists()


def test_masked_pixel_stays_masked_through_registration(tmp_path):
    import tifffile

    rng = np.random.default_rng(2)
    base = gaussian_filter(rng.random((40, 40)), 2.0) + 0.5
    frames = np.stack([np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(base), (0.0, s)))) for s in (0, 1.4, 2.2, 3)])
    frames = np.concatenate([frames, frames[:2]]).astype(np.float32)
    frames[2, 20, 20] = np.nan
    tifffile.imwrite(tmp_path / "s.tif", frames, photometric="minisblack")
    (tmp_path / "e.txt").write_text("\n".join(map(str, ENERGIES)))
    g = _ingest(tmp_path, "tiff_stack", tmp_path / "s.tif", {"register": "first", "bad_pixels": "mask"},
                tmp_path / "e.txt")
    mu = g["mu"][...]
    dx = g["registration_shift"][2, 1]
    assert dx == pytest.approx(-2.2, abs=0.1)
    # the NaN moved with its frame: about (20, 20 + dx), whole-pixel neighbours included
    assert np.isnan(mu[2, 20, int(np.floor(20 + dx))]) and np.isnan(mu[2, 20, int(np.ceil(20 + dx))])
    meta = dict(g.attrs)["file_metadata"]
    assert meta["excluded_pixels"] > meta["registration_border_pixels"]
