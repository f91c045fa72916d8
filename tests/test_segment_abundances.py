"""The segment product on the NMF abundances: phantom -> ingest -> normalize -> nmf -> segment, scored against
the phantom's phases; the workflow makes segment depend on the nmf store only when abundances are features."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import yaml
from sklearn.metrics import adjusted_rand_score

from conftest import REPO
from xafsflow.cli import main
from xafsflow.errors import ConfigError
from xafsflow.io.store import open_store, read_provenance
from xafsflow.products import segment as seg

NORMALIZE = {"e0": 7722.0, "pre1": -60.0, "pre2": -20.0, "norm1": 30.0, "nnorm": 1}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """The phantom electrode with every sample grain pure in one phase (its class truth is then the phase),
    through the workflow's steps up to the nmf store."""
    from xafsflow.simulate.phantom import write_phantom

    d = tmp_path_factory.mktemp("phantom")
    truth = write_phantom(d, 7, pure_fraction=1.0)
    raw, scan, nmf = d / "raw.zarr", d / "scan.zarr", d / "ph.nmf.zarr"
    assert main(["ingest", str(d / "phantom.h5"), "--scan-id", "ph", "--kind", "stack", "--format", "hdf5_stack",
                 "--fields", json.dumps({"dataset": "exchange/data", "energy": "exchange/energy"}),
                 "--chunk-pixels", "400", "--out", str(raw)]) == 0
    assert main(["normalize", str(raw), "--params", json.dumps({"normalize": NORMALIZE}), "--out", str(scan)]) == 0
    assert main(["nmf", str(scan), "--params", json.dumps({"nmf": {"k_max": 4, "max_iter": 200, "tol": 1e-4}}),
                 "--out", str(nmf), "--tsv", str(d / "ph.nmf.tsv"), "--png", str(d / "ph.nmf.png")]) == 0
    return d, scan, nmf, truth


def _segment(d, scan, name, block, nmf=None):
    out = d / f"{name}.mrf.zarr"
    args = ["segment", str(scan), "--scan-id", "ph", "--params", json.dumps({"segment": block}), "--out", str(out),
            "--tsv", str(d / f"{name}.mrf.tsv"), "--png", str(d / f"{name}.mrf.png")]
    code = main(args + (["--nmf-store", str(nmf)] if nmf else []))
    return code, out


def test_phantom_phases_from_abundances(phantom):
    """Abundances (reg_covar 0.01): the three phases, ARI >= 0.9 with the empty grains masked; the spectral
    features alone do not separate the phantom's phases (ARI < 0.7), so the abundances are what works."""
    d, scan, nmf, t = phantom
    truth = t["label"]  # 0 empty, 1 + phase
    code, out = _segment(d, scan, "abund", {"abundances": True, "reg_covar": 0.01}, nmf)
    assert code == 0
    g = open_store(out)
    labels, attrs = g["labels"][...], dict(g.attrs)
    assert attrs["n_classes"] == 3
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.9
    assert np.array_equal(labels < 0, truth == 0)  # masked: exactly the empty grains (the NMF's mask)
    k = open_store(nmf)["W"].shape[0]
    assert k == 3 and attrs["feature_names"][-3:] == ["abundance_0", "abundance_1", "abundance_2"]
    prov = read_provenance(out)
    assert prov["nmf_store"] == str(nmf) and prov["nmf_k"] == 3 and prov["nmf_excluded_pixels"] == (truth == 0).sum()
    # each class holds one phase, each phase one class
    assert sorted(int(np.unique(truth[labels == c]).item()) for c in range(3)) == [1, 2, 3]
    code, out = _segment(d, scan, "plain", {"reg_covar": 0.01})
    assert code == 0
    assert adjusted_rand_score(truth.ravel(), open_store(out)["labels"][...].ravel()) < 0.7


def test_mixed_phantom_pure_grains_from_abundances(tmp_path):
    """The phantom as `xafsflow simulate stack` writes it (half the sample grains mixtures of phases whose
    fractions vary across the grain): the pixels of pure grains are segmented by phase (ARI >= 0.9 on them);
    a mixture's dominant phase is not a class of the model (mixtures get classes of their own)."""
    from xafsflow.simulate.phantom import read_truth

    d = tmp_path
    assert main(["simulate", "stack", str(d), "--seed", "7"]) == 0
    t = read_truth(d / "phantom_truth.json")
    raw, scan, nmf = d / "raw.zarr", d / "scan.zarr", d / "ph.nmf.zarr"
    assert main(["ingest", str(d / "phantom.h5"), "--scan-id", "ph", "--kind", "stack", "--format", "hdf5_stack",
                 "--fields", json.dumps({"dataset": "exchange/data", "energy": "exchange/energy"}),
                 "--chunk-pixels", "400", "--out", str(raw)]) == 0
    assert main(["normalize", str(raw), "--params", json.dumps({"normalize": NORMALIZE}), "--out", str(scan)]) == 0
    assert main(["nmf", str(scan), "--params", json.dumps({"nmf": {"k_max": 4, "max_iter": 200, "tol": 1e-4}}),
                 "--out", str(nmf), "--tsv", str(d / "ph.nmf.tsv"), "--png", str(d / "ph.nmf.png")]) == 0
    code, out = _segment(d, scan, "mixed", {"abundances": True, "reg_covar": 0.01}, nmf)
    assert code == 0
    labels, truth = open_store(out)["labels"][...], t["label"]
    pure = np.array(t["grain_class"])[t["grain_id"]] == "pure"
    assert 0.2 < 1 - pure.mean() - (truth == 0).mean()  # a good part of the map is mixed
    assert adjusted_rand_score(truth[pure], labels[pure]) >= 0.9
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) < 0.9  # README: the dominant phase is no class
    assert np.array_equal(labels < 0, truth == 0)


def test_abundances_need_the_nmf_store(phantom, tmp_path):
    d, scan, nmf, _ = phantom
    code, out = _segment(tmp_path, scan, "none", {"abundances": True})
    assert code == 2 and not out.exists()
    # another scan's nmf store (other map shape): refused, nothing written
    other = tmp_path / "other.nmf.zarr"
    from xafsflow.io import store as st

    with st.atomic_store(other) as g:
        st.put_array(g, "W", np.ones((2, 5, 6), np.float32), ("component", "y", "x"))
    code, out = _segment(tmp_path, scan, "other", {"abundances": True}, other)
    assert code == 2 and not out.exists()
    # without abundances the nmf store is not read
    maps, prov = seg.abundance_maps(nmf, scan)
    assert sorted(maps) == ["abundance_0", "abundance_1", "abundance_2"] and prov["nmf_k"] == 3


def test_demo_config_segments_the_demo_stack_on_abundances(tmp_path):
    """The demo config's stack blocks (abundances on) on the demo stack: its three phases, ARI >= 0.9."""
    from xafsflow.campaign import kind_params
    from xafsflow.products.nmf import run_nmf
    from xafsflow.simulate.demo import _write_stack
    from xafsflow.steps import ingest, normalize

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    params = kind_params("stack", cfg["analysis"]["stack"])
    assert params["segment"]["abundances"]
    truth = np.array(_write_stack(tmp_path, "stack_01", "tiff", np.random.default_rng(7))["labels"])
    ingest("stack_01", "stack", "tiff_stack", [str(tmp_path / "stack_01.tif")], tmp_path / "raw.zarr",
           fields={"pixel_size": 0.5, "element": "Fe", "edge": "K"}, energies=str(tmp_path / "stack_01_energies.txt"),
           chunk_pixels=512)
    normalize(tmp_path / "raw.zarr", tmp_path / "scan.zarr", params)
    nmf = tmp_path / "s.nmf.zarr"
    run_nmf(tmp_path / "scan.zarr", nmf, tmp_path / "n.tsv", tmp_path / "n.png", params["nmf"], "stack_01", 1)
    maps, prov = seg.abundance_maps(nmf, tmp_path / "scan.zarr")
    attrs = seg.run_segment(tmp_path / "scan.zarr", tmp_path / "s.mrf.zarr", tmp_path / "s.tsv", tmp_path / "s.png",
                            params, "stack_01", 1, extra_maps=maps, provenance_extra=prov)
    labels = open_store(tmp_path / "s.mrf.zarr")["labels"][...]
    assert attrs["n_classes"] == 3 and adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.9


def test_abundances_refused_when_the_kind_has_no_nmf():
    from xafsflow.campaign import validate_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["analysis"]["stack"]["nmf"] = {"enabled": False}
    with pytest.raises(ConfigError, match=r"analysis\.stack\.segment: abundances: true needs the nmf product"):
        validate_config(cfg)
    cfg["analysis"]["stack"]["segment"]["abundances"] = False
    validate_config(cfg)  # segment on the spectral features alone needs no nmf


def _segment_jobs(text):
    """{scan_id: (inputs, shell command)} of the dry run's segment jobs."""
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule )", text):
        if not re.match(r"(?:local)?rule segment:", block):
            continue
        inputs = re.search(r"^\s+input: (.*)$", block, re.M).group(1).split(", ")
        scan_id = re.search(r"wildcards: scan_id=(\S+)", block).group(1)
        cmd = next(ln for ln in block.splitlines() if "-m xafsflow segment " in ln)
        jobs[scan_id] = (inputs, cmd)
    return jobs


def test_dry_run_segment_depends_on_nmf_only_with_abundances(workdir):
    from conftest import run_snakemake

    p = run_snakemake(workdir, "-n", "--profile", str(REPO / "profiles" / "local"))
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = _segment_jobs(p.stdout + p.stderr)
    assert sorted(jobs) == ["stack_01", "stack_02"]
    for scan_id, (inputs, cmd) in jobs.items():
        nmf = f"segmentation/{scan_id}.nmf.zarr"
        assert any(i.endswith(nmf) for i in inputs) and re.search(rf"--nmf-store \S*{re.escape(nmf)}", cmd)
    # abundances off: the scan store is the only input, no --nmf-store
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    off = copy.deepcopy(cfg)
    off["analysis"]["stack"]["segment"]["abundances"] = False
    (workdir / "off.yaml").write_text(yaml.safe_dump(off))
    p = run_snakemake(workdir, "-n", "--profile", str(REPO / "profiles" / "local"), "--configfile", "off.yaml")
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = _segment_jobs(p.stdout + p.stderr)
    assert sorted(jobs) == ["stack_01", "stack_02"]
    for scan_id, (inputs, cmd) in jobs.items():
        assert inputs == [f"results/demo/scans/{scan_id}.zarr"] and "--nmf-store" not in cmd
