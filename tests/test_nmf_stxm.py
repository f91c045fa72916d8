"""The shared real STXM stack (ALS, Fe L2,3): reading, optical density, normalization, mask and NMF.

No ground truth exists: the header is checked against its own README facts, the optical density against
an independent reading of one frame, and the factorization for a decreasing error curve and for
identical results whatever the chunking.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xafsflow.errors import FileFormatError

STXM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stxm" / "als_fe_l23_71214098"
if not STXM.exists():
    STXM = Path("/work/shared/data/stxm/als_fe_l23_71214098")
HDR = STXM / "71214098.hdr"
NORMALIZE = {"e0": 707.0, "pre1": -7.0, "pre2": -2.5, "norm1": 18.0, "nnorm": 0}

pytestmark = pytest.mark.skipif(not HDR.exists(), reason="shared STXM data not present")


def test_header_facts():
    from xafsflow.io.stxm import read_header

    h = read_header(HDR)
    assert h["shape"] == (123, 150, 150)
    assert h["energies"][0] == 700.0 and h["energies"][-1] == pytest.approx(730.353)
    assert np.all(np.diff(h["energies"]) > 0)
    assert h["pixel_size_um"] == pytest.approx(0.08, abs=1e-9)
    assert (h["x_name"], h["y_name"]) == ("Sample X", "Sample Y")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    from xafsflow.cli import main
    from xafsflow.io.store import open_store

    d = tmp_path_factory.mktemp("stxm")
    raw = d / "raw.zarr"
    assert main(["ingest", str(HDR), "--scan-id", "stxm", "--kind", "stack", "--format", "stxm", "--fields",
                 json.dumps({"element": "Fe", "edge": "L3"}), "--chunk-pixels", "3000", "--out", str(raw)]) == 0
    return d, open_store(raw)


def test_optical_density_from_i0(ingested):
    _, g = ingested
    od = g["mu"]
    frame = np.loadtxt(STXM / "71214098_a060.xim")  # an independent reading of one frame
    i0 = np.loadtxt(STXM / "i0.xsp")[60, 1]
    expect = -np.log(frame / i0)
    msk = np.array([[c != "O" for c in ln.ljust(150)[:150]]
                    for ln in (STXM / "remove_thick_part.msk").read_text().split("\n")[:150]])
    got = od[60]
    np.testing.assert_allclose(got[~msk], expect[~msk], rtol=1e-6)  # float32 store
    assert np.all(np.isnan(got[msk]))  # the authors' thick-region mask
    # the masked pixels are the thick ones: their OD is higher than the rest (as the file's name says)
    assert np.nanmean(expect[msk]) > np.nanmean(expect[~msk]) + 0.3
    attrs = dict(g.attrs)
    assert attrs["pixel_size_um"] == pytest.approx(0.08, abs=1e-9)
    assert attrs["file_metadata"]["masked_by_file"] == int(msk.sum())


def test_nmf_on_real_stack_is_chunking_independent_and_monotone(ingested):
    import dask
    import dask.array as da

    from xafsflow.imaging.nmf import nmf
    from xafsflow.imaging.pixels import edge_step_mask, normalize_stack_tolerant

    _, g = ingested
    e = g["energy"][...]
    mu = g["mu"][...]
    ne = mu.shape[0]
    with dask.config.set(scheduler="threads"):
        res = normalize_stack_tolerant(e, da.from_array(mu.reshape(ne, -1), chunks=(ne, 3000)), **NORMALIZE)
        step, norm = dask.compute(res["edge_step"], res["norm"])
        mask, _ = edge_step_mask(step, 2.0)
        assert 0.5 < mask.mean() < 0.95  # most of the field holds little iron
        X = norm.T
        fits = [nmf(da.from_array(X, chunks=(c, ne)), 2, mask, energy=e, max_iter=40, tol=0)
                for c in (22500, 1234)]
    for f in fits:
        assert np.all(np.diff(f.errors) <= 1e-12 * f.errors[0])
    ref = fits[0]
    for f in fits[1:]:
        assert np.max(np.abs(f.H - ref.H)) <= 1e-6 * np.max(np.abs(ref.H))
        W, Wr = f.W.compute(), ref.W.compute()
        assert np.max(np.abs(W - Wr)) <= 1e-6 * np.max(np.abs(Wr))
    # an iron L3 edge: the first component's half-height edge lies between the pre-edge and the L3 peak
    assert 705.0 < ref.edge_positions[0] < 709.0


def test_bad_stxm_inputs(tmp_path):
    from xafsflow.io.stxm import read_stxm

    d = tmp_path / "s"
    d.mkdir()
    (d / "x.hdr").write_text(HDR.read_text())
    for i in range(3):  # 3 frames where the header lists 123
        (d / f"x_a{i:03d}.xim").write_text((STXM / f"71214098_a{i:03d}.xim").read_text())
    with pytest.raises(FileFormatError, match="lists 123 energies but 3"):
        read_stxm(d / "x.hdr")
    (d / "y.hdr").write_text("not a header")
    with pytest.raises(FileFormatError, match="ScanDefinition"):
        read_stxm(d / "y.hdr")


@pytest.mark.slow  # about a minute: `make test-slow`
def test_real_stack_through_the_workflow(tmp_path):
    """The STXM stack as a campaign: raw files -> OD -> normalization -> mask -> NMF -> summary, by Snakemake.

    Asserts the job stayed within the memory the rule gives it (Snakemake's benchmark max_rss), the error
    curve never rises and the summary row is ok."""
    import csv
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import REPO, run_snakemake
    from xafsflow.io.store import open_store

    sheet = tmp_path / "scans.tsv"
    sheet.write_text("scan_id\tkind\tpath\tformat\telement\tedge\toverrides\n"
                     f"als_fe\tstack\t{HDR}\tstxm\tFe\tL3\tnormalize.e0=707; normalize.pre1=-7; normalize.pre2=-2.5; "
                     "normalize.norm1=18; normalize.nnorm=0; nmf.mask_fraction=2.0; nmf.k_max=4\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"campaign: stxm\nseed: 1\nscans: {sheet}\nresults: {tmp_path / 'results'}\n")
    p = run_snakemake(tmp_path, "--profile", str(REPO / "profiles" / "local"), "--configfile", str(cfg),
                      "--cores", "2")
    assert p.returncode == 0, p.stderr[-2000:]
    res = tmp_path / "results" / "stxm"
    row = next(csv.DictReader(open(res / "summary.tsv"), delimiter="\t"))
    assert row["status"] == "ok" and row["nmf.k"] != ""
    g = open_store(res / "segmentation" / "als_fe.nmf.zarr")
    assert np.all(np.diff(g["error"][...]) <= 1e-12)
    bench = next(csv.DictReader(open(res / "benchmarks" / "nmf" / "als_fe.tsv"), delimiter="\t"))
    assert float(bench["max_rss"]) < 2000  # MB: the rule's mem_mb
    # the segment product on the real stack: every grain at or above min_area has its mean spectrum in the
    # store and an edge posterior in the table; smaller grains are listed without one
    from xafsflow.schemas import analysis_defaults

    min_area = analysis_defaults("stack")["segment"]["grains"]["min_area"]
    rows = list(csv.DictReader(open(res / "segmentation" / "als_fe.mrf.tsv"), delimiter="\t"))
    big = {r["grain"] for r in rows if int(r["area_px"]) >= min_area}
    assert big and all((r["edge_eV"] != "") == (r["grain"] in big) for r in rows)
    assert all(float(r["edge_q2.5"]) <= float(r["edge_eV"]) <= float(r["edge_q97.5"]) for r in rows if r["edge_eV"])
    m = open_store(res / "segmentation" / "als_fe.mrf.zarr")
    assert {k[1:] for k in m["grain_spectra"].group_keys()} == big
