"""The campaign summary tells the truth: a scan whose product is missing is never ok."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest

from xafsflow.layout import Layout
from xafsflow.products import get
from xafsflow.schemas import analysis_defaults
from xafsflow.steps import ingest, normalize
from xafsflow.summary import columns, write_summary

SHEET = "scan_id\tkind\tpath\tformat\n{rows}"


@pytest.fixture
def campaign(tmp_path, shared):
    """A two-scan campaign (real hematite and FeO) ingested and normalized into its layout."""
    layout = Layout(tmp_path / "results" / "c")
    rows = ""
    for sid, name in (("hematite", "fe2o3_rt"), ("feo", "feo_rt1")):
        path = shared / "xdi" / f"{name}.xdi"
        ingest(sid, "xanes", "xdi", [str(path)], layout.raw_store(sid))
        normalize(layout.raw_store(sid), layout.scan_store(sid), analysis_defaults("xanes"))
        rows += f"{sid}\txanes\t{path}\txdi\n"
    sheet = tmp_path / "scans.tsv"
    sheet.write_text(SHEET.format(rows=rows))
    return layout, sheet


def _rows(out):
    with open(out) as fh:
        return {r["scan_id"]: r for r in csv.DictReader(fh, delimiter="\t")}


def _posterior_cmd(layout, sid, params):
    prod = get("posterior")
    return [sys.executable, "-m", "xafsflow", "posterior", str(layout.scan_store(sid)), "--scan-id", sid,
            "--params", json.dumps({"posterior": params}), "--seed", "3",
            "--checkpoint-dir", str(layout.checkpoints("posterior", sid)),
            "--out", str(layout.product_store(prod, sid)), "--tsv", str(layout.product_table(prod, sid)),
            "--png", str(layout.product_figure(prod, sid))]


def test_killed_product_job_is_reported_failed_not_ok(campaign, tmp_path):
    layout, sheet = campaign
    # a posterior job that runs long enough to be killed mid-way, its output going to its log as in the rule
    params = dict(analysis_defaults("xanes")["posterior"], k_max=1, runs=1, replicas=8, sweeps=20000,
                  burn_in=500, checkpoint_every=100)
    log = layout.log("posterior", "hematite")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(_posterior_cmd(layout, "hematite", params), stdout=fh, stderr=fh)
    ck = layout.checkpoints("posterior", "hematite")
    deadline = time.time() + 180
    while time.time() < deadline and not list(ck.glob("*.npz")):
        time.sleep(0.1)
    assert list(ck.glob("*.npz")), "the job never got going"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = write_summary(layout.root, sheet, tmp_path / "summary.tsv", tmp_path / "report.html")
    by_id = {r["scan_id"]: r for r in rows}
    assert by_id["hematite"]["status"] == "failed"
    assert by_id["hematite"]["reason"] == f"posterior: killed or crashed (no product; see {log})"
    # the other scan's posterior never started: not run, and not ok either
    assert by_id["feo"]["status"] == "not run"
    assert _rows(tmp_path / "summary.tsv")["hematite"]["status"] == "failed"
    assert "killed or crashed" in (tmp_path / "report.html").read_text()


def test_step_error_line_is_the_reason_and_a_finished_scan_is_ok(campaign, tmp_path):
    layout, sheet = campaign
    log = layout.log("posterior", "feo")
    log.parent.mkdir(parents=True, exist_ok=True)
    bad = dict(analysis_defaults("xanes")["posterior"], k_min=30, k_max=30)  # more parameters than points in the window
    with open(log, "w") as fh:
        p = subprocess.run(_posterior_cmd(layout, "feo", bad), stdout=fh, stderr=fh)
    assert p.returncode == 2
    # a fixed short chain (no convergence stopping, no pilot tuning): only the summary's reading is tested here
    ok = dict(analysis_defaults("xanes")["posterior"], k_max=1, k_limit=1, runs=1, replicas=6, sweeps=100,
              burn_in=100, checkpoint_every=100)
    ok["convergence"] = dict(ok["convergence"], enabled=False)
    ok["tuning"] = dict(ok["tuning"], enabled=False)
    assert subprocess.run(_posterior_cmd(layout, "hematite", ok), capture_output=True).returncode == 0
    rows = {r["scan_id"]: r for r in write_summary(layout.root, sheet, tmp_path / "s.tsv")}
    assert rows["feo"]["status"] == "failed"
    assert rows["feo"]["reason"].startswith("posterior: ") and "cannot support K = 30" in rows["feo"]["reason"]
    assert rows["hematite"]["status"] == "ok" and rows["hematite"]["posterior.K"] == "1"
    # K = 1 is the only K tried, so it is the largest: flagged, namespaced
    assert "posterior.k_at_limit(K=1)" in rows["hematite"]["flags"].split(",")


def test_products_disabled_in_config_are_not_expected(campaign, tmp_path):
    layout, sheet = campaign
    cfg = {"analysis": {"xanes": dict(analysis_defaults("xanes"),
                                      posterior=dict(analysis_defaults("xanes")["posterior"], enabled=False))}}
    rows = write_summary(layout.root, sheet, tmp_path / "s.tsv", config=cfg)
    assert {r["status"] for r in rows} == {"ok"}
    rows = write_summary(layout.root, sheet, tmp_path / "s.tsv")  # schema defaults: posterior expected
    assert {r["status"] for r in rows} == {"not run"}


def test_summary_columns_are_namespaced_per_product():
    cols = columns()
    assert cols[:3] == ["scan_id", "kind", "status"]
    assert [c for c in cols if c.startswith("posterior.")] == [
        f"posterior.{f}" for f in get("posterior").summary_fields]
