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
    camp = load_campaign(REPO / "config/config.yaml", produced=DEMO_PRODUCED)
    for sid, t in truth.items():
        store = res / "scans" / f"{sid}.zarr"
        prov = read_provenance(store)
        assert prov["seed"] == 20261127
        assert (res / "scans" / f"{sid}.png").is_file()
        if t["kind"] in ("xanes", "exafs"):
            assert float(summary[sid]["e0_eV"]) == pytest.approx(t["e0"], abs=3.0)
            assert float(summary[sid]["edge_step"]) == pytest.approx(t["edge_step"], rel=0.05)
    # provenance holds the step's own parameter hash, the one the rule's params carry
    assert read_provenance(res / "scans" / "xanes_01.zarr")["config_hash"] == camp.step_hash("xanes_01", "normalize")
    # per-scan override reached the step
    assert read_provenance(res / "scans/xanes_02.zarr")["parameters"]["normalize"]["pre1"] == -180
    stack = open_store(res / "scans/stack_01.zarr")
    assert tuple(stack["norm"].metadata.dimension_names) == ("energy", "y", "x")
    assert not list(res.rglob("*.tmp-*"))
    # posterior products of the XANES scans
    for sid in ("xanes_01", "xanes_02"):
        post = open_store(res / "posterior" / f"{sid}.zarr")
        assert post["p_K"][...].sum() == pytest.approx(1.0)
        assert summary[sid]["posterior.K"] == str(dict(post.attrs)["k_selected"])
        # the demo's chains are long enough to find the simulated number of peaks
        assert summary[sid]["posterior.K"] == str(truth[sid]["K"]), summary[sid]
        # the stepping-stone cross-check is stored, as the README says
        assert np.all(np.isfinite(post["K1/free_energy_ss_ladder"][...]))
        assert (res / "posterior" / f"{sid}.tsv").is_file() and (res / "posterior" / f"{sid}.png").is_file()
    assert not list((res / "checkpoints").rglob("*.npz"))
    again = run_snakemake(workdir, "-n", "--profile", LOCAL)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # a posterior parameter changes: only the posterior products and the summary rerun
    changed = workdir / "changed.yaml"
    changed.write_text((REPO / "config/config.yaml").read_text().replace("      k_min: 1\n", "      k_min: 2\n"))
    assert changed.read_text() != (REPO / "config/config.yaml").read_text()
    p = run_snakemake(workdir, "-n", "--profile", LOCAL, "--configfile", str(changed))
    assert p.returncode == 0, p.stderr[-3000:]
    assert _job_counts(p.stdout + p.stderr) == {"posterior": 2, "summary": 1, "all": 1, "total": 4}


def _job_counts(out: str) -> dict:
    """The job table of a dry run: {rule: count}."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Job stats:"))
    table = {}
    for ln in lines[start + 3:]:
        parts = ln.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        table[parts[0]] = int(parts[1])
    return table


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


def _config_with(workdir, analysis_yaml: str, sheet: str = "config/demo_scans.tsv", generate: bool = True):
    cfg = workdir / "campaign.yaml"
    cfg.write_text(f"campaign: check\nscans: {sheet}\ndemo: {{generate: {str(generate).lower()}}}\n"
                   f"analysis:\n{analysis_yaml}")
    return cfg


def test_a_users_config_takes_schema_defaults_not_the_demos(workdir):
    """--configfile replaces the demo config: left-out keys take the schema's defaults."""
    from xafsflow.schemas import analysis_defaults

    cfg = _config_with(workdir, "  exafs: {}\n")
    p = run_snakemake(workdir, "-n", "--profile", LOCAL, "--configfile", str(cfg))
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    want = analysis_defaults("xanes")
    # the demo config has pre2 -40, sweeps 2000: the schema has -30 and 4000
    norm_cmds = [ln for ln in out.splitlines() if " normalize " in ln and "xanes_01" in ln]
    assert norm_cmds and f'"pre2": {want["normalize"]["pre2"]}' in norm_cmds[0]
    post_cmds = [ln for ln in out.splitlines() if " posterior " in ln and "xanes_01" in ln]
    assert post_cmds and f'"sweeps": {want["posterior"]["sweeps"]}' in post_cmds[0]
    assert "results/check/" in out


@pytest.mark.parametrize("analysis, words", [
    ("  xanes:\n    posterior: {k_min: 5, k_max: 2}\n", ["analysis.xanes", "posterior", "K range [5, 2] is empty"]),
    ("  xanes:\n    posterior: {sweeps: 2010}\n", ["analysis.xanes", "multiples of block"]),
    ("  xanes:\n    posterior: {priors: {centre: {dist: uniform, lo: 1.0}}}\n",
     ["prior of centre", "uniform needs hi", "improper"]),
    ("  xanes:\n    posterior: {priors: {nonsense: {dist: uniform, lo: 0, hi: 1}}}\n",
     ["prior of nonsense", "no parameter family"]),
    ("  exafs:\n    normalize: {pre1: -20.0, pre2: -50.0}\n", ["analysis.exafs", "pre-edge window", "not ordered"]),
    ("  xanes:\n    posterior: {fit_range: [30.0, -10.0]}\n", ["fit_range", "not ordered"]),
    ("  xanes:\n    posterior: {k_max: hello}\n", ["analysis.xanes.posterior.k_max", "'hello' is not of type"]),
])
def test_bad_config_stops_the_dry_run_with_one_message(workdir, analysis, words):
    cfg = _config_with(workdir, analysis)
    p = run_snakemake(workdir, "-n", "--profile", LOCAL, "--configfile", str(cfg))
    assert p.returncode != 0
    err = p.stdout + p.stderr
    for w in words + ["campaign.yaml"]:
        assert w in err, (w, err[-2000:])
    assert "No validator found" not in err
    assert "ingest" not in err.split("invalid campaign")[0].split("Building DAG")[-1]
    lines = [ln for ln in err.splitlines() if "invalid" in ln]
    assert len(lines) == 1, err[-3000:]


def test_k_range_the_data_cannot_support_stops_the_dry_run(workdir, shared):
    sheet = workdir / "real.tsv"
    sheet.write_text("scan_id\tkind\tpath\tformat\nhematite\txanes\t../shared/data/xdi/fe2o3_rt.xdi\txdi\n")
    cfg = _config_with(workdir, "  xanes:\n    posterior: {k_min: 100000, k_max: 100000}\n", sheet="real.tsv", generate=False)
    p = run_snakemake(workdir, "-n", "--profile", LOCAL, "--configfile", str(cfg))
    assert p.returncode != 0
    err = p.stdout + p.stderr
    for w in ("real.tsv", "line 2", "hematite", "cannot support K = 100000"):
        assert w in err, (w, err[-2000:])
