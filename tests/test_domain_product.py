"""Domain products: the campaign-level model (R^2 of alpha ~ PC1) and alpha of the demo's TDGL images."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from conftest import REPO
from xafsflow.campaign import kind_params
from xafsflow.errors import AnalysisInputError
from xafsflow.io.store import open_store
from xafsflow.products import domain_model as dm
from xafsflow.products import domain_parameters as dp
from xafsflow.steps import ingest, normalize


def demo_params() -> dict:
    """The demo config's domain_image block, completed with the schema's defaults."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return kind_params("domain_image", cfg["analysis"]["domain_image"])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    p = demo_params()["domain_model"]
    dm.build_model(p, 20261127, d / "_model.zarr", d / "_model.tsv", d / "_model.png")
    return d


def test_alpha_from_pc1_on_the_test_split(model):
    """The validation of the issue: R^2 >= 0.95 on the 80 % test split at the slowest sweep rate,
    recomputed here with scikit-learn (PCA and r2_score) from the stored statistics."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import r2_score

    models, attrs = dm.load_models(model / "_model.zarr")
    g = open_store(model / "_model.zarr")
    slowest = min(attrs["sweep_rates"])
    assert attrs["prediction_rate"] == slowest
    m = models[slowest]
    assert m.n_pcs == 1 and attrs["regression"].startswith("alpha ~ PC1,")
    assert m.r2_test >= 0.95
    sel = np.flatnonzero(g["sweep_rate"][...] == slowest)
    stats, alpha = g["statistics"][...][sel], g["alpha"][...][sel]
    assert len(m.train) == 4 and len(m.test) == 16 and not set(m.train) & set(m.test)  # 20 % / 80 %
    full = m.predict(stats[m.test])
    pred = full["alpha"]
    assert r2_score(alpha[m.test], pred) == pytest.approx(m.r2_test, abs=1e-12)
    # the 95 % prediction intervals cover the held-out runs' alpha (at least 14 of 16)
    covered = (full["low"] <= alpha[m.test]) & (alpha[m.test] <= full["high"])
    assert covered.sum() >= 14, (covered.sum(), full, alpha[m.test])
    z = (stats - stats.mean(0)) / np.where(stats.std(0) > 0, stats.std(0), 1.0)
    sk = PCA(n_components=5, svd_solver="full").fit(z)
    np.testing.assert_allclose(m.explained, sk.explained_variance_ratio_, rtol=1e-8)
    assert abs(np.corrcoef(sk.transform(z)[:, 0], m.scores(stats)[:, 0])[0, 1]) == pytest.approx(1.0, abs=1e-10)
    rows = list(csv.DictReader(open(model / "_model.tsv"), delimiter="\t"))
    assert {float(r["sweep_rate"]) for r in rows} == set(attrs["sweep_rates"])
    assert (model / "_model.png").stat().st_size > 10_000


def test_ensemble_store_holds_pure_runs(model):
    from xafsflow.domains import tdgl

    g = open_store(model / "_model.zarr")
    imgs = g["images"]
    p = demo_params()["domain_model"]
    n = p["n_alpha"] * len(p["sweep_rates"])
    assert imgs.shape == (n, p["grid"], p["grid"]) and imgs.dtype == np.float32 and imgs.chunks[0] == 1
    i = 27  # the 8th alpha of the second sweep rate, re-simulated alone from its index's seed
    alpha, rate = g["alpha"][i], g["sweep_rate"][i]
    assert alpha == pytest.approx(np.linspace(*p["alpha_range"], p["n_alpha"])[7]) and rate == p["sweep_rates"][1]
    base = dm.tdgl_base(p)
    alone = tdgl.run(tdgl.TDGLParams(**{**base.__dict__, "alpha": alpha, "v": rate}),
                     tdgl.ensemble_seeds(20261127, n)[i])["image"]
    np.testing.assert_allclose(imgs[i], alone, atol=1e-5)
    prov = dict(g.attrs)["xafsflow_provenance"]
    assert len(prov["task_seeds"]) == n and prov["parameters"]["domain_model"]["n_alpha"] == p["n_alpha"]


def _scan(tmp_path, demo_dir, name, fields):
    ext = "png" if name == "domain_01" else "tif"
    raw = ingest(name, "domain_image", "image", [str(demo_dir / f"{name}.{ext}")], tmp_path / f"{name}.raw.zarr",
                 fields=fields)
    return normalize(raw, tmp_path / f"{name}.zarr", kind_params("domain_image", None))


def test_demo_images_get_their_alpha_within_the_interval(model, demo_dir, tmp_path):
    """The demo's domain images are TDGL runs with known alpha (truth.json): it lies in the 95 % interval."""
    import json

    truth = json.loads((demo_dir / "truth.json").read_text())["scans"]
    p = demo_params()["domain_parameters"]
    for name, fields in (("domain_01", {"pixel_size": 0.05}), ("domain_02", {})):
        scan = _scan(tmp_path, demo_dir, name, fields)
        out = tmp_path / f"{name}.dp.zarr"
        res = dp.estimate(scan, model / "_model.zarr", out, tmp_path / f"{name}.tsv", tmp_path / f"{name}.png", p,
                          name, 1)
        a = truth[name]["alpha"]
        assert truth[name]["tdgl"]["v"] == res["prediction_rate"]
        assert res["alpha_low"] <= a <= res["alpha_high"], (name, a, res)
        assert res["alpha_high"] - res["alpha_low"] < 0.5  # an interval that says something (range 1.0-2.4)
        attrs = dict(open_store(out).attrs)
        fields_ = dp.summary(attrs)
        assert float(fields_["alpha"]) == pytest.approx(res["alpha"], rel=1e-3) and fields_["flags"] == []
        prep = attrs["xafsflow_provenance"]["prepare"]
        assert prep["zoom"] == pytest.approx(1.0) and prep["pixel_size_um"] == pytest.approx(0.05)
        rows = list(csv.DictReader(open(tmp_path / f"{name}.tsv"), delimiter="\t"))
        assert len(rows) == 2 and {"alpha", "alpha_low", "alpha_high", "pc1", "pc2"} <= set(rows[0])


def test_images_without_a_scale_are_refused(model, demo_dir, tmp_path):
    from PIL import Image

    p = demo_params()["domain_parameters"]
    # the demo PNG with no pixel size in the sheet (PNG has none in the file)
    scan = _scan(tmp_path, demo_dir, "domain_01", {})
    with pytest.raises(AnalysisInputError, match="no pixel size"):
        dp.estimate(scan, model / "_model.zarr", tmp_path / "o.zarr", tmp_path / "o.tsv", tmp_path / "o.png", p, "d", 1)
    scan2 = _scan(tmp_path, demo_dir, "domain_02", {})
    with pytest.raises(AnalysisInputError, match="length_unit_um"):
        dp.estimate(scan2, model / "_model.zarr", tmp_path / "o.zarr", tmp_path / "o.tsv", tmp_path / "o.png",
                    dict(p, length_unit_um=None), "d", 1)
    # an image too small for the model's pyramid
    small = tmp_path / "small.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8), mode="L").save(small)
    raw = ingest("s", "domain_image", "image", [str(small)], tmp_path / "s.raw.zarr", fields={"pixel_size": 0.05})
    s = normalize(raw, tmp_path / "s.zarr", kind_params("domain_image", None))
    with pytest.raises(AnalysisInputError, match="too small"):
        dp.estimate(s, model / "_model.zarr", tmp_path / "o.zarr", tmp_path / "o.tsv", tmp_path / "o.png", p, "s", 1)
    assert not (tmp_path / "o.zarr").exists()


def test_cli_refuses_an_unscaled_image_in_one_line(model, demo_dir, tmp_path, capsys):
    from xafsflow.cli import main

    scan = _scan(tmp_path, demo_dir, "domain_01", {})
    rc = main(["domain_parameters", str(scan), "--model", str(model / "_model.zarr"),
               "--params", '{"domain_parameters": {"length_unit_um": 0.05}}', "--out", str(tmp_path / "c.zarr"),
               "--tsv", str(tmp_path / "c.tsv"), "--png", str(tmp_path / "c.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "domain_01.png" in err[0] and "pixel size" in err[0]
    assert not (tmp_path / "c.zarr").exists()


def test_model_checks_before_any_job():
    p = demo_params()["domain_model"]
    assert dm.check(p) == []
    assert any("energy-stable bound" in m for m in dm.check(dict(p, dt=0.5)))
    assert any("too small" in m for m in dm.check(dict(p, grid=64)))
    assert any("not divisible" in m for m in dm.check(dict(p, grid=136)))
    assert any("training runs" in m for m in dm.check(dict(p, n_alpha=5, n_pcs=3, n_components=5)))


def test_summary_chains_the_campaign_model_before_each_image(model, demo_dir, tmp_path):
    """A failed campaign-level model fails every domain image with its reason; once it and the image's
    product exist the image is ok and carries both products' fields."""
    import shutil

    from xafsflow.layout import Layout
    from xafsflow.products import get
    from xafsflow.summary import write_summary

    layout = Layout(tmp_path / "results" / "c")
    raw = ingest("d1", "domain_image", "image", [str(demo_dir / "domain_01.png")], layout.raw_store("d1"),
                 fields={"pixel_size": 0.05})
    normalize(raw, layout.scan_store("d1"), kind_params("domain_image", None))
    sheet = tmp_path / "scans.tsv"
    sheet.write_text(f"scan_id\tkind\tpath\tformat\nd1\tdomain_image\t{demo_dir / 'domain_01.png'}\timage\n")
    mprod, pprod = get("domain_model"), get("domain_parameters")
    log = layout.log("domain_model", "campaign")
    log.parent.mkdir(parents=True)
    log.write_text("xafsflow: error: configuration: domain_model: dt 0.5 exceeds the energy-stable bound\n")
    rows = write_summary(layout.root, sheet, tmp_path / "s.tsv")
    assert rows[0]["status"] == "failed" and rows[0]["reason"].startswith("domain_model: configuration")
    model_store = layout.product_store(mprod, mprod.campaign_id)
    assert model_store == layout.root / "domain-parameter" / "_model.zarr"
    shutil.copytree(model / "_model.zarr", model_store)
    rows = write_summary(layout.root, sheet, tmp_path / "s.tsv")
    assert rows[0]["status"] == "not run"  # the image's own product is next
    dp.estimate(layout.scan_store("d1"), model_store, layout.product_store(pprod, "d1"),
                layout.product_table(pprod, "d1"), layout.product_figure(pprod, "d1"),
                demo_params()["domain_parameters"], "d1", 1)
    shutil.copy(model / "_model.png", layout.product_figure(mprod, mprod.campaign_id))
    rows = write_summary(layout.root, sheet, tmp_path / "s.tsv", tmp_path / "r.html")
    assert rows[0]["status"] == "ok"
    assert float(rows[0]["domain_model.r2_test"]) >= 0.95 and rows[0]["domain_parameters.alpha"]
    assert "_model.png" in (tmp_path / "r.html").read_text()


def test_campaign_model_hash_depends_on_its_block_only(workdir):
    """The model's parameter hash (what makes Snakemake rerun it) ignores the per-image block and the
    sheet, changes with its own block; the dry run's command carries it."""
    import copy
    import re

    from conftest import run_snakemake
    from xafsflow.campaign import validate_config
    from xafsflow.products import get
    from xafsflow.products._common import campaign_params_hash

    prod = get("domain_model")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    base = campaign_params_hash(prod, validate_config(cfg))
    other = copy.deepcopy(cfg)
    other["analysis"]["domain_image"]["domain_parameters"]["background_sigma"] = 5.0
    other["scans"] = "elsewhere.tsv"
    assert campaign_params_hash(prod, validate_config(other)) == base
    other["analysis"]["domain_image"]["domain_model"]["n_alpha"] = 24
    assert campaign_params_hash(prod, validate_config(other)) != base
    p = run_snakemake(workdir, "-n", "--profile", str(REPO / "profiles" / "local"))
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    cmds = [ln for ln in out.splitlines() if "-m xafsflow domain_model " in ln]
    assert len(cmds) == 1 and re.search(r"--params-hash (\w+)", cmds[0]).group(1) == base
    images = [ln for ln in out.splitlines() if "-m xafsflow domain_parameters " in ln]
    assert len(images) == 2 and all("--model" in c and "_model.zarr" in c for c in images)
