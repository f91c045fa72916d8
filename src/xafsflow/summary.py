"""The campaign summary: one row per scan with its status, key numbers and quality flags.

A scan's status is decided from the stores that exist and the steps' logs,
step by step along its chain (ingest, normalize, then each product it gets):

- ``ok``: every store of the chain exists;
- ``failed``: the first missing store's step left a log; the reason is the
  ``xafsflow: error:`` line it printed, the last line of a traceback, or
  ``killed or crashed (no product; see <log>)`` when it printed neither
  (SIGKILL, the OOM killer, a time limit);
- ``not run``: the first missing store's step has no log yet.

Columns: the scan's own (``scan_id`` ... ``warnings``), then each registered
product's fields namespaced ``<product>.<field>``; product flags join the
scan's ``flags`` as ``<product>.<flag>``.

A campaign-level product (e.g. ``domain_model``) is part of the chain of every
scan that gets it, before the per-scan products: its store is the campaign's
(``<directory>/<campaign_id>.zarr``), its log ``logs/<product>/campaign.log``,
and its fields are repeated on each of those scans' rows.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

from xafsflow.layout import Layout

SCAN_COLUMNS = ("scan_id", "kind", "status", "reason", "e0_eV", "edge_step", "flags", "warnings")


def columns() -> list[str]:
    """Every column of ``summary.tsv``: the scan's, then each product's."""
    from xafsflow.products import registry

    return list(SCAN_COLUMNS) + [c for p in registry() for c in p.columns()]


def _sheet_rows(sheet: str | Path) -> list[dict]:
    lines = [ln for ln in Path(sheet).read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def _is_store(path: Path) -> bool:
    return (path / "zarr.json").is_file()


def log_verdict(log: Path) -> str | None:
    """Why a step failed, from its log; None when there is no log (the step did not run)."""
    from xafsflow.cli import ERROR_PREFIX

    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    hits = [ln for ln in lines if ln.startswith(ERROR_PREFIX)]
    if hits:
        return hits[-1][len(ERROR_PREFIX):].strip()
    if "Traceback" in text:
        return f"crashed: {lines[-1].strip()}"
    return f"killed or crashed (no product; see {log})"


def product_store(layout: Layout, product, scan_id: str) -> Path:
    """The store of ``product`` a scan needs: its own, or the campaign's for a campaign-level product."""
    return layout.product_store(product, product.campaign_id if product.campaign_level else scan_id)


def scan_chain(layout: Layout, scan_id: str, products) -> list[tuple[str, Path]]:
    """(step, store) pairs a scan must have, in order (campaign-level products before per-scan ones)."""
    chain = [("ingest", layout.raw_store(scan_id)), ("normalize", layout.scan_store(scan_id))]
    ordered = sorted(products, key=lambda p: not p.campaign_level)  # stable: registry order otherwise
    return chain + [(p.name, product_store(layout, p, scan_id)) for p in ordered]


def scan_status(layout: Layout, scan_id: str, products) -> tuple[str, str]:
    """(status, reason) of one scan from its stores and logs (see the module docstring).

    A campaign-level product's log is ``logs/<product>/campaign.log``; when it failed,
    every scan that needs it is failed with its reason.
    """
    campaign_steps = {p.name for p in products if p.campaign_level}
    for step, store in scan_chain(layout, scan_id, products):
        if _is_store(store):
            continue
        verdict = log_verdict(layout.log(step, "campaign" if step in campaign_steps else scan_id))
        if verdict is None:
            return "not run", ""
        return "failed", f"{step}: {verdict}"
    return "ok", ""


def scan_row(layout: Layout, scan_id: str, kind: str, products) -> dict:
    """The summary row of one scan that should get ``products``."""
    from xafsflow.io.store import PROVENANCE_KEY, open_store

    row = dict.fromkeys(columns(), "")
    row.update(scan_id=scan_id, kind=kind)
    row["status"], row["reason"] = scan_status(layout, scan_id, products)
    flags: list[str] = []
    store = layout.scan_store(scan_id)
    if _is_store(store):
        attrs = dict(open_store(store).attrs)
        for key, col in (("e0", "e0_eV"), ("edge_step", "edge_step")):
            if attrs.get(key) is not None:
                row[col] = f"{attrs[key]:.6g}"
        flags += list(attrs.get("flags") or [])
        row["warnings"] = str(len(attrs.get(PROVENANCE_KEY, {}).get("warnings", [])))
    for prod in products:
        pstore = product_store(layout, prod, scan_id)
        if not _is_store(pstore):
            continue
        fields = prod.impl().summary(dict(open_store(pstore).attrs))
        flags += [f"{prod.name}.{f}" for f in fields.pop("flags", [])]
        row.update({f"{prod.name}.{k}": str(v) for k, v in fields.items()})
    row["flags"] = ",".join(flags)
    return row


def expected_products(kind: str, overrides: str, config: dict | None) -> list:
    """The registered products a sheet row gets under ``config`` (schema defaults when None)."""
    from xafsflow.campaign import parse_overrides, resolve_params
    from xafsflow.products import registry
    from xafsflow.schemas import analysis_defaults

    try:
        params = (resolve_params(config, kind, parse_overrides(overrides)) if config
                  else analysis_defaults(kind))
    except (ValueError, KeyError):  # a sheet the dry run refused: judge by kind alone
        params = {}
    return [p for p in registry() if p.applies_to(kind, params)]


def write_summary(results: str | Path, sheet: str | Path, out: str | Path, report: str | Path | None = None,
                  config: dict | None = None) -> list[dict]:
    """Write ``summary.tsv`` (and an HTML report) for every scan of ``sheet``.

    ``config`` is the campaign's validated configuration (which products each
    scan gets); without it every product a scan's kind takes is expected.
    """
    layout = Layout(Path(results))
    rows = []
    for r in _sheet_rows(sheet):
        kind = r.get("kind", "")
        rows.append(scan_row(layout, r.get("scan_id", "?"), kind,
                             expected_products(kind, r.get("overrides", ""), config)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, columns(), delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: str(v).replace("\t", " ").replace("\n", " ") for k, v in r.items()})
    tmp.replace(out)
    if report:
        write_report(layout, rows, Path(report))
    return rows


def _figures(layout: Layout, scan_id: str) -> list[Path]:
    from xafsflow.products import registry

    figs = [layout.scan_figure(scan_id)] + [layout.product_figure(p, scan_id) for p in registry()
                                            if not p.campaign_level]
    return [f for f in figs if f.is_file()]


def _campaign_figures(layout: Layout) -> list[Path]:
    from xafsflow.products import registry

    figs = [layout.product_figure(p, p.campaign_id) for p in registry() if p.campaign_level]
    return [f for f in figs if f.is_file()]


def write_report(layout: Layout, rows: list[dict], path: Path) -> None:
    """A self-contained HTML page: the summary table and each scan's figures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = columns()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cls = "ok" if r["status"] == "ok" else "bad"
        body.append(f"<tr class='{cls}'>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>")
    figs = []
    for png in _campaign_figures(layout):
        rel = png.relative_to(layout.root)
        figs.append(f"<figure><img src='{html.escape(str(rel))}' width='640'>"
                    f"<figcaption>{html.escape(str(rel))} (campaign)</figcaption></figure>")
    for r in rows:
        for png in _figures(layout, r["scan_id"]):
            rel = png.relative_to(layout.root)
            figs.append(f"<figure><img src='{html.escape(str(rel))}' width='640'>"
                        f"<figcaption>{html.escape(str(rel))}</figcaption></figure>")
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>xafsflow campaign report</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}} tr.bad{{background:#fdd}}</style>
</head><body><h1>Campaign {html.escape(layout.root.name)}</h1>
<table><tr>{head}</tr>{''.join(body)}</table>
<h2>Figures</h2>{''.join(figs)}</body></html>"""
    path.write_text(page)
