"""The campaign summary: one row per scan with its status, key numbers and quality flags.

A scan whose store exists is ``ok``. A scan without a store is ``failed`` with
the reason its step printed (the ``xafsflow: error:`` line in the step's log),
or ``not run`` when no step has reported on it yet.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

COLUMNS = ("scan_id", "kind", "status", "reason", "e0_eV", "edge_step", "flags", "warnings",
           "K_selected", "p_K", "sigma_hat", "max_rhat", "min_exchange")
# product directory -> log directory of the step that makes it
PRODUCTS = {"posterior": "posterior"}


def _sheet_rows(sheet: str | Path) -> list[dict]:
    lines = [ln for ln in Path(sheet).read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def _failure_reason(results: Path, scan_id: str, steps: str = "*") -> str | None:
    from xafsflow.cli import ERROR_PREFIX

    logs = sorted((results / "logs").glob(f"{steps}/{scan_id}.log"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        hits = [ln for ln in text.splitlines() if ln.startswith(ERROR_PREFIX)]
        if hits:
            return f"{log.parent.name}: {hits[-1][len(ERROR_PREFIX):].strip()}"
        if "Traceback" in text:
            last = [ln for ln in text.splitlines() if ln.strip()][-1]
            return f"{log.parent.name}: crashed: {last.strip()}"
    return None


def scan_row(results: Path, scan_id: str, kind: str) -> dict:
    """The summary row of one scan."""
    from xafsflow.io.store import open_store

    row = dict.fromkeys(COLUMNS, "")
    row.update(scan_id=scan_id, kind=kind)
    store = results / "scans" / f"{scan_id}.zarr"
    if (store / "zarr.json").is_file():
        attrs = dict(open_store(store).attrs)
        row["status"] = "ok"
        for key, col in (("e0", "e0_eV"), ("edge_step", "edge_step")):
            if attrs.get(key) is not None:
                row[col] = f"{attrs[key]:.6g}"
        row["flags"] = ",".join(attrs.get("flags") or [])
        row["warnings"] = str(len(attrs.get("xafsflow_provenance", {}).get("warnings", [])))
        _add_products(results, scan_id, row)
        return row
    reason = _failure_reason(results, scan_id)
    row["status"] = "failed" if reason else "not run"
    row["reason"] = reason or ""
    return row


def _add_products(results: Path, scan_id: str, row: dict) -> None:
    """Columns of the products a scan has; a product whose step failed marks the scan failed."""
    from xafsflow.io.store import open_store

    post = results / "posterior" / f"{scan_id}.zarr"
    if (post / "zarr.json").is_file():
        a = dict(open_store(post).attrs)
        row["K_selected"] = str(a.get("k_selected", ""))
        row["p_K"] = f"{a['p_k_selected']:.3f}" if a.get("p_k_selected") is not None else ""
        sig = a.get("sigma_hat", a.get("sigma_fixed"))
        row["sigma_hat"] = f"{sig:.4g}" if sig is not None else ""
        row["max_rhat"] = f"{a['max_rhat']:.3f}" if a.get("max_rhat") is not None else ""
        row["min_exchange"] = f"{a['min_exchange_rate']:.3f}" if a.get("min_exchange_rate") is not None else ""
        flags = [f for f in (row["flags"].split(",") if row["flags"] else [])] + list(a.get("flags") or [])
        row["flags"] = ",".join(flags)
        return
    for product, step in PRODUCTS.items():
        reason = _failure_reason(results, scan_id, step)
        if reason:
            row["status"] = "failed"
            row["reason"] = reason


def write_summary(results: str | Path, sheet: str | Path, out: str | Path, report: str | Path | None = None) -> list[dict]:
    """Write ``summary.tsv`` (and an HTML report) for every scan of ``sheet``."""
    results = Path(results)
    rows = [scan_row(results, r.get("scan_id", "?"), r.get("kind", "")) for r in _sheet_rows(sheet)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: str(v).replace("\t", " ").replace("\n", " ") for k, v in r.items()})
    tmp.replace(out)
    if report:
        write_report(results, rows, Path(report))
    return rows


def write_report(results: Path, rows: list[dict], path: Path) -> None:
    """A self-contained HTML page: the summary table and each scan's figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for r in rows:
        cls = "ok" if r["status"] == "ok" else "bad"
        body.append(f"<tr class='{cls}'>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in COLUMNS) + "</tr>")
    figs = []
    for r in rows:
        png = results / "scans" / f"{r['scan_id']}.png"
        if png.is_file():
            rel = Path("scans") / png.name
            figs.append(f"<figure><img src='{html.escape(str(rel))}' width='640'><figcaption>{html.escape(r['scan_id'])}</figcaption></figure>")
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>xafsflow campaign report</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}} tr.bad{{background:#fdd}}</style>
</head><body><h1>Campaign {html.escape(results.name)}</h1>
<table><tr>{head}</tr>{''.join(body)}</table>
<h2>Scans</h2>{''.join(figs)}</body></html>"""
    path.write_text(page)
