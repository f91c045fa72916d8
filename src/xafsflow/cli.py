"""Command-line interface: one subcommand per workflow step.

Every step also runs on its own, outside Snakemake, with explicit paths.
An :class:`xafsflow.InputError` is printed as one line (no traceback) and the
exit status is 2; the line starts with ``xafsflow: error:`` so that the
campaign summary can find the reason in the step's log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ERROR_PREFIX = "xafsflow: error:"


def _json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=None, help="campaign seed (recorded in provenance)")
    p.add_argument("--config-hash", default=None, help="hash of the campaign config (recorded in provenance)")


def build_parser() -> argparse.ArgumentParser:
    from xafsflow import __version__

    parser = argparse.ArgumentParser(prog="xafsflow", description="XAFS campaign workflow steps.")
    parser.add_argument("--version", action="version", version=f"xafsflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    p = sub.add_parser("simulate", help="write a simulated campaign (raw files + truth.json)")
    p.add_argument("what", choices=["demo"], help="which campaign")
    p.add_argument("directory", help="output directory")
    p.add_argument("--seed", type=int, default=20261127)

    p = sub.add_parser("ingest", help="read one scan's raw file(s) into an ingested Zarr store")
    p.add_argument("paths", nargs="+", help="raw file(s); an XMCD pair: plus then minus")
    p.add_argument("--scan-id", required=True)
    p.add_argument("--kind", required=True, choices=["xanes", "exafs", "xmcd", "stack", "domain_image"])
    p.add_argument("--format", required=True, choices=["xdi", "columns", "tiff_stack", "hdf5_stack", "image"])
    p.add_argument("--fields", type=_json_arg, default={}, help="scan sheet fields as JSON (column mapping, element, ...)")
    p.add_argument("--energies", default=None, help="energies file of a TIFF stack")
    p.add_argument("--chunk-pixels", type=int, default=4096)
    p.add_argument("--out", required=True, help="output store (.zarr)")
    _common(p)

    p = sub.add_parser("normalize", help="normalize an ingested scan into its scan store")
    p.add_argument("raw_store")
    p.add_argument("--params", type=_json_arg, default=None, help="analysis parameters as JSON (default: schema defaults for the kind)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mem-mb", type=int, default=2000)
    p.add_argument("--out", required=True)
    p.add_argument("--png", default=None, help="also write a figure of the normalized scan")
    _common(p)

    p = sub.add_parser("posterior", help="Bayesian spectral decomposition of a normalized XANES scan")
    p.add_argument("scan_store")
    p.add_argument("--scan-id", default=None, help="scan id for the random streams (default: from the store)")
    p.add_argument("--params", type=_json_arg, default=None, help="analysis parameters as JSON (default: schema defaults)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mem-mb", type=int, default=2000)
    p.add_argument("--checkpoint-dir", default=None, help="where chains checkpoint (kept until the product is complete)")
    p.add_argument("--out", required=True, help="posterior store (.zarr)")
    p.add_argument("--tsv", required=True)
    p.add_argument("--png", required=True)
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument("--config-hash", default=None)

    p = sub.add_parser("summary", help="campaign summary.tsv and HTML report")
    p.add_argument("--results", required=True, help="campaign results directory (results/<campaign>)")
    p.add_argument("--sheet", required=True, help="scan sheet (TSV)")
    p.add_argument("--out", required=True, help="summary.tsv path")
    p.add_argument("--report", default=None, help="HTML report path")

    p = sub.add_parser("provenance", help="print a store's provenance")
    p.add_argument("store")
    p.add_argument("--json", action="store_true", help="print raw JSON")
    return parser


def _set_threads(threads: int) -> None:
    os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, threads)))


def run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "simulate":
        from xafsflow.simulate.demo import write_demo

        write_demo(args.directory, seed=args.seed)
        print(f"demo campaign written to {args.directory}")
        return 0
    if cmd == "ingest":
        from xafsflow.steps import ingest

        ingest(args.scan_id, args.kind, args.format, args.paths, args.out, fields=args.fields,
               energies=args.energies, chunk_pixels=args.chunk_pixels, seed=args.seed,
               config_hash=args.config_hash)
        print(f"ingested {args.scan_id} -> {args.out}")
        return 0
    if cmd == "normalize":
        from xafsflow.io.store import open_store
        from xafsflow.schemas import analysis_defaults
        from xafsflow.steps import normalize

        _set_threads(args.threads)
        params = args.params
        if params is None:
            params = analysis_defaults(dict(open_store(args.raw_store).attrs)["kind"])
        normalize(args.raw_store, args.out, params, threads=args.threads, mem_mb=args.mem_mb,
                  seed=args.seed, config_hash=args.config_hash)
        if args.png:
            from xafsflow.figures import plot_scan

            plot_scan(args.out, args.png)
        print(f"normalized -> {args.out}")
        return 0
    if cmd == "posterior":
        from xafsflow.bayes.product import run_posterior
        from xafsflow.io.store import open_store
        from xafsflow.schemas import analysis_defaults

        _set_threads(1)  # one chain per worker process; numba kernels are serial
        attrs = dict(open_store(args.scan_store).attrs)
        params = args.params if args.params is not None else analysis_defaults("xanes")
        res = run_posterior(args.scan_store, args.out, args.tsv, args.png, params,
                            args.scan_id or attrs.get("scan_id", "scan"), args.seed, threads=args.threads,
                            mem_mb=args.mem_mb, config_hash=args.config_hash, checkpoint_dir=args.checkpoint_dir)
        print(f"posterior: K = {res.k_selected} (P = {res.p_k[res.ks.index(res.k_selected)]:.3f}) -> {args.out}")
        return 0
    if cmd == "summary":
        from xafsflow.summary import write_summary

        rows = write_summary(args.results, args.sheet, args.out, args.report)
        failed = [r for r in rows if r["status"] != "ok"]
        print(f"summary: {len(rows) - len(failed)} ok, {len(failed)} not ok -> {args.out}")
        return 0
    if cmd == "provenance":
        from xafsflow.io.store import read_provenance

        prov = read_provenance(args.store)
        if args.json:
            print(json.dumps(prov, indent=1))
        else:
            print(format_provenance(prov))
        return 0
    raise AssertionError(cmd)


def format_provenance(prov: dict) -> str:
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
