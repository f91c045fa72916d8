"""What every per-scan product's command shares: arguments and parameter loading."""

from __future__ import annotations

import argparse
import json


def json_arg(text: str):
    """argparse type: a JSON value."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def add_scan_product_arguments(p, product) -> None:
    """Options common to every per-scan product command (input store, outputs, resources)."""
    p.add_argument("scan_store", help="normalized scan store (results/<campaign>/scans/<scan_id>.zarr)")
    p.add_argument("--scan-id", default=None, help="scan id for the random streams (default: from the store)")
    p.add_argument("--params", type=json_arg, default=None,
                   help="analysis parameters of the scan's kind as JSON (default: the schema's defaults)")
    _add_run_arguments(p, product)


def _add_run_arguments(p, product) -> None:
    """Resources and outputs, the same for per-scan and campaign-level products."""
    p.add_argument("--threads", type=int, default=1, help="Dask worker processes")
    p.add_argument("--mem-mb", type=int, default=2000, help="memory of the step (MB), split over the workers")
    p.add_argument("--dashboard", action="store_true", help="serve the Dask dashboard on localhost")
    p.add_argument("--out", required=True, help=f"{product.name} store (.zarr)")
    p.add_argument("--tsv", required=True, help="table of the product")
    p.add_argument("--png", required=True, help="figure of the product")


def load_params(args, kind: str) -> dict:
    """The ``--params`` JSON completed with the schema's defaults for ``kind`` (all defaults without it)."""
    from xafsflow.campaign import kind_params

    return kind_params(kind, args.params)


def scan_kind(product, attrs: dict, scan_store) -> str:
    """The scan store's kind, refused (AnalysisInputError naming the raw file) unless ``product`` takes it."""
    from xafsflow.errors import AnalysisInputError
    from xafsflow.io.store import PROVENANCE_KEY

    kind = attrs.get("kind")
    if kind not in product.kinds:
        src = next(iter(attrs.get(PROVENANCE_KEY, {}).get("raw_inputs", {})), str(scan_store))
        takes = " or ".join(k.upper() for k in product.kinds)
        raise AnalysisInputError(f"the {product.name} product needs a {takes} scan, this is {kind!r}", src)
    return kind


def add_campaign_product_arguments(p, product) -> None:
    """Options of a campaign-level product command (no scan store: it is made from the configuration)."""
    p.add_argument("--params", type=json_arg, default=None,
                   help="analysis parameters of the product's kind as JSON (default: the schema's defaults)")
    _add_run_arguments(p, product)


def campaign_block(product, config: dict) -> dict:
    """A campaign-level product's parameter block: the kind-level one of the validated ``config``.

    Sheet overrides do not apply to a product of the whole campaign.
    """
    return config["analysis"][product.kinds[0]][product.params_key]


def campaign_params_hash(product, config: dict) -> str:
    """Hash of what a campaign-level product depends on: its block, the seed and its version.

    Its rule carries it in ``params``, so the product reruns when these change, and not when a scan
    is added or another block changes.
    """
    from xafsflow.campaign import config_hash

    what = {product.params_key: campaign_block(product, config), "seed": config["seed"], "version": product.version}
    return config_hash(what)[:16]
