"""The nmf product end to end: phantom files -> ingest -> normalize -> xafsflow nmf, scored against truth."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from xafsflow.cli import main
from xafsflow.io.store import open_store
from xafsflow.simulate.phantom import read_truth

NORMALIZE = {"e0": 7722.0, "pre1": -60.0, "pre2": -20.0, "norm1": 30.0, "nnorm": 1}


@pytest.fixture(scope="module")
def phantom_scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("phantom")
    assert main(["simulate", "stack", str(d), "--seed", "7", "--pixels", "44"]) == 0
    raw, scan = d / "raw.zarr", d / "scan.zarr"
    assert main(["ingest", str(d / "phantom.h5"), "--scan-id", "ph", "--kind", "stack", "--format", "hdf5_stack",
                 "--fields", json.dumps({"dataset": "exchange/data", "energy": "exchange/energy"}),
                 "--chunk-pixels", "400", "--out", str(raw)]) == 0
    assert main(["normalize", str(raw), "--params", json.dumps({"normalize": NORMALIZE}), "--out", str(scan)]) == 0
    return d, scan, read_truth(d / "phantom_truth.json")


def _run_nmf(d, scan, name, extra=None):
    out = d / f"{name}.nmf.zarr"
    params = {"normalize": NORMALIZE, "nmf": dict({"k_max": 4, "max_iter": 200, "tol": 1e-4}, **(extra or {}))}
    assert main(["nmf", str(scan), "--params", json.dumps(params), "--out", str(out),
                 "--tsv", str(d / f"{name}.tsv"), "--png", str(d / f"{name}.png")]) == 0
    return out


def test_product_store_against_truth(phantom_scan):
    from xafsflow.imaging.nmf import match_components
    from xafsflow.simulate.phantom import normalized_spectra

    d, scan, t = phantom_scan
    s = open_store(scan)
    assert any(f.startswith("unnormalized_pixels") for f in s.attrs["flags"])  # empty grains have no edge
    g = open_store(_run_nmf(d, scan, "a"))
    a = dict(g.attrs)
    assert a["k_selected"] == 3
    H, W, mask = g["H"][...], g["W"][...], g["mask"][...].astype(bool)
    assert H.shape == (3, t["energies"].size) and W.shape == (3,) + mask.shape
    assert g["W"].chunks[1:] == s["norm"].chunks[1:]  # chunked like the input
    assert np.array_equal(mask, t["label"] == 0)
    err = g["error"][...]
    assert np.all(np.diff(err) <= 1e-12)
    keep = ~mask.ravel()
    X = s["norm"][...].reshape(H.shape[1], -1).T
    score = match_components(H, W.reshape(3, -1).T[keep], normalized_spectra(t, NORMALIZE),
                             t["fractions"].reshape(3, -1).T[keep], X[keep].mean(axis=0))
    assert np.all(score["cosine"] >= 0.99) and np.all(score["correlation"] >= 0.95)
    from xafsflow.products.nmf import summary

    row = summary(a)
    assert row["k"] == 3 and row["flags"] == [] and len(row["edges_eV"].split(";")) == 3
    assert float(row["masked_fraction"]) == pytest.approx(mask.mean(), abs=1e-3)
    rows = list(csv.DictReader(open(d / "a.tsv"), delimiter="\t"))
    assert [float(r["edge_eV"]) for r in rows] == sorted(float(r["edge_eV"]) for r in rows)
    assert (d / "a.png").stat().st_size > 0


def test_all_masked_is_refused_and_nothing_written(tmp_path, capsys):
    from xafsflow.io import store as st

    scan = tmp_path / "flat.zarr"
    with st.atomic_store(scan) as g:  # a normalized stack store in which no pixel had an edge
        st.put_array(g, "energy", np.linspace(7650.0, 7800.0, 20), ("energy",))
        st.put_array(g, "norm", np.full((20, 4, 5), np.nan, np.float32), ("energy", "y", "x"))
        st.put_array(g, "edge_step", np.full((4, 5), np.nan), ("y", "x"))
        st.set_attrs(g, scan_id="flat", kind="stack", **{st.PROVENANCE_KEY: st.provenance("normalize")})
    out = tmp_path / "flat.nmf.zarr"
    rc = main(["nmf", str(scan), "--out", str(out), "--tsv", str(tmp_path / "f.tsv"), "--png", str(tmp_path / "f.png")])
    assert rc == 2
    assert "every pixel is masked" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "f.tsv").exists()
