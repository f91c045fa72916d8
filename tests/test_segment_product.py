"""The segment product on a demo stack: against the simulated grains, chunking, store shape, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from xafsflow import cli
from xafsflow.campaign import kind_params
from xafsflow.errors import AnalysisInputError
from xafsflow.io.store import open_store, read_provenance
from xafsflow.products import get
from xafsflow.products import segment as seg


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory):
    """The demo's TIFF stack (same simulator, own seed), ingested and normalized as the workflow does."""
    from xafsflow.simulate.demo import _write_stack
    from xafsflow.steps import ingest, normalize

    d = tmp_path_factory.mktemp("stack")
    truth = _write_stack(d, "stack_01", "tiff", np.random.default_rng(7))
    ingest("stack_01", "stack", "tiff_stack", [str(d / "stack_01.tif")], d / "raw.zarr",
           fields={"pixel_size": 0.5, "element": "Fe", "edge": "K"}, energies=str(d / "stack_01_energies.txt"),
           chunk_pixels=512)
    params = kind_params("stack", {"normalize": {"pre1": -80.0, "pre2": -25.0, "norm1": 50.0, "nnorm": 1}})
    normalize(d / "raw.zarr", d / "scan.zarr", params)
    return d, np.array(truth["labels"])


def run(d, name, overrides=None):
    params = kind_params("stack", {"segment": overrides or {}})
    out = d / f"{name}.mrf.zarr"
    attrs = seg.run_segment(d / "scan.zarr", out, d / f"{name}.mrf.tsv", d / f"{name}.mrf.png", params, "stack_01",
                            20261127, params_hash="abc")
    return attrs, open_store(out)


def test_demo_stack_grains_against_truth(demo_stack):
    d, truth = demo_stack
    attrs, g = run(d, "plain")
    labels = g["labels"][...]
    assert attrs["n_classes"] == 3  # three simulated phases
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.9
    # grains: connected regions of one class of the truth, as many listed as there are
    from xafsflow.products.segment import grains

    _, true_regions = grains(truth, 4)
    assert attrs["n_grains"] == sum(1 for t in true_regions if t[2] >= 4)
    # store shape: chunked like the map, probabilities sum to 1 on unmasked pixels
    scan = open_store(d / "scan.zarr")
    rows = scan["norm"].chunks[1]
    assert g["labels"].chunks == (rows, labels.shape[1])
    assert g["probabilities"].chunks == (rows, labels.shape[1], 3)
    np.testing.assert_allclose(g["probabilities"][...][labels >= 0].sum(axis=-1), 1.0, atol=1e-5)
    assert list(g["class_selection/C"][...]) == [2, 3, 4, 5]
    # the mixture's BIC alone prefers 4; the MRF at C = 4 empties a class, so 3 is chosen (README)
    assert int(np.argmin(g["class_selection/bic_gmm"][...])) == 2 and not g["class_selection/supported"][2]
    prov = read_provenance(d / "plain.mrf.zarr")
    assert prov["step"] == "segment" and prov["seed"] == 20261127 and "gmm" in prov["task_seeds"]
    # the table: one row per grain at or above min_grain_area, areas from the grain map, um^2 from 0.5 um pixels
    with open(d / "plain.mrf.tsv") as fh:
        rows_ = list(csv.DictReader(fh, delimiter="\t"))
    grain_map = g["grains"][...]
    assert len(rows_) == attrs["n_grains"]
    for r in rows_:
        area = int(np.sum(grain_map == int(r["grain"])))
        assert int(r["area_px"]) == area >= 4
        assert float(r["area_um2"]) == pytest.approx(area * 0.25)
        assert labels[grain_map == int(r["grain"])].tolist() == [int(r["class"])] * area
    assert (d / "plain.mrf.png").stat().st_size > 10_000
    s = seg.summary(dict(g.attrs))
    assert s["n_classes"] == 3 and set(s) == set(get("segment").summary_fields) | {"flags"}


def test_per_grain_spectroscopy_in_the_table_and_store(demo_stack):
    """Every listed grain of at least grains.min_area pixels has its posterior edge in the table and its
    spectrum in the store; the demo's three phases (edges 7112, 7114.5, 7117 eV) are three edge groups
    with medians within 0.1 eV of them; a grain spectrum goes through the posterior product's readers."""
    from xafsflow.imaging.grain_spectra import find_grains
    from xafsflow.products.posterior import fitted_data, point_uncertainty

    d, truth = demo_stack
    attrs, g = run(d, "grains", {"classes_min": 3, "classes_max": 3})
    min_area = kind_params("stack", {})["segment"]["grains"]["min_area"]
    _, table = find_grains(g["labels"][...], 4)
    expected = {t[0] for t in table if t[2] >= min_area}
    with open(d / "grains.mrf.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    analysed = {int(r["grain"]): r for r in rows if r["edge_eV"]}
    assert set(analysed) == expected and attrs["n_grains_analysed"] == len(expected) >= 3
    assert all(not r["edge_eV"] for r in rows if int(r["grain"]) not in expected)
    grain_map, labels = g["grains"][...], g["labels"][...]
    edges = {0: 7112.0, 1: 7114.5, 2: 7117.0}  # phase -> simulated edge (simulate.demo._write_stack)
    for gid, r in analysed.items():
        phase = int(np.bincount(truth[grain_map == gid]).argmax())
        lo, hi = float(r["edge_q2.5"]), float(r["edge_q97.5"])
        # the simulated edge within 0.1 eV (normalization moves the model's e0 by a few 0.01 eV; coverage of
        # the least-squares truth is tests/test_grain_spectra.py's), intervals narrower than 0.6 eV
        assert abs(float(r["edge_eV"]) - edges[phase]) < 0.1 and lo < float(r["edge_eV"]) < hi and hi - lo < 0.6
        assert int(r["edge_group"]) == phase and r["K"] == "1" and float(r["max_rhat"]) < 1.1
        sub = g[f"grain_spectra/g{gid}"]
        assert dict(sub.attrs)["area_px"] == int(r["area_px"]) == int(np.sum(grain_map == gid))
        pix = open_store(d / "scan.zarr")["norm"][...].astype(np.float64)[:, grain_map == gid]  # float32 store
        np.testing.assert_allclose(sub["norm"][...], pix.mean(axis=1), rtol=1e-9, atol=1e-15)
        x, y, e0, _ = fitted_data(d / f"grains.mrf.zarr/grain_spectra/g{gid}", [-15.0, 25.0])
        assert e0 == pytest.approx(dict(open_store(d / "scan.zarr").attrs)["e0"])
        np.testing.assert_allclose(point_uncertainty(d / f"grains.mrf.zarr/grain_spectra/g{gid}", x),
                                   pix.std(axis=1, ddof=1)[np.isin(sub["energy"][...], x)] / np.sqrt(pix.shape[1]),
                                   rtol=1e-5)
    assert attrs["n_edge_groups"] == 3 and labels.max() == 2
    with pytest.raises(AnalysisInputError, match="norm_sd"):
        point_uncertainty(d / "scan.zarr", x)


def test_posterior_product_takes_a_grain_spectrum_with_its_uncertainty(demo_stack):
    """posterior.uncertainty_weights: true on a grain store of the segment product: weights 1 / norm_sd
    (scaled to mean(w^2) = 1) stored, log Z including sum(log w), the edge where the segment job found it."""
    from xafsflow.products.posterior import run_posterior

    d, _ = demo_stack
    run(d, "forpost", {"classes_min": 3, "classes_max": 3})
    grain = d / "forpost.mrf.zarr/grain_spectra/g0"
    params = kind_params("xanes", {"posterior": {
        "k_min": 1, "k_max": 1, "k_limit": 1, "replicas": 10, "runs": 2, "sweeps": 300, "burn_in": 300,
        "fit_range": [-15.0, 25.0], "uncertainty_weights": True, "tuning": {"enabled": False},
        "convergence": {"enabled": False}, "priors": {"wl_eta": {"dist": "fixed", "value": 0.5}}}})
    res = run_posterior(grain, d / "g0.post.zarr", d / "g0.post.tsv", d / "g0.post.png", params, "g0", 1)
    g = open_store(d / "g0.post.zarr")
    w = g["weights"][...]
    assert g.attrs["weighted"] and np.mean(w**2) == pytest.approx(1.0)
    assert g.attrs["log_weight_sum"] == pytest.approx(np.sum(np.log(w))) == pytest.approx(res.log_weight_sum)
    sd = open_store(grain)["norm_sd"][...][np.isin(open_store(grain)["energy"][...], g["energy"][...])]
    np.testing.assert_allclose(w * sd, np.mean(w * sd), rtol=1e-9)  # w proportional to 1 / norm_sd
    e0 = np.median(res.per_k[1]["samples"][..., 1])
    assert abs(e0 - dict(open_store(grain).attrs)["edge_eV"]["median"]) < 0.3


def test_labels_identical_across_chunkings(demo_stack):
    """distributed_min_pixels = 1 runs the stack's row chunks on Dask with halos: same labels, same numbers."""
    import dask

    d, _ = demo_stack
    _, g1 = run(d, "whole", {"classes_min": 3, "classes_max": 3})
    with dask.config.set(scheduler="synchronous"):
        _, g2 = run(d, "chunked", {"distributed_min_pixels": 1, "classes_min": 3, "classes_max": 3})
    assert read_provenance(d / "chunked.mrf.zarr")["chunked"] and not read_provenance(d / "whole.mrf.zarr")["chunked"]
    assert np.array_equal(g1["labels"][...], g2["labels"][...])
    assert np.max(np.abs(g1["probabilities"][...] - g2["probabilities"][...])) < 1e-6  # float32 store of 1e-9


def test_extra_maps_join_the_features(demo_stack):
    """The hook for NMF abundances: a map equal to the true phase index as an extra feature is used and stored."""
    d, truth = demo_stack
    params = kind_params("stack", {"segment": {"classes_min": 3, "classes_max": 3}})
    attrs = seg.run_segment(d / "scan.zarr", d / "extra.mrf.zarr", d / "extra.mrf.tsv", d / "extra.mrf.png", params,
                            "stack_01", 1, extra_maps={"abundance_0": (truth == 0).astype(float)})
    g = open_store(d / "extra.mrf.zarr")
    assert attrs["feature_names"][-1] == "abundance_0" and g["features"].shape[-1] == 4
    assert adjusted_rand_score(truth.ravel(), g["labels"][...].ravel()) >= 0.9


def test_gibbs_inference_agrees_with_mean_field(demo_stack):
    d, truth = demo_stack
    attrs, g = run(d, "gibbs", {"inference": "gibbs", "gibbs_sweeps": 60, "gibbs_burn": 20,
                                      "classes_min": 3, "classes_max": 3})
    assert attrs["inference"] == "gibbs"
    assert adjusted_rand_score(truth.ravel(), g["labels"][...].ravel()) >= 0.9


def test_bad_parameters_and_input(demo_stack, tmp_path):
    d, _ = demo_stack
    block = kind_params("stack", {"segment": {"classes_min": 4, "classes_max": 3, "abundances": True}})["segment"]
    probs = seg.check(block)
    assert any("class range [4, 3] is empty" in p for p in probs) and len(probs) == 1  # abundances are allowed
    with pytest.raises(AnalysisInputError, match="too few"):
        run(d, "few", {"classes_min": 4, "classes_max": 5, "min_pixels_per_param": 1000.0})
    assert not (d / "few.mrf.zarr").exists()
    # a store that is not a stack: one line, exit status 2, nothing written
    from xafsflow.io import store as st

    with st.atomic_store(tmp_path / "x.zarr") as g:
        st.put_array(g, "energy", np.arange(5.0), ("energy",))
        st.set_attrs(g, kind="xanes", scan_id="x", **{st.PROVENANCE_KEY: {"raw_inputs": {"x.xdi": "0"}}})
    out = tmp_path / "o.mrf.zarr"
    code = cli.main(["segment", str(tmp_path / "x.zarr"), "--out", str(out), "--tsv", str(tmp_path / "o.tsv"),
                     "--png", str(tmp_path / "o.png")])
    assert code == 2 and not out.exists()


def test_cli_writes_the_three_outputs(demo_stack, capsys):
    d, _ = demo_stack
    code = cli.main(["segment", str(d / "scan.zarr"), "--params", json.dumps({"segment": {"classes_min": 3, "classes_max": 3}}),
                     "--out", str(d / "cli.mrf.zarr"), "--tsv", str(d / "cli.mrf.tsv"),
                     "--png", str(d / "cli.mrf.png")])
    assert code == 0 and "segment: C = 3" in capsys.readouterr().out
    assert all(Path(d / f"cli.mrf.{x}").exists() for x in ("zarr", "tsv", "png"))
