"""Command-line interface: one subcommand per workflow step.

Every step also runs on its own, outside Snakemake, with explicit paths. The
product subcommands come from the product registry
(:func:`xafsflow.products.registry`). An :class:`xafsflow.InputError` is printed
as one line (no traceback) and the exit status is 2; the line starts with
``xafsflow: error:`` so that the campaign summary can find the reason in the
step's log. Outputs are checked for writability before any computation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ERROR_PREFIX = "xafsflow: error:"


def _schema_default(*path: str):
    """A default from the config schema (the single home of defaults)."""
    from xafsflow.schemas import default

    return default(*path)


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="write a simulated campaign (raw files + truth.json)")
    p.add_argument("what", choices=["demo", "stack", "xmcd"],
                   help="demo: the demo campaign; stack: a phantom electrode micro-XANES stack + "
                        "phantom_truth.json; xmcd: a NiFe2O4-like Ni L2,3 pair with its truth.json")
    p.add_argument("directory", help="output directory")
    p.add_argument("--seed", type=int, default=None, help="campaign seed (default: the schema's)")
    p.add_argument("--stack-format", choices=["hdf5", "tiff"], default="hdf5", help="file format of the phantom stack")
    p.add_argument("--pixels", type=int, default=64, help="phantom stack: pixels along y and x")
    p.set_defaults(handler=_simulate)


def _add_ingest(sub) -> None:
    from xafsflow.products._common import json_arg
    from xafsflow.schemas import enum

    p = sub.add_parser("ingest", help="read one scan's raw file(s) into an ingested Zarr store")
    p.add_argument("paths", nargs="+", help="raw file(s); an XMCD pair: plus then minus")
    p.add_argument("--scan-id", required=True)
    p.add_argument("--kind", required=True, choices=enum("scans", "kind"))
    p.add_argument("--format", required=True, choices=enum("scans", "format"))
    p.add_argument("--fields", type=json_arg, default={}, help="scan sheet fields as JSON (column mapping, element, ...)")
    p.add_argument("--energies", default=None, help="energies file of a tiff_stack or tiff_folder")
    p.add_argument("--chunk-pixels", type=int, default=None, help="pixels per chunk of a stack (default: the schema's)")
    p.add_argument("--out", required=True, help="output store (.zarr)")
    _add_provenance_args(p)
    p.set_defaults(handler=_ingest, outputs=("out",))


def _add_normalize(sub) -> None:
    from xafsflow.products._common import json_arg

    p = sub.add_parser("normalize", help="normalize an ingested scan into its scan store")
    p.add_argument("raw_store")
    p.add_argument("--params", type=json_arg, default=None,
                   help="analysis parameters of the scan's kind as JSON (default: the schema's defaults)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mem-mb", type=int, default=2000)
    p.add_argument("--dashboard", action="store_true", help="serve the Dask dashboard of a stack's cluster on localhost")
    p.add_argument("--scheduler", choices=("threads", "cluster"), default="threads",
                   help="where a stack's per-pixel graph runs: threads of this process or a local Dask cluster "
                        "(config dask.step_scheduler)")
    p.add_argument("--out", required=True)
    p.add_argument("--png", default=None, help="also write a figure of the normalized scan")
    _add_provenance_args(p)
    p.set_defaults(handler=_normalize, outputs=("out", "png"))


def _add_provenance_args(p) -> None:
    p.add_argument("--seed", type=int, default=None, help="campaign seed (default: the schema's; recorded in provenance)")
    p.add_argument("--params-hash", default=None, help="hash of the step's resolved parameters (recorded in provenance)")


def _add_products(sub) -> None:
    from xafsflow.products import registry
    from xafsflow.products._common import add_campaign_product_arguments, add_scan_product_arguments

    for prod in registry():
        impl = prod.impl()
        p = sub.add_parser(prod.name, help=prod.description)
        (add_campaign_product_arguments if prod.campaign_level else add_scan_product_arguments)(p, prod)
        impl.add_arguments(p)
        _add_provenance_args(p)
        p.set_defaults(handler=impl.run, outputs=("out", "tsv", "png"))


def _json(text: str):
    from xafsflow.products._common import json_arg

    return json_arg(text)


def build_parser() -> argparse.ArgumentParser:
    from xafsflow import __version__

    parser = argparse.ArgumentParser(prog="xafsflow", description="XAFS campaign workflow steps.")
    parser.add_argument("--version", action="version", version=f"xafsflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")
    _add_simulate(sub)
    _add_ingest(sub)
    _add_normalize(sub)
    _add_products(sub)

    p = sub.add_parser("summary", help="campaign summary.tsv and HTML report")
    p.add_argument("--results", required=True, help="campaign results directory (results/<campaign>)")
    p.add_argument("--sheet", required=True, help="scan sheet (TSV)")
    p.add_argument("--config-json", type=_json, default=None,
                   help="the campaign's validated config as JSON, to know which products each scan gets")
    p.add_argument("--out", required=True, help="summary.tsv path")
    p.add_argument("--report", default=None, help="HTML report path")
    p.set_defaults(handler=_summary, outputs=("out", "report"))

    p = sub.add_parser("provenance", help="print a store's provenance")
    p.add_argument("store")
    p.add_argument("--json", action="store_true", help="print raw JSON")
    p.set_defaults(handler=_provenance)
    return parser


# ----------------------------------------------------------------------- handlers
def _simulate(args) -> str:
    if args.what == "stack":
        from xafsflow.simulate.phantom import write_phantom

        seed = _schema_default("seed") if args.seed is None else args.seed
        t = write_phantom(args.directory, seed, fmt=args.stack_format, ny=args.pixels, nx=args.pixels,
                          n_grains=max(8, round(28 * args.pixels ** 2 / 64 ** 2)))
        return (f"phantom stack {t['fractions'].shape[1]}x{t['fractions'].shape[2]} pixels, "
                f"{len(t['energies'])} energies written to {args.directory}")
    from xafsflow.simulate.demo import write_demo

    if args.what == "xmcd":
        from xafsflow.simulate.xmcd import write_xmcd_pair

        write_xmcd_pair(args.directory, _schema_default("seed") if args.seed is None else args.seed)
        return f"simulated XMCD pair written to {args.directory}"

    write_demo(args.directory, seed=_schema_default("seed") if args.seed is None else args.seed)
    return f"demo campaign written to {args.directory}"


def _ingest(args) -> str:
    from xafsflow.steps import ingest

    chunk = _schema_default("stack", "chunk_pixels") if args.chunk_pixels is None else args.chunk_pixels
    ingest(args.scan_id, args.kind, args.format, args.paths, args.out, fields=args.fields,
           energies=args.energies, chunk_pixels=chunk, seed=args.seed, params_hash=args.params_hash)
    return f"ingested {args.scan_id} -> {args.out}"


def _normalize(args) -> str:
    from xafsflow.campaign import kind_params
    from xafsflow.io.store import open_store
    from xafsflow.steps import normalize

    if "numba" not in sys.modules:
        # numba reads this when it starts its threads; once they run (the CLI called in-process, e.g. from
        # tests), a different value would make its next compilation fail, so leave it alone then
        os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, args.threads)))
    params = kind_params(dict(open_store(args.raw_store).attrs)["kind"], args.params)
    normalize(args.raw_store, args.out, params, threads=args.threads, mem_mb=args.mem_mb, seed=args.seed,
              params_hash=args.params_hash, dashboard=args.dashboard, scheduler=args.scheduler)
    if args.png:
        from xafsflow.figures import plot_scan

        plot_scan(args.out, args.png)
    return f"normalized -> {args.out}"


def _summary(args) -> str:
    from xafsflow.summary import write_summary

    rows = write_summary(args.results, args.sheet, args.out, args.report, config=args.config_json)
    failed = [r for r in rows if r["status"] != "ok"]
    return f"summary: {len(rows) - len(failed)} ok, {len(failed)} not ok -> {args.out}"


def _provenance(args) -> str:
    from xafsflow.io.store import read_provenance

    prov = read_provenance(args.store)
    return json.dumps(prov, indent=1) if args.json else format_provenance(prov)


def format_provenance(prov: dict) -> str:
    """A provenance record as text: identity, inputs with sha256, parameters, warnings."""
    lines = []
    for key in ("step", "xafsflow_version", "git_commit", "config_hash", "seed", "created", "host", "python"):
        lines.append(f"{key:17s} {prov.get(key)}")
    for title, key in (("inputs", "inputs"), ("raw inputs", "raw_inputs")):
        if prov.get(key):
            lines.append(f"{title}:")
            lines += [f"  {sha}  {path}" for path, sha in prov[key].items()]
    lines.append("parameters:")
    lines += ["  " + ln for ln in json.dumps(prov.get("parameters", {}), indent=1, sort_keys=True).splitlines()]
    warns = prov.get("warnings") or []
    lines.append(f"warnings: {len(warns)}")
    lines += [f"  - {w}" for w in warns]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the parsed command: outputs checked first, then the step; prints its report line."""
    from xafsflow.io.store import check_writable

    if args.command in {p.name for p in _products()} and args.seed is None:
        args.seed = _schema_default("seed")
    outs = [getattr(args, name) for name in getattr(args, "outputs", ()) if getattr(args, name, None)]
    check_writable(*outs)
    print(args.handler(args))
    return 0


def _products():
    from xafsflow.products import registry

    return registry()


def main(argv: list[str] | None = None) -> int:
    from xafsflow.errors import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except InputError as exc:
        print(f"{ERROR_PREFIX} {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{ERROR_PREFIX} interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
