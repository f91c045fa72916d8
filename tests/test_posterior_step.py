"""The posterior step on a normalized demo XANES scan: product contents, a killed job resumes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import kill_at_first_checkpoint

from xafsflow.io.store import open_store
from xafsflow.schemas import analysis_defaults
from xafsflow.steps import ingest, normalize

SMALL = {"k_min": 1, "k_max": 2, "replicas": 10, "runs": 2, "sweeps": 1000, "burn_in": 500, "checkpoint_every": 100,
         "k_limit": 2, "tuning": {"enabled": False}, "convergence": {"enabled": False}}


@pytest.fixture(scope="module")
def scan_store(tmp_path_factory, demo_dir):
    d = tmp_path_factory.mktemp("post")
    raw = ingest("xanes_02", "xanes", "columns", [str(demo_dir / "xanes_02.dat")], d / "raw.zarr",
                 fields={"energy": "energy_eV", "i0": "I0", "itrans": "IT"})
    params = analysis_defaults("xanes")
    params["normalize"].update(pre1=-180.0, pre2=-40.0, norm1=60.0, nnorm=1)
    normalize(raw, d / "scan.zarr", params)
    return d / "scan.zarr"


def _params(**extra):
    p = analysis_defaults("xanes")
    p["posterior"].update(SMALL, **extra)
    return p


def _cmd(scan_store, out_dir, params, ck):
    return [sys.executable, "-m", "xafsflow", "posterior", str(scan_store), "--scan-id", "xanes_02",
            "--params", json.dumps(params), "--checkpoint-dir", str(ck), "--seed", "5",
            "--out", str(out_dir / "p.zarr"), "--tsv", str(out_dir / "p.tsv"), "--png", str(out_dir / "p.png")]


def test_product_contents(scan_store, tmp_path, demo_dir):
    out = tmp_path / "a"
    out.mkdir()
    p = subprocess.run(_cmd(scan_store, out, _params(), tmp_path / "ck"), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    g = open_store(out / "p.zarr")
    a = dict(g.attrs)
    assert g["p_K"][...].sum() == pytest.approx(1.0)
    assert list(g["K"][...]) == [1, 2]
    ksel = a["k_selected"]
    names = g[f"K{ksel}/posterior"].attrs["parameters"]
    assert all(g[f"K{ksel}/posterior/{n}"].shape == (2, 100) for n in names)
    assert g[f"K{ksel}/sample_stats/energy"].shape == (2, 100)
    assert g[f"K{ksel}/energy_trace"].shape[2] == 10
    with open(out / "p.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [r["parameter"] for r in rows] == names
    for r in rows:
        assert float(r["q2.5"]) <= float(r["median"]) <= float(r["q97.5"])
    # the noise estimate against the simulated noise, in normalized units
    truth = json.loads((demo_dir / "truth.json").read_text())["scans"]["xanes_02"]
    sigma_norm = truth["sigma"] * truth["edge_step"] / dict(open_store(scan_store).attrs)["edge_step"]
    lo, hi = a["sigma_interval_95"]
    assert lo * 0.8 <= sigma_norm <= hi * 1.2
    assert (out / "p.png").stat().st_size > 5000
    assert not (tmp_path / "ck").exists()  # checkpoints go once the product is complete


def test_killed_job_resumes_to_the_uninterrupted_result(scan_store, tmp_path):
    params = _params(runs=1, k_max=1, sweeps=3000)
    clean = tmp_path / "clean"
    clean.mkdir()
    assert subprocess.run(_cmd(scan_store, clean, params, tmp_path / "ck0"), capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    ck = tmp_path / "ck1"
    kill_at_first_checkpoint(_cmd(scan_store, killed, params, ck), ck)
    assert not (killed / "p.zarr").exists()
    assert subprocess.run(_cmd(scan_store, killed, params, ck), capture_output=True).returncode == 0
    a, b = open_store(clean / "p.zarr"), open_store(killed / "p.zarr")
    for name in a["K1/posterior"].attrs["parameters"]:
        np.testing.assert_array_equal(a[f"K1/posterior/{name}"][...], b[f"K1/posterior/{name}"][...])
    np.testing.assert_array_equal(a["free_energy"][...], b["free_energy"][...])


def test_posterior_refuses_non_xanes(tmp_path, demo_dir):
    raw = ingest("d", "domain_image", "image", [str(demo_dir / "domain_01.png")], tmp_path / "r.zarr")
    normalize(raw, tmp_path / "s.zarr", {})
    p = subprocess.run(_cmd(tmp_path / "s.zarr", tmp_path, _params(), tmp_path / "ck"), capture_output=True, text=True)
    assert p.returncode == 2 and "posterior product needs a XANES" in p.stderr and "Traceback" not in p.stderr


def _result(p_sel=0.9, rhat=1.01, exchange=0.3, spread=0.5, at_edge=False, k_sel=2):
    from xafsflow.bayes.posterior import PosteriorResult

    entry = {"rhat": np.array([1.0, rhat]), "exchange_rate": np.array([0.5, exchange]), "F_spread": spread}
    other = {"rhat": np.array([1.0]), "exchange_rate": np.array([0.5]), "F_spread": 0.0}
    per_k = {K: (entry if K == k_sel else other) for K in (1, 2, 3)}
    p_k = np.full(3, (1 - p_sel) / 2)
    p_k[k_sel - 1] = p_sel
    return PosteriorResult(ks=[1, 2, 3], bvals=np.array([0.0, 1.0]), n_points=100, per_k=per_k,
                           p_k=p_k, k_selected=k_sel, sigma_fixed=None, noise={"at_ladder_edge": at_edge})


@pytest.mark.parametrize("case,flag", [
    ({}, None),
    ({"p_sel": 0.4}, "uncertain_K(P=0.40)"),
    ({"rhat": 1.3}, "high_rhat(1.30)"),
    ({"exchange": 0.05}, "low_exchange(0.05)"),
    ({"spread": 6.0}, "runs_disagree(dF=6.0)"),
    ({"at_edge": True}, "sigma_at_ladder_edge"),
    ({"k_sel": 3}, "k_at_limit(K=3)"),
])
def test_quality_flags_follow_the_configured_bounds(case, flag):
    from xafsflow.products.posterior import quality_flags

    q = analysis_defaults("xanes")["posterior"]["quality"]
    assert quality_flags(_result(**case), q) == ([] if flag is None else [flag])


def test_k_at_limit_flag_can_be_turned_off():
    from xafsflow.products.posterior import quality_flags

    q = dict(analysis_defaults("xanes")["posterior"]["quality"], k_at_limit=False)
    assert quality_flags(_result(k_sel=3), q) == []


def test_unwritable_output_folder_stops_before_the_sampler(scan_store, tmp_path):
    """A folder that cannot be written is found before any chain runs: one line, exit 2, nothing written."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    out = blocker / "sub"
    params = _params(sweeps=20000)  # would take minutes if the sampler started
    cmd = [sys.executable, "-m", "xafsflow", "posterior", str(scan_store), "--scan-id", "xanes_02",
           "--params", json.dumps(params), "--checkpoint-dir", str(tmp_path / "ck"),
           "--out", str(out / "p.zarr"), "--tsv", str(out / "p.tsv"), "--png", str(out / "p.png")]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xafsflow: error:") and "cannot write" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "ck").exists()
    assert time.time() - t < 30


def test_store_opens_with_xarray_and_arviz(scan_store, tmp_path):
    """Users' own tools: xarray indexes by the coordinates, ArviZ reads each K's posterior as is."""
    xr = pytest.importorskip("xarray")
    az = pytest.importorskip("arviz")
    out = tmp_path / "x"
    out.mkdir()
    p = subprocess.run(_cmd(scan_store, out, _params(), tmp_path / "ck"), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    store = out / "p.zarr"
    top = xr.open_zarr(store, consolidated=False)
    assert float(top["p_K"].sel(K=2)) == pytest.approx(float(open_store(store)["p_K"][1]))
    assert top["norm"].dims == ("energy",) and "energy" in top.coords
    noise = xr.open_zarr(store, group="K2/noise", consolidated=False)
    assert noise["log_evidence_b"].dims == ("b_grid",) and "b_grid" in noise.coords
    # ArviZ's own route for Zarr v3 stores: a datatree of the K group, no conversion code
    idata = az.InferenceData.from_datatree(xr.open_datatree(store, engine="zarr", group="K2", consolidated=False))
    names = open_store(store)["K2/posterior"].attrs["parameters"]
    assert set(idata.posterior.data_vars) == set(names)
    assert dict(idata.posterior.sizes) == {"chain": 2, "draw": 100}
    # the R-hat and bulk ESS the store reports are ArviZ's on the same draws
    idata.posterior.load()
    ours = open_store(store)["K2"]
    want_rhat = az.rhat(idata)
    want_ess = az.ess(idata, method="bulk")
    for j, name in enumerate(names):
        if np.isfinite(ours["rhat"][j]):
            assert ours["rhat"][j] == pytest.approx(float(want_rhat[name]), rel=1e-6)
            assert ours["ess_bulk"][j] == pytest.approx(float(want_ess[name]), rel=1e-6)
