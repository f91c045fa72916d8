"""Kind ``spectrum`` (format ``xy``): any 1-D spectrum through ingest, normalize (identity) and the posterior
product with the ``peaks`` model of Nagata et al. (2012), on the Nagata benchmark data (K = 3)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_snakemake
from xafsflow.bayes import nagata
from xafsflow.campaign import load_campaign
from xafsflow.errors import AnalysisInputError, FileFormatError, ScanSheetError
from xafsflow.io.columns import read_xy
from xafsflow.io.store import open_store
from xafsflow.schemas import analysis_defaults, default
from xafsflow.steps import ingest, normalize

LOCAL = str(REPO / "profiles" / "local")
# Short chains (the brief's test budget); the evidence still separates K <= 2 by tens of nats.
SHORT = {"replicas": 16, "runs": 2, "sweeps": 1000, "burn_in": 1000, "k_max": 4, "k_limit": 4,
         "tuning": {"enabled": False}, "convergence": {"enabled": False}}
DATA_SEED = 2  # the benchmark's noise draw; 95 % intervals miss a true centre on some draws, as they should


def _write_two_column(path, x, y):
    with open(path, "w") as fh:
        fh.write("# Nagata et al. (2012) benchmark, K = 3\n\ntime, signal\n")
        for a, b in zip(x, y):
            fh.write(f"{a:.4f},\t{b:.6f}  # point\n" if a == 1.0 else f"{a:.4f}, {b:.6f}\n")


def _write_one_column(path, y):
    np.savetxt(path, y, fmt="%.6f", header="y only; x = 0 + 0.01 i")


@pytest.fixture(scope="module")
def spectra(tmp_path_factory):
    """Two-column and one-column files of the same benchmark data, ingested and normalized."""
    d = tmp_path_factory.mktemp("spectrum")
    x, y = nagata.data(DATA_SEED)
    _write_two_column(d / "two.csv", x, y)
    _write_one_column(d / "one.txt", y)
    stores = {}
    for sid, path, fields in (("two", d / "two.csv", {"x_unit": "s"}),
                              ("one", d / "one.txt", {"x_start": 0.0, "x_step": 0.01})):
        raw = ingest(sid, "spectrum", "xy", [str(path)], d / f"{sid}.raw.zarr", fields=fields)
        stores[sid] = normalize(raw, d / f"{sid}.zarr", analysis_defaults("spectrum"))
    return d, stores


def test_ingest_and_identity_normalize(spectra):
    _, stores = spectra
    x, y = nagata.data(DATA_SEED)
    for sid, unit in (("two", "s"), ("one", "arbitrary")):
        g = open_store(stores[sid])
        a = dict(g.attrs)
        assert a["kind"] == "spectrum" and a["e0"] is None and a["edge_step"] is None and a["flags"] == []
        np.testing.assert_allclose(g["energy"][...], x, atol=1e-9)
        np.testing.assert_allclose(g["norm"][...], y, atol=1e-6)
        assert dict(g["energy"].attrs)["units"] == unit


def test_schema_defaults_per_kind():
    assert default("analysis", "spectrum", "posterior", "model") == "peaks"
    assert default("analysis", "spectrum", "posterior", "fit_range") is None
    assert default("analysis", "xanes", "posterior", "model") == "xanes"
    assert default("analysis", "xanes", "posterior", "fit_range") == [-15.0, 40.0]
    assert "normalize" not in analysis_defaults("spectrum")


def _cmd(store, out, sid, params):
    return [sys.executable, "-m", "xafsflow", "posterior", str(store), "--scan-id", sid, "--params",
            json.dumps({"posterior": params}), "--seed", "7", "--checkpoint-dir", str(out / f"ck_{sid}"),
            "--out", str(out / f"{sid}.p.zarr"), "--tsv", str(out / f"{sid}.tsv"), "--png", str(out / f"{sid}.png")]


def test_posterior_cli_selects_the_benchmark_k(spectra):
    d, stores = spectra
    procs = {sid: subprocess.Popen(_cmd(stores[sid], d, sid, SHORT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for sid in ("two", "one")}
    for sid, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        g = open_store(d / f"{sid}.p.zarr")
        a = dict(g.attrs)
        assert a["model"] == "peaks" and a["e0"] is None
        assert a["priors"]["mu"] == {"dist": "uniform", "lo": 0.0, "hi": 3.0}  # scaled to the data
        p_k = dict(zip(g["K"][...].tolist(), g["p_K"][...]))
        assert p_k[3] + p_k[4] > 0.9, p_k  # K = 3 and 4 are near-ties on this benchmark
        assert a["k_selected"] in (3, 4)
        if a["k_selected"] == 3:
            with open(d / f"{sid}.tsv") as fh:
                rows = {r["parameter"]: r for r in csv.DictReader(fh, delimiter="\t")}
            for k, mu in enumerate(nagata.MU, start=1):
                assert float(rows[f"mu_{k}"]["q2.5"]) < mu < float(rows[f"mu_{k}"]["q97.5"]), (sid, k)


def test_config_priors_override_family_by_family(spectra, tmp_path):
    from xafsflow.products.posterior import model_priors

    x, y = nagata.data(DATA_SEED)
    given = {"mu": {"dist": "uniform", "lo": 1.0, "hi": 2.0}}
    pri = model_priors({"priors": given}, x, y, "spectrum")
    assert pri["mu"] == given["mu"] and pri["b"]["dist"] == "loguniform"
    assert pri["a"]["shape"] == 2.0 and 2.0 / pri["a"]["rate"] == pytest.approx(np.max(np.abs(y)))
    assert pri["b"]["lo"] == pytest.approx(1 / 9) and pri["b"]["hi"] == pytest.approx(1 / 0.03**2)


# --------------------------------------------------------------------------------- the workflow
def _campaign(workdir, rows: str, analysis: str = "  spectrum: {}\n"):
    (workdir / "sheet.tsv").write_text("scan_id\tkind\tpath\tformat\tx_start\tx_step\n" + rows)
    cfg = workdir / "campaign.yaml"
    cfg.write_text(f"campaign: sp\nscans: sheet.tsv\nanalysis:\n{analysis}")
    return cfg


def test_workflow_dry_run_lists_a_posterior_job(workdir):
    x, y = nagata.data(DATA_SEED)
    _write_two_column(workdir / "two.csv", x, y)
    _write_one_column(workdir / "one.txt", y)
    cfg = _campaign(workdir, "sp_two\tspectrum\ttwo.csv\txy\t\t\nsp_one\tspectrum\tone.txt\txy\t0\t0.01\n")
    p = run_snakemake(workdir, "-n", "--profile", LOCAL, "--configfile", str(cfg))
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    for sid in ("sp_two", "sp_one"):
        cmds = [ln for ln in out.splitlines() if " posterior " in ln and f"--scan-id {sid}" in ln]
        assert cmds and '"model": "peaks"' in cmds[0] and '"fit_range": null' in cmds[0], out[-3000:]
        norm = [ln for ln in out.splitlines() if " normalize " in ln and f"{sid}.zarr" in ln]
        assert norm and "--params '{}'" in norm[0]  # no normalize block for a spectrum


def test_one_column_file_without_x_start_stops_the_dry_run(workdir, monkeypatch):
    _write_one_column(workdir / "one.txt", nagata.data(DATA_SEED)[1])
    cfg = _campaign(workdir, "sp_two\tspectrum\tone.txt\txy\t0\t0.01\nsp_one\tspectrum\tone.txt\txy\t\t\n")
    p = run_snakemake(workdir, "-n", "--profile", LOCAL, "--configfile", str(cfg))
    assert p.returncode != 0
    err = p.stdout + p.stderr
    lines = [ln for ln in err.splitlines() if "invalid campaign" in ln]
    assert len(lines) == 1, err[-3000:]
    for w in ("sheet.tsv, line 3", "scan 'sp_one'", "field 'x_start'", "one-column", "one.txt"):
        assert w in lines[0], lines[0]
    # x_start without x_step: refused from the sheet alone
    monkeypatch.chdir(workdir)
    (workdir / "sheet.tsv").write_text("scan_id\tkind\tpath\tformat\tx_start\nsp\tspectrum\tone.txt\txy\t0\n")
    with pytest.raises(ScanSheetError, match="field 'x_step'"):
        load_campaign(cfg)


def test_model_xanes_is_refused_for_a_spectrum(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    (workdir / "one.txt").write_text("1\n2\n3\n")
    cfg = _campaign(workdir, "sp\tspectrum\tone.txt\txy\t0\t1\n", "  spectrum:\n    posterior: {model: xanes}\n")
    with pytest.raises(Exception, match="analysis.spectrum.posterior.model"):
        load_campaign(cfg)


# --------------------------------------------------------------------------------- bad input
def test_ragged_file_fails_ingest_with_one_line(tmp_path):
    bad = tmp_path / "ragged.txt"
    bad.write_text("# x y\n0 1\n1 2\n2 3 4\n3 4\n")
    p = subprocess.run([sys.executable, "-m", "xafsflow", "ingest", str(bad), "--scan-id", "r", "--kind", "spectrum",
                        "--format", "xy", "--out", str(tmp_path / "r.zarr")], capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "ragged.txt, line 4" in lines[0] and "3 values, expected 2" in lines[0], p.stderr
    assert not (tmp_path / "r.zarr").exists()


@pytest.mark.parametrize("text, fields, words", [
    ("0 1\n1 x\n2 3\n", {}, ["line 2", "'x' is not a number"]),
    ("0 1\n1 2\n", {}, ["2 data row(s)", "at least 3"]),
    ("0 1\n1 2\n0 5\n2 3\n", {}, ["line 3", "x = 0 repeats line 1"]),
    ("a b\nc d\n0 1\n", {}, ["line 2", "second non-numeric line"]),
    ("0 nan\n1 2\n2 3\n", {}, ["line 1", "non-finite"]),
])
def test_bad_files_name_file_and_line(tmp_path, text, fields, words):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(FileFormatError) as exc:
        read_xy(f, fields)
    for w in words + ["bad.txt"]:
        assert w in str(exc.value), str(exc.value)


def test_columns_by_label_or_index_and_sorting(tmp_path):
    f = tmp_path / "wide.txt"
    f.write_text("# a wider file\nE, I0, signal\n3, 9, 30\n1, 9, 10\n2, 9, 20\n")
    s = read_xy(f, {"x": "e", "y": "3"})
    np.testing.assert_array_equal(s.x, [1, 2, 3])
    np.testing.assert_array_equal(s.y, [10, 20, 30])
    assert s.warnings == ["x was not increasing; rows sorted by x"]
    with pytest.raises(AnalysisInputError, match="field 'y'"):
        read_xy(f, {"x": "e"})
    with pytest.raises(AnalysisInputError, match="'nope' is not in the file"):
        read_xy(f, {"x": "nope", "y": "signal"})
