"""Ingest and normalize steps on simulated files (known truth) and real XDI files; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from xafsflow.errors import AnalysisInputError, FileFormatError
from xafsflow.io.store import open_store, read_provenance, sha256_file
from xafsflow.schemas import analysis_defaults
from xafsflow.simulate import forward as fw
from xafsflow.steps import ingest, normalize, normalize_keywords

DEMO_PARAMS = {
    "xanes": {"normalize": {"pre1": -150.0, "pre2": -40.0, "norm1": 60.0, "nnorm": 2}},
    "exafs": {"normalize": {"pre1": -150.0, "pre2": -40.0, "norm1": 150.0, "nnorm": 2}},
    "xmcd": {"normalize": {"pre1": -25.0, "pre2": -8.0, "norm1": 25.0, "nnorm": 1}},
    "stack": {"normalize": {"pre1": -80.0, "pre2": -25.0, "norm1": 50.0, "nnorm": 1}},
}


def _truth(demo_dir):
    return json.loads((demo_dir / "truth.json").read_text())["scans"]


def _run(tmp_path, scan_id, kind, fmt, paths, fields=None, energies=None, chunk_pixels=4096, params=None, threads=1):
    raw = ingest(scan_id, kind, fmt, [str(p) for p in paths], tmp_path / f"raw_{scan_id}.zarr", fields=fields,
                 energies=None if energies is None else str(energies), chunk_pixels=chunk_pixels, seed=1)
    out = tmp_path / f"{scan_id}_{chunk_pixels}.zarr"
    normalize(raw, out, params or DEMO_PARAMS.get(kind, {}), threads=threads, mem_mb=1000, seed=1)
    return open_store(out)


def test_xanes_xdi_edge_and_step_match_simulation(tmp_path, demo_dir):
    t = _truth(demo_dir)["xanes_01"]
    g = _run(tmp_path, "xanes_01", "xanes", "xdi", [demo_dir / "xanes_01.xdi"])
    a = dict(g.attrs)
    assert abs(a["e0"] - t["e0"]) < 3.0  # derivative maximum sits on the steep part of step + white line
    assert a["edge_step"] == pytest.approx(t["edge_step"], rel=0.05)
    assert a["element"] == "Cu" and a["edge"] == "K"
    # above the peaks the flattened spectrum returns to the arctan step's plateau (1)
    e = g["energy"][...]
    far = (e > t["e0"] + 150) & (e < t["e0"] + 300)
    assert np.mean(g["flat"][...][far]) == pytest.approx(1.0, abs=0.03)


def test_columns_transmission_mu_is_log_ratio(tmp_path, demo_dir):
    t = _truth(demo_dir)["xanes_02"]
    fields = {"energy": "energy_eV", "i0": "I0", "itrans": "IT", "element": "Fe", "edge": "K"}
    g = _run(tmp_path, "xanes_02", "xanes", "columns", [demo_dir / "xanes_02.dat"], fields)
    table = np.loadtxt(demo_dir / "xanes_02.dat")
    np.testing.assert_allclose(g["mu"][...], np.log(table[:, 1] / table[:, 2]), rtol=1e-12)
    assert dict(g.attrs)["edge_step"] == pytest.approx(t["edge_step"], rel=0.05)


def test_exafs_step(tmp_path, demo_dir):
    t = _truth(demo_dir)["exafs_01"]
    g = _run(tmp_path, "exafs_01", "exafs", "xdi", [demo_dir / "exafs_01.xdi"])
    assert dict(g.attrs)["edge_step"] == pytest.approx(t["edge_step"], rel=0.03)
    assert abs(dict(g.attrs)["e0"] - t["e0"]) < 2.0


def test_xmcd_pair_dichroism_matches_simulation(tmp_path, demo_dir):
    t = _truth(demo_dir)["xmcd_01"]
    g = _run(tmp_path, "xmcd_01", "xmcd", "xdi", [demo_dir / "xmcd_01_plus.xdi", demo_dir / "xmcd_01_minus.xdi"])
    e = g["energy"][...]
    # simulated dichroism (normalized units) from the same forward model
    dichro = 0.15 * (fw.pseudo_voigt(e, 6.0, t["l3"] + 1.0, 2.5, 0.6) - 0.8 * fw.pseudo_voigt(e, 2.5, t["l2"] + 1.0, 3.0, 0.6))
    scale = t["edge_step"] / dict(g.attrs)["edge_step"]
    xmcd = g["xmcd"][...]
    l3 = np.abs(e - (t["l3"] + 1.0)) < 0.3
    assert np.max(xmcd[l3]) == pytest.approx(2 * np.max(dichro[l3]) * scale, rel=0.1)
    resid = xmcd - 2 * dichro * scale
    assert np.std(resid) < 4 * np.sqrt(2) * t["sigma"] * scale + 0.01


@pytest.mark.parametrize("fmt", ["tiff_stack", "hdf5_stack"])
def test_stack_pixels_match_one_spectrum_normalization(tmp_path, demo_dir, fmt):
    from xafsflow.xas.normalize import normalize_edge

    name = "stack_01" if fmt == "tiff_stack" else "stack_02"
    t = _truth(demo_dir)[name]
    if fmt == "tiff_stack":
        g = _run(tmp_path, name, "stack", fmt, [demo_dir / "stack_01.tif"], {"energy": "x"},
                 energies=demo_dir / "stack_01_energies.txt", chunk_pixels=200)
    else:
        g = _run(tmp_path, name, "stack", fmt, [demo_dir / "stack_02.h5"],
                 {"dataset": "exchange/data", "energy": "exchange/energy"}, chunk_pixels=200)
    raw = open_store(tmp_path / f"raw_{name}.zarr")["mu"][...].astype(np.float64)
    ne, ny, nx = raw.shape
    assert [ne, ny, nx] == t["shape"]
    assert g["norm"].chunks[0] == ne  # whole energy axis in every chunk
    energy = g["energy"][...]
    # a few pixels, one by one, through the 1-D path
    rng = np.random.default_rng(0)
    for _ in range(5):
        y, x = rng.integers(ny), rng.integers(nx)
        ref = normalize_edge(energy, raw[:, y, x], **normalize_keywords(DEMO_PARAMS["stack"]))
        assert g["e0"][y, x] == pytest.approx(ref.e0, abs=1e-9)
        np.testing.assert_allclose(g["norm"][:, y, x], ref.norm, rtol=1e-5, atol=1e-5)
    # phases were simulated with increasing edge shifts: their mean E0 must increase in order
    labels = np.asarray(t["labels"])
    e0 = g["e0"][...]
    means = [np.median(e0[labels == k]) for k in range(len(t["phases"]))]
    assert means == sorted(means)
    assert means[-1] - means[0] == pytest.approx(t["phases"][-1][0] - t["phases"][0][0], abs=2.0)


def test_stack_result_does_not_depend_on_chunking(tmp_path, demo_dir):
    args = ("stack_01", "stack", "tiff_stack", [demo_dir / "stack_01.tif"], {"energy": "x"})
    a = _run(tmp_path, *args, energies=demo_dir / "stack_01_energies.txt", chunk_pixels=96)
    b = _run(tmp_path, *args, energies=demo_dir / "stack_01_energies.txt", chunk_pixels=4096, threads=2)
    assert a["norm"].chunks != b["norm"].chunks
    # per-pixel fits are independent of their neighbours: identical to float32 rounding
    np.testing.assert_allclose(a["norm"][...], b["norm"][...], rtol=0, atol=1e-6)
    np.testing.assert_allclose(a["e0"][...], b["e0"][...], rtol=0, atol=1e-9)


def test_same_inputs_give_bit_identical_arrays(tmp_path, demo_dir):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _run(tmp_path / "a", "x", "xanes", "xdi", [demo_dir / "xanes_01.xdi"])
    b = _run(tmp_path / "b", "x", "xanes", "xdi", [demo_dir / "xanes_01.xdi"])
    for name in ("norm", "flat", "pre_edge", "post_edge"):
        assert a[name][...].tobytes() == b[name][...].tobytes()


def test_domain_images_png_and_tiff(tmp_path, demo_dir):
    import matplotlib.image as mpimg

    t = _truth(demo_dir)
    g = _run(tmp_path, "d1", "domain_image", "image", [demo_dir / "domain_01.png"], {"pixel_size": 0.05})
    np.testing.assert_array_equal(g["image"][...], mpimg.imread(str(demo_dir / "domain_01.png")))
    assert dict(g.attrs)["pixel_size_um"] == 0.05
    img = g["image_std"][...]
    assert abs(img.mean()) < 1e-12 and img.std() == pytest.approx(1.0)
    g2 = _run(tmp_path, "d2", "domain_image", "image", [demo_dir / "domain_02.tif"])
    assert dict(g2.attrs)["pixel_size_um"] == pytest.approx(t["domain_02"]["pixel_size_um"])


def test_colour_image_refused(tmp_path):
    import matplotlib.pyplot as plt

    p = tmp_path / "rgb.png"
    plt.imsave(p, np.random.default_rng(0).random((8, 8)))  # RGBA
    with pytest.raises(FileFormatError, match="grayscale"):
        ingest("rgb", "domain_image", "image", [str(p)], tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("name", ["cu_metal_rt", "fe_metal_rt", "feo_rt1", "fe2o3_rt", "co_metal_rt"])
def test_real_xdi_files_ingest_with_metadata_and_hash(tmp_path, shared, name):
    path = shared / "xdi" / f"{name}.xdi"
    raw = ingest(name, "xanes", "xdi", [str(path)], tmp_path / "r.zarr")
    g = open_store(raw)
    table = np.loadtxt(path)
    assert g["energy"].shape[0] == table.shape[0]
    assert read_provenance(raw)["inputs"][str(path)] == sha256_file(path)
    symbol = [ln.split(":", 1)[1].strip() for ln in path.read_text().splitlines() if ln.startswith("# Element.symbol")][0]
    assert dict(g.attrs)["element"] == symbol
    out = tmp_path / "n.zarr"
    normalize(raw, out, analysis_defaults("xanes"))
    assert dict(open_store(out).attrs)["edge_step"] > 0


def test_nonxafs_reads_but_normalization_refuses(tmp_path, shared):
    path = shared / "xdi" / "nonxafs_1d.xdi"
    raw = ingest("nx", "xanes", "xdi", [str(path)], tmp_path / "r.zarr")
    assert open_store(raw)["table"].shape[1] == 4
    with pytest.raises(AnalysisInputError, match="not an absorption scan") as err:
        normalize(raw, tmp_path / "n.zarr", analysis_defaults("xanes"))
    assert "nonxafs_1d.xdi" in str(err.value)
    assert not (tmp_path / "n.zarr").exists()


def test_reader_warnings_reach_provenance(tmp_path, shared):
    raw = ingest("b11", "xanes", "xdi", [str(shared / "xdi/bad/bad_11.xdi")], tmp_path / "r.zarr")
    warns = read_provenance(raw)["warnings"]
    assert any("line 12" in w for w in warns) and any("line 13" in w for w in warns)
    # the bad_* files hold only a few points around 8830 eV: the pre-edge window clamps to
    # them, but nothing reaches the post-edge window
    with pytest.raises(AnalysisInputError, match="post-edge window"):
        normalize(raw, tmp_path / "n.zarr", analysis_defaults("xanes"))


def test_unknown_mapping_column_is_an_input_error(tmp_path, shared):
    with pytest.raises(AnalysisInputError, match="'mu_x' not found"):
        ingest("c", "xanes", "xdi", [str(shared / "xdi/cu_metal_rt.xdi")], tmp_path / "r.zarr", fields={"mu": "mu_x"})


# ------------------------------------------------------------------------------------ CLI
def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "xafsflow", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_cli_input_error_is_one_line_exit_2(tmp_path, shared):
    bad = shared / "xdi/bad/bad_13.xdi"
    out = tmp_path / "x.zarr"
    p = _cli("ingest", bad, "--scan-id", "b", "--kind", "xanes", "--format", "xdi", "--out", out)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xafsflow: error:")
    assert "bad_13.xdi" in lines[0] and "line 31" in lines[0]
    assert "Traceback" not in p.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_steps_run_on_their_own(tmp_path, demo_dir):
    raw, out = tmp_path / "r.zarr", tmp_path / "s.zarr"
    assert _cli("ingest", demo_dir / "xanes_01.xdi", "--scan-id", "x1", "--kind", "xanes", "--format", "xdi",
                "--out", raw, "--seed", 3).returncode == 0
    p = _cli("normalize", raw, "--out", out, "--png", tmp_path / "s.png")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "s.png").stat().st_size > 1000
    prov = _cli("provenance", out)
    assert prov.returncode == 0 and "normalize" in prov.stdout
    assert sha256_file(demo_dir / "xanes_01.xdi") in prov.stdout
    pj = json.loads(_cli("provenance", out, "--json").stdout)
    assert pj["parameters"]["normalize"]["pre1"] == analysis_defaults("xanes")["normalize"]["pre1"]


def test_cli_import_stays_light():
    code = ("import sys, xafsflow.cli; xafsflow.cli.build_parser(); "
            "print(','.join(m for m in ('numba','dask','distributed','matplotlib','larch','zarr','scipy','snakemake') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == ""
