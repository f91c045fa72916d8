"""The Snakemake workflow: lint, dry runs, the demo campaign and a campaign with bad scans."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import REPO, run_snakemake
from xafsflow.campaign import load_campaign
from xafsflow.io.store import open_store, read_provenance
from xafsflow.simulate.demo import DEMO_FILES

pytestmark = pytest.mark.workflow
LOCAL = str(REPO / "profiles" / "local")
DEMO_PRODUCED = {f"resources/demo/{n}" for n in DEMO_FILES}


def _summary(path):
    with open(path) as fh:
        return {r["scan_id"]: r for r in csv.DictReader(fh, delimiter="\t")}


def test_lint_is_clean(workdir):
    """No lints but the conda/container one: rules run in the project's own environment."""
    p = run_snakemake(workdir, "--lint")
    out = p.stdout + p.stderr
    lints = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("* ")]
    assert lints, "lint output not understood: " + out[-2000:]
    assert {ln for ln in lints} == {"* Specify a conda environment or container for each rule.:"}, out


def test_dry_run_of_demo_shows_every_rule(workdir):
    p = run_snakemake(workdir, "-n", "--profile", LOCAL)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    for rule in ("simulate_demo", "ingest", "normalize", "summary", "all"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule
    camp = load_campaign(REPO / "config/config.yaml", produced=DEMO_PRODUCED)
    n = len(camp.scans)
    table = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if len(ln.split()) == 2 and ln.split()[1].isdigit()}
    assert table["ingest"] == str(n) and table["normalize"] == str(n)


@pytest.mark.parametrize(
    "row, words",
    [
        ("xanes_01\txanes\tresources/demo/xanes_01.xdi\txdi\t\t\t\t\t\t\t\t\n", ["duplicate", "scan_id", "line 10"]),
        ("x9\txanes\tresources/demo/nope.xdi\txdi\t\t\t\t\t\t\t\t\n", ["nope.xdi", "no rule produces it"]),
        ("x9\tsaxs\tresources/demo/xanes_01.xdi\txdi\t\t\t\t\t\t\t\t\n", ["'kind'", "saxs"]),
        ("x9\txanes\tresources/demo/xanes_01.xdi\txdi\t\t\t\t\t\t\t\tnormalize.prex=1\n", ["'overrides'", "prex"]),
    ],
)
def test_bad_sheet_stops_the_dry_run(workdir, row, words):
    sheet = workdir / "sheet.tsv"
    sheet.write_text((REPO / "config/demo_scans.tsv").read_text() + row)
    p = run_snakemake(workdir, "-n", "--profile", LOCAL, "--config", f"scans={sheet.name}")
    assert p.returncode != 0
    err = p.stdout + p.stderr
    for w in words:
        assert w in err, (w, err[-2000:])
    assert "sheet.tsv" in err


def test_demo_campaign_runs_and_reruns_as_noop(workdir):
    p = run_snakemake(workdir, "--profile", LOCAL)
    assert p.returncode == 0, p.stderr[-4000:]
    res = workdir / "results" / "demo"
    summary = _summary(res / "summary.tsv")
    truth = json.loads((workdir / "resources/demo/truth.json").read_text())["scans"]
    assert set(summary) == set(truth)
    assert {r["status"] for r in summary.values()} == {"ok"}
    assert (res / "report.html").read_text().count("<tr class='ok'>") == len(truth)
    camp_hash = load_campaign(REPO / "config/config.yaml", produced=DEMO_PRODUCED).config_hash
    for sid, t in truth.items():
        store = res / "scans" / f"{sid}.zarr"
        prov = read_provenance(store)
        assert prov["seed"] == 20261127
        assert (res / "scans" / f"{sid}.png").is_file()
        if t["kind"] in ("xanes", "exafs"):
            assert float(summary[sid]["e0_eV"]) == pytest.approx(t["e0"], abs=3.0)
            assert float(summary[sid]["edge_step"]) == pytest.approx(t["edge_step"], rel=0.05)
    # the Snakefile's config hash is the library's hash of the same validated config
    assert read_provenance(res / "scans" / "xanes_01.zarr")["config_hash"] == camp_hash
    # per-scan override reached the step
    assert read_provenance(res / "scans/xanes_02.zarr")["parameters"]["normalize"]["pre1"] == -180
    stack = open_store(res / "scans/stack_01.zarr")
    assert tuple(stack["norm"].metadata.dimension_names) == ("energy", "y", "x")
    assert not list(res.rglob("*.tmp-*"))
    # posterior products of the XANES scans
    for sid in ("xanes_01", "xanes_02"):
        post = open_store(res / "posterior" / f"{sid}.zarr")
        assert post["p_K"][...].sum() == pytest.approx(1.0)
        assert summary[sid]["K_selected"] == str(dict(post.attrs)["k_selected"])
        # the demo's chains are long enough to find the simulated number of peaks
        assert summary[sid]["K_selected"] == str(truth[sid]["K"]), summary[sid]
        assert (res / "posterior" / f"{sid}.tsv").is_file() and (res / "posterior" / f"{sid}.png").is_file()
    assert not list((res / "checkpoints").rglob("*.npz"))
    again = run_snakemake(workdir, "-n", "--profile", LOCAL)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_bad_scans_fail_alone_and_are_summarised(workdir, shared):
    cfg = "tests/scenarios/bad-input/config.yaml"
    p = run_snakemake(workdir, "--profile", LOCAL, "--configfile", cfg)
    assert p.returncode != 0
    res = workdir / "results" / "bad-input"
    summary = _summary(res / "summary.tsv")
    assert summary["ragged"]["status"] == "failed"
    assert "bad_13.xdi" in summary["ragged"]["reason"] and "line 31" in summary["ragged"]["reason"]
    assert summary["not_xafs"]["status"] == "failed"
    assert "not an absorption scan" in summary["not_xafs"]["reason"]
    for sid in ("ragged", "not_xafs"):
        assert not (res / "scans" / f"{sid}.zarr").exists()
    for sid in ("cu_foil", "fe_foil", "hematite"):
        assert summary[sid]["status"] == "ok"
        g = open_store(res / "scans" / f"{sid}.zarr")
        assert np.all(np.isfinite(g["norm"][...]))
    assert not list(res.rglob("*.tmp-*"))
